"""The ``osmo serve`` wire protocol, version 1 (docs/protocol.md): what both sides share.

Object batches travel as records of stored forms, or (when both sides speak it: negotiated
through ``Accept`` for downloads and ``/v1/info`` for uploads) as one zstd stream of framed
forms, without ids (each object is named by its hash), and id lists as 8-byte prefixes
first: together they move fewer bytes than the version 2 packs holding the objects.

Routes, headers, limits, the record framing objects travel in, and the one table of error
codes. The client backend (``client.py``) and the server (``app.py``) both take these from
here and write none of them themselves: the server turns an exception into an answer with
:func:`error_for_exception`, the client turns the answer back into the exception with
:func:`error_from_answer`, both through :data:`ERRORS`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard

from ..errors import (
    AuthError,
    CorruptObject,
    HttpError,
    InvalidObjectId,
    InvalidRefName,
    LockTimeout,
    ObjectNotFound,
    OsmoError,
    RecordStreamError,
    RecordTooLarge,
    RefConflict,
    RefNotFound,
    RemoteError,
    RemoteRefused,
    StoreError,
)
from ..hashing import OID_RAW_LEN, ObjectId, blake3_hex, is_oid, oid_to_raw
from ..objects import MAX_REMOTE_OBJECT, ZSTD_LEVEL, decompress_framed
from .frames import FrameTracker

# --- routes (every one under API_PREFIX) ---------------------------------------------------

API_PREFIX = "/v1"
#: what ``/v1/info`` calls ``store_format``: the form objects travel in (objects_spec.md
#: section 2), which is the same for stores of format version 1 and 2 (their packs differ,
#: and packs never travel as they are stored), so either side may hold either
OBJECT_FORMAT = 1
INFO = "/info"
REFS = "/refs"
REFLOG = "/reflog"
REFLOGS = "/reflogs"
OBJECTS = "/objects"
OBJECTS_MISSING = "/objects/missing"
OBJECTS_GET = "/objects/get"
OBJECTS_PUT = "/objects/put"
REFS_UPDATE = "/refs/update"

# --- headers and values --------------------------------------------------------------------

AUTHORIZATION = "Authorization"
AUTH_SCHEME = "Bearer"
CONTENT_TYPE = "Content-Type"
JSON_TYPE = "application/json"
#: uploads and downloads of objects: records, back to back
RECORDS_TYPE = "application/octet-stream"
#: uploads and downloads of objects as one zstd stream of records of framed forms
ZSTD_RECORDS_TYPE = "application/vnd.osmo.records+zstd"
#: uploads and downloads of objects as one zstd stream of their framed forms, each after
#: its u32be length, with no ids: the receiver hashes each object anyway (a raw id is 32
#: bytes that do not compress, a third of a v2 pack's bytes per eval record)
ZSTD_OBJECTS_TYPE = "application/vnd.osmo.objects+zstd"
#: a download's client names the record types it reads, the compressed one first
ACCEPT = "Accept"
#: id lists of ``missing`` and ``get`` as raw 32-byte ids back to back (not JSON: a hex id
#: in JSON takes 67 bytes, more than many a stored object)
ID_BYTES_TYPE = "application/vnd.osmo.ids"
#: ``missing``'s first question: the first ``ID_PREFIX_LEN`` bytes of each id, back to back;
#: the bitmap answer sets the bit of a prefix no stored id starts with (so surely missing).
#: The ids whose prefix some object has are asked about again in full: a prefix decides
#: nothing but "send it", so colliding one costs a question, never a skipped object.
ID_PREFIXES_TYPE = "application/vnd.osmo.id-prefixes"
ID_PREFIX_LEN = 8
#: the answer of ``missing`` to an ``ID_BYTES_TYPE`` question: bit i (of byte i // 8, most
#: significant bit first) set when the i-th id asked about is missing
MISSING_BITMAP_TYPE = "application/vnd.osmo.missing-bitmap"
#: ``/v1/info``: the content types a server takes for object batches and id lists beyond
#: JSON and ``RECORDS_TYPE`` (absent: none; a client then sends only those)
BODY_TYPES = "body_types"
#: ``GET /v1/objects``: one id per line
ID_LIST_TYPE = "text/plain; charset=us-ascii"
#: the longest line a client reads from an id list (an id is 64 hex characters; the rest is
#: slack for a line end), so that a server's endless line cannot fill the client's memory
MAX_ID_LINE = 128
USER_AGENT = "osmo-store"
#: what ``/v1/info`` says in ``server``: a client refuses anything else
SERVER_NAME = "osmo"
#: ``expected`` of a ref update that does not compare
EXPECT_ANY = "*"

# --- limits --------------------------------------------------------------------------------

DEFAULT_MAX_BODY = 256 * 2**20
#: most ids one request may carry (missing / get) or records one upload may hold
MAX_BATCH_IDS = 50_000
#: JSON request bodies are small (50,000 ids are ~3.4 MB); larger ones are refused early
MAX_JSON_BODY = 8 * 2**20
#: Largest framed size an uploaded object may declare. Verifying an object decompresses it
#: whole, and a few bytes of zstd can declare gigabytes: this bounds what one request can
#: make the server allocate. The bound on any object read from another store, the client's
#: too (``objects.MAX_REMOTE_OBJECT``).
MAX_UPLOAD_OBJECT = MAX_REMOTE_OBJECT
#: Most bytes a compressed upload (``ZSTD_RECORDS_TYPE``) may decompress to.
MAX_FRAMED_UPLOAD = MAX_REMOTE_OBJECT
#: The same bound the other way: most bytes of objects (framed) a client reads from one
#: answer to ``get``, so the largest object it fetches. A hostile server's few bytes of zstd
#: can declare gigabytes, and an object is checked against its id only once decompressed.
MAX_FRAMED_DOWNLOAD = MAX_FRAMED_UPLOAD
#: Most bytes a client reads of an answer it reads whole (JSON, an error's body, a bitmap):
#: a server can send any number, and they are buffered. The largest, a listing of a
#: million refs, is ~150 MB.
MAX_ANSWER = 256 * 2**20
#: run records visited at most when deciding whether an update is a fast-forward
FF_WALK_LIMIT = 100_000
MAX_WHO_CHARS = 256
MAX_MESSAGE_CHARS = 4096

# --- records -------------------------------------------------------------------------------

RECORD_HEAD = struct.Struct(">32sI")
MAX_RECORD_LEN = 2**32 - 1


def encode_record(oid: ObjectId, data: bytes) -> bytes:
    """``id(32 raw bytes) | u32be length | stored bytes``."""
    if len(data) > MAX_RECORD_LEN:
        raise StoreError(f"object {oid} is {len(data)} bytes stored; records hold < 4 GiB")
    return RECORD_HEAD.pack(oid_to_raw(oid), len(data)) + data


def read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream."""
    parts = []
    while n > 0:
        chunk = read(min(n, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def iter_records(
    read: Callable[[int], bytes], budget: int | None = None
) -> Iterator[tuple[ObjectId, bytes]]:
    """Parse records until the stream ends cleanly between two records. A record whose
    length would take the total past ``budget`` raises RecordTooLarge before its bytes are
    read (so a forged length cannot make us allocate 4 GiB); a stream that ends inside a
    record raises RecordStreamError."""
    used = 0
    while True:
        head = read_exact(read, RECORD_HEAD.size)
        if not head:
            return
        if len(head) < RECORD_HEAD.size:
            raise RecordStreamError("stream ends inside a record header")
        raw, length = RECORD_HEAD.unpack(head)
        oid = ObjectId(raw.hex())
        used += RECORD_HEAD.size + length
        if budget is not None and used > budget:
            raise RecordTooLarge(f"records exceed {budget} bytes")
        data = read_exact(read, length)
        if len(data) < length:
            raise RecordStreamError(f"stream ends inside object {oid}", oid)
        yield oid, data


def iter_lines(read: Callable[[int], bytes], limit: int) -> Iterator[bytes]:
    """The lines of a stream (``\\n``-ended; the last may lack its end), without their
    ends, read in pieces; a line longer than ``limit`` raises RecordTooLarge as soon as it
    is, before the rest of it is read."""
    partial = b""
    while True:
        chunk = read(1 << 16)
        if not chunk:
            break
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        for line in lines:
            if len(line) > limit:
                raise RecordTooLarge(f"a line of more than {limit} bytes")
            yield line
        if len(partial) > limit:
            raise RecordTooLarge(f"a line of more than {limit} bytes")
    if partial:
        yield partial


def zstd_records(items: Iterable[tuple[ObjectId, bytes]]) -> Iterator[bytes]:
    """Stored objects as one zstd stream (level 3) of records holding their framed forms,
    in chunks. Each stored form is its own zstd frame and shares nothing with the others;
    framed and compressed as one stream, a batch of similar objects (eval records) takes
    about half the bytes of their stored forms."""
    stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    for oid, data in items:
        chunk = stream.compress(encode_record(oid, decompress_framed(data, oid)))
        if chunk:
            yield chunk
    yield stream.flush()


#: zstd level of ``ZSTD_OBJECTS_TYPE`` batches: measured on 3,000 eval-like records
#: (tests/test_sync_wire.py), level 3 took 279.6 KB, 9 took 269.1 KB (at 40 MB/s+), 19
#: took 252.9 KB but 20x the CPU
OBJECTS_LEVEL = 9
OBJECT_HEAD = struct.Struct(">I")


def zstd_objects(framed_forms: Iterable[bytes]) -> Iterator[bytes]:
    """Framed objects as one ``ZSTD_OBJECTS_TYPE`` stream, in chunks."""
    stream = zstandard.ZstdCompressor(level=OBJECTS_LEVEL).compressobj()
    for framed in framed_forms:
        if len(framed) > MAX_RECORD_LEN:
            raise StoreError(f"an object of {len(framed)} bytes cannot travel (< 4 GiB)")
        chunk = stream.compress(OBJECT_HEAD.pack(len(framed)) + framed)
        if chunk:
            yield chunk
    yield stream.flush()


def iter_zstd_objects(read: Callable[[int], bytes], budget: int | None = None) -> Iterator[bytes]:
    """The framed forms of a ``zstd_objects`` stream, unverified; ``budget`` bounds the
    decompressed bytes (RecordTooLarge before an object past it is read). A stream that is
    not zstd, or ends inside an object or before its frame does, raises RecordStreamError."""
    source = FrameTracker(read)
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    used = 0
    try:
        while True:
            head = read_exact(reader.read, OBJECT_HEAD.size)
            if not head:
                _check_frame_end(source)
                return
            if len(head) < OBJECT_HEAD.size:
                raise RecordStreamError("stream ends inside an object's length")
            (length,) = OBJECT_HEAD.unpack(head)
            used += OBJECT_HEAD.size + length
            if budget is not None and used > budget:
                raise RecordTooLarge(f"objects exceed {budget} bytes")
            framed = read_exact(reader.read, length)
            if len(framed) < length:
                raise RecordStreamError("stream ends inside an object")
            yield framed
    except zstandard.ZstdError as e:
        raise RecordStreamError(f"not a zstd stream of objects ({e})") from None


def ids_digest(ids: Iterable[ObjectId]) -> str:
    """What a server answers an upload of ``ZSTD_OBJECTS_TYPE`` with: BLAKE3 of the raw ids
    of the objects it took, in order, so the sender knows each arrived whole without the
    ids travelling either way."""
    return blake3_hex(*(oid_to_raw(oid) for oid in ids))


def encode_ids(ids: Iterable[ObjectId]) -> bytes:
    return b"".join(oid_to_raw(oid) for oid in ids)


def decode_ids(data: bytes) -> list[ObjectId]:
    """Raw ids back to back; ValueError if the length is not a whole number of ids."""
    if len(data) % OID_RAW_LEN:
        raise ValueError(f"{len(data)} bytes is not a whole number of {OID_RAW_LEN}-byte ids")
    return [ObjectId(data[i : i + OID_RAW_LEN].hex()) for i in range(0, len(data), OID_RAW_LEN)]


def decode_prefixes(data: bytes) -> list[bytes]:
    """``ID_PREFIX_LEN``-byte prefixes back to back; ValueError if the length is wrong."""
    n = ID_PREFIX_LEN
    if len(data) % n:
        raise ValueError(f"{len(data)} bytes is not a whole number of {n}-byte id prefixes")
    return [data[i : i + n] for i in range(0, len(data), n)]


def encode_bitmap(flags: list[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


def decode_bitmap(data: bytes, n: int) -> list[bool]:
    if len(data) != (n + 7) // 8:
        raise ValueError(f"a bitmap of {n} flags is {(n + 7) // 8} bytes, not {len(data)}")
    return [bool(data[i // 8] & (0x80 >> (i % 8))) for i in range(n)]


def iter_zstd_records(
    read: Callable[[int], bytes], budget: int | None = None
) -> Iterator[tuple[ObjectId, bytes]]:
    """``iter_records`` over a ``zstd_records`` stream: (id, framed form), unverified;
    ``budget`` bounds the decompressed bytes. Bytes that are not such a stream, or a
    stream that ends before its frame does, raise RecordStreamError."""
    source = FrameTracker(read)
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    try:
        yield from iter_records(reader.read, budget)
    except zstandard.ZstdError as e:
        raise RecordStreamError(f"not a zstd stream of records ({e})") from None
    _check_frame_end(source)


def _check_frame_end(source: FrameTracker) -> None:
    """The stream is over: it must have ended with a frame's end, which the sender always
    writes. zstd's reader ends a stream cut inside its frame as quietly as a whole one, and
    a cut between two blocks leaves every record before it whole: a shorter batch."""
    if not source.at_frame_end:
        raise RecordStreamError("the stream ends before its zstd frame does (cut short)")


# --- errors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorAnswer:
    """A non-200 answer as the client received it."""

    status: int
    code: str | None
    message: str
    body: dict[str, Any]
    url: str
    has_token: bool


@dataclass(frozen=True)
class ErrorCode:
    """One row of the error table: the ``error`` code, its HTTP status and the library
    exception it stands for. ``fields`` gives the answer's extra JSON fields for such an
    exception (server side; rows without it are raised by the server by code only);
    ``rebuild`` makes the exception again from an answer (client side; None when the
    answer lacks what the exception needs). ``by_status``: the client takes any answer
    of this status without a known code as this one (a proxy's 401 is still a 401)."""

    code: str
    status: int
    exception: type[OsmoError] | None = None
    fields: Callable[[Any], dict[str, Any]] | None = None
    rebuild: Callable[[ErrorAnswer], OsmoError | None] | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())
    by_status: bool = False


def _oid_or_none(value: object) -> str | None:
    return value if is_oid(value) else None  # type: ignore[return-value]


def _named(body: dict[str, Any]) -> str | None:
    name = body.get("name")
    return name if isinstance(name, str) else None


def _auth_error(a: ErrorAnswer) -> OsmoError:
    problem = "refused the token" if a.has_token else "needs a token"
    return AuthError(
        f"the osmo server at {a.url} {problem}",
        status=a.status,
        code=a.code,
        hint="set OSMO_TOKEN or --token-file",
    )


def _refused(a: ErrorAnswer) -> OsmoError:
    return RemoteRefused(f"{a.url}: {a.message}", status=a.status, code=a.code)


def _too_large(a: ErrorAnswer) -> OsmoError:
    return RemoteError(
        f"the osmo server at {a.url} refused a request as too large: {a.message}",
        status=a.status,
        code=a.code,
    )


def _invalid_ref_name(a: ErrorAnswer) -> OsmoError:
    name = str(a.body.get("name", ""))
    return InvalidRefName(name, a.message.removeprefix(f"invalid ref name {name!r}: "))


def _conflict_fields(e: RefConflict) -> dict[str, Any]:
    expected = e.expected if e.expected is None or isinstance(e.expected, str) else EXPECT_ANY
    return {"name": e.name, "expected": expected, "current": e.actual}


def _conflict(a: ErrorAnswer) -> OsmoError | None:
    name = _named(a.body)
    if name is None:
        return None
    return RefConflict(
        name, _oid_or_none(a.body.get("expected")), _oid_or_none(a.body.get("current"))
    )


def _not_found(a: ErrorAnswer) -> OsmoError | None:
    oid = _oid_or_none(a.body.get("id"))
    return None if oid is None else ObjectNotFound(oid)


def _ref_not_found(a: ErrorAnswer) -> OsmoError | None:
    name = _named(a.body)
    return None if name is None else RefNotFound(name)


def _bad_object(a: ErrorAnswer) -> OsmoError | None:
    oid = _oid_or_none(a.body.get("id"))
    return None if oid is None else CorruptObject(oid, f"refused by the server: {a.message}")


BAD_REQUEST = ErrorCode("bad_request", 400)
INVALID_ID = ErrorCode(
    "invalid_id",
    400,
    InvalidObjectId,
    fields=lambda e: {"id": e.text[:100]},
    rebuild=lambda a: InvalidObjectId(str(a.body.get("id", ""))),
)
INVALID_REF_NAME = ErrorCode(
    "invalid_ref_name",
    400,
    InvalidRefName,
    fields=lambda e: {"name": e.name[:1100]},
    rebuild=_invalid_ref_name,
)
#: An uploaded object that fails verification or is cut off (``id`` null: cut in a
#: header). Raised by the upload only: a damaged object in the server's own store is the
#: server's problem (``store_error``), not the client's.
BAD_OBJECT = ErrorCode("bad_object", 400, CorruptObject, rebuild=_bad_object)
UNAUTHORIZED = ErrorCode(
    "unauthorized",
    401,
    AuthError,
    rebuild=_auth_error,
    headers=(("WWW-Authenticate", f'{AUTH_SCHEME} realm="osmo"'),),
    by_status=True,
)
READ_ONLY = ErrorCode("read_only", 403, RemoteRefused, rebuild=_refused, by_status=True)
NOT_FAST_FORWARD = ErrorCode("not_fast_forward", 403, RemoteRefused, rebuild=_refused)
NOT_FOUND = ErrorCode(
    "not_found", 404, ObjectNotFound, fields=lambda e: {"id": e.oid}, rebuild=_not_found
)
REF_NOT_FOUND = ErrorCode(
    "ref_not_found", 404, RefNotFound, fields=lambda e: {"name": e.name}, rebuild=_ref_not_found
)
UNKNOWN_ENDPOINT = ErrorCode("unknown_endpoint", 404)
METHOD_NOT_ALLOWED = ErrorCode("method_not_allowed", 405)
CONFLICT = ErrorCode("conflict", 409, RefConflict, fields=_conflict_fields, rebuild=_conflict)
LENGTH_REQUIRED = ErrorCode("length_required", 411)
TOO_LARGE = ErrorCode("too_large", 413, rebuild=_too_large, by_status=True)
UNSUPPORTED_MEDIA_TYPE = ErrorCode("unsupported_media_type", 415)
BUSY = ErrorCode("busy", 503, LockTimeout, fields=lambda e: {}, headers=(("Retry-After", "1"),))
STORE_ERROR = ErrorCode("store_error", 500, OsmoError, fields=lambda e: {})
INTERNAL = ErrorCode("internal", 500)

#: Every error code. The server maps an exception to the first row whose exception it is
#: an instance of (so a subclass's row comes before its base's), among rows with ``fields``.
ERRORS: tuple[ErrorCode, ...] = (
    BAD_REQUEST,
    INVALID_ID,
    INVALID_REF_NAME,
    BAD_OBJECT,
    UNAUTHORIZED,
    READ_ONLY,
    NOT_FAST_FORWARD,
    NOT_FOUND,
    REF_NOT_FOUND,
    UNKNOWN_ENDPOINT,
    METHOD_NOT_ALLOWED,
    CONFLICT,
    LENGTH_REQUIRED,
    TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    BUSY,
    STORE_ERROR,
    INTERNAL,
)
_BY_CODE = {row.code: row for row in ERRORS}
_BY_STATUS = {row.status: row for row in ERRORS if row.by_status}


def error(row: ErrorCode, message: str, **fields: Any) -> HttpError:
    """The server's answer for ``row``, with its headers."""
    answer = HttpError(row.status, row.code, message, **fields)
    answer.headers.extend(row.headers)
    return answer


def error_for_exception(exc: BaseException) -> HttpError:
    """The server's answer for a library exception; anything else is ``internal``, whose
    message says nothing (the details go to the server's log)."""
    for row in ERRORS:
        if row.fields is not None and row.exception and isinstance(exc, row.exception):
            return error(row, str(exc), **row.fields(exc))
    return error(INTERNAL, "internal server error")


def error_body(e: HttpError) -> dict[str, Any]:
    return {"error": e.code, "message": e.message, **e.fields}


def error_from_answer(answer: ErrorAnswer) -> OsmoError:
    """The client's exception for an error answer: the row of its code (or, without a
    known code, of its status), else a RemoteError naming the server."""
    row = _BY_CODE.get(answer.code or "")
    if row is None or row.status != answer.status:
        row = _BY_STATUS.get(answer.status)
    rebuilt = row.rebuild(answer) if row is not None and row.rebuild is not None else None
    if rebuilt is not None:
        return rebuilt
    if answer.status == UNKNOWN_ENDPOINT.status and answer.code is None:
        return RemoteError(f"{answer.url} is not an osmo server (404)", status=answer.status)
    return RemoteError(
        f"the osmo server at {answer.url} answered {answer.status}: {answer.message}",
        status=answer.status,
        code=answer.code,
    )
