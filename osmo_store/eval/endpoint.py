"""The recording endpoint: an OpenAI-compatible API on 127.0.0.1 that an agent's own SDK
(openai, litellm, LangChain, curl) calls instead of the model, so its calls are cached,
single-flighted, retried and recorded exactly as ``client.chat`` calls are.

One endpoint serves one eval. Its API key is a random token made for that eval; each
rollout gets a base URL of its own, ``http://127.0.0.1:PORT/r/<rollout token>/v1``, so a
call is attributed to its rollout (and keyed with its sample index and repeat count). The
rollout's token is forgotten when the rollout ends: a late call gets 403.

Retries are the eval's (``--max-retries``): an error reaches the SDK once they are spent,
with the upstream status and ``x-should-retry: false``, which the ``openai`` SDK (and the
clients built on it) obey, so its own retries do not multiply the eval's.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from ..errors import FatalModelError, ModelError
from .config import CHAT_API
from .sse import render_chat_stream

log = logging.getLogger(__name__)

#: answers a request to an API (``chat/completions``, ``completions``, ``embeddings``: the
#: agent's fields, the model and stream flags taken out; the transport fields to send
#: along) with the whole upstream response; raises ``ModelError``
Complete = Callable[[str, dict[str, Any], dict[str, Any]], dict[str, Any]]

#: the APIs served, each cached and recorded; every other path is refused (404)
RECORDED_APIS = frozenset({CHAT_API, "completions", "embeddings"})

#: request fields the endpoint owns: the model is the eval's (it is in every call key), and
#: streaming is how the answer is sent back, not what is asked
_ENDPOINT_FIELDS = ("model", "stream", "stream_options")
_PREFIX = "/r/"
_NO_RETRY = {"x-should-retry": "false"}


class EndpointRollout:
    """One rollout's access to the endpoint, from ``RecordingEndpoint.rollout``: its base
    URL and key while it runs. Used as a context manager around the agent: on the way out
    the rollout's token is forgotten, and a model failure the agent saw through the
    endpoint becomes the run's failure (a fatal one, such as a bad upstream key, stops the
    eval as it would have from ``client.chat``)."""

    def __init__(self, endpoint: RecordingEndpoint, token: str, complete: Complete) -> None:
        self._endpoint = endpoint
        self.token = token
        self.complete = complete
        self.fatal: FatalModelError | None = None
        self.failure: ModelError | None = None

    @property
    def base_url(self) -> str:
        return f"{self._endpoint.url}{_PREFIX}{self.token}/v1"

    @property
    def api_key(self) -> str:
        return self._endpoint.api_key

    def failed(self, error: ModelError) -> None:
        if isinstance(error, FatalModelError):
            self.fatal = self.fatal or error
        self.failure = error

    def __enter__(self) -> EndpointRollout:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._endpoint._forget(self.token)
        if self.fatal is not None:
            raise self.fatal from exc
        # The agent gave up on a model call's error (its SDK raised it): the run failed for
        # the model's sake, as a ``client.chat`` that raised would have said.
        gave_up = isinstance(exc, Exception) and not isinstance(exc, ModelError)
        if gave_up and self.failure is not None:
            raise self.failure from exc


class RecordingEndpoint:
    """The eval's endpoint. The HTTP server starts at the first ``base_url`` an agent asks
    for (agents that only use ``client.chat`` never start it); ``close`` stops it and ends
    its threads."""

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.api_key = "osmo-" + secrets.token_urlsafe(24)
        self._auth = f"Bearer {self.api_key}".encode()
        self._rollouts: dict[str, EndpointRollout] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, starting the server if it is not running yet."""
        with self._lock:
            if self._server is None:
                if self._closed:
                    raise RuntimeError("the eval's endpoint is closed")
                self._server = _Server(self)
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": 0.1},
                    name="osmo-endpoint",
                    daemon=True,
                )
                self._thread.start()
            return f"http://127.0.0.1:{self._server.server_port}"

    def rollout(self, complete: Complete) -> EndpointRollout:
        token = secrets.token_urlsafe(16)
        session = EndpointRollout(self, token, complete)
        with self._lock:
            self._rollouts[token] = session
        return session

    def _forget(self, token: str) -> None:
        with self._lock:
            self._rollouts.pop(token, None)

    def _find(self, token: str) -> EndpointRollout | None:
        with self._lock:
            return self._rollouts.get(token)

    def _authorized(self, header: str | None) -> bool:
        return hmac.compare_digest((header or "").encode(), self._auth)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()  # joins the handler threads (block_on_close)
        thread.join()


class _Server(ThreadingHTTPServer):
    # Handler threads are joined by server_close: an eval leaves no thread of its own.
    daemon_threads = False
    block_on_close = True
    request_queue_size = 1024  # dozens of rollouts connect at once

    def __init__(self, endpoint: RecordingEndpoint) -> None:
        self.endpoint = endpoint
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, address

    def forget(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def drop_connections(self) -> None:
        """Wake handler threads waiting on idle keep-alive connections, so close is quick."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # An agent that gave up mid-answer makes the write fail: expected, not worth stderr.
        log.debug("endpoint: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: SDK clients pool their connections
    server_version = "osmo-endpoint/1"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK
    # would add ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.forget(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("endpoint: %s", format % args)

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            return
        _, path = route
        if path != "/models":
            self._refuse(404, f"no route for GET /v1{path}", "not_found")
            return
        model = self.server.endpoint.model
        data = [{"id": model, "object": "model", "created": 0, "owned_by": "osmo"}] if model else []
        self._send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        # The body is read whatever the route: leftovers would corrupt the next request on
        # this keep-alive connection.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = self._route()
        if route is None:
            return
        session, path = route
        api = path.removeprefix("/")
        if api not in RECORDED_APIS:
            self._refuse(404, f"no route for POST /v1{path}: osmo records only "
                         "chat/completions, completions and embeddings", "not_found")  # fmt: skip
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._refuse(400, "the request body must be a JSON object", "invalid_request_error")
            return
        stream = request.get("stream") is True
        if stream and api != CHAT_API:
            self._refuse(400, f"osmo streams only chat completions, not {api}",
                         "invalid_request_error")  # fmt: skip
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        fields = {k: v for k, v in request.items() if k not in _ENDPOINT_FIELDS}
        # A stream is asked for upstream too (it is what the agent would have got), with
        # usage, so that the stored answer has it.
        transport = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        try:
            response = session.complete(api, fields, transport)
        except ModelError as e:
            session.failed(e)
            self._refuse(e.status or 502, str(e), "upstream_error")
            return
        if stream:
            data = render_chat_stream(response, include_usage=include_usage)
            self._send(200, data, "text/event-stream; charset=utf-8")
        else:
            self._send_json(200, response)

    def _route(self) -> tuple[EndpointRollout, str] | None:
        """The rollout a request is for and the API path after ``/v1``; None once refused."""
        endpoint = self.server.endpoint
        if not endpoint._authorized(self.headers.get("Authorization")):
            self._refuse(401, "wrong or missing API key for the eval's endpoint", "invalid_api_key")
            return None
        token, _, rest = self.path.partition("?")[0].removeprefix(_PREFIX).partition("/")
        session = endpoint._find(token) if self.path.startswith(_PREFIX) else None
        if session is None:
            self._refuse(
                403, "unknown or finished rollout: use the base URL given to this run",
                "permission_denied",
            )  # fmt: skip
            return None
        if not rest.startswith("v1/"):
            self._refuse(404, f"no route for {self.path}", "not_found")
            return None
        return session, "/" + rest.removeprefix("v1/").rstrip("/")

    def _refuse(self, status: int, message: str, kind: str) -> None:
        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        self._send_json(status, body, _NO_RETRY)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
