"""A dataset's row keys, kept in 16 bytes each: an eval holds every row's key (to plan, and
to check the rows it reads again as it runs), never the rows themselves."""

from __future__ import annotations

from array import array
from collections.abc import Iterator

KEY_BYTES = 16  # a row key is 32 hex digits (``dataset.KEY_LEN``), maybe with "-N"


class RowKeys:
    """Row keys in file order. ``add`` gives a row its key from the hash of its content:
    the hash itself, or ``hash-N`` for the Nth repeat of identical content, so duplicated
    rows stay distinct runs. Storage: the 16 bytes of each hash, a repeat's number in a
    dict (repeats are rare), and an open-addressing table (4-8 bytes a row) that finds a
    key's row (``index``), and so the repeats while adding."""

    def __init__(self) -> None:
        self._raw = bytearray()
        self._repeat: dict[int, int] = {}  # row index -> N, for keys "hash-N"
        self._times: dict[bytes, int] = {}  # hash -> times seen, for hashes seen twice
        self._repeat_at: dict[str, int] = {}  # "hash-N" -> row index
        self._slots = array("I", bytes(4 * 1024))  # row index + 1 (first occurrences), 0 = free

    def __len__(self) -> int:
        return len(self._raw) // KEY_BYTES

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < len(self):
            raise IndexError(index)
        key = self._raw[index * KEY_BYTES : (index + 1) * KEY_BYTES].hex()
        repeat = self._repeat.get(index)
        return key if repeat is None else f"{key}-{repeat}"

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]

    def add(self, hex_hash: str) -> str:
        """Append the row whose content hashes to ``hex_hash``; its key."""
        raw = bytes.fromhex(hex_hash)
        if len(raw) != KEY_BYTES:
            raise ValueError(f"a row hash is {KEY_BYTES} bytes, got {len(raw)}")
        index = len(self)
        if self._first_time(raw, index):
            self._raw += raw
            return hex_hash
        repeat = self._times.get(raw, 1)
        self._times[raw] = repeat + 1
        self._repeat[index] = repeat
        self._raw += raw
        key = f"{hex_hash}-{repeat}"
        self._repeat_at[key] = index
        return key

    def index(self, key: str) -> int | None:
        """The row whose key is ``key`` (None: no such row)."""
        if "-" in key:
            return self._repeat_at.get(key)
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            return None
        if len(raw) != KEY_BYTES:
            return None
        found = self._probe(raw)
        return found if isinstance(found, int) else None

    def _probe(self, raw: bytes) -> int | tuple[int]:
        """The row index of ``raw``, or (slot,): the free slot where it would go."""
        slots = self._slots
        mask = len(slots) - 1
        i = int.from_bytes(raw[:4], "little") & mask  # the hash is uniform already
        while slot := slots[i]:
            at = (slot - 1) * KEY_BYTES
            if self._raw[at : at + KEY_BYTES] == raw:
                return slot - 1
            i = (i + 1) & mask
        return (i,)

    def _first_time(self, raw: bytes, index: int) -> bool:
        found = self._probe(raw)
        if isinstance(found, int):
            return False
        slots = self._slots
        slots[found[0]] = index + 1
        if 2 * (len(self) + 1) > len(slots):
            self._rehash(2 * len(slots), extra=raw)
        return True

    def _rehash(self, size: int, extra: bytes) -> None:
        """A table twice the size (the row being added, ``extra``, is not in ``_raw`` yet)."""
        slots = array("I", bytes(4 * size))
        mask = size - 1
        n = len(self)
        for index in range(n + 1):
            raw = extra if index == n else self._raw[index * KEY_BYTES : (index + 1) * KEY_BYTES]
            if index < n and index in self._repeat:
                continue  # a repeat: its first occurrence is in the table
            i = int.from_bytes(raw[:4], "little") & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = index + 1
        self._slots = slots


class RunSet:
    """A set of runs (``<row-key>.<sample>`` names) of a dataset's rows, one bit a run;
    names of rows not in the dataset (none, for a config's own runs) in a plain set."""

    def __init__(self, keys: RowKeys, n: int) -> None:
        self._keys, self._n = keys, n
        self._bits = bytearray((len(keys) * n + 7) // 8)
        self._other: set[str] = set()
        self._count = 0

    def _bit(self, name: str) -> int | None:
        key, _, sample = name.rpartition(".")
        index = self._keys.index(key)
        if index is None or not sample.isdigit() or int(sample) >= self._n:
            return None
        return index * self._n + int(sample)

    def add(self, name: str) -> None:
        bit = self._bit(name)
        if bit is None:
            self._count += name not in self._other
            self._other.add(name)
        elif not self._bits[bit >> 3] >> (bit & 7) & 1:
            self._bits[bit >> 3] |= 1 << (bit & 7)
            self._count += 1

    def __contains__(self, name: str) -> bool:
        bit = self._bit(name)
        if bit is None:
            return name in self._other
        return bool(self._bits[bit >> 3] >> (bit & 7) & 1)

    def __len__(self) -> int:
        return self._count
