"""How an eval configuration lives in the store, and how results are recorded.

``refs/evals/<config-id>`` points at a run record whose tree has five nested manifests:

* ``samples``: ``<row-key>.<run>`` -> sample blob, for every run whose rollout finished;
* ``failed``:  ``<row-key>.<run>`` -> sample blob, for runs whose rollout failed (errors are
  data: recorded, never cached; a later success removes the entry);
* ``cache``:   ``<key>`` -> rollout or model-call blob, every one this config used (an
  agent's calls as soon as they are answered, so a rollout cut short does not lose them);
* ``rows``:    ``<row-key>`` -> row blob;
* ``rollouts``: ``<row-key>.<run>`` -> the rollout blob of each finished run that a version 3
  sample blob records (it does not name its rollout): a function of the solver's rollouts
  only, so every config on one solver holds the same nodes, stored once.

Everything a sample record names by id is also an entry in one of these trees, so gc and
sync see it. ``refs/cache/index`` is a manifest of the same ``<key>`` -> blob entries over
all configs: a derived lookup (rebuildable from the configs' ``cache`` trees) that lets a
new config reuse any rollout or model call recorded before.

Recording is a group commit: the results finished since the last commit are written as one
pack, the manifests are updated (O(k log n) objects for k results), then a run record, then
the ref (compare-and-swap). Only then are the results reported as completed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptObject, MalformedObject, ObjectNotFound, RefConflict
from ..hashing import ObjectId
from ..objects import ObjectType, RunRecord, compress_object, object_id
from ..repo import Repository
from ..tree import (
    TreeEntry,
    TreeReader,
    empty_tree,
    node_ids,
    node_targets,
    tree_count,
    update_tree,
    write_tree,
)
from ..tree import iter_tree as _iter_tree
from .configstate import EVAL_REF_PREFIX, SUBTREES, ConfigState, config_ref
from .merge import merge_configs

INDEX_REF = "refs/cache/index"
INDEX_CACHE_BYTES = 1 << 20  # parsed index nodes an ``IndexReader`` keeps
_log = logging.getLogger(__name__)


def sample_name(row_key: str, run_index: int) -> str:
    return f"{row_key}.{run_index}"


@dataclass
class PendingObject:
    """An object to store with a commit, and the manifest entry that keeps it reachable."""

    subtree: str  # "cache", "rows" or "rollouts"
    name: str
    content: bytes | None  # None: already stored (or on its way, ahead in the same queue)
    oid: ObjectId
    # Made by this session and maybe stored already (by the run that made it, if that one
    # was recorded first): look for a copy before writing. Rows are always looked for.
    may_exist: bool = False


def blob(name: str, subtree: str, content: bytes) -> PendingObject:
    return PendingObject(subtree, name, content, object_id(ObjectType.BLOB, content))


@dataclass
class SampleResult:
    """One finished run, ready to record. ``body`` is ``record`` as a dict. A result with
    no ``name`` carries objects only: a model call an agent made, recorded as soon as it is
    answered so that a rollout cut short does not pay for it again (``objects_only``).

    Objects arrive with their ids computed by the worker thread that made them (the
    sample's own id is computed where it is recorded); the committer compresses them.
    (Compressing in the workers was slower: each compression lets go of the interpreter,
    and a worker that lets go waits its turn among 64 to get it back.)"""

    name: str
    failed: bool
    record: bytes  # the sample blob (canonical JSON)
    body: dict[str, Any]
    objects: list[PendingObject] = field(default_factory=list)

    @functools.cached_property
    def oid(self) -> ObjectId:
        return object_id(ObjectType.BLOB, self.record)

    @classmethod
    def objects_only(cls, objects: list[PendingObject]) -> SampleResult:
        return cls("", False, b"", {}, objects)


class Recorder:
    """Group-commits sample results for one config. Not thread-safe: one committer."""

    #: superseded checkpoint objects noted past which a commit reclaims them there and then
    #: rather than at the session's end: each commit supersedes a node per manifest leaf it
    #: touches, so over a long eval the ids noted grow faster than the runs (~150 bytes each)
    RECLAIM_AFTER = 20_000

    def __init__(
        self,
        repo: Repository,
        config_id: str,
        state: ConfigState,
        parents: tuple[ObjectId, ...],
        *,
        failed_names: set[str] | None = None,
    ) -> None:
        self.repo = repo
        #: names in the ``failed`` manifest, if the caller knows them: a success then
        #: deletes a failure entry only where there is one (else it always asks to)
        self._failed_names = failed_names
        self.config_id = config_id
        self.ref = config_ref(config_id)
        self.trees = dict(state.trees)
        self.head = state.run_id
        self.parents = parents
        self.commits = 0
        self.recorded = 0  # runs (samples) committed by this recorder
        self.counts: dict[str, int] = {}
        self.last_meta: dict[str, Any] = {}
        self._logged_this_session = False
        self._index_damaged = False
        # Tree nodes and run records this session's commits put, and the run records it
        # reflogged (kept): the end of the session reclaims the superseded rest.
        self._written: set[ObjectId] = set()
        self._logged: list[ObjectId] = []
        # The store's refs as the session starts: a ref that moves later may have taken up a
        # node this session wrote (another eval's presence check finds it), so reclaiming
        # keeps what those refs reach (``_still_used``).
        self._refs_at_start = repo.refs.list("refs/")
        self._started_ns = time.time_ns()
        # The ``cache`` manifest the eval's lookups of what it committed hold while a commit
        # runs: the one the commit before left (``StoreLookup.committed`` moves them on only
        # once this commit has returned to the eval, maybe from another process).
        self._held_by_lookups: ObjectId | None = None

    def commit(
        self,
        results: Iterable[SampleResult],
        meta: Callable[[dict[str, int]], dict[str, Any]],
        *,
        final: bool = False,
    ) -> ObjectId:
        """Write the results, their manifests, a run record, and move the config's ref.
        ``meta(counts)`` builds the record's metadata from the counts *after* this commit
        ({"done", "failed"}). The first and the final commit of a session are reflogged;
        the ones between are checkpoints that supersede each other."""
        results = list(results)
        self._held_by_lookups = self.trees["cache"]
        changes: dict[str, dict[str, TreeEntry | None]] = {name: {} for name in SUBTREES}
        index_changes: dict[str, TreeEntry | None] = {}
        index_base = self.repo.refs.read(INDEX_REF)
        with self.repo.objects.bulk() as bulk:
            # Model calls, rollouts and run records embed timestamps: new by construction.
            # Samples, rows and tree nodes are looked for first (runs finishing in the same
            # second with the same results share a sample blob; rows are often stored
            # already; a manifest another config built holds the same nodes).
            w = _Noted(bulk, self._written)
            for res in results:
                for obj in res.objects:
                    if obj.content is not None:
                        stored = compress_object(ObjectType.BLOB, obj.content)
                        new = not obj.may_exist and obj.subtree != "rows"
                        bulk.put_verified(obj.oid, stored, new=new)
                    entry = TreeEntry(obj.name, ObjectType.BLOB, obj.oid)
                    changes[obj.subtree][obj.name] = entry
                    if obj.subtree == "cache":
                        index_changes[obj.name] = entry
                if not res.name:
                    continue  # objects only
                bulk.put_verified(res.oid, compress_object(ObjectType.BLOB, res.record))
                entry = TreeEntry(res.name, ObjectType.BLOB, res.oid)
                known_failed = self._failed_names
                if res.failed:
                    changes["failed"][res.name] = entry
                    if known_failed is not None:
                        known_failed.add(res.name)
                else:
                    changes["samples"][res.name] = entry
                    if known_failed is None or res.name in known_failed:
                        changes["failed"][res.name] = None  # a success supersedes a failure
                        if known_failed is not None:
                            known_failed.discard(res.name)
            for name in SUBTREES:
                if changes[name]:
                    self.trees[name] = update_tree(w, self.trees[name], changes[name])
            root = write_tree(w, [TreeEntry(n, ObjectType.TREE, self.trees[n]) for n in SUBTREES])
            failed = tree_count(w, self.trees["failed"])
            self.counts = {"done": tree_count(w, self.trees["samples"]) + failed, "failed": failed}
            record = RunRecord(root, self.parents, meta(self.counts))
            self.last_meta = record.meta
            run_id = bulk.put_new(ObjectType.RUN, record.to_content())
            self._written.add(run_id)
            # The index update rides in the same pack; it is applied after the config's ref.
            new_index = None
            if index_changes and not self._index_damaged:
                base = index_base if index_base is not None else empty_tree(w)
                try:
                    new_index = update_tree(w, base, index_changes)
                except (CorruptObject, MalformedObject) as e:
                    self._index_is_damaged(e)
        log = final or not self._logged_this_session
        status = record.meta.get("status", "")
        try:
            self.repo.update_ref(self.ref, run_id, self.head, message=f"eval: {status}", log=log)
            if log:  # a reflog entry names both ids
                self._logged += [run_id] if self.head is None else [self.head, run_id]
        except RefConflict:
            self._logged.append(run_id)  # the merge names it
            run_id = self._merge_moved_ref(run_id)
            self._logged.append(run_id)
        self._logged_this_session = True
        self.head = run_id
        self.commits += 1
        self.recorded += sum(1 for res in results if res.name)
        if new_index is not None and new_index != index_base:
            try:
                self.repo.update_ref(INDEX_REF, new_index, index_base, message="index", log=False)
            except RefConflict:
                try:
                    update_index(self.repo, index_changes)  # another eval moved it: redo on top
                except (CorruptObject, MalformedObject) as e:
                    self._index_is_damaged(e)
        # Each commit wrote a pack: the store folds them as they pile up (the bound on the
        # store's pack count waits for the eval's end, see run_eval).
        self.repo.objects.after_bulk_write(more_coming=True)
        if final or len(self._written) >= self.RECLAIM_AFTER:
            self.reclaim(final=final)
        # The presence checks map pack index pages at random: over a long eval, every page
        # of every index, which would count in the recorder's memory as the store grows.
        self.repo.objects.release_memory()
        return run_id

    def reclaim(self, *, final: bool = True) -> int:
        """Delete the checkpoints this session superseded (what its commits wrote that no
        ref, reflogged commit or the lookup index reaches), where the store can tell that
        no other writer relies on them (``ObjectStore.reclaim_written``); gc collects them
        otherwise. Returns how many objects went.

        Before the session's end (``final`` false), only what is still used stays noted (a
        later commit may supersede it), so the notes stay bounded even where nothing could
        be reclaimed. What the eval's lookups hold is still used then: the ``cache``
        manifest the commit before left (a lookup that met a missing node there would take
        it as a miss, and pay for a recorded call again). The shared index's reader looks
        again at the index when it meets one (``IndexReader``)."""
        written, self._written = self._written, set()
        used: set[ObjectId] = set()
        held = None if final else self._held_by_lookups

        def still_used() -> set[ObjectId]:
            used.update(self._still_used(held))
            return used

        started = time.monotonic()
        try:
            dropped = self.repo.objects.reclaim_written(written, still_used)
            if not final:
                self._written = written.intersection(used or still_used())
        except (CorruptObject, MalformedObject, ObjectNotFound) as e:
            # What a damaged object reaches is unknown: delete nothing, gc will decide.
            _log.warning("osmo: not reclaiming superseded checkpoints (%s)", e)
            return 0
        _log.debug("reclaimed %d of %d objects in %.3f s", dropped, len(written),
                   time.monotonic() - started)  # fmt: skip
        return dropped

    def _still_used(self, held: ObjectId | None) -> set[ObjectId]:
        """Run records and manifest nodes reachable from the config's ref, the index, the
        manifest the eval's lookups ``held``, the run records this session reflogged, and
        every other ref that moved since the session started, with its reflog entries since
        then: another config's eval may have found a node of ours stored and published it
        (blobs are never superseded: not walked)."""
        objects = self.repo.objects
        roots = [*self._logged, *(r for r in (self.repo.refs.read(self.ref),) if r is not None)]
        index = self.repo.refs.read(INDEX_REF)
        roots += [r for r in (index, held) if r is not None]
        for name, oid in self.repo.refs.list("refs/").items():
            if name in (self.ref, INDEX_REF) or self._refs_at_start.get(name) == oid:
                continue
            roots.append(oid)
            for entry in self.repo.refs.reflog(name):
                if entry.time_ns >= self._started_ns:
                    roots += [o for o in (entry.old, entry.new) if o is not None]
        used: set[ObjectId] = set()
        while roots:
            oid = roots.pop()
            if oid in used:
                continue
            otype, content = objects.get(oid)
            if otype is ObjectType.RUN:
                used.add(oid)
                record = RunRecord.from_content(content)
                roots += [*record.parents, record.tree]
            elif otype is ObjectType.TREE:
                used.add(oid)
                for target, ttype in node_targets(content):
                    if ttype is ObjectType.TREE:
                        used.update(node_ids(objects, target))
        return used

    def _index_is_damaged(self, e: Exception) -> None:
        # Derived data: the results are recorded in the config all the same.
        _log.warning("osmo: the lookup index is damaged (%s): not updating it", e)
        self._index_damaged = True

    def _merge_moved_ref(self, run_id: ObjectId) -> ObjectId:
        """The config's ref moved under the eval: a pull or push merged another machine's
        results into it. Merge this commit with what is there now and go on from the merge
        (later commits build on the merged state), as the sync layer merges."""
        while True:
            current = self.repo.refs.read(self.ref)
            merged = run_id if current is None else merge_configs(self.repo, run_id, current)
            try:
                self.repo.update_ref(
                    self.ref, merged, current, message="eval: merged a concurrent update"
                )
                break
            except RefConflict:
                continue  # moved again: merge again
        state = ConfigState.from_run(self.repo, merged)
        self.trees = dict(state.trees)
        self.parents = (merged,)
        if self._failed_names is not None:
            self._failed_names.clear()
            self._failed_names.update(state.names(self.repo, "failed"))
        failed = state.count(self.repo, "failed")
        self.counts = {"done": state.count(self.repo, "samples") + failed, "failed": failed}
        return merged


class _Noted:
    """A writer's view that notes the id of every object it writes: not of one found stored
    already, which another config's manifest may name (an earlier session of the same
    store object wrote it, so reclaim would take it from that session's pack)."""

    def __init__(self, writer: Any, noted: set[ObjectId]) -> None:
        self._writer = writer
        self._noted = noted
        self.get = writer.get

    def put(self, otype: ObjectType, content: bytes) -> ObjectId:
        oid = self._writer.put(otype, content)
        if self._writer.wrote(oid):
            self._noted.add(oid)
        return oid


def update_index(repo: Repository, changes: Mapping[str, TreeEntry | None]) -> None:
    """Apply changes to the shared lookup index, retrying when another eval moved it."""
    for _ in range(100):
        current = repo.refs.read(INDEX_REF)
        with repo.objects.bulk() as w:
            base = current if current is not None else empty_tree(w)
            new = update_tree(w, base, changes)
        if new == current:
            return
        try:
            repo.update_ref(INDEX_REF, new, current, message="index", log=False)
            return
        except RefConflict:
            time.sleep(0.001)
    raise RefConflict(INDEX_REF, None, None)


class IndexReader:
    """Lookups in ``refs/cache/index``, with parsed tree nodes cached in memory (nodes are
    immutable, so the cache never goes stale; it is only ever re-rooted). Not thread-safe:
    ``StoreLookup`` calls it under its lock.

    A miss looks at the index again if it was last read over ``REREAD_S`` ago, so evals
    running side by side reuse what the others have recorded since they started.

    With ``only`` (a config's ``cache`` tree), lookups go to that fixed manifest instead of
    the shared index (``StoreLookup`` looks in the eval's own config first)."""

    REREAD_S = 1.0

    def __init__(self, repo: Repository, only: ObjectId | None = None) -> None:
        self.repo = repo
        # Bounded (1 MB, ~40 leaves): an eval's memory must not grow with the index. Not
        # more: a growing index's leaves change at every commit, so a bigger cache mostly
        # held stale versions, and cost more RSS than its size (leaves read by 16 worker
        # threads, each with its own malloc arena): from 3,000 to 28,500 runs the eval's
        # anonymous RSS grew 17 MB with 4 MB, 9 MB with 1 MB.
        self.reader = TreeReader(repo.objects, max_bytes=INDEX_CACHE_BYTES)
        self.shared = only is None
        self.root = repo.refs.read(INDEX_REF) if only is None else only
        self._read_at = time.monotonic()
        self._damaged: ObjectId | None = None  # a root found damaged: not looked in again

    def refresh(self) -> None:
        # A config's own tree collected under us costs only reuse, never a wrong answer.
        self.root = self.repo.refs.read(INDEX_REF) if self.shared else None

    def get(self, key: str) -> ObjectId | None:
        found = self._get(key)
        if found is None and self.shared and time.monotonic() - self._read_at >= self.REREAD_S:
            self._read_at = time.monotonic()
            root = self.repo.refs.read(INDEX_REF)
            if root != self.root:
                self.root = root
                found = self._get(key)
        return found

    def _get(self, key: str) -> ObjectId | None:
        if self.root is None or self.root == self._damaged:
            return None
        try:
            return self._lookup(key)
        except (CorruptObject, MalformedObject) as e:
            # Derived data: without it the eval still runs, it only reuses less.
            _log.warning("osmo: the lookup index is damaged (%s): not reusing through it", e)
            self._damaged = self.root
            return None

    def _lookup(self, key: str) -> ObjectId | None:
        assert self.root is not None
        try:
            entry = self.reader.get(self.root, key)
        except ObjectNotFound:
            # An old index root collected under us (gc --prune=now): look again.
            self.refresh()
            if self.root is None:
                return None
            entry = self.reader.get(self.root, key)
        return entry.oid if entry else None


def rebuild_index(repo: Repository) -> ObjectId:
    """Recompute ``refs/cache/index`` as the union of every config's ``cache`` tree. Retried
    if an eval moves the index meanwhile, so a concurrent eval's entries are never lost."""
    while True:
        current = repo.refs.read(INDEX_REF)
        entries: dict[str, TreeEntry] = {}
        for run_id in repo.refs.list(EVAL_REF_PREFIX).values():
            state = ConfigState.from_run(repo, run_id)
            for e in _iter_tree(repo.objects, state.trees["cache"]):
                entries[e.name] = e
        with repo.objects.bulk() as w:
            root = write_tree(w, entries.values())
        try:
            repo.update_ref(INDEX_REF, root, current, message="rebuild index", log=False)
            return root
        except RefConflict:
            continue


def refresh_index(repo: Repository, names: list[str]) -> None:
    """Add the ``cache`` entries of configs that arrived by sync to the lookup index."""
    for name in names:
        if not name.startswith(EVAL_REF_PREFIX):
            continue
        oid = repo.refs.read(name)
        if oid is None:
            continue
        changes = {
            e.name: e
            for e in _iter_tree(repo.objects, ConfigState.from_run(repo, oid).trees["cache"])
        }
        if changes:
            update_index(repo, changes)
