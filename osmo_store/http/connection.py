"""The client's connection to ``osmo serve``: one pooled ``requests`` session, the token
sent by an auth object (never in a URL, a repr or a message), answers read to a bound, and
the server's JSON errors turned back into the library's own (``protocol.py``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from ..errors import RemoteError, UsageError
from . import protocol as wire
from .auth import BearerToken

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0


def normalize_server_url(url: str) -> str:
    """``http(s)://host[:port][/path]`` without a trailing slash. Credentials in the URL
    are refused: they would end up in logs and error messages."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid osmo server URL {url!r}: expected http(s)://host[:port]")
    if parts.username is not None or parts.password is not None:
        raise UsageError(
            "the osmo server URL must not contain credentials",
            hint="pass the token with $OSMO_TOKEN or --token-file instead",
        )
    if parts.query or parts.fragment:
        raise UsageError(f"invalid osmo server URL {url!r}: no query or fragment allowed")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class HttpConnection:
    """One pooled, thread-safe session to an osmo server, shared by the object and ref
    stores of one remote. Turns the server's JSON errors back into the library's own."""

    def __init__(self, url: str, token: str | None = None, *, pool_size: int = 16) -> None:
        self.url = normalize_server_url(url)
        self._api = self.url + wire.API_PREFIX
        self._has_token = bool(token)
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # No HTTP compression: object batches are zstd already, and an answer requests
        # inflates for us is one whose size nothing bounds (see ``request``).
        self._session.headers.update({"User-Agent": wire.USER_AGENT, "Accept-Encoding": "identity"})
        if token:
            self._session.auth = BearerToken(token)

    def __repr__(self) -> str:
        return f"HttpConnection({self.url!r}, token=<{'set' if self._has_token else 'unset'}>)"

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        content_type: str = wire.RECORDS_TYPE,
        accept: str | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request; a non-200 answer raises the matching library error. ``data``
        is sent as ``content_type``."""
        headers = {wire.CONTENT_TYPE: content_type} if data is not None else {}
        if accept is not None:
            headers[wire.ACCEPT] = accept
        try:
            response = self._session.request(
                method,
                self._api + path,
                params=params,
                json=json,
                data=data,
                headers=headers,
                stream=True,  # read below, once the encoding is known to be none
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
            )
        except requests.RequestException as e:
            raise RemoteError(
                f"cannot reach the osmo server at {self.url}: {network_reason(e)}",
                hint="is `osmo serve` running there? check the URL",
            ) from None
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # requests would inflate it whole: a few KB of gzip can stand for gigabytes.
            response.close()
            raise RemoteError(
                f"the osmo server at {self.url} answered in {encoding!r} encoding, "
                "which was not asked for"
            )
        if not stream or response.status_code != 200:
            self._read_whole(response)
        if response.status_code != 200:
            try:
                self._raise_for(response)
            finally:
                response.close()
        return response

    def _read_whole(self, response: requests.Response) -> None:
        """Read the body now (as ``stream=False`` would), so the connection goes back to
        the pool: at most ``MAX_ANSWER`` bytes, since it is held whole."""
        limit = wire.MAX_ANSWER
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(1 << 16):
                size += len(chunk)
                if size > limit:
                    response.close()
                    raise RemoteError(
                        f"the osmo server at {self.url} sent an answer of more than {limit} bytes"
                    )
                parts.append(chunk)
        except requests.RequestException as e:
            response.close()
            raise RemoteError(
                f"reading an answer from {self.url} failed: {network_reason(e)}"
            ) from None
        # What ``response.content`` would have read unbounded, kept where requests keeps it.
        response._content = b"".join(parts)

    def get_json(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self.read_json(self.request("GET", path, params=params))

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.read_json(self.request("POST", path, json=body))

    def read_json(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RemoteError(f"the server at {self.url} did not answer with a JSON object")
        return body

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``, checked to come from an osmo server of our store format."""
        info = self.get_json(wire.INFO)
        if info.get("server") != wire.SERVER_NAME:
            raise RemoteError(f"{self.url} is not an osmo server")
        if info.get("store_format") != wire.OBJECT_FORMAT:
            raise RemoteError(
                f"the osmo server at {self.url} has store format {info.get('store_format')}; "
                f"this osmo speaks {wire.OBJECT_FORMAT}",
                hint="use the same osmo version on both sides",
            )
        return info

    def _raise_for(self, response: requests.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        code = body.get("error") if isinstance(body.get("error"), str) else None
        message = body.get("message")
        if not isinstance(message, str):
            message = " ".join(response.text[:200].split()) or response.reason or ""
        raise wire.error_from_answer(
            wire.ErrorAnswer(response.status_code, code, message, body, self.url, self._has_token)
        )


def network_reason(exc: BaseException) -> str:
    """The operating system's words for a network failure, else the exception's type."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return type(exc).__name__
