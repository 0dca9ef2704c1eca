"""`osmo eval show|diff|export|verify|label` on a store that real evals filled: the
installed CLI in a subprocess, the mock model server on 127.0.0.1."""

from __future__ import annotations

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
            done = osmo(project, "eval", "-d", "data.jsonl", "--model", name, "--base-url",
                        srv.base_url, "--eval-fn", "fns.py:exact", "--max-retries", "0",
                        "--json", "-q")  # fmt: skip
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
