"""The ObjectStore protocol every backend implements.

A backend implements six primitives over *stored bytes* (the zstd frame of a framed object,
see objects_spec.md): ``_get_raw``, ``_put_raw``, ``_has``, ``iter_ids``, ``_delete`` and
``close``. The public methods validate ids first, so a primitive only ever sees a
well-formed id. Everything typed (``get``, ``put``, verification) is built here once, so a new
backend is "implement six methods, run ``osmo_store.testing.contract.StoreContract``".
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import AmbiguousId, InvalidObjectId, ObjectNotFound, StoreError
from ..hashing import MIN_PREFIX_LEN, ObjectId, is_oid, is_oid_prefix, parse_oid
from ..objects import (
    MAX_OBJECT_SIZE,
    ObjectType,
    RunRecord,
    compress_framed,
    decode_object,
    decompress_framed,
    encode_object,
)


class ObjectStore(ABC):
    # Capabilities, as in zarr's Store: callers ask what a backend can do, never what class
    # it is.
    read_only: bool = False
    supports_delete: bool = True
    #: objects may live in packs (``repack`` folds objects into packs, gc rewrites them)
    has_packs: bool = False
    #: writers hold leases and freshen what they dedupe, so gc can run beside writers
    has_leases: bool = False
    #: the directory of the store on this machine's file system, for backends that have one
    local_path: Path | None = None
    #: with packs: the pack format version it writes, when not the current one (a store of
    #: format version 1 writes version 1 packs until `osmo repack` upgrades it)
    pack_version: int | None = None
    #: the most bytes an object read from this store may declare (framed) before it is
    #: decompressed: a store read from elsewhere (HTTP, S3, a store directory opened as a
    #: remote) holds its reads to ``objects.MAX_REMOTE_OBJECT``, since a few bytes of zstd
    #: there can declare gigabytes
    max_object_size: int = MAX_OBJECT_SIZE

    # --- the six primitives --------------------------------------------------------

    @abstractmethod
    def _get_raw(self, oid: ObjectId) -> bytes:
        """Stored bytes of ``oid``; raise ObjectNotFound if absent. Need not verify."""

    @abstractmethod
    def _put_raw(self, oid: ObjectId, data: bytes) -> None:
        """Store bytes already known to hash to ``oid``. Idempotent; an existing object is
        kept (and, where the backend has a notion of age, freshened)."""

    @abstractmethod
    def _has(self, oid: ObjectId) -> bool: ...

    @abstractmethod
    def iter_ids(self) -> Iterator[ObjectId]:
        """Every stored id, each once, in no particular order."""

    @abstractmethod
    def _delete(self, oid: ObjectId) -> None:
        """Remove ``oid``; absent is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Default: nothing to release."""

    # --- built on the primitives ---------------------------------------------------

    def has(self, oid: ObjectId) -> bool:
        return self._has(parse_oid(oid))

    def protect(self, oid: ObjectId) -> bool:
        """Whether ``oid`` is stored, made safe from a gc running now: a ref write calls
        this for its target before the ref names it. Backends with leases freshen the
        object under the writer's lease (objects_spec.md, section 7); the others only look."""
        return self.has(oid)

    def release_memory(self) -> None:  # noqa: B027 - optional hook
        """Let go of memory that reading leaves behind and reading again restores (the
        local store's mapped pack index pages): long walks (gc, fsck) call it now and then.
        Default: nothing to release."""

    def get_raw(self, oid: ObjectId) -> bytes:
        return self._get_raw(parse_oid(oid))

    def get(self, oid: ObjectId) -> tuple[ObjectType, bytes]:
        """Read and verify an object. Raises ObjectNotFound or CorruptObject."""
        oid = parse_oid(oid)
        return decode_object(oid, self._get_raw(oid), limit=self.max_object_size)

    def get_typed(self, oid: ObjectId, otype: ObjectType) -> bytes:
        got, content = self.get(oid)
        if got is not otype:
            raise StoreError(f"{oid} is a {got}, not a {otype}")
        return content

    def get_run(self, oid: ObjectId) -> RunRecord:
        return RunRecord.from_content(self.get_typed(oid, ObjectType.RUN))

    def put(self, otype: ObjectType, content: bytes) -> ObjectId:
        self._check_writable()
        oid, data = encode_object(ObjectType(otype), content)
        self._put_raw(oid, data)
        return oid

    def put_run(self, record: RunRecord) -> ObjectId:
        return self.put(ObjectType.RUN, record.to_content())

    def put_raw(self, oid: ObjectId, data: bytes) -> None:
        """Store bytes received from elsewhere: verified before anything becomes visible."""
        self._check_writable()
        oid = parse_oid(oid)
        decode_object(oid, data)
        self._put_raw(oid, data)

    def put_many(self, objects: Iterable[tuple[ObjectType, bytes]]) -> list[ObjectId]:
        """Bulk write. Backends with packs override this to write one pack."""
        return [self.put(t, c) for t, c in objects]

    @contextmanager
    def bulk(self) -> Iterator[StagedWriter]:
        """A writer for many objects at once (``put``/``put_raw``/``get``/``has``). What is
        written in the block is stored when it exits cleanly, and not at all if it raises;
        backends with packs override this to write one pack."""
        self._check_writable()
        writer = StagedWriter(self)
        yield writer
        writer.finish()

    # --- batch operations (sync); remote backends override them to save round trips ---

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        """The ids among ``oids`` this store does not have (in the order given)."""
        return [oid for oid in oids if not self.has(oid)]

    def get_many_raw(self, oids: Iterable[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        """Stored bytes of each id (unverified; the receiver verifies). Absent: ObjectNotFound."""
        for oid in oids:
            yield oid, self.get_raw(oid)

    def absent_prefixes(self, prefixes: list[bytes]) -> list[bool]:
        """For each raw id prefix, whether no object here has an id starting with it: then
        every id with that prefix is surely missing (sync's first, cheaper question; a
        prefix some object has proves nothing, and is asked about again by full id)."""
        return [next(self._ids_with_prefix(p.hex()), None) is None for p in prefixes]

    def resolve_raw_prefixes(self, prefixes: list[bytes]) -> list[ObjectId | None]:
        """For each raw id prefix, the one id here that starts with it (None: none, or more
        than one). What an id names is settled by its hash: a caller checks what it gets."""
        out: list[ObjectId | None] = []
        for p in prefixes:
            found = list(itertools.islice(self._ids_with_prefix(p.hex()), 2))
            out.append(found[0] if len(set(found)) == 1 else None)
        return out

    def get_many_framed(self, oids: Iterable[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        """Framed form of each id (unverified; the receiver verifies): what sync sends.
        Backends that hold framed forms (version 2 packs) override this to skip the
        recompression a stored form would cost."""
        for oid, data in self.get_many_raw(oids):
            yield oid, decompress_framed(data, oid, limit=self.max_object_size)

    def put_many_framed(
        self, items: Iterable[tuple[ObjectId, bytes]], *, verified: bool = False
    ) -> int:
        """``put_many_raw`` of objects in their framed form."""
        return self.put_many_raw(
            ((oid, compress_framed(framed)) for oid, framed in items), verified=verified
        )

    def put_many_raw(
        self, items: Iterable[tuple[ObjectId, bytes]], *, verified: bool = False
    ) -> int:
        """Store objects received from elsewhere, each verified before anything becomes
        visible; all or nothing for the batch. Returns how many were given. ``verified``:
        the caller has already checked every object against its id (a server that
        verified an upload), so this backend need not do it again."""
        n = 0
        with self.bulk() as w:
            for oid, data in items:
                if verified:
                    w.put_verified(oid, data)
                else:
                    w.put_raw(oid, data)
                n += 1
        return n

    def delete(self, oid: ObjectId) -> None:
        if self.read_only or not self.supports_delete:
            raise StoreError("this store does not support deleting objects")
        self._delete(parse_oid(oid))

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Durability barrier: after it returns, every object put so far survives a power
        loss. Called before a ref is moved to point at new objects."""

    # --- hooks; a backend overrides those that mean something to it ----------------

    def refresh(self) -> None:  # noqa: B027 - optional hook
        """See what other processes wrote since this store last looked (new packs)."""

    def after_bulk_write(self, *, more_coming: bool = False) -> None:  # noqa: B027
        """Called by whoever just wrote many objects (an eval's commit, a sync, a push the
        server took): the backend's one chance to tidy up (the local store bounds its
        number of packs here). ``more_coming``: the writer will write again soon (an eval's
        group commits), so only cheap tidying now. Never required for correctness."""

    def reclaim_written(
        self, written: Collection[ObjectId], still_used: Callable[[], Collection[ObjectId]]
    ) -> int:
        """Delete what this store object itself wrote of ``written`` (an eval's superseded
        checkpoints) and ``still_used()`` does not name, where the backend can tell that
        no other writer may rely on it; returns how many objects went. ``still_used`` is
        asked only after that check (what it names may change until then). By default
        nothing goes: gc collects them in time."""
        return 0

    def release_idle_lease(self, max_idle_s: float) -> bool:
        """Let go of the writer lease if nothing was written for ``max_idle_s`` (a server
        that runs for months must not pin gc). True if one was released."""
        return False

    def storage_problems(self, *, full: bool = False) -> tuple[list[str], list[str]]:
        """(problems, notes) about how objects are kept, beyond each object's hash (pack
        checksums, leftover temp files); for fsck. Default: nothing to check."""
        return [], []

    def resolve_prefix(self, prefix: str) -> ObjectId:
        """Expand an abbreviated id (>= 4 hex chars) to the unique full id it names."""
        prefix = prefix.lower()
        if is_oid(prefix):
            if not self.has(ObjectId(prefix)):
                raise ObjectNotFound(prefix)
            return ObjectId(prefix)
        if len(prefix) < MIN_PREFIX_LEN or not is_oid_prefix(prefix):
            raise InvalidObjectId(prefix)
        matches = sorted(set(self._ids_with_prefix(prefix)))
        if not matches:
            raise ObjectNotFound(prefix)
        if len(matches) > 1:
            raise AmbiguousId(prefix, matches)
        return matches[0]

    def _ids_with_prefix(self, prefix: str) -> Iterator[ObjectId]:
        return (oid for oid in self.iter_ids() if oid.startswith(prefix))

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError("store is read-only")

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StagedWriter:
    """Writes held back until ``finish``; reads see them meanwhile."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._pending: dict[ObjectId, bytes] = {}

    def put(self, otype: ObjectType, content: bytes) -> ObjectId:
        oid, data = encode_object(ObjectType(otype), content)
        self._pending.setdefault(oid, data)
        return oid

    def put_new(self, otype: ObjectType, content: bytes) -> ObjectId:
        """``put`` for an object that is almost surely not stored yet (see
        ``BulkWriter.put_new``); here the same as ``put``."""
        return self.put(otype, content)

    def put_raw(self, oid: ObjectId, data: bytes) -> None:
        oid = parse_oid(oid)
        decode_object(oid, data)
        self.put_verified(oid, data)

    def put_verified(self, oid: ObjectId, data: bytes, *, new: bool = False) -> None:
        self._pending.setdefault(parse_oid(oid), data)

    def get(self, oid: ObjectId) -> tuple[ObjectType, bytes]:
        data = self._pending.get(oid)
        return decode_object(oid, data) if data is not None else self.store.get(oid)

    def has(self, oid: ObjectId) -> bool:
        return oid in self._pending or self.store.has(oid)

    def wrote(self, oid: ObjectId) -> bool:
        """Whether ``oid`` is among this writer's writes (``BulkWriter.wrote``)."""
        return oid in self._pending

    def finish(self) -> None:
        for oid, data in self._pending.items():
            self.store._put_raw(oid, data)
        self._pending.clear()
