"""Layer 5: garbage collection, repacking and store statistics (local stores).

gc deletes an object only when no ref, unexpired reflog entry or live writer can reach it.
Safety beside writers comes from leases and freshening, not from age (objects_spec.md,
section 7): writers freshen what they re-use and hold a lease while they work, and gc
spares everything freshened since the oldest live lease started. Each doomed file is moved
aside and its mtime looked at once more (a writer that touched it is never robbed), and
stays aside until gc has read the refs a second time, with ref writes held back: what a
ref written meanwhile reaches is put back, the rest deleted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING

from ..backends.compaction import maintenance_lock
from ..backends.lease import filesystem_now_ns, live_lease_starts
from ..backends.local import put_back
from ..backends.locking import FileLock
from ..backends.pack import PackReader
from ..errors import CorruptObject, CorruptRef, ObjectNotFound, StoreError, UsageError
from ..hashing import ObjectId
from ..objects import ObjectType, stored_content_size
from ..refs import RefStore
from ..repo import Repository, upgrade_store_format
from . import DEFAULT_PRUNE, DEFAULT_REFLOG_EXPIRE
from .idset import IdSet
from .reachability import ref_roots, walk

if TYPE_CHECKING:
    from ..backends.local import LocalObjectStore

NS = 1_000_000_000
TEMP_MAX_AGE_NS = 24 * 3600 * NS

_UNITS = {
    "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
    "d": 86400, "day": 86400, "w": 604800, "week": 604800,
}  # fmt: skip
_AGE_RE = re.compile(r"(\d+)\s*\.?\s*([a-z]+?)s?(?:\.ago)?\Z")


def parse_age(text: str) -> float | None:
    """Seconds from ``now``, ``never``, ``30m``, ``12h``, ``14d``, ``2w`` or git's
    ``2.weeks.ago`` style. ``never`` returns None (nothing expires)."""
    t = text.strip().lower()
    if t == "now":
        return 0.0
    if t == "never":
        return None
    m = _AGE_RE.match(t)
    if not m or m.group(2) not in _UNITS:
        raise UsageError(
            f"cannot parse age {text!r}",
            hint="use now, never, or forms like 30m, 12h, 14d, 2.weeks.ago",
        )
    return float(int(m.group(1)) * _UNITS[m.group(2)])


@dataclass
class GcReport:
    objects_removed: int = 0
    bytes_freed: int = 0
    reachable: int = 0
    packs_rewritten: int = 0
    reflog_entries_expired: int = 0
    temp_files_removed: int = 0
    dry_run: bool = False
    #: refs that hold no id, which gc went ahead without (``ignore_damaged_refs``)
    damaged_refs: list[str] = field(default_factory=list)


def _local(repo: Repository) -> LocalObjectStore:
    """The store's objects, if they are kept the way gc and repack work on: in loose files
    and packs, with writer leases that make a sweep safe beside writers."""
    objects = repo.objects
    if not (objects.has_packs and objects.has_leases) or repo.layout is None:
        raise StoreError("this operation needs a local store")
    return objects  # type: ignore[return-value]  # what has packs and leases is one


def _locked(repo: Repository) -> FileLock:
    _local(repo)
    assert repo.layout is not None
    lock = maintenance_lock(repo.layout.maintenance_lock)
    lock.acquire()
    return lock


def gc(
    repo: Repository,
    *,
    prune: str = DEFAULT_PRUNE,
    reflog_expire: str = DEFAULT_REFLOG_EXPIRE,
    dry_run: bool = False,
    ignore_damaged_refs: bool = False,
    log: Callable[[str], None] | None = None,
) -> GcReport:
    prune_s = parse_age(prune)
    expire_s = parse_age(reflog_expire)
    objects = _local(repo)
    report = GcReport(dry_run=dry_run)
    lock = _locked(repo)
    try:
        objects.restore_aside()  # what a gc killed mid-delete left moved aside
        # Before anything changes: the ref store lists only refs that hold an id, so what a
        # damaged ref alone reaches would look unreachable. A ref that cannot be parsed stops
        # gc (it is never taken as absent), and not even its reflog expires: the log may be
        # all that says where it pointed.
        report.damaged_refs = repo.refs.damaged()
        if report.damaged_refs and not ignore_damaged_refs:
            raise CorruptRef(
                report.damaged_refs[0],
                "does not hold an object id; gc deleted nothing",
                hint="run: osmo fsck; to delete what only damaged refs reach, "
                "gc --ignore-damaged-refs",
            )
        # "Now" as the filesystem stamps files: object and lease mtimes are compared with
        # it, and they come from the filesystem's clock, whatever its granularity.
        start = filesystem_now_ns(objects.leases_dir)
        reflog_cutoff = None if expire_s is None else start - int(expire_s * NS)
        if reflog_cutoff is not None:
            for name in repo.refs.reflog_names():
                if dry_run:
                    report.reflog_entries_expired += sum(
                        e.time_ns < reflog_cutoff for e in repo.refs.reflog(name)
                    )
                else:
                    report.reflog_entries_expired += repo.refs.expire_reflog(name, reflog_cutoff)
        # Order matters: leases are read before refs, so a writer that finished before we
        # looked at leases has already moved its ref, and one that starts later writes
        # objects newer than ``start``.
        leases = live_lease_starts(objects.leases_dir)
        # Delete only what is strictly older than ``cutoff`` (-1: never prune by age).
        cutoff = -1 if prune_s is None else min([start - int(prune_s * NS), start, *leases])
        reachable = walk(objects, ref_roots(repo.refs, reflog_cutoff)).reachable
        report.reachable = len(reachable)
        if cutoff >= 0:
            sweep = _Sweep(objects, reachable, cutoff, report, log)
            try:
                sweep.loose()
                sweep.packs()
                if dry_run:
                    sweep.keep_what_refs_reach_now(repo.refs, reflog_cutoff)
                    sweep.count_dry_run()
                else:
                    # Ref writes wait while we read the refs again and delete: each lands
                    # before (and we keep what it reaches) or after (and its target, if
                    # it is still there, was kept with everything it reaches).
                    with repo.ref_barrier(exclusive=True):
                        sweep.keep_what_refs_reach_now(repo.refs, reflog_cutoff)
                        sweep.delete()
            except BaseException:
                sweep.put_all_back()
                raise
        _remove_temp_files(objects, start - TEMP_MAX_AGE_NS, report)
        return report
    finally:
        lock.release()


@dataclass
class _PackAside:
    reader: PackReader  # still open: it reads the files under their aside names
    files: list[Path]
    dead: int
    dead_bytes: int


class _Sweep:
    """What gc judged garbage, moved aside until the refs have been read once more.

    ``recent`` collects the unreachable objects that are too fresh to delete (written or
    re-used since the cutoff): as in git, they are kept with everything they reach, so a
    writer that re-used an object (freshening it) and names it in a ref later never finds
    the objects below it gone."""

    def __init__(self, objects: LocalObjectStore, reachable: IdSet, cutoff: int,
                 report: GcReport, log: Callable[[str], None] | None) -> None:  # fmt: skip
        self.objects = objects
        self.reachable = reachable
        self.cutoff = cutoff
        self.report = report
        self.log = log
        self.loose_aside: dict[ObjectId, tuple[Path, int]] = {}
        self.packs_aside: list[_PackAside] = []
        self.recent: list[ObjectId] = []
        #: a dry run's candidates (id, bytes): counted once the recent ones' walk is done
        self.doomed: list[tuple[ObjectId, int]] = []

    def loose(self) -> None:
        # One fan-out folder at a time, against that bucket of the marks as a plain set.
        for prefix, group in groupby(self.objects.iter_loose(), key=lambda item: item[0][:2]):
            live = self.reachable.bucket(int(prefix, 16))
            for oid, path in group:
                if bytes.fromhex(oid) not in live:
                    self._loose_garbage(oid, path)

    def _loose_garbage(self, oid: ObjectId, path: Path) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        if st.st_mtime_ns >= self.cutoff:
            self.recent.append(oid)
        elif self.report.dry_run:
            self.doomed.append((oid, st.st_size))
        elif (aside := self.objects.move_aside_unless_fresh([path], self.cutoff)) is None:
            self.recent.append(oid)  # a writer freshened it after we looked
        else:
            self.loose_aside[oid] = (aside[0], st.st_size)

    def packs(self) -> None:
        objects = self.objects
        objects.reload_packs()
        packs = objects.packs()
        live = self._live_in(packs)
        for pack in packs:
            try:
                st = os.stat(pack.pack_path)
            except FileNotFoundError:
                continue
            flags = live[pack.idx_path]
            dead = [pack.entry_at(i) for i, alive in enumerate(flags) if not alive]
            if not dead:
                continue
            if st.st_mtime_ns >= self.cutoff:
                # Recently written or re-used: every object in it is spared.
                self.recent.extend(oid for oid, _, _ in dead)
                continue
            dead_bytes = sum(ln for _, _, ln in dead)
            if self.report.dry_run:
                self.doomed.extend((oid, ln) for oid, _, ln in dead)
                continue
            files = objects.rewrite_pack_aside(pack, flags, stale_before=self.cutoff)
            if files is None:
                self.recent.extend(oid for oid, _, _ in dead)  # freshened after we looked
            elif files:
                self.packs_aside.append(_PackAside(pack, files, len(dead), dead_bytes))
            pack.release_pages()  # kept open while aside: not with every index page mapped
            objects.release_memory()
        objects.reload_packs()

    def _live_in(self, packs: list[PackReader]) -> dict[Path, bytearray]:
        """For each pack, a flag per index position: reachable or not. Bucket by bucket
        (first id byte), each bucket of the marks a plain set for that while."""
        live = {pack.idx_path: bytearray(pack.count) for pack in packs}
        for first in range(256):
            marked = self.reachable.bucket(first)
            if not marked:
                continue
            for pack in packs:
                flags = live[pack.idx_path]
                lo, hi = pack.bucket_range(first)
                for i, raw in enumerate(pack.raw_ids(lo, hi), lo):
                    if raw in marked:
                        flags[i] = 1
            if first % 16 == 15:
                self.objects.release_memory()
        return live

    def keep_what_refs_reach_now(self, refs: RefStore, reflog_cutoff: int | None) -> None:
        """Walk what the refs and reflogs name now (written while we swept) and the recent
        objects, past what the first walk marked, putting back what we moved aside."""
        new_roots = {
            oid: via for oid, via in ref_roots(refs, reflog_cutoff).items()
            if oid not in self.reachable
        }  # fmt: skip
        recent = {oid: "an object written or re-used while gc ran" for oid in self.recent}
        for roots in (new_roots, recent):
            if roots:
                # check=True: an object really missing below a new ref is not gc's to
                # report, and must not stop the walk of the others.
                walk(_Rescuer(self), roots, check=True, seen=self.reachable)
            if roots is new_roots:
                self.report.reachable = len(self.reachable)  # recent ones are not

    def restore(self, oid: ObjectId) -> bool:
        """Put ``oid`` back if we moved it aside (its whole pack, if packed)."""
        hit = self.loose_aside.pop(oid, None)
        if hit is not None:
            put_back([hit[0]])
            return True
        for i, aside in enumerate(self.packs_aside):
            if oid in aside.reader:
                put_back(aside.files)
                del self.packs_aside[i]
                self.objects.reload_packs()
                return True
        return False

    def count_dry_run(self) -> None:
        for oid, size in self.doomed:
            if oid not in self.reachable:
                self.report.objects_removed += 1
                self.report.bytes_freed += size

    def delete(self) -> None:
        report, log = self.report, self.log
        for oid, (path, size) in self.loose_aside.items():
            path.unlink(missing_ok=True)  # a reader may have restored it meanwhile
            report.objects_removed += 1
            report.bytes_freed += size
            if log:
                log(f"removed {oid}")
        for aside in self.packs_aside:
            for path in aside.files:
                path.unlink(missing_ok=True)
            report.objects_removed += aside.dead
            report.bytes_freed += aside.dead_bytes
            report.packs_rewritten += 1
            if log:
                name = aside.reader.pack_path.name
                log(f"rewrote {name} without {aside.dead} unreachable objects")
        self.loose_aside.clear()
        self.packs_aside.clear()

    def put_all_back(self) -> None:
        put_back([path for path, _ in self.loose_aside.values()])
        for aside in self.packs_aside:
            put_back(aside.files)
        self.loose_aside.clear()
        self.packs_aside.clear()


class _Rescuer:
    """The store as gc's second walk sees it: an object it moved aside is put back when
    the walk reaches it."""

    def __init__(self, sweep: _Sweep) -> None:
        self.sweep = sweep
        self.objects = sweep.objects

    def has(self, oid: ObjectId) -> bool:
        return self.objects.has(oid) or self.sweep.restore(oid)

    def release_memory(self) -> None:
        self.objects.release_memory()

    def get(self, oid: ObjectId) -> tuple[ObjectType, bytes]:
        try:
            return self.objects.get(oid)
        except ObjectNotFound:
            if not self.sweep.restore(oid):
                raise
            return self.objects.get(oid)


def _remove_temp_files(objects: LocalObjectStore, cutoff: int, report: GcReport) -> None:
    """Leftovers of killed writers: temp files and packs never indexed."""
    dirs = [objects.root / d for d in os.listdir(objects.root) if len(d) == 2]
    dirs.append(objects.pack_dir)
    for d in dirs:
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for n in names:
            stray = n.startswith("tmp-") or (
                d == objects.pack_dir and n.endswith(".pack") and n[:-5] + ".idx" not in names
            )
            if not stray:
                continue
            try:
                if os.stat(d / n).st_mtime_ns < cutoff:
                    if not report.dry_run:
                        os.unlink(d / n)
                    report.temp_files_removed += 1
            except FileNotFoundError:
                continue


@dataclass
class RepackReport:
    objects_packed: int = 0
    loose_removed: int = 0
    packs_before: int = 0
    packs_after: int = 0
    #: objects found damaged, left where they were (not packed, not removed)
    damaged: list[CorruptObject] = field(default_factory=list)
    #: the store was of format version 1 and is now version 2 (it writes version 2 packs)
    upgraded: bool = False


def repack(repo: Repository, *, all_packs: bool = False) -> RepackReport:
    """Move loose objects into one new pack (and, with ``all_packs``, fold every existing
    pack into it too). The new pack is durable and published before any loose file or old
    pack is removed, so a crash at any point loses nothing. A damaged object is never
    copied: it is listed in the report's ``damaged`` and left where it was. A store of
    format version 1 is raised to version 2 first, so the new pack is of version 2."""
    objects = _local(repo)
    report = RepackReport()
    lock = _locked(repo)
    try:
        report.upgraded = upgrade_store_format(repo)
        objects.reload_packs()
        old_packs = objects.packs() if all_packs else []
        report.packs_before = len(objects.packs())
        loose = list(objects.iter_loose())
        new_idx = objects.merge_packs(old_packs, loose, on_damaged=report.damaged.append)
        if new_idx is not None:
            report.objects_packed = next(p.count for p in objects.packs() if p.idx_path == new_idx)
            report.loose_removed = len(loose) - sum(e.where is None for e in report.damaged)
        objects.reload_packs()
        report.packs_after = len(objects.packs())
        return report
    finally:
        lock.release()


@dataclass
class StoreStats:
    loose_objects: int = 0
    loose_bytes: int = 0
    packs: int = 0
    packed_objects: int = 0
    pack_bytes: int = 0
    content_bytes: int = 0  # framed, before compression

    @property
    def objects(self) -> int:
        return self.loose_objects + self.packed_objects

    @property
    def stored_bytes(self) -> int:
        return self.loose_bytes + self.pack_bytes

    @property
    def ratio(self) -> float:
        return self.content_bytes / self.stored_bytes if self.stored_bytes else 0.0


def stats(repo: Repository) -> StoreStats:
    """Counts and sizes from pack index headers and loose file headers (no decompression)."""
    objects = _local(repo)
    s = StoreStats()
    for _, path in objects.iter_loose():
        try:
            with open(path, "rb") as f:
                head = f.read(18)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            continue
        s.loose_objects += 1
        s.loose_bytes += size
        s.content_bytes += stored_content_size(head)
    objects.reload_packs()
    for pack in objects.packs():
        s.packs += 1
        s.packed_objects += pack.count
        s.pack_bytes += pack.stored_total
        s.content_bytes += pack.framed_total
    return s
