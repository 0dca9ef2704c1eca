"""ChatClient against the real MockServer over 127.0.0.1 sockets (nothing in requests is mocked)."""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest
import requests

from osmo_store.errors import FatalModelError, ModelCallError, ModelError, OsmoError, UsageError
from osmo_store.eval.client import (
    ChatClient,
    normalize_base_url,
    parse_retry_after,
    resolve_api_key,
)
from osmo_store.testing.mockserver import ArithmeticResponder, MockServer, solve_arithmetic

from .conftest import ROOT
from .waiting import DEADLINE, wait_until

ClientFactory = Callable[..., ChatClient]


def ask(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "osmo-mock", "messages": [{"role": "user", "content": question}], **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer() as srv:
        yield srv


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    clients: list[ChatClient] = []

    def make(base_url: str, **kwargs: Any) -> ChatClient:
        options: dict[str, Any] = {
            "api_key": None,
            "timeout": 5.0,
            "backoff_base": 0.001,
            "backoff_max": 0.5,
        }
        options.update(kwargs)
        client = ChatClient(base_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_chat_success(server: MockServer, make_client: ClientFactory) -> None:
    client = make_client(server.base_url)
    request = ask("What is 12 + 7?", temperature=0)
    result = client.chat(request)
    assert result.message == {"role": "assistant", "content": "19"}
    assert result.attempts == 1
    assert result.latency_s > 0
    assert result.response["object"] == "chat.completion"
    assert result.response["model"] == "osmo-mock"
    assert result.response["choices"][0]["finish_reason"] == "stop"
    assert server.calls == 1
    assert server.requests == [request]


def test_usage_is_parsed(server: MockServer, make_client: ClientFactory) -> None:
    request = {
        "model": "osmo-mock",
        "messages": [
            {"role": "system", "content": "Answer with a number only."},
            {"role": "user", "content": "What is (2 + 3) * 4?"},
        ],
    }
    result = make_client(server.base_url).chat(request)
    assert result.message["content"] == "20"
    # Whitespace tokens: 5 in the system prompt + 7 in the question; 1 in the answer.
    assert result.usage == {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}


def test_429_honours_retry_after(server: MockServer, make_client: ClientFactory) -> None:
    server.fail_next(429, retry_after=0.3)
    client = make_client(server.base_url)  # own backoff ~1 ms: only Retry-After explains a wait
    started = time.monotonic()
    result = client.chat(ask("What is 2 + 2?"))
    elapsed = time.monotonic() - started
    assert result.message["content"] == "4"
    assert result.attempts == 2
    assert server.calls == 2
    # At least the server's Retry-After; the upper bound only catches a wait of minutes
    # (bounds are generous: a loaded machine is slow, never wrong).
    assert 0.28 <= elapsed < 30
    assert server.requests[0] == server.requests[1]  # the same request, re-sent


def test_retry_after_is_capped_at_backoff_max(
    server: MockServer, make_client: ClientFactory
) -> None:
    server.fail_next(503, retry_after=120)
    client = make_client(server.base_url, backoff_max=0.2)
    started = time.monotonic()
    assert client.chat(ask("What is 1 + 1?")).attempts == 2
    assert time.monotonic() - started < 60  # not the 120 s the server asked for


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 0.25 ", now=now) == 0.25
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("-3", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_500_twice_then_success(server: MockServer, make_client: ClientFactory) -> None:
    server.fail_next(500, count=2)
    result = make_client(server.base_url).chat(ask("What is 3 * 3?"))
    assert result.message["content"] == "9"
    assert result.attempts == 3
    assert server.calls == 3


def test_retries_exhausted(server: MockServer, make_client: ClientFactory) -> None:
    server.fail_next(503, count=10)
    client = make_client(server.base_url, max_retries=2)
    with pytest.raises(ModelCallError) as info:
        client.chat(ask("What is 3 * 3?"))
    exc = info.value
    assert not isinstance(exc, FatalModelError)
    assert exc.status == 503
    assert exc.attempts == 3
    assert server.calls == 3
    assert "503" in str(exc)
    assert "injected failure" in str(exc)  # an excerpt of the server's error body
    assert "\n" not in str(exc)


def test_timeout_then_success(server: MockServer, make_client: ClientFactory) -> None:
    server.timeout_next(1, delay=60.0)
    client = make_client(server.base_url, timeout=0.3)
    started = time.monotonic()
    result = client.chat(ask("What is 10 - 4?"))
    assert result.message["content"] == "6"
    assert result.attempts == 2
    assert server.calls == 2
    assert time.monotonic() - started < 30  # gave up on the slow answer, did not wait for it


def test_timeouts_exhausted_is_a_call_error(server: MockServer, make_client: ClientFactory) -> None:
    server.timeout_next(2, delay=60.0)
    client = make_client(server.base_url, timeout=0.2, max_retries=1)
    with pytest.raises(ModelCallError) as info:
        client.chat(ask("What is 10 - 4?"))
    assert info.value.status is None
    assert info.value.attempts == 2
    assert "no response within 0.2s" in str(info.value)


def test_wrong_api_key_is_fatal_and_never_shown(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-wrong-secret-4567"
    caplog.set_level(logging.DEBUG)
    with MockServer(require_api_key="sk-right-1234") as srv:
        client = make_client(srv.base_url, api_key=secret)
        with pytest.raises(FatalModelError) as info:
            client.chat(ask("What is 1 + 1?"))
        assert make_client(srv.base_url, api_key="sk-right-1234").chat(ask("What is 1 + 1?"))
        # The mock echoes the key it got into its 401 body; the client must mask it.
        assert secret in body_of_401(srv, secret)
    exc = info.value
    assert exc.status == 401
    assert exc.attempts == 1
    assert "401" in str(exc)
    assert "Incorrect API key provided: ***" in str(exc)
    for text in (str(exc), repr(exc), exc.hint or "", repr(client), caplog.text):
        assert secret not in text


def body_of_401(srv: MockServer, key: str) -> str:
    response = requests.post(
        f"{srv.base_url}/chat/completions",
        json=ask("hi"),
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    assert response.status_code == 401
    return response.text


def test_key_is_masked_in_retry_logs(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-abcdef-998877"
    caplog.set_level(logging.DEBUG)
    with MockServer(require_api_key=secret) as srv:
        srv.fail_next(500, body={"error": {"message": f"upstream saw {secret}"}})
        result = make_client(srv.base_url, api_key=secret).chat(ask("What is 5 + 5?"))
    assert result.attempts == 2
    assert "upstream saw ***" in caplog.text
    assert secret not in caplog.text


def test_unknown_model_is_fatal(make_client: ClientFactory) -> None:
    with MockServer(models=["small"]) as srv:
        client = make_client(srv.base_url)
        assert client.chat({**ask("What is 1 + 2?"), "model": "small"}).message["content"] == "3"
        with pytest.raises(FatalModelError) as info:
            client.chat({**ask("What is 1 + 2?"), "model": "huge"})
        assert srv.calls == 2  # no retries
    assert info.value.status == 404
    assert "huge" in str(info.value)


def test_wrong_endpoint_path_is_fatal(server: MockServer, make_client: ClientFactory) -> None:
    client = make_client(f"{server.url}/api/v2")
    with pytest.raises(FatalModelError) as info:
        client.chat(ask("What is 1 + 2?"))
    assert info.value.status == 404
    assert "/api/v2/chat/completions" in str(info.value)


def test_unreachable_endpoint_fails_fast(make_client: ClientFactory) -> None:
    port = free_port()  # bound, then closed: nothing listens there
    client = make_client(f"http://127.0.0.1:{port}/v1", api_key="sk-should-not-show", max_retries=5)
    with pytest.raises(FatalModelError) as info:
        client.chat(ask("What is 1 + 2?"))
    exc = info.value
    assert exc.status is None
    assert exc.attempts == 2  # one quick retry, not the whole budget of 6
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in str(exc)
    assert "unreachable" in str(exc)
    assert "sk-should-not-show" not in str(exc) + repr(exc)


def test_endpoint_going_away_after_success_uses_retry_budget(make_client: ClientFactory) -> None:
    srv = MockServer()
    client = make_client(srv.base_url, max_retries=3)
    assert client.chat(ask("What is 1 + 2?")).attempts == 1
    srv.close()
    with pytest.raises(FatalModelError) as info:
        client.chat(ask("What is 1 + 2?"))
    assert info.value.attempts == 4


def test_bad_request_is_a_call_error_without_retries(
    server: MockServer, make_client: ClientFactory
) -> None:
    client = make_client(server.base_url)
    with pytest.raises(ModelCallError) as info:
        client.chat({"model": "osmo-mock", "messages": []})
    exc = info.value
    assert not isinstance(exc, FatalModelError)
    assert isinstance(exc, ModelError) and isinstance(exc, OsmoError)
    assert exc.status == 400
    assert exc.attempts == 1
    assert server.calls == 1
    assert "'messages' must be a non-empty list" in str(exc)


def test_insufficient_quota_429_is_fatal(server: MockServer, make_client: ClientFactory) -> None:
    body = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    server.fail_next(429, count=5, body=body)
    with pytest.raises(FatalModelError) as info:
        make_client(server.base_url).chat(ask("What is 1 + 2?"))
    assert info.value.status == 429
    assert server.calls == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [("<html>oops</html>", "not a JSON object: <html>oops</html>"), ({"id": "x"}, "no choices")],
)
def test_malformed_success_is_a_call_error(
    server: MockServer, make_client: ClientFactory, body: Any, expected: str
) -> None:
    server.fail_next(200, body=body)
    with pytest.raises(ModelCallError) as info:
        make_client(server.base_url).chat(ask("What is 1 + 2?"))
    assert info.value.status == 200
    assert expected in str(info.value)
    assert server.calls == 1


def test_random_failures_are_retried(make_client: ClientFactory) -> None:
    with MockServer(fail_rate=0.3, seed=7) as srv:
        client = make_client(srv.base_url, max_retries=8)
        answers = [client.chat(ask(f"What is {i} + 1?")) for i in range(30)]
        assert [r.message["content"] for r in answers] == [str(i + 1) for i in range(30)]
        assert srv.calls == sum(r.attempts for r in answers)
        assert srv.calls > 30


def test_concurrent_calls(make_client: ClientFactory) -> None:
    with MockServer(latency=0.05) as srv:
        client = make_client(srv.base_url, pool_size=8)
        results: dict[tuple[int, int], str] = {}
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(4):
                    reply = client.chat(ask(f"What is {t} * {i} + 1?"))
                    results[t, i] = reply.message["content"]
            except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert results == {(t, i): str(t * i + 1) for t in range(32) for i in range(4)}
        assert srv.calls == 128
        assert 1 < srv.max_concurrency <= 8  # parallel, and bounded by the pool


def test_tool_calls_round_trip(make_client: ClientFactory) -> None:
    def responder(request: dict[str, Any]) -> str | dict[str, Any]:
        last = request["messages"][-1]
        if last["role"] == "tool":
            return f"It is {json.loads(last['content'])['temp_c']} C in Oslo."
        assert request["tools"][0]["function"]["name"] == "get_weather"
        call = {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
        return {"content": None, "tool_calls": [call]}

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    with MockServer(responder=responder) as srv:
        client = make_client(srv.base_url)
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
        first = client.chat({"model": "m", "messages": messages, "tools": tools})
        assert first.response["choices"][0]["finish_reason"] == "tool_calls"
        (call,) = first.message["tool_calls"]
        assert call["type"] == "function"
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
        messages += [
            first.message,
            {"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": -3}'},
        ]
        second = client.chat({"model": "m", "messages": messages, "tools": tools})
        assert second.message["content"] == "It is -3 C in Oslo."
        assert srv.requests[1]["messages"][1]["tool_calls"][0]["id"] == "call_1"


def test_solve_arithmetic() -> None:
    assert solve_arithmetic("What is 12 + 7?") == 19
    assert solve_arithmetic("Q3: what is (2 + 3) * -4? Reply with a number.") == -20
    assert solve_arithmetic("What is 2 - 3 - 4?") == -5  # left-associative
    assert solve_arithmetic("Compute 6*7 please") == 42
    assert solve_arithmetic("What is __import__('os').getcwd()?") is None
    assert solve_arithmetic("What is (1 + 2?") is None
    assert solve_arithmetic("hello there") is None


def test_arithmetic_responder_is_deterministic_with_realistic_errors(
    make_client: ClientFactory,
) -> None:
    questions = [ask(f"What is {i} + {i * 3}?") for i in range(60)]
    with MockServer(error_rate=0.3, seed=1) as srv:
        client = make_client(srv.base_url)
        first = [client.chat(q).message["content"] for q in questions]
        again = [client.chat(q).message["content"] for q in questions]
    with MockServer(error_rate=0.3, seed=1) as srv:
        other_server = [make_client(srv.base_url).chat(q).message["content"] for q in questions]
    assert first == again == other_server
    wrong = sum(answer != str(i * 4) for i, answer in enumerate(first))
    assert 5 <= wrong <= 35
    other_seed = [ArithmeticResponder(error_rate=0.3, seed=2)(q) for q in questions]
    assert other_seed != first
    assert ArithmeticResponder()(ask("just echo me")) == "just echo me"


def test_models_endpoint(make_client: ClientFactory) -> None:
    with MockServer(models=["a", "b"]) as srv:
        listing = requests.get(f"{srv.base_url}/models", timeout=5).json()
    assert [m["id"] for m in listing["data"]] == ["a", "b"]


def test_base_url_rules(server: MockServer, make_client: ClientFactory) -> None:
    assert normalize_base_url("http://localhost:8000") == "http://localhost:8000/v1"
    assert normalize_base_url("http://localhost:8000/") == "http://localhost:8000/v1"
    assert normalize_base_url("http://localhost:8000/v1/") == "http://localhost:8000/v1"
    assert normalize_base_url("https://openrouter.ai/api/v1") == "https://openrouter.ai/api/v1"
    for bad in ("localhost:8000", "ftp://host/v1", "http://user:pw@host/v1", "http://h/v1?k=1"):
        with pytest.raises(UsageError) as info:
            ChatClient(bad, api_key=None)
        assert "pw" not in str(info.value)
    client = make_client(server.url)  # no path: /v1 is appended
    assert client.chat(ask("What is 8 - 10?")).message["content"] == "-2"


def test_resolve_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve_api_key(None) is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert resolve_api_key(None) == "sk-openai"
    monkeypatch.setenv("OSMO_API_KEY", "sk-osmo")
    assert resolve_api_key(None) == "sk-osmo"
    assert resolve_api_key("sk-explicit") == "sk-explicit"
    monkeypatch.setenv("OSMO_API_KEY", "")
    assert resolve_api_key("") == "sk-openai"


def test_mockserver_runs_as_a_module() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "osmo_store.testing.mockserver", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
        assert ready, f"mock server printed nothing within {DEADLINE:g} s"
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url == f"http://127.0.0.1:{port}/v1"
        with ChatClient(base_url, api_key=None, timeout=5) as client:
            assert client.chat(ask("What is 20 + 22?")).message["content"] == "42"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mock_server_can_bound_the_requests_it_keeps() -> None:
    with MockServer(keep_requests=2) as srv:
        client = ChatClient(srv.base_url, api_key=None, max_retries=0)
        for i in range(3):
            client.chat({"model": "m", "messages": [{"role": "user", "content": f"{i} + 1"}]})
        client.close()
        assert srv.calls == 3
        assert [r["messages"][0]["content"] for r in srv.requests] == ["1 + 1", "2 + 1"]


class ScriptedServer:
    """A raw HTTP/1.1 server on 127.0.0.1 that answers each request with the next scripted
    bytes (and closes the connection after it when the script says so): for bodies the mock
    server never sends (gzip, chunked, cut short)."""

    def __init__(self, script: list[tuple[bytes, bool]]) -> None:
        self.script = list(script)
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.script:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                buf = b""
                while self.script:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    if b"\r\n\r\n" not in buf:
                        break
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    buf = buf[length:]
                    self.requests += 1
                    answer, close = self.script.pop(0)
                    conn.sendall(answer)
                    if close:
                        break

    def close(self) -> None:
        self.sock.close()


def _answer(body: bytes, *headers: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", *headers]
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _completion(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


def test_gzip_chunked_and_cut_short_bodies(make_client: ClientFactory) -> None:
    import gzip

    body = _completion("42")
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:10], body[10:])) + b"0\r\n\r\n"
    srv = ScriptedServer([
        (_answer(gzip.compress(body), "Content-Encoding: gzip"), False),
        (_answer(chunked, "Transfer-Encoding: chunked"), False),
        # A body cut short (the server dies mid-answer): retried as a lost connection.
        (_answer(body)[:-5], True),
        (_answer(body), False),
    ])  # fmt: skip
    try:
        client = make_client(f"http://127.0.0.1:{srv.port}/v1", max_retries=2)
        for _ in range(2):
            assert client.chat(ask("6 * 7")).message["content"] == "42"
        result = client.chat(ask("6 * 7"))
        assert result.message["content"] == "42" and result.attempts == 2
        assert srv.requests == 4
    finally:
        srv.close()


def post_raw(srv: MockServer, question: str) -> socket.socket:
    """A chat request sent on a bare socket, not read back: the client can die at will."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": question}]})
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    return sock


def test_mock_server_settles_only_once_a_dead_clients_request_is_counted() -> None:
    """A client that sends a request and dies at once (as a SIGKILLed eval does) leaves it
    on the wire: ``calls`` may not count it yet, and ``settled`` says so until it does."""
    gate = threading.Event()

    def responder(request: dict) -> str:
        gate.wait(DEADLINE)
        return "ok"

    with MockServer(responder=responder) as srv:
        post_raw(srv, "hi").close()  # the client is gone; its request is not
        assert not srv.settled()  # open (being answered) or waiting to be accepted
        gate.set()
        wait_until(srv.settled, what="the server to finish with the dead client")
        assert srv.calls == 1


def test_mock_server_times_each_answer_once_written_also_to_a_client_that_died() -> None:
    """The kill benchmark tells an answer paid for (written whole before the kill) from a
    call still waiting for the model: per request, the server keeps when it arrived and when
    its response was completely written, which is also when a dead client's is thrown away."""
    gate = threading.Event()

    def responder(request: dict) -> str:
        if request["messages"][-1]["content"] == "held":
            gate.wait(DEADLINE)
        return "ok"

    with MockServer(responder=responder) as srv:
        start = time.monotonic()
        with ChatClient(srv.base_url, api_key=None, max_retries=0) as client:
            client.chat(ask("What is 1 + 1?"))
        (first,) = wait_until(
            lambda: [e for e in srv.exchanges if e.answered is not None], what="its write"
        )
        assert first.request == srv.requests[0]
        assert start <= first.arrived <= first.answered <= time.monotonic()

        sock = post_raw(srv, "held")
        wait_until(lambda: len(srv.exchanges) == 2, what="the held request to arrive")
        held = srv.exchanges[1]
        assert held.request["messages"][-1]["content"] == "held"
        assert held.arrived >= first.answered and held.answered is None  # not written yet
        # Reset on close (no linger): the server's write then fails, the client is gone.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        died = time.monotonic()
        gate.set()
        wait_until(srv.settled, what="the server to finish with the dead client")
        answered = srv.exchanges[1].answered
        assert answered is not None and answered >= died
        assert srv.requests == [e.request for e in srv.exchanges]


class _ForwardProxy:
    """A plain HTTP forward proxy on 127.0.0.1: takes absolute-URI requests, passes them on
    and counts them (what ``http_proxy`` points at in a company network)."""

    def __init__(self) -> None:
        import http.client
        import http.server

        proxy = self
        self.seen: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                proxy.seen.append(self.path)
                parts = self.path.split("/", 3)  # http:, '', host:port, rest
                upstream = http.client.HTTPConnection(parts[2], timeout=DEADLINE)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request("POST", "/" + parts[3], body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.getheader("Content-Type", ""))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.parametrize("bypass", [False, True])
def test_calls_go_through_the_environments_proxy_unless_no_proxy_says_not(
    server: MockServer,
    make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    bypass: bool,
) -> None:
    proxy = _ForwardProxy()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", proxy.url)
        if bypass:
            monkeypatch.setenv("no_proxy", "127.0.0.1")
        client = make_client(server.base_url)
        assert client.chat(ask("6 * 7")).message["content"] == "42"
        expected = [] if bypass else [f"{server.base_url}/chat/completions"]
        assert proxy.seen == expected
        assert len(server.requests) == 1
    finally:
        proxy.close()
