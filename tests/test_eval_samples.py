"""Sample blobs, version 2 (objects_spec.md section 9): an eval writes only what neither the
manifest name nor the rollout says, and every reader gives the same for a store of
version 1 samples (converted by hand from the same eval, so nothing else differs) as for
one of version 2: show, export, verify, diff, report, the Python API, merges through
push and pull, --retry-failed and resume. Real evals in-process, the mock model server on
127.0.0.1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.cli.main import main
from osmo_store.errors import MalformedObject
from osmo_store.eval.configstate import ConfigState, config_ref
from osmo_store.eval.journal import read_journal
from osmo_store.eval.report_data import gather, sample_table
from osmo_store.eval.results import StoredConfig
from osmo_store.eval.state import SampleResult
from osmo_store.eval.stored import load_sample, parse_sample, sample_blob
from osmo_store.hashing import canonical_json
from osmo_store.maintenance.fsck import fsck
from osmo_store.objects import RunRecord
from osmo_store.testing.mockserver import ArithmeticResponder, MockServer
from osmo_store.tree import TreeEntry, iter_tree, write_tree

from .evalproject import forget_modules_under, write_rows
from .test_eval_durable import write_journal

ROWS = 8
FAILING = "What is 3 + 4?"  # the model errs on this row: a failed run
FNS = (
    "def exact(solution_str, ground_truth, extra_info):\n"
    "    return solution_str.strip() == ground_truth\n"
    "def picky(solution_str, ground_truth, extra_info):\n"
    "    if ground_truth == '11':\n"
    "        raise ValueError('no elevens')\n"
    "    return {'score': 1.0, 'length': float(len(solution_str))}\n"
)


class FailsOneRow:
    """The arithmetic answers, but an HTTP 500 for ``FAILING`` while ``failing``."""

    def __init__(self) -> None:
        self.failing = True
        self.answer = ArithmeticResponder()

    def __call__(self, request: dict[str, Any]) -> str:
        if self.failing and request["messages"][-1]["content"] == FAILING:
            raise RuntimeError("the model is down for this one")
        return self.answer(request)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rows = [{"user_prompt": f"What is {i} + {i + 1}?", "ground_truth": str(2 * i + 1)}
            for i in range(ROWS)]  # fmt: skip
    write_rows(tmp_path / "data.jsonl", rows)
    (tmp_path / "fns.py").write_text(FNS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    yield tmp_path
    forget_modules_under(tmp_path)


@pytest.fixture
def server():
    responder = FailsOneRow()
    with MockServer(responder=responder) as srv:
        yield srv


def osmo(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out if code in (0, 3) else captured.err


def run_eval(store: Path, server: MockServer, capsys, *extra: str,
             fns: tuple[str, ...] = ("exact",)) -> dict:  # fmt: skip
    args = ["--store", str(store), "eval", "-d", "data.jsonl", "--model", "m", "--base-url",
            server.base_url, "--max-retries", "0", "-q", "--json"]  # fmt: skip
    for fn in fns:
        args += ["--eval-fn", f"fns.py:{fn}"]
    code, out = osmo(capsys, *args, *extra)
    assert code in (0, 3), out  # 3: some runs failed
    return json.loads(out)


def entries(repo: Repository, config_id: str) -> list[tuple[str, str, Any]]:
    """(subtree, name, oid) of every sample of a config."""
    state = ConfigState.from_run(repo, repo.refs.read(config_ref(config_id)))
    return [(sub, e.name, e.oid) for sub in ("samples", "failed")
            for e in iter_tree(repo.objects, state.trees[sub])]  # fmt: skip


def as_version_1(store: Path, config_id: str) -> None:
    """Rewrite a config's samples as osmo wrote them before version 2 (every field, the
    rollout's key from the rollout blob), under a new run record with the same meta."""
    with Repository.open(store) as repo:
        head = repo.refs.read(config_ref(config_id))
        state = ConfigState.from_run(repo, head)
        new: dict[str, list[TreeEntry]] = {"samples": [], "failed": []}
        for sub, name, oid in entries(repo, config_id):
            s = load_sample(repo, oid, name)
            v1 = {"schema": 1, "row": s["row"], "run": s["run"], "finished": s["finished"],
                  "status": s["status"], "error": s["error"], "scores": s["scores"],
                  "scoring_errors": s["scoring_errors"], "rollout": None}  # fmt: skip
            if s["status"] == "ok":
                rollout = json.loads(repo.objects.get_typed(s["rollout_id"], ObjectType.BLOB))
                v1.update(rollout=rollout["key"], rollout_id=s["rollout_id"], usage=s["usage"])
            if s.get("calls"):
                v1["calls"] = s["calls"]
            v1_id = repo.objects.put(ObjectType.BLOB, canonical_json(v1))
            new[sub].append(TreeEntry(name, ObjectType.BLOB, v1_id))
        trees = dict(state.trees)
        for sub, items in new.items():
            trees[sub] = write_tree(repo.objects, items)
        root = write_tree(repo.objects, [TreeEntry(n, ObjectType.TREE, t)
                                         for n, t in sorted(trees.items())])  # fmt: skip
        assert state.record is not None
        run = repo.objects.put_run(RunRecord(root, (head,), state.record.meta))
        repo.update_ref(config_ref(config_id), run, head, message="test: samples as version 1")


def versions(store: Path, config_id: str) -> set[int]:
    with Repository.open(store) as repo:
        return {json.loads(repo.objects.get_typed(oid, ObjectType.BLOB)).get("schema")
                for _, _, oid in entries(repo, config_id)}  # fmt: skip


# --- the format ----------------------------------------------------------------------------


def test_an_eval_writes_samples_that_say_only_what_nothing_else_says(
    tmp_path: Path, project: Path, server: MockServer, capsys
) -> None:
    store = tmp_path / "store"
    body = run_eval(store, server, capsys, fns=("exact", "picky"))
    with Repository.open(store) as repo:
        state = ConfigState.from_run(repo, repo.refs.read(config_ref(body["config_id"])))
        cache = {e.oid: e.name for e in iter_tree(repo.objects, state.trees["cache"])}
        seen = set()
        for sub, name, oid in entries(repo, body["config_id"]):
            raw = json.loads(repo.objects.get_typed(oid, ObjectType.BLOB))
            s = load_sample(repo, oid, name)
            if sub == "failed":
                assert set(raw) == {"schema", "finished", "error"}
                assert s["status"] == "failed" and s["error"]["status"] == 500
            else:
                want = {"schema", "finished", "rollout_id", "scores", "usage"}
                assert set(raw) - {"scoring_errors"} == want
                assert s["status"] == "ok" and s["error"] is None
                # the rollout's key is the one its cache entry has, and the rollout says it
                rollout = json.loads(repo.objects.get_typed(raw["rollout_id"], ObjectType.BLOB))
                assert cache[raw["rollout_id"]] == rollout["key"]
            assert raw["schema"] == 2 and (s["row"], s["run"]) == (name.split(".")[0], 0)
            seen.add(("scoring_errors" in raw, sub))
        assert seen == {(False, "failed"), (False, "samples"), (True, "samples")}


def test_both_versions_read_as_the_same_sample() -> None:
    v1 = {"schema": 1, "row": "ab12", "run": 3, "finished": 1.5, "status": "ok", "error": None,
          "rollout": "r" + "0" * 64, "rollout_id": "1" * 64, "scores": {"exact": True},
          "scoring_errors": {}, "usage": {"total_tokens": 4}}  # fmt: skip
    v2 = sample_blob(v1)
    assert v2 == (b'{"finished":1.5,"rollout_id":"' + b"1" * 64 + b'","schema":2,'
                  b'"scores":{"exact":true},"usage":{"total_tokens":4}}')  # fmt: skip

    def unkeyed(sample: dict) -> dict:  # version 2 leaves the rollout's key to the rollout
        return {**{k: v for k, v in sample.items() if k != "rollout"}, "schema": 2}

    assert parse_sample(v2, "x", "ab12.3") == unkeyed(v1)
    assert parse_sample(canonical_json(v1), "x", "ab12.3") == v1
    failed = {"row": "ab12", "run": 0, "finished": 2.0, "status": "failed", "rollout": None,
              "error": {"type": "model_error", "status": 500, "message": "down"},
              "scores": {}, "scoring_errors": {}}  # fmt: skip
    assert parse_sample(sample_blob(failed), "x", "ab12.0") == unkeyed(failed)
    for bad_name in ("ab12", "ab12.x", ".0", "ab12.01", "ab12.²"):
        with pytest.raises(MalformedObject):
            parse_sample(v2, "x", bad_name)
    with pytest.raises(MalformedObject, match="format version 3"):
        parse_sample(b'{"schema":3}', "x", "ab12.0")


def test_a_journaled_sample_replays_as_readers_see_it(tmp_path: Path) -> None:
    sample = {"row": "ab12", "run": 1, "finished": 2.0, "status": "failed", "rollout": None,
              "error": {"type": "model_error", "message": "down"}, "scores": {},
              "scoring_errors": {}}  # fmt: skip
    write_journal(tmp_path / "j", [SampleResult("ab12.1", True, sample_blob(sample), sample)])
    (back,) = read_journal(tmp_path / "j")
    assert back.body == {**{k: v for k, v in sample.items() if k != "rollout"}, "schema": 2}


# --- readers, on either version -----------------------------------------------------------


def two_stores(tmp_path: Path, server: MockServer, capsys) -> tuple[Path, Path, list[str]]:
    """A store with two configs (one failed run, one scoring error), and a copy of it whose
    samples are version 1."""
    v2 = tmp_path / "v2"
    ids = [run_eval(v2, server, capsys, fns=fns)["config_id"]
           for fns in (("exact",), ("picky", "exact"))]  # fmt: skip
    v1 = tmp_path / "v1"
    shutil.copytree(v2, v1)
    for config_id in ids:
        as_version_1(v1, config_id)
        assert versions(v1, config_id) == {1} and versions(v2, config_id) == {2}
    return v1, v2, ids


def test_every_reader_gives_the_same_for_version_1_and_version_2_samples(
    tmp_path: Path, project: Path, server: MockServer, capsys
) -> None:
    import osmo_store

    v1, v2, (a, b) = two_stores(tmp_path, server, capsys)
    commands = [
        ["eval", "show", a, "--json"],
        ["eval", "show", b, "--row", "1", "--json"],  # a scoring error
        ["eval", "show", b, "--row", "3", "--json"],  # a failed run
        ["eval", "show", a, "--row", "0"],
        ["eval", "show", b, "--failed", "--json"],
        ["eval", "verify", b, "--json"],
        ["eval", "diff", a, b, "--json"],
    ]
    for argv in commands:
        outs = [osmo(capsys, "--store", str(s), *argv) for s in (v1, v2)]
        assert outs[0][0] in (0, 3), outs[0][1]
        if "--json" in argv:  # the conversion made a run record of its own: another id
            outs = [json.loads(out) for _, out in outs]
            for out in outs:
                out.pop("run", None)
        assert outs[0] == outs[1], argv
    for s in (v1, v2):
        assert osmo(capsys, "--store", str(s), "eval", "export", b, "-o", f"{s}.jsonl")[0] == 0
    assert Path(f"{v1}.jsonl").read_text() == Path(f"{v2}.jsonl").read_text()
    views = []
    for s in (v1, v2):
        with Repository.open(s) as repo:
            stored = [StoredConfig(repo, c) for c in (a, b)]
            data = gather(stored, metric="exact", resamples=200)
            report = [
                sample_table(data),
                [(c.status, c.views, c.groups, c.values) for c in data.configs],
                [(c.other, c.result, c.error, c.row_means) for c in data.comparisons],
            ]
            api = list(osmo_store.load(b, store=str(s)).samples())
            views.append((json.dumps(report, sort_keys=True, default=str), api))
            assert fsck(repo, full=True).ok
    assert views[0] == views[1]


def test_merging_a_version_1_and_a_version_2_history_of_one_config(
    tmp_path: Path, project: Path, server: MockServer, capsys
) -> None:
    """Two machines ran the same config (their results differ in time and rollout), one of
    them with an osmo that wrote version 1: pushed to one remote and pulled back, the newer
    result of each run wins and the cache entry of its rollout follows it."""
    old, new, remote = tmp_path / "old", tmp_path / "new", tmp_path / "remote"
    config_id = run_eval(old, server, capsys)["config_id"]
    as_version_1(old, config_id)
    server.responder.failing = False  # type: ignore[attr-defined]
    assert run_eval(new, server, capsys)["config_id"] == config_id
    for store in (old, new):
        assert osmo(capsys, "--store", str(store), "push", str(remote))[0] == 0
    assert osmo(capsys, "--store", str(old), "pull", str(remote))[0] == 0
    with Repository.open(new) as repo:
        newer = {name: load_sample(repo, oid, name) for _, name, oid in entries(repo, config_id)}
    with Repository.open(old) as repo:
        state = ConfigState.from_run(repo, repo.refs.read(config_ref(config_id)))
        cache = {e.name: e.oid for e in iter_tree(repo.objects, state.trees["cache"])}
        merged = entries(repo, config_id)
        assert {sub for sub, _, _ in merged} == {"samples"} and len(merged) == ROWS
        for _, name, oid in merged:
            s = load_sample(repo, oid, name)
            assert s["finished"] == newer[name]["finished"]  # the newer side won
            rollout = json.loads(repo.objects.get_typed(s["rollout_id"], ObjectType.BLOB))
            assert cache[rollout["key"]] == s["rollout_id"]
        assert fsck(repo, full=True).ok
    code, out = osmo(capsys, "--store", str(old), "eval", "show", config_id, "--json")
    assert code == 0 and json.loads(out)["summary"]["runs"] == ROWS


def test_retry_failed_and_resume_treat_version_1_samples_as_their_own(
    tmp_path: Path, project: Path, server: MockServer, capsys
) -> None:
    """On a version 1 store and a version 2 copy: --retry-failed asks again for exactly the
    failed run; an eval of all rows after one of half of them asks only for the rest; the
    summaries agree."""
    half = tmp_path / "half-v2"
    first = run_eval(half, server, capsys, "--shard", "1/2")
    shutil.copytree(half, tmp_path / "half-v1")
    as_version_1(tmp_path / "half-v1", first["config_id"])
    server.responder.failing = False  # type: ignore[attr-defined]
    summaries = []
    for store in (tmp_path / "half-v1", tmp_path / "half-v2"):
        before = server.calls
        body = run_eval(store, server, capsys)
        assert server.calls - before == ROWS - first["summary"]["runs"]
        summaries.append(body["summary"])
    assert untimed(summaries[0]) == untimed(summaries[1]) and summaries[0]["runs"] == ROWS
    server.responder.failing = True  # type: ignore[attr-defined]
    full = tmp_path / "full-v2"
    config_id = run_eval(full, server, capsys)["config_id"]
    shutil.copytree(full, tmp_path / "full-v1")
    as_version_1(tmp_path / "full-v1", config_id)
    server.responder.failing = False  # type: ignore[attr-defined]
    retried = []
    for store in (tmp_path / "full-v1", tmp_path / "full-v2"):
        before = server.calls
        body = run_eval(store, server, capsys, "--retry-failed")
        assert server.calls - before == 1 and body["summary"]["failed"] == 0
        retried.append(body["summary"])
    assert untimed(retried[0]) == untimed(retried[1])


def untimed(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_time_s"}
