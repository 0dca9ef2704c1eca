"""`osmo eval show|diff|export|verify|label` on a store that real evals filled: the
installed CLI in a subprocess, the mock model server on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from osmo_store.testing.mockserver import MockServer

ROWS = 40


def osmo(project: Path, *argv: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "osmo"), "--store", str(project / "store"), *argv]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def evals(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three configs of one dataset: ``good`` (a model that answers every row right),
    ``worse`` (the same questions, a seeded 30% of answers wrong) and ``broken`` (every call
    an HTTP 500). Built once: the tests only read them."""
    project = tmp_path_factory.mktemp("views")
    rows = [{"user_prompt": f"What is {i} + {i + 1}?", "ground_truth": str(2 * i + 1),
             "topic": "add"} for i in range(ROWS)]  # fmt: skip
    (project / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    ids = {}
    servers = {"good": MockServer(), "worse": MockServer(error_rate=0.3, seed=7),
               "broken": MockServer(fail_rate=1.0)}  # fmt: skip
    try:
        for name, srv in servers.items():
            # --create: module fixtures run before conftest sets OSMO_CREATE
            done = osmo(project, "--create", "eval", "-d", "data.jsonl", "--model", name,
                        "--base-url", srv.base_url, "--eval-fn", "fns.py:exact",
                        "--max-retries", "0", "--json", "-q")  # fmt: skip
            assert done.returncode in (0, 3), done.stderr
            ids[name] = json.loads(done.stdout)["config_id"]
    finally:
        for srv in servers.values():
            srv.close()
    return {"project": project, **ids}


# -- show --


def test_show_prints_parameters_summary_and_failure_groups(evals) -> None:
    done = osmo(evals["project"], "eval", "show", evals["broken"][:8])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"config   {evals['broken'][:12]}" in text
    assert "model    broken" in text and "fns.py:exact" in text
    assert f"{ROWS} x model_error 500" in text
    assert f"osmo eval show {evals['broken'][:12]} --row" in text


def test_show_row_by_index_prints_the_conversation_and_scores(evals) -> None:
    done = osmo(evals["project"], "eval", "show", evals["good"][:8], "--row", "3")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "(row 3, run 0)  ok" in text
    assert "user: What is 3 + 4?" in text and "assistant: 7" in text
    assert "scores   exact 1" in text and "ground truth  7" in text
    assert "calls    1" in text and "usage" in text


def test_show_row_by_key_prefix_and_its_json(evals) -> None:
    first = osmo(evals["project"], "eval", "show", evals["good"], "--row", "0", "--json")
    body = json.loads(first.stdout)
    key = body["samples"][0]["row"]
    again = osmo(evals["project"], "eval", "show", evals["good"], "--row", f"{key[:8]}.0",
                 "--json")  # fmt: skip
    assert json.loads(again.stdout) == body
    s = body["samples"][0]
    assert s["index"] == 0 and s["scores"] == {"exact": 1.0}
    assert s["messages"][-1] == {"role": "assistant", "content": "1"}
    assert s["calls"][0]["request"]["model"] == "good"


def test_show_failed_lists_the_failed_samples(evals) -> None:
    done = osmo(evals["project"], "eval", "show", evals["broken"][:8], "--failed", "--json")
    failed = json.loads(done.stdout)["failed"]
    assert len(failed) == ROWS and [f["index"] for f in failed] == list(range(ROWS))
    assert all(f["error"]["status"] == 500 for f in failed)
    text = osmo(evals["project"], "eval", "show", evals["broken"][:8], "--row", "5").stdout
    assert "(row 5, run 0)  failed" in text and "error    model_error 500" in text


def test_show_of_something_missing_is_a_one_line_error(evals) -> None:
    done = osmo(evals["project"], "eval", "show", evals["good"][:8], "--row", "999")
    assert done.returncode == 1 and done.stderr.startswith("osmo: error: no stored row")
    assert "Traceback" not in done.stderr
    done = osmo(evals["project"], "eval", "show", "ffffffff")
    assert done.returncode == 1 and "no eval config matches" in done.stderr


# -- diff --


def test_diff_reports_a_seeded_regression_with_its_sign_and_interval(evals) -> None:
    done = osmo(evals["project"], "eval", "diff", evals["good"][:8], evals["worse"][:8],
                "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    # The worse model got some rows wrong and none right that the good one missed.
    wrong = len(r["changes"])
    assert 0 < wrong < ROWS and all(c["delta"] == -1.0 for c in r["changes"])
    assert r["pairs"] == ROWS and r["difference"] == pytest.approx(-wrong / ROWS)
    lo, hi = r["ci"]
    assert lo <= r["difference"] <= hi < 0  # the interval excludes "no difference"
    assert r["test"]["name"] == "McNemar exact"
    assert r["test"]["a_only"] == wrong and r["test"]["b_only"] == 0
    assert r["test"]["p_value"] == pytest.approx(2 * 0.5**wrong)
    # Swapped, the same difference with the other sign: an improvement.
    back = json.loads(osmo(evals["project"], "eval", "diff", evals["worse"], evals["good"],
                           "--json").stdout)  # fmt: skip
    assert back["difference"] == pytest.approx(wrong / ROWS)
    assert back["ci"][0] > 0 and back["test"]["p_value"] == r["test"]["p_value"]


def test_diff_text_lists_regressions_first(evals) -> None:
    done = osmo(evals["project"], "eval", "diff", evals["good"][:8], evals["worse"][:8])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "B - A  -0." in text and "% CI [-0." in text
    assert "worse, 0 better (regressions first)" in text
    table = text[text.index("   ROW") :].splitlines()[1:]
    assert table and all(line.rstrip().endswith("-1.0000") for line in table)


def test_diff_counts_failed_runs_as_unscored(evals) -> None:
    done = osmo(evals["project"], "eval", "diff", evals["good"][:8], evals["broken"][:8])
    assert done.returncode == 1
    assert f"config {evals['broken'][:12]} has no scored run" in done.stderr
    assert f"hint: see why: osmo eval show {evals['broken'][:12]}" in done.stderr


def test_paired_statistics_match_known_values() -> None:
    from osmo_store.eval.stats import bootstrap_ci, mcnemar_exact, sign_flip_test

    # McNemar exact: 10 discordant pairs split 1/9, two-sided p = 2 * P(X <= 1), X~B(10, .5)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 3000) < 1e-300 or mcnemar_exact(0, 3000) == 0.0
    # No difference anywhere: the interval is a point, and the test sees nothing.
    assert bootstrap_ci([(0.0, 1)] * 30) == (0.0, 0.0)
    assert sign_flip_test([0.0] * 30) == 1.0
    # Every row better by 1: the interval is [1, 1] and p is as small as 2000 draws allow.
    assert bootstrap_ci([(1.0, 1)] * 30) == (1.0, 1.0)
    assert sign_flip_test([1.0] * 30) == pytest.approx(1 / 2001)


# -- export --


def test_export_csv_has_one_row_per_sample_with_flat_scores(evals) -> None:
    project = evals["project"]
    done = osmo(project, "eval", "export", evals["worse"][:8], "-o", "out/worse.csv")
    assert done.returncode == 0, done.stderr
    assert "wrote 40 samples" in done.stdout and "out/worse.csv" in done.stdout
    with open(project / "out" / "worse.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == ROWS and [int(r["index"]) for r in rows] == list(range(ROWS))
    assert rows[3]["prompt"] == "What is 3 + 4?" and rows[3]["ground_truth"] == "7"
    assert {r["score/exact"] for r in rows} == {"1.0", "0.0"}
    assert sum(r["score/exact"] == "1.0" for r in rows) == sum(
        r["solution"] == r["ground_truth"] for r in rows)  # fmt: skip
    assert json.loads(rows[0]["messages"])[-1]["role"] == "assistant"


def test_export_jsonl_and_parquet_hold_the_same_records(evals) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    project = evals["project"]
    assert osmo(project, "eval", "export", evals["broken"], "-o", "b.jsonl").returncode == 0
    done = osmo(project, "eval", "export", evals["broken"], "-o", "b.data", "--format",
                "parquet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in (project / "b.jsonl").read_text().splitlines()]
    table = pq.read_table(project / "b.data").to_pylist()
    assert len(lines) == len(table) == ROWS
    assert lines[0]["status"] == "failed" and lines[0]["error_status"] == 500
    assert [x["row"] for x in lines] == [x["row"] for x in table]
    assert table[0]["error_message"] == lines[0]["error_message"]
    assert json.loads(table[0]["data"]) == lines[0]["data"]


def test_export_refuses_a_suffix_it_cannot_write(evals) -> None:
    done = osmo(evals["project"], "eval", "export", evals["good"][:8], "-o", "x.xlsx")
    assert done.returncode == 1 and "x.xlsx: cannot tell the format" in done.stderr
    assert "hint: use .jsonl, .csv or .parquet" in done.stderr
    assert not (evals["project"] / "x.xlsx").exists()


def test_eval_output_csv_writes_csv_and_says_where(evals) -> None:
    project = evals["project"]
    store = str(project / "store-o")
    with MockServer() as srv:
        argv = ["eval", "-d", "data.jsonl", "--model", "m", "--base-url", srv.base_url,
                "--eval-fn", "fns.py:exact", "-q", "--store", store]  # fmt: skip
        refused = osmo(project, *argv, "-o", "results.xlsx")
        assert refused.returncode == 1
        assert "-o results.xlsx: cannot tell the format" in refused.stderr
        assert srv.calls == 0  # refused before anything ran
        done = osmo(project, *argv, "-o", "results.csv", "--log-samples", "s.jsonl")
    assert done.returncode == 0, done.stderr
    assert "osmo: wrote results.csv" in done.stderr and "osmo: wrote s.jsonl" in done.stderr
    with open(project / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == ROWS and rows[0]["score/exact"] == "1.0"


# -- verify --


def test_verify_rescores_every_sample_without_a_model(evals) -> None:
    # Every server of the fixture is closed: a model call could not be answered.
    done = osmo(evals["project"], "eval", "verify", evals["worse"][:8])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{ROWS} of {ROWS} samples agree" in done.stdout
    # loaded from the file the eval recorded, wherever verify runs
    assert f"eval fn  exact  ({evals['project'] / 'fns.py'}:exact): same code as the eval" in (
        done.stdout)  # fmt: skip


def test_verify_reports_scores_that_come_out_differently(evals) -> None:
    project = evals["project"]
    (project / "lenient.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n    return 1.0  # every answer right\n"
    )
    done = osmo(project, "eval", "verify", evals["worse"][:8], "--eval-fn", "lenient.py:exact",
                "--json")  # fmt: skip
    assert done.returncode == 1
    r = json.loads(done.stdout)
    wrong = json.loads(osmo(project, "eval", "diff", evals["good"], evals["worse"],
                            "--json").stdout)["changes"]  # fmt: skip
    assert len(r["disagreements"]) == len(wrong) > 0 and r["agreed"] == ROWS - len(wrong)
    assert {d["row"] for d in r["disagreements"]} == {c["row"] for c in wrong}
    assert all(d["stored"] == 0.0 and d["now"] == 1.0 for d in r["disagreements"])
    assert r["eval_fns"][0]["changed"] is True
    text = osmo(project, "eval", "verify", evals["worse"][:8], "--eval-fn", "lenient.py:exact")
    assert "code changed since the eval" in text.stdout and "scores disagree:" in text.stdout
    assert "stored 0.0, now 1.0" in text.stdout


def test_verify_skips_failed_runs(evals) -> None:
    done = osmo(evals["project"], "eval", "verify", evals["broken"][:8])
    assert done.returncode == 0
    assert f"0 of 0 samples agree with their stored scores; {ROWS} failed runs" in done.stdout
