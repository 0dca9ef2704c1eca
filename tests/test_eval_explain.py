"""``osmo eval explain``: the same flags as ``osmo eval``, nothing run or recorded; every key
component shown, and what a run would reuse with the reason for each miss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osmo_store import Repository
from osmo_store.cli.main import main
from osmo_store.eval.catalog import list_configs
from osmo_store.testing.mockserver import MockServer

from .evalproject import ROWS, default_rows, forget_modules_under, make_runner, write_rows


@pytest.fixture(scope="module")
def server():
    with MockServer() as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_rows(tmp_path / "data.jsonl", default_rows())
    (tmp_path / "grading.py").write_text("def normalize(s):\n    return s.strip()\n")
    (tmp_path / "fns.py").write_text(
        "from grading import normalize\n\n"
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return normalize(solution_str) == ground_truth\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    yield tmp_path
    forget_modules_under(tmp_path)


def explain_text(store: Path, server: MockServer, capsys, *extra: str) -> str:
    argv = ["--store", str(store), "eval", "explain", "-d", "data.jsonl", "--model", "mock",
            "--base-url", server.base_url, "--eval-fn", "fns.py:exact", *extra]  # fmt: skip
    assert main(argv) == 0
    return capsys.readouterr().out


def test_explain_runs_and_records_nothing(store_path, server, project, capsys) -> None:
    before = server.calls
    text = explain_text(store_path, server, capsys, "--key-env", "BONUS")
    assert server.calls == before
    with Repository.open(store_path) as repo:
        assert list_configs(repo) == []
    assert "not stored yet" in text
    assert "nearest   no stored config of this dataset" in text
    assert f"compute {ROWS} runs: nothing stored for this dataset" in text
    # Every component: the model identity, each code file, the declared variable, the rows.
    assert "model=mock" in text and "endpoint=" in text
    assert "fns.py" in text and "grading.py" in text
    assert "env:BONUS unset" in text
    assert f"data.jsonl: {ROWS} rows" in text


def test_explain_says_what_would_be_reused_and_why(store_path, server, project, capsys) -> None:
    run = make_runner(store_path, server, project, capsys)
    assert run().calls == ROWS
    (project / "grading.py").write_text("def normalize(s):\n    return s.strip().lower()\n")
    text = explain_text(store_path, server, capsys)
    assert (
        f"would reuse {ROWS}/{ROWS} rollouts; rescore {ROWS} runs: "
        "eval fn exact changed (grading.py)" in text
    )
    body = run("explain", "--n", "2")
    assert body.code == 0 and body.calls == 0
    report = body.body
    assert report["plan"] == {"total": 2 * ROWS, "recorded": 0, "rescore": ROWS, "compute": ROWS}
    assert report["nearest"]["compute"] == ["n 1 -> 2"]
    assert report["nearest"]["rescore"] == ["eval fn exact changed (grading.py)"]
    (fn,) = report["components"]["eval_fns"]
    assert set(fn["files"]) == {"fns", "grading"}


def test_explain_of_a_stored_config_says_its_runs_are_recorded(
    store_path, server, project, capsys
) -> None:
    run = make_runner(store_path, server, project, capsys)
    first = run()
    report = run("explain").body
    assert report["config_id"] == first.config_id and report["stored"]
    assert report["plan"]["recorded"] == ROWS
    assert report["nearest"]["compute"] == [] and report["nearest"]["rescore"] == []
    assert "runs already recorded in this config" in explain_text(store_path, server, capsys)


def test_explain_names_a_changed_model_and_declared_variable(
    store_path, server, project, capsys, monkeypatch
) -> None:
    run = make_runner(store_path, server, project, capsys)
    run("--key-env", "BONUS")
    monkeypatch.setenv("BONUS", "1")
    report = run("explain", "--key-env", "BONUS", model="other").body
    near = report["nearest"]
    assert any(c.startswith("model mock @ ") and "-> other @ " in c for c in near["compute"])
    assert near["rescore"] == ["eval fn exact declared env:BONUS changed"]
    assert json.dumps(report)  # plain JSON
