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
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository, TreeEntry, init_store, write_tree
from osmo_store.cli.main import main
from osmo_store.errors import ObjectNotFound
from osmo_store.hashing import ObjectId
from osmo_store.maintenance.fsck import fsck

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
