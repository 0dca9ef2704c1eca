"""gc against ref writers (issue 12, C-1 and G-2): no ref ever names a missing object,
whatever runs at the same time, and a ref that cannot be parsed stops gc.

A ref write checks that its target exists and protects it (it freshens the target under
the writer's lease), and gc, before it deletes anything, looks at the refs again and keeps
what refs written while it ran reach. The deterministic tests stop gc right after its
reachability walk (the instant a ref write used to slip through); the race tests run the
real CLI: `osmo hash-object -w` then `osmo update-ref` in one process, `osmo cache gc
--prune=now` in a loop in another.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository, TreeEntry, init_store, write_tree
from osmo_store.cli.main import main
from osmo_store.errors import CorruptRef, ObjectNotFound
from osmo_store.hashing import ObjectId
from osmo_store.maintenance.fsck import fsck
from osmo_store.maintenance.gc import gc

from .test_eval import osmo_eval, project, server  # noqa: F401 - fixtures
from .test_gc_concurrency import GC_PAUSED_AFTER_WALK, finished, wait_for
from .waiting import DEADLINE, wait_for_fs_clock_past


def _written_by_a_process_that_exited(store: Path, entries: dict[str, bytes]) -> dict[str, str]:
    """Blobs (and a tree of them, under key "tree") written and left unnamed, as
    `osmo hash-object -w` leaves them: its lease ended with it."""
    with Repository.open(store) as repo:
        ids = {name: repo.objects.put(ObjectType.BLOB, c) for name, c in entries.items()}
        tree = write_tree(
            repo.objects, [TreeEntry(n, ObjectType.BLOB, ObjectId(o)) for n, o in ids.items()]
        )
        newest = max(os.stat(repo.objects.loose_path(o)).st_mtime_ns for o in [*ids.values(), tree])
    wait_for_fs_clock_past(store / "leases", newest)
    return {**ids, "tree": tree}


def _gc_paused_after_walk(store: Path, sync: Path) -> subprocess.Popen:
    sync.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", GC_PAUSED_AFTER_WALK, str(store), str(sync)])
    wait_for(sync / "walked", proc, "gc walking the refs")
    return proc


def test_update_ref_while_gc_runs_keeps_its_target(tmp_path: Path, store_path: Path) -> None:
    """C-1 at its narrowest: gc has walked the refs (the blob is unreachable and older than
    gc's start), then `update-ref` names the blob. gc must not delete it."""
    init_store(store_path)
    ids = _written_by_a_process_that_exited(store_path, {"a": b"hash-object -w wrote this"})
    g = _gc_paused_after_walk(store_path, tmp_path / "sync")
    with Repository.open(store_path) as writer:
        writer.update_ref("refs/tags/keep", ObjectId(ids["a"]))
    (tmp_path / "sync" / "gc-go").touch()
    finished(g, 0)
    with Repository.open(store_path) as repo:
        assert fsck(repo).problems == []
        got = repo.objects.get(ObjectId(ids["a"]))
        assert got == (ObjectType.BLOB, b"hash-object -w wrote this")


def test_ref_written_while_gc_runs_keeps_all_its_target_reaches(
    tmp_path: Path, store_path: Path
) -> None:
    """The target is a tree: protecting the tree alone would still let gc delete the blobs
    it names. gc re-reads the refs before it deletes, and keeps what the new ones reach."""
    init_store(store_path)
    contents = {f"row-{i}": f'{{"answer": {i}}}'.encode() for i in range(3)}
    ids = _written_by_a_process_that_exited(store_path, contents)
    g = _gc_paused_after_walk(store_path, tmp_path / "sync")
    with Repository.open(store_path) as writer:
        writer.update_ref("refs/tags/tree", ObjectId(ids["tree"]))
    (tmp_path / "sync" / "gc-go").touch()
    finished(g, 0)
    with Repository.open(store_path) as repo:
        assert fsck(repo).problems == []
        for name, content in contents.items():
            assert repo.objects.get(ObjectId(ids[name])) == (ObjectType.BLOB, content)


def test_update_ref_refuses_a_missing_object(repo: Repository, store_path: Path, capsys) -> None:
    missing = ObjectId("ab" * 32)
    with pytest.raises(ObjectNotFound, match="refs/tags/x"):
        repo.update_ref("refs/tags/x", missing)
    assert repo.refs.read("refs/tags/x") is None
    assert main(["--store", str(store_path), "update-ref", "refs/tags/x", missing]) == 1
    assert repo.refs.read("refs/tags/x") is None
    assert "ab" * 32 in capsys.readouterr().err


# --- the race, between real processes -------------------------------------------------------

# argv: store, stop file. Runs `osmo cache gc --prune=now` until the stop file exists, then
# prints how many times it ran.
GC_LOOP = r"""
import os, subprocess, sys
store, stop = sys.argv[1], sys.argv[2]
cmd = [sys.executable, "-m", "osmo_store.cli", "--store", store, "cache", "gc", "--prune=now"]
runs = 0
while not os.path.exists(stop):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"gc failed: {r.stdout}{r.stderr}")
    runs += 1
print(runs)
"""


def hash_object_then_update_ref_against_gc(
    tmp_path: Path, store: Path, osmo_cmd: list[str], rounds: int
) -> None:
    init_store(store)
    stop = tmp_path / "stop"
    loop = subprocess.Popen(
        [sys.executable, "-c", GC_LOOP, str(store), str(stop)], stdout=subprocess.PIPE, text=True
    )
    refused = 0
    try:
        for i in range(rounds):
            if loop.poll() is not None:
                break
            content = f"round {i} of the race {time.time_ns()}".encode()
            base = [*osmo_cmd, "--store", str(store)]
            h = subprocess.run(
                [*base, "hash-object", "-w", "--stdin"], input=content, capture_output=True,
                timeout=DEADLINE,
            )  # fmt: skip
            assert h.returncode == 0, h.stderr
            oid = h.stdout.decode().strip()
            u = subprocess.run(
                [*base, "update-ref", f"refs/race/r{i}", oid], capture_output=True, text=True,
                timeout=DEADLINE,
            )  # fmt: skip
            # gc may take the blob before the ref protects it: then update-ref must refuse.
            if u.returncode != 0:
                assert "not found" in u.stderr, u.stderr
                refused += 1
    finally:
        stop.touch()
        out, _ = loop.communicate(timeout=DEADLINE * 5)
    assert loop.returncode == 0, "the gc loop failed"
    with Repository.open(store) as repo:
        refs = repo.refs.list("refs/race/")
        missing = [n for n, o in refs.items() if not repo.objects.has(o)]
        assert missing == [], f"refs naming missing objects: {missing}"
        assert fsck(repo).problems == []
    assert len(refs) + refused == rounds
    print(f"{rounds} rounds, {refused} refused, {out.strip()} gc runs")


def test_hash_object_and_update_ref_race_gc(tmp_path, store_path, osmo_cmd) -> None:
    hash_object_then_update_ref_against_gc(tmp_path, store_path, osmo_cmd, rounds=8)


@pytest.mark.slow
def test_hash_object_and_update_ref_race_gc_long(tmp_path, store_path, osmo_cmd) -> None:
    hash_object_then_update_ref_against_gc(tmp_path, store_path, osmo_cmd, rounds=50)


# --- G-2: a ref that cannot be parsed --------------------------------------------------------


def _config_with_old_history(repo: Repository, store: Path) -> ObjectId:
    """A config ref whose reflog is long expired by gc's default, and a blob only it names."""
    oid = repo.objects.put(ObjectType.BLOB, b"the only copy of a config's results")
    repo.update_ref("refs/evals/x", oid)
    log = store / "logs" / "refs" / "evals" / "x~log"
    old = log.read_text().split(" ")
    old[2] = "1000000000"  # 1970: older than any expiry
    log.write_text(" ".join(old))
    (store / "refs" / "evals" / "x").write_text("not an id at all\n")
    repo.objects.release_idle_lease(0)  # this writer is done: its lease protects nothing
    return oid


def test_gc_with_a_damaged_ref_deletes_nothing_and_keeps_the_reflog(
    repo: Repository, store_path: Path
) -> None:
    oid = _config_with_old_history(repo, store_path)
    before = (store_path / "logs" / "refs" / "evals" / "x~log").read_text()
    with pytest.raises(CorruptRef, match="refs/evals/x"):
        gc(repo, prune="now")
    # Not even the reflog expired: it may be all that says where the ref pointed.
    assert (store_path / "logs" / "refs" / "evals" / "x~log").read_text() == before
    assert repo.objects.has(oid)
    assert any("refs/evals/x" in p for p in fsck(repo).problems)


@pytest.mark.parametrize("command", [["cache", "gc"], ["eval", "cache", "gc"]])
def test_gc_commands_stop_at_a_damaged_ref_unless_told(
    repo: Repository, store_path: Path, capsys, command: list[str]
) -> None:
    oid = _config_with_old_history(repo, store_path)
    argv = ["--store", str(store_path), *command]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "damaged ref refs/evals/x" in err and "--ignore-damaged-refs" in err
    assert repo.objects.has(oid)
    assert main([*argv, "--ignore-damaged-refs"]) == 0
    out = capsys.readouterr().out
    assert "refs/evals/x" in out  # says what it went ahead without
    assert not repo.objects.has(oid)


# --- gc frees what rm promises ------------------------------------------------------------------


def _objects_size(store: Path) -> int:
    return sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(store / "objects")
        for f in files
    )


@pytest.fixture
def evaluate(request: pytest.FixtureRequest):
    """test_eval's ``osmo_eval`` (an eval against the mock model server)."""
    return request.getfixturevalue("osmo_eval")


def test_rm_then_default_gc_gives_the_space_back(evaluate, store_path: Path, capsys) -> None:
    code, kept, err = evaluate()
    assert code == 0, err
    assert main(["--store", str(store_path), "cache", "gc"]) == 0
    capsys.readouterr()
    base = _objects_size(store_path)
    code, doomed, err = evaluate("--temperature", "0.7", "--n", "4")  # no call in common
    assert code == 0, err
    grown = _objects_size(store_path) - base
    assert grown > 0
    assert main(["--store", str(store_path), "eval", "cache", "rm", "-y", doomed["config_id"]]) == 0
    out = capsys.readouterr().out
    promised = int(re.search(r"`osmo eval cache gc` frees .* \((\d+) bytes\)", out)[1])
    assert main(["--store", str(store_path), "eval", "cache", "gc"]) == 0
    out = capsys.readouterr().out
    freed = int(re.search(r"removed \d+ objects, .* \((\d+) bytes\)", out)[1])
    assert freed == promised
    after = _objects_size(store_path)
    # The removed config's data is gone; what is left beyond the kept config's is the
    # lookup index rebuilt without it (a few small nodes).
    assert after - base < grown * 0.1, (base, grown, after)
    assert freed >= grown * 0.8, (freed, grown)
    with Repository.open(store_path) as repo:
        assert fsck(repo).problems == []
        assert [r for r in repo.refs.list() if kept["config_id"] in r]
