"""The WSGI app of ``osmo serve``: one store over HTTP.

Wire protocol: docs/protocol.md; routes, headers, limits, records and error codes come from
``protocol.py``. What the server promises on top of the store layer:

- every uploaded object is verified (its bytes must hash to its id) before anything of the
  upload is stored, and an upload is stored as one pack, so it lands whole or not at all;
- a ref moves only by compare-and-swap under the store's ref lock, to an object the store
  has (``Repository.update_ref``), with the client's ``who``/``message`` in the reflog;
- read-only servers refuse every write; append-only servers refuse deletions and updates
  that are not fast-forwards along run-record ``parents``;
- with a token configured, nothing (not even ``/v1/info``) is answered without it, and the
  token is never logged or echoed.

The app holds one Repository for all worker threads: the local object and ref stores are
built to be shared by threads (and processes), which is what makes many clients at once
safe here. Running it (waitress, lease keeping) is ``serve.py``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import zstandard

from .. import __version__
from ..errors import (
    CorruptObject,
    HttpError,
    ObjectNotFound,
    OsmoError,
    RecordStreamError,
    RecordTooLarge,
    RefConflict,
    UsageError,
)
from ..hashing import OID_RAW_LEN, ObjectId, parse_oid
from ..objects import decode_object, stored_content_size, stored_from_framed
from ..refs import ANY, validate_ref_name
from ..repo import Repository
from . import protocol as wire
from .auth import bearer_matches, validate_token
from .protocol import (
    DEFAULT_MAX_BODY,
    FF_WALK_LIMIT,
    MAX_BATCH_IDS,
    MAX_FRAMED_UPLOAD,
    MAX_JSON_BODY,
    MAX_MESSAGE_CHARS,
    MAX_UPLOAD_OBJECT,
    MAX_WHO_CHARS,
    encode_record,
    iter_records,
    iter_zstd_records,
    zstd_records,
)
from .uploads import receive_objects, resolve_prefixes

logger = logging.getLogger(__name__)

# Anything str.splitlines() would split a reflog line at, and other control characters:
# a client-supplied message must stay one reflog line.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_STREAM_CHUNK = 1 << 20
#: the WSGI environ key of the Authorization header
_AUTH_KEY = "HTTP_" + wire.AUTHORIZATION.upper().replace("-", "_")
_ACCEPT_KEY = "HTTP_" + wire.ACCEPT.upper()


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


class StoreApp:
    """The WSGI application. Build it with :func:`make_app`."""

    def __init__(
        self,
        repo: Repository,
        *,
        token: str | None,
        read_only: bool = False,
        append_only: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        if max_body < 1024:
            raise UsageError("max_body must be at least 1024 bytes")
        self.repo = repo
        self._token = validate_token(token)
        self.read_only = read_only
        self.append_only = append_only
        self.max_body = max_body
        routes: dict[str, dict[str, Callable[[_Request], Any]]] = {
            wire.INFO: {"GET": self._info},
            wire.REFS: {"GET": self._refs},
            wire.REFLOG: {"GET": self._reflog},
            wire.REFLOGS: {"GET": self._reflogs},
            wire.OBJECTS: {"GET": self._list_objects},
            wire.OBJECTS_MISSING: {"POST": self._missing},
            wire.OBJECTS_GET: {"POST": self._get},
            wire.OBJECTS_PUT: {"POST": self._put},
            wire.REFS_UPDATE: {"POST": self._update_ref},
        }
        self._routes = {wire.API_PREFIX + path: methods for path, methods in routes.items()}

    def __repr__(self) -> str:
        return f"StoreApp({self.repo.path}, token=<{'set' if self._token else 'unset'}>)"

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = time.monotonic()
        request = _Request(environ)
        try:
            self._authenticate(request)
            methods = self._routes.get(request.path)
            if methods is None:
                raise wire.error(wire.UNKNOWN_ENDPOINT, f"no such endpoint: {request.path[:200]}")
            handler = methods.get(request.method)
            if handler is None:
                error = wire.error(wire.METHOD_NOT_ALLOWED, f"use {', '.join(methods)}")
                error.headers.append(("Allow", ", ".join(methods)))
                raise error
            result = handler(request)
        except HttpError as e:
            status, headers, body = e.status, e.headers, _json_bytes(wire.error_body(e))
        except Exception as e:
            error = wire.error_for_exception(e)
            if error.status >= 500:
                logger.error(
                    "%s %s failed: %s",
                    request.method,
                    request.path,
                    e,
                    exc_info=not isinstance(e, OsmoError),
                )
            status, headers, body = error.status, error.headers, _json_bytes(wire.error_body(error))
        else:
            if isinstance(result, _Stream):
                start_response(
                    _status_line(200), [(wire.CONTENT_TYPE, result.content_type), *_NO_CACHE]
                )
                logger.info("%s %s 200 (streamed)", request.method, request.path)
                return result.chunks
            status, headers, body = 200, [], _json_bytes(result)
        logger.info(
            "%s %s %d %.1fms",
            request.method,
            request.path,
            status,
            (time.monotonic() - started) * 1000,
        )
        start_response(
            _status_line(status),
            [
                (wire.CONTENT_TYPE, f"{wire.JSON_TYPE}; charset=utf-8"),
                ("Content-Length", str(len(body))),
                *_NO_CACHE,
                *headers,
            ],
        )
        return [body]

    # --- auth ----------------------------------------------------------------------------

    def _authenticate(self, request: _Request) -> None:
        if self._token is None:
            return
        header = request.environ.get(_AUTH_KEY, "")
        if not bearer_matches(header, self._token):
            logger.warning(
                "refused %s %s from %s: %s token",
                request.method,
                request.path,
                request.environ.get("REMOTE_ADDR", "?"),
                "wrong" if header.partition(" ")[2] else "no",
            )
            raise wire.error(wire.UNAUTHORIZED, "a valid bearer token is required")

    def _check_writable(self) -> None:
        if self.read_only:
            raise wire.error(wire.READ_ONLY, "this server is read-only")

    # --- reads ---------------------------------------------------------------------------

    def _info(self, request: _Request) -> dict[str, Any]:
        return {
            "server": wire.SERVER_NAME,
            "version": __version__,
            "store_format": wire.OBJECT_FORMAT,
            "read_only": self.read_only,
            "append_only": self.append_only,
            "max_body": self.max_body,
            "max_ids": MAX_BATCH_IDS,
            wire.BODY_TYPES: [
                wire.ZSTD_OBJECTS_TYPE,
                wire.ZSTD_RECORDS_TYPE,
                wire.ID_BYTES_TYPE,
                wire.ID_PREFIXES_TYPE,
            ],
        }

    def _refs(self, request: _Request) -> dict[str, Any]:
        name = request.query_value("name")
        if name is not None:
            oid = self.repo.refs.read(validate_ref_name(name))
            return {"refs": {name: oid} if oid is not None else {}}
        prefix = request.query_value("prefix")
        return {"refs": self.repo.refs.list("refs/" if prefix is None else prefix)}

    def _reflog(self, request: _Request) -> dict[str, Any]:
        name = request.query_value("name")
        if name is None:
            raise wire.error(wire.BAD_REQUEST, "the 'name' query parameter is required")
        # ReflogEntry's fields are the protocol's: old, new, time_ns, who, message.
        return {"entries": [e._asdict() for e in self.repo.refs.reflog(validate_ref_name(name))]}

    def _reflogs(self, request: _Request) -> dict[str, Any]:
        return {"names": self.repo.refs.reflog_names()}

    def _list_objects(self, request: _Request) -> _Stream:
        def lines() -> Iterator[bytes]:
            batch: list[str] = []
            for oid in self.repo.objects.iter_ids():
                batch.append(oid)
                if len(batch) == 4096:
                    yield ("\n".join(batch) + "\n").encode("ascii")
                    batch = []
            if batch:
                yield ("\n".join(batch) + "\n").encode("ascii")

        return _Stream(wire.ID_LIST_TYPE, lines())

    def _asked_ids(self, request: _Request) -> list[ObjectId]:
        """The ids of a ``missing`` or ``get`` question: raw, or a JSON list of hex ids."""
        if request.content_type() != wire.ID_BYTES_TYPE:
            return _ids(request.json_body(min(MAX_JSON_BODY, self.max_body)))
        limit = MAX_BATCH_IDS * OID_RAW_LEN
        read = request.body_reader(limit)
        try:
            return wire.decode_ids(b"".join(iter(lambda: read(1 << 16), b"")))
        except ValueError as e:
            raise wire.error(wire.BAD_REQUEST, str(e)) from None

    def _missing(self, request: _Request) -> dict[str, Any] | _Stream:
        if request.content_type() == wire.ID_PREFIXES_TYPE:
            prefixes = self._asked_prefixes(request)
            bitmap = wire.encode_bitmap(self.repo.objects.absent_prefixes(prefixes))
            return _Stream(wire.MISSING_BITMAP_TYPE, iter([bitmap]))
        ids = self._asked_ids(request)
        absent = set(self.repo.objects.missing(ids))
        if request.content_type() == wire.ID_BYTES_TYPE:
            bitmap = wire.encode_bitmap([oid in absent for oid in ids])
            return _Stream(wire.MISSING_BITMAP_TYPE, iter([bitmap]))
        return {"missing": [oid for oid in ids if oid in absent]}

    def _asked_prefixes(self, request: _Request) -> list[bytes]:
        read = request.body_reader(MAX_BATCH_IDS * wire.ID_PREFIX_LEN)
        try:
            return wire.decode_prefixes(b"".join(iter(lambda: read(1 << 16), b"")))
        except ValueError as e:
            raise wire.error(wire.BAD_REQUEST, str(e)) from None

    def _get(self, request: _Request) -> _Stream:
        if request.content_type() == wire.ID_PREFIXES_TYPE:
            ids = resolve_prefixes(self.repo.objects, self._asked_prefixes(request))
        else:
            ids = self._asked_ids(request)
        absent = self.repo.objects.missing(ids)
        if absent:
            raise wire.error(wire.NOT_FOUND, f"object not found: {absent[0]}", id=absent[0])
        objects = self.repo.objects
        # An object gc removes after the check above ends the stream early (the exception
        # aborts the response); the client sees a short stream and fails.
        accept = request.environ.get(_ACCEPT_KEY, "")
        if wire.ZSTD_OBJECTS_TYPE in accept:
            framed = (f for _, f in objects.get_many_framed(ids))
            return _Stream(wire.ZSTD_OBJECTS_TYPE, _rechunk(wire.zstd_objects(framed)))
        stored = ((oid, objects.get_raw(oid)) for oid in ids)
        if wire.ZSTD_RECORDS_TYPE in accept:
            return _Stream(wire.ZSTD_RECORDS_TYPE, _rechunk(zstd_records(stored)))
        return _Stream(wire.RECORDS_TYPE, _rechunk(encode_record(o, d) for o, d in stored))

    # --- writes --------------------------------------------------------------------------

    def _put(self, request: _Request) -> dict[str, Any]:
        self._check_writable()
        if request.content_type() == wire.ZSTD_OBJECTS_TYPE:
            return self._put_objects(request)
        zstd = request.content_type() == wire.ZSTD_RECORDS_TYPE
        if not zstd:
            request.require_content_type(wire.RECORDS_TYPE)
        read = request.body_reader(self.max_body)
        # A compressed upload is bounded by what it decompresses to as well: a few bytes
        # of zstd can stand for gigabytes.
        budget = MAX_FRAMED_UPLOAD if zstd else self.max_body
        records = iter_zstd_records(read, budget) if zstd else iter_records(read, budget)
        verify = _verify_framed if zstd else _verify_upload
        received: list[tuple[ObjectId, bytes]] = []
        try:
            for oid, data in records:
                if len(received) >= MAX_BATCH_IDS:
                    raise wire.error(
                        wire.BAD_REQUEST, f"at most {MAX_BATCH_IDS} objects per upload"
                    )
                # Verify everything before storing anything: a bad object anywhere in the
                # upload means nothing of it is kept.
                received.append((oid, verify(oid, data)))
        except RecordTooLarge:
            raise _too_large(budget) from None
        except RecordStreamError as e:
            raise wire.error(wire.BAD_OBJECT, f"truncated upload: {e}", id=e.oid) from None
        # One pack (bulk) for the whole upload: published at once, after every write.
        self.repo.objects.put_many_raw(received, verified=True)  # each checked above
        self.repo.objects.after_bulk_write()  # many small pushes must not mean many packs
        return {"ok": True, "stored": len(received)}

    def _put_objects(self, request: _Request) -> dict[str, Any]:
        """An upload of id-less framed objects; the answer's digest of the ids they hash
        to tells the sender all arrived."""
        read = request.body_reader(self.max_body)
        received = receive_objects(read, MAX_FRAMED_UPLOAD, _too_large)
        self.repo.objects.put_many_framed(received, verified=True)
        self.repo.objects.after_bulk_write()
        return {
            "ok": True,
            "stored": len(received),
            "digest": wire.ids_digest(o for o, _ in received),
        }

    def _update_ref(self, request: _Request) -> dict[str, Any]:
        self._check_writable()
        body = request.json_body(min(MAX_JSON_BODY, self.max_body))
        name = body.get("name")
        if not isinstance(name, str):
            raise wire.error(wire.BAD_REQUEST, "'name' must be a string")
        validate_ref_name(name)
        if "new" not in body or "expected" not in body:
            raise wire.error(wire.BAD_REQUEST, "'new' and 'expected' are required")
        new = None if body["new"] is None else parse_oid(_str(body["new"], "new"))
        raw_expected = body["expected"]
        expected: object = (
            ANY
            if raw_expected == wire.EXPECT_ANY
            else None
            if raw_expected is None
            else parse_oid(_str(raw_expected, "expected"))
        )
        who = _sanitize(_str(body.get("who", ""), "who"), MAX_WHO_CHARS, "_")
        who = who or f"anonymous@{request.environ.get('REMOTE_ADDR', 'unknown')}"
        message = _sanitize(_str(body.get("message", ""), "message"), MAX_MESSAGE_CHARS, " ")
        log = body.get("log", True)
        if not isinstance(log, bool):
            raise wire.error(wire.BAD_REQUEST, "'log' must be true or false")
        # A RefConflict answers 409 through the error table.
        if self.append_only:
            self._append_only_update(name, new, expected, who, message)
        elif new is None:
            self.repo.delete_ref(name, expected, message=message, who=who)
        else:
            self.repo.update_ref(name, new, expected, message=message, who=who, log=log)
        return {"ok": True}

    def _append_only_update(
        self, name: str, new: ObjectId | None, expected: object, who: str, message: str
    ) -> None:
        """Move ``name`` only forward. The fast-forward check is made against the value the
        compare-and-swap then insists on, so a concurrent move between check and swap
        makes the swap fail instead of slipping a backward move through. Always logged:
        an append-only server keeps the whole history."""
        if new is None:
            raise wire.error(wire.NOT_FAST_FORWARD, "append-only server: refs cannot be deleted")
        if not self.repo.objects.has(new):
            raise ObjectNotFound(new)
        for _ in range(16):
            current = self.repo.refs.read(name)
            if expected is not ANY and expected != current:
                raise RefConflict(name, expected, current)  # type: ignore[arg-type]
            if current is not None and not self._is_fast_forward(current, new):
                raise wire.error(
                    wire.NOT_FAST_FORWARD,
                    f"append-only server: {new} does not descend from {name}'s {current}",
                    current=current,
                )
            try:
                self.repo.update_ref(name, new, current, message=message, who=who)
                return
            except RefConflict:
                if expected is not ANY:
                    raise
        raise wire.error(wire.BUSY, f"{name} keeps moving; try again")

    def _is_fast_forward(self, old: ObjectId, new: ObjectId) -> bool:
        """``new`` equals ``old`` or reaches it through run-record parents (breadth first,
        at most FF_WALK_LIMIT records). A non-run object only fast-forwards to itself."""
        if old == new:
            return True
        seen = {new}
        queue = deque([new])
        while queue:
            try:
                record = self.repo.objects.get_run(queue.popleft())
            except OsmoError:
                continue  # not a run record, absent or unreadable: no path through it
            for parent in record.parents:
                if parent == old:
                    return True
                if parent not in seen:
                    if len(seen) >= FF_WALK_LIMIT:
                        return False
                    seen.add(parent)
                    queue.append(parent)
        return False


def make_app(
    repo: Repository,
    *,
    token: str | None,
    read_only: bool = False,
    append_only: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
) -> StoreApp:
    """The WSGI app serving ``repo``. Thread-safe: one app (and one Repository) serves
    every worker thread."""
    return StoreApp(
        repo, token=token, read_only=read_only, append_only=append_only, max_body=max_body
    )


# --- requests and answers ----------------------------------------------------------------


_NO_CACHE = [("Cache-Control", "no-store")]


class _Stream:
    def __init__(self, content_type: str, chunks: Iterator[bytes]) -> None:
        self.content_type = content_type
        self.chunks = chunks


class _Request:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "") or "/"
        self._query: dict[str, list[str]] | None = None

    def query_value(self, key: str) -> str | None:
        if self._query is None:
            try:
                self._query = parse_qs(
                    self.environ.get("QUERY_STRING", ""),
                    keep_blank_values=True,
                    strict_parsing=False,
                    errors="strict",
                    max_num_fields=16,
                )
            except (UnicodeDecodeError, ValueError):
                raise wire.error(wire.BAD_REQUEST, "malformed query string") from None
        values = self._query.get(key)
        if not values:
            return None
        if len(values) > 1:
            raise wire.error(wire.BAD_REQUEST, f"{key!r} given more than once")
        return values[0]

    def content_type(self) -> str:
        return self.environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()

    def require_content_type(self, wanted: str) -> None:
        # Browsers cannot send application/json or octet-stream across origins without a
        # CORS preflight, which this server never approves: requiring them stops a web
        # page from driving a token-less server on localhost.
        if self.content_type() != wanted:
            raise wire.error(wire.UNSUPPORTED_MEDIA_TYPE, f"send Content-Type: {wanted}")

    def body_reader(self, limit: int) -> Callable[[int], bytes]:
        """A read function over the body that never reads past Content-Length, refusing a
        declared length over ``limit`` before reading anything (413)."""
        length_text = self.environ.get("CONTENT_LENGTH") or ""
        stream = self.environ["wsgi.input"]
        if length_text:
            try:
                remaining = int(length_text)
            except ValueError:
                raise wire.error(wire.BAD_REQUEST, "bad Content-Length") from None
            if remaining < 0:
                raise wire.error(wire.BAD_REQUEST, "bad Content-Length")
            if remaining > limit:
                raise _too_large(limit)
        elif self.environ.get("wsgi.input_terminated"):
            remaining = limit + 1  # read to the end, counting
        else:
            raise wire.error(wire.LENGTH_REQUIRED, "send Content-Length")
        read_so_far = 0

        def read(n: int) -> bytes:
            nonlocal remaining, read_so_far
            if remaining <= 0:
                return b""
            data = stream.read(min(n, remaining))
            remaining -= len(data)
            read_so_far += len(data)
            if read_so_far > limit:  # chunked bodies have no length to check up front
                raise _too_large(limit)
            return data

        return read

    def json_body(self, limit: int) -> dict[str, Any]:
        self.require_content_type(wire.JSON_TYPE)
        read = self.body_reader(limit)
        data = b"".join(iter(lambda: read(1 << 16), b""))
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise wire.error(wire.BAD_REQUEST, "body is not valid UTF-8 JSON") from None
        if not isinstance(body, dict):
            raise wire.error(wire.BAD_REQUEST, "body must be a JSON object")
        return body


def _too_large(limit: int) -> HttpError:
    return wire.error(wire.TOO_LARGE, f"request body over {limit} bytes", max_body=limit)


def _ids(body: dict[str, Any]) -> list[ObjectId]:
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise wire.error(wire.BAD_REQUEST, "'ids' must be a list of object ids")
    if len(ids) > MAX_BATCH_IDS:
        raise wire.error(wire.BAD_REQUEST, f"at most {MAX_BATCH_IDS} ids per request")
    return [parse_oid(_str(oid, "ids")) for oid in ids]


def _str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise wire.error(wire.BAD_REQUEST, f"{field!r} must be a string")
    return value


def _sanitize(text: str, limit: int, replacement: str) -> str:
    return _LINE_BREAKING.sub(replacement, text)[:limit]


def _verify_upload(oid: ObjectId, data: bytes) -> bytes:
    """The stored form received, once verified against ``oid``."""
    try:
        declared = stored_content_size(data)
    except zstandard.ZstdError:
        declared = 0  # not a zstd frame: decode_object says so below
    if declared > MAX_UPLOAD_OBJECT:
        raise wire.error(
            wire.BAD_OBJECT,
            f"object {oid} declares {declared} bytes; at most "
            f"{MAX_UPLOAD_OBJECT} per uploaded object",
            id=oid,
        )
    try:
        decode_object(oid, data)
    except CorruptObject as e:
        raise wire.error(wire.BAD_OBJECT, str(e), id=oid) from None
    return data


def _verify_framed(oid: ObjectId, framed: bytes) -> bytes:
    """The stored form of a framed object received, once verified against ``oid``."""
    try:
        return stored_from_framed(oid, framed)
    except CorruptObject as e:
        raise wire.error(wire.BAD_OBJECT, str(e), id=oid) from None


def _rechunk(records: Iterator[bytes]) -> Iterator[bytes]:
    """Pieces of about ``_STREAM_CHUNK`` bytes: not a write per (often tiny) record."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        batch.append(record)
        size += len(record)
        if size >= _STREAM_CHUNK:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")
