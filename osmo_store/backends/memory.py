"""In-memory backend: objects and refs in dicts. For tests and as the simplest reference."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..errors import InvalidRefName, ObjectNotFound
from ..hashing import ObjectId
from ..refs import ReflogEntry, RefStore, validate_ref_name
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


class MemoryRefStore(RefStore):
    def __init__(self) -> None:
        self._refs: dict[str, ObjectId] = {}
        self._logs: dict[str, list[ReflogEntry]] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> ObjectId | None:
        return self._refs.get(validate_ref_name(name))

    def list(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        with self._lock:
            return {k: v for k, v in sorted(self._refs.items()) if k.startswith(prefix)}

    def _swap(
        self, name: str, new: ObjectId | None, expected: object, entry: ReflogEntry | None
    ) -> None:
        with self._lock:
            current = self._refs.get(name)
            self._check(name, current, new, expected)
            for other in self._refs:
                if other != name and (other.startswith(name + "/") or name.startswith(other + "/")):
                    raise InvalidRefName(name, f"conflicts with existing ref {other}")
            if entry is not None:
                full = ReflogEntry(current, new, entry.time_ns, entry.who, entry.message)
                # Round-trip through the line format, so both backends store alike.
                parsed = ReflogEntry.from_line(full.to_line().decode()[:-1])
                self._logs.setdefault(name, []).append(parsed or full)
            if new is None:
                del self._refs[name]
            else:
                self._refs[name] = new

    def reflog(self, name: str) -> list[ReflogEntry]:
        with self._lock:
            return list(self._logs.get(validate_ref_name(name), []))

    def reflog_names(self) -> list[str]:
        with self._lock:
            return sorted(self._logs)

    def expire_reflog(self, name: str, cutoff_ns: int) -> int:
        validate_ref_name(name)
        with self._lock:
            log = self._logs.get(name, [])
            kept = [e for e in log if e.time_ns >= cutoff_ns]
            if kept:
                self._logs[name] = kept
            else:
                self._logs.pop(name, None)
            return len(log) - len(kept)
