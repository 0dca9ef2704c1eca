"""Sync through a real `osmo serve` subprocess on 127.0.0.1: a server killed mid-push,
concurrent pushers of one config, and tokens."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository, RunRecord, TreeEntry, write_tree
from osmo_store.cli.main import main
from osmo_store.maintenance.fsck import fsck
from osmo_store.testing.mockserver import MockServer

from .test_serve import TOKEN, ServeProcess
from .waiting import wait_until


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def serve(osmo_cmd: list[str], tmp_path: Path, token_file: Path):
    procs: list[ServeProcess] = []

    def start(store: Path) -> ServeProcess:
        p = ServeProcess([*osmo_cmd, "--store", str(store), "serve", "--port", "0",
                          "--token-file", str(token_file)])  # fmt: skip
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.communicate(timeout=10)


def big_eval_ref(store: Path, n: int) -> str:
    """A store with one eval-like ref reaching ``n`` distinct blobs."""
    with Repository.open(store) as repo, repo.objects.bulk() as w:
        blobs = [
            w.put(ObjectType.BLOB, json.dumps({"i": i, "pad": "x" * 200}).encode())
            for i in range(n)
        ]
        tree = write_tree(w, [TreeEntry(f"s{i}", ObjectType.BLOB, b) for i, b in enumerate(blobs)])
        run = w.put(ObjectType.RUN, RunRecord(tree, (), {"status": "completed"}).to_content())
    with Repository.open(store) as repo:
        repo.update_ref("refs/evals/" + "ab" * 32, run)
    return run


def sound(store: Path) -> None:
    with Repository.open(store) as repo:
        report = fsck(repo)
        assert report.ok, report.problems


def test_server_killed_mid_push_then_push_completes(
    osmo_bin: str, serve, tmp_path: Path, token_file: Path
) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    run = big_eval_ref(local, 30_000)
    server = serve(remote)
    push = [osmo_bin, "--store", str(local), "push", server.url]
    env = {"OSMO_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    client = subprocess.Popen(
        push, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    # kill the server as soon as the first pack of this push has landed
    packs = remote / "objects" / "pack"
    wait_until(
        lambda: packs.is_dir() and any(p.suffix == ".idx" for p in packs.iterdir()),
        what="the first pack of the push landing",
        proc=client,
        interval=0.005,
    )
    server.proc.send_signal(signal.SIGKILL)
    server.proc.communicate(timeout=60)
    assert server.proc.returncode == -signal.SIGKILL
    out, err = client.communicate(timeout=60)
    assert client.returncode == 1, (out, err)
    assert err.startswith("osmo: error:") and "Traceback" not in err and TOKEN not in err
    with Repository.open(remote) as repo:
        arrived = len(list(repo.objects.iter_ids()))
        assert repo.refs.list() == {}  # the ref moves last
    assert arrived > 0
    sound(remote)  # what arrived is whole
    server = serve(remote)  # same store, new server
    again = subprocess.run([osmo_bin, "--store", str(local), "push", server.url],
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    sent = int(again.stdout.split()[1])
    with Repository.open(local) as repo:
        total = len(list(repo.objects.iter_ids()))
    assert sent == total - arrived  # exactly what had not arrived
    with Repository.open(remote) as repo:
        assert repo.refs.read("refs/evals/" + "ab" * 32) == run
    sound(remote)
    sound(local)
    _code, out, srv_err = server.stop()
    assert TOKEN not in out + srv_err


def test_concurrent_pushers_of_one_config_converge(
    serve, tmp_path: Path, token_file: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    rows = [{"user_prompt": f"What is {i} + 9?", "ground_truth": str(i + 9)} for i in range(24)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fns.py").write_text("def ok(s, gt, e):\n    return s.strip() == gt\n")
    monkeypatch.chdir(tmp_path)
    server = serve(tmp_path / "remote")
    stores = [tmp_path / "a", tmp_path / "b"]
    with MockServer() as model:
        for i, store in enumerate(stores, 1):
            assert main(["--store", str(store), "eval", "-d", "data.jsonl", "--model", "m",
                         "--base-url", model.base_url, "--eval-fn", "fns.py:ok", "-q",
                         "--shard", f"{i}/2"]) == 0  # fmt: skip
            assert main(["--store", str(store), "remote", "add", "hub", server.url,
                         "--token-file", str(token_file)]) == 0  # fmt: skip
    codes: list[int] = []

    def push(store: Path) -> None:
        codes.append(main(["--store", str(store), "push", "hub"]))

    threads = [threading.Thread(target=push, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0]
    capsys.readouterr()
    assert main(["clone", server.url, str(tmp_path / "c")]) == 1  # no token for a bare URL
    assert "token" in capsys.readouterr().err
    monkeypatch.setenv("OSMO_TOKEN", TOKEN)
    assert main(["clone", server.url, str(tmp_path / "c2")]) == 0
    capsys.readouterr()
    assert main(["--store", str(tmp_path / "c2"), "eval", "cache", "ls", "--json"]) == 0
    [config] = json.loads(capsys.readouterr().out)
    assert config["status"] == "completed" and config["done"] == 24  # both shards present
    sound(tmp_path / "remote")


def test_wrong_token_is_refused_and_never_shown(osmo_bin: str, serve, tmp_path: Path) -> None:
    big_eval_ref(tmp_path / "local", 10)
    server = serve(tmp_path / "remote")
    env = {"OSMO_TOKEN": "wrong-token-zz9", "PATH": "/usr/bin:/bin"}
    bad = subprocess.run([osmo_bin, "--store", str(tmp_path / "local"), "push", server.url],
                         capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert bad.returncode == 1 and "wrong-token-zz9" not in bad.stdout + bad.stderr
    assert "token" in bad.stderr
    with Repository.open(tmp_path / "remote") as repo:
        assert list(repo.objects.iter_ids()) == []
