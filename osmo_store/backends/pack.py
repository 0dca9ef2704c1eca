"""Pack files: many stored objects in one file, found through a sorted index.

``pack-<checksum>.pack`` holds a 12-byte header, the stored bytes of each object back to
back (exactly what a loose file would hold), and a BLAKE3 trailer. ``pack-<checksum>.idx``
holds a fan-out table and sorted (id, offset, length) records. A pack becomes visible only
when its index is published, and the index is published last, so a reader never sees a
partial pack. Byte layout: objects_spec.md, "packs".
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

from ..errors import CorruptObject, CorruptPack, ObjectNotFound
from ..hashing import OID_RAW_LEN, ObjectId, oid_from_raw, oid_to_raw
from ..objects import stored_content_size
from .fsutil import fsync_dir, publish_or_freshen, write_all

PACK_MAGIC = b"OSMOPACK"
IDX_MAGIC = b"OSMOIDX1"
PACK_VERSION = 1
_PACK_HEADER = struct.Struct(">8sI")  # magic, version
_IDX_HEADER = struct.Struct(">8sIQQ")  # magic, count, total framed bytes, total stored bytes
_RECORD = struct.Struct(">32sQI")  # id, offset, length
_FANOUT = struct.Struct(">256I")
_TRAILER = OID_RAW_LEN
_WRITE_BUFFER = 1 << 20


class PackWriter:
    """Writes one pack. ``add`` stored bytes, then ``finish`` (publish) or ``abort``.

    With ``in_id_order``, objects come in increasing id order (a repeated id is written
    once) and their index records go to the index file as they come: a merge of many packs
    holds no record per object in memory (a dict of them took ~200 bytes an object: an
    eval's recorder folding its packs would grow with the eval)."""

    def __init__(self, pack_dir: Path, *, in_id_order: bool = False) -> None:
        self.pack_dir = pack_dir
        pack_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = pack_dir / f"tmp-pack-{os.getpid()}-{os.urandom(6).hex()}"
        self._fd = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self._hash = blake3.blake3()
        self._records: dict[bytes, tuple[int, int]] = {}
        self._stream: _IndexStream | None = None
        if in_id_order:
            try:
                self._stream = _IndexStream(self._tmp.with_name(self._tmp.name + "-index"))
            except BaseException:
                self.abort()
                raise
        self._offset = 0
        self._framed_total = 0
        self._buffer = bytearray()
        try:
            self._write(_PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION))
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
        return oid_to_raw(oid) in self._records

    def __len__(self) -> int:
        return self._stream.count if self._stream is not None else len(self._records)

    @property
    def size(self) -> int:
        return self._offset

    def add(self, oid: ObjectId, data: bytes) -> None:
        raw = oid_to_raw(oid)
        if self._stream is not None:
            if not self._stream.add(raw, self._offset, len(data)):
                return
        elif raw in self._records:
            return
        else:
            self._records[raw] = (self._offset, len(data))
        self._framed_total += stored_content_size(data)
        self._write(data)

    def read(self, oid: ObjectId) -> bytes:
        """Stored bytes of an object added to this (unpublished) pack."""
        assert self._stream is None, "an in-id-order writer keeps no records"
        self._drain()
        offset, length = self._records[oid_to_raw(oid)]
        return os.pread(self._fd, length, offset)

    def finish(self) -> Path | None:
        """fsync and publish; returns the .idx path, or None (nothing written) if empty."""
        if not len(self):
            self.abort()
            return None
        idx_tmp = self._tmp.with_name(self._tmp.name + "-index")
        try:
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
                idx = build_index(self._records, checksum, self._framed_total, stored_total)
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

    def __init__(self, path: Path) -> None:
        self.path = path
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
        head = _IDX_HEADER.pack(IDX_MAGIC, self.count, framed_total, stored_total)
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


def build_index(
    records: dict[bytes, tuple[int, int]], checksum: bytes, framed_total: int, stored_total: int
) -> bytes:
    ids = sorted(records)
    counts = [0] * 256
    for raw in ids:
        counts[raw[0]] += 1
    packed = b"".join(_RECORD.pack(raw, *records[raw]) for raw in ids)
    return _index(len(ids), counts, packed, checksum, framed_total, stored_total)


def _index(
    count: int,
    counts: list[int],
    packed: bytes | bytearray,
    checksum: bytes,
    framed_total: int,
    stored_total: int,
) -> bytes:
    """The index file: header, fan-out from per-first-byte ``counts``, the ``packed``
    records (sorted by id), the pack's checksum and the index's own."""
    body = b"".join([
        _IDX_HEADER.pack(IDX_MAGIC, count, framed_total, stored_total),
        _FANOUT.pack(*itertools.accumulate(counts)),
        packed,
        checksum,
    ])  # fmt: skip
    return body + blake3.blake3(body).digest()


class _IdView:
    """Sequence view of the sorted ids in an index, for bisect."""

    def __init__(self, mm: mmap.mmap, base: int, n: int) -> None:
        self._mm, self._base, self._n = mm, base, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        off = self._base + i * _RECORD.size
        return self._mm[off : off + OID_RAW_LEN]


class PackReader:
    """An open, published pack: index mapped into memory, pack read with pread."""

    def __init__(self, idx_path: Path) -> None:
        self.idx_path = idx_path
        self.pack_path = idx_path.with_suffix(".pack")
        with open(idx_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _IDX_HEADER.size + _FANOUT.size + 2 * _TRAILER:
                raise CorruptPack(str(idx_path), "index too short")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        magic, self.count, self.framed_total, self.stored_total = _IDX_HEADER.unpack_from(self._mm)
        expected = _IDX_HEADER.size + _FANOUT.size + self.count * _RECORD.size + 2 * _TRAILER
        if magic != IDX_MAGIC or size != expected:
            raise CorruptPack(str(idx_path), "bad index header or size")
        self._fanout = _FANOUT.unpack_from(self._mm, _IDX_HEADER.size)
        self._base = _IDX_HEADER.size + _FANOUT.size
        self._ids = _IdView(self._mm, self._base, self.count)
        self.checksum = bytes(self._mm[size - 2 * _TRAILER : size - _TRAILER])
        self._fd = os.open(self.pack_path, os.O_RDONLY)
        # Where objects may lie: a damaged index must not send a read past the pack (or
        # past what pread accepts: an offset over 2**63 is an OverflowError).
        self._end = os.fstat(self._fd).st_size - _TRAILER

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._mm.close()

    def release_pages(self) -> None:
        """Unmap the index pages read so far (the page cache keeps them; the next read maps
        them again): a walk over every object of a big store touches every page of every
        index, which would otherwise all count in this process's memory."""
        with contextlib.suppress(ValueError, OSError):  # closed meanwhile
            self._mm.madvise(mmap.MADV_DONTNEED)

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def _find(self, raw: bytes) -> int:
        # Clamped: a damaged fan-out must not index past the records.
        hi = min(self._fanout[raw[0]], self.count)
        lo = min(self._fanout[raw[0] - 1], hi) if raw[0] else 0
        i = bisect.bisect_left(self._ids, raw, lo, hi)
        return i if i < hi and self._ids[i] == raw else -1

    def __contains__(self, oid: ObjectId) -> bool:
        return self._find(oid_to_raw(oid)) >= 0

    def contains_raw(self, raw: bytes) -> bool:
        return self._find(raw) >= 0

    def _record(self, i: int) -> tuple[bytes, int, int]:
        return _RECORD.unpack_from(self._mm, self._base + i * _RECORD.size)

    def read(self, oid: ObjectId) -> bytes:
        i = self._find(oid_to_raw(oid))
        if i < 0:
            raise ObjectNotFound(oid)
        _, offset, length = self._record(i)
        return self.read_at(oid, offset, length)

    def read_at(self, oid: ObjectId, offset: int, length: int) -> bytes:
        """Stored bytes at a known place (from ``entries()``): no index search."""
        if offset < _PACK_HEADER.size or offset + length > self._end:
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
        """(id, offset, length) for every object, in id order."""
        for i in range(self.count):
            raw, offset, length = self._record(i)
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
        raw, offset, length = self._record(i)
        return oid_from_raw(raw), offset, length

    def ids(self) -> Iterator[ObjectId]:
        for i in range(self.count):
            yield ObjectId(self._ids[i].hex())

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
                    if offset < _PACK_HEADER.size:
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
