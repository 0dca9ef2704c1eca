"""`osmo serve` as a real subprocess: it prints where it listens, serves the store through
HttpObjectStore/HttpRefStore, never shows its token, and stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.errors import AuthError, RemoteRefused
from osmo_store.http.client import open_http_remote

from .waiting import wait_for_line

TOKEN = "serve-token-5d2e77b1-never-printed"
LISTENING = re.compile(r"osmo serve: listening on (http://127\.0\.0\.1:(\d+)) \(store (.+)\)$")


class ServeProcess:
    def __init__(self, cmd: list[str], **env: str) -> None:
        # Without PYTHONUNBUFFERED: the listening line must be flushed by osmo itself.
        base = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**base, **env}
        )
        assert self.proc.stdout is not None
        line = wait_for_line(self.proc.stdout, self.proc, "")[0].rstrip("\n")  # the first line
        match = LISTENING.match(line)
        if match is None:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            pytest.fail(f"no listening line from osmo serve: {line!r}; stderr: {err}")
        self.first_line = line
        self.url, self.port, self.store = match.group(1), int(match.group(2)), match.group(3)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, self.first_line + "\n" + out, err


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def started(osmo_cmd: list[str]) -> Iterator[list[ServeProcess]]:
    procs: list[ServeProcess] = []
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.communicate(timeout=10)


def test_serve_round_trip_and_sigterm(
    osmo_cmd: list[str], store_path: Path, token_file: Path, started: list[ServeProcess]
) -> None:
    server = ServeProcess(
        [
            *osmo_cmd,
            "--store",
            str(store_path),
            "serve",
            "--port",
            "0",
            "--token-file",
            str(token_file),
        ]
    )
    started.append(server)
    assert server.port > 0 and Path(server.store) == store_path.absolute()

    with pytest.raises(AuthError):
        open_http_remote(server.url, "not-" + TOKEN)
    objects, refs = open_http_remote(server.url, TOKEN)
    oid = objects.put(ObjectType.BLOB, b"over the wire")
    assert objects.get(oid) == (ObjectType.BLOB, b"over the wire")
    refs.update("refs/evals/remote", oid, expected=None, who="ci@runner", message="push")
    assert refs.read("refs/evals/remote") == oid
    objects.close()

    code, out, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert TOKEN not in out and TOKEN not in err
    assert "Traceback" not in err
    with Repository.open(store_path, create=False) as repo:  # it really was this store
        assert repo.objects.get(oid) == (ObjectType.BLOB, b"over the wire")
        (entry,) = repo.refs.reflog("refs/evals/remote")
        assert (entry.new, entry.who, entry.message) == (oid, "ci@runner", "push")


def test_serve_root_env_token_read_only_and_sigint(
    osmo_cmd: list[str], tmp_path: Path, started: list[ServeProcess]
) -> None:
    root = tmp_path / "served"
    with Repository.open(root) as repo:
        kept = repo.objects.put(ObjectType.BLOB, b"kept")
    server = ServeProcess(
        [
            *osmo_cmd,
            "--store",
            str(tmp_path / "not-this-one"),
            "serve",
            "--root",
            str(root),
            "--port",
            "0",
            "--read-only",
        ],
        OSMO_TOKEN=TOKEN,
    )
    started.append(server)
    assert Path(server.store) == root.absolute()
    objects, refs = open_http_remote(server.url, TOKEN)
    assert objects.read_only and objects.get(kept) == (ObjectType.BLOB, b"kept")
    with pytest.raises(RemoteRefused):
        refs.update("refs/x", kept)
    objects.close()
    code, out, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert TOKEN not in out + err
    assert not (tmp_path / "not-this-one").exists()


def test_serve_refuses_bad_arguments(osmo_cmd: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    runs = [
        (["serve", "--port", "70000"], 2, "port out of range"),
        (["serve", "--port", "0", "--token-file", str(empty)], 1, "is empty"),
        (["serve", "--port", "0", "--token", "has space"], 1, "printable ASCII"),
        (["serve", "--token", "a", "--token-file", str(empty)], 2, "not allowed with"),
    ]
    for args, code, words in runs:
        r = subprocess.run(
            [*osmo_cmd, "--store", str(tmp_path / "s"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (r.returncode, r.stdout) == (code, ""), (args, r.stderr)
        assert words in r.stderr, (args, r.stderr)


def test_serve_is_a_registered_command() -> None:
    from osmo_store.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--port", "0"])
    assert args.func.__module__ == "osmo_store.cli.servecmd" and args.needs_repo is False
