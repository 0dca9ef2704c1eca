"""What a new user's trial ran into: a progress line that forgot reused runs, pass@2 below
pass@1 in an interrupted eval's summary, missing arguments that exited 1, an `eval cache
ls` wider than the terminal, a remote URL taken whatever it was, and labels that an id
prefix shadowed or two configs shared."""

from __future__ import annotations

import fcntl
import io
import itertools
import json
import os
import pty
import struct
import subprocess
import termios
import threading
from pathlib import Path

import pytest

from osmo_store import Repository
from osmo_store.cli.main import main
from osmo_store.cli.progress import ProgressDisplay
from osmo_store.eval.client import ChatClient
from osmo_store.eval.prepare import prepare_eval
from osmo_store.eval.runner import EvalOptions, Progress, run_eval
from osmo_store.eval.summary import SummaryBuilder
from osmo_store.testing.mockserver import MockServer

from .evalproject import lay_out_project
from .waiting import Gate


@pytest.fixture
def server():
    with MockServer() as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return lay_out_project(folder, monkeypatch)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- 1. the progress line counts reused runs -------------------------------------------------


def _run(store: Path, srv: MockServer, *, stop=None, on_progress=None, threshold=1.0):
    prepared = prepare_eval("data.jsonl", ["fns.py:exact"], model="mock", base_url=srv.base_url)
    options = EvalOptions(concurrency=2, pass_threshold=threshold)
    client = ChatClient(prepared.base_url, api_key=None, max_retries=0)
    with Repository.open(store) as repo, client:
        return run_eval(repo, prepared, client=client, options=options, stop=stop,
                        on_progress=on_progress)  # fmt: skip


def _snapshots() -> tuple[list[Progress], object]:
    seen: list[Progress] = []

    def on_progress(p: Progress) -> None:
        seen.append(Progress(**{k: getattr(p, k) for k in p.__dataclass_fields__}))

    return seen, on_progress


def test_progress_of_an_eval_all_reused_counts_them_as_passed(store_path, project, server):
    assert _run(store_path, server).status == "completed"
    seen, on_progress = _snapshots()
    assert _run(store_path, server, on_progress=on_progress).session["computed"] == 0
    last = seen[-1]
    assert (last.done, last.reused, last.scored, last.passed) == (6, 6, 6, 6)
    line = ProgressDisplay(FakeTTY(), columns=80).line(last)
    assert len(line) < 80
    assert "pass 100%" in line and "reused 6" in line


@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_progress_of_a_resumed_eval_counts_the_runs_before_it(
    store_path, project, threshold
) -> None:
    """Resumed after a stop: the runs recorded before count toward pass, whether the stored
    summary says how many passed (same threshold) or they are read back (another one)."""
    stop = threading.Event()
    gate = Gate(answered=3)

    def stop_at_three(p: Progress) -> None:
        if p.done >= 3 and not stop.is_set():
            stop.set()
            threading.Timer(0.2, gate.release).start()

    seen, on_progress = _snapshots()
    with gate, MockServer(responder=gate) as srv:  # one server: its URL is in the config
        first = _run(store_path, srv, stop=stop, on_progress=stop_at_three)
        assert first.interrupted and 3 <= first.summary["runs"] < 6
        _run(store_path, srv, on_progress=on_progress, threshold=threshold)
    assert seen[0].reused == first.summary["runs"]
    assert (seen[0].scored, seen[0].passed) == (first.summary["runs"],) * 2
    assert (seen[-1].done, seen[-1].scored, seen[-1].passed) == (6, 6, 6)


# --- 2. pass@k never below pass@1 ------------------------------------------------------------


def _sample(row: str, run: int, ok: bool) -> dict:
    return {"row": row, "run": run, "status": "ok", "scores": {"exact": float(ok)}}


def test_pass_at_k_of_incomplete_rows_is_not_below_pass_at_1() -> None:
    """Interrupted with n=2: an easy row has one run (passed), a hard row both (failed).
    Over only the rows with 2 runs, pass@2 (0) was below pass@1 (0.5)."""
    b = SummaryBuilder(n=2, pass_threshold=1.0, primary="exact")
    for s in (_sample("easy", 0, True), _sample("hard", 0, False), _sample("hard", 1, False)):
        b.add(s)
    r = b.result()
    assert r["pass_at_k"] == {"pass@1": 0.5}
    assert r["incomplete_rows"] == 1
    b.add(_sample("easy", 1, False))
    r = b.result()
    assert r["pass_at_k"] == {"pass@1": 0.25, "pass@2": 0.5}
    assert r["incomplete_rows"] == 0


def test_pass_at_k_is_monotone_in_k_whatever_rows_are_done() -> None:
    import random

    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 8)
        b = SummaryBuilder(n=n, pass_threshold=1.0, primary="exact")
        for row in range(rng.randint(1, 6)):
            for run in range(rng.randint(1, n)):
                b.add(_sample(f"r{row}", run, rng.random() < 0.5))
        values = list(b.result()["pass_at_k"].values())
        assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values)), values


def test_summary_says_when_rows_are_incomplete(capsys) -> None:
    from osmo_store.cli.summarytext import print_scores

    b = SummaryBuilder(n=2, pass_threshold=1.0, primary="exact")
    for s in (_sample("easy", 0, True), _sample("hard", 0, False), _sample("hard", 1, False)):
        b.add(s)
    print_scores(b.result())
    text = capsys.readouterr().out
    assert "pass@1 0.5000" in text and "pass@2" not in text.split("(")[0]
    assert "1 of the 2 rows run have fewer than 2 runs" in text


# --- 3. missing arguments of osmo eval are usage errors --------------------------------------


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (("--model", "m", "--eval-fn", "fns.py:exact"), "-d/--dataset"),
        (("-d", "data.jsonl", "--eval-fn", "fns.py:exact"), "--model"),
        (("-d", "data.jsonl", "--model", "m"), "--eval-fn"),
        (("explain", "--model", "m", "--eval-fn", "fns.py:exact"), "-d/--dataset"),
    ],
)
def test_missing_eval_arguments_exit_2_with_usage(osmo_bin, tmp_path, argv, missing) -> None:
    done = subprocess.run([osmo_bin, "--store", str(tmp_path / "s"), "eval", *argv],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("usage: osmo eval")
    assert "error:" in lines[-1] and missing in lines[-1]
    assert "Traceback" not in done.stderr


# --- 4. eval cache ls fits the terminal --------------------------------------------------------


def _ls_in_terminal(osmo_bin: str, store: Path, columns: int, *extra: str) -> list[str]:
    """``osmo eval cache ls`` with its stdout on a terminal ``columns`` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.Popen([osmo_bin, "--store", str(store), "eval", "cache", "ls", *extra],
                            stdout=slave, stderr=subprocess.PIPE, env=env)  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    return b"".join(chunks).decode().replace("\r\n", "\n").splitlines()


@pytest.fixture
def wide_store(store_path, project, server) -> Path:
    """Two configs whose cells are as long as real ones: a long model name, label,
    dataset, eval functions and a parameter that differs."""
    data = project / "gsm8k_platinum_test_split_v2.jsonl"
    data.write_text((project / "data.jsonl").read_text())
    (project / "fns.py").write_text(
        (project / "fns.py").read_text() + "def numeric_match(s, g, e):\n    return 1.0\n"
    )
    for temp, label in (("0.2", "baseline-llama-70b-greedy"), ("0.7", "llama-70b-sampled-t07")):
        argv = ["--store", str(store_path), "eval", "-q", "-d", data.name,
                "--model", "meta-llama/Llama-3.1-70B-Instruct-Turbo", "--base-url",
                server.base_url, "--eval-fn", "fns.py:exact", "--eval-fn",
                "fns.py:numeric_match", "--temperature", temp, "--label", label]  # fmt: skip
        assert main(argv) == 0
    return store_path


def test_eval_cache_ls_fits_an_80_column_terminal(osmo_bin, wide_store, capsys) -> None:
    capsys.readouterr()
    assert main(["--store", str(wide_store), "eval", "cache", "ls"]) == 0
    piped = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in piped) > 80  # the case at hand: too wide for 80
    assert piped[0].split()[-1] == "UPDATED"  # piped: every column
    shown = _ls_in_terminal(osmo_bin, wide_store, 80)
    assert len(shown) == 3
    assert max(len(line) for line in shown) <= 79, "\n".join(shown)
    for column in ("CONFIG", "LABEL", "MODEL", "STATUS", "SCORE"):
        assert column in shown[0]
    assert all(line.split()[0] in piped[i] for i, line in enumerate(shown))  # the ids
    wide = _ls_in_terminal(osmo_bin, wide_store, 80, "--wide")
    assert wide == piped


# --- 5. remote add checks its URL --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://", "http(s)://HOST"),
        ("https://user:secret@example.org", "credentials"),
        ("s3://", "s3://BUCKET"),
        ("s3://b/x", "s3://BUCKET"),
        ("osmo.example.org", "https://osmo.example.org"),
        ("example.org:8080", "https://example.org:8080"),
        ("user@host:stores/osmo", "./"),
        ("", "a path"),
        ("ftp://host/x", "http(s)://"),
    ],
)
def test_remote_add_refuses_a_url_remotes_cannot_use(tmp_path, capsys, url, says) -> None:
    store = tmp_path / "s"
    assert main(["--store", str(store), "remote", "add", "origin", "http://127.0.0.1:1"]) == 0
    settings = (store / "config.json").read_bytes()
    capsys.readouterr()
    assert main(["--store", str(store), "remote", "add", "other", url]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("osmo: error: ") and len(err) == 2, err
    assert err[1].startswith("hint: ") and says in "\n".join(err), err
    assert (store / "config.json").read_bytes() == settings  # nothing written


def test_remote_add_takes_every_kind_remotes_support(tmp_path) -> None:
    store, other = tmp_path / "s", tmp_path / "other"
    urls = (str(other), f"file://{other}", "./relative/dir",
            "https://osmo.example.org:8443/team", "s3://evals/team-a")  # fmt: skip
    for i, url in enumerate(urls):
        assert main(["--store", str(store), "remote", "add", f"r{i}", url]) == 0, url
    remotes = json.loads((store / "config.json").read_text())["remotes"]
    assert remotes["r0"]["url"] == remotes["r1"]["url"] == str(other)


# --- 6. labels are neither id prefixes nor shared ---------------------------------------------


@pytest.fixture
def two_configs(store_path, project, server, capsys) -> tuple[str, str]:
    ids = []
    for n in ("1", "2"):
        argv = ["--store", str(store_path), "eval", "--json", "-q", "-d", "data.jsonl",
                "--model", "mock", "--base-url", server.base_url, "--eval-fn", "fns.py:exact",
                "--n", n]  # fmt: skip
        assert main(argv) == 0
        ids.append(json.loads(capsys.readouterr().out)["config_id"])
    return ids[0], ids[1]


def _labels(store: Path) -> dict[str, str | None]:
    from osmo_store.eval.catalog import list_configs

    with Repository.open(store) as repo:
        return {c.config_id: c.label for c in list_configs(repo)}


def test_a_label_that_looks_like_an_id_prefix_is_refused(store_path, two_configs, capsys):
    a, _ = two_configs
    for name in ("cafe", "0123456789", "DEADBEEF"):
        assert main(["--store", str(store_path), "eval", "label", a, name]) == 1
        err = capsys.readouterr().err
        assert "id prefix" in err and "hint:" in err
    assert main(["--store", str(store_path), "eval", "label", a, "caf"]) == 0
    assert main(["--store", str(store_path), "eval", "label", a, "cafe-2"]) == 0
    assert _labels(store_path)[a] == "cafe-2"


def test_a_label_of_another_config_is_refused_unless_forced(
    store_path, project, server, two_configs, capsys
) -> None:
    a, b = two_configs
    s = str(store_path)
    assert main(["--store", s, "eval", "label", a, "best"]) == 0
    assert main(["--store", s, "eval", "label", a, "best"]) == 0  # its own: no change
    capsys.readouterr()
    assert main(["--store", s, "eval", "label", b, "best"]) == 1
    err = capsys.readouterr().err
    assert f"config {a[:12]}" in err and "--force" in err
    assert _labels(store_path) == {a: "best", b: None}
    # A new run named like another config is refused before it runs.
    calls = server.calls
    argv = ["--store", s, "eval", "-q", "-d", "data.jsonl", "--model", "mock", "--base-url",
            server.base_url, "--eval-fn", "fns.py:exact", "--n", "3",
            "--label", "best"]  # fmt: skip
    assert main(argv) == 1
    assert "already names config" in capsys.readouterr().err and server.calls == calls
    assert main(["--store", s, "eval", "label", "--force", b, "best"]) == 0
    assert _labels(store_path) == {a: None, b: "best"}


def test_the_python_api_refuses_a_label_of_another_config(store_path, two_configs) -> None:
    from osmo_store import label
    from osmo_store.errors import LabelTaken

    a, b = two_configs
    label(a, "best", store=store_path)
    with pytest.raises(LabelTaken):
        label(b, "best", store=store_path)
    label(b, "best", store=store_path, force=True)
    assert _labels(store_path) == {a: None, b: "best"}
