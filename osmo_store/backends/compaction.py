"""Pack compaction of the local store: how many packs it keeps, and which it folds.

The store runs this itself after a bulk write (``LocalObjectStore.after_bulk_write``) and
after single writes (``LocalObjectStore.close``, and every ``LOOSE_MAX`` loose writes of a
long-lived store object): compaction's rules live here and nowhere else. Three rules:

- *tiers*: the packs this store object wrote, oldest first, each with a level. A new pack has
  level 0; whenever the newest ``FANOUT`` packs share a level they are folded into one pack of
  the next level (a base-F counter). A writer that commits c times keeps at most (F - 1) packs
  per level, log_F(c) levels, and rewrites each object at most log_F(c) times (with F = 8: 3
  times in 500 commits), so an eval's many small commits do not become many small packs.
- *bound*: past ``MAX_PACKS`` packs in the store (many evals, pushes received, pulls), the
  smaller half is folded into one pack; not between an eval's commits, only at its end.
- *loose*: after a bulk write (not between an eval's commits) every loose object is folded
  into a pack, with the small packs of the bound, or else the smallest pack if it is below
  ``SMALL_PACK`` (a pack of their own costs two more files); a store object that wrote
  loose objects itself folds them once the store holds ``LOOSE_MAX`` (``fold_loose``).
  Small objects (a label's run record, ``hash-object -w``, an eval's first empty tree) do
  not stay loose, where a filesystem block costs 10x their size.

All skip, rather than wait, when gc or repack holds the maintenance lock: compaction is never
needed for correctness, and a writer must never wait for gc.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LockTimeout
from ..hashing import ObjectId
from .lease import filesystem_now_ns, live_lease_starts
from .locking import FileLock

if TYPE_CHECKING:
    from .local import LocalObjectStore
    from .pack import PackReader

FANOUT = 8
MAX_PACKS = 32
#: loose objects a store may hold before a writer folds them into a pack
LOOSE_MAX = 32
#: loose objects fold in with the store's smallest pack only if it is this small: folding a
#: few objects must not rewrite a big pack
SMALL_PACK = 4 * 2**20
# gc and repack wait this long for each other; compaction never waits
MAINTENANCE_LOCK_TIMEOUT = 60.0


class PackTiers:
    """The packs one store object wrote, with their merge levels (see the module doc)."""

    def __init__(self) -> None:
        self._packs: list[tuple[Path, int]] = []  # (index path, level), oldest first

    def add(self, idx_path: Path) -> None:
        self._packs.append((idx_path, 0))

    def __contains__(self, idx_path: Path) -> bool:
        return any(idx == idx_path for idx, _ in self._packs)

    def replace(self, old: Path, new: Path | None) -> None:
        """A pack of ours rewritten (``new``, at the same level) or emptied (None)."""
        for k, (idx, level) in enumerate(self._packs):
            if idx == old:
                if new is None:
                    del self._packs[k]
                else:
                    self._packs[k] = (new, level)
                return

    def mergeable(self) -> bool:
        tail = self._packs[-FANOUT:]
        return len(tail) == FANOUT and all(level == tail[0][1] for _, level in tail)

    def merge(self, store: LocalObjectStore) -> None:
        """Fold while the newest packs share a level. The caller holds the maintenance lock."""
        while self.mergeable():
            level = self._packs[-1][1]
            merge = [idx for idx, _ in self._packs[-FANOUT:]]
            del self._packs[-FANOUT:]
            by_idx = {p.idx_path: p for p in store.packs()}
            readers = [by_idx[idx] for idx in merge if idx in by_idx]
            if len(readers) == 1:  # the others were folded by a repack meanwhile
                self._packs.append((readers[0].idx_path, level + 1))
            elif len(readers) > 1:
                new_idx = store.merge_packs(readers)
                if new_idx is not None:
                    self._packs.append((new_idx, level + 1))


def compact(
    store: LocalObjectStore, tiers: PackTiers, *, bound: bool = True, max_packs: int = MAX_PACKS
) -> bool:
    """Apply the tiers rule, and the bound and the loose rule unless ``bound`` is false;
    False if there was nothing to do or gc/repack was at work. A writer between two of its
    commits (an eval recording answers) passes ``bound=False``: folding half of a big
    store's packs could hold up its next commit for long, and the rest is done when it is."""
    over = bound and len(store.packs()) > max_packs
    loose = list(store.iter_loose()) if bound else []
    if not tiers.mergeable() and not over and not loose:
        return False
    lock = _maintenance_lock_if_free(store)
    if lock is None:
        return False
    try:
        tiers.merge(store)
        if not bound:
            return True
        store.reload_packs()
        packs = sorted(store.packs(), key=lambda p: p.stored_total)
        small = packs[: len(packs) - max_packs // 2] if len(packs) > max_packs else []
        if len(small) >= 2:
            store.merge_packs(small, loose)
        elif loose:
            store.merge_packs(_smallest(packs), loose)
        return True
    finally:
        lock.release()


def fold_loose(store: LocalObjectStore, *, at_least: int = LOOSE_MAX) -> bool:
    """The loose rule for writers that write no packs (single CLI writes, a label, a
    server's single uploads): once the store holds ``at_least`` loose objects, fold them
    all into one pack. A loose file costs a filesystem block (4 KiB for a 300-byte object)
    while a pack of one object costs more than that, so a few stay loose until the next
    bulk write or this bound folds them. False if below the bound or gc/repack is at work."""
    loose = list(store.iter_loose())
    if len(loose) < at_least:
        return False
    lock = _maintenance_lock_if_free(store)
    if lock is None:
        return False
    try:
        store.reload_packs()
        store.merge_packs(_smallest(sorted(store.packs(), key=lambda p: p.stored_total)), loose)
        return True
    finally:
        lock.release()


def _smallest(packs: list[PackReader]) -> list[PackReader]:
    """The pack loose objects fold in with (from packs sorted by size): the smallest, if it
    is small; else none, and they make a pack of their own."""
    return packs[:1] if packs and packs[0].stored_total <= SMALL_PACK else []


def reclaim(
    store: LocalObjectStore,
    tiers: PackTiers,
    written: Collection[ObjectId],
    still_used: Callable[[], Collection[ObjectId]],
) -> int:
    """Rewrite this store object's own packs without what it wrote that nothing uses any
    more (``LocalObjectStore.reclaim_written``). Safe as gc is, and for the same reasons,
    in the same order: leases are read before what is still used (refs), so a writer that
    ended before has moved its refs, and one that starts later and finds one of these
    objects stored freshens our pack past ``start``, and the old pack then stays whole.
    A live writer that started earlier may have found one of them without touching our
    pack (it was already newer than its lease): then nothing is reclaimed, gc will."""
    lock = _maintenance_lock_if_free(store)
    if lock is None:
        return 0  # gc or repack at work: they collect it later
    try:
        start = filesystem_now_ns(store.leases_dir)
        if live_lease_starts(store.leases_dir, exclude=store.lease().path):
            return 0
        garbage = set(written).difference(still_used())
        store.reload_packs()
        dropped = 0
        for pack in store.packs():
            if pack.idx_path not in tiers:
                continue
            dead = sum(oid in garbage for oid, _, _ in pack.entries())
            if dead and store.rewrite_pack(pack, lambda o: o not in garbage, stale_before=start):
                dropped += dead
        return dropped
    finally:
        lock.release()


def _maintenance_lock_if_free(store: LocalObjectStore) -> FileLock | None:
    """The maintenance lock, taken, if nobody holds it; None while gc or repack does (a
    writer's upkeep never waits for them)."""
    lock = maintenance_lock(store.layout.maintenance_lock)
    try:
        lock.acquire(blocking=False)
    except LockTimeout:
        return None
    return lock


def maintenance_lock(path: Path, timeout: float = MAINTENANCE_LOCK_TIMEOUT) -> FileLock:
    """gc, repack and compaction exclude each other (writers never wait for any of them)."""
    what = "store maintenance (another gc or repack is running)"
    return FileLock(path, timeout=timeout, what=what)
