"""Sample blobs, version 3 (objects_spec.md section 9): an eval writes only what neither the
manifest name, the config's ``rollouts`` manifest nor the rollout says, and every reader
gives the same for a store of version 1 or version 2 samples (converted by hand from the
same eval, so nothing else differs; version 2 with no ``rollouts`` manifest, as osmo wrote
it), and for a config holding both version 2 and version 3 samples, as for one of version
3: show, export, verify, diff, report, the Python API, fsck, merges through push and pull,
--retry-failed and resume. Real evals in-process, the mock model server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.cli.main import main
from osmo_store.errors import MalformedObject
from osmo_store.eval.configstate import ConfigState, config_ref
from osmo_store.eval.evalcheck import check_rollouts
from osmo_store.eval.journal import read_journal
from osmo_store.eval.report_data import gather, sample_table
from osmo_store.eval.results import StoredConfig
from osmo_store.eval.state import PendingObject, SampleResult
from osmo_store.eval.stored import SampleReader, load_sample, parse_sample, sample_blob
from osmo_store.hashing import ObjectId, canonical_json
from osmo_store.maintenance.fsck import fsck
from osmo_store.objects import RunRecord
from osmo_store.testing.mockserver import ArithmeticResponder, MockServer
from osmo_store.tree import TreeEntry, iter_tree, write_tree

from .evalproject import forget_modules_under, write_rows
from .test_eval_durable import write_journal
from .waiting import wait_until

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


def as_version(store: Path, config_id: str, version: int, *, half: bool = False) -> None:
    """Rewrite a config's samples (``half``: every other one, by name) as osmo wrote them
    before version 3, under a new run record with the same meta: version 1 (every field,
    the rollout's key from the rollout blob) or 2 (the rollout's id in the blob); the
    samples rewritten lose their ``rollouts`` entry (with none left, the config's tree has
    no ``rollouts`` manifest, as before version 3)."""
    with Repository.open(store) as repo:
        head = repo.refs.read(config_ref(config_id))
        state = ConfigState.from_run(repo, head)
        reader = SampleReader(repo, state.trees)
        rollouts = {e.name: e for e in iter_tree(repo.objects, state.trees["rollouts"])}
        new: dict[str, list[TreeEntry]] = {"samples": [], "failed": []}
        for i, (sub, name, oid) in enumerate(sorted(entries(repo, config_id))):
            if half and i % 2:
                new[sub].append(TreeEntry(name, ObjectType.BLOB, oid))
                continue
            s = reader.load(oid, name)
            rollouts.pop(name, None)
            if version == 1:
                old = {"schema": 1, "row": s["row"], "run": s["run"], "finished": s["finished"],
                       "status": s["status"], "error": s["error"], "scores": s["scores"],
                       "scoring_errors": s["scoring_errors"], "rollout": None}  # fmt: skip
                if s["status"] == "ok":
                    rollout = json.loads(repo.objects.get_typed(s["rollout_id"], ObjectType.BLOB))
                    old.update(rollout=rollout["key"], rollout_id=s["rollout_id"],
                               usage=s["usage"])  # fmt: skip
            else:
                old = json.loads(repo.objects.get_typed(oid, ObjectType.BLOB))
                old["schema"] = 2
                if s["status"] == "ok":
                    old["rollout_id"] = s["rollout_id"]
            if s.get("calls"):
                old["calls"] = s["calls"]
            old_id = repo.objects.put(ObjectType.BLOB, canonical_json(old))
            new[sub].append(TreeEntry(name, ObjectType.BLOB, old_id))
        trees = dict(state.trees)
        for sub, items in new.items():
            trees[sub] = write_tree(repo.objects, items)
        trees["rollouts"] = write_tree(repo.objects, rollouts.values())
        if not rollouts:
            del trees["rollouts"]
        root = write_tree(repo.objects, [TreeEntry(n, ObjectType.TREE, t)
                                         for n, t in sorted(trees.items())])  # fmt: skip
        assert state.record is not None
        run = repo.objects.put_run(RunRecord(root, (head,), state.record.meta))
        repo.update_ref(config_ref(config_id), run, head, message=f"test: samples as {version}")


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
        rollouts = {e.name: e.oid for e in iter_tree(repo.objects, state.trees["rollouts"])}
        reader = SampleReader(repo, state.trees)
        seen = set()
        for sub, name, oid in entries(repo, body["config_id"]):
            raw = json.loads(repo.objects.get_typed(oid, ObjectType.BLOB))
            s = reader.load(oid, name)
            assert isinstance(raw["finished"], int)  # whole seconds
            if sub == "failed":
                assert set(raw) == {"schema", "finished", "error"}
                assert s["status"] == "failed" and s["error"]["status"] == 500
                assert name not in rollouts and "rollout_id" not in s
            else:
                want = {"schema", "finished", "scores", "usage"}
                assert set(raw) - {"scoring_errors"} == want
                assert s["status"] == "ok" and s["error"] is None
                # the rollout is the config's rollouts entry of the same name; its key is
                # the one its cache entry has, and the rollout says it
                assert s["rollout_id"] == rollouts[name]
                rollout = json.loads(repo.objects.get_typed(s["rollout_id"], ObjectType.BLOB))
                assert cache[s["rollout_id"]] == rollout["key"]
                # without its config's rollouts, the sample reads the same but for its rollout
                assert load_sample(repo, oid, name) == {k: v for k, v in s.items()
                                                        if k != "rollout_id"}  # fmt: skip
            assert raw["schema"] == 3 and (s["row"], s["run"]) == (name.split(".")[0], 0)
            seen.add(("scoring_errors" in raw, sub))
        assert seen == {(False, "failed"), (False, "samples"), (True, "samples")}


def test_every_version_reads_as_the_same_sample() -> None:
    v1 = {"schema": 1, "row": "ab12", "run": 3, "finished": 1, "status": "ok", "error": None,
          "rollout": "r" + "0" * 64, "rollout_id": "1" * 64, "scores": {"exact": True},
          "scoring_errors": {}, "usage": {"total_tokens": 4}}  # fmt: skip
    v2 = (b'{"finished":1,"rollout_id":"' + b"1" * 64 + b'","schema":2,'
          b'"scores":{"exact":true},"usage":{"total_tokens":4}}')  # fmt: skip
    v3 = sample_blob({**v1, "finished": 1.75})
    assert v3 == b'{"finished":1,"schema":3,"scores":{"exact":true},"usage":{"total_tokens":4}}'

    def unkeyed(sample: dict, schema: int) -> dict:  # the rollout's key is the rollout's
        return {**{k: v for k, v in sample.items() if k != "rollout"}, "schema": schema}

    assert parse_sample(v2, "x", "ab12.3") == unkeyed(v1, 2)
    assert parse_sample(v3, "x", "ab12.3", rollout_id="1" * 64) == unkeyed(v1, 3)
    assert parse_sample(canonical_json(v1), "x", "ab12.3") == v1
    failed = {"row": "ab12", "run": 0, "finished": 2, "status": "failed", "rollout": None,
              "error": {"type": "model_error", "status": 500, "message": "down"},
              "scores": {}, "scoring_errors": {}}  # fmt: skip
    assert parse_sample(sample_blob(failed), "x", "ab12.0") == unkeyed(failed, 3)
    v2_failed = (
        b'{"error":{"message":"down","status":500,"type":"model_error"},"finished":2,"schema":2}'
    )
    assert parse_sample(v2_failed, "x", "ab12.0") == unkeyed(failed, 2)
    for bad_name in ("ab12", "ab12.x", ".0", "ab12.01", "ab12.²"):
        for blob in (v2, v3):
            with pytest.raises(MalformedObject):
                parse_sample(blob, "x", bad_name)
    with pytest.raises(MalformedObject, match="format version 4"):
        parse_sample(b'{"schema":4}', "x", "ab12.0")


def test_a_journaled_sample_replays_as_readers_see_it(tmp_path: Path) -> None:
    sample = {"row": "ab12", "run": 1, "finished": 2, "status": "failed", "rollout": None,
              "error": {"type": "model_error", "message": "down"}, "scores": {},
              "scoring_errors": {}}  # fmt: skip
    ok = {"row": "ab12", "run": 2, "finished": 3, "status": "ok", "error": None,
          "rollout_id": "1" * 64, "scores": {"exact": True}, "scoring_errors": {}}  # fmt: skip
    named = [PendingObject("rollouts", "ab12.2", None, ObjectId("1" * 64))]
    results = [SampleResult("ab12.1", True, sample_blob(sample), sample),
               SampleResult("ab12.2", False, sample_blob(ok), ok, named)]  # fmt: skip
    write_journal(tmp_path / "j", results)
    back = read_journal(tmp_path / "j")
    assert back[0].body == {**{k: v for k, v in sample.items() if k != "rollout"}, "schema": 3}
    assert back[1].body == {**ok, "schema": 3}  # its rollout from the journaled entry


# --- readers, on every version -------------------------------------------------------------


def two_stores(
    tmp_path: Path, server: MockServer, capsys, version: int, *, half: bool = False
) -> tuple[Path, Path, list[str]]:
    """A store with two configs (one failed run, one scoring error), and a copy of it whose
    samples (``half``: half of them) are of an older ``version``."""
    v3 = tmp_path / "v3"
    ids = [run_eval(v3, server, capsys, fns=fns)["config_id"]
           for fns in (("exact",), ("picky", "exact"))]  # fmt: skip
    old = tmp_path / f"v{version}"
    shutil.copytree(v3, old)
    for config_id in ids:
        as_version(old, config_id, version, half=half)
        want = {version, 3} if half else {version}
        assert versions(old, config_id) == want and versions(v3, config_id) == {3}
    return old, v3, ids


@pytest.mark.parametrize("version,half", [(1, False), (2, False), (2, True)],
                         ids=["v1", "v2", "v2-and-v3"])  # fmt: skip
def test_every_reader_gives_the_same_for_older_samples_as_for_version_3(
    tmp_path: Path, project: Path, server: MockServer, capsys, version: int, half: bool
) -> None:
    import osmo_store

    v1, v2, (a, b) = two_stores(tmp_path, server, capsys, version, half=half)
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
            assert fsck(repo, full=True).ok and check_rollouts(repo) == []
    assert views[0] == views[1]


@pytest.mark.parametrize("version", [1, 2])
def test_merging_an_older_and_a_version_3_history_of_one_config(
    tmp_path: Path, project: Path, server: MockServer, capsys, version: int
) -> None:
    """Two machines ran the same config (their results differ in time and rollout), one of
    them with an osmo that wrote version 1 or 2: pushed to one remote and pulled back, the
    newer result of each run wins, its rollout is the one readers get (the ``rollouts``
    entry follows a version 3 winner) and the cache entry of its rollout follows it."""
    old, new, remote = tmp_path / "old", tmp_path / "new", tmp_path / "remote"
    config_id = run_eval(old, server, capsys)["config_id"]
    as_version(old, config_id, version)
    server.responder.failing = False  # type: ignore[attr-defined]
    second = int(time.time()) + 1  # the newer side's results are in a later second
    wait_until(lambda: time.time() >= second, what="the next second", timeout=5)
    assert run_eval(new, server, capsys)["config_id"] == config_id
    for store in (old, new):
        assert osmo(capsys, "--store", str(store), "push", str(remote))[0] == 0
    assert osmo(capsys, "--store", str(old), "pull", str(remote))[0] == 0
    with Repository.open(new) as repo:
        state = ConfigState.from_run(repo, repo.refs.read(config_ref(config_id)))
        reader = SampleReader(repo, state.trees)
        newer = {name: reader.load(oid, name) for _, name, oid in entries(repo, config_id)}
    with Repository.open(old) as repo:
        state = ConfigState.from_run(repo, repo.refs.read(config_ref(config_id)))
        cache = {e.name: e.oid for e in iter_tree(repo.objects, state.trees["cache"])}
        rollouts = {e.name: e.oid for e in iter_tree(repo.objects, state.trees["rollouts"])}
        reader = SampleReader(repo, state.trees)
        merged = entries(repo, config_id)
        assert {sub for sub, _, _ in merged} == {"samples"} and len(merged) == ROWS
        for _, name, oid in merged:
            s = reader.load(oid, name)
            assert s["finished"] == newer[name]["finished"]  # the newer side won
            assert s["rollout_id"] == newer[name]["rollout_id"] == rollouts[name]
            rollout = json.loads(repo.objects.get_typed(s["rollout_id"], ObjectType.BLOB))
            assert cache[rollout["key"]] == s["rollout_id"]
        assert fsck(repo, full=True).ok and check_rollouts(repo) == []
    code, out = osmo(capsys, "--store", str(old), "eval", "show", config_id, "--json")
    assert code == 0 and json.loads(out)["summary"]["runs"] == ROWS


@pytest.mark.parametrize("version", [1, 2])
def test_retry_failed_and_resume_treat_older_samples_as_their_own(
    tmp_path: Path, project: Path, server: MockServer, capsys, version: int
) -> None:
    """On a store of older samples and a version 3 copy: --retry-failed asks again for
    exactly the failed run; an eval of all rows after one of half of them asks only for
    the rest (the resumed config then holds both versions, read alike); the summaries
    agree."""
    half = tmp_path / "half-v3"
    first = run_eval(half, server, capsys, "--shard", "1/2")
    shutil.copytree(half, tmp_path / "half-old")
    as_version(tmp_path / "half-old", first["config_id"], version)
    server.responder.failing = False  # type: ignore[attr-defined]
    summaries = []
    for store in (tmp_path / "half-old", tmp_path / "half-v3"):
        before = server.calls
        body = run_eval(store, server, capsys)
        assert server.calls - before == ROWS - first["summary"]["runs"]
        summaries.append(body["summary"])
        assert_consistent(store, first["config_id"])
    assert untimed(summaries[0]) == untimed(summaries[1]) and summaries[0]["runs"] == ROWS
    assert versions(tmp_path / "half-old", first["config_id"]) == {version, 3}
    server.responder.failing = True  # type: ignore[attr-defined]
    full = tmp_path / "full-v3"
    config_id = run_eval(full, server, capsys)["config_id"]
    shutil.copytree(full, tmp_path / "full-old")
    as_version(tmp_path / "full-old", config_id, version)
    server.responder.failing = False  # type: ignore[attr-defined]
    retried = []
    for store in (tmp_path / "full-old", tmp_path / "full-v3"):
        before = server.calls
        body = run_eval(store, server, capsys, "--retry-failed")
        assert server.calls - before == 1 and body["summary"]["failed"] == 0
        retried.append(body["summary"])
        assert_consistent(store, config_id)
    assert untimed(retried[0]) == untimed(retried[1])


def assert_consistent(store: Path, config_id: str) -> None:
    """Every finished sample of the config reads with its rollout (a version 3 one through
    the config's ``rollouts`` entry), and fsck finds nothing."""
    with Repository.open(store) as repo:
        stored = StoredConfig(repo, config_id)
        for ref, sample in stored.samples():
            assert (ref.subtree == "samples") == (sample["status"] == "ok")
            if sample["status"] == "ok":
                assert stored.rollout(sample)["key"].startswith("r")  # type: ignore[index]
        assert fsck(repo, full=True).ok and check_rollouts(repo) == []


def untimed(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_time_s"}
