"""Calls to an OpenAI-compatible chat completions endpoint: pooled, retried, key-safe.

Failures are sorted by who can fix them. ``FatalModelError`` is for what will hit every run
(bad key, unknown model or endpoint, unreachable server): the eval should stop. ``ModelCallError``
is for one call (retries exhausted, a 400 for this prompt, a malformed answer): the eval records
a failed run and goes on. Transient failures (429, 5xx gateways, resets, read timeouts) are
retried with exponential backoff and full jitter, honouring ``Retry-After``.

The API key is sent only in the ``Authorization`` header. It is never put into an exception,
a log record or a repr, and is masked out of server error bodies quoted in messages.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timezone
from typing import Any, NoReturn
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as _TimeoutError

from osmo_store.errors import FatalModelError, ModelCallError, ModelError, UsageError

from .config import CHAT_API, normalize_base_url
from .sse import assemble_chat_stream, parse_sse

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403, 404})
API_KEY_ENV_VARS = ("OSMO_API_KEY", "OPENAI_API_KEY")
# Connecting is quick or never happens; a long read timeout must not make a dead host take
# minutes to report.
MAX_CONNECT_TIMEOUT = 10.0
_EXCERPT_CHARS = 200


@dataclass(frozen=True)
class ChatResult:
    """One answered chat request.

    ``latency_s`` is the duration of the attempt that succeeded (waiting for a pooled
    connection included, earlier attempts and backoff sleeps excluded); ``attempts`` counts
    them all. ``body`` is the response as the server sent it (decompressed), when it is
    ``response``'s JSON; None for a stream (``response`` is what it assembles to).
    """

    message: dict[str, Any]
    response: dict[str, Any]
    usage: dict[str, Any]
    latency_s: float
    attempts: int
    body: bytes | None = None


class _Answer:
    """An HTTP answer with its whole body read."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # case-insensitive, as urllib3 gives them
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON (bytes: UTF-8/16/32 detected as RFC 8259 says); ValueError if
        it is not JSON."""
        return json.loads(self.body)


def resolve_api_key(explicit: str | None) -> str | None:
    """``explicit``, else ``$OSMO_API_KEY``, else ``$OPENAI_API_KEY``; empty counts as unset."""
    if explicit:
        return explicit
    for name in API_KEY_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return value
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait for a ``Retry-After`` value (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


class ChatClient:
    """A thread-safe client for ``POST {base_url}/chat/completions``.

    ``base_url`` follows ``normalize_base_url``. ``pool_size`` is both the number of
    keep-alive connections and the number of requests in flight at once: callers beyond it
    wait for a free connection rather than opening throwaway ones. ``max_retries`` counts
    retries after the first attempt; backoff before retry *n* is uniform in
    ``[0, min(backoff_max, backoff_base * 2**(n-1))]``, or the server's ``Retry-After``
    capped at ``backoff_max``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout: float = 60.0,
        max_retries: int = 5,
        pool_size: int = 16,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if timeout <= 0 or max_retries < 0 or pool_size < 1 or backoff_base < 0 or backoff_max < 0:
            raise UsageError(
                "ChatClient needs timeout > 0, max_retries >= 0, pool_size >= 1 and "
                "non-negative backoff"
            )
        self.base_url = normalize_base_url(base_url)
        self.chat_url = f"{self.base_url}/chat/completions"
        self.timeout = timeout
        self.max_retries = max_retries
        self.pool_size = pool_size
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._api_key = api_key or None
        self._pool = _Pool(self.chat_url, pool_size)
        # One set of headers for every call: the pool is this endpoint's own (or a proxy's,
        # which takes the absolute URL as the request target).
        self._headers = {
            "User-Agent": "osmo-store",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Content-Type": "application/json",
        }
        if self._api_key is not None:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._timeout = urllib3.Timeout(connect=min(timeout, MAX_CONNECT_TIMEOUT), read=timeout)
        # Set once any HTTP answer arrives. Until then a refused connection means a wrong URL
        # or a server that is not running, and we fail fast; afterwards it may be a restart.
        self._reached = False
        self._closed = False
        self._rng = random.Random()

    def _send(self, request: dict[str, Any], target: str) -> _Answer:
        """POST through the pool and read the whole answer, so transport errors surface here
        (where they are retried) and the connection goes back to the pool whatever the caller
        does next. Redirects are not followed (a redirected POST would come back as a GET)."""
        response = self._pool.urlopen(
            "POST",
            target,
            body=json.dumps(request).encode("utf-8"),
            headers=self._headers,
            retries=False,
            redirect=False,
            timeout=self._timeout,
            preload_content=True,
            decode_content=True,
        )
        return _Answer(response.status, response.reason or "", response.headers, response.data)

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return f"ChatClient(base_url={self.base_url!r}, api_key=<{key}>)"

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._pool.close()

    def chat(self, request: dict[str, Any], api: str = CHAT_API) -> ChatResult:
        """Send one chat completion request (or one to another ``api`` under the base URL,
        ``completions`` or ``embeddings``), retrying transient failures. A streamed request
        (``stream: true``) is read to its end and given as the response it assembles to."""
        if self._closed:
            raise UsageError("ChatClient is closed")
        url = self.chat_url if api == CHAT_API else f"{self.base_url}/{api}"
        target = url if self._pool.proxied else _path_of(url)
        attempts = 0
        while True:
            attempts += 1
            started = time.monotonic()
            try:
                response = self._send(request, target)
            except HTTPError as exc:
                status = None
                problem, wait = self._transport_failure(exc, attempts, url), None
            else:
                self._reached = True
                if 200 <= response.status < 300:
                    latency = time.monotonic() - started
                    streamed = request.get("stream") is True
                    return self._result(response, latency, attempts, url, streamed)
                status = response.status
                problem, wait = self._http_failure(response, attempts, url)
            if attempts > self.max_retries:
                self._fail(
                    ModelCallError,
                    f"model call to {url} failed after {attempts} attempts: {problem}",
                    status=status,
                    attempts=attempts,
                )
            if wait is None:
                wait = self._backoff(attempts)
            logger.info(
                "model call to %s: %s; retry %d of %d in %.2fs",
                url,
                self._redact(problem),
                attempts,
                self.max_retries,
                wait,
            )
            time.sleep(wait)

    # -- classification --

    def _transport_failure(self, exc: HTTPError, attempts: int, url: str) -> str:
        """Describe a retryable failure without an HTTP answer, or raise if it is final."""
        if isinstance(exc, SSLError):
            self._fail(
                FatalModelError,
                f"TLS error talking to {url}: {_short(str(exc))}",
                attempts=attempts,
                hint="check the base URL scheme (http vs https) and the server's certificate",
            )
        if _is_connect_failure(exc):
            problem = f"cannot connect: {_os_reason(exc)}"
            # Never reached: one quick retry (the server may be starting), then stop. Reached
            # before: a restart is plausible, so use the full retry budget.
            budget = self.max_retries if self._reached else min(self.max_retries, 1)
            if attempts > budget:
                self._fail(
                    FatalModelError,
                    f"model endpoint {url} is unreachable ({problem}, "
                    f"{attempts} attempt{'s' if attempts > 1 else ''})",
                    attempts=attempts,
                    hint="is the model server running? check --base-url",
                )
            return problem
        if isinstance(exc, _TimeoutError):
            return f"no response within {self.timeout:g}s"
        if isinstance(exc, ProtocolError):  # reset or closed mid-answer: a restart, perhaps
            return f"connection lost: {_os_reason(exc)}"
        self._fail(
            ModelCallError,
            f"model call to {url} failed: {_short(str(exc))}",
            attempts=attempts,
        )

    def _http_failure(self, response: _Answer, attempts: int, url: str) -> tuple[str, float | None]:
        """Describe a retryable HTTP error and the server's requested wait, or raise."""
        status = response.status
        code, excerpt = _error_excerpt(response)
        problem = f"HTTP {status}: {excerpt}"
        if status in FATAL_STATUSES or (status == 429 and code == "insufficient_quota"):
            hints = {
                401: "check the API key (--api-key, $OSMO_API_KEY or $OPENAI_API_KEY)",
                403: "check the API key's permissions for this model",
                404: "check the model name and the base URL (usually ending in /v1)",
                429: "the account is out of quota; retrying will not help",
            }
            self._fail(
                FatalModelError,
                f"model endpoint {url} refused the request: {problem}",
                status=status,
                attempts=attempts,
                hint=hints[status],
            )
        if 300 <= status < 400:
            location = response.headers.get("Location", "?")
            self._fail(
                FatalModelError,
                f"model endpoint {url} redirects (HTTP {status}) to {location}",
                status=status,
                attempts=attempts,
                hint="use the redirect target as the base URL",
            )
        if status not in RETRYABLE_STATUSES:
            self._fail(
                ModelCallError,
                f"model call to {url} failed: {problem}",
                status=status,
                attempts=attempts,
            )
        return problem, self._retry_after(response)

    def _result(
        self, response: _Answer, latency: float, attempts: int, url: str, streamed: bool
    ) -> ChatResult:
        status = response.status
        body: bytes | None = None
        try:
            if streamed and "event-stream" in response.headers.get("Content-Type", ""):
                data = assemble_chat_stream(parse_sse(response.body))
            else:
                data, body = response.json(), response.body
        except ValueError:
            data = None
        except ModelCallError as e:
            self._fail(ModelCallError, f"model call to {url}: {e}", attempts=attempts)
        if not isinstance(data, dict):
            self._fail(
                ModelCallError,
                f"malformed response from {url} (HTTP {status}): not a JSON object: "
                f"{_short(response.text) or '(empty body)'}",
                status=status,
                attempts=attempts,
            )
        choices = data.get("choices")
        if url != self.chat_url:
            return self._other_result(data, response, latency, attempts, url, body)
        if (
            not isinstance(choices, list)
            or not choices
            or not isinstance(choices[0], dict)
            or not isinstance(choices[0].get("message"), dict)
        ):
            detail = _error_text(data) or _short(response.text)
            self._fail(
                ModelCallError,
                f"malformed response from {url} (HTTP {status}): no choices[0].message: {detail}",
                status=status,
                attempts=attempts,
            )
        usage = data.get("usage")
        return ChatResult(
            message=choices[0]["message"],
            response=data,
            usage=usage if isinstance(usage, dict) else {},
            latency_s=latency,
            attempts=attempts,
            body=body,
        )

    def _other_result(
        self,
        data: dict[str, Any],
        response: _Answer,
        latency: float,
        attempts: int,
        url: str,
        body: bytes | None,
    ) -> ChatResult:
        """A completions or embeddings answer: its list of results must be there."""
        field = "data" if url.endswith("/embeddings") else "choices"
        if not isinstance(data.get(field), list):
            detail = _error_text(data) or _short(response.text)
            self._fail(
                ModelCallError,
                f"malformed response from {url} (HTTP {response.status}): no {field}: {detail}",
                status=response.status,
                attempts=attempts,
            )
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return ChatResult({}, data, usage, latency, attempts, body)

    # -- helpers --

    def _retry_after(self, response: _Answer) -> float | None:
        wait = None
        millis = response.headers.get("retry-after-ms")  # OpenAI's finer-grained variant
        if millis:
            try:
                wait = max(0.0, float(millis) / 1000)
            except ValueError:
                wait = None
        if wait is None or math.isnan(wait):
            wait = parse_retry_after(response.headers.get("Retry-After"))
        return None if wait is None else min(wait, self.backoff_max)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** min(attempt - 1, 62))
        return self._rng.uniform(0.0, ceiling)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _fail(
        self,
        kind: type[ModelError],
        message: str,
        *,
        status: int | None = None,
        attempts: int,
        hint: str | None = None,
    ) -> NoReturn:
        raise kind(self._redact(message), status=status, attempts=attempts, hint=hint)


class _Pool:
    """The connections to one endpoint: urllib3's pool for it, or a proxy's when the
    environment names one for it (``https_proxy``, ``http_proxy``, ``all_proxy``, minus
    ``no_proxy``, read once). ``proxied`` says whether requests go by absolute URL."""

    def __init__(self, url: str, pool_size: int) -> None:
        parts = urlsplit(url)
        proxy = None
        if not urllib.request.proxy_bypass(parts.hostname or ""):
            proxies = urllib.request.getproxies()
            proxy = proxies.get(parts.scheme) or proxies.get("all")
        tls: dict[str, Any] = {}
        if parts.scheme == "https" or proxy:
            # requests' CA choice, so a working setup keeps working: the bundle named in the
            # environment, else certifi's (installed with requests).
            import certifi

            tls["ca_certs"] = (
                os.environ.get("REQUESTS_CA_BUNDLE")
                or os.environ.get("CURL_CA_BUNDLE")
                or certifi.where()
            )
        # block=True: callers beyond pool_size wait for a free connection instead of
        # opening throwaway ones; retries are ours (ChatClient.chat).
        options: dict[str, Any] = {"maxsize": pool_size, "block": True, "retries": False, **tls}
        self.proxied = proxy is not None
        if proxy is None:
            self._manager: Any = urllib3.connection_from_url(url, **options)
            https = parts.scheme == "https"
            self._manager.ConnectionCls = _OneWriteHTTPS if https else _OneWriteHTTP
        elif proxy.startswith("socks"):
            from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as in requests

            self._manager = SOCKSProxyManager(proxy, num_pools=1, **options)
        else:
            self._manager = urllib3.ProxyManager(proxy, num_pools=1, **options)
        self.urlopen = self._manager.urlopen

    def close(self) -> None:
        if isinstance(self._manager, urllib3.PoolManager):
            self._manager.clear()
        else:
            self._manager.close()


class _OneWrite:
    """A connection that sends a request's head and body in one write. urllib3 writes them
    apart: two sends, each a release and retake of the interpreter lock on the calling
    thread, and two wake-ups of the model server, on every call (``client.chat``'s and
    the eval's endpoint's)."""

    _body = b""

    def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                **options: Any) -> None:  # fmt: skip
        if not isinstance(body, bytes) or not body:
            super().request(method, url, body, headers, **options)  # type: ignore[misc]
            return
        # The head goes out with the body as its tail (``send`` below); the length is said
        # here, since urllib3 sees no body.
        self._body = body
        try:
            headers = {**(headers or {}), "Content-Length": str(len(body))}
            super().request(method, url, None, headers, **options)  # type: ignore[misc]
        finally:
            self._body = b""

    def send(self, data: Any) -> None:
        if self._body:
            data, self._body = data + self._body, b""
        super().send(data)  # type: ignore[misc]


class _OneWriteHTTP(_OneWrite, urllib3.connection.HTTPConnection):
    pass


class _OneWriteHTTPS(_OneWrite, urllib3.connection.HTTPSConnection):
    pass


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _short(text: str) -> str:
    """One line of at most ``_EXCERPT_CHARS`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= _EXCERPT_CHARS else line[: _EXCERPT_CHARS - 1] + "…"


def _error_text(data: Any) -> str:
    """The message of an OpenAI (``{"error": {...}}``) or FastAPI (``{"detail": ...}``) error."""
    if not isinstance(data, dict):
        return ""
    error = data.get("error", data.get("detail", data.get("message")))
    if isinstance(error, dict):
        error = error.get("message", error)
    return _short(str(error)) if error is not None else ""


def _error_excerpt(response: _Answer) -> tuple[str | None, str]:
    """(error code, short message) of an error response, whatever its body looks like."""
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    excerpt = _error_text(data) or _short(response.text) or response.reason or "(empty body)"
    return (code if isinstance(code, str) else None), excerpt


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: urllib3 nests the real error in args/reason."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [*current.args, getattr(current, "reason", None)]
        nested += [current.__cause__, current.__context__]
        stack.extend(e for e in nested if isinstance(e, BaseException))


def _is_connect_failure(exc: BaseException) -> bool:
    """True if no connection was made (refused, DNS, unreachable, connect timeout)."""
    return any(isinstance(e, (NewConnectionError, ConnectTimeoutError)) for e in _causes(exc))


def _os_reason(exc: BaseException) -> str:
    """The operating system's words for a network failure ("Connection refused")."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        if isinstance(cause, ConnectTimeoutError) and "timed out" in str(cause):
            return "connection timed out"
    return _short(str(exc))
