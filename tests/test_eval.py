"""`osmo eval` end to end against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import _thread
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.cli.main import main
from osmo_store.eval.catalog import list_configs
from osmo_store.eval.client import ChatClient, FatalModelError
from osmo_store.eval.config import SamplingParams
from osmo_store.eval.prepare import prepare_eval
from osmo_store.eval.runner import EvalOptions, load_samples, run_eval
from osmo_store.eval.state import ConfigState
from osmo_store.eval.stored import SampleReader
from osmo_store.eval.summary import summarize
from osmo_store.maintenance.fsck import fsck
from osmo_store.testing.mockserver import ArithmeticResponder, MockServer
from osmo_store.tree import iter_tree

from .waiting import Gate


@pytest.fixture
def server():
    with MockServer() as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = [{"user_prompt": f"What is {i} + {i + 1}?", "ground_truth": str(2 * i + 1),
             "topic": "add"} for i in range(12)]  # fmt: skip
    write_rows(tmp_path / "data.jsonl", rows)
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    (tmp_path / "other.py").write_text(
        "def length(messages, ground_truth, metadata):\n"
        "    return {'chars': len(messages[-1]['content']), 'score': 1.0}\n"
    )
    (tmp_path / "broken.py").write_text(
        "def boom(solution_str, ground_truth, extra_info):\n"
        "    if solution_str.endswith('3'):\n"
        "        raise ValueError('cannot score this one')\n"
        "    return 1\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def osmo_eval(store_path: Path, server: MockServer, project: Path, capsys):
    def run(*extra: str, fns: tuple[str, ...] = ("fns.py:exact",), json_out: bool = True):
        argv = ["--store", str(store_path), "eval", "-d", "data.jsonl", "--model", "mock",
                "--base-url", server.base_url, "-q", "--max-retries", "0"]  # fmt: skip
        for f in fns:
            argv += ["--eval-fn", f]
        if json_out:
            argv.append("--json")
        code = main([*argv, *extra])
        captured = capsys.readouterr()
        body = json.loads(captured.out) if json_out and code == 0 else None
        return code, body, captured.err

    return run


def test_first_run_scores_everything_and_second_run_makes_no_calls(osmo_eval, server) -> None:
    code, body, err = osmo_eval()
    assert code == 0, err
    assert body["status"] == "completed"
    assert server.calls == 12
    s = body["summary"]
    assert s["runs"] == 12 and s["failed"] == 0
    assert s["metrics"]["exact"]["mean"] == 1.0  # the mock answers arithmetic exactly
    assert s["pass_at_k"] == {"pass@1": 1.0}
    code, body2, _ = osmo_eval()
    assert code == 0 and server.calls == 12
    assert body2["session"]["reused_samples"] == 12 and body2["session"]["model_calls"] == 0
    assert body2["summary"]["metrics"] == s["metrics"]
    assert body2["config_id"] == body["config_id"]


def test_changing_only_the_eval_function_rescores_without_calls(osmo_eval, server) -> None:
    osmo_eval()
    code, body, _ = osmo_eval(fns=("other.py:length",))
    assert code == 0 and server.calls == 12
    assert body["session"]["reused_rollouts"] == 12
    assert body["summary"]["metrics"]["length/score"]["mean"] == 1.0


def test_raising_n_runs_only_new_samples(osmo_eval, server) -> None:
    osmo_eval("--n", "3", "--temperature", "0.7")
    assert server.calls == 36
    code, body, _ = osmo_eval("--n", "5", "--temperature", "0.7")
    assert code == 0 and server.calls == 36 + 24
    assert body["session"]["reused_rollouts"] == 36 and body["session"]["computed"] == 24
    assert set(body["summary"]["pass_at_k"]) == {"pass@1", "pass@2", "pass@4", "pass@5"}


def test_edited_added_reordered_rows_rerun_only_what_changed(osmo_eval, server, project) -> None:
    osmo_eval()
    rows = [json.loads(line) for line in (project / "data.jsonl").read_text().splitlines()]
    rows.reverse()
    rows[0]["user_prompt"] = "What is 100 + 1?"
    rows[0]["ground_truth"] = "101"
    rows.append({"user_prompt": "What is 7 * 6?", "ground_truth": "42", "topic": "mul"})
    write_rows(project / "data.jsonl", rows)
    code, body, _ = osmo_eval()
    assert code == 0
    assert server.calls == 12 + 2  # one edited row, one new row
    assert body["session"]["reused_rollouts"] == 11


def test_limit_overlapping_earlier_work_reuses_it(osmo_eval, server, store_path) -> None:
    osmo_eval("--limit", "5")
    assert server.calls == 5
    code, body, _ = osmo_eval("--limit", "8")
    assert code == 0 and server.calls == 8
    # 3 runs recorded by this session, 5 read back from the store: the same summary as
    # one computed from every stored sample.
    with Repository.open(store_path) as repo:
        config = list_configs(repo)[0]
        stored = load_samples(repo, ConfigState.from_run(repo, config.run_id).trees)
    expected = summarize(stored, n=1, pass_threshold=1.0, primary="exact")
    assert {k: v for k, v in body["summary"].items() if k != "wall_time_s"} == expected
    osmo_eval("--offset", "2", "--limit", "4")
    assert server.calls == 8


def test_failed_runs_are_recorded_and_retried_only_on_request(osmo_eval, server) -> None:
    server.fail_next(500, count=3)
    code, body, _ = osmo_eval("--concurrency", "1")
    assert code == 0
    assert body["summary"]["failed"] == 3 and server.calls == 12
    # A plain re-run does not re-run failures (errors are data, not missing work).
    code, body, _ = osmo_eval()
    assert server.calls == 12 and body["summary"]["failed"] == 3
    # --retry-failed re-runs exactly those; a failure again keeps the failure.
    server.fail_next(500, count=1)
    code, body, _ = osmo_eval("--retry-failed", "--concurrency", "1")
    assert server.calls == 15 and body["summary"]["failed"] == 1
    # The summary counts each run once: the replaced failures are not read back as well.
    assert body["summary"]["runs"] == 12 and body["summary"]["metrics"]["exact"]["count"] == 11
    code, body, _ = osmo_eval("--retry-failed")
    assert server.calls == 16 and body["summary"]["failed"] == 0
    assert body["summary"]["runs"] == 12
    assert body["summary"]["metrics"]["exact"]["count"] == 12


def test_failures_are_never_cached_as_answers(osmo_eval, server) -> None:
    server.fail_next(500, count=12)
    osmo_eval()
    assert server.calls == 12
    code, body, _ = osmo_eval(fns=("other.py:length",))  # new config, same rollouts
    assert code == 0 and server.calls == 24 and body["summary"]["failed"] == 0


def test_scoring_errors_are_counted_not_zeroed(osmo_eval, server) -> None:
    _, body, _ = osmo_eval(fns=("broken.py:boom",))
    s = body["summary"]
    # answers 1, 3, ... 23: those ending in 3 (3, 13, 23) raise
    assert s["scoring_errors"] == 3 and s["scoring_errors_by_fn"] == {"boom": 3}
    assert s["metrics"]["boom"]["count"] == 9 and s["metrics"]["boom"]["mean"] == 1.0


def test_user_code_that_exits_fails_its_run_not_the_eval(
    osmo_eval, server, project, store_path
) -> None:
    """exit() or sys.exit() in an eval function is a scoring error, in an agent a failed run;
    neither ends the eval (in a worker thread it would, with the user's status: 0 for exit())."""
    (project / "quits.py").write_text(
        "import sys\n"
        "def quits(solution_str, ground_truth, extra_info):\n"
        "    if solution_str.endswith('3'):\n"
        "        exit()\n"
        "    if solution_str.endswith('5'):\n"
        "        sys.exit(3)\n"
        "    return 1\n"
    )
    code, body, err = osmo_eval(fns=("quits.py:quits",))
    assert code == 0, err
    s = body["summary"]
    assert s["runs"] == 12 and s["scoring_errors"] == 5 and s["metrics"]["quits"]["count"] == 7
    (project / "agent.py").write_text(
        "import sys\n"
        "def solve(messages, row, client):\n"
        "    if row['ground_truth'].endswith('1'):\n"
        "        sys.exit(2)\n"
        "    return messages + [client.chat(messages)]\n"
    )
    code, body, err = osmo_eval("--agent", "agent.py:solve")
    assert code == 0, err
    assert body["summary"]["runs"] == 12 and body["summary"]["failed"] == 3  # 1, 11, 21
    with Repository.open(store_path) as repo:
        run_id = next(c.run_id for c in list_configs(repo) if c.config_id == body["config_id"])
        stored = load_samples(repo, ConfigState.from_run(repo, run_id).trees)
    errors = [x["error"] for x in stored if x["status"] == "failed"]
    assert errors == [{"type": "agent_error", "message": "SystemExit: the code called exit(2)"}] * 3


@pytest.mark.parametrize(
    ("source", "spec", "says"),
    [
        ("x = 1\n", "bad.py:exact", "has no attribute 'exact'"),
        ("def exact(:\n", "bad.py:exact", "SyntaxError"),
        ("exit(4)\n", "bad.py:exact", "SystemExit: the code called exit(4)"),
        ("import sys\nsys.exit()\n", "bad:exact", "SystemExit: the code called exit()"),
        ("exact = 3\n", "bad.py:exact", "not callable"),
        ("", "nosuch.py:exact", "nosuch.py"),
    ],
)
def test_eval_functions_that_cannot_load_are_one_line_errors(
    osmo_eval, server, project, source: str, spec: str, says: str
) -> None:
    (project / "bad.py").write_text(source)
    code, _, err = osmo_eval(fns=(spec,))
    assert code == 1 and server.calls == 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("osmo: error:"), err
    assert says in err


def test_fatal_errors_stop_at_once_with_a_clear_message(osmo_eval, store_path, capsys) -> None:
    """And they leave the store as it was: no empty config from a mistyped key, and a
    --fresh start that could not run keeps the state it would have replaced."""

    def run(srv: MockServer, key: str, *extra: str) -> int:
        return main(["--store", str(store_path), "eval", "-d", "data.jsonl", "--model", "mock",
                     "--model-id", "mock@lab", "--base-url", srv.base_url, "--api-key", key,
                     "--eval-fn", "fns.py:exact", "-q", *extra])  # fmt: skip

    with MockServer(require_api_key="sk-right") as srv:
        assert run(srv, "sk-wrong") == 1
        assert srv.calls <= 8  # stopped, not 12 failed runs
        err = capsys.readouterr().err
        assert err.startswith("osmo: error:") and "401" in err
        with Repository.open(store_path) as repo:
            assert list_configs(repo) == []
        assert run(srv, "sk-right") == 0
        with Repository.open(store_path) as repo:
            [before] = list_configs(repo)
            # --model-id keeps the endpoint out of the identity, not out of the record
            meta = repo.objects.get_run(before.run_id).meta
            assert meta["config"]["base_url"] == srv.base_url.rstrip("/")
        assert run(srv, "sk-wrong", "--fresh") == 1
        with Repository.open(store_path) as repo:
            [after] = list_configs(repo)
        assert after.run_id == before.run_id and after.status == "completed"


def test_identical_requests_in_flight_are_made_once(osmo_eval, server, project) -> None:
    rows = [{"user_prompt": "What is 2 + 2?", "ground_truth": "4", "copy": i} for i in range(6)]
    write_rows(project / "data.jsonl", rows)
    code, body, _ = osmo_eval("--concurrency", "6")
    assert code == 0 and body["summary"]["runs"] == 6
    assert server.calls == 1


def test_sliding_window_keeps_c_runs_in_flight(store_path, project, capsys) -> None:
    rows = [{"user_prompt": f"What is {i} + 1?", "ground_truth": str(i + 1)} for i in range(40)]
    write_rows(project / "data.jsonl", rows)
    with MockServer(latency=0.05) as srv:
        code = main(["--store", str(store_path), "eval", "-d", "data.jsonl", "--model", "m",
                     "--base-url", srv.base_url, "--eval-fn", "fns.py:exact", "-q",
                     "--concurrency", "8"])  # fmt: skip
        assert code == 0
        assert srv.max_concurrency == 8


def test_agent_multi_turn_calls_are_each_cached(osmo_eval, server, project) -> None:
    (project / "agent.py").write_text(
        "async def solve(messages, row, client):\n"
        "    convo = list(messages)\n"
        "    first = await client.achat(convo)\n"
        "    convo += [first, {'role': 'user', 'content': 'Are you sure? What is 1 + 1?'}]\n"
        "    second = client.chat(convo)\n"
        "    return convo + [second]\n"
    )
    code, body, _ = osmo_eval("--agent", "agent.py:solve")
    assert code == 0 and server.calls == 24
    assert body["summary"]["metrics"]["exact"]["mean"] == 0.0  # final answer is always 2
    # Agent code changes, same calls: every model call is served from the store.
    (project / "agent.py").write_text((project / "agent.py").read_text() + "\nVERSION = 2\n")
    code, body, _ = osmo_eval("--agent", "agent.py:solve")
    assert code == 0 and server.calls == 24 and body["session"]["computed"] == 12


def test_outputs(osmo_eval, project) -> None:
    code, _, _ = osmo_eval("-o", "all.json", "--output-path", "out", "--log-samples", "s.jsonl")
    assert code == 0
    whole = json.loads((project / "all.json").read_text())
    assert whole["status"] == "completed" and len(whole["runs"]) == 12
    first = whole["runs"][0]
    assert first["row"] == 0 and first["messages"][-1]["role"] == "assistant"
    assert first["scores"] == {"exact": 1.0}
    lines = (project / "s.jsonl").read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[3])["data"]["user_prompt"] == "What is 3 + 4?"
    short = whole["config_id"][:12]
    assert (project / "out" / f"results-{short}.json").is_file()
    assert len((project / "out" / f"samples-{short}.jsonl").read_text().splitlines()) == 12


def test_bad_dataset_row_is_a_one_line_error(osmo_eval, project, store_path) -> None:
    (project / "data.jsonl").write_text('{"user_prompt": "ok"}\n{not json\n')
    code, _, err = osmo_eval()
    assert code == 1
    assert "data.jsonl:2" in err and err.startswith("osmo: error:")
    assert "Traceback" not in err


def test_eval_cache_ls_rm_log_show(osmo_eval, server, store_path, capsys) -> None:
    _, a, _ = osmo_eval()
    _, b, _ = osmo_eval(fns=("other.py:length",))
    assert main(["--store", str(store_path), "eval", "cache", "ls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["config_id"] for c in listed] == [b["config_id"], a["config_id"]]
    assert listed[0]["status"] == "completed" and listed[0]["done"] == 12
    assert main(["--store", str(store_path), "eval", "cache", "ls", "--model", "MOCK"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["--store", str(store_path), "log", a["config_id"][:8]]) == 0
    log_out = capsys.readouterr().out
    assert log_out.startswith(f"run {a['run']}") and log_out.count("\nrun ") == 0
    assert main(["--store", str(store_path), "show", a["config_id"][:8]]) == 0
    assert '"status": "completed"' in capsys.readouterr().out
    assert main(["--store", str(store_path), "eval", "cache", "rm", "--all", "--model", "x"]) == 1
    assert "--all" in capsys.readouterr().err
    assert main(["--store", str(store_path), "eval", "cache", "rm", "-y", a["config_id"][:8]]) == 0
    capsys.readouterr()
    with Repository.open(store_path) as repo:
        assert [c.config_id for c in list_configs(repo)] == [b["config_id"]]
    # The removed config's rollouts are still used by the other one: no new calls.
    calls = server.calls
    _, again, _ = osmo_eval()
    assert server.calls == calls and again["session"]["reused_rollouts"] == 12
    assert main(["--store", str(store_path), "log", a["config_id"][:8]]) == 0
    assert capsys.readouterr().out.startswith(f"run {again['run']}")
    assert main(["--store", str(store_path), "eval", "cache", "dir"]) == 0
    assert capsys.readouterr().out.strip() == str(store_path.absolute())


def test_agent_without_a_model_stops_at_once(store_path, project, capsys) -> None:
    (project / "agent.py").write_text(
        "def solve(messages, row, client):\n    return messages + [client.chat(messages)]\n"
    )
    argv = ["eval", "-d", "data.jsonl", "--agent", "agent.py:solve", "--eval-fn", "fns.py:exact"]
    code = main(["--store", str(store_path), *argv, "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "no model was given" in err and "--model" in err


@pytest.mark.parametrize("recorder", ["process", "thread"])
def test_every_run_record_carries_provenance(
    osmo_eval, project, store_path, monkeypatch, recorder
) -> None:
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    monkeypatch.setenv("OSMO_RECORDER", recorder)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "fns.py"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "fns"], cwd=project, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    code, _, err = osmo_eval()
    assert code == 0, err
    with Repository.open(store_path) as repo:
        record = repo.objects.get_run(list_configs(repo)[0].run_id)
    meta = record.meta
    prov = meta["provenance"]
    assert prov["osmo_version"] and prov["python"] and prov["host"] and prov["user"]
    assert prov["started"] <= meta["session"]["updated"]
    assert prov["dataset"]["path"].endswith("data.jsonl") and prov["dataset"]["fingerprint"]
    (fn,) = prov["code"].values()
    assert fn["fingerprint"] and fn["git"] == {"commit": head, "dirty": False}
    assert meta["config"]["model"] == "mock" and meta["identity"]["n"] == 1


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_processes_an_agent_starts_can_be_interrupted(osmo_eval, server, project) -> None:
    """Whatever the eval does with signals, a tool process an agent starts must not inherit
    SIGINT/SIGTERM blocked (it could then be neither stopped nor terminated)."""
    (project / "agent.py").write_text(
        "import subprocess, sys\n"
        "def solve(messages, row, client):\n"
        "    status = subprocess.run([sys.executable, '-c', \"print(open('/proc/self/status')"
        '.read())"], capture_output=True, text=True, check=True).stdout\n'
        "    blocked = int(next(l for l in status.splitlines() if l.startswith('SigBlk'))"
        ".split()[1], 16)\n"
        "    if blocked & ((1 << 1) | (1 << 14)):  # SIGINT = 2, SIGTERM = 15\n"
        "        raise RuntimeError(f'tool process starts with signals blocked: {blocked:x}')\n"
        "    return messages + [client.chat(messages)]\n"
    )
    code, body, err = osmo_eval("--agent", "agent.py:solve")
    assert code == 0, err
    assert body["summary"]["failed"] == 0 and body["summary"]["runs"] == 12


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--timeout", "0", "argument --timeout: must be > 0"),
        ("--timeout", "-1", "argument --timeout: must be > 0"),
        ("--temperature", "nan", "argument --temperature: expected a finite number"),
        ("--top-p", "inf", "argument --top-p: expected a finite number"),
        ("--pass-threshold", "x", "argument --pass-threshold: expected a number"),
    ],
)
def test_bad_numbers_in_flags_are_usage_errors(
    osmo_eval, server, capsys, flag: str, value: str, says: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        osmo_eval(flag, value)
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert server.calls == 0


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf"])
def test_a_bad_lock_timeout_is_a_one_line_error(
    osmo_eval, server, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OSMO_LOCK_TIMEOUT", value)
    code, _, err = osmo_eval()
    assert code == 1 and server.calls == 0
    assert (
        err.strip()
        == f"osmo: error: OSMO_LOCK_TIMEOUT must be a number of seconds >= 0, not {value!r}"
    )


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--output-path", "afile"), "--output-path afile: is a file"),
        (("-o", "adir"), "-o adir: is a directory"),
        (("--log-samples", "adir"), "--log-samples adir: is a directory"),
        (("-o", "afile/x.json"), "-o afile/x.json: afile is not a directory"),
        (("--output-path", "afile/sub"), "--output-path afile/sub: afile is not a directory"),
    ],
)
def test_unwritable_output_paths_are_refused_before_running(
    osmo_eval, server, project, flags: tuple[str, ...], says: str
) -> None:
    (project / "afile").write_text("keep me\n")
    (project / "adir").mkdir()
    code, _, err = osmo_eval(*flags)
    assert code == 1 and server.calls == 0
    assert err.strip() == f"osmo: error: {says}"
    assert (project / "afile").read_text() == "keep me\n"


def test_output_file_in_a_new_directory_is_written(osmo_eval, project) -> None:
    code, body, err = osmo_eval("-o", "new/dir/all.json")
    assert code == 0, err
    written = json.loads((project / "new" / "dir" / "all.json").read_text())
    assert written["summary"] == body["summary"] and len(written["runs"]) == 12


def test_fresh_computes_every_run_anew(osmo_eval, server, store_path) -> None:
    """--fresh starts the config over: new model calls for every run (a redeployed model
    under the same name gets asked again); the old state stays in the reflog."""
    code, first, _ = osmo_eval()
    assert code == 0 and server.calls == 12
    code, body, _ = osmo_eval("--fresh")
    assert code == 0 and server.calls == 24 and body["config_id"] == first["config_id"]
    assert body["session"]["computed"] == 12 and body["session"]["reused_rollouts"] == 0
    assert body["summary"]["runs"] == 12 and body["session"]["reused_samples"] == 0
    code, body, _ = osmo_eval()
    assert code == 0 and server.calls == 24 and body["session"]["reused_samples"] == 12
    # Another config (another eval function) reuses the fresh rollouts: no calls.
    code, body, _ = osmo_eval(fns=("other.py:length",))
    assert code == 0 and server.calls == 24 and body["session"]["reused_rollouts"] == 12
    with Repository.open(store_path) as repo:
        logged = [e.new for e in repo.refs.reflog(f"refs/evals/{first['config_id']}")]
    assert first["run"] in logged


def test_a_failed_agent_run_keeps_its_calls_and_a_retry_asks_again(
    osmo_eval, server, project, store_path
) -> None:
    """The calls an agent made before failing are recorded (named in the failed sample);
    --retry-failed makes them again rather than replaying the answers that led to the
    failure, and a plain re-run does not touch the failure."""
    (project / "agent.py").write_text(
        "import os\n"
        "def solve(messages, row, client):\n"
        "    first = client.chat(messages)\n"
        "    second = client.chat(messages + [first, {'role': 'user', 'content': 'sure?'}])\n"
        "    if os.path.exists('flaky') and row['ground_truth'].endswith('1'):\n"
        "        raise RuntimeError('tool crashed')\n"
        "    return messages + [second]\n"
    )
    (project / "flaky").write_text("")
    code, body, err = osmo_eval("--agent", "agent.py:solve")
    assert code == 0, err
    assert body["summary"]["failed"] == 3 and server.calls == 24  # 1, 11, 21 failed
    with Repository.open(store_path) as repo:
        run_id = list_configs(repo)[0].run_id
        failed = [x for x in load_samples(repo, ConfigState.from_run(repo, run_id).trees)
                  if x["status"] == "failed"]  # fmt: skip
        assert len(failed) == 3 and all(len(x["calls"]) == 2 for x in failed)
        cached = ConfigState.from_run(repo, run_id).names(repo, "cache")
        assert {c["key"] for x in failed for c in x["calls"]} <= cached  # kept reachable
    code, body, _ = osmo_eval("--agent", "agent.py:solve")
    assert code == 0 and server.calls == 24 and body["summary"]["failed"] == 3
    (project / "flaky").unlink()
    code, body, _ = osmo_eval("--agent", "agent.py:solve", "--retry-failed")
    assert code == 0 and body["summary"]["failed"] == 0
    assert server.calls == 30 and body["session"]["model_calls"] == 6  # both calls, again


def test_a_fatal_error_after_an_agent_call_was_recorded_keeps_the_call(
    store_path, project, capsys
) -> None:
    """The config is put back only if nothing at all was recorded: a call the agent already
    paid for stays in the config (and is reused by the next attempt)."""
    (project / "agent.py").write_text(
        "import time\n"
        "def solve(messages, row, client):\n"
        "    first = client.chat(messages)\n"
        "    time.sleep(0.6)  # the first call gets committed\n"
        "    return messages + [first, client.chat(messages + [first])]\n"
    )
    srv_box: list[MockServer] = []

    def responder(request: dict) -> str:
        srv_box[0].fail_next(401, count=20)  # every request after this one: a bad key
        return "ok"

    with MockServer(responder=responder) as srv:
        srv_box.append(srv)
        argv = ["--store", str(store_path), "eval", "-d", "data.jsonl", "--model", "m",
                "--base-url", srv.base_url, "--agent", "agent.py:solve", "--eval-fn",
                "fns.py:exact", "-q", "--limit", "1", "--max-retries", "0"]  # fmt: skip
        assert main(argv) == 1
        assert srv.calls == 2
    with Repository.open(store_path) as repo:
        [config] = list_configs(repo)
        assert config.counts["done"] == 0
        assert ConfigState.from_run(repo, config.run_id).count(repo, "cache") == 1


@pytest.mark.parametrize(
    ("flags", "blocked"),
    [(("--output-path", "out"), "out/results-{}.json"),
     (("--output-path", "out"), "out/samples-{}.jsonl"),
     (("--log-samples",), "samples-{}.jsonl")],
)  # fmt: skip
def test_output_files_osmo_names_are_checked_before_running(
    osmo_eval, server, project, flags: tuple[str, ...], blocked: str
) -> None:
    code, body, _ = osmo_eval()
    assert code == 0 and server.calls == 12
    (project / blocked.format(body["config_id"][:12])).mkdir(parents=True)
    code, _, err = osmo_eval("--fresh", *flags)
    assert code == 1 and server.calls == 12  # refused before the fresh start asked again
    assert err.strip().endswith("is a directory"), err


def damage(repo: Repository, oid: str) -> None:
    """Flip a byte of every stored copy of ``oid`` (loose and packed)."""
    store = repo.objects
    copies = [(store.loose_path(oid), None)] if store.loose_path(oid).exists() else []
    for p in store.packs():
        copies += [(p.pack_path, (off, ln)) for o, off, ln in p.entries() if o == oid]
    assert copies
    for path, span in copies:
        data = bytearray(path.read_bytes())
        data[len(data) // 2 if span is None else span[0] + span[1] // 2] ^= 0x5A
        path.chmod(0o644)
        path.write_bytes(bytes(data))


def test_damaged_stored_results_are_computed_again(osmo_eval, server, store_path, caplog) -> None:
    """A damaged rollout or model call is a miss (computed again, with a warning), and a
    damaged lookup index only costs reuse: neither stops an eval."""
    code, _, _ = osmo_eval()
    assert code == 0 and server.calls == 12
    with Repository.open(store_path) as repo:
        state = ConfigState.from_run(repo, list_configs(repo)[0].run_id)
        first = next(iter_tree(repo.objects, state.trees["samples"]))
        sample = SampleReader(repo, state.trees).load(first.oid, first.name)
        rollout = json.loads(repo.objects.get_typed(sample["rollout_id"], ObjectType.BLOB))
        damage(repo, sample["rollout_id"])
        damage(repo, rollout["calls"][0]["id"])
        report = fsck(repo)  # names what each damaged object is
        assert any(f"reachable from refs/evals/{state.record.meta['config_id']}: cache/"
                   in p for p in report.problems), report.problems  # fmt: skip
    code, body, err = osmo_eval(fns=("other.py:length",))
    assert code == 0, err
    assert server.calls == 13 and body["session"]["computed"] == 1
    assert "a stored result is damaged" in caplog.text
    with Repository.open(store_path) as repo:
        damage(repo, repo.refs.read("refs/cache/index"))
    code, body, err = osmo_eval(fns=("broken.py:boom",))
    assert code == 0, err
    assert "the lookup index is damaged" in caplog.text and body["summary"]["runs"] == 12


def test_each_sample_of_a_seeded_eval_has_its_own_seed(osmo_eval, server, project) -> None:
    """--seed S with --n 3: samples ask with seeds S, S+1, S+2 (one seed for all would make
    the n samples one sample counted n times on a server that honours seeds)."""
    write_rows(project / "data.jsonl", [{"user_prompt": "What is 1 + 1?", "ground_truth": "2"}])
    code, body, _ = osmo_eval("--n", "3", "--seed", "42", "--temperature", "0.7")
    assert code == 0 and body["summary"]["runs"] == 3
    assert sorted(r["seed"] for r in server.requests) == [42, 43, 44]


def test_the_library_gets_the_cli_config_id_and_resumes_its_eval(
    osmo_eval, server, store_path, project, monkeypatch
) -> None:
    """A program that prepares the eval through the library names the config the CLI
    recorded (the endpoint given by --base-url there, by $OSMO_BASE_URL here), and running
    it finds every run recorded."""
    monkeypatch.setenv("OSMO_BASE_URL", server.base_url)
    code, body, err = osmo_eval("--temperature", "0.5", "--n", "2", "--limit", "5")
    assert code == 0, err
    calls = server.calls
    params = SamplingParams(temperature=0.5)
    prepared = prepare_eval("data.jsonl", ["fns.py:exact"], model="mock", params=params, n=2,
                            limit=5)  # fmt: skip
    assert prepared.config.config_id == body["config_id"]
    with Repository.open(store_path) as repo, ChatClient(prepared.base_url, api_key=None) as client:
        outcome = run_eval(repo, prepared, client=client, options=EvalOptions())
    assert outcome.config_id == body["config_id"] and outcome.status == "completed"
    assert outcome.session["reused_samples"] == 10 and server.calls == calls


@pytest.fixture
def run_in_process(store_path, project):
    """``run_eval`` through the library against ``srv``; returns what it returned or raised
    and the threads it left running (the mock server's own are not counted)."""

    def run(srv: MockServer, on_progress=None, *, api_key=None, stop=None, grace=5.0):
        prepared = prepare_eval("data.jsonl", ["fns.py:exact"], model="mock",
                                base_url=srv.base_url)  # fmt: skip
        options = EvalOptions(concurrency=4, stop_grace=grace)
        before = set(threading.enumerate())
        result: object
        with (
            Repository.open(store_path) as repo,
            ChatClient(prepared.base_url, api_key=api_key, max_retries=0) as client,
        ):
            try:
                result = run_eval(repo, prepared, client=client, options=options, stop=stop,
                                  on_progress=on_progress)  # fmt: skip
            except BaseException as e:  # noqa: BLE001 - the test looks at what it was
                result = e
            left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()
                    and "process_request" not in t.name]  # fmt: skip
        return result, left

    return run


def test_run_eval_returns_once_its_threads_have_ended(run_in_process) -> None:
    with MockServer(latency=0.05) as srv:
        outcome, left = run_in_process(srv)
    assert outcome.status == "completed" and left == []


def test_a_stopped_eval_waits_for_its_runs_in_flight(run_in_process) -> None:
    """Stopped with no grace period while runs are in flight (their results are dropped):
    run_eval still returns only once the worker threads have ended."""
    stop = threading.Event()

    def on_progress(p) -> None:
        if p.done:
            stop.set()

    with MockServer(latency=0.5) as srv:
        outcome, left = run_in_process(srv, on_progress, stop=stop, grace=0.0)
    assert outcome.interrupted and 0 < outcome.summary["runs"] < 12
    assert left == []


def test_a_stopped_eval_records_every_run_in_flight(run_in_process) -> None:
    """The first Ctrl-C (``stop``) launches nothing new, and every answer already asked
    for is recorded when it arrives: it was paid for. The calls in flight are held at a
    gate until well after the stop, so they arrive when the eval is already stopping."""
    stop = threading.Event()
    gate = Gate(answered=3)

    def on_progress(p) -> None:
        if p.done >= 3 and not stop.is_set():
            stop.set()
            threading.Timer(0.5, gate.release).start()

    with gate, MockServer(responder=gate) as srv:
        outcome, left = run_in_process(srv, on_progress, stop=stop, grace=None)
        asked = srv.calls
    assert outcome.interrupted and 3 < asked < 12
    assert outcome.summary["runs"] == asked  # nothing answered was dropped
    assert left == []


def test_a_fatal_model_error_leaves_no_thread_behind(run_in_process) -> None:
    with MockServer(latency=0.2, require_api_key="sk-right") as srv:
        error, left = run_in_process(srv, api_key="sk-wrong")
    assert isinstance(error, FatalModelError) and left == []


def test_a_keyboard_interrupt_leaves_no_thread_behind(run_in_process) -> None:
    """Ctrl-C in a program that runs the eval (the default handler: KeyboardInterrupt in
    the main thread) while runs are in flight. The later calls are held at a gate until
    the interrupt is sent: on a loaded machine, the first progress report could otherwise
    come only once every run had finished (seen in a loaded stability run). After it, two
    more waves of 0.5 s answers are left: the main thread notices the interrupt first."""
    gate = Gate(answered=2)

    def on_progress(p) -> None:
        if p.done and not gate.released:
            _thread.interrupt_main()
            gate.release()

    with gate, MockServer(responder=gate, latency=0.5) as srv:
        error, left = run_in_process(srv, on_progress)
    assert isinstance(error, KeyboardInterrupt) and left == []


def test_a_second_ctrl_c_aborts_without_waiting_for_the_calls_in_flight(
    osmo_bin, store_path, project
) -> None:
    """An async agent's model calls stuck on the server: the first SIGINT stops launching,
    the second ends the process at once (no call in flight holds its exit up)."""
    (project / "agent.py").write_text(
        "async def solve(messages, row, client):\n"
        "    return messages + [await client.achat(messages)]\n"
    )
    release = threading.Event()
    answer = ArithmeticResponder()

    def responder(request: dict) -> str:
        if int(request["messages"][-1]["content"].split()[2]) >= 4:
            release.wait(120)  # stuck until the test ends
        return answer(request)

    with MockServer(responder=responder) as srv:
        proc = subprocess.Popen(
            [osmo_bin, "--store", str(store_path), "eval", "-d", "data.jsonl", "--model", "m",
             "--base-url", srv.base_url, "--agent", "agent.py:solve", "--eval-fn",
             "fns.py:exact", "--concurrency", "2", "-q"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while srv.calls < 6:  # rows 0-3 answered, two stuck
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            assert proc.stderr is not None
            assert "osmo: stopping" in proc.stderr.readline() + proc.stderr.readline()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)  # long before the stuck calls could return
        finally:
            release.set()
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read()
    assert code == 130 and "osmo: aborted" in stderr
    assert "hint: resume with the same command" in stderr
