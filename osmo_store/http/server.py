"""``osmo serve``: one store over HTTP, as a plain WSGI app run by waitress.

Wire protocol: docs/protocol.md. What the server promises on top of the store layer:

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
safe here.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import zstandard

from .. import __version__
from ..errors import (
    CorruptObject,
    InvalidObjectId,
    InvalidRefName,
    LockTimeout,
    ObjectNotFound,
    OsmoError,
    RefConflict,
    RefNotFound,
    UsageError,
)
from ..hashing import ObjectId, parse_oid
from ..objects import decode_object, stored_content_size
from ..refs import ANY, validate_ref_name
from ..repo import STORE_VERSION, Repository
from .client import (
    DEFAULT_MAX_BODY,
    MAX_BATCH_IDS,
    RecordStreamError,
    RecordTooLarge,
    encode_record,
    iter_records,
)

logger = logging.getLogger(__name__)

#: JSON request bodies are small (50,000 ids are ~3.4 MB); larger ones are refused early
MAX_JSON_BODY = 8 * 2**20
#: Largest framed size an uploaded object may declare. Verifying an object decompresses it
#: whole, and a few bytes of zstd can declare gigabytes: this bounds what one request can
#: make the server allocate.
MAX_UPLOAD_OBJECT = 2**30
#: run records visited at most when deciding whether an update is a fast-forward
FF_WALK_LIMIT = 100_000
MAX_WHO_CHARS = 256
MAX_MESSAGE_CHARS = 4096
# Anything str.splitlines() would split a reflog line at, and other control characters:
# a client-supplied message must stay one reflog line.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}\Z")
_STREAM_CHUNK = 1 << 20


IDLE_LEASE_S = 600.0


class HttpError(Exception):
    """An error answer: status, error code, message and extra JSON fields."""

    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers: list[tuple[str, str]] = []


def validate_token(token: str | None) -> str | None:
    if token is None:
        return None
    if not _TOKEN_RE.match(token):
        raise UsageError("a token is 1 to 4096 printable ASCII characters without spaces")
    return token


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
        self._routes: dict[str, dict[str, Callable[[_Request], Any]]] = {
            "/v1/info": {"GET": self._info},
            "/v1/refs": {"GET": self._refs},
            "/v1/reflog": {"GET": self._reflog},
            "/v1/reflogs": {"GET": self._reflogs},
            "/v1/objects": {"GET": self._list_objects},
            "/v1/objects/missing": {"POST": self._missing},
            "/v1/objects/get": {"POST": self._get},
            "/v1/objects/put": {"POST": self._put},
            "/v1/refs/update": {"POST": self._update_ref},
        }

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
                raise HttpError(404, "unknown_endpoint", f"no such endpoint: {request.path[:200]}")
            handler = methods.get(request.method)
            if handler is None:
                error = HttpError(405, "method_not_allowed", f"use {', '.join(methods)}")
                error.headers.append(("Allow", ", ".join(methods)))
                raise error
            result = handler(request)
        except HttpError as e:
            status, headers, body = e.status, e.headers, _error_body(e)
        except Exception as e:
            error = _map_error(e)
            if error.status >= 500:
                logger.error(
                    "%s %s failed: %s",
                    request.method,
                    request.path,
                    e,
                    exc_info=not isinstance(e, OsmoError),
                )
            status, headers, body = error.status, error.headers, _error_body(error)
        else:
            if isinstance(result, _Stream):
                start_response(
                    _status_line(200), [("Content-Type", result.content_type), *_NO_CACHE]
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
                ("Content-Type", "application/json; charset=utf-8"),
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
        scheme, _, given = request.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        expected = self._token.encode("ascii")
        # Always compare (even against a wrong scheme), in constant time for the value.
        ok = hmac.compare_digest(given.strip().encode("latin-1", "replace"), expected)
        if not (ok and scheme.lower() == "bearer"):
            logger.warning(
                "refused %s %s from %s: %s token",
                request.method,
                request.path,
                request.environ.get("REMOTE_ADDR", "?"),
                "wrong" if given else "no",
            )
            error = HttpError(401, "unauthorized", "a valid bearer token is required")
            error.headers.append(("WWW-Authenticate", 'Bearer realm="osmo"'))
            raise error

    def _check_writable(self) -> None:
        if self.read_only:
            raise HttpError(403, "read_only", "this server is read-only")

    # --- reads ---------------------------------------------------------------------------

    def _info(self, request: _Request) -> dict[str, Any]:
        return {
            "server": "osmo",
            "version": __version__,
            "store_format": STORE_VERSION,
            "read_only": self.read_only,
            "append_only": self.append_only,
            "max_body": self.max_body,
            "max_ids": MAX_BATCH_IDS,
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
            raise HttpError(400, "bad_request", "the 'name' query parameter is required")
        # ReflogEntry's fields are the protocol's: old, new, time_ns, who, message.
        return {"entries": [asdict(e) for e in self.repo.refs.reflog(validate_ref_name(name))]}

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

        return _Stream("text/plain; charset=us-ascii", lines())

    def _missing(self, request: _Request) -> dict[str, Any]:
        ids = _ids(request.json_body(min(MAX_JSON_BODY, self.max_body)))
        return {"missing": self.repo.objects.missing(ids)}

    def _get(self, request: _Request) -> _Stream:
        ids = _ids(request.json_body(min(MAX_JSON_BODY, self.max_body)))
        absent = self.repo.objects.missing(ids)
        if absent:
            raise HttpError(404, "not_found", f"object not found: {absent[0]}", id=absent[0])
        objects = self.repo.objects

        def records() -> Iterator[bytes]:
            # An object gc removes after the check above ends the stream early (the
            # exception aborts the response); the client sees a short stream and fails.
            batch: list[bytes] = []
            size = 0
            for oid in ids:
                record = encode_record(oid, objects.get_raw(oid))
                batch.append(record)
                size += len(record)
                if size >= _STREAM_CHUNK:
                    yield b"".join(batch)
                    batch, size = [], 0
            if batch:
                yield b"".join(batch)

        return _Stream("application/octet-stream", records())

    # --- writes --------------------------------------------------------------------------

    def _put(self, request: _Request) -> dict[str, Any]:
        self._check_writable()
        request.require_content_type("application/octet-stream")
        read = request.body_reader(self.max_body)
        received: list[tuple[ObjectId, bytes]] = []
        try:
            for oid, data in iter_records(read, self.max_body):
                if len(received) >= MAX_BATCH_IDS:
                    raise HttpError(
                        400, "bad_request", f"at most {MAX_BATCH_IDS} objects per upload"
                    )
                # Verify everything before storing anything: a bad object anywhere in the
                # upload means nothing of it is kept.
                _verify_upload(oid, data)
                received.append((oid, data))
        except RecordTooLarge:
            raise _too_large(self.max_body) from None
        except RecordStreamError as e:
            raise HttpError(400, "bad_object", f"truncated upload: {e}", id=e.oid) from None
        # One pack (bulk) for the whole upload: published at once, after every write.
        self.repo.objects.put_many_raw(received, verified=True)  # each checked above
        self.repo.objects.after_bulk_write()  # many small pushes must not mean many packs
        return {"ok": True, "stored": len(received)}

    def _update_ref(self, request: _Request) -> dict[str, Any]:
        self._check_writable()
        body = request.json_body(min(MAX_JSON_BODY, self.max_body))
        name = body.get("name")
        if not isinstance(name, str):
            raise HttpError(400, "bad_request", "'name' must be a string")
        validate_ref_name(name)
        if "new" not in body or "expected" not in body:
            raise HttpError(400, "bad_request", "'new' and 'expected' are required")
        new = None if body["new"] is None else parse_oid(_str(body["new"], "new"))
        raw_expected = body["expected"]
        expected: object = (
            ANY
            if raw_expected == "*"
            else None
            if raw_expected is None
            else parse_oid(_str(raw_expected, "expected"))
        )
        who = _sanitize(_str(body.get("who", ""), "who"), MAX_WHO_CHARS, "_")
        who = who or f"anonymous@{request.environ.get('REMOTE_ADDR', 'unknown')}"
        message = _sanitize(_str(body.get("message", ""), "message"), MAX_MESSAGE_CHARS, " ")
        log = body.get("log", True)
        if not isinstance(log, bool):
            raise HttpError(400, "bad_request", "'log' must be true or false")
        try:
            if self.append_only:
                self._append_only_update(name, new, expected, who, message)
            elif new is None:
                self.repo.delete_ref(name, expected, message=message, who=who)
            else:
                self.repo.update_ref(name, new, expected, message=message, who=who, log=log)
        except RefConflict as e:
            raise HttpError(
                409,
                "conflict",
                str(e),
                name=name,
                expected="*" if expected is ANY else expected,
                current=e.actual,
            ) from None
        return {"ok": True}

    def _append_only_update(
        self, name: str, new: ObjectId | None, expected: object, who: str, message: str
    ) -> None:
        """Move ``name`` only forward. The fast-forward check is made against the value the
        compare-and-swap then insists on, so a concurrent move between check and swap
        makes the swap fail instead of slipping a backward move through. Always logged:
        an append-only server keeps the whole history."""
        if new is None:
            raise HttpError(403, "not_fast_forward", "append-only server: refs cannot be deleted")
        if not self.repo.objects.has(new):
            raise ObjectNotFound(new)
        for _ in range(16):
            current = self.repo.refs.read(name)
            if expected is not ANY and expected != current:
                raise RefConflict(name, expected, current)  # type: ignore[arg-type]
            if current is not None and not self._is_fast_forward(current, new):
                raise HttpError(
                    403,
                    "not_fast_forward",
                    f"append-only server: {new} does not descend from {name}'s {current}",
                    current=current,
                )
            try:
                self.repo.update_ref(name, new, current, message=message, who=who)
                return
            except RefConflict:
                if expected is not ANY:
                    raise
        raise _busy(f"{name} keeps moving; try again")

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
                raise HttpError(400, "bad_request", "malformed query string") from None
        values = self._query.get(key)
        if not values:
            return None
        if len(values) > 1:
            raise HttpError(400, "bad_request", f"{key!r} given more than once")
        return values[0]

    def require_content_type(self, wanted: str) -> None:
        # Browsers cannot send application/json or octet-stream across origins without a
        # CORS preflight, which this server never approves: requiring them stops a web
        # page from driving a token-less server on localhost.
        got = self.environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if got != wanted:
            raise HttpError(415, "unsupported_media_type", f"send Content-Type: {wanted}")

    def body_reader(self, limit: int) -> Callable[[int], bytes]:
        """A read function over the body that never reads past Content-Length, refusing a
        declared length over ``limit`` before reading anything (413)."""
        length_text = self.environ.get("CONTENT_LENGTH") or ""
        stream = self.environ["wsgi.input"]
        if length_text:
            try:
                remaining = int(length_text)
            except ValueError:
                raise HttpError(400, "bad_request", "bad Content-Length") from None
            if remaining < 0:
                raise HttpError(400, "bad_request", "bad Content-Length")
            if remaining > limit:
                raise _too_large(limit)
        elif self.environ.get("wsgi.input_terminated"):
            remaining = limit + 1  # read to the end, counting
        else:
            raise HttpError(411, "length_required", "send Content-Length")
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
        self.require_content_type("application/json")
        read = self.body_reader(limit)
        data = b"".join(iter(lambda: read(1 << 16), b""))
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HttpError(400, "bad_request", "body is not valid UTF-8 JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "bad_request", "body must be a JSON object")
        return body


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "too_large", f"request body over {limit} bytes", max_body=limit)


def _busy(message: str) -> HttpError:
    error = HttpError(503, "busy", message)
    error.headers.append(("Retry-After", "1"))
    return error


def _ids(body: dict[str, Any]) -> list[ObjectId]:
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise HttpError(400, "bad_request", "'ids' must be a list of object ids")
    if len(ids) > MAX_BATCH_IDS:
        raise HttpError(400, "bad_request", f"at most {MAX_BATCH_IDS} ids per request")
    return [parse_oid(_str(oid, "ids")) for oid in ids]


def _str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise HttpError(400, "bad_request", f"{field!r} must be a string")
    return value


def _sanitize(text: str, limit: int, replacement: str) -> str:
    return _LINE_BREAKING.sub(replacement, text)[:limit]


def _verify_upload(oid: ObjectId, data: bytes) -> None:
    try:
        declared = stored_content_size(data)
    except zstandard.ZstdError:
        declared = 0  # not a zstd frame: decode_object says so below
    if declared > MAX_UPLOAD_OBJECT:
        raise HttpError(
            400,
            "bad_object",
            f"object {oid} declares {declared} bytes; at most "
            f"{MAX_UPLOAD_OBJECT} per uploaded object",
            id=oid,
        )
    try:
        decode_object(oid, data)
    except CorruptObject as e:
        raise HttpError(400, "bad_object", str(e), id=oid) from None


def _map_error(e: Exception) -> HttpError:
    if isinstance(e, InvalidObjectId):
        return HttpError(400, "invalid_id", str(e), id=e.text[:100])
    if isinstance(e, InvalidRefName):
        return HttpError(400, "invalid_ref_name", str(e), name=e.name[:1100])
    if isinstance(e, ObjectNotFound):
        return HttpError(404, "not_found", str(e), id=e.oid)
    if isinstance(e, RefNotFound):
        return HttpError(404, "ref_not_found", str(e), name=e.name)
    if isinstance(e, LockTimeout):
        return _busy(str(e))
    if isinstance(e, OsmoError):
        return HttpError(500, "store_error", str(e))
    return HttpError(500, "internal", "internal server error")


def _error_body(e: HttpError) -> bytes:
    return _json_bytes({"error": e.code, "message": e.message, **e.fields})


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


# --- running it ------------------------------------------------------------------------------


def _waitress() -> Any:
    try:
        import waitress
        from waitress import wasyncore
    except ImportError:
        raise OsmoError(
            "osmo serve needs the waitress package", hint="pip install 'osmo-store[server]'"
        ) from None
    return waitress, wasyncore


class HttpServer:
    """``app`` bound to ``host:port`` under waitress (``port`` 0: a free port). ``run()``
    serves in the calling thread until ``stop()`` is called from another thread, or a
    KeyboardInterrupt (SIGINT; the CLI maps SIGTERM to it too) reaches it."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threads: int = 8,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        waitress, self._wasyncore = _waitress()
        self._map: dict[int, Any] = {}
        self._server = waitress.create_server(
            app,
            map=self._map,
            host=host,
            port=port,
            threads=threads,
            ident="osmo",
            # waitress buffers a whole body before the app sees it and answers bodies over
            # its own limit with plain text; the slack lets the app answer (in JSON) for
            # bodies a little over max_body, and still bounds what is buffered.
            max_request_body_size=max_body + 2**20,
            asyncore_use_poll=True,
        )
        listening = getattr(self._server, "effective_listen", None) or [
            (self._server.effective_host, self._server.effective_port)
        ]
        bound_host, self.port = listening[0][0], int(listening[0][1])
        self.host = str(bound_host)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}"
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            self._server.run()
        finally:
            self._server.task_dispatcher.shutdown()
            self._wasyncore.close_all(self._map)
            self._stopped.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (from any thread but the serving one, not from a signal handler)
        and wait for ``run()`` to return."""
        if self._stopped.is_set():
            return
        # The closing runs in the loop's own thread: the socket map is not thread-safe.
        # OSError: the loop is closing already (its trigger is gone).
        with contextlib.suppress(OSError):
            self._server.trigger.pull_trigger(lambda: self._wasyncore.close_all(self._map))
        self._stopped.wait(timeout)


def serve(
    repo: Repository,
    host: str,
    port: int,
    *,
    token: str | None,
    read_only: bool = False,
    append_only: bool = False,
    threads: int = 8,
    max_body: int = DEFAULT_MAX_BODY,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``repo`` until interrupted (KeyboardInterrupt). ``ready`` is called with the
    server's URL once it is listening (with ``port`` 0, that is how to learn the port)."""
    app = make_app(
        repo, token=token, read_only=read_only, append_only=append_only, max_body=max_body
    )
    server = HttpServer(app, host, port, threads=threads, max_body=max_body)
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_leases_short, args=(repo, stop), daemon=True)
    keeper.start()
    if ready is not None:
        ready(server.url)
    try:
        server.run()
    finally:
        stop.set()


def _keep_leases_short(repo: Repository, stop: threading.Event) -> None:
    """Let go of the writer lease once pushes stop coming, so gc is not pinned by a server
    that runs for months. Ten minutes covers a push's upload-then-ref-update sequence."""
    if not repo.objects.has_leases:
        return
    while not stop.wait(30.0):
        repo.objects.release_idle_lease(IDLE_LEASE_S)
