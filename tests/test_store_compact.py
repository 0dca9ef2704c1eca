"""A compact store (issue 15): what each kind of object costs (`osmo cache stats`), and small
objects that do not stay loose after an eval or a run of CLI writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.backends.compaction import LOOSE_MAX, SMALL_PACK
from osmo_store.cli.main import main
from osmo_store.eval.catalog import list_configs
from osmo_store.eval.state import ConfigState
from osmo_store.testing.mockserver import MockServer
from osmo_store.tree import iter_tree

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def server():
    with MockServer() as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ("agent.py", "scoring.py"):
        shutil.copy(EXAMPLES / name, folder / name)
    rows = [{"user_prompt": f"What is {i} + {i + 1}?", "ground_truth": str(2 * i + 1)}
            for i in range(10)]  # fmt: skip
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(folder)
    return folder


def osmo(store: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["--store", str(store), *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return code, captured.out


def run_eval(store: Path, server: MockServer, capsys, *extra: str) -> dict:
    argv = ["eval", "-d", "data.jsonl", "--model", "mock", "--base-url", server.base_url,
            "--agent", "agent.py:solve", "--eval-fn", "scoring.py:exact_match", "--n", "2",
            "-q", "--json", *extra]  # fmt: skip
    return json.loads(osmo(store, capsys, *argv)[1])


def loose_count(store: Path) -> int:
    objects = store / "objects"
    return sum(
        1 for d in objects.iterdir() if len(d.name) == 2 for f in d.iterdir()
        if not f.name.startswith("tmp-")
    )  # fmt: skip


def test_cache_stats_per_kind_adds_up(store_path, server, project, capsys) -> None:
    body = run_eval(store_path, server, capsys)
    (project / "junk.txt").write_text("nobody names me")
    osmo(store_path, capsys, "hash-object", "-w", "junk.txt")
    stats = json.loads(osmo(store_path, capsys, "cache", "stats", "--json")[1])
    kinds = stats["kinds"]
    with Repository.open(store_path) as repo:
        run_id = next(c.run_id for c in list_configs(repo) if c.config_id == body["config_id"])
        trees = ConfigState.from_run(repo, run_id).trees
        cache_keys = [e.name for e in iter_tree(repo.objects, trees["cache"])]
        samples = {e.oid for e in iter_tree(repo.objects, trees["samples"])}
    calls = sum(k.startswith("c") for k in cache_keys)
    # 10 rows, 2 runs each: runs with equal results in one second share a blob
    assert kinds["samples"]["objects"] == len(samples) >= 1
    assert kinds["rows"]["objects"] == 10
    assert kinds["calls"]["objects"] == calls > 0
    assert kinds["rollouts"]["objects"] == len(cache_keys) - calls == 20
    assert kinds["runs"]["objects"] >= 1 and kinds["trees"]["objects"] >= 5
    assert kinds["unreachable"]["objects"] == 1  # the junk blob
    # Every stored copy is counted once, in one kind: the kinds add up to the totals.
    for field, total in (("objects", "objects"), ("logical_bytes", "bytes_uncompressed"),
                         ("stored_bytes", "bytes_stored")):  # fmt: skip
        assert sum(k[field] for k in kinds.values()) == stats[total], field
    for k in kinds.values():
        assert k["disk_bytes"] >= k["stored_bytes"]
        if k["stored_bytes"]:
            assert k["ratio"] == round(k["logical_bytes"] / k["stored_bytes"], 3)
    assert kinds["overhead"]["objects"] == 0 and kinds["overhead"]["disk_bytes"] > 0
    _, text = osmo(store_path, capsys, "cache", "stats")
    assert "rollouts" in text and "unreachable" in text


def test_no_loose_objects_after_an_eval(store_path, server, project, capsys) -> None:
    run_eval(store_path, server, capsys)
    assert loose_count(store_path) == 0
    # A few CLI writes stay loose (a pack of one object costs more) until the next bulk
    # write folds them: here a label, two objects and a second eval.
    for i in range(3):
        (project / f"f{i}.txt").write_text(f"file {i}")
        osmo(store_path, capsys, "hash-object", "-w", f"f{i}.txt")
    with Repository.open(store_path) as repo:
        config = list_configs(repo)[0].config_id
    osmo(store_path, capsys, "eval", "label", config[:12], "baseline")
    assert 0 < loose_count(store_path) < LOOSE_MAX
    run_eval(store_path, server, capsys, "--temperature", "0.5")
    assert loose_count(store_path) == 0
    assert osmo(store_path, capsys, "fsck", "--full")[0] == 0


def test_loose_objects_stay_bounded_without_bulk_writes(store_path, project, capsys) -> None:
    ids = []
    for i in range(LOOSE_MAX * 2 + 3):
        (project / "f.txt").write_text(f"one small file, number {i}")
        ids.append(osmo(store_path, capsys, "hash-object", "-w", "f.txt")[1].strip())
        assert loose_count(store_path) < LOOSE_MAX
    for i, oid in enumerate(ids):
        _, out = osmo(store_path, capsys, "cat-file", "-p", oid)
        assert out == f"one small file, number {i}"


def test_loose_objects_fold_in_with_a_small_pack_never_a_big_one(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        big = [w.put(ObjectType.BLOB, os.urandom(2**20)) for _ in range(SMALL_PACK // 2**20 + 1)]
    (big_pack,) = repo.objects.packs()
    small = [repo.objects.put(ObjectType.BLOB, b"small %d" % i) for i in range(3)]
    repo.objects.after_bulk_write()
    assert loose_count(repo.path) == 0
    assert big_pack.pack_path.exists()  # not rewritten for three small objects
    assert len(repo.objects.packs()) == 2
    small += [repo.objects.put(ObjectType.BLOB, b"more %d" % i) for i in range(3)]
    repo.objects.after_bulk_write()  # now folded in with the small pack
    assert len(repo.objects.packs()) == 2 and loose_count(repo.path) == 0
    for oid in [*big, *small]:
        assert repo.objects.has(oid)


def test_stats_of_a_v2_pack_give_each_objects_framed_size(repo: Repository) -> None:
    """A version 2 pack's frames are compressed with its dictionary: the logical bytes of
    ``cache stats`` come from each frame's header as stored, and add up to the framed sizes."""
    from osmo_store.maintenance.footprint import UNREACHABLE, footprint
    from osmo_store.objects import frame_object

    records = [{"row": i, "messages": [f"What is {i} + {j}?" for j in range(6)],
                "scores": {"exact_match": i % 2}} for i in range(2000)]  # fmt: skip
    contents = [json.dumps(r).encode() for r in records]
    with repo.objects.bulk() as w:
        for content in contents:
            w.put(ObjectType.BLOB, content)
    repo.objects.after_bulk_write()
    packs = repo.objects.packs()
    assert any(p.version == 2 and p._load_codec("0" * 64).dictionary for p in packs)
    framed = sum(len(frame_object(ObjectType.BLOB, c)[1]) for c in contents)
    kinds = footprint(repo, {})
    assert kinds[UNREACHABLE].objects == len(contents)
    assert kinds[UNREACHABLE].logical_bytes == framed
