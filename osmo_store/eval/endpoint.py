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

import hmac
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, NamedTuple

from ..errors import FatalModelError, ModelError
from .config import CHAT_API
from .localhttp import LocalHTTPServer, Reply
from .sse import render_chat_stream


class Answer(NamedTuple):
    """A model's answer: the whole response, and the bytes the model sent it as when it was
    asked just now (None when it comes from the store, or was streamed). Those bytes go to
    the agent as they are: decoding them is needed to record the answer, and encoding the
    result again was two thirds of the endpoint's dispatch CPU per call."""

    response: dict[str, Any]
    body: bytes | None = None


#: answers a request to an API (``chat/completions``, ``completions``, ``embeddings``: the
#: agent's fields, the model and stream flags taken out; the transport fields to send
#: along) with the whole upstream response; raises ``ModelError``
Complete = Callable[[str, dict[str, Any], dict[str, Any]], Answer]

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
        self._server: LocalHTTPServer | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, starting the server if it is not running yet."""
        with self._lock:
            if self._server is None:
                if self._closed:
                    raise RuntimeError("the eval's endpoint is closed")
                self._server = LocalHTTPServer(self._dispatch)
            return f"http://127.0.0.1:{self._server.port}"

    def rollout(self, complete: Complete) -> EndpointRollout:
        token = secrets.token_urlsafe(16)
        session = EndpointRollout(self, token, complete)
        with self._lock:
            self._rollouts[token] = session
        return session

    def _forget(self, token: str) -> None:
        with self._lock:
            self._rollouts.pop(token, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            server = self._server
        if server is not None:
            server.close()

    # -- serving (on the server's connection threads) --

    def _dispatch(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        auth = headers.get("authorization", "").encode()
        if not hmac.compare_digest(auth, self._auth):
            return _refuse(
                401, "wrong or missing API key for the eval's endpoint", "invalid_api_key"
            )
        token, _, rest = target.partition("?")[0].removeprefix(_PREFIX).partition("/")
        with self._lock:
            session = self._rollouts.get(token) if target.startswith(_PREFIX) else None
        if session is None:
            return _refuse(
                403, "unknown or finished rollout: use the base URL given to this run",
                "permission_denied",
            )  # fmt: skip
        if not rest.startswith("v1/"):
            return _refuse(404, f"no route for {target}", "not_found")
        api = rest.removeprefix("v1/").rstrip("/")
        if method == "GET" and api == "models":
            model = self.model
            data = [{"id": model, "object": "model", "created": 0, "owned_by": "osmo"}]
            return _json(200, {"object": "list", "data": data if model else []})
        if method != "POST" or api not in RECORDED_APIS:
            return _refuse(404, f"no route for {method} /v1/{api}: osmo serves GET /v1/models "
                           "and records POST chat/completions, completions and embeddings",
                           "not_found")  # fmt: skip
        return _call(session, api, body)


def _call(session: EndpointRollout, api: str, body: bytes) -> Reply:
    """A model call through the eval's path: cached, single-flighted, retried, recorded."""
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return _refuse(400, "the request body must be a JSON object", "invalid_request_error")
    stream = request.get("stream") is True
    if stream and api != CHAT_API:
        return _refuse(400, f"osmo streams only chat completions, not {api}",
                       "invalid_request_error")  # fmt: skip
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    fields = {k: v for k, v in request.items() if k not in _ENDPOINT_FIELDS}
    # A stream is asked for upstream too (it is what the agent would have got), with usage,
    # so that the stored answer has it.
    transport = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    try:
        answer = session.complete(api, fields, transport)
    except ModelError as e:
        session.failed(e)
        return _refuse(e.status or 502, str(e), "upstream_error")
    if stream:
        data = render_chat_stream(answer.response, include_usage=include_usage)
        return Reply(200, data, "text/event-stream; charset=utf-8")
    if answer.body is not None:
        return Reply(200, answer.body, "application/json")
    return _json(200, answer.response)


def _json(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(obj).encode(), "application/json", headers or {})


def _refuse(status: int, message: str, kind: str) -> Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return _json(status, body, _NO_RETRY)
