"""A Bloom filter of keys: what an eval has recorded, in a few bits per key."""

from __future__ import annotations

import blake3

_BITS_PER_KEY = 10
_HASHES = 7  # with 10 bits per key: about 1% of absent keys answer "maybe"


class KeyFilter:
    """A set of strings that never answers "no" for a key it holds, and answers "maybe" for
    about 1% of the keys it does not. 10 bits per key, however long the keys: an eval keeps
    one entry per result it records, so an exact set would grow by ~100 bytes per run.

    Past its capacity it adds a filter twice the size (the old ones are kept: a Bloom filter
    cannot be resized), so its false "maybe"s stay at a few percent however many keys come.
    Not thread-safe."""

    def __init__(self, capacity: int = 4096) -> None:
        self._filters: list[tuple[bytearray, int]] = []  # (bits, capacity)
        self._count = 0  # keys added to the last filter
        self._grow(max(64, capacity))

    def _grow(self, capacity: int) -> None:
        self._filters.append((bytearray((capacity * _BITS_PER_KEY + 7) // 8), capacity))
        self._count = 0

    @staticmethod
    def _positions(key: str, nbits: int) -> list[int]:
        digest = blake3.blake3(key.encode("utf-8")).digest(16)
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:], "little") | 1
        return [(h1 + i * h2) % nbits for i in range(_HASHES)]

    def add(self, key: str) -> None:
        bits, capacity = self._filters[-1]
        if self._count >= capacity:
            self._grow(2 * capacity)
            bits, capacity = self._filters[-1]
        for p in self._positions(key, len(bits) * 8):
            bits[p >> 3] |= 1 << (p & 7)
        self._count += 1

    def __contains__(self, key: str) -> bool:
        for bits, _ in self._filters:
            if all(bits[p >> 3] >> (p & 7) & 1 for p in self._positions(key, len(bits) * 8)):
                return True
        return False
