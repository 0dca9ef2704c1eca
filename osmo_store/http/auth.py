"""Bearer tokens: checked where they come in, sent only as a header, compared in constant time.

Used by the osmo server (``app.py``), its client (``client.py``) and the eval's model client
(``osmo_store.eval.client``). A token never goes into a URL, a repr, a log record or an
exception message.
"""

from __future__ import annotations

import hmac
import re

import requests
from requests.auth import AuthBase

from ..errors import UsageError
from .protocol import AUTH_SCHEME, AUTHORIZATION

_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}\Z")


def validate_token(token: str | None) -> str | None:
    """A server token: 1 to 4096 printable ASCII characters without spaces, or None."""
    if token is None:
        return None
    if not _TOKEN_RE.match(token):
        raise UsageError("a token is 1 to 4096 printable ASCII characters without spaces")
    return token


def bearer_matches(header: str, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token``. The scheme name is
    case-insensitive; the value is always compared (even after a wrong scheme), in
    constant time."""
    scheme, _, given = header.partition(" ")
    ok = hmac.compare_digest(given.strip().encode("latin-1", "replace"), token.encode("ascii"))
    return ok and scheme.lower() == AUTH_SCHEME.lower()


class BearerToken(AuthBase):
    """Bearer auth as an auth object rather than a session header: requests then skips
    ~/.netrc, which would otherwise replace the header with basic auth."""

    def __init__(self, token: str) -> None:
        self._header = f"{AUTH_SCHEME} {token}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers[AUTHORIZATION] = self._header
        return request

    def __repr__(self) -> str:
        return "BearerToken(***)"
