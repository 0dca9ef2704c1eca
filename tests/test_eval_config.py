"""The config id covers everything that can change results and nothing that cannot: one
test per field, in both directions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from osmo_store.cli.evalcmd import build_config
from osmo_store.cli.main import build_parser
from osmo_store.eval.config import EvalConfig, call_key, rollout_key


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = [{"user_prompt": f"What is {i} + {i}?", "ground_truth": str(2 * i)} for i in range(5)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fns.py").write_text("def em(s, gt, extra):\n    return s == gt\n")
    (tmp_path / "fns2.py").write_text("def em(s, gt, extra):\n    return s.strip() == gt\n")
    (tmp_path / "agent.py").write_text(
        "def run(messages, row, client):\n    return messages + [client.chat(messages)]\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


BASE = [
    "-d", "data.jsonl", "--model", "m1", "--base-url", "http://127.0.0.1:9/v1",
    "--eval-fn", "fns.py:em",
]  # fmt: skip


def config_for(*extra: str, base: list[str] | None = None) -> EvalConfig:
    args = build_parser().parse_args(["eval", *(BASE if base is None else base), *extra])
    return build_config(args).config


def replaced(flag: str, value: str) -> list[str]:
    out = list(BASE)
    out[out.index(flag) + 1] = value
    return out


@pytest.mark.parametrize(
    "changed",
    [
        ["--temperature", "0.5"],
        ["--max-tokens", "100"],
        ["--top-p", "0.9"],
        ["--seed", "3"],
        ["--n", "2"],
        ["--max-turns", "4"],
        ["--limit", "3"],
        ["--offset", "1"],
        ["--agent", "agent.py:run"],
    ],
)
def test_result_changing_fields_change_the_id(project: Path, changed: list[str]) -> None:
    assert config_for(*changed).config_id != config_for().config_id


def test_other_eval_function_changes_the_id(project: Path) -> None:
    assert config_for(base=replaced("--eval-fn", "fns2.py:em")).config_id != config_for().config_id


def test_model_name_and_endpoint_change_the_id(project: Path) -> None:
    base = config_for().config_id
    assert config_for(base=replaced("--model", "m2")).config_id != base
    assert config_for(base=replaced("--base-url", "http://127.0.0.1:10/v1")).config_id != base


def test_same_temperature_twice_is_one_id(project: Path) -> None:
    assert (
        config_for("--temperature", "0.5").config_id
        == config_for("--temperature", "0.50").config_id
    )


@pytest.mark.parametrize(
    "irrelevant",
    [
        ["--api-key", "sk-secret"],
        ["--concurrency", "64"],
        ["--timeout", "5"],
        ["--max-retries", "0"],
        ["--json"],
        ["-q"],
        ["-o", "out.json"],
        ["--output-path", "outdir"],
        ["--log-samples"],
        ["--pass-threshold", "0.5"],
        ["--retry-failed"],
        ["--fresh"],
    ],
)
def test_fields_that_cannot_change_results_keep_the_id(
    project: Path, irrelevant: list[str]
) -> None:
    assert config_for(*irrelevant).config_id == config_for().config_id


def test_dataset_path_spelling_keeps_the_id(project: Path) -> None:
    base = config_for().config_id
    assert config_for(base=replaced("-d", str(project / "data.jsonl"))).config_id == base
    assert config_for(base=replaced("-d", "./data.jsonl")).config_id == base
    os.mkdir(project / "sub")
    os.chdir(project / "sub")
    moved = replaced("-d", "../data.jsonl")
    moved[moved.index("--eval-fn") + 1] = "../fns.py:em"
    assert config_for(base=moved).config_id == base


def test_endpoint_spelling_keeps_the_id(project: Path) -> None:
    base = config_for().config_id
    for url in ("http://127.0.0.1:9/v1/", "HTTP://127.0.0.1:9/v1"):
        assert config_for(base=replaced("--base-url", url)).config_id == base
    assert config_for(base=replaced("--base-url", "http://127.0.0.1:9")).config_id == base


def test_api_key_from_env_keeps_the_id(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = config_for().config_id
    monkeypatch.setenv("OSMO_API_KEY", "sk-other")
    assert config_for().config_id == base


def test_dataset_content_changes_the_id(project: Path) -> None:
    base = config_for().config_id
    p = project / "data.jsonl"
    p.write_text(p.read_text().replace("What is 3 + 3?", "What is 3 + 4?"))
    assert config_for().config_id != base


def test_dataset_same_content_other_file_same_id(project: Path) -> None:
    base = config_for().config_id
    (project / "copy.jsonl").write_bytes((project / "data.jsonl").read_bytes())
    assert config_for(base=replaced("-d", "copy.jsonl")).config_id == base


def test_eval_code_edit_changes_the_id(project: Path) -> None:
    base = config_for().config_id
    (project / "fns.py").write_text("def em(s, gt, extra):\n    return s == gt.strip()\n")
    assert config_for().config_id != base


def test_agent_code_edit_changes_the_id(project: Path) -> None:
    base = config_for("--agent", "agent.py:run").config_id
    (project / "agent.py").write_text(
        "def run(messages, row, client):\n    return messages + [client.chat(messages)]\n\nV = 2\n"
    )
    assert config_for("--agent", "agent.py:run").config_id != base


def test_model_id_makes_the_endpoint_irrelevant(project: Path) -> None:
    a = config_for("--model-id", "llama-8b-q4")
    b = config_for(
        "--model-id", "llama-8b-q4", base=replaced("--base-url", "http://10.0.0.1:8000/v1")
    )
    assert a.config_id == b.config_id
    assert a.config_id != config_for().config_id
    assert config_for("--model-id", "other").config_id != a.config_id


def test_eval_fn_order_is_not_identity(project: Path) -> None:
    (project / "more.py").write_text("def f(s, gt, e):\n    return 1\n")
    a = config_for("--eval-fn", "more.py:f")
    b = config_for("--eval-fn", "fns.py:em", base=replaced("--eval-fn", "more.py:f"))
    assert a.config_id == b.config_id


def test_rollout_keys_ignore_eval_functions_but_not_the_solver(project: Path) -> None:
    a = config_for()
    b = config_for(base=replaced("--eval-fn", "fns2.py:em"))
    assert rollout_key(a, "row", 0) == rollout_key(b, "row", 0)
    assert rollout_key(a, "row", 0) != rollout_key(a, "row", 1)
    assert rollout_key(a, "row", 0) != rollout_key(a, "row2", 0)
    assert rollout_key(a, "row", 0) != rollout_key(config_for("--temperature", "1"), "row", 0)


def test_call_keys_cover_request_run_and_occurrence(project: Path) -> None:
    m = config_for().model
    assert m is not None
    req = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
    k = call_key(m, req, 0, 0)
    assert k == call_key(m, {**req, "stream": False, "user": "x"}, 0, 0)
    assert k != call_key(m, {**req, "temperature": 0.6}, 0, 0)
    assert k != call_key(m, req, 1, 0)
    assert k != call_key(m, req, 0, 1)
    assert k != call_key(m, {**req, "tools": [{"type": "function"}]}, 0, 0)
