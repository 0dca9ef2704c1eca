"""Damage on disk is found loudly (reads raise, fsck reports), a full disk leaves nothing
half-written, and gc removes exactly what nothing can reach (refs, reflogs, live writers)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository, RunRecord, write_tree
from osmo_store.backends import fsutil, pack
from osmo_store.backends.layout import StoreLayout
from osmo_store.backends.local import LocalObjectStore
from osmo_store.errors import CorruptObject, CorruptRef, OsmoError
from osmo_store.hashing import ObjectId
from osmo_store.maintenance.fsck import fsck
from osmo_store.maintenance.gc import gc, repack, stats
from osmo_store.objects import frame_header, object_id
from osmo_store.tree import Internal, TreeEntry, load_node

from .waiting import wait_for_fs_clock_past

HOUR = 3600
DAY = 24 * HOUR
NS = 1_000_000_000


def _local(repo: Repository) -> LocalObjectStore:
    assert isinstance(repo.objects, LocalObjectStore)
    return repo.objects


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _age_all(repo: Repository, seconds: float) -> None:
    for _, path in _local(repo).iter_loose():
        _age(path, seconds)
    for p in _local(repo).packs():
        _age(p.pack_path, seconds)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _mentions(report, text: str) -> bool:
    return any(text in p for p in report.problems)


# --- corrupt bytes -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["first", "header", "middle", "last"])
def test_flipped_byte_in_loose_object(repo: Repository, where: str) -> None:
    content = b"a model response that was paid for\n" * 30
    oid = repo.objects.put(ObjectType.BLOB, content)
    healthy = repo.objects.put(ObjectType.BLOB, b"healthy neighbour")
    repo.update_ref("refs/evals/x", oid)
    path = _local(repo).loose_path(oid)
    size = path.stat().st_size
    _flip(path, {"first": 0, "header": 5, "middle": size // 2, "last": size - 1}[where])

    with pytest.raises(CorruptObject) as info:
        repo.objects.get(oid)
    assert info.value.oid == oid
    assert repo.objects.get(healthy) == (ObjectType.BLOB, b"healthy neighbour")
    for full in (False, True):
        report = fsck(repo, full=full)
        assert not report.ok
        assert _mentions(report, oid)
    # gc cannot know what a damaged reachable object would keep alive: it deletes nothing.
    _age_all(repo, DAY)
    dangling = repo.objects.put(ObjectType.BLOB, b"dangling")
    _age(_local(repo).loose_path(dangling), DAY)
    with pytest.raises(OsmoError):
        gc(repo, prune="now")
    assert repo.objects.has(dangling)


def test_fsck_is_clean_on_a_healthy_store(repo: Repository) -> None:
    blobs = [repo.objects.put(ObjectType.BLOB, b"r%d" % i) for i in range(5)]
    tree = write_tree(
        repo.objects, [TreeEntry(f"r{i}", ObjectType.BLOB, b) for i, b in enumerate(blobs)]
    )
    run = repo.objects.put_run(RunRecord(tree, (), {"status": "done"}))
    repo.update_ref("refs/evals/x", run)
    repo.objects.put(ObjectType.BLOB, b"dangling")
    report = fsck(repo, full=True)
    assert report.ok, report.problems
    assert report.objects_checked == 8
    assert report.reachable == 7
    assert report.dangling == 1


def test_flipped_byte_inside_packed_object(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        ids = [w.put(ObjectType.BLOB, b"packed row %d " % i * 20) for i in range(5)]
    (p,) = _local(repo).packs()
    victim = ids[2]
    offset, length = next((off, ln) for oid, off, ln in p.entries() if oid == victim)
    _flip(p.pack_path, offset + length // 2)

    with pytest.raises(CorruptObject) as info:
        repo.objects.get(victim)
    assert info.value.oid == victim
    assert info.value.where == p.pack_path.name
    for i in (0, 1, 3, 4):
        assert repo.objects.get(ids[i])[1] == b"packed row %d " % i * 20
    report = fsck(repo)
    assert not report.ok
    assert _mentions(report, victim)
    assert len(report.problems) == 1


@pytest.mark.parametrize("damaged", ["packed", "loose"])
def test_a_damaged_copy_does_not_hide_a_sound_one(repo: Repository, damaged: str) -> None:
    content = b"stored twice: in a pack and as a loose file " * 10
    with repo.objects.bulk() as w:
        oid = w.put(ObjectType.BLOB, content)
    (p,) = _local(repo).packs()
    loose = _local(repo).loose_path(oid)
    loose.parent.mkdir(parents=True, exist_ok=True)
    loose.write_bytes(p.read(oid))  # the same stored bytes, loose
    if damaged == "packed":
        offset, length = next((off, ln) for o, off, ln in p.entries() if o == oid)
        _flip(p.pack_path, offset + length // 2)
    else:
        _flip(loose, loose.stat().st_size // 2)
    assert repo.objects.get(oid) == (ObjectType.BLOB, content)


def test_truncated_pack(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        ids = [w.put(ObjectType.BLOB, b"row %d" % i) for i in range(10)]
    (p,) = _local(repo).packs()
    by_offset = sorted(p.entries(), key=lambda e: e[1])
    last_oid, last_off, _ = by_offset[-1]
    first_oid = by_offset[0][0]
    with open(p.pack_path, "r+b") as f:
        f.truncate(last_off + 3)

    with pytest.raises(CorruptObject):
        repo.objects.get(last_oid)
    assert repo.objects.get(first_oid)[0] is ObjectType.BLOB
    report = fsck(repo)
    assert not report.ok
    assert _mentions(report, "truncated")
    assert _mentions(report, last_oid)
    assert repo.objects.has(ids[0])


def test_full_fsck_reports_pack_checksum_mismatch(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        for i in range(3):
            w.put(ObjectType.BLOB, b"row %d" % i)
    (p,) = _local(repo).packs()
    _flip(p.pack_path, 3)  # inside the "OSMOPACK" magic: no object's bytes change
    assert fsck(repo).ok  # every object still reads and verifies
    report = fsck(repo, full=True)
    assert not report.ok
    assert _mentions(report, "pack checksum mismatch")


def test_full_fsck_reports_index_checksum_mismatch(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        w.put(ObjectType.BLOB, b"row")
    (p,) = _local(repo).packs()
    _flip(p.idx_path, 14)  # the total-framed-bytes field of the header
    _local(repo).reload_packs()
    report = fsck(repo, full=True)
    assert _mentions(report, "index checksum mismatch")


# --- connectivity ------------------------------------------------------------------------


def test_ref_to_missing_object(repo: Repository, store_path: Path) -> None:
    missing = object_id(ObjectType.BLOB, b"never stored")
    (store_path / "refs" / "evals").mkdir(parents=True)
    (store_path / "refs" / "evals" / "x").write_text(missing + "\n")
    assert repo.refs.read("refs/evals/x") == missing
    report = fsck(repo)
    assert not report.ok
    assert any("missing" in p and missing in p and "refs/evals/x" in p for p in report.problems)


def test_ref_file_with_garbage_is_reported(repo: Repository, store_path: Path) -> None:
    oid = repo.objects.put(ObjectType.BLOB, b"result")
    repo.update_ref("refs/evals/x", oid)
    ref = store_path / "refs" / "evals" / "x"
    ref.write_bytes(b"\x00" * 20)  # e.g. a disk that zeroed the block
    report = fsck(repo)
    assert not report.ok
    assert _mentions(report, "refs/evals/x")


def test_tree_whose_entry_was_deleted(repo: Repository) -> None:
    blobs = [repo.objects.put(ObjectType.BLOB, b"row %d" % i) for i in range(3)]
    tree = write_tree(
        repo.objects, [TreeEntry(f"r{i}", ObjectType.BLOB, b) for i, b in enumerate(blobs)]
    )
    repo.update_ref("refs/evals/x", tree)
    assert fsck(repo).ok
    repo.objects.delete(blobs[1])
    report = fsck(repo)
    assert not report.ok
    assert any("missing blob" in p and blobs[1] in p for p in report.problems)


def test_tree_whose_trie_node_was_deleted(repo: Repository) -> None:
    blob = repo.objects.put(ObjectType.BLOB, b"row")
    tree = write_tree(
        repo.objects, [TreeEntry(f"row-{i}", ObjectType.BLOB, blob) for i in range(600)]
    )
    root = load_node(repo.objects, tree)
    assert isinstance(root, Internal)
    child = root.children[0][1]
    repo.update_ref("refs/evals/x", tree)
    assert fsck(repo).ok
    repo.objects.delete(child)
    report = fsck(repo)
    assert not report.ok
    assert any("missing tree" in p and child in p for p in report.problems)


def test_run_record_whose_tree_was_deleted(repo: Repository) -> None:
    tree = write_tree(repo.objects, [])
    parent = repo.objects.put_run(RunRecord(tree, (), {"n": 1}))
    run = repo.objects.put_run(RunRecord(tree, (parent,), {"n": 2}))
    repo.update_ref("refs/evals/x", run)
    assert fsck(repo).ok
    repo.objects.delete(parent)
    report = fsck(repo)
    assert any("missing run" in p and parent in p for p in report.problems)


def test_deeply_nested_run_record_is_reported_not_a_crash(repo: Repository) -> None:
    # Hashes correctly (it could arrive from a peer through put_raw), but is no run record.
    oid = repo.objects.put(ObjectType.RUN, b"[" * 100_000)
    repo.update_ref("refs/evals/x", oid)
    report = fsck(repo, full=True)
    assert not report.ok
    assert _mentions(report, oid)
    with pytest.raises(OsmoError):
        gc(repo, prune="now")


# --- a full disk -------------------------------------------------------------------------


def _disk_fills_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """Every write goes through ``write_all``; let ``budget`` bytes reach the disk, then
    fail with ENOSPC partway through a write, as a full disk does."""
    real = fsutil.write_all
    left = [budget]

    def write_all(fd: int, data: bytes) -> None:
        n = min(len(data), left[0])
        if n:
            real(fd, bytes(data[:n]))
            left[0] -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil, "write_all", write_all)
    monkeypatch.setattr(pack, "write_all", write_all)


def test_enospc_during_put_leaves_nothing(
    repo: Repository, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = repo.objects.put(ObjectType.BLOB, b"stored before the disk filled")
    content = os.urandom(10_000)
    oid = object_id(ObjectType.BLOB, content)
    files = _files(store_path / "objects")
    with monkeypatch.context() as m:
        _disk_fills_after(m, 4000)
        with pytest.raises(OSError) as info:
            repo.objects.put(ObjectType.BLOB, content)
    assert info.value.errno == errno.ENOSPC
    assert not repo.objects.has(oid)
    assert not _local(repo).loose_path(oid).exists()
    assert _files(store_path / "objects") == files  # no tmp- file either
    assert list(repo.objects.iter_ids()) == [before]
    assert repo.objects.put(ObjectType.BLOB, content) == oid  # space freed: works again
    assert repo.objects.get(oid) == (ObjectType.BLOB, content)


def _pack_sizes(tmp_path: Path, contents: list[bytes]) -> tuple[int, int]:
    with Repository.open(tmp_path / "measure") as r:
        with r.objects.bulk() as w:
            for c in contents:
                w.put(ObjectType.BLOB, c)
        (p,) = _local(r).packs()
        return p.pack_path.stat().st_size, p.idx_path.stat().st_size


BULK_STAGES = ("pack header", "first object", "last object", "pack checksum", "index",
               "index checksum")  # fmt: skip


@pytest.mark.parametrize("stage", BULK_STAGES)
def test_enospc_during_bulk_leaves_no_pack(
    repo: Repository, store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    contents = [os.urandom(3000) for _ in range(4)]
    pack_size, idx_size = _pack_sizes(tmp_path, contents)
    budget = {
        "pack header": 5,
        "first object": 12 + 100,
        "last object": pack_size - 32 - 100,
        "pack checksum": pack_size - 10,
        "index": pack_size + idx_size // 2,
        "index checksum": pack_size + idx_size - 5,
    }[stage]
    before = repo.objects.put(ObjectType.BLOB, b"stored before")
    pack_dir = store_path / "objects" / "pack"
    with monkeypatch.context() as m:
        _disk_fills_after(m, budget)
        with pytest.raises(OSError) as info, repo.objects.bulk() as w:
            for c in contents:
                w.put(ObjectType.BLOB, c)
    assert info.value.errno == errno.ENOSPC
    assert sorted(os.listdir(pack_dir)) == []
    assert list(repo.objects.iter_ids()) == [before]
    assert not any(repo.objects.has(object_id(ObjectType.BLOB, c)) for c in contents)
    with repo.objects.bulk() as w:  # space freed: works again
        ids = [w.put(ObjectType.BLOB, c) for c in contents]
    assert [repo.objects.get(i)[1] for i in ids] == contents
    assert fsck(repo, full=True).ok


def test_enospc_during_ref_update_keeps_the_old_ref(
    repo: Repository, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = repo.objects.put(ObjectType.BLOB, b"a")
    b = repo.objects.put(ObjectType.BLOB, b"b")
    repo.update_ref("refs/evals/x", a)
    with monkeypatch.context() as m:
        _disk_fills_after(m, 10)
        with pytest.raises(OSError):
            repo.update_ref("refs/evals/x", b, a)
    assert repo.refs.read("refs/evals/x") == a
    assert os.listdir(store_path / "refs" / "evals") == ["x"]


# --- gc ----------------------------------------------------------------------------------


def test_gc_removes_unreachable_and_keeps_reachable(repo: Repository) -> None:
    kept_blob = repo.objects.put(ObjectType.BLOB, b"in the manifest")
    tree = write_tree(repo.objects, [TreeEntry("row", ObjectType.BLOB, kept_blob)])
    run = repo.objects.put_run(RunRecord(tree, (), {}))
    repo.update_ref("refs/evals/x", run)
    garbage = [repo.objects.put(ObjectType.BLOB, b"garbage %d" % i) for i in range(3)]
    _age_all(repo, DAY)
    report = gc(repo, prune="now")
    assert report.objects_removed == 3
    assert report.bytes_freed > 0
    assert report.reachable == 3
    assert not any(repo.objects.has(g) for g in garbage)
    assert set(repo.objects.iter_ids()) == {kept_blob, tree, run}
    assert fsck(repo, full=True).ok


def test_gc_grace_period_when_asked_and_none_by_default(repo: Repository) -> None:
    young = repo.objects.put(ObjectType.BLOB, b"a day old")
    old = repo.objects.put(ObjectType.BLOB, b"a month old")
    _age(_local(repo).loose_path(young), DAY)
    _age(_local(repo).loose_path(old), 30 * DAY)
    report = gc(repo, prune="2.weeks.ago")
    assert report.objects_removed == 1
    assert repo.objects.has(young)
    assert not repo.objects.has(old)
    # By default everything unreachable goes (writers are safe through their leases).
    assert gc(repo).objects_removed == 1
    assert not repo.objects.has(young)


def test_gc_never_prunes_freshly_written_objects(repo: Repository) -> None:
    oid = repo.objects.put(ObjectType.BLOB, b"written just now, no ref yet")
    report = gc(repo, prune="now")
    assert report.objects_removed == 0
    assert repo.objects.has(oid)


def test_gc_dry_run_reports_but_removes_nothing(repo: Repository, store_path: Path) -> None:
    for i in range(4):
        repo.objects.put(ObjectType.BLOB, b"garbage %d" % i)
    with repo.objects.bulk() as w:
        w.put(ObjectType.BLOB, b"packed garbage")
    _age_all(repo, DAY)
    files = _files(store_path / "objects")
    dry = gc(repo, prune="now", dry_run=True)
    assert dry.dry_run
    assert dry.objects_removed == 5
    assert dry.bytes_freed > 0
    assert _files(store_path / "objects") == files
    real = gc(repo, prune="now")
    assert (real.objects_removed, real.bytes_freed) == (dry.objects_removed, dry.bytes_freed)
    assert list(repo.objects.iter_ids()) == []


def test_gc_keeps_what_only_the_reflog_reaches(repo: Repository) -> None:
    first = repo.objects.put(ObjectType.BLOB, b"first result")
    second = repo.objects.put(ObjectType.BLOB, b"second result")
    repo.update_ref("refs/evals/x", first)
    repo.update_ref("refs/evals/x", second)
    dropped = repo.objects.put(ObjectType.BLOB, b"deleted ref's target")
    repo.update_ref("refs/evals/gone", dropped)
    repo.delete_ref("refs/evals/gone")
    _age_all(repo, DAY)
    assert gc(repo, prune="now").objects_removed == 0
    assert repo.objects.has(first) and repo.objects.has(dropped)
    # Once the reflog entries expire, only the ref's current target is left.
    report = gc(repo, prune="now", reflog_expire="now")
    assert report.reflog_entries_expired == 4
    assert report.objects_removed == 2
    assert set(repo.objects.iter_ids()) == {second}
    assert repo.refs.reflog("refs/evals/x") == []


def test_gc_stops_at_a_damaged_ref(repo: Repository, store_path: Path) -> None:
    """A ref file that no longer holds an id is not an absent ref: gc (the library, not
    only the CLI) refuses to run, and what the ref named stays, even with no reflog left."""
    target = repo.objects.put(ObjectType.BLOB, b"only the damaged ref names this")
    repo.update_ref("refs/evals/x", target)
    gc(repo, prune="now", reflog_expire="now")  # the reflog is gone now
    StoreLayout(store_path).ref("refs/evals/x").write_bytes(b"\x00garbage\n")
    _age_all(repo, DAY)
    with pytest.raises(CorruptRef, match="refs/evals/x"):
        gc(repo, prune="now", reflog_expire="now")
    assert repo.objects.has(target)


def test_gc_rewrites_packs_without_unreachable_objects(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        keep = w.put(ObjectType.BLOB, b"keep me")
        drop = [w.put(ObjectType.BLOB, b"drop %d" % i) for i in range(3)]
    repo.update_ref("refs/evals/x", keep)
    _age_all(repo, DAY)
    report = gc(repo, prune="now")
    assert (report.objects_removed, report.packs_rewritten) == (3, 1)
    assert list(repo.objects.iter_ids()) == [keep]
    assert repo.objects.get(keep) == (ObjectType.BLOB, b"keep me")
    assert not any(repo.objects.has(d) for d in drop)
    assert fsck(repo, full=True).ok


def test_gc_removes_old_temp_files_only(repo: Repository, store_path: Path) -> None:
    repo.objects.put(ObjectType.BLOB, b"x")
    fan = next(p for p in (store_path / "objects").iterdir() if len(p.name) == 2)
    old_tmp, new_tmp = fan / "tmp-1-old", fan / "tmp-1-new"
    old_tmp.write_bytes(b"left by a killed writer")
    new_tmp.write_bytes(b"being written right now")
    _age(old_tmp, 2 * DAY)
    report = gc(repo, prune="never")
    assert report.temp_files_removed == 1
    assert not old_tmp.exists()
    assert new_tmp.exists()


# --- gc and concurrent writers (leases) --------------------------------------------------


def _other_writer(store_path: Path) -> LocalObjectStore:
    """A second writer on the same store: as far as gc can tell another process, since its
    lease is a separate lease file locked through its own file description."""
    other = LocalObjectStore(StoreLayout(store_path))
    other.lease()
    return other


def _write_in_the_past(store_path: Path, content: bytes, age: float) -> ObjectId:
    """An object left behind by a writer that has finished (its lease is released)."""
    with Repository.open(store_path) as past:
        oid = past.objects.put(ObjectType.BLOB, content)
        _age(_local(past).loose_path(oid), age)
    return oid


def test_live_lease_protects_objects_written_since_it_started(
    repo: Repository, store_path: Path
) -> None:
    # ``repo`` only runs gc here: it never writes, so it holds no lease of its own.
    stale = _write_in_the_past(store_path, b"abandoned before the eval began", HOUR)
    other = _other_writer(store_path)
    try:
        # Written by a running eval and not named by any ref yet: the eval may be about to
        # write the manifest and move the ref.
        in_flight = other.put(ObjectType.BLOB, b"result the eval will reference")
        written_ns = other.loose_path(in_flight).stat().st_mtime_ns
        assert written_ns >= other.lease().start_ns
        # gc deletes only what is strictly older than its cutoff, read from that clock
        wait_for_fs_clock_past(store_path / "leases", written_ns)  # prune=now would take it...
        report = gc(repo, prune="now")
        assert report.objects_removed == 1  # ...but the live lease keeps it
        assert repo.objects.has(in_flight)
        assert not repo.objects.has(stale)
    finally:
        other.close()
    assert not list((store_path / "leases").glob("lease-*"))
    # The writer finished without naming it: now it is garbage.
    assert gc(repo, prune="now").objects_removed == 1
    assert not repo.objects.has(in_flight)


def test_dedupe_by_a_live_writer_freshens_an_old_object(repo: Repository, store_path: Path) -> None:
    old = _write_in_the_past(store_path, b"cached model answer", 30 * DAY)
    path = _local(repo).loose_path(old)
    other = _other_writer(store_path)
    try:
        assert other.put(ObjectType.BLOB, b"cached model answer") == old  # a cache hit
        assert path.stat().st_mtime_ns >= other.lease().start_ns
        assert gc(repo, prune="now").objects_removed == 0
        assert repo.objects.get(old) == (ObjectType.BLOB, b"cached model answer")
    finally:
        other.close()


def test_dedupe_of_a_packed_object_freshens_its_pack(repo: Repository, store_path: Path) -> None:
    with Repository.open(store_path) as past, past.objects.bulk() as w:
        old = w.put(ObjectType.BLOB, b"packed cached answer")
        w.put(ObjectType.BLOB, b"pack-mate")
    _local(repo).reload_packs()
    (p,) = _local(repo).packs()
    _age(p.pack_path, 30 * DAY)
    other = _other_writer(store_path)
    try:
        assert other.put(ObjectType.BLOB, b"packed cached answer") == old
        assert not other.loose_path(old).exists()
        assert gc(repo, prune="now").objects_removed == 0
        assert repo.objects.has(old)
    finally:
        other.close()


def test_stale_lease_of_a_dead_writer_protects_nothing(repo: Repository, store_path: Path) -> None:
    dead_start = time.time_ns() - 2 * HOUR * NS
    dead = store_path / "leases" / f"lease-{dead_start}-999999-deadbeef"
    dead.parent.mkdir(parents=True, exist_ok=True)
    dead.write_bytes(b"")  # no process holds its lock: its writer died
    orphan = _write_in_the_past(store_path, b"written by the dead writer", HOUR)
    assert gc(repo, prune="now").objects_removed == 1
    assert not repo.objects.has(orphan)
    assert not dead.exists()


# --- repack and stats --------------------------------------------------------------------


def test_repack_moves_loose_objects_into_a_pack(repo: Repository, store_path: Path) -> None:
    ids = [repo.objects.put(ObjectType.BLOB, b"row %d " % i * 50) for i in range(20)]
    tree = write_tree(
        repo.objects, [TreeEntry(f"r{i}", ObjectType.BLOB, b) for i, b in enumerate(ids)]
    )
    repo.update_ref("refs/evals/x", tree)
    before = stats(repo)
    report = repack(repo)
    assert (report.objects_packed, report.loose_removed) == (21, 21)
    assert (report.packs_before, report.packs_after) == (0, 1)
    assert list(_local(repo).iter_loose()) == []
    for i, oid in enumerate(ids):
        assert repo.objects.get(oid) == (ObjectType.BLOB, b"row %d " % i * 50)
    assert fsck(repo, full=True).ok
    after = stats(repo)
    assert (after.loose_objects, after.packed_objects, after.packs) == (0, 21, 1)
    assert after.objects == before.objects == 21
    assert after.content_bytes == before.content_bytes


def test_repack_all_folds_packs_together(repo: Repository) -> None:
    for batch in range(3):
        with repo.objects.bulk() as w:
            w.put(ObjectType.BLOB, b"batch %d" % batch)
    repo.objects.put(ObjectType.BLOB, b"loose")
    report = repack(repo, all_packs=True)
    assert (report.packs_before, report.packs_after, report.objects_packed) == (3, 1, 4)
    assert len(list(repo.objects.iter_ids())) == 4
    assert fsck(repo, full=True).ok


def test_stats_are_consistent(repo: Repository, store_path: Path) -> None:
    contents = [b'{"answer": "forty-two", "row": %d}' % i * 40 for i in range(10)]
    for c in contents[:6]:
        repo.objects.put(ObjectType.BLOB, c)
    with repo.objects.bulk() as w:
        for c in contents[6:]:
            w.put(ObjectType.BLOB, c)
    s = stats(repo)
    assert (s.loose_objects, s.packed_objects, s.packs, s.objects) == (6, 4, 1, 10)
    assert s.objects == len(list(repo.objects.iter_ids()))
    assert s.content_bytes == sum(
        len(frame_header(ObjectType.BLOB, len(c))) + len(c) for c in contents
    )
    loose_bytes = sum(p.stat().st_size for _, p in _local(repo).iter_loose())
    pack_bytes = sum(p.pack_path.stat().st_size for p in _local(repo).packs())
    assert (s.loose_bytes, s.pack_bytes) == (loose_bytes, pack_bytes)
    assert s.stored_bytes == loose_bytes + pack_bytes
    assert s.ratio > 3  # repetitive JSON compresses well
    assert s.ratio == s.content_bytes / s.stored_bytes
