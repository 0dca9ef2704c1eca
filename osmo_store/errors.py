"""One exception hierarchy for the whole library.

The CLI maps every ``OsmoError`` to a one-line message and exit code 1; anything else is a bug
and gets a traceback. Subclasses carry the facts (``oid``, ``name``...) as attributes so callers
can act on them without parsing messages; ``hint`` is an optional "what to do next" line.
"""

from __future__ import annotations


class OsmoError(Exception):
    """Base of every error the library raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class InvalidObjectId(OsmoError, ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(f"invalid object id: {text!r} (expected 64 lowercase hex characters)")
        self.text = text


class ObjectNotFound(OsmoError, KeyError):
    def __init__(self, oid: str) -> None:
        super().__init__(f"object not found: {oid}")
        self.oid = oid

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class AmbiguousId(OsmoError, LookupError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(c[:12] for c in candidates[:5])
        super().__init__(
            f"ambiguous id prefix {prefix!r}: matches {len(candidates)} objects ({shown})",
            hint="give more characters of the id",
        )
        self.prefix = prefix
        self.candidates = candidates


class CorruptObject(OsmoError):
    """Stored bytes that do not decode, or decode to content with another hash."""

    def __init__(self, oid: str, reason: str, *, where: str | None = None) -> None:
        loc = f" in {where}" if where else ""
        super().__init__(f"corrupt object {oid}{loc}: {reason}")
        self.oid = oid
        self.reason = reason
        self.where = where


class CorruptPack(OsmoError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt pack {path}: {reason}")
        self.path = path
        self.reason = reason


class MalformedObject(OsmoError, ValueError):
    """Content that is not a valid encoding of its declared type (trees, run records)."""


class InvalidRefName(OsmoError, ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid ref name {name!r}: {reason}")
        self.name = name


class RefNotFound(OsmoError, KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(f"ref not found: {name}")
        self.name = name

    def __str__(self) -> str:
        return self.args[0]


class RefConflict(OsmoError):
    """A compare-and-swap ref update whose expected old value did not match."""

    def __init__(self, name: str, expected: str | None, actual: str | None) -> None:
        exp = expected or "(absent)"
        act = actual or "(absent)"
        super().__init__(f"ref {name} moved: expected {exp}, found {act}")
        self.name = name
        self.expected = expected
        self.actual = actual


class StoreError(OsmoError):
    """Problems with the store as a whole: not a store, unsupported format, read-only, locked."""


class LockTimeout(StoreError):
    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"timed out after {timeout:g}s waiting for the lock on {what}")
        self.what = what
        self.timeout = timeout


class UsageError(OsmoError, ValueError):
    """Bad arguments given to a library function by a user (ages, names, sizes)."""


class RemoteError(OsmoError):
    """A remote store (directory, HTTP server, bucket) that cannot be used as asked.
    ``status``/``code``: the HTTP status and error code, when a server answered."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


# --- HTTP ---


class AuthError(RemoteError):
    """The server wants a token we did not send, or refused the one we sent (401)."""


class RemoteRefused(RemoteError, StoreError):
    """The server understood and refused (403): it is read-only, or append-only and the
    update would delete a ref or move it backwards. ``code`` says which."""


class RecordStreamError(OsmoError):
    """A record stream that ends inside a record. ``oid``: the record's id, if its header
    was read."""

    def __init__(self, message: str, oid: str | None = None) -> None:
        super().__init__(message)
        self.oid = oid


class RecordTooLarge(OsmoError):
    """A record stream longer than the reader's budget."""


class HttpError(OsmoError):
    """An error answer the server sends: HTTP status, error code (``osmo_store.http.
    protocol``), a one-line message, extra JSON fields and extra headers."""

    def __init__(self, status: int, code: str, message: str, **fields: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers: list[tuple[str, str]] = []
