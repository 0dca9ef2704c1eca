"""The group-commit recorder on a real local store: what each commit leaves behind."""

from __future__ import annotations

import pytest

from osmo_store import Repository
from osmo_store.backends.compaction import FANOUT as MERGE_FANOUT
from osmo_store.eval.state import (
    ConfigState,
    Recorder,
    SampleResult,
    blob,
    sample_name,
)
from osmo_store.hashing import canonical_json
from osmo_store.maintenance.fsck import fsck

from .waiting import wait_until


def result(i: int) -> SampleResult:
    row = f"row{i:04d}"
    body = {"row": row, "run": 0, "status": "ok", "scores": {"f": i % 2}}
    return SampleResult(
        sample_name(row, 0), False, canonical_json(body), body, [blob(row, "rows", b"{}")]
    )


def test_commit_packs_are_folded_in_tiers_and_nothing_is_lost(repo: Repository) -> None:
    config_id = "c" * 64
    state = ConfigState.load(repo, config_id)
    rec = Recorder(repo, config_id, state, ())
    commits = MERGE_FANOUT**2 + MERGE_FANOUT - 2  # 70 with F = 8: base-8 digits 1, 0, 6
    for i in range(commits):
        rec.commit([result(i)], lambda counts: {"counts": counts})
    # One pack per commit, folded F at a time into the next level like a base-F counter.
    tiers = repo.objects._tiers._packs
    assert sorted(level for _, level in tiers) == [0] * (MERGE_FANOUT - 2) + [2]
    on_disk = {p.idx_path for p in repo.objects.packs()}
    assert {idx for idx, _ in tiers} <= on_disk
    state = ConfigState.load(repo, config_id)
    assert state.names(repo, "samples") == {sample_name(f"row{i:04d}", 0) for i in range(commits)}
    assert rec.counts == {"done": commits, "failed": 0}
    assert fsck(repo, full=True).ok


def test_workers_stop_launching_when_their_runner_is_interrupted() -> None:
    """A KeyboardInterrupt in the thread running the window (a library caller with the
    default SIGINT handler) must stop the workers: no model calls nobody will record."""
    import _thread
    import threading
    import time

    from osmo_store.eval.workers import Workers

    started = []
    delivered = []

    def execute(row, i):
        started.append(i)
        if len(started) == 20:  # well under way, whatever the machine's load (no timer)
            _thread.interrupt_main()
        time.sleep(0.01)
        return i

    workers = Workers([(None, i) for i in range(2000)], 4, threading.Event(), delivered.append,
                       execute)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        workers.run(grace=5.0)
    # Every worker thread ends (a worker that went on launching would never end)...
    wait_until(
        lambda: not any(t.name.startswith("osmo-run-") for t in threading.enumerate()),
        what="the worker threads ending",
    )
    assert len(started) < 2000  # ...and they stopped early
    assert len(delivered) <= len(started)


def test_a_commit_holds_the_writer_lease_before_its_pack_is_visible(repo: Repository) -> None:
    """Objects written without a look for a stored copy (every object of a commit with no
    results) must still be covered by the writer's lease: a `gc --prune=now` between the
    pack's publication and the ref's move must not take the new run record."""
    from osmo_store.maintenance.gc import gc

    config_id = "c" * 64
    Recorder(repo, config_id, ConfigState.load(repo, config_id), ()).commit(
        [], lambda counts: {"counts": counts}
    )
    repo.close()  # a new session, as a resumed eval is
    with Repository.open(repo.path) as session:
        state = ConfigState.load(session, config_id)
        rec = Recorder(session, config_id, state, (state.run_id,))
        rec.head = state.run_id
        move_ref = session.update_ref
        removed = []

        def gc_first(*args, **kwargs):
            with Repository.open(session.path) as other:
                removed.append(gc(other, prune="now").objects_removed)
            return move_ref(*args, **kwargs)

        session.update_ref = gc_first  # type: ignore[method-assign]
        run_id = rec.commit([], lambda counts: {"counts": counts})
    with Repository.open(repo.path) as check:
        assert check.refs.read(f"refs/evals/{config_id}") == run_id
        assert check.objects.has(run_id), f"gc removed {removed} objects, the run record too"
        assert fsck(check).ok


def test_a_read_racing_a_pack_merge_finds_the_merged_pack(store_path, monkeypatch) -> None:
    """A reader lists the pack folder; before it opens what it saw, another writer folds
    those packs into a new one and removes them. The read must find the merged pack."""
    from osmo_store.backends import local
    from osmo_store.objects import ObjectType

    writer = Repository.open(store_path)
    reader = Repository.open(store_path)  # has loaded the (no) packs already
    oids = []
    for i in range(2):
        with writer.objects.bulk() as w:
            oids.append(w.put(ObjectType.BLOB, b"row %d" % i))
    real_reader = local.PackReader
    fired = []

    def merge_first(idx):
        if not fired:
            fired.append(True)
            writer.objects.reload_packs()
            writer.objects.merge_packs(writer.objects.packs())
        return real_reader(idx)

    monkeypatch.setattr(local, "PackReader", merge_first)
    try:
        assert reader.objects.get(oids[0]) == (ObjectType.BLOB, b"row 0")
        assert fired
    finally:
        writer.close()
        reader.close()


def test_index_lookups_see_what_other_evals_record_meanwhile(repo: Repository, monkeypatch) -> None:
    """A miss reads the shared index again (at most once per REREAD_S): an eval reuses what
    another eval recorded after it started. A config's own manifest (--fresh) is never
    swapped for the index."""
    from osmo_store import ObjectType
    from osmo_store.eval.state import IndexReader, update_index
    from osmo_store.tree import TreeEntry, empty_tree

    first = repo.objects.put(ObjectType.BLOB, b"first")
    update_index(repo, {"k1": TreeEntry("k1", ObjectType.BLOB, first)})
    shared, own = IndexReader(repo), IndexReader(repo, only=empty_tree(repo.objects))
    later = repo.objects.put(ObjectType.BLOB, b"later")
    update_index(repo, {"k2": TreeEntry("k2", ObjectType.BLOB, later)})
    assert shared.get("k1") == first and shared.get("k2") is None  # read a moment ago
    monkeypatch.setattr(IndexReader, "REREAD_S", 0.0)
    assert shared.get("k2") == later
    assert own.get("k1") is None and own.get("k2") is None


def test_a_node_another_config_took_up_is_not_reclaimed(tmp_path) -> None:
    """Config B's eval found a checkpoint node of config A's stored (a presence check: the
    same rows so far) and published it in its own ref, then ended. A's session, ending
    later, superseded that node: reclaiming it broke B's ref (fsck: missing tree). What
    another ref took up during the session is still used."""
    store = tmp_path / "store"
    Repository.open(store, create=True).close()
    a, b = "a" * 64, "b" * 64
    meta = lambda counts: {"counts": counts}  # noqa: E731
    with Repository.open(store) as repo_a:
        rec_a = Recorder(repo_a, a, ConfigState.load(repo_a, a), ())
        rec_a.commit([result(0)], meta)
        rec_a.commit([result(1)], meta)  # a checkpoint: the rows manifest of rows 0 and 1
        with Repository.open(store) as repo_b:
            rec_b = Recorder(repo_b, b, ConfigState.load(repo_b, b), ())
            rec_b.commit([result(0), result(1)], meta, final=True)  # the same manifest
        rec_a.commit([result(2)], meta)
        rec_a.commit([result(3)], meta, final=True)  # supersedes it, and reclaims
    with Repository.open(store) as repo:
        assert ConfigState.load(repo, b).names(repo, "rows") == {"row0000", "row0001"}
        report = fsck(repo, full=True)
        assert report.ok, report.problems


def test_a_mid_eval_reclaim_keeps_what_the_lookups_hold(repo: Repository, monkeypatch) -> None:
    """The eval's lookups of what it has committed go to the config's ``cache`` manifest as
    the last commit left it (``StoreLookup.committed``), moved on only once the next commit
    has returned. A reclaim inside that commit deleted the superseded manifest's nodes, and a
    lookup in between missed what was recorded: the call was paid twice. The reclaim keeps
    that manifest; the session's end (no lookups left) still reclaims it."""
    from osmo_store.eval.solver import StoreLookup

    monkeypatch.setattr(Recorder, "RECLAIM_AFTER", 1)  # every commit reclaims
    config_id = "c" * 64
    meta = lambda counts: {"counts": counts}  # noqa: E731
    rec = Recorder(repo, config_id, ConfigState.load(repo, config_id), ())
    lookup = StoreLookup(repo, shared=False)  # --fresh: only what this session committed
    rec.commit([], meta)  # the session's opening commit (reflogged: kept)
    answer = blob("call-0", "cache", b"an answer that was paid for")
    rec.commit([SampleResult.objects_only([answer])], meta)  # a checkpoint
    lookup.committed(rec.trees["cache"], ["call-0"])
    held = rec.trees["cache"]
    rec.commit([SampleResult.objects_only([blob("call-1", "cache", b"another")])], meta)
    hit = lookup.find("call-0")  # before the commit's caller moves the lookups on
    assert hit is not None and hit.oid == answer.oid, "the recorded call would be paid again"
    lookup.committed(rec.trees["cache"], ["call-1"])
    rec.commit([], meta, final=True)
    assert not repo.objects.has(held)  # superseded, and no lookup holds it any more
    assert fsck(repo, full=True).ok


def test_a_node_of_an_earlier_session_of_the_same_store_object_is_not_reclaimed(
    repo: Repository,
) -> None:
    """Two sessions on one ``Repository`` (a library caller running two configs on one
    solver, or the in-process recorder): config A's session ends with a manifest node in
    a pack this store object wrote. Config B's checkpoint builds the same node (the same
    runs so far: a presence check finds it, but ``_Noted`` notes it as B's), then B
    supersedes it; B's reclaim rewrote A's pack (ours, by ``_tiers``) without it, and A's
    ref (not moved during B's session, so not walked) named a missing tree."""
    a, b = "a" * 64, "b" * 64

    def meta_of(config_id: str):  # a run record names its config, as an eval's does
        return lambda counts: {"counts": counts, "identity": {"config_id": config_id}}

    rec_a = Recorder(repo, a, ConfigState.load(repo, a), ())
    rec_a.commit([], meta_of(a))
    rec_a.commit([result(0), result(1)], meta_of(a), final=True)
    rec_b = Recorder(repo, b, ConfigState.load(repo, b), ())
    rec_b.commit([], meta_of(b))  # the opening commit (reflogged: kept)
    rec_b.commit([result(0), result(1)], meta_of(b))  # a checkpoint: A's manifests, found stored
    rec_b.commit([result(2)], meta_of(b))  # supersedes them
    rec_b.commit([result(3)], meta_of(b), final=True)  # reclaims
    assert ConfigState.load(repo, a).names(repo, "rows") == {"row0000", "row0001"}
    report = fsck(repo, full=True)
    assert report.ok, report.problems
