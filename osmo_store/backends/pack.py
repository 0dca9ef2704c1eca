"""Pack files: many stored objects in one file, found through a sorted index.

``pack-<checksum>.pack`` holds a header, one zstd frame per object back to back, and a BLAKE3
trailer. In a version 1 pack each frame is exactly what a loose file would hold; a version 2
pack (what osmo writes) also holds a zstd dictionary in its header, trained on its first
objects, and compresses every frame with it (``packdict``). ``pack-<checksum>.idx`` holds a
fan-out table and sorted (id, offset, length) records. A pack becomes visible only when its
index is published, and the index is published last, so a reader never sees a partial pack.
Byte layout: objects_spec.md, "packs".
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import blake3

from ..errors import CorruptObject, CorruptPack, ObjectNotFound, UnsupportedPackVersion
from ..hashing import OID_RAW_LEN, ObjectId, oid_from_raw, oid_to_raw
from ..objects import MAX_OBJECT_SIZE, compress_framed, decompress_framed, stored_content_size
from .fsutil import fsync_dir, publish_or_freshen, write_all
from .packdict import DICT_SAMPLE_BYTES, MAX_DICT_SIZE, PackCodec, train_dictionary

PACK_MAGIC = b"OSMOPACK"
PACK_VERSION = 2  # what new packs are written as
READABLE_VERSIONS = (1, 2)
# The index names its pack's version: "OSMOIDX" and the version as one ASCII digit.
_IDX_MAGIC_PREFIX = b"OSMOIDX"
_PACK_HEADER = struct.Struct(">8sI")  # magic, version
_DICT_LENGTH = struct.Struct(">I")  # version 2: the dictionary's length, after the header
_V2_HEADER = _PACK_HEADER.size + _DICT_LENGTH.size
_PLAIN = PackCodec(b"")
_IDX_HEADER = struct.Struct(">8sIQQ")  # magic, count, total framed bytes, total stored bytes
_RECORD = struct.Struct(">32sQI")  # id, offset, length
_FANOUT = struct.Struct(">256I")
_TRAILER = OID_RAW_LEN
_WRITE_BUFFER = 1 << 20
# Index records a lookup reads at once (5.6 KB: the block its id would be in); and a walk of
# every record, per read (44 KB).
_LOOKUP_BLOCK = 128
_WALK_CHUNK = 1024


class PackWriter:
    """Writes one pack. ``add`` stored bytes (or ``add_framed``), then ``finish`` (publish)
    or ``abort``. A version 2 writer holds the first objects (``DICT_SAMPLE_BYTES``) until
    it has trained the pack's dictionary on them.

    With ``in_id_order``, objects come in increasing id order (a repeated id is written
    once) and their index records go to the index file as they come: a merge of many packs
    holds no record per object in memory (a dict of them took ~200 bytes an object: an
    eval's recorder folding its packs would grow with the eval)."""

    def __init__(
        self, pack_dir: Path, *, in_id_order: bool = False, version: int | None = None
    ) -> None:
        # Looked up per writer: the compatibility tests build version 1 stores by setting
        # PACK_VERSION, through the same code paths (evals, sync) as ever.
        version = PACK_VERSION if version is None else version
        if version not in READABLE_VERSIONS:
            raise ValueError(f"cannot write pack version {version}")
        self.version = version
        self.pack_dir = pack_dir
        pack_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = pack_dir / f"tmp-pack-{os.getpid()}-{os.urandom(6).hex()}"
        self._fd = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self._hash = blake3.blake3()
        self._records: dict[bytes, tuple[int, int]] = {}
        self._stream: _IndexStream | None = None
        # Version 2: the framed objects held until the dictionary is trained on them.
        self._pending: dict[bytes, bytes] = {}
        self._pending_bytes = 0
        self._codec: PackCodec | None = None
        if in_id_order:
            try:
                self._stream = _IndexStream(self._tmp.with_name(self._tmp.name + "-index"), version)
            except BaseException:
                self.abort()
                raise
        self._offset = 0
        self._framed_total = 0
        self._buffer = bytearray()
        if version == 1:
            self._codec = _PLAIN
            try:
                self._write(_PACK_HEADER.pack(PACK_MAGIC, 1))
            except BaseException:
                self.abort()
                raise

    def _write(self, data: bytes) -> None:
        # Buffered: one write(2) per ~1 MiB, not one per (often tiny) object.
        self._buffer += data
        self._hash.update(data)
        self._offset += len(data)
        if len(self._buffer) >= _WRITE_BUFFER:
            self._drain()

    def _drain(self) -> None:
        if self._buffer:
            write_all(self._fd, self._buffer)
            self._buffer = bytearray()

    def __contains__(self, oid: ObjectId) -> bool:
        assert self._stream is None, "an in-id-order writer keeps no records"
        raw = oid_to_raw(oid)
        return raw in self._records or raw in self._pending

    def __len__(self) -> int:
        written = self._stream.count if self._stream is not None else len(self._records)
        return written + len(self._pending)

    @property
    def size(self) -> int:
        return self._offset + self._pending_bytes

    def add(self, oid: ObjectId, data: bytes) -> None:
        """Add an object in its stored form (section 2), verified by the caller."""
        if self.version == 1:
            self._put(oid_to_raw(oid), data, stored_content_size(data))
        else:
            self.add_framed(oid, decompress_framed(data, oid))

    def add_framed(self, oid: ObjectId, framed: bytes) -> None:
        """Add an object in its framed form, verified by the caller."""
        raw = oid_to_raw(oid)
        if self._stream is not None and self._pending:
            # Held objects reach the index stream later: their order is checked now.
            last = next(reversed(self._pending))
            if raw < last:
                raise ValueError("objects of an in-id-order pack came out of order")
        if self._codec is not None:
            self._put(raw, self._codec.compress(framed), len(framed))
        elif raw not in self._pending:
            self._pending[raw] = framed
            self._pending_bytes += len(framed)
            if self._pending_bytes >= DICT_SAMPLE_BYTES:
                self._start()

    def _start(self) -> None:
        """Version 2: train the dictionary on the objects held so far, write the header
        with it, then those objects."""
        dictionary = train_dictionary(list(self._pending.values()))
        self._codec = PackCodec(dictionary)
        self._write(_PACK_HEADER.pack(PACK_MAGIC, 2) + _DICT_LENGTH.pack(len(dictionary)))
        self._write(dictionary)
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        for raw, framed in pending.items():
            self._put(raw, self._codec.compress(framed), len(framed))

    def _put(self, raw: bytes, data: bytes, framed_size: int) -> None:
        if self._stream is not None:
            if not self._stream.add(raw, self._offset, len(data)):
                return
        elif raw in self._records:
            return
        else:
            self._records[raw] = (self._offset, len(data))
        self._framed_total += framed_size
        self._write(data)

    def read_framed(self, oid: ObjectId) -> bytes:
        """Framed form of an object added to this (unpublished) pack, not verified."""
        assert self._stream is None, "an in-id-order writer keeps no records"
        raw = oid_to_raw(oid)
        if raw in self._pending:
            return self._pending[raw]
        assert self._codec is not None
        self._drain()
        offset, length = self._records[raw]
        return self._codec.decompress(oid, os.pread(self._fd, length, offset), "new pack")

    def finish(self) -> Path | None:
        """fsync and publish; returns the .idx path, or None (nothing written) if empty."""
        if not len(self):
            self.abort()
            return None
        idx_tmp = self._tmp.with_name(self._tmp.name + "-index")
        try:
            if self._codec is None:
                self._start()
            checksum = self._hash.digest()
            self._drain()
            write_all(self._fd, checksum)
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            stored_total = self._offset + _TRAILER
            if self._stream is not None:
                self._stream.finish(checksum, self._framed_total, stored_total)
            else:
                idx = build_index(
                    self._records, checksum, self._framed_total, stored_total, self.version
                )
                fd = os.open(idx_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    write_all(fd, idx)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            name = f"pack-{checksum.hex()}"
            # Order matters: the pack must be in place before the index that makes it visible.
            # An identical pack already there is freshened instead (see gc's protocol).
            publish_or_freshen(self._tmp, self.pack_dir / f"{name}.pack")
            publish_or_freshen(idx_tmp, self.pack_dir / f"{name}.idx")
            fsync_dir(self.pack_dir)
            return self.pack_dir / f"{name}.idx"
        except BaseException:
            self.abort()
            idx_tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tmp.unlink(missing_ok=True)
        if self._stream is not None:
            self._stream.abort()


class _IndexStream:
    """An index file written record by record, for ids that come in increasing order: the
    header and fan-out are filled in at the end, and the trailer hashes the file read back
    in chunks (the layout is ``build_index``'s)."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self.count = 0
        self._fanout = [0] * 256
        self._last = b""
        self._buffer = bytearray(_IDX_HEADER.size + _FANOUT.size)  # filled in by finish

    def add(self, raw: bytes, offset: int, length: int) -> bool:
        """Record an object; False for a repeat of the last id (not to be written)."""
        if raw <= self._last:
            if raw == self._last:
                return False
            raise ValueError("objects of an in-id-order pack came out of order")
        self._last = raw
        self._fanout[raw[0]] += 1
        self.count += 1
        self._buffer += _RECORD.pack(raw, offset, length)
        if len(self._buffer) >= _WRITE_BUFFER:
            write_all(self.fd, self._buffer)
            self._buffer = bytearray()
        return True

    def finish(self, checksum: bytes, framed_total: int, stored_total: int) -> None:
        write_all(self.fd, self._buffer + checksum)
        self._buffer = bytearray()
        fanout = list(self._fanout)
        for i in range(1, 256):
            fanout[i] += fanout[i - 1]
        head = _IDX_HEADER.pack(idx_magic(self.version), self.count, framed_total, stored_total)
        os.pwrite(self.fd, head + _FANOUT.pack(*fanout), 0)
        h = blake3.blake3()
        pos, end = 0, os.fstat(self.fd).st_size
        while pos < end:
            chunk = os.pread(self.fd, min(_WRITE_BUFFER, end - pos), pos)
            if not chunk:
                raise OSError(f"{self.path}: short read while hashing the index")
            h.update(chunk)
            pos += len(chunk)
        write_all(self.fd, h.digest())
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.path.unlink(missing_ok=True)


def idx_magic(version: int) -> bytes:
    return _IDX_MAGIC_PREFIX + b"%d" % version


def build_index(
    records: dict[bytes, tuple[int, int]],
    checksum: bytes,
    framed_total: int,
    stored_total: int,
    version: int,
) -> bytes:
    ids = sorted(records)
    counts = [0] * 256
    for raw in ids:
        counts[raw[0]] += 1
    packed = b"".join(_RECORD.pack(raw, *records[raw]) for raw in ids)
    return _index(len(ids), counts, packed, checksum, framed_total, stored_total, version)


def _index(
    count: int,
    counts: list[int],
    packed: bytes | bytearray,
    checksum: bytes,
    framed_total: int,
    stored_total: int,
    version: int,
) -> bytes:
    """The index file: header, fan-out from per-first-byte ``counts``, the ``packed``
    records (sorted by id), the pack's checksum and the index's own."""
    body = b"".join([
        _IDX_HEADER.pack(idx_magic(version), count, framed_total, stored_total),
        _FANOUT.pack(*itertools.accumulate(counts)),
        packed,
        checksum,
    ])  # fmt: skip
    return body + blake3.blake3(body).digest()


class _IdView:
    """Sequence view of the sorted ids in an index (mapped, or records read), for bisect."""

    def __init__(self, mm: mmap.mmap | bytes, base: int, n: int) -> None:
        self._mm, self._base, self._n = mm, base, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        off = self._base + i * _RECORD.size
        return self._mm[off : off + OID_RAW_LEN]


class PackReader:
    """An open, published pack: pack and index read with pread; the index is also mapped,
    for the walks that scan it in place (verify, prefixes, gc's marks: ``release_pages``).

    Lookups and ``entries`` read the index with pread, not through the mapping: every
    mapped page they touch counts in the process's RSS until released (and the kernel maps
    pages around each one touched), so an eval's lookups and its recorder's folds, which
    touch every index page between two releases, grew with the store. Pages read with
    pread stay in the page cache, which is not the process's memory."""

    def __init__(self, idx_path: Path) -> None:
        self.idx_path = idx_path
        self.pack_path = idx_path.with_suffix(".pack")
        self._fd = self._idx_fd = -1  # what ``close`` closes, however far this gets
        with open(idx_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _IDX_HEADER.size + _FANOUT.size + 2 * _TRAILER:
                raise CorruptPack(str(idx_path), "index too short")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._idx_fd = os.dup(f.fileno())
            head = f.read(_IDX_HEADER.size + _FANOUT.size)  # not through the mapping either
            f.seek(size - 2 * _TRAILER)
            self.checksum = f.read(_TRAILER)
        magic, self.count, self.framed_total, self.stored_total = _IDX_HEADER.unpack_from(head)
        if magic[:7] == _IDX_MAGIC_PREFIX and magic[7:] not in (b"1", b"2"):
            self._close_index()
            raise UnsupportedPackVersion(str(idx_path), magic[7:].decode("latin-1"))
        self.version = 2 if magic == idx_magic(2) else 1
        expected = _IDX_HEADER.size + _FANOUT.size + self.count * _RECORD.size + 2 * _TRAILER
        if magic != idx_magic(self.version) or size != expected:
            self._close_index()
            raise CorruptPack(str(idx_path), "bad index header or size")
        self._fanout = _FANOUT.unpack_from(head, _IDX_HEADER.size)
        self._base = _IDX_HEADER.size + _FANOUT.size
        self._ids = _IdView(self._mm, self._base, self.count)
        self._starts: list[bytes] | None = None
        self._fd = os.open(self.pack_path, os.O_RDONLY)
        # Where objects may lie: a damaged index must not send a read past the pack (or
        # past what pread accepts: an offset over 2**63 is an OverflowError).
        self._end = os.fstat(self._fd).st_size - _TRAILER
        # Read from the pack's header on the first read: opening every pack of a store
        # (each command does) must not read every dictionary.
        self._codec: PackCodec | None = _PLAIN if self.version == 1 else None
        self._first = _PACK_HEADER.size if self.version == 1 else _V2_HEADER

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._close_index()

    def _close_index(self) -> None:
        if self._idx_fd >= 0:
            os.close(self._idx_fd)
            self._idx_fd = -1
        self._mm.close()

    def release_pages(self) -> None:
        """Unmap the index pages read so far (the page cache keeps them; the next read maps
        them again): a walk over every object of a big store touches every page of every
        index, which would otherwise all count in this process's memory."""
        with contextlib.suppress(ValueError, OSError):  # closed meanwhile
            self._mm.madvise(mmap.MADV_DONTNEED)

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0 or getattr(self, "_idx_fd", -1) >= 0:
            self.close()

    def _read_records(self, lo: int, hi: int) -> bytes:
        """The index records at positions [lo, hi), read with pread (see the class)."""
        size = _RECORD.size
        data = os.pread(self._idx_fd, (hi - lo) * size, self._base + lo * size)
        if len(data) != (hi - lo) * size:
            raise CorruptPack(str(self.idx_path), "index is truncated")
        return data

    def _block_starts(self) -> list[bytes]:
        """The first id of every ``_LOOKUP_BLOCK`` records, read at the first lookup (a
        quarter of a byte an object): a lookup finds its block here, then reads only that
        block, with one pread (a bisect by single reads took several)."""
        starts = self._starts
        if starts is None:  # two threads may both read them: the same list either way
            starts = [
                self._read_records(i, i + 1)[:OID_RAW_LEN]
                for i in range(0, self.count, _LOOKUP_BLOCK)
            ]
            self._starts = starts
        return starts

    def _find(self, raw: bytes) -> tuple[bytes, int, int] | None:
        """The index record of ``raw``, if here."""
        k = bisect.bisect_right(self._block_starts(), raw) - 1
        if k < 0:
            return None
        lo = k * _LOOKUP_BLOCK
        hi = min(lo + _LOOKUP_BLOCK, self.count)
        block = self._read_records(lo, hi)
        i = bisect.bisect_left(_IdView(block, 0, hi - lo), raw)
        if i < hi - lo and block[i * _RECORD.size : i * _RECORD.size + OID_RAW_LEN] == raw:
            return _RECORD.unpack_from(block, i * _RECORD.size)
        return None

    def __contains__(self, oid: ObjectId) -> bool:
        return self._find(oid_to_raw(oid)) is not None

    def contains_raw(self, raw: bytes) -> bool:
        return self._find(raw) is not None

    def raw_ids_with_prefix(self, prefix: bytes, limit: int) -> list[bytes]:
        """At most ``limit`` raw ids here that start with ``prefix`` (at least one byte)."""
        hi = min(self._fanout[prefix[0]], self.count)
        lo = min(self._fanout[prefix[0] - 1], hi) if prefix[0] else 0
        i = bisect.bisect_left(self._ids, prefix, lo, hi)
        out = []
        while i < hi and len(out) < limit and self._ids[i].startswith(prefix):
            out.append(bytes(self._ids[i]))
            i += 1
        return out

    def _locate(self, oid: ObjectId) -> tuple[int, int]:
        record = self._find(oid_to_raw(oid))
        if record is None:
            raise ObjectNotFound(oid)
        _, offset, length = record
        return offset, length

    def read(self, oid: ObjectId, limit: int = MAX_OBJECT_SIZE) -> bytes:
        """The object's stored form (objects_spec.md section 2). ``limit``: the most bytes
        a frame may declare where this has to decompress it (``decompress_framed``)."""
        return self.read_at(oid, *self._locate(oid), limit)

    def read_framed(self, oid: ObjectId, limit: int = MAX_OBJECT_SIZE) -> bytes:
        """The object's framed form, decompressed but not yet verified against ``oid``."""
        return self.read_framed_at(oid, *self._locate(oid), limit)

    def read_at(
        self, oid: ObjectId, offset: int, length: int, limit: int = MAX_OBJECT_SIZE
    ) -> bytes:
        """Stored form at a known place (from ``entries()``): no index search. A version 2
        frame compressed with the pack's dictionary is recompressed without it."""
        codec = self._load_codec(oid)
        frame = self._frame_at(oid, offset, length)
        if not codec.dictionary:
            return frame
        return compress_framed(codec.decompress(oid, frame, self.pack_path.name, limit))

    def read_framed_at(
        self, oid: ObjectId, offset: int, length: int, limit: int = MAX_OBJECT_SIZE
    ) -> bytes:
        """``read_framed`` at a known place (from ``entries()``)."""
        codec = self._load_codec(oid)
        frame = self._frame_at(oid, offset, length)
        return codec.decompress(oid, frame, self.pack_path.name, limit)

    def frame_bytes_at(self, oid: ObjectId, offset: int, length: int) -> bytes:
        """``length`` bytes of the object's frame as the pack holds it, from its start (a
        version 2 frame's header gives its framed size, dictionary or not)."""
        self._load_codec(oid)  # where a version 2 pack's records begin
        return self._frame_at(oid, offset, length)

    def _load_codec(self, oid: ObjectId) -> PackCodec:
        """The pack's codec; a version 2 pack's header and dictionary are read once. A
        damaged header fails the read of ``oid`` (every object of the pack, each by id)."""
        if self._codec is not None:
            return self._codec
        # Only the dictionary's length and bytes matter to the objects (a damaged magic is
        # for the pack checksum, ``verify_checksums``, to find, as in version 1).
        head = os.pread(self._fd, _DICT_LENGTH.size, _PACK_HEADER.size)
        if len(head) == _DICT_LENGTH.size:
            (length,) = _DICT_LENGTH.unpack(head)
            if length <= min(MAX_DICT_SIZE, self._end - _V2_HEADER):
                dictionary = os.pread(self._fd, length, _V2_HEADER)
                if len(dictionary) == length:
                    self._first = _V2_HEADER + length
                    self._codec = PackCodec(dictionary)
                    return self._codec
        raise CorruptObject(oid, "its pack's header is damaged", where=self.pack_path.name)

    def _frame_at(self, oid: ObjectId, offset: int, length: int) -> bytes:
        if offset < self._first or offset + length > self._end:
            raise CorruptObject(
                oid,
                f"its index {self.idx_path.name} places it outside the pack",
                where=self.pack_path.name,
            )
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise CorruptObject(oid, "pack is truncated", where=self.pack_path.name)
        return data

    def entries(self) -> Iterator[tuple[ObjectId, int, int]]:
        """(id, offset, length) for every object, in id order: read in bounded chunks, so a
        walk of a big index (a fold merging packs) holds a chunk, not the index, in RSS."""
        for lo in range(0, self.count, _WALK_CHUNK):
            records = self._read_records(lo, min(lo + _WALK_CHUNK, self.count))
            for raw, offset, length in _RECORD.iter_unpack(records):
                yield oid_from_raw(raw), offset, length

    def bucket_range(self, first_byte: int) -> tuple[int, int]:
        """Index positions [lo, hi) of the ids whose first byte is ``first_byte``."""
        return (self._fanout[first_byte - 1] if first_byte else 0), self._fanout[first_byte]

    def raw_ids(self, lo: int, hi: int) -> Iterator[bytes]:
        """Raw ids at index positions [lo, hi), in order."""
        mm, size = self._mm, _RECORD.size
        for off in range(self._base + lo * size, self._base + hi * size, size):
            yield mm[off : off + OID_RAW_LEN]

    def entry_at(self, i: int) -> tuple[ObjectId, int, int]:
        """(id, offset, length) of the object at index position ``i``."""
        raw, offset, length = _RECORD.unpack(self._read_records(i, i + 1))
        return oid_from_raw(raw), offset, length

    def ids(self) -> Iterator[ObjectId]:
        for oid, _, _ in self.entries():
            yield oid

    def ids_with_prefix(self, prefix: str) -> Iterator[ObjectId]:
        lo_raw = bytes.fromhex(prefix[: len(prefix) // 2 * 2].ljust(2, "0"))
        i = bisect.bisect_left(self._ids, lo_raw)
        while i < self.count:
            oid = self._ids[i].hex()
            if not oid.startswith(prefix):
                if oid[: len(prefix)] > prefix:
                    break
            else:
                yield ObjectId(oid)
            i += 1

    def verify_index(self) -> list[str]:
        """Check the index against its checksum and the rules of objects_spec.md section 5
        (fan-out, ids sorted and unique, every record inside the pack): a damaged index
        hides objects or points reads at the wrong bytes, and names the pack it damages.
        Reads the index only (fsck runs it on every pack). Returns the problems found."""
        name = self.idx_path.name
        problems = []
        counts = [0] * 256
        previous = b""
        end = 0
        unsorted: list[int] = []
        in_header: list[int] = []
        # The index alone does not say how long a version 2 header is (its dictionary).
        first = _PACK_HEADER.size if self.version == 1 else _V2_HEADER
        # Hashed and walked in place, without a copy of the index (at 1M objects, 48 MB).
        with memoryview(self._mm) as view:
            digest = blake3.blake3(view[: len(view) - _TRAILER]).digest()
            if digest != self._mm[len(self._mm) - _TRAILER :]:
                problems.append(f"{name}: index checksum mismatch")
            with view[self._base : self._base + self.count * _RECORD.size] as records:
                for i, (raw, offset, length) in enumerate(_RECORD.iter_unpack(records)):
                    counts[raw[0]] += 1
                    if raw <= previous:
                        unsorted.append(i)
                    if offset < first:
                        in_header.append(i)
                    previous = raw
                    end = max(end, offset + length)
        self.release_pages()
        if unsorted:
            problems.append(f"{name}: ids out of order or repeated at record {unsorted[0]}")
        if in_header:
            problems.append(f"{name}: record {in_header[0]} points into the pack header")
        total = 0
        for first_byte, count in enumerate(counts):
            total += count
            if self._fanout[first_byte] != total:
                problems.append(f"{name}: fan-out table does not match the ids")
                break
        size = os.fstat(self._fd).st_size
        if size < end + _TRAILER:
            # Which file is wrong: an index that checks out describes the pack as written.
            problems.append(
                f"{self.pack_path.name}: pack is truncated ({size} bytes, its index places "
                f"objects up to byte {end + _TRAILER})"
                if not problems
                else f"{name}: records point past the end of the pack ({size} bytes)"
            )
        return problems

    def verify_checksums(self) -> list[str]:
        """Re-hash the whole pack file against its checksum (objects are verified one by
        one by the normal read path, the index by ``verify_index``). Returns the problems
        found."""
        problems = []
        size = os.fstat(self._fd).st_size
        h = blake3.blake3()
        pos, end = 0, size - _TRAILER
        while pos < end:
            chunk = os.pread(self._fd, min(1 << 22, end - pos), pos)
            if not chunk:
                break
            h.update(chunk)
            pos += len(chunk)
        trailer = os.pread(self._fd, _TRAILER, max(end, 0))
        if size < _PACK_HEADER.size + _TRAILER or h.digest() != trailer:
            problems.append(f"{self.pack_path.name}: pack checksum mismatch (truncated or altered)")
        elif trailer != self.checksum:
            problems.append(f"{self.pack_path.name}: pack does not match its index")
        return problems
