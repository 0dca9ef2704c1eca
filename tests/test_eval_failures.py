"""What `osmo eval` tells about failures: causes grouped on screen, exit codes, hints. Each
test runs the installed CLI in a subprocess against the mock model server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from osmo_store.cli.common import EXIT_ALL_FAILED, EXIT_BELOW_THRESHOLD
from osmo_store.testing.mockserver import MockServer

ROWS = 6


@pytest.fixture
def project(tmp_path: Path) -> Path:
    rows = [{"user_prompt": f"What is {i} + {i + 1}?", "ground_truth": str(2 * i + 1)}
            for i in range(ROWS)]  # fmt: skip
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
        "def odd_only(solution_str, ground_truth, extra_info):\n"
        "    return int(ground_truth) % 4 == 1\n"
        "def boom(solution_str, ground_truth, extra_info):\n"
        "    if solution_str.endswith('3'):\n"
        "        raise ValueError('cannot score ' + solution_str)\n"
        "    return 1\n"
    )
    return tmp_path


def run_eval(osmo_bin: str, project: Path, server: MockServer, *extra: str,
             fns: tuple[str, ...] = ("fns.py:exact",)) -> subprocess.CompletedProcess:  # fmt: skip
    argv = [osmo_bin, "--store", str(project / "store"), "eval", "-d", "data.jsonl",
            "--model", "m", "--base-url", server.base_url, "-q", "--max-retries", "1"]  # fmt: skip
    for fn in fns:
        argv += ["--eval-fn", fn]
    return subprocess.run([*argv, *extra], cwd=project, capture_output=True, text=True, timeout=120)


def test_every_run_failing_shows_the_cause_and_exits_non_zero(osmo_bin, project) -> None:
    with MockServer(fail_rate=1.0) as srv:
        done = run_eval(osmo_bin, project, srv)
        assert srv.calls == 2 * ROWS  # one retry each
    assert done.returncode == EXIT_ALL_FAILED, done.stderr
    text = done.stdout
    assert f"{ROWS} failed" in text
    # The cause, its count and an example row to look at.
    cause = next(line for line in text.splitlines() if "HTTP 500" in line)
    assert cause.lstrip().startswith(f"{ROWS} x model_error 500:"), text
    assert "example: osmo eval show" in text and "--row" in text
    # No "0 model calls" after 12 HTTP attempts: the calls that failed and the attempts
    # behind them, beside the ones answered, each line within 80 columns.
    assert "0 model calls" not in text
    calls = next(line for line in text.splitlines() if line.startswith("calls "))
    assert calls.split(None, 1)[1] == (
        f"0 answered, {ROWS} failed; {ROWS} attempts retried, {2 * ROWS} unanswered"
    )
    assert all(len(line) <= 80 for line in text.splitlines() if line[:9].rstrip() in
               ("config", "solver", "runs", "store", "calls"))  # fmt: skip
    assert "--retry-failed" in done.stderr and "every run failed" in done.stderr


def test_some_failures_exit_zero_with_a_retry_hint(osmo_bin, project) -> None:
    with MockServer() as srv:
        srv.fail_next(500, count=2)  # the first run's two attempts
        done = run_eval(osmo_bin, project, srv, "--concurrency", "1")
    assert done.returncode == 0, done.stderr
    assert "1 x model_error 500" in done.stdout
    assert "hint: 1 run failed;" in done.stderr and "--retry-failed" in done.stderr


def test_summary_json_groups_failures(osmo_bin, project) -> None:
    with MockServer(fail_rate=1.0) as srv:
        done = run_eval(osmo_bin, project, srv, "--json")
    assert done.returncode == EXIT_ALL_FAILED
    groups = json.loads(done.stdout)["summary"]["failure_groups"]
    assert len(groups) == 1
    assert groups[0]["count"] == ROWS and groups[0]["status"] == 500
    assert groups[0]["type"] == "model_error" and "HTTP 500" in groups[0]["message"]
    assert "." in groups[0]["example"]


def test_scoring_errors_are_grouped_by_eval_function(osmo_bin, project) -> None:
    with MockServer() as srv:
        done = run_eval(osmo_bin, project, srv, fns=("fns.py:boom", "fns.py:exact"))
    assert done.returncode == 0, done.stderr
    # answers 1, 3, 5, 7, 9, 11: only 3 raises
    lines = done.stdout.splitlines()
    at = lines.index("scoring errors:")
    group = lines[at + 1]
    assert group.strip().startswith("boom: 1 x ValueError: cannot score 3"), done.stdout
    assert "example:" in lines[at + 2]


def test_fail_under_sets_the_exit_code_for_ci(osmo_bin, project) -> None:
    with MockServer() as srv:
        ok = run_eval(osmo_bin, project, srv, "--fail-under", "1.0")
        assert ok.returncode == 0, ok.stderr
        # 0, 1, ...: ground truths 1, 3, 5, 7, 9, 11 -> 1, 5, 9 score 1: mean 0.5
        low = run_eval(osmo_bin, project, srv, "--fail-under", "0.6", fns=("fns.py:odd_only",))
        assert low.returncode == EXIT_BELOW_THRESHOLD, low.stderr
        assert "0.5000 is below --fail-under 0.6" in low.stderr
        fine = run_eval(osmo_bin, project, srv, "--fail-under", "0.5", fns=("fns.py:odd_only",))
        assert fine.returncode == 0
        assert srv.calls == ROWS  # the re-runs were served by the store


def test_exit_codes_are_distinct() -> None:
    from osmo_store.cli import common

    codes = [common.EXIT_OK, common.EXIT_ERROR, 2, EXIT_ALL_FAILED, EXIT_BELOW_THRESHOLD,
             common.EXIT_INTERRUPTED]  # fmt: skip
    assert len(set(codes)) == len(codes)


def test_causes_that_differ_only_in_numbers_are_one_group() -> None:
    from osmo_store.eval.failures import MAX_GROUPS, group_failures

    def failed(row: str, message: str, status: int | None = 500) -> dict:
        return {"row": row, "run": 0, "status": "failed",
                "error": {"type": "model_error", "status": status, "message": message}}  # fmt: skip

    samples = [failed(f"r{i:02d}", f"HTTP 500 after {i} attempts at port {9000 + i}")
               for i in range(5)]  # fmt: skip
    samples.append(failed("x", "HTTP 500 after 1 attempts at port 9001", status=503))
    samples.append({"row": "ok", "run": 0, "status": "ok", "scoring_errors": {"f": "E: 1"}})
    result = group_failures(reversed(samples))  # the order read does not change the example
    assert [(g["count"], g["status"]) for g in result["failures"]] == [(5, 500), (1, 503)]
    assert result["failures"][0]["example"] == "r00.0"
    assert result["failures"][0]["message"] == "HTTP 500 after 0 attempts at port 9000"
    assert result["scoring_errors"] == {"f": [{"count": 1, "message": "E: 1",
                                               "example": "ok.0"}]}  # fmt: skip
    many = group_failures(failed(f"r{i}", f"cause {chr(65 + i)}") for i in range(MAX_GROUPS + 5))
    groups = many["failures"]
    assert len(groups) == MAX_GROUPS and sum(g["count"] for g in groups) == MAX_GROUPS + 5
    assert groups[-1]["message"] == "(6 other causes)" and groups[-1]["type"] == "other"


def test_show_groups_the_failures_of_a_summary_recorded_without_groups(osmo_bin, project) -> None:
    """Stores written before summaries had failure groups: `eval show` groups from samples."""
    from osmo_store import Repository, RunRecord
    from osmo_store.eval.configstate import config_ref

    with MockServer(fail_rate=1.0) as srv:
        done = run_eval(osmo_bin, project, srv, "--json")
    config_id = json.loads(done.stdout)["config_id"]
    with Repository.open(project / "store") as repo:
        head = repo.refs.read(config_ref(config_id))
        record = repo.objects.get_run(head)
        summary = {k: v for k, v in record.meta["summary"].items()
                   if k not in ("failure_groups", "scoring_error_groups")}  # fmt: skip
        meta = {**record.meta, "summary": summary}
        old = repo.objects.put_run(RunRecord(record.tree, (head,), meta))
        repo.update_ref(config_ref(config_id), old, head)
    shown = subprocess.run([osmo_bin, "--store", str(project / "store"), "eval", "show",
                            config_id[:8]], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"{ROWS} x model_error 500" in shown.stdout
