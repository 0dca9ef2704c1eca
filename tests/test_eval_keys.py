"""Cache keys follow everything that changes a result: the code an agent or eval function
imports, where a re-exported function is defined, the model name under a ``--model-id``, and
declared environment variables and files. Each test is one change after a finished eval,
counting the re-run's model calls (at the mock server) and rescorings (from ``--json``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osmo_store.testing.mockserver import MockServer

from .evalproject import (
    ROWS,
    forget_modules_under,
    lay_out_project,
    make_runner,
)


@pytest.fixture(scope="module")
def server():
    with MockServer() as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    yield lay_out_project(tmp_path, monkeypatch)
    forget_modules_under(tmp_path)


@pytest.fixture
def osmo_eval(store_path: Path, server: MockServer, project: Path, capsys):
    return make_runner(store_path, server, project, capsys)


def test_an_eval_fn_helper_in_another_file_is_part_of_its_key(osmo_eval, project) -> None:
    (project / "grading.py").write_text("def normalize(s):\n    return s.strip()\n")
    (project / "graded.py").write_text(
        "from grading import normalize\n\n"
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return normalize(solution_str) == ground_truth\n"
    )
    first = osmo_eval(fns=("graded.py:exact",))
    assert first.code == 0 and first.calls == ROWS
    (project / "grading.py").write_text("def normalize(s):\n    return s.strip() + '!'\n")
    again = osmo_eval(fns=("graded.py:exact",))
    assert again.code == 0, again.err
    assert again.calls == 0 and again.rescored == ROWS
    assert again.body["summary"]["metrics"]["exact"]["mean"] == 0.0


def test_an_agent_helper_in_another_file_is_part_of_its_key(osmo_eval, project) -> None:
    (project / "prompts.py").write_text("TEMPLATE = '{q}'\n")
    (project / "agent.py").write_text(
        "import prompts\n\n"
        "def solve(messages, row, client):\n"
        "    q = messages[-1]['content']\n"
        "    ask = [{'role': 'user', 'content': prompts.TEMPLATE.format(q=q)}]\n"
        "    return ask + [client.chat(ask)]\n"
    )
    first = osmo_eval("--agent", "agent.py:solve")
    assert first.code == 0 and first.calls == ROWS
    (project / "prompts.py").write_text("TEMPLATE = 'Answer with a number. {q}'\n")
    again = osmo_eval("--agent", "agent.py:solve")
    assert again.code == 0, again.err
    assert again.calls == ROWS and again.computed == ROWS


def test_a_re_exported_eval_fn_is_keyed_by_the_file_that_defines_it(osmo_eval, project) -> None:
    (project / "impl.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    (project / "reexport.py").write_text("from impl import exact  # noqa: F401\n")
    assert osmo_eval(fns=("reexport.py:exact",)).calls == ROWS
    (project / "impl.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() != ground_truth\n"
    )
    again = osmo_eval(fns=("reexport.py:exact",))
    assert again.code == 0, again.err
    assert again.calls == 0 and again.rescored == ROWS


def test_an_eval_fn_named_through_a_package_init_follows_its_module(osmo_eval, project) -> None:
    pkg = project / "scorers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .impl import exact\n\n__all__ = ['exact']\n")
    (pkg / "impl.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    assert osmo_eval(fns=("scorers:exact",)).calls == ROWS
    (pkg / "impl.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return float(solution_str.strip() == ground_truth) / 2\n"
    )
    again = osmo_eval(fns=("scorers:exact",))
    assert again.code == 0, again.err
    assert again.calls == 0 and again.rescored == ROWS


def test_a_model_id_names_the_endpoint_never_the_model(osmo_eval) -> None:
    a = osmo_eval("--model-id", "my-vllm", model="model-a")
    assert a.code == 0 and a.calls == ROWS
    b = osmo_eval("--model-id", "my-vllm", model="model-b")
    assert b.code == 0, b.err
    assert b.calls == ROWS and b.config_id != a.config_id
    # The endpoint part is what --model-id names: the same model at a moved server reuses.
    other_host = a.body["config"]["base_url"].replace("127.0.0.1", "localhost")
    moved = osmo_eval("--model-id", "my-vllm", model="model-a", base_url=other_host)
    assert moved.code == 0, moved.err
    assert moved.calls == 0 and moved.config_id == a.config_id


ENV_FN = (
    "import os\n\n"
    "def exact(solution_str, ground_truth, extra_info):\n"
    "    bonus = float(os.environ.get('BONUS', '0'))\n"
    "    return float(solution_str.strip() == ground_truth) + bonus\n"
)


def test_a_declared_environment_variable_is_part_of_the_key(
    osmo_eval, project, monkeypatch
) -> None:
    (project / "envfn.py").write_text(ENV_FN)
    first = osmo_eval("--key-env", "BONUS", fns=("envfn.py:exact",))
    assert first.code == 0, first.err
    assert first.calls == ROWS
    monkeypatch.setenv("BONUS", "1")
    again = osmo_eval("--key-env", "BONUS", fns=("envfn.py:exact",))
    assert again.code == 0, again.err
    assert again.calls == 0 and again.rescored == ROWS
    assert again.body["summary"]["metrics"]["exact"]["mean"] == 2.0
    # The same value again is the same config: nothing to do.
    same = osmo_eval("--key-env", "BONUS", fns=("envfn.py:exact",))
    assert same.calls == 0 and same.rescored == 0 and same.config_id == again.config_id


def test_an_eval_fn_declares_its_environment_in_code(osmo_eval, project, monkeypatch) -> None:
    (project / "envfn.py").write_text(
        "from osmo_store.eval.keys import depends_on\n\n"
        + ENV_FN.replace("def exact", "@depends_on(env=['BONUS'])\ndef exact")
    )
    assert osmo_eval(fns=("envfn.py:exact",)).calls == ROWS
    monkeypatch.setenv("BONUS", "0.5")
    again = osmo_eval(fns=("envfn.py:exact",))
    assert again.code == 0, again.err
    assert again.calls == 0 and again.rescored == ROWS


def test_a_declared_file_is_part_of_the_key(osmo_eval, project) -> None:
    (project / "rubric.txt").write_text("strict\n")
    assert osmo_eval("--key-file", "rubric.txt").calls == ROWS
    (project / "rubric.txt").write_text("lenient\n")
    again = osmo_eval("--key-file", "rubric.txt")
    assert again.code == 0, again.err
    assert again.calls == 0 and again.rescored == ROWS


def test_provenance_lists_every_file_and_package_of_the_code(
    osmo_eval, project, store_path
) -> None:
    from osmo_store import Repository
    from osmo_store.eval.catalog import list_configs

    helper = "import blake3\n\ndef normalize(s):\n    return s.strip()\n"
    (project / "grading.py").write_text(helper)
    (project / "graded.py").write_text(
        "from grading import normalize\n\n"
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return normalize(solution_str) == ground_truth\n"
    )
    assert osmo_eval("--key-env", "BONUS", fns=("graded.py:exact",)).code == 0
    with Repository.open(store_path) as repo:
        meta = repo.objects.get_run(list_configs(repo)[0].run_id).meta
    (fn,) = meta["provenance"]["code"].values()
    assert set(fn["files"]) == {"graded", "grading"}
    assert fn["files"]["grading"]["path"] == str(project / "grading.py")
    assert fn["packages"] == {"blake3": __import__("importlib.metadata").metadata.version("blake3")}
    assert fn["depends"] == {"env:BONUS": "unset"}


def test_the_same_code_in_another_folder_is_the_same_config(
    osmo_eval, project, tmp_path, monkeypatch
) -> None:
    (project / "grading.py").write_text("def normalize(s):\n    return s.strip()\n")
    (project / "graded.py").write_text(
        "from grading import normalize\n\n"
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return normalize(solution_str) == ground_truth\n"
    )
    first = osmo_eval(fns=("graded.py:exact",))
    elsewhere = tmp_path / "clone" / "deeper"
    elsewhere.mkdir(parents=True)
    for name in ("data.jsonl", "grading.py", "graded.py"):
        (elsewhere / name).write_bytes((project / name).read_bytes())
    monkeypatch.chdir(elsewhere)
    again = osmo_eval(fns=("graded.py:exact",))
    assert again.code == 0, again.err
    assert again.config_id == first.config_id and again.calls == 0


def test_comment_and_whitespace_edits_are_not_code_changes(osmo_eval, project) -> None:
    first = osmo_eval()
    (project / "fns.py").write_text(
        "# scoring\n\n"
        "def exact(solution_str,   ground_truth, extra_info):  # the plain one\n"
        "\n"
        "    return solution_str.strip() \\\n"
        "        == ground_truth\n"
    )
    again = osmo_eval()
    assert again.config_id == first.config_id and again.calls == 0 and again.rescored == 0


def test_calls_retried_attempts_and_failed_attempts_are_counted_apart(
    osmo_eval, server: MockServer
) -> None:
    before = server.calls
    # Two 500s: the first call is answered at its third attempt.
    server.fail_next(500, count=2, retry_after=0)
    ok = osmo_eval("--max-retries", "3", "--concurrency", "1")
    assert ok.code == 0, ok.err
    s = ok.body["session"]
    assert (s["model_calls"], s["retried_attempts"], s["failed_attempts"]) == (ROWS, 2, 2)
    assert s["failed_calls"] == 0
    assert server.calls - before == s["model_calls"] + s["failed_attempts"]
    # Two more 500s with one retry: one call fails for good after two attempts.
    server.fail_next(500, count=2, retry_after=0)
    failed = osmo_eval("--max-retries", "1", "--concurrency", "1", "--n", "2")
    s = failed.body["session"]
    assert (s["model_calls"], s["failed_calls"]) == (ROWS - 1, 1)
    assert (s["retried_attempts"], s["failed_attempts"]) == (1, 2)
    assert failed.calls == s["model_calls"] + s["failed_attempts"]
