"""Layer 5: a compact set of object ids, for walks over millions of objects (gc, fsck).

A Python set of 64-character hex strings costs about 150 bytes an id: 150 MB at a million
objects, twice over when gc or fsck holds two such sets. An ``IdSet`` keeps raw 32-byte ids
in 256 buckets by first byte, about 32 bytes an id. Adding appends (repeats allowed) until
``freeze`` sorts each bucket and drops the repeats; after that, a look-up is a binary search
in one bucket, ``bucket`` gives one bucket as an ordinary set for checking many ids at
C speed, and ids added later (gc's second walk) go to a small ordinary set.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..hashing import OID_RAW_LEN, ObjectId, oid_from_raw

_N = OID_RAW_LEN


class IdSet:
    def __init__(self) -> None:
        self._buckets: list[bytearray | bytes] = [bytearray() for _ in range(256)]
        self._late: set[bytes] = set()
        self.frozen = False

    def add(self, oid: ObjectId) -> None:
        self.add_raw(bytes.fromhex(oid))

    def add_raw(self, raw: bytes) -> None:
        if not self.frozen:
            self._buckets[raw[0]] += raw  # type: ignore[operator]  # a bytearray until frozen
        elif not self._in_bucket(raw):
            self._late.add(raw)

    def freeze(self) -> IdSet:
        """Sort and de-duplicate; from now on the set answers look-ups. Returns itself."""
        if not self.frozen:
            for i, b in enumerate(self._buckets):
                unique = {bytes(b[j : j + _N]) for j in range(0, len(b), _N)}
                self._buckets[i] = b"".join(sorted(unique))
            self.frozen = True
        return self

    def _in_bucket(self, raw: bytes) -> bool:
        b = self._buckets[raw[0]]
        lo, hi = 0, len(b) // _N
        while lo < hi:
            mid = (lo + hi) // 2
            here = b[mid * _N : mid * _N + _N]
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

    def bucket(self, first_byte: int) -> set[bytes]:
        """The raw ids whose first byte is ``first_byte``, as an ordinary set (transient:
        for checking a whole fan-out range of a pack or a loose folder at once)."""
        self._check_frozen()
        b = self._buckets[first_byte]
        out = {b[j : j + _N] for j in range(0, len(b), _N)}
        out.update(r for r in self._late if r[0] == first_byte)
        return out  # type: ignore[return-value]  # slices of bytes are bytes

    def __iter__(self) -> Iterator[ObjectId]:
        """Every id, as hex (for tests and small sets: a million ids make a big list)."""
        self._check_frozen()
        for b in self._buckets:
            for j in range(0, len(b), _N):
                yield oid_from_raw(b[j : j + _N])
        for raw in self._late:
            yield oid_from_raw(raw)

    def __len__(self) -> int:
        self._check_frozen()
        return sum(len(b) for b in self._buckets) // _N + len(self._late)

    def _check_frozen(self) -> None:
        if not self.frozen:
            raise RuntimeError("IdSet: freeze() before looking ids up")
