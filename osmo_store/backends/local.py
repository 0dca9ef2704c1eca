"""The local on-disk backend: loose objects in fan-out directories plus packs.

Layout under the objects directory: ``ab/cdef...`` (loose: one zstd frame each) and
``pack/pack-<checksum>.{pack,idx}``. Writes are atomic and durable: temp file in the target
directory, fsync, hard-link publish (never overwrites), and the directory fsyncs are batched
into ``flush()``, which the ref layer calls before a ref can name the new objects.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import heapq
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CorruptObject, CorruptPack, LockTimeout, ObjectNotFound
from ..hashing import ObjectId, is_oid, oid_to_raw, parse_oid
from ..objects import ObjectType, decode_object, decompress_framed, frame_object, verify_framed
from .base import ObjectStore
from .compaction import LOOSE_MAX, PackTiers, compact, fold_loose, maintenance_lock, reclaim
from .fsutil import (
    at_least_as_fresh,
    fsync_dir,
    move_aside,
    publish_no_overwrite,
    publish_or_freshen,
    remove_reading_mtimes,
    write_temp,
)
from .layout import StoreLayout
from .lease import WriterLease
from .pack import PackReader, PackWriter

_HEX = frozenset("0123456789abcdef")


def _log_damaged(error: CorruptObject) -> None:
    import logging  # here: every command loads this module, and logging costs start-up

    logging.getLogger(__name__).warning("%s: left where it is, not copied into a pack", error)


def is_fanout_name(name: str) -> bool:
    return len(name) == 2 and set(name) <= _HEX


def is_pack_index_name(name: str) -> bool:
    """Only published indexes (``pack-<64 hex>.idx``); never another writer's temp file."""
    return (
        len(name) == 73 and name.startswith("pack-") and name.endswith(".idx")
        and set(name[5:69]) <= _HEX
    )  # fmt: skip


class LocalObjectStore(ObjectStore):
    has_packs = True
    has_leases = True

    def __init__(
        self, layout: StoreLayout, *, read_only: bool = False, pack_version: int | None = None
    ) -> None:
        self.layout = layout
        #: the version of the packs this store writes; None: the current one (PACK_VERSION)
        self.pack_version = pack_version
        self.local_path = layout.root
        self.root = layout.objects
        self._root_str = str(self.root) + os.sep
        self.pack_dir = layout.packs
        self.leases_dir = layout.leases
        self.read_only = read_only
        self._tiers = PackTiers()
        self._packs: dict[str, PackReader] = {}
        #: packs whose index cannot be opened (name -> why), left out of every read
        self._unreadable: dict[str, str] = {}
        self._lock = threading.RLock()
        self._dirty_dirs: set[Path] = set()
        self._flush_lock = threading.Lock()
        self._lease: WriterLease | None = None
        self._lease_used = 0.0
        #: loose objects this store object wrote (see ``compaction.fold_loose``)
        self._loose_written = 0
        self.reload_packs()

    # --- paths and packs -----------------------------------------------------------

    def loose_path(self, oid: ObjectId) -> Path:
        return self.layout.loose(oid)

    def _loose_str(self, oid: ObjectId) -> str:
        """``loose_path`` as a string, for the hot paths (a Path costs a parse per call)."""
        return f"{self._root_str}{oid[:2]}{os.sep}{oid[2:]}"

    def reload_packs(self) -> bool:
        """Pick up packs published (or removed) by other processes since the last look.
        True if the packs changed, or one vanished while we looked (a merge or gc at work:
        look again to see what replaced it)."""
        with self._lock:
            try:
                names = {n[:-4] for n in os.listdir(self.pack_dir) if is_pack_index_name(n)}
            except FileNotFoundError:
                names = set()
            changed = False
            for gone in set(self._packs) - names:
                # Not closed here: another thread may be reading from it right now (its fd
                # must not be closed, and then reused, under it). The reader closes itself
                # when the last reference goes.
                del self._packs[gone]
                changed = True
            for gone in set(self._unreadable) - names:
                del self._unreadable[gone]
            for name in sorted(names - set(self._packs) - set(self._unreadable)):
                try:
                    self._packs[name] = PackReader(self.pack_dir / f"{name}.idx")
                except FileNotFoundError:
                    pass  # removed between listdir and open (gc, a merge)
                except CorruptPack as e:
                    # Not a reason to stop every command: the other packs and loose objects
                    # read as ever, fsck names this one, and a miss hints at it.
                    self._unreadable[name] = e.reason
                    continue
                changed = True
            return changed

    def refresh(self) -> None:
        self.reload_packs()

    def after_bulk_write(self, *, more_coming: bool = False) -> None:
        compact(self, self._tiers, bound=not more_coming)

    def reclaim_written(
        self, written: Collection[ObjectId], still_used: Callable[[], Collection[ObjectId]]
    ) -> int:
        return reclaim(self, self._tiers, written, still_used) if written else 0

    def packs(self) -> list[PackReader]:
        with self._lock:
            return list(self._packs.values())

    def _pack_with(self, oid: ObjectId) -> PackReader | None:
        raw = oid_to_raw(oid)
        for pack in self.packs():
            if pack.contains_raw(raw):
                return pack
        return None

    def _find_pack(self, oid: ObjectId) -> PackReader | None:
        pack = self._pack_with(oid)
        if pack is None:
            self.reload_packs()
            pack = self._pack_with(oid)
        return pack

    # --- primitives ------------------------------------------------------------------

    def _get_raw(self, oid: ObjectId) -> bytes:
        return self._get_raw_located(oid)[0]

    def _read_loose(self, oid: ObjectId) -> bytes | None:
        try:
            with open(self._loose_str(oid), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _read_packed(self, oid: ObjectId, framed: bool = False) -> tuple[bytes, str] | None:
        """From the packs already loaded (the caller reloads them before a second try): the
        stored form, or with ``framed`` the framed form (not yet verified)."""
        pack = self._pack_with(oid)
        if pack is None:
            return None
        try:
            limit = self.max_object_size
            data = pack.read_framed(oid, limit) if framed else pack.read(oid, limit)
        except (FileNotFoundError, ValueError):
            return None  # rewritten under us by gc or repack: the caller looks again
        return data, pack.pack_path.name

    def _get_raw_located(self, oid: ObjectId, framed: bool = False) -> tuple[bytes, str | None]:
        """The stored form and where it lies (None: loose). With ``framed``, a packed copy
        comes in its framed form (a version 2 pack's frames need its dictionary): only a
        loose copy (``where`` None) is still compressed."""
        # Packs first: looking there costs no system call, and evals and sync write packs.
        hit = self._read_packed(oid, framed)
        if hit is not None:
            return hit
        data = self._read_loose(oid)
        if data is not None:
            return data, None
        # A repack or merge may have moved it into a pack we have not loaded yet; look
        # again while the packs keep changing under us (a few times at most). The first
        # look is made even if this reload changed nothing: another thread of this process
        # may have loaded the new pack since our first look at the packs.
        for _ in range(_RELOADS):
            changed = self.reload_packs()
            hit = self._read_packed(oid, framed)
            if hit is not None:
                return hit
            if not changed:
                break
            data = self._read_loose(oid)
            if data is not None:
                return data, None
        # Last resort: a gc killed mid-delete may have left it aside (gc-<name>).
        if self._restore_aside_unless_gc_runs():
            return self._get_raw_located(oid, framed)
        missing = ObjectNotFound(oid)
        if self._unreadable:
            name = min(self._unreadable)
            missing.hint = (
                f"it may be in a pack this osmo cannot read ({name}.idx: "
                f"{self._unreadable[name]}): run: osmo fsck"
            )
        raise missing

    def get(self, oid: ObjectId) -> tuple[ObjectType, bytes]:
        oid = parse_oid(oid)
        try:
            data, where = self._get_raw_located(oid, framed=True)
            if where is None:
                return decode_object(oid, data, limit=self.max_object_size)
            return verify_framed(oid, data, where)
        except CorruptObject as damaged:
            # A damaged copy (or a pack index that points at the wrong bytes) must not
            # hide a sound copy in the other place.
            if damaged.where is None:
                self.reload_packs()
                hit = self._read_packed(oid, framed=True)
                if hit is None:
                    raise
                return verify_framed(oid, hit[0], hit[1])
            other = self._read_loose(oid)
            if other is None:
                raise
            return decode_object(oid, other, None, self.max_object_size)

    def _has(self, oid: ObjectId) -> bool:
        return (
            self._pack_with(oid) is not None
            or os.path.exists(self._loose_str(oid))
            or self._find_pack(oid) is not None  # published since we last looked
        )

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        # One look at the pack folder, and one listing per fan-out folder, for the whole
        # batch: not a stat and a pack-folder listing per absent id.
        oids = [parse_oid(o) for o in oids]
        self.reload_packs()
        packs = self.packs()
        loose: dict[str, set[str]] = {}
        for prefix in {o[:2] for o in oids}:
            try:
                loose[prefix] = set(os.listdir(self.layout.fanout_dir(prefix)))
            except FileNotFoundError:
                loose[prefix] = set()
        return [o for o in oids if o[2:] not in loose[o[:2]] and not any(o in p for p in packs)]

    def absent_prefixes(self, prefixes: list[bytes]) -> list[bool]:
        return [not ids for ids in self._ids_with_raw_prefixes(prefixes, 1)]

    def resolve_raw_prefixes(self, prefixes: list[bytes]) -> list[ObjectId | None]:
        return [
            ObjectId(ids.pop().hex()) if len(ids) == 1 else None
            for ids in self._ids_with_raw_prefixes(prefixes, 2)
        ]

    def _ids_with_raw_prefixes(self, prefixes: list[bytes], limit: int) -> list[set[bytes]]:
        """For each raw prefix, up to ``limit`` distinct raw ids here that start with it (a
        copy both loose and packed counts once). As ``missing``: one look at the pack
        folder and one listing per fan-out folder for the whole batch."""
        self.reload_packs()
        packs = self.packs()
        loose: dict[int, list[str]] = {}
        for first in {p[0] for p in prefixes}:
            names = _list(self.layout.fanout_dir(f"{first:02x}"))
            loose[first] = sorted(n for n in names if is_oid(f"{first:02x}{n}"))
        out = []
        for p in prefixes:
            names, rest = loose[p[0]], p[1:].hex()
            i = bisect.bisect_left(names, rest)
            found: set[bytes] = set()
            while i < len(names) and len(found) < limit and names[i].startswith(rest):
                found.add(bytes((p[0],)) + bytes.fromhex(names[i]))
                i += 1
            for pack in packs:
                if len(found) >= limit:
                    break
                found.update(pack.raw_ids_with_prefix(p, limit))
            out.append(found)
        return out

    def _put_raw(self, oid: ObjectId, data: bytes) -> None:
        if self._freshen(oid):
            return
        path = self.loose_path(oid)
        directory = path.parent
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            self._mark_dirty(self.root)
        tmp = write_temp(directory, data)
        if publish_or_freshen(tmp, path):
            self._mark_dirty(directory)
        self._loose_written += 1
        if self._loose_written % LOOSE_MAX == 0:  # a long-lived writer (a server) folds too
            self._fold_loose()

    def _fold_loose(self) -> None:
        try:
            fold_loose(self)
        except OSError as e:  # never needed for correctness: the objects stay loose
            import logging  # here: every command loads this module, and logging costs

            logging.getLogger(__name__).warning("loose objects not folded into a pack: %s", e)

    def iter_ids(self) -> Iterator[ObjectId]:
        loose: set[str] = set()
        for oid, _ in self.iter_loose():
            loose.add(oid)
            yield oid
        self.reload_packs()
        # Each pack lists its ids sorted: merged, an object held by several packs comes up
        # as repeats in a row. (A set of every id would cost ~150 bytes an id: fsck's walk
        # over a million objects must not hold one.)
        last = None
        for oid in heapq.merge(*(pack.ids() for pack in self.packs())):
            if oid != last and oid not in loose:
                yield oid
            last = oid

    def _delete(self, oid: ObjectId) -> None:
        self.loose_path(oid).unlink(missing_ok=True)
        self.reload_packs()
        for pack in self.packs():
            if oid in pack:
                self.rewrite_pack(pack, lambda o: o != oid)

    def close(self) -> None:
        self.flush()
        if self._loose_written and not self.read_only:
            self._loose_written = 0
            self._fold_loose()
        with self._lock:
            for pack in self._packs.values():
                pack.close()
            self._packs.clear()
            if self._lease is not None:
                self._lease.release()
                self._lease = None

    def storage_problems(self, *, full: bool = False) -> tuple[list[str], list[str]]:
        """Every pack index (checksum, order, fan-out, records inside the pack), pack
        checksums (``full``), packs never indexed, and (``full``) temp files a killed writer
        left."""
        problems: list[str] = []
        notes: list[str] = []
        self.reload_packs()
        with self._lock:
            unreadable = sorted(self._unreadable.items())
        problems.extend(f"{name}.idx: cannot be read: {why}" for name, why in unreadable)
        for pack in self.packs():
            problems.extend(pack.verify_index())
            if full:
                problems.extend(pack.verify_checksums())
        names = set(_list(self.pack_dir))
        for name in sorted(names):
            if name.endswith(".pack") and name[:-5] + ".idx" not in names:
                notes.append(f"pack without index (unpublished or interrupted): {name}")
        if full:
            for d in sorted(_list(self.root)):
                for n in _list(self.root / d):
                    if n.startswith(("tmp-", "gc-")):
                        notes.append(f"leftover temporary file: {d}/{n}")
        return problems, notes

    # --- durability, freshness, leases ---------------------------------------------

    def _mark_dirty(self, directory: Path) -> None:
        with self._lock:
            self._dirty_dirs.add(directory)

    def flush(self) -> None:
        # One flush at a time: a flush that finds nothing left to do must still wait for
        # the one that took the dirty set to finish its fsyncs, or it is no barrier.
        with self._flush_lock:
            with self._lock:
                dirty, self._dirty_dirs = self._dirty_dirs, set()
            # Fan-out dirs before the objects dir that names new fan-out dirs.
            for d in sorted(dirty, key=lambda p: len(p.parts), reverse=True):
                fsync_dir(d)

    def lease(self) -> WriterLease:
        """This store's writer lease, taken on the first write and held until close()."""
        self._check_writable()
        with self._lock:
            if self._lease is None:
                self._lease = WriterLease(self.leases_dir)
            self._lease_used = time.monotonic()
            return self._lease

    def release_idle_lease(self, max_idle_s: float) -> bool:
        """Drop the writer lease if nothing was written for ``max_idle_s``: a long-lived
        process (``osmo serve``) must not keep gc from collecting everything newer than
        its first write. The next write takes a new lease."""
        with self._lock:
            if self._lease is None or time.monotonic() - self._lease_used < max_idle_s:
                return False
            self._lease.release()
            self._lease = None
            return True

    def _freshen(self, oid: ObjectId) -> bool:
        """If ``oid`` is stored, make sure gc sees it as recently used and return True.

        An object that already exists is not rewritten, but its file's mtime is moved past
        our lease start: gc spares everything at least as new as the oldest live lease,
        and moves files aside before deleting them, then looks at the mtime again, so
        either it sees our touch or our touch fails (ENOENT) and we write a new copy.

        Only the packs already loaded are searched: missing a pack another process just
        published merely stores a duplicate, while listing the pack folder for every new
        object would be the hot path of a bulk write."""
        since = self.lease().start_ns
        pack = self._pack_with(oid)
        if pack is not None and _touch(str(pack.pack_path), since):
            return True
        return _touch(self._loose_str(oid), since)

    def release_memory(self) -> None:
        for pack in self.packs():
            pack.release_pages()

    def protect(self, oid: ObjectId) -> bool:
        # Freshening is what makes it safe: a gc that has not moved the object aside yet
        # sees the new mtime when it looks again, and one that has makes the touch fail.
        # Looked for again after the reload even if it changed nothing: another thread of
        # this process may have loaded the pack it was folded into since our first look.
        oid = parse_oid(oid)
        if self._freshen(oid):
            return True
        self.reload_packs()
        return self._freshen(oid)

    # --- bulk writes -----------------------------------------------------------------

    def put_many(self, objects: Iterable[tuple[ObjectType, bytes]]) -> list[ObjectId]:
        with self.bulk() as w:
            return [w.put(t, c) for t, c in objects]

    def put_many_raw(
        self, items: Iterable[tuple[ObjectId, bytes]], *, verified: bool = False
    ) -> int:
        """Objects received by sync, into one pack. The sender asked which ids are missing
        just before, so they are not checked for presence one by one: a rare duplicate
        lands in the new pack, whose fresh mtime keeps it as safe from gc as a touch."""
        n = 0
        with self.bulk() as w:
            for oid, data in items:
                oid = parse_oid(oid)
                if verified:
                    w._writer.add(oid, data)
                else:
                    framed = decompress_framed(data, oid)
                    verify_framed(oid, framed)
                    w._writer.add_framed(oid, framed)
                n += 1
        return n

    def get_many_framed(self, oids: Iterable[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        # A version 2 pack's frames decompress with its dictionary straight to the framed
        # form; asking for the stored form would recompress each without it (~5x the CPU).
        for oid in oids:
            oid = parse_oid(oid)
            data, where = self._get_raw_located(oid, framed=True)
            if where is None:
                data = decompress_framed(data, oid, limit=self.max_object_size)
            yield oid, data

    def put_many_framed(
        self, items: Iterable[tuple[ObjectId, bytes]], *, verified: bool = False
    ) -> int:
        """``put_many_raw`` of framed forms: into the new pack as they are."""
        n = 0
        with self.bulk() as w:
            for oid, framed in items:
                oid = parse_oid(oid)
                if not verified:
                    verify_framed(oid, framed)
                w._writer.add_framed(oid, framed)
                n += 1
        return n

    @contextmanager
    def bulk(self) -> Iterator[BulkWriter]:
        """Collect writes into one pack, published when the block exits without error."""
        self._check_writable()
        writer = BulkWriter(self)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.finish()

    def _write_pack(
        self, objects: Iterable[tuple[ObjectId, bytes]], *, in_id_order: bool = False
    ) -> Path | None:
        """One new published pack of the given objects in framed form, verified (None if
        there were none). Objects given in increasing id order are indexed as they come
        (``PackWriter``)."""
        writer = PackWriter(self.pack_dir, in_id_order=in_id_order, version=self.pack_version)
        try:
            for oid, framed in objects:
                writer.add_framed(oid, framed)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    def rewrite_pack(
        self, pack: PackReader, keep: Callable[[ObjectId], bool], *, stale_before: int | None = None
    ) -> bool:
        """Replace ``pack`` by a new one holding only the objects ``keep`` accepts. The new
        pack is published before the old one goes. With ``stale_before`` (reclaiming), the
        old pack is kept after all if a writer freshened it meanwhile; returns whether it
        went."""
        live = bytes(keep(oid) for oid in pack.ids())
        aside = self.rewrite_pack_aside(pack, live, stale_before=stale_before)
        for path in aside or ():
            path.unlink(missing_ok=True)
        return aside is not None

    def rewrite_pack_aside(
        self, pack: PackReader, live: bytes | bytearray, *, stale_before: int | None
    ) -> list[Path] | None:
        """Write a new pack of the objects of ``pack`` whose index position is set in
        ``live``, publish it, and move the old pack's files aside (``gc-`` names) for the
        caller to delete or put back (gc decides once it has read the refs again). With
        ``stale_before``: None if a writer freshened the old pack, which then stays whole."""
        kept = (
            (o, pack.read_framed_at(o, off, ln))
            for i, (o, off, ln) in enumerate(pack.entries())
            if live[i]
        )
        new_idx = self._write_pack(kept, in_id_order=True)
        if new_idx == pack.idx_path:
            return []  # nothing left out: the same pack
        aside = self.move_aside_unless_fresh([pack.idx_path, pack.pack_path], stale_before)
        if aside is not None:
            self._tiers.replace(pack.idx_path, new_idx)  # one of ours stays ours
        self.reload_packs()
        return aside

    def merge_packs(
        self,
        packs: list[PackReader],
        loose: list[tuple[ObjectId, Path]] = (),
        *,
        on_damaged: Callable[[CorruptObject], None] = _log_damaged,
    ) -> Path | None:
        """Fold packs (and loose objects) into one new pack; only once it is published are
        the old packs and loose files removed, so a crash at any point loses nothing.

        Every object is verified on the way (decompressed and hashed): damaged bytes copied
        into a new pack would get a sound pack checksum there, and removing the old copy
        would lose what is left of the object (the bytes a damaged index no longer finds).
        A damaged object goes to ``on_damaged`` and stays where it was (its loose file, or
        its whole old pack, which fsck goes on reporting); the sound rest is folded."""
        kept: set[Path] = set()
        # A store directory used as a remote is compacted by whoever pushes into it: its
        # bytes are read as any others from there are (``max_object_size``).
        limit = self.max_object_size

        def sound(oid: ObjectId, file: Path, read: Callable[[], bytes]) -> bytes | None:
            """The framed form, verified; None (reported) if damaged."""
            packed = file.name if file.suffix == ".pack" else None
            try:
                framed = read() if packed else decompress_framed(read(), oid, limit=limit)
                verify_framed(oid, framed, packed)
            except CorruptObject as e:
                on_damaged(e)
                kept.add(file)
                return None
            return framed

        def read_loose() -> Iterator[tuple[ObjectId, PackReader | None, int, int]]:
            for oid, _ in sorted(loose):
                yield oid, None, 0, 0

        def read_pack(pack: PackReader) -> Iterator[tuple[ObjectId, PackReader | None, int, int]]:
            for oid, off, ln in pack.entries():
                yield oid, pack, off, ln

        paths = dict(loose)
        packed_loose: list[Path] = []  # loose files read into the new pack

        def objects() -> Iterator[tuple[ObjectId, bytes]]:
            # Every source is in id order: merged, they are too (the writer drops repeats).
            for oid, pack, off, ln in heapq.merge(
                read_loose(), *map(read_pack, packs), key=lambda item: item[0]
            ):
                if pack is not None:
                    read = functools.partial(pack.read_framed_at, oid, off, ln, limit)
                    if (data := sound(oid, pack.pack_path, read)) is not None:
                        yield oid, data
                    continue
                path = paths[oid]
                with contextlib.suppress(FileNotFoundError):  # gone meanwhile (gc)
                    if (data := sound(oid, path, path.read_bytes)) is not None:
                        packed_loose.append(path)
                        yield oid, data

        new_idx = self._write_pack(objects(), in_id_order=True)
        # Only loose files whose object is in the new pack: one gone when we read it (gc)
        # may have been written again since by a writer that found it missing.
        replaced = packed_loose if new_idx is not None else []
        for pack in packs:
            if pack.idx_path != new_idx and pack.pack_path not in kept:
                pack.idx_path.unlink(missing_ok=True)  # first: no new reader opens the pack
                replaced.append(pack.pack_path)
        freshest = remove_reading_mtimes(replaced)
        if new_idx is not None:
            # A writer whose lease started after the new pack was written may have found an
            # object in a copy removed here, and freshened that copy: the object lives on
            # only in the new pack, which must look as fresh to gc as that touch. Only
            # then: a new pack touched for nothing looks freshened to the recorder's
            # reclaim of the same clock tick, which then leaves its superseded nodes.
            at_least_as_fresh(new_idx.with_suffix(".pack"), freshest)
        self.reload_packs()
        return new_idx

    @staticmethod
    def move_aside_unless_fresh(paths: list[Path], stale_before: int | None) -> list[Path] | None:
        """The gc side of the freshen protocol. Move the files aside (``gc-<name>``; for a
        pack, its index first, so nothing new can find the pack), then look at the mtime
        of the last one (the object file, or the pack) once more: it is the same inode, so
        a writer's touch that landed before the move shows, and everything is put back
        (None). A writer touching after the move gets ENOENT and publishes a new copy,
        which the caller's deletion of the aside names does not touch. A gc killed in
        between leaves ``gc-`` files that ``restore_aside`` puts back. Returns the aside
        names, for the caller to delete or ``put_back``."""
        moved: list[tuple[Path, Path]] = []
        for path in paths:
            aside = move_aside(path)
            if aside is not None:
                moved.append((path, aside))
        if not moved or moved[-1][0] != paths[-1]:
            put_back([aside for _, aside in moved])
            return None
        if stale_before is not None and os.stat(moved[-1][1]).st_mtime_ns >= stale_before:
            put_back([aside for _, aside in moved])
            return None
        return [aside for _, aside in moved]

    def _restore_aside_unless_gc_runs(self) -> int:
        """``restore_aside`` for a reader that missed an object, unless a gc is running: a
        live gc keeps what it judged garbage aside until it has looked at the refs once
        more, and puts back itself what they reach. Only a dead gc's leftovers are ours."""
        lock = maintenance_lock(self.layout.maintenance_lock)
        try:
            lock.acquire(blocking=False)
        except LockTimeout:
            return 0
        try:
            return self.restore_aside()
        finally:
            lock.release()

    def restore_aside(self) -> int:
        """Put back files a killed gc left moved aside (restoring is always safe: at worst
        garbage lives until the next gc). Returns how many were restored."""
        restored = 0
        dirs = [self.root / d for d in _list(self.root) if is_fanout_name(d)]
        for d in [*dirs, self.pack_dir]:
            for name in sorted(_list(d), key=lambda n: n.endswith(".idx")):  # packs first
                if name.startswith("gc-"):
                    try:
                        restored += publish_no_overwrite(d / name, d / name[3:])
                    except FileNotFoundError:
                        continue  # gc finished with it meanwhile
        if restored:
            self.reload_packs()
        return restored

    # --- enumeration for maintenance ----------------------------------------------

    def iter_loose(self) -> Iterator[tuple[ObjectId, Path]]:
        try:
            fanout = sorted(n for n in os.listdir(self.root) if is_fanout_name(n))
        except FileNotFoundError:
            return
        for d in fanout:
            try:
                names = os.listdir(self.root / d)
            except FileNotFoundError:
                continue
            for n in names:
                oid = d + n
                if is_oid(oid):
                    yield ObjectId(oid), self.root / d / n

    def _ids_with_prefix(self, prefix: str) -> Iterator[ObjectId]:
        try:
            names = os.listdir(self.layout.fanout_dir(prefix))
        except FileNotFoundError:
            names = []
        for n in names:
            oid = prefix[:2] + n
            if is_oid(oid) and oid.startswith(prefix):
                yield ObjectId(oid)
        self.reload_packs()
        for pack in self.packs():
            yield from pack.ids_with_prefix(prefix)


def _list(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


_RELOADS = 8  # looks at the pack folder for a read that finds nothing, while it changes


def _touch(path: str, since_ns: int) -> bool:
    """Move the file's mtime to now if it is older than ``since_ns``; False if it is gone."""
    try:
        if os.stat(path).st_mtime_ns < since_ns:
            os.utime(path)
        return True
    except FileNotFoundError:
        return False


def put_back(asides: list[Path]) -> None:
    """Undo ``move_aside_unless_fresh``: last moved first (a pack before its index)."""
    for aside in reversed(asides):
        with contextlib.suppress(FileNotFoundError):  # a reader restored it already
            publish_no_overwrite(aside, aside.with_name(aside.name[3:]))


class BulkWriter:
    """Object writes that go into one new pack; reads fall through to the store."""

    def __init__(self, store: LocalObjectStore) -> None:
        self.store = store
        # The lease first: gc spares what is newer than a live lease's start, and objects
        # written without a look for a stored copy (put_new) never take it on the way.
        store.lease()
        self._writer = PackWriter(store.pack_dir, version=store.pack_version)
        self.published: Path | None = None  # the new pack's index, once finished

    def put(self, otype: ObjectType, content: bytes) -> ObjectId:
        oid, framed = frame_object(ObjectType(otype), content)
        if oid not in self._writer and not self.store._freshen(oid):
            self._writer.add_framed(oid, framed)
        return oid

    def put_new(self, otype: ObjectType, content: bytes) -> ObjectId:
        """Write an object that is almost surely not stored yet (it embeds a timestamp, or
        is a changed tree node) without looking for a stored copy first. A rare duplicate
        is harmless: it lands in the new pack, whose fresh mtime keeps it as safe from gc
        as a touch of the old copy would."""
        oid, framed = frame_object(ObjectType(otype), content)
        self._writer.add_framed(oid, framed)
        return oid

    def put_raw(self, oid: ObjectId, data: bytes) -> None:
        """Bytes received from elsewhere: verified before they go into the pack."""
        oid = parse_oid(oid)
        framed = decompress_framed(data, oid)
        verify_framed(oid, framed)
        if oid not in self._writer and not self.store._freshen(oid):
            self._writer.add_framed(oid, framed)

    def put_verified(self, oid: ObjectId, data: bytes, *, new: bool = False) -> None:
        """Bytes the caller has verified against ``oid`` already (or encoded itself). With
        ``new``, no search for a stored copy first (see ``put_new``)."""
        if new:
            self._writer.add(parse_oid(oid), data)
        else:
            self._add(parse_oid(oid), data)

    def _add(self, oid: ObjectId, data: bytes) -> None:
        if oid not in self._writer and not self.store._freshen(oid):
            self._writer.add(oid, data)

    def get(self, oid: ObjectId) -> tuple[ObjectType, bytes]:
        if oid in self._writer:
            return verify_framed(oid, self._writer.read_framed(oid))
        return self.store.get(oid)

    def has(self, oid: ObjectId) -> bool:
        return oid in self._writer or self.store.has(oid)

    def wrote(self, oid: ObjectId) -> bool:
        """Whether ``oid`` goes into this writer's pack (not found stored already)."""
        return oid in self._writer

    def finish(self) -> None:
        self.published = self._writer.finish()
        if self.published is not None:
            self.store._tiers.add(self.published)
        self.store.reload_packs()

    def abort(self) -> None:
        self._writer.abort()
