"""Two evals whose configs share a solver, run side by side in two processes, make each model
call once: one waits for the rollouts the other has in flight (claims on rollout keys,
through the store) and rescores them, rather than asking the model again."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from osmo_store.testing.mockserver import MockServer

from .evalproject import ROWS, default_rows, write_rows
from .waiting import Gate, wait_until

WAITING = "waiting for them rather than paying twice"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_rows(tmp_path / "data.jsonl", default_rows())
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    (tmp_path / "other.py").write_text(
        "def length(solution_str, ground_truth, extra_info):\n    return len(solution_str)\n"
    )
    return tmp_path


def start(osmo_bin: str, store: Path, url: str, project: Path, fn: str) -> subprocess.Popen:
    cmd = [osmo_bin, "--store", str(store), "eval", "-d", "data.jsonl", "--model", "m",
           "--base-url", url, "--eval-fn", fn, "--concurrency", "8", "--json"]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_configs_with_one_solver_make_each_call_once(
    osmo_bin: str, store_path: Path, project: Path
) -> None:
    with Gate(answered=0) as gate, MockServer(responder=gate) as server:
        first = start(osmo_bin, store_path, server.base_url, project, "fns.py:exact")
        # Every rollout of the first eval is in flight, its calls held at the gate.
        wait_until(lambda: gate.held == ROWS, what="the first eval's calls in flight", proc=first)
        second = start(osmo_bin, store_path, server.base_url, project, "other.py:length")
        said: list[str] = []
        assert second.stderr is not None
        reader = threading.Thread(target=lambda: said.extend(second.stderr), daemon=True)
        reader.start()
        # The second eval either asks the model for the same rollouts (held at the gate
        # too: the defect) or says it waits for the first's.
        wait_until(
            lambda: gate.held >= 2 * ROWS or any(WAITING in line for line in said),
            what="the second eval asking the model or waiting for the first",
            proc=second,
        )
        gate.release()
        out1, err1 = first.communicate(timeout=120)
        out2, _ = second.communicate(timeout=120)
        reader.join(timeout=60)
        assert first.returncode == 0, err1
        assert second.returncode == 0, "".join(said)
        assert server.calls == ROWS
    s1, s2 = json.loads(out1)["session"], json.loads(out2)["session"]
    assert s1["model_calls"] == ROWS and s2["model_calls"] == 0
    assert s2["reused_rollouts"] == ROWS and s2["waited_for_other_evals"] == ROWS
    assert json.loads(out2)["summary"]["metrics"]["length"]["mean"] > 0
