"""Layer 5: what each kind of object costs in a local store (``osmo cache stats``).

The caller says which ids are of which kind (sets of ids, one per kind: the eval layer
knows a rollout from a model call); this module measures every stored *copy* (an object
held loose and in a pack counts twice, as it takes space twice) in one pass, fan-out bucket
by bucket, so each kind's ids are checked as an ordinary set at C speed and memory stays
at the ``IdSet``'s ~32 bytes an id.

Per copy: *logical* bytes (the framed form, from the zstd frame header: nothing is
decompressed), *stored* bytes (the loose file's size, or the object's share of its pack as
the pack index gives it) and *disk* bytes (for a loose file, the filesystem blocks it
takes; for a packed object, its share of the pack). What a pack holds beyond its objects
(header, checksum, index files, block rounding) is the ``overhead`` kind, so the kinds add
up to the store's totals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from ..errors import CorruptObject
from ..hashing import is_oid, oid_to_raw
from ..objects import stored_content_size
from ..repo import Repository
from .gc import _local
from .idset import IdSet

if TYPE_CHECKING:
    from ..backends.local import LocalObjectStore
    from ..backends.pack import PackReader

UNREACHABLE = "unreachable"
OVERHEAD = "overhead"
# The frame header holds the content size within its first 18 bytes (RFC 8878, 3.1.1.1).
_FRAME_HEAD = 18


@dataclass
class KindBytes:
    objects: int = 0
    logical_bytes: int = 0
    stored_bytes: int = 0
    disk_bytes: int = 0

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 0.0

    def add(self, logical: int, stored: int, disk: int) -> None:
        self.objects += 1
        self.logical_bytes += logical
        self.stored_bytes += stored
        self.disk_bytes += disk


def footprint(repo: Repository, kinds: Mapping[str, IdSet]) -> dict[str, KindBytes]:
    """Bytes per kind: the first kind in ``kinds`` (frozen id sets) that holds an id names
    it; ids in none of them are ``unreachable`` (the caller's sets cover what refs reach).
    Ends with the ``overhead`` of the packs."""
    objects = _local(repo)
    out = {name: KindBytes() for name in (*kinds, UNREACHABLE, OVERHEAD)}
    objects.reload_packs()
    packs = objects.packs()
    packed_share = 0
    for first in range(256):
        sets = [(out[name], ids.bucket(first)) for name, ids in kinds.items()]
        for raw, logical, stored, disk, packed in _bucket_copies(objects, packs, first):
            next((k for k, ids in sets if raw in ids), out[UNREACHABLE]).add(logical, stored, disk)
            packed_share += stored if packed else 0
        objects.release_memory()
    overhead = out[OVERHEAD]
    for pack in packs:
        overhead.stored_bytes += pack.stored_total
        overhead.disk_bytes += _disk(pack.pack_path) + _disk(pack.idx_path)
    overhead.stored_bytes -= packed_share
    overhead.disk_bytes -= packed_share
    return out


def _disk(path: Path) -> int:
    """Bytes of the filesystem blocks a file takes."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:  # removed by a merge or gc since we listed it
        return 0


def _bucket_copies(
    objects: LocalObjectStore, packs: list[PackReader], first: int
) -> Iterator[tuple[bytes, int, int, int, bool]]:
    """(raw id, logical, stored, disk, packed) of every copy whose id starts with byte
    ``first``. A packed copy's disk bytes are its stored share (what its pack's blocks hold
    beyond the shares is overhead)."""
    folder = objects.layout.fanout_dir(f"{first:02x}")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        names = []
    for name in names:
        if not is_oid(f"{first:02x}{name}"):
            continue  # a temp file, or one gc moved aside
        try:
            with open(folder / name, "rb") as f:
                head = f.read(_FRAME_HEAD)
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            continue  # folded into a pack or collected meanwhile
        raw = bytes((first,)) + bytes.fromhex(name)
        yield raw, _framed_size(head), st.st_size, st.st_blocks * 512, False
    for pack in packs:
        # Clamped: a damaged fan-out must not send a read past the records (fsck reports it).
        lo, hi = (min(max(x, 0), pack.count) for x in pack.bucket_range(first))
        for i in range(lo, hi):
            oid, offset, length = pack.entry_at(i)
            try:
                # The frame's own header: read_at would decompress a dictionary frame (a
                # header alone fails to) and recompress it without the dictionary.
                head = pack.frame_bytes_at(oid, offset, min(length, _FRAME_HEAD))
            except CorruptObject:  # its index places it outside the pack: fsck says so
                head = b""
            yield oid_to_raw(oid), _framed_size(head), length, length, True


def _framed_size(head: bytes) -> int:
    """From the zstd frame header; 0 for a damaged one (fsck reports it, stats go on)."""
    try:
        return stored_content_size(head)
    except zstandard.ZstdError:
        return 0
