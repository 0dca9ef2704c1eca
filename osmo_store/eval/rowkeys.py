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
    dict (repeats are rare), and while adding, an open-addressing table (4-8 bytes a row)
    to find repeats; ``seal`` drops it."""

    def __init__(self) -> None:
        self._raw = bytearray()
        self._repeat: dict[int, int] = {}  # row index -> N, for keys "hash-N"
        self._times: dict[bytes, int] = {}  # hash -> times seen, for hashes seen twice
        self._slots: array | None = array("I", bytes(4 * 1024))  # row index + 1, 0 = free

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
        return f"{hex_hash}-{repeat}"

    def _first_time(self, raw: bytes, index: int) -> bool:
        slots = self._slots
        if slots is None:
            raise RuntimeError("row keys are sealed")
        mask = len(slots) - 1
        i = int.from_bytes(raw[:4], "little") & mask  # the hash is uniform already
        while slot := slots[i]:
            at = (slot - 1) * KEY_BYTES
            if self._raw[at : at + KEY_BYTES] == raw:
                return False
            i = (i + 1) & mask
        slots[i] = index + 1
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

    def seal(self) -> None:
        """No more rows: let go of the table that finds repeats."""
        self._slots = None
        self._times = {}
