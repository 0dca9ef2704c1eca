"""In-memory backend: a dict of stored bytes. For tests and as the simplest reference."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..errors import ObjectNotFound
from ..hashing import ObjectId
from .base import ObjectStore


class MemoryObjectStore(ObjectStore):
    def __init__(self) -> None:
        self._data: dict[ObjectId, bytes] = {}
        self._lock = threading.Lock()

    def _get_raw(self, oid: ObjectId) -> bytes:
        try:
            return self._data[oid]
        except KeyError:
            raise ObjectNotFound(oid) from None

    def _put_raw(self, oid: ObjectId, data: bytes) -> None:
        with self._lock:
            self._data.setdefault(oid, data)

    def _has(self, oid: ObjectId) -> bool:
        return oid in self._data

    def iter_ids(self) -> Iterator[ObjectId]:
        with self._lock:
            ids = list(self._data)
        return iter(ids)

    def _delete(self, oid: ObjectId) -> None:
        with self._lock:
            self._data.pop(oid, None)
