"""No garbage by construction: an eval's superseded checkpoints (manifest nodes and run
records no ref reaches any more) are reclaimed by its recorder when it ends, and a second
config on the same solver stores no second copy of the first one's manifests. Along the
way, what the recorder keeps to reclaim them, and the index pages its checks map, stay
bounded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from osmo_store import Repository
from osmo_store.eval.client import ChatClient
from osmo_store.eval.prepare import prepare_eval
from osmo_store.eval.runner import EvalOptions, run_eval
from osmo_store.eval.state import Recorder
from osmo_store.maintenance.fsck import fsck
from osmo_store.maintenance.gc import gc
from osmo_store.testing.mockserver import MockServer

ROWS = 300


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = [{"user_prompt": f"What is {i} * 5?", "ground_truth": str(5 * i)} for i in range(ROWS)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(
            f"def {name}(solution_str, ground_truth, extra_info):\n"
            "    return solution_str.strip() == ground_truth\n"
        )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def evaluate(store: Path, srv: MockServer, fn: str, recorder_process: bool) -> None:
    """An eval with a checkpoint every few runs (a short commit interval)."""
    prepared = prepare_eval("data.jsonl", [fn], model="m", base_url=srv.base_url)
    options = EvalOptions(concurrency=4, commit_interval=0.01, recorder_process=recorder_process)
    with Repository.open(store) as repo, ChatClient(prepared.base_url, api_key=None) as client:
        outcome = run_eval(repo, prepared, client=client, options=options)
        assert outcome.status == "completed"
        commits = len(repo.refs.reflog(f"refs/evals/{prepared.config.config_id}"))
        assert commits == 2  # the opening and the final commit; the checkpoints between
        # them are not logged


def unreachable(store: Path) -> int:
    with Repository.open(store) as repo:
        return gc(repo, prune="now", dry_run=True).objects_removed


def stored_copies(store: Path) -> Counter[str]:
    """How many times each object id is stored (in packs, and loose)."""
    copies: Counter[str] = Counter()
    with Repository.open(store) as repo:
        objects = repo.objects
        objects.reload_packs()
        for pack in objects.packs():
            copies.update(oid for oid, _, _ in pack.entries())
        copies.update(oid for oid, _ in objects.iter_loose())
    return copies


@pytest.mark.parametrize("recorder_process", [True, False])
def test_superseded_checkpoints_are_reclaimed_when_the_eval_ends(
    tmp_path: Path, project: Path, recorder_process: bool
) -> None:
    store = tmp_path / "store"
    with MockServer(latency=0.005) as srv:
        evaluate(store, srv, "a.py:a", recorder_process)
    assert unreachable(store) == 0
    with Repository.open(store) as repo:
        report = fsck(repo, full=True)
        assert report.ok, report.problems


def test_a_second_config_on_the_same_solver_stores_no_second_copy_of_anything(
    tmp_path: Path, project: Path
) -> None:
    store = tmp_path / "store"
    with MockServer(latency=0.005) as srv:
        evaluate(store, srv, "a.py:a", True)
        evaluate(store, srv, "b.py:b", True)
        assert srv.calls == ROWS  # the second config reused every rollout
    copies = stored_copies(store)
    assert [oid for oid, n in copies.items() if n > 1] == []
    assert unreachable(store) == 0


def test_superseded_checkpoints_are_reclaimed_as_the_eval_goes(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the recorder notes to reclaim stays bounded (a long eval noted an id per node
    each commit superseded: ~150 bytes, more of them a run the longer it went), and what it
    reclaims along the way leaves a whole store."""
    bound = 40
    monkeypatch.setattr(Recorder, "RECLAIM_AFTER", bound, raising=False)
    noted: list[int] = []
    live: list[int] = []  # nodes and run records the checkpoint in place (and lookups) reach
    commit = Recorder.commit

    def spy(self: Recorder, *args: Any, **kwargs: Any) -> str:
        run_id = commit(self, *args, **kwargs)
        noted.append(len(self._written))
        live.append(len(self._still_used(self._held_by_lookups)))
        return run_id

    monkeypatch.setattr(Recorder, "commit", spy)
    store = tmp_path / "store"
    with MockServer(latency=0.005) as srv:
        evaluate(store, srv, "a.py:a", recorder_process=False)
    assert len(noted) > 10, "too few checkpoints to tell"
    # what the current checkpoint uses stays noted (a later one may supersede it)
    assert max(noted) < bound + max(live)
    assert unreachable(store) == 0
    with Repository.open(store) as repo:
        report = fsck(repo, full=True)
        assert report.ok, report.problems


def _mapped_index_kib(store: Path) -> tuple[int, int]:
    """(KiB of this process's RSS in the store's mapped pack indexes, their size in KiB)."""
    rss = size = 0
    mapping = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                mapping = fields[5] if len(fields) > 5 else ""
            elif mapping.startswith(str(store)) and mapping.endswith(".idx"):
                if fields[0] == "Rss:":
                    rss += int(fields[1])
                elif fields[0] == "Size:":
                    size += int(fields[1])
    return rss, size


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps")
def test_the_recorder_lets_go_of_the_index_pages_its_checks_map(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each commit's presence checks map pages of every pack index: kept, they made the
    recorder's memory grow with the store. After each commit, few are still mapped."""
    store = tmp_path / "store"
    mapped: list[tuple[int, int]] = []
    commit = Recorder.commit

    def spy(self: Recorder, *args: Any, **kwargs: Any) -> str:
        run_id = commit(self, *args, **kwargs)
        mapped.append(_mapped_index_kib(store))
        return run_id

    monkeypatch.setattr(Recorder, "commit", spy)
    with MockServer(latency=0.005) as srv:
        evaluate(store, srv, "a.py:a", recorder_process=False)
    big = [(rss, size) for rss, size in mapped if size >= 32]  # indexes of 8 pages or more
    assert big, mapped
    assert sum(rss for rss, _ in big) <= sum(size for _, size in big) / 4, big
