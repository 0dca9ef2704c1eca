"""A real OpenAI-compatible chat server on 127.0.0.1, for tests, benchmarks and the offline demo.

``MockServer`` answers ``POST /v1/chat/completions`` (and ``/chat/completions``; streamed
with ``stream: true``; ``n`` choices), ``POST /v1/completions``, ``POST /v1/embeddings`` and
``GET /v1/models`` over real HTTP (see ``mockapi``), so clients are exercised through
sockets, keep-alive, timeouts and retries exactly as against vLLM or OpenAI. The default
responder solves arithmetic questions ("What is 12 + 7?") and, with ``error_rate``, gets a
reproducible fraction of them wrong, so example evals have realistic scores. Faults (status
codes with ``Retry-After``, random 500s, answers slower than the client's timeout, bad
keys, unknown models) are injected on demand.

Run ``python -m osmo_store.testing.mockserver [--port N]`` to serve until SIGINT/SIGTERM; the first
line on stdout is the base URL.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import random
import re
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from osmo_store.errors import UsageError

from . import mockapi

logger = logging.getLogger(__name__)

Responder = Callable[[dict[str, Any]], "str | dict[str, Any]"]

DEFAULT_MODEL = "osmo-mock"
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
#: what each POST route serves (the chat routes, text completions, embeddings)
POST_ROUTES = {
    **dict.fromkeys(CHAT_PATHS, "chat"),
    **dict.fromkeys(("/v1/completions", "/completions"), "completions"),
    **dict.fromkeys(("/v1/embeddings", "/embeddings"), "embeddings"),
}
MODELS_PATHS = frozenset({"/v1/models", "/models"})
_MAX_EXPRESSION_CHARS = 200


# -- the default responder: a deterministic, occasionally wrong arithmetic solver ----------------


class _Arithmetic:
    """Recursive-descent evaluator for integers, + - * and parentheses (never ``eval``)."""

    _TOKEN = re.compile(r"\s*(\d+|[-+*()])")

    def __init__(self, text: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = self._TOKEN.match(text, pos)
            if match is None:
                raise ValueError(f"unexpected character at {pos}")
            self.tokens.append(match.group(1))
            pos = match.end()
        self.pos = 0

    def evaluate(self) -> int:
        value = self._sum()
        if self.pos != len(self.tokens):
            raise ValueError("trailing tokens")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise ValueError("unexpected end of expression")
        self.pos += 1
        return token

    def _sum(self) -> int:
        value = self._product()
        while self._peek() in ("+", "-"):
            value = value + self._product() if self._take() == "+" else value - self._product()
        return value

    def _product(self) -> int:
        value = self._unary()
        while self._peek() == "*":
            self._take()
            value *= self._unary()
        return value

    def _unary(self) -> int:
        if self._peek() in ("+", "-"):
            sign = -1 if self._take() == "-" else 1
            return sign * self._unary()
        token = self._take()
        if token == "(":
            value = self._sum()
            if self._take() != ")":
                raise ValueError("unbalanced parentheses")
            return value
        if not token.isdigit():
            raise ValueError(f"unexpected {token!r}")
        return int(token)


_QUESTION = re.compile(r"what\s+is\s+([^?]*)\?", re.IGNORECASE)
_EXPRESSION_RUN = re.compile(r"[\d\s()+\-*]*\d[\d\s()+\-*]*")


def solve_arithmetic(text: str) -> int | None:
    """The value of the arithmetic question in ``text``, or None if there is none.

    The last "What is <expr>?" wins; failing that, the first run of digits and operators that
    contains an operator and parses.
    """
    candidates = [m.group(1) for m in _QUESTION.finditer(text)][::-1]
    candidates += [r for r in _EXPRESSION_RUN.findall(text) if re.search(r"\d\s*[-+*]", r)]
    for candidate in candidates:
        expression = candidate.strip()
        if not expression or len(expression) > _MAX_EXPRESSION_CHARS:
            continue
        try:
            return _Arithmetic(expression).evaluate()
        except (ValueError, RecursionError):
            continue
    return None


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
    return ""


def _last_user_text(messages: Iterable[Any]) -> str:
    for message in reversed(list(messages)):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


class ArithmeticResponder:
    """Answers "What is 12 + 7?" with "19"; echoes anything else.

    With ``error_rate`` a fraction of answers is off by 1-3. Whether a request gets a wrong
    answer depends only on a hash of the whole request (messages, model, temperature, seed...)
    and this responder's ``seed``, so the same request always gets the same answer.
    """

    def __init__(self, *, error_rate: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise UsageError(f"error_rate must be within [0, 1], got {error_rate}")
        self.error_rate = error_rate
        self.seed = seed

    def __call__(self, request: dict[str, Any]) -> str:
        text = _last_user_text(request.get("messages") or [])
        value = solve_arithmetic(text)
        if value is None:
            return text
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.blake2b(
            f"{self.seed}\n{canonical}".encode(), digest_size=16, person=b"osmo-mock"
        ).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 < self.error_rate:
            value += (digest[8] % 3 + 1) * (1 if digest[9] & 1 else -1)
        return str(value)


# -- response building ---------------------------------------------------------------------------


def _count_tokens(content: Any) -> int:
    return len(_text_of(content).split())


def _assistant_message(answer: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(answer, str):
        return {"role": "assistant", "content": answer}
    message = dict(answer)
    message.setdefault("role", "assistant")
    message.setdefault("content", None)
    calls = []
    for call in message.get("tool_calls") or []:
        call = dict(call)
        function = dict(call.get("function") or {})
        arguments = function.get("arguments", "{}")
        # OpenAI sends arguments as a JSON *string*; responders may return a dict for brevity.
        function["arguments"] = arguments if isinstance(arguments, str) else json.dumps(arguments)
        call["function"] = function
        call.setdefault("type", "function")
        call.setdefault("id", f"call_{uuid.uuid4().hex[:24]}")
        calls.append(call)
    if calls:
        message["tool_calls"] = calls
    else:
        message.pop("tool_calls", None)
    return message


def _completion(request: dict[str, Any], answer: str | dict[str, Any]) -> dict[str, Any]:
    message = _assistant_message(answer)
    prompt_tokens = sum(
        _count_tokens(m.get("content")) for m in request["messages"] if isinstance(m, dict)
    )
    completion_tokens = _count_tokens(message.get("content")) + sum(
        _count_tokens(call["function"]["arguments"]) for call in message.get("tool_calls", [])
    )
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request["model"],
        "system_fingerprint": "osmo-mock",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error_body(status: int, message: str, kind: str, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code or status}}


# -- HTTP plumbing -------------------------------------------------------------------------------


class Exchange(NamedTuple):
    """One chat request as the server saw it: its JSON body, when it arrived and when its
    response was completely written (``time.monotonic()`` seconds; ``answered`` is None
    while the response is not written yet)."""

    request: dict[str, Any]
    arrived: float
    answered: float | None


class _Timing:
    """The server's mutable record of an exchange: the handler stamps ``answered`` once its
    last write returns (or fails: a client that died is answered all the same, at that
    time)."""

    __slots__ = ("answered", "arrived", "request")

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.arrived = time.monotonic()
        self.answered: float | None = None


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after: float | str | None
    body: str | dict[str, Any] | None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog (5) drops connections when dozens of clients connect at once.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], mock: MockServer) -> None:
        self.mock = mock
        self._connections: set[socket.socket] = set()
        self._accepting = 0  # accept() calls under way
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) we neither need nor want.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts) make writes fail; that is expected, not worth stderr.
        logger.debug("mock server: error serving %s", client_address, exc_info=True)

    def forget(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def get_request(self) -> tuple[socket.socket, Any]:
        # Tracked from the accept on, not from when the handler thread starts, so that
        # ``settled`` never misses a connection that has left the backlog.
        with self._connections_lock:
            self._accepting += 1
        try:
            conn, address = super().get_request()
            with self._connections_lock:
                self._connections.add(conn)
            return conn, address
        finally:
            with self._connections_lock:
                self._accepting -= 1

    def settled(self) -> bool:
        """No client connection open and none waiting to be accepted. The backlog is looked
        at first: a connection that leaves it afterwards is being accepted or tracked."""
        waiting, _, _ = select.select([self.socket], [], [], 0)
        with self._connections_lock:
            return not waiting and not self._accepting and not self._connections

    def drop_connections(self) -> None:
        """Wake handler threads blocked reading idle keep-alive connections, so close() is quick."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers, so client pooling is exercised
    server_version = "osmo-mock/1"
    timeout = 120  # idle keep-alive connections of leaky clients do not hold a thread forever
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK
    # adds ~40 ms to every response.
    disable_nagle_algorithm = True
    server: _HTTPServer
    _timing: _Timing | None = None  # the recorded chat request being answered, if any

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.forget(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._timing = None  # a chat request's, before this one on the connection
        mock = self.server.mock
        if urlsplit(self.path).path.rstrip("/") not in MODELS_PATHS:
            self._send_error(404, f"no route for GET {self.path}", "not_found")
            return
        if not self._authorized():
            return
        names = mock.models if mock.models is not None else [DEFAULT_MODEL]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "osmo"} for n in names]
        self._send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        # Read the body even when the route is wrong: leftovers would corrupt the next
        # request on this keep-alive connection.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._timing = None  # the previous request's, on a keep-alive connection
        api = POST_ROUTES.get(urlsplit(self.path).path.rstrip("/"))
        if api is None:
            self._send_error(404, f"no route for POST {self.path}", "not_found")
            return
        mock = self.server.mock
        mock._enter()
        try:
            self._chat(body, api)
        finally:
            mock._leave()

    def _chat(self, body: bytes, api: str = "chat") -> None:
        mock = self.server.mock
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._send_error(400, "request body must be a JSON object", "invalid_request_error")
            return
        self._timing = mock._record(request)
        if mock.latency > 0:
            mock._stopping.wait(mock.latency)
        if not self._authorized():
            return
        fault = mock._take_fault()
        if fault is not None:
            self._send_fault(fault)
            return
        delay = mock._take_timeout()
        if delay:
            # Answer late, after the client has given up; close() cuts the wait short.
            mock._stopping.wait(delay)
        if mock._random_failure():
            self._send_error(500, "injected random failure", "server_error")
            return
        if api != "chat":
            self._other_api(request, api)
            return
        messages, model = request.get("messages"), request.get("model")
        if not isinstance(messages, list) or not messages:
            self._send_error(400, "'messages' must be a non-empty list", "invalid_request_error")
            return
        if not isinstance(model, str) or not model:
            self._send_error(400, "you must provide a model parameter", "invalid_request_error")
            return
        if mock.models is not None and model not in mock.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            self._send_error(404, message, "invalid_request_error", "model_not_found")
            return
        try:
            answer = mock.responder(request)
        except Exception as exc:
            logger.exception("mock server: responder failed")
            self._send_error(500, f"responder failed: {exc}", "server_error")
            return
        completion = _completion(request, answer)
        n = request.get("n")
        if isinstance(n, int) and n > 1:
            completion["choices"] = [{**completion["choices"][0], "index": i} for i in range(n)]
        if request.get("stream") is True:
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            data = mockapi.chat_stream(completion, include_usage=include_usage)
            self._send(200, data, "text/event-stream; charset=utf-8", None)
            return
        self._send_json(200, completion)

    def _other_api(self, request: dict[str, Any], api: str) -> None:
        """``POST /v1/completions`` (answered as the chat responder answers the prompt)
        and ``POST /v1/embeddings``."""
        if not isinstance(request.get("model"), str) or not request["model"]:
            self._send_error(400, "you must provide a model parameter", "invalid_request_error")
            return
        if api == "embeddings":
            answer = mockapi.embeddings(request)
            if answer is None:
                self._send_error(400, "'input' must be text or a list of texts",
                                 "invalid_request_error")  # fmt: skip
                return
            self._send_json(200, answer)
            return
        prompt = request.get("prompt")
        if not isinstance(prompt, str):
            self._send_error(400, "'prompt' must be text", "invalid_request_error")
            return
        text = self.server.mock.responder(
            {**request, "messages": [{"role": "user", "content": prompt}]}
        )
        self._send_json(200, mockapi.text_completion(request, _text_of(text)))

    def _authorized(self) -> bool:
        expected = self.server.mock.require_api_key
        if expected is None:
            return True
        header = self.headers.get("Authorization", "")
        if hmac.compare_digest(header.encode(), f"Bearer {expected}".encode()):
            return True
        given = header.removeprefix("Bearer ").strip()
        # Echoes the key it got, on purpose: clients must keep it out of their own errors.
        message = f"Incorrect API key provided: {given}." if given else "No API key provided."
        self._send_error(401, message, "invalid_request_error", "invalid_api_key")
        return False

    def _send_fault(self, fault: _Fault) -> None:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.body is None:
            body = _error_body(fault.status, f"injected failure (HTTP {fault.status})", "mock")
            self._send_json(fault.status, body, headers)
        elif isinstance(fault.body, dict):
            self._send_json(fault.status, fault.body, headers)
        else:
            self._send(fault.status, fault.body.encode(), "text/plain; charset=utf-8", headers)

    def _send_error(
        self, status: int, message: str, kind: str, code: str | int | None = None
    ) -> None:
        self._send_json(status, _error_body(status, message, kind, code))

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()  # the headers' write: it fails first if the client is gone
            self.wfile.write(body)
        finally:
            if self._timing is not None:
                self._timing.answered = time.monotonic()


# -- the server ----------------------------------------------------------------------------------


class MockServer:
    """An OpenAI-compatible server on 127.0.0.1, serving from a background thread once created.

    ``responder`` maps a request body to the assistant's content string, or to a whole message
    dict (e.g. with ``tool_calls``); it defaults to ``ArithmeticResponder(error_rate, seed)``
    (``error_rate`` applies only to that default). ``fail_rate`` answers a seeded random fraction
    of chat requests with 500. ``require_api_key`` demands ``Authorization: Bearer <key>``
    (401 otherwise); ``models``, if given, is the list of known models (others get 404).
    """

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        latency: float = 0.0,
        error_rate: float = 0.0,
        fail_rate: float = 0.0,
        seed: int = 0,
        require_api_key: str | None = None,
        models: Iterable[str] | None = None,
        port: int = 0,
        keep_requests: int | None = None,
    ) -> None:
        if latency < 0 or not 0.0 <= fail_rate <= 1.0:
            raise UsageError("latency must be >= 0 and fail_rate within [0, 1]")
        if responder is None:
            responder = ArithmeticResponder(error_rate=error_rate, seed=seed)
        self.responder: Responder = responder
        self.latency = latency
        self.fail_rate = fail_rate
        self.require_api_key = require_api_key
        self.models = list(models) if models is not None else None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._timeouts: deque[float] = deque()
        self._calls = 0
        # The newest ``keep_requests`` request bodies (all by default: tests inspect them).
        self._requests: deque[_Timing] = deque(maxlen=keep_requests)
        self._in_flight = 0
        self._max_concurrency = 0
        self._stopping = threading.Event()
        self._closed = False
        self._httpd = _HTTPServer(("127.0.0.1", port), self)
        self.port: int = self._httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"osmo-mockserver-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"MockServer(base_url={self.base_url!r})"

    def __enter__(self) -> MockServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- fault injection --

    def fail_next(
        self,
        status: int,
        count: int = 1,
        retry_after: float | str | None = None,
        *,
        body: str | dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``count`` chat requests with ``status``.

        ``retry_after`` (seconds, or an HTTP-date string) is sent as ``Retry-After``. ``body``
        replaces the default OpenAI-style error JSON: a dict is sent as JSON, a string as is
        (e.g. ``fail_next(200, body="not json")`` for a malformed answer).
        """
        with self._lock:
            self._faults.extend(_Fault(status, retry_after, body) for _ in range(count))

    def timeout_next(self, count: int = 1, delay: float = 5.0) -> None:
        """Make the next ``count`` chat requests wait ``delay`` seconds before answering."""
        with self._lock:
            self._timeouts.extend([delay] * count)

    # -- counters --

    def settled(self) -> bool:
        """True once every request that clients have sent has been counted in ``calls``:
        no connection is open and none waits to be accepted. A client killed with requests
        on the wire leaves them to be read after its death; wait for this (with a deadline)
        before reading ``calls`` to count what a later client asks."""
        return self._httpd.settled()

    @property
    def calls(self) -> int:
        """Chat requests received, including those answered with an injected failure."""
        with self._lock:
            return self._calls

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the JSON bodies of the chat requests received, in arrival order
        (the newest ``keep_requests`` of them, if that was given)."""
        with self._lock:
            return [t.request for t in self._requests]

    @property
    def exchanges(self) -> list[Exchange]:
        """A snapshot of the chat requests received, as ``requests`` (the same ones, in the
        same order), each with when it arrived and when its response was completely
        written: the kill benchmark's line between an answer paid for and a call in flight."""
        with self._lock:
            return [Exchange(t.request, t.arrived, t.answered) for t in self._requests]

    @property
    def max_concurrency(self) -> int:
        """The largest number of chat requests seen in flight at the same time."""
        with self._lock:
            return self._max_concurrency

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.drop_connections()
        self._httpd.server_close()
        self._thread.join()

    # -- used by the handler threads --

    def _enter(self) -> None:
        with self._lock:
            self._calls += 1
            self._in_flight += 1
            self._max_concurrency = max(self._max_concurrency, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, request: dict[str, Any]) -> _Timing:
        timing = _Timing(request)
        with self._lock:
            self._requests.append(timing)
        return timing

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _take_timeout(self) -> float | None:
        with self._lock:
            return self._timeouts.popleft() if self._timeouts else None

    def _random_failure(self) -> bool:
        with self._lock:
            return self.fail_rate > 0 and self._rng.random() < self.fail_rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m osmo_store.testing.mockserver",
        description="Serve a mock OpenAI-compatible chat API on 127.0.0.1 until SIGINT/SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of wrong answers")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of HTTP 500s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", help="require this bearer token")
    parser.add_argument("--model", action="append", help="known model (repeatable; default: any)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        server = MockServer(
            latency=args.latency,
            error_rate=args.error_rate,
            fail_rate=args.fail_rate,
            seed=args.seed,
            require_api_key=args.api_key,
            models=args.model,
            port=args.port,
            keep_requests=0,  # a long-lived server must not grow with every request
        )
    except (OSError, UsageError) as e:  # a port in use, or bad numbers: a line, not a trace
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        where = f"port {args.port} on 127.0.0.1: " if isinstance(e, OSError) else ""
        print(f"mockserver: error: {where}{reason}", file=sys.stderr)
        return 1
    with server:
        print(server.base_url, flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
