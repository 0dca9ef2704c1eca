"""Layer 5: garbage collection, repacking and store statistics (local stores).

gc deletes an object only when (1) no ref, unexpired reflog entry or live writer can reach
it and (2) it is older than the grace period. Writers freshen objects they re-use (see
``LocalObjectStore._freshen``) and hold a lease while they work; gc spares everything
freshened since the oldest live lease started, and moves each doomed file aside before
looking at its mtime one last time, so a writer that touched it is never robbed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..backends.compaction import maintenance_lock
from ..backends.lease import filesystem_now_ns, live_lease_starts
from ..backends.locking import FileLock
from ..errors import CorruptObject, CorruptRef, StoreError, UsageError
from ..objects import stored_content_size
from ..repo import Repository
from . import DEFAULT_PRUNE, DEFAULT_REFLOG_EXPIRE
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
    log: Callable[[str], None] | None = None,
) -> GcReport:
    prune_s = parse_age(prune)
    expire_s = parse_age(reflog_expire)
    objects = _local(repo)
    report = GcReport(dry_run=dry_run)
    lock = _locked(repo)
    try:
        objects.restore_aside()  # what a gc killed mid-delete left moved aside
        # "Now" as the filesystem stamps files: object and lease mtimes are compared with
        # it, and they come from the filesystem's clock, whatever its granularity.
        start = filesystem_now_ns(objects.leases_dir)
        if expire_s is not None:
            cutoff_log = start - int(expire_s * NS)
            for name in repo.refs.reflog_names():
                if dry_run:
                    report.reflog_entries_expired += sum(
                        e.time_ns < cutoff_log for e in repo.refs.reflog(name)
                    )
                else:
                    report.reflog_entries_expired += repo.refs.expire_reflog(name, cutoff_log)
        # Order matters: leases are read before refs, so a writer that finished before we
        # looked at leases has already moved its ref, and one that starts later writes
        # objects newer than ``start``.
        leases = live_lease_starts(objects.leases_dir)
        # Delete only what is strictly older than ``cutoff`` (-1: never prune by age).
        cutoff = -1 if prune_s is None else min([start - int(prune_s * NS), start, *leases])
        # The ref store lists only refs that hold an id: what a damaged ref alone reaches
        # would look unreachable. A ref that cannot be parsed stops gc; it is never absent.
        damaged = repo.refs.damaged()
        if damaged:
            raise CorruptRef(damaged[0], "does not hold an object id")
        roots = ref_roots(repo.refs, None if expire_s is None else start - int(expire_s * NS))
        reachable = walk(objects, roots).reachable
        report.reachable = len(reachable)
        if cutoff >= 0:
            _sweep_loose(objects, reachable, cutoff, report, log)
            _sweep_packs(objects, reachable, cutoff, report, log)
        _remove_temp_files(objects, start - TEMP_MAX_AGE_NS, report)
        return report
    finally:
        lock.release()


def _sweep_loose(objects, reachable, cutoff, report, log) -> None:
    for oid, path in objects.iter_loose():
        if oid in reachable:
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if st.st_mtime_ns >= cutoff:
            continue
        if report.dry_run:
            report.objects_removed += 1
            report.bytes_freed += st.st_size
            continue
        if not objects.remove_loose_unless_fresh(path, cutoff):
            continue
        report.objects_removed += 1
        report.bytes_freed += st.st_size
        if log:
            log(f"removed {oid}")


def _sweep_packs(objects: LocalObjectStore, reachable, cutoff, report, log) -> None:
    objects.reload_packs()
    for pack in objects.packs():
        try:
            st = os.stat(pack.pack_path)
        except FileNotFoundError:
            continue
        if st.st_mtime_ns >= cutoff:
            continue  # recently written or re-used: every object in it is spared
        dead = [(oid, ln) for oid, _, ln in pack.entries() if oid not in reachable]
        if not dead:
            continue
        report.objects_removed += len(dead)
        report.bytes_freed += sum(ln for _, ln in dead)
        if report.dry_run:
            continue
        if not objects.rewrite_pack(pack, reachable.__contains__, stale_before=cutoff):
            # Freshened by a writer after we looked: the old pack stays, whole.
            report.objects_removed -= len(dead)
            report.bytes_freed -= sum(ln for _, ln in dead)
            continue
        report.packs_rewritten += 1
        if log:
            log(f"rewrote {pack.pack_path.name} without {len(dead)} unreachable objects")
    objects.reload_packs()


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


def repack(repo: Repository, *, all_packs: bool = False) -> RepackReport:
    """Move loose objects into one new pack (and, with ``all_packs``, fold every existing
    pack into it too). The new pack is durable and published before any loose file or old
    pack is removed, so a crash at any point loses nothing. A damaged object is never
    copied: it is listed in the report's ``damaged`` and left where it was."""
    objects = _local(repo)
    report = RepackReport()
    lock = _locked(repo)
    try:
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
