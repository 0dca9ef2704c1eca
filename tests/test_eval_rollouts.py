"""The ``rollouts`` manifest and version 3 sample blobs (objects_spec.md section 9): a
second config on the same solver stores its own scores and little else (the rollouts
manifest is the first config's, and runs with equal results share a sample blob), fsck
names a finished sample whose rollout cannot be found, and a merge of two histories keeps
``rollouts`` on the winning samples. Real evals in-process, the mock model server on
127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.cli.main import main
from osmo_store.eval.configstate import ConfigState, config_ref
from osmo_store.objects import RunRecord
from osmo_store.testing.mockserver import MockServer
from osmo_store.tree import TreeEntry, iter_tree, update_tree, write_tree

from .evalproject import default_rows, forget_modules_under, write_rows
from .test_eval_samples import osmo
from .waiting import wait_until

FNS = (
    "def exact(solution_str, ground_truth, extra_info):\n"
    "    return solution_str.strip() == ground_truth\n"
    "def close(solution_str, ground_truth, extra_info):\n"
    "    return abs(float(solution_str) - float(ground_truth)) < 0.5\n"
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_rows(tmp_path / "data.jsonl", default_rows(300))
    (tmp_path / "fns.py").write_text(FNS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    yield tmp_path
    forget_modules_under(tmp_path)


def run_eval(store: Path, server: MockServer, capsys, fn: str, *extra: str) -> dict:
    code, out = osmo(capsys, "--store", str(store), "eval", "-d", "data.jsonl", "--model", "m",
                     "--base-url", server.base_url, "--eval-fn", f"fns.py:{fn}", "-q", "--json",
                     *extra)  # fmt: skip
    assert code == 0, out
    return json.loads(out)


def names_to_ids(repo: Repository, tree: str) -> dict[str, str]:
    return {e.name: e.oid for e in iter_tree(repo.objects, tree)}


def trees(repo: Repository, config_id: str) -> dict:
    return ConfigState.from_run(repo, repo.refs.read(config_ref(config_id))).trees


def test_a_second_config_on_the_same_solver_shares_its_rollouts_manifest_and_few_samples(
    tmp_path: Path, project: Path, capsys
) -> None:
    store = tmp_path / "store"
    with MockServer() as server:
        first = run_eval(store, server, capsys, "exact")["config_id"]
        asked = server.calls
        second = run_eval(store, server, capsys, "close")["config_id"]
        assert server.calls == asked  # every rollout reused
    with Repository.open(store) as repo:
        a, b = trees(repo, first), trees(repo, second)
        assert a["rollouts"] == b["rollouts"]  # the same nodes: stored once
        rollouts = {e.name: e.oid for e in iter_tree(repo.objects, b["rollouts"])}
        samples = {e.name: e.oid for e in iter_tree(repo.objects, b["samples"])}
        assert rollouts.keys() == samples.keys() and len(samples) == 300
        # runs with equal results finishing in the same second are one blob
        assert len(set(samples.values())) < 300 / 4
        cache = {e.oid for e in iter_tree(repo.objects, b["cache"])}
        assert set(rollouts.values()) <= cache
        assert len(set(rollouts.values())) == 300


def test_fsck_names_a_finished_sample_whose_rollout_is_not_in_rollouts(
    tmp_path: Path, project: Path, capsys
) -> None:
    store = tmp_path / "store"
    write_rows(project / "data.jsonl", default_rows(4))
    with MockServer() as server:
        config_id = run_eval(store, server, capsys, "exact")["config_id"]
    assert osmo(capsys, "--store", str(store), "fsck")[0] == 0
    with Repository.open(store) as repo:
        head = repo.refs.read(config_ref(config_id))
        state = ConfigState.from_run(repo, head)
        names = sorted(e.name for e in iter_tree(repo.objects, state.trees["rollouts"]))
        row = repo.objects.put(ObjectType.BLOB, b"{}")  # a blob, not a rollout
        changed = {names[0]: None, names[1]: TreeEntry(names[1], ObjectType.BLOB, row)}
        subtrees = {**state.trees, "rollouts": update_tree(repo.objects, state.trees["rollouts"],
                                                           changed)}  # fmt: skip
        root = write_tree(repo.objects, [TreeEntry(n, ObjectType.TREE, t)
                                         for n, t in subtrees.items()])  # fmt: skip
        assert state.record is not None
        run = repo.objects.put_run(RunRecord(root, (head,), state.record.meta))
        repo.update_ref(config_ref(config_id), run, head, message="test: lose a rollout")
    capsys.readouterr()
    code = main(["--store", str(store), "fsck"])
    out = capsys.readouterr().out
    assert code != 0
    ref = config_ref(config_id)
    assert f"{ref}: samples/{names[0]}: a finished sample with no entry" in out
    assert f"{ref}: samples/{names[1]}: its 'rollouts' entry is not a rollout" in out
    code, out = osmo(capsys, "--store", str(store), "eval", "show", config_id, "--row",
                     names[0], "--json")  # fmt: skip
    assert code != 0 and names[0] in out and "\n" not in out.strip()  # one line, no traceback


def test_a_merge_of_two_histories_keeps_rollouts_on_the_winning_samples(
    tmp_path: Path, project: Path, capsys
) -> None:
    """Two machines ran the same config (different rollouts, finished at different times),
    pushed to one remote and pulled back: each run's ``rollouts`` entry is the rollout of
    the sample that won (the newer), and its ``cache`` entry follows."""
    write_rows(project / "data.jsonl", default_rows(6))
    one, two, remote = tmp_path / "one", tmp_path / "two", tmp_path / "remote"
    with MockServer() as server:
        config_id = run_eval(one, server, capsys, "exact")["config_id"]
        with Repository.open(one) as repo:
            mine = names_to_ids(repo, trees(repo, config_id)["rollouts"])
        # the next second at least: the second machine's results are the newer
        second = int(time.time()) + 1
        wait_until(lambda: time.time() >= second, what="the next second", timeout=5)
        assert run_eval(two, server, capsys, "exact")["config_id"] == config_id
    for store in (one, two):
        assert osmo(capsys, "--store", str(store), "push", str(remote))[0] == 0
    assert osmo(capsys, "--store", str(one), "pull", str(remote))[0] == 0
    with Repository.open(two) as repo:
        newer = names_to_ids(repo, trees(repo, config_id)["rollouts"])
    with Repository.open(one) as repo:
        merged = trees(repo, config_id)
        rollouts = {e.name: e.oid for e in iter_tree(repo.objects, merged["rollouts"])}
        cache = {e.name: e.oid for e in iter_tree(repo.objects, merged["cache"])}
        assert rollouts == newer and set(newer.values()).isdisjoint(mine.values())
        for rid in rollouts.values():
            rollout = json.loads(repo.objects.get_typed(rid, ObjectType.BLOB))
            assert cache[rollout["key"]] == rid
    assert osmo(capsys, "--store", str(one), "fsck")[0] == 0
    exported = tmp_path / "out.jsonl"
    assert osmo(capsys, "--store", str(one), "eval", "export", config_id, "-o",
                str(exported))[0] == 0  # fmt: skip
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(records) == 6 and all(r["status"] == "ok" and r["solution"] for r in records)


def _store_version(store: Path) -> int:
    return json.loads((store / "osmo.json").read_text())["version"]


def _as_an_older_osmo_left_it(store: Path) -> None:
    (store / "osmo.json").write_text(json.dumps({"format": "osmo-store", "version": 2}))


def test_an_eval_or_a_sync_raises_the_store_so_an_older_osmo_refuses_it(
    tmp_path: Path, project: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An osmo that reads only store versions 1 and 2 would resume a config recorded with
    version 3 samples writing its four manifests: the rollouts manifest gone, every sample
    damaged (seen with fc2f2c1's osmo). So whatever records or merges configs raises the
    store to version 3 first, and such an osmo refuses the store with one line."""
    write_rows(project / "data.jsonl", default_rows(6))
    store, other = tmp_path / "store", tmp_path / "other"
    assert osmo(capsys, "init", str(store))[0] == 0
    _as_an_older_osmo_left_it(store)
    with MockServer() as server:
        run_eval(store, server, capsys, "exact")
    assert _store_version(store) == 3
    assert osmo(capsys, "init", str(other))[0] == 0
    _as_an_older_osmo_left_it(other)
    assert osmo(capsys, "--store", str(other), "pull", str(store))[0] == 0
    assert _store_version(other) == 3
    _as_an_older_osmo_left_it(other)
    assert osmo(capsys, "--store", str(store), "push", str(other))[0] == 0
    assert _store_version(other) == 3
    monkeypatch.setattr("osmo_store.repo.READABLE_STORE_VERSIONS", (1, 2))
    code, err = osmo(capsys, "--store", str(store), "eval", "cache", "ls")
    assert code != 0 and "store format version 3; this osmo reads versions 1 and 2" in err
    assert "Traceback" not in err


def test_raising_the_store_format_never_lowers_it(tmp_path: Path) -> None:
    from osmo_store.repo import upgrade_store_format

    with Repository.open(tmp_path / "s") as repo:
        assert _store_version(tmp_path / "s") == 3
        assert upgrade_store_format(repo, 2) is False  # what `osmo repack` asks
    assert _store_version(tmp_path / "s") == 3


def test_reading_a_config_recorded_before_rollouts_writes_nothing(
    tmp_path: Path, project: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config from before the ``rollouts`` manifest lacks it; its readers stand in the
    empty manifest, which the store holds already: reading must not write (nor take a
    writer lease, which a read-only store could not)."""
    from osmo_store.backends.local import LocalObjectStore

    write_rows(project / "data.jsonl", default_rows(4))
    store = tmp_path / "store"
    with MockServer() as server:
        config_id = run_eval(store, server, capsys, "exact")["config_id"]
    with Repository.open(store) as repo:  # the config as an osmo before rollouts left it
        head = repo.refs.read(config_ref(config_id))
        record = repo.objects.get_run(head)
        root = [e for e in iter_tree(repo.objects, record.tree) if e.name != "rollouts"]
        with repo.objects.bulk() as w:
            older = w.put(ObjectType.RUN, RunRecord(write_tree(w, root), (head,),
                                                    record.meta).to_content())  # fmt: skip
        repo.update_ref(config_ref(config_id), older, head)

    def no_lease(self):
        raise AssertionError("a reader took a writer lease")

    monkeypatch.setattr(LocalObjectStore, "lease", no_lease)
    with Repository.open(store) as repo:
        state = ConfigState.load(repo, config_id)
        assert state.count(repo, "rollouts") == 0 and state.count(repo, "samples") == 4
