"""Layer 5: a compact set of object ids, for walks over millions of objects (gc, fsck).

A Python set of 64-character hex strings costs about 150 bytes an id: 150 MB at a million
objects, twice over when gc or fsck holds two such sets. An ``IdSet`` keeps raw 32-byte ids
in 256 buckets by first byte, about 32 bytes an id. Adding appends (repeats allowed) until
``freeze`` sorts each bucket and drops the repeats; after that, a look-up is a binary search
in one bucket, ``bucket`` gives one bucket as an ordinary set for checking many ids at
C speed, and ids added later (gc's second walk) go to a small ordinary set.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from ..hashing import OID_RAW_LEN, ObjectId, oid_from_raw

_N = OID_RAW_LEN


# Ids go into fixed-size chunks, never into growing buffers (256 buffers grown by
# reallocation fragment the heap until the process holds twice what they hold), and
# ``freeze`` writes each bucket's sorted ids back into its own chunks: no second copy.
_PER_CHUNK = 256
_CHUNK = _PER_CHUNK * _N


class IdSet:
    def __init__(self) -> None:
        #: per bucket, chunks filled in turn (the last one up to ``_fill``); once frozen,
        #: the bucket's ids sorted, ``_PER_CHUNK`` to a chunk (the last one maybe fewer)
        self._chunks: list[list[bytearray]] = [[] for _ in range(256)]
        self._fill = [_CHUNK] * 256
        #: once frozen: per bucket, the first id of each chunk (to find the chunk)
        self._heads: list[list[bytes]] = []
        self._late: set[bytes] = set()
        self._count = 0
        self.frozen = False

    def add(self, oid: ObjectId) -> None:
        self.add_raw(bytes.fromhex(oid))

    def add_raw(self, raw: bytes) -> None:
        if self.frozen:
            if not self._in_bucket(raw):
                self._late.add(raw)
            return
        first = raw[0]
        fill = self._fill[first]
        if fill == _CHUNK:
            self._chunks[first].append(bytearray(_CHUNK))
            fill = 0
        self._chunks[first][-1][fill : fill + _N] = raw
        self._fill[first] = fill + _N

    def freeze(self) -> IdSet:
        """Sort and de-duplicate; from now on the set answers look-ups. Returns itself."""
        if self.frozen:
            return self
        for first, chunks in enumerate(self._chunks):
            unique: set[bytes] = set()
            for k, chunk in enumerate(chunks):
                data = bytes(chunk if k < len(chunks) - 1 else chunk[: self._fill[first]])
                unique.update(data[j : j + _N] for j in range(0, len(data), _N))
            ids = sorted(unique)
            used = (len(ids) + _PER_CHUNK - 1) // _PER_CHUNK
            for k in range(used):
                part = b"".join(ids[k * _PER_CHUNK : (k + 1) * _PER_CHUNK])
                chunks[k][:] = part  # the same size, or the last one shrinks in place
            del chunks[used:]  # what repeats filled
            self._heads.append([bytes(c[:_N]) for c in chunks])
            self._count += len(ids)
        self.frozen = True
        return self

    def _in_bucket(self, raw: bytes) -> bool:
        first = raw[0]
        k = bisect.bisect_right(self._heads[first], raw) - 1
        if k < 0:
            return False
        chunk = self._chunks[first][k]
        lo, hi = 0, len(chunk) // _N
        while lo < hi:
            mid = (lo + hi) // 2
            here = chunk[mid * _N : mid * _N + _N]
            if here < raw:
                lo = mid + 1
            elif here > raw:
                hi = mid
            else:
                return True
        return False

    def contains_raw(self, raw: bytes) -> bool:
        self._check_frozen()
        return raw in self._late or self._in_bucket(raw)

    def __contains__(self, oid: object) -> bool:
        return isinstance(oid, str) and self.contains_raw(bytes.fromhex(oid))

    def _bucket_ids(self, first: int) -> list[bytes]:
        out = []
        for chunk in self._chunks[first]:
            data = bytes(chunk)
            out.extend(data[j : j + _N] for j in range(0, len(data), _N))
        return out

    def bucket(self, first_byte: int) -> set[bytes]:
        """The raw ids whose first byte is ``first_byte``, as an ordinary set (transient:
        for checking a whole fan-out range of a pack or a loose folder at once)."""
        self._check_frozen()
        out = set(self._bucket_ids(first_byte))
        out.update(r for r in self._late if r[0] == first_byte)
        return out

    def __iter__(self) -> Iterator[ObjectId]:
        """Every id, as hex (for tests and small sets: a million ids make a big list)."""
        self._check_frozen()
        for first in range(256):
            for raw in self._bucket_ids(first):
                yield oid_from_raw(raw)
        for raw in self._late:
            yield oid_from_raw(raw)

    def __len__(self) -> int:
        self._check_frozen()
        return self._count + len(self._late)

    def _check_frozen(self) -> None:
        if not self.frozen:
            raise RuntimeError("IdSet: freeze() before looking ids up")
