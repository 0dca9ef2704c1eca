"""Layer 2: object framing, ids, compression and the run record.

An object is (type, content). Its *framed* form is ``b"<type> <len>\\0" + content``; its id is
BLAKE3-256 of the framed form; on disk (loose file or pack entry) it is one zstd frame of the
framed form with the content size in the frame header. Compression never changes an id, and
every decode re-hashes. See objects_spec.md for the byte-level rules.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from enum import Enum
from typing import Any, NamedTuple

import blake3
import zstandard

from .errors import CorruptObject, MalformedObject
from .hashing import ObjectId, canonical_json, is_oid

ZSTD_LEVEL = 3
# Sanity bound on a framed object's declared size, so a crafted frame header cannot make
# a read allocate unbounded memory.
MAX_OBJECT_SIZE = 1 << 34
#: The largest object (framed bytes) read from another store: an ``osmo serve``, an S3
#: bucket, a store directory used as a remote. A few bytes of zstd there can declare
#: gigabytes, and an object is checked against its id only once it is decompressed; the
#: HTTP protocol's bounds on uploads and answers are this one (``http/protocol.py``).
MAX_REMOTE_OBJECT = 1 << 30


class ObjectType(str, Enum):
    BLOB = "blob"
    TREE = "tree"
    RUN = "run"

    def __str__(self) -> str:
        return self.value


_TYPE_BY_NAME = {t.value.encode(): t for t in ObjectType}

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstd (de)compressor objects are not thread-safe; one of each per thread.
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def frame_header(otype: ObjectType, size: int) -> bytes:
    return b"%s %d\x00" % (otype.value.encode(), size)


def object_id(otype: ObjectType, content: bytes) -> ObjectId:
    h = blake3.blake3(frame_header(otype, len(content)))
    h.update(content)
    return ObjectId(h.hexdigest())


def encode_object(otype: ObjectType, content: bytes) -> tuple[ObjectId, bytes]:
    """Return (id, stored bytes) for an object."""
    framed = frame_header(otype, len(content)) + content
    return ObjectId(blake3.blake3(framed).hexdigest()), _compressor().compress(framed)


def compress_object(otype: ObjectType, content: bytes) -> bytes:
    """The stored bytes of an object whose id the caller has computed already."""
    return _compressor().compress(frame_header(otype, len(content)) + content)


def frame_object(otype: ObjectType, content: bytes) -> tuple[ObjectId, bytes]:
    """Return (id, framed form): what a version 2 pack compresses itself."""
    framed = frame_header(otype, len(content)) + content
    return ObjectId(blake3.blake3(framed).hexdigest()), framed


def compress_framed(framed: bytes) -> bytes:
    """The stored form (objects_spec.md section 2) of a framed object."""
    return _compressor().compress(framed)


def unframe(framed: bytes) -> tuple[ObjectType, bytes]:
    """Split a framed object strictly: known type, one space, canonical decimal size, NUL."""
    nul = framed.find(b"\x00", 0, 32)
    if nul < 0:
        raise ValueError("no header terminator")
    tname, sep, size = framed[:nul].partition(b" ")
    otype = _TYPE_BY_NAME.get(tname)
    if otype is None or not sep:
        raise ValueError(f"unknown object type {tname[:16]!r}")
    if not size.isdigit() or (len(size) > 1 and size[:1] == b"0"):
        raise ValueError("bad size in header")
    if int(size) != len(framed) - nul - 1:
        raise ValueError(f"header says {int(size)} bytes, content has {len(framed) - nul - 1}")
    return otype, framed[nul + 1 :]


def decompress_framed(
    data: bytes,
    oid: str,
    where: str | None = None,
    decompressor: zstandard.ZstdDecompressor | None = None,
    limit: int = MAX_OBJECT_SIZE,
) -> bytes:
    """The framed form in one stored frame; ``decompressor`` holds a pack's dictionary.
    A frame declaring more than ``limit`` bytes is refused before anything is allocated."""
    try:
        size = zstandard.frame_content_size(data)
        if size < 0:
            raise CorruptObject(oid, "zstd frame has no valid content size", where=where)
        if size > limit:
            reason = f"its zstd frame declares {size} bytes, over the bound of {limit}"
            raise CorruptObject(oid, reason, where=where)
        # Exactly one frame (objects_spec.md section 2): bytes after it, even a second
        # frame, make the stored form another byte string than the one that was verified.
        d = decompressor or _decompressor()
        return d.decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise CorruptObject(oid, f"cannot decompress ({e})", where=where) from None


def decode_object(
    oid: ObjectId, data: bytes, where: str | None = None, limit: int = MAX_OBJECT_SIZE
) -> tuple[ObjectType, bytes]:
    """Decompress stored bytes (declaring at most ``limit``) and verify they hash to
    ``oid``. Raises CorruptObject."""
    return verify_framed(oid, decompress_framed(data, oid, where, limit=limit), where)


def verify_framed(
    oid: ObjectId, framed: bytes, where: str | None = None
) -> tuple[ObjectType, bytes]:
    """Verify a framed object hashes to ``oid`` and split it. Raises CorruptObject."""
    got = blake3.blake3(framed).hexdigest()
    if got != oid:
        raise CorruptObject(oid, f"content hashes to {got}", where=where)
    try:
        return unframe(framed)
    except ValueError as e:
        raise CorruptObject(oid, f"bad header: {e}", where=where) from None


def stored_from_framed(oid: ObjectId, framed: bytes) -> bytes:
    """The stored bytes of an object received in its framed form (sync's compressed
    batches), verified against ``oid`` first. Raises CorruptObject."""
    got = blake3.blake3(framed).hexdigest()
    if got != oid:
        raise CorruptObject(oid, f"content hashes to {got}")
    try:
        unframe(framed)
    except ValueError as e:
        raise CorruptObject(oid, f"bad header: {e}") from None
    return _compressor().compress(framed)


def max_stored_size(framed_size: int) -> int:
    """The most bytes a stored form of ``framed_size`` framed bytes takes: zstd's bound on
    what compressing that many bytes can take (``ZSTD_COMPRESSBOUND``). A reader can refuse
    longer bytes unread."""
    small = ((128 << 10) - framed_size) >> 11 if framed_size < 128 << 10 else 0
    return framed_size + (framed_size >> 8) + small


def stored_content_size(data: bytes) -> int:
    """Uncompressed (framed) size of stored bytes, read from the zstd frame header only."""
    return max(zstandard.frame_content_size(data), 0)


class _RunRecordFields(NamedTuple):
    tree: ObjectId
    parents: tuple[ObjectId, ...]
    meta: dict[str, Any]


# The core's value types are NamedTuples, not dataclasses: `dataclasses` (with `inspect`)
# was a tenth of the start-up of every `osmo` command.
class RunRecord(_RunRecordFields):
    """A commit-like record: the manifest tree it describes, its parents, and metadata
    (config, provenance, status, summary) as a JSON object."""

    __slots__ = ()

    def __new__(
        cls,
        tree: ObjectId,
        parents: Iterable[ObjectId] = (),
        meta: dict[str, Any] | None = None,
    ) -> RunRecord:
        return super().__new__(cls, tree, tuple(parents), {} if meta is None else meta)

    def to_content(self) -> bytes:
        return canonical_json({"tree": self.tree, "parents": list(self.parents), "meta": self.meta})

    @classmethod
    def from_content(cls, content: bytes) -> RunRecord:
        import json

        try:
            value = json.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise MalformedObject(f"run record is not JSON: {e}") from None
        except RecursionError:
            raise MalformedObject("run record is nested too deeply") from None
        if not isinstance(value, dict) or set(value) != {"tree", "parents", "meta"}:
            raise MalformedObject("run record must have exactly the keys tree, parents, meta")
        tree, parents, meta = value["tree"], value["parents"], value["meta"]
        if not is_oid(tree):
            raise MalformedObject("run record tree is not an object id")
        if not isinstance(parents, list) or not all(is_oid(p) for p in parents):
            raise MalformedObject("run record parents must be a list of object ids")
        if len(set(parents)) != len(parents):
            raise MalformedObject("run record lists a parent twice")
        if not isinstance(meta, dict):
            raise MalformedObject("run record meta must be a JSON object")
        record = cls(ObjectId(tree), tuple(ObjectId(p) for p in parents), meta)
        if record.to_content() != content:
            raise MalformedObject("run record is not in canonical JSON form")
        return record
