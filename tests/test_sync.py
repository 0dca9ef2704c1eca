"""push / fetch / pull / clone between real stores (directory remotes here; the same flows
over HTTP and S3 are in test_sync_http.py and test_s3.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.cli.main import main
from osmo_store.eval.catalog import history
from osmo_store.maintenance.fsck import fsck
from osmo_store.sync.remotes import open_remote
from osmo_store.sync.transfer import copy_closure, push
from osmo_store.testing.mockserver import MockServer

ROWS = 30


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = [{"user_prompt": f"What is {i} + 5?", "ground_truth": str(i + 5)} for i in range(ROWS)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    (tmp_path / "other.py").write_text(
        "def one(solution_str, ground_truth, extra_info):\n    return 1\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def server():
    with MockServer() as srv:
        yield srv


def osmo(*args: str) -> int:
    return main(list(args))


def run_eval(
    store: Path, server: MockServer, capsys, *extra: str, fn: str = "fns.py:exact"
) -> dict:
    capsys.readouterr()
    code = main(["--store", str(store), "eval", "-d", "data.jsonl", "--model", "m", "--base-url",
                 server.base_url, "--eval-fn", fn, "-q", "--json", *extra])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def ls(store: Path, capsys) -> list[dict]:
    assert main(["--store", str(store), "eval", "cache", "ls", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_sound(*stores: Path) -> None:
    for s in stores:
        with Repository.open(s) as repo:
            report = fsck(repo)
            assert report.ok, (s, report.problems)


def test_push_clone_round_trip(tmp_path: Path, project: Path, server, capsys) -> None:
    a, remote, b = tmp_path / "a", tmp_path / "remote", tmp_path / "b"
    first = run_eval(a, server, capsys)
    assert osmo("--store", str(a), "remote", "add", "origin", str(remote)) == 0
    assert osmo("--store", str(a), "push") == 0
    assert "1 new" in capsys.readouterr().out
    assert osmo("--store", str(a), "push") == 0  # nothing new: nothing sent
    assert capsys.readouterr().out.startswith("pushed 0 objects")
    assert osmo("clone", str(remote), str(b)) == 0
    capsys.readouterr()
    listed = ls(b, capsys)
    assert [c["config_id"] for c in listed] == [first["config_id"]]
    assert listed[0]["status"] == "completed" and listed[0]["done"] == ROWS
    assert_sound(a, remote, b)
    # The clone's lookup index knows every rollout: a new eval function calls nothing.
    calls = server.calls
    again = run_eval(b, server, capsys, fn="other.py:one")
    assert server.calls == calls and again["session"]["reused_rollouts"] == ROWS


def test_sharded_eval_from_three_stores_equals_one_full_run(
    tmp_path: Path, project: Path, server, capsys
) -> None:
    remote = tmp_path / "remote"
    for i in (1, 2, 3):
        out = run_eval(tmp_path / f"s{i}", server, capsys, "--shard", f"{i}/3")
        assert out["status"] == "partial"
        assert osmo("--store", str(tmp_path / f"s{i}"), "push", str(remote)) == 0
    capsys.readouterr()
    assert osmo("--store", str(tmp_path / "puller"), "pull", str(remote)) == 0
    capsys.readouterr()
    full = run_eval(tmp_path / "single", server, capsys)
    [merged] = ls(tmp_path / "puller", capsys)
    assert merged["config_id"] == full["config_id"]
    assert merged["status"] == "completed" and merged["done"] == ROWS
    with Repository.open(tmp_path / "puller") as repo:
        meta = repo.objects.get_run(merged["run"]).meta
    assert meta["summary"]["metrics"] == full["summary"]["metrics"]
    assert meta["summary"]["pass_at_k"] == full["summary"]["pass_at_k"]
    assert len(meta["session"]["merged"]) == 2  # the merge is recorded
    # The running score's terms cover every merged run (the next session adds to them).
    exact = full["summary"]["metrics"]["exact"]
    assert meta["counts"]["primary_count"] == exact["count"]
    assert meta["counts"]["primary_sum"] == pytest.approx(exact["mean"] * exact["count"])
    # `osmo log` lists every store's session, not only the first parent's line.
    with Repository.open(tmp_path / "puller") as repo:
        sessions = [r.meta for _, r in history(repo, merged["config_id"])]
    shards = {tuple(m["config"]["shard"]) for m in sessions if "merged" not in m["session"]}
    assert shards == {(1, 3), (2, 3), (3, 3)}, sessions
    assert_sound(remote, tmp_path / "puller")


def test_two_stores_pushing_one_config_converge(
    tmp_path: Path, project: Path, server, capsys
) -> None:
    a, b, remote = tmp_path / "a", tmp_path / "b", tmp_path / "remote"
    run_eval(a, server, capsys, "--limit", "10")  # a different config from b's...
    run_eval(a, server, capsys, "--shard", "1/2")
    run_eval(b, server, capsys, "--shard", "2/2")
    assert osmo("--store", str(a), "push", str(remote)) == 0
    assert osmo("--store", str(b), "push", str(remote)) == 0  # moved: fetch, merge, retry
    out = capsys.readouterr().out
    assert "1 merged" in out
    capsys.readouterr()
    assert osmo("--store", str(b), "push", str(remote)) == 0  # the remote has it all already
    assert capsys.readouterr().out.startswith("pushed 0 objects")
    assert osmo("--store", str(a), "pull", str(remote)) == 0
    capsys.readouterr()
    full = [c for c in ls(a, capsys) if c["total"] == ROWS]
    assert len(full) == 1 and full[0]["done"] == ROWS and full[0]["status"] == "completed"
    assert_sound(a, b, remote)


def test_interrupted_push_resumes_and_leaves_no_dangling_objects(
    tmp_path: Path, project: Path, server, capsys, monkeypatch
) -> None:
    a, remote = tmp_path / "a", tmp_path / "remote"
    run_eval(a, server, capsys)
    import osmo_store.sync.transfer as sync

    monkeypatch.setattr(sync, "CHUNK_OBJECTS", 7)
    real = sync._send
    calls = {"n": 0}

    def flaky(dst, items, report, progress):
        calls["n"] += 1
        if calls["n"] == 4:
            raise ConnectionError("network went away")
        return real(dst, items, report, progress)

    monkeypatch.setattr(sync, "_send", flaky)
    with Repository.open(a) as repo:
        r = open_remote(repo, str(remote), create=True)
        with pytest.raises(ConnectionError):
            push(repo, r, prefix="refs/evals/")
        r.close()
    with Repository.open(remote) as rem:
        assert rem.refs.list("refs/evals/") == {}  # refs move last
        sent_before = len(list(rem.objects.iter_ids()))
        assert sent_before > 0 and fsck(rem).ok  # what arrived is whole
    monkeypatch.setattr(sync, "_send", real)
    with Repository.open(a) as repo:
        r = open_remote(repo, str(remote))
        report = push(repo, r, prefix="refs/evals/")
        r.close()
        total = len({*repo.objects.iter_ids()})
    assert (
        report.transfer.objects <= total - sent_before + 5
    )  # only what was missing (+ index-free)
    assert report.created
    assert_sound(a, remote)


def test_non_eval_ref_that_diverged_needs_force(tmp_path: Path, project: Path, capsys) -> None:
    a, b, remote = tmp_path / "a", tmp_path / "b", tmp_path / "remote"
    for store, content in ((a, b"one"), (b, b"two")):
        with Repository.open(store) as repo:
            oid = repo.objects.put(ObjectType.BLOB, content)
            repo.update_ref("refs/tags/best", oid)
    assert osmo("--store", str(a), "push", str(remote), "refs/tags/best") == 0
    code = osmo("--store", str(b), "push", str(remote), "refs/tags/best")
    assert code == 1 and "non-fast-forward" in capsys.readouterr().err
    assert osmo("--store", str(b), "push", "--force", str(remote), "refs/tags/best") == 0
    with Repository.open(remote) as rem, Repository.open(b) as rb:
        assert rem.refs.read("refs/tags/best") == rb.refs.read("refs/tags/best")
        assert [e.message for e in rem.refs.reflog("refs/tags/best")][-1].startswith("forced push")


def test_fetch_records_tracking_refs_without_touching_local_refs(
    tmp_path: Path, project: Path, server, capsys
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    out = run_eval(a, server, capsys)
    assert osmo("--store", str(b), "remote", "add", "up", str(a)) == 0
    assert osmo("--store", str(b), "fetch", "up") == 0
    with Repository.open(b) as repo:
        assert repo.refs.list("refs/evals/") == {}
        assert repo.refs.read(f"refs/remotes/up/evals/{out['config_id']}") == out["run"]


def test_remote_commands_and_bad_input(tmp_path: Path, capsys) -> None:
    s = str(tmp_path / "s")
    assert osmo("--store", s, "remote", "add", "origin", "http://127.0.0.1:1") == 0
    assert osmo("--store", s, "remote", "add", "bak", str(tmp_path / "bak")) == 0
    assert osmo("--store", s, "remote", "list", "-v") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["bak\t" + str(tmp_path / "bak"), "origin\thttp://127.0.0.1:1"]
    assert osmo("--store", s, "remote", "add", "origin", "x") == 1
    assert osmo("--store", s, "remote", "add", "b/ad", "x") == 1
    assert osmo("--store", s, "remote", "add", "ftp", "ftp://host/x") == 1
    assert osmo("--store", s, "remote", "remove", "nope") == 1
    assert osmo("--store", s, "remote", "remove", "bak") == 0
    assert osmo("--store", s, "pull", str(tmp_path / "no-such-store")) == 1
    err = capsys.readouterr().err
    assert "no osmo store at" in err and "Traceback" not in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert osmo("clone", s, str(tmp_path / "full")) == 1
    assert "not empty" in capsys.readouterr().err


def test_copy_closure_prunes_what_the_receiver_has(
    tmp_path: Path, project: Path, server, capsys
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    out = run_eval(a, server, capsys)
    with Repository.open(a) as ra, Repository.open(b) as rb:
        first = copy_closure(ra.objects, rb.objects, [out["run"]])
        assert first.objects > ROWS
        counting = CountingStore(rb.objects)
        second = copy_closure(ra.objects, counting, [out["run"]])
        assert second.objects == 0 and counting.asked == 1  # one id asked: the tip


class CountingStore:
    def __init__(self, inner) -> None:
        self.inner, self.asked = inner, 0

    def missing(self, oids):
        oids = list(oids)
        self.asked += len(oids)
        return self.inner.missing(oids)

    def put_many_raw(self, items):
        return self.inner.put_many_raw(items)
