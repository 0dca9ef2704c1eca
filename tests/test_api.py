"""The Python API (``osmo_store.evaluate``, ``load``, ``configs``) against the mock model
server: the same config ids as the command, reuse and resume, Python objects as the
dataset and as user code, Ctrl-C, and errors that are ``OsmoError``s, never prints."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import osmo_store
from osmo_store.cli.main import main
from osmo_store.errors import (
    CodeLoadError,
    ConfigNotFound,
    DatasetError,
    OsmoError,
    StoreError,
    UsageError,
)
from osmo_store.testing.mockserver import MockServer

from .evalproject import EXACT_FN as FNS
from .evalproject import ROWS, default_rows, forget_modules_under, lay_out_project
from .notebookcode import define_in_cell
from .waiting import wait_until


@pytest.fixture(scope="module")
def server():
    with MockServer() as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lay_out_project(tmp_path, monkeypatch)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    forget_modules_under(tmp_path)


def run(server: MockServer, store: Path, dataset, fns, **kwargs) -> tuple[Any, int]:
    """``evaluate`` on the mock server; the result and the model calls the server saw."""
    before = server.calls
    kwargs.setdefault("model", "mock")
    result = osmo_store.evaluate(dataset, fns, base_url=server.base_url, store=store,
                                 progress=False, max_retries=0, **kwargs)  # fmt: skip
    return result, server.calls - before


def cli_config_id(store: Path, server: MockServer, capsys, *argv: str) -> str:
    code = main(["--store", str(store), "eval", "-q", "--json", "--model", "mock",
                 "--base-url", server.base_url, "--max-retries", "0", *argv])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)["config_id"]


def test_a_second_call_makes_no_model_call(server, store_path, project) -> None:
    first, calls = run(server, store_path, "data.jsonl", "fns.py:exact", n=2)
    assert calls == 2 * ROWS and first.status == "completed"
    assert first.summary["runs"] == 2 * ROWS and first.score == 1.0
    again, calls = run(server, store_path, "data.jsonl", "fns.py:exact", n=2)
    assert calls == 0 and again.config_id == first.config_id
    assert again.session["model_calls"] == 0 and again.session["reused_samples"] == 2 * ROWS


def test_the_cli_and_the_api_give_one_config_id(server, store_path, project, capsys) -> None:
    cli = cli_config_id(store_path, server, capsys, "-d", "data.jsonl", "--eval-fn",
                        "fns.py:exact", "--temperature", "0.5", "--n", "2")  # fmt: skip
    import fns  # the same function, imported rather than named by a spec

    rows = default_rows()
    for dataset, fn in (("data.jsonl", "fns.py:exact"), ("data.jsonl", fns.exact),
                        (rows, fns.exact), (rows, "fns.py:exact")):  # fmt: skip
        result, calls = run(server, store_path, dataset, [fn], temperature=0.5, n=2)
        assert (result.config_id, calls) == (cli, 0), (dataset, fn)
    # ... and the other way round: the command reuses what the API recorded.
    api, calls = run(server, store_path, rows, [fns.exact], n=3)
    assert calls == 3 * ROWS
    assert cli_config_id(store_path, server, capsys, "-d", "data.jsonl", "--eval-fn",
                         "fns.py:exact", "--n", "3") == api.config_id  # fmt: skip


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl, jq")
def test_an_agent_command_runs_from_the_api_as_from_the_cli(
    server, store_path, project, capsys
) -> None:
    from .test_eval_endpoint import CURL_AGENT

    (project / "agent.sh").write_text(CURL_AGENT)
    result, calls = run(server, store_path, "data.jsonl", "fns.py:exact", agent_cmd="sh agent.sh")
    assert calls == ROWS and result.score == 1.0
    before = server.calls  # the server is shared by the module's tests
    cli = cli_config_id(store_path, server, capsys, "-d", "data.jsonl", "--eval-fn",
                        "fns.py:exact", "--agent-cmd", "sh agent.sh")  # fmt: skip
    assert cli == result.config_id and server.calls == before  # the command reused every run


def test_a_dataframe_is_the_same_dataset_as_its_rows(server, store_path, project) -> None:
    import pandas

    rows = default_rows()
    by_rows, _ = run(server, store_path, rows, "fns.py:exact")
    frame = pandas.DataFrame(rows)
    by_frame, calls = run(server, store_path, frame, "fns.py:exact", dataset_name="sums")
    assert (by_frame.config_id, calls) == (by_rows.config_id, 0)
    assert by_frame.config["dataset"] == "sums"
    # The objects are copied when the eval starts: a later change is a new dataset.
    frame.loc[0, "ground_truth"] = "nonsense"
    changed, calls = run(server, store_path, frame, "fns.py:exact")
    assert changed.config_id != by_rows.config_id and calls == 0  # the rollouts are reused


def test_samples_and_a_dataframe_of_them(server, store_path, project) -> None:
    import pandas

    rows = default_rows()
    rows[1]["ground_truth"] = "wrong"
    result, _ = run(server, store_path, rows, "fns.py:exact", n=2)
    samples = list(result.samples())
    assert [(s["index"], s["run"]) for s in samples] == [(i, r) for i in range(ROWS)
                                                         for r in range(2)]  # fmt: skip
    second = samples[2]
    assert second["status"] == "ok" and second["scores"] == {"exact": 0.0}
    assert second["messages"][-1]["role"] == "assistant" and second["usage"]["total_tokens"] > 0
    assert second["data"] == rows[1] and second["error"] is None
    frame = result.to_pandas()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 2 * ROWS
    assert list(frame["score/exact"]) == [0.0 if i == 1 else 1.0 for i in range(ROWS)
                                          for _ in range(2)]  # fmt: skip
    assert list(frame.columns[:8]) == ["config_id", "index", "row", "run", "status", "prompt",
                                       "ground_truth", "solution"]  # fmt: skip
    loaded = osmo_store.load(result.config_id[:8], store=store_path)
    assert loaded.run_id == result.run_id and loaded.status == "completed"
    assert loaded.summary == result.summary


def test_to_pandas_without_pandas_says_what_to_install(
    server, store_path, project, monkeypatch
) -> None:
    result, _ = run(server, store_path, "data.jsonl", "fns.py:exact", limit=1)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(UsageError) as info:
        result.to_pandas()
    assert "pandas" in str(info.value) and "osmo-store[pandas]" in info.value.hint


def test_configs_filters_as_eval_cache_ls(server, store_path, project) -> None:
    a, _ = run(server, store_path, "data.jsonl", "fns.py:exact", label="baseline")
    b, _ = run(server, store_path, default_rows(3), "fns.py:exact", model="other")
    assert [c.config_id for c in osmo_store.configs(store=store_path)] == [b.config_id, a.config_id]
    assert [c.config_id for c in osmo_store.configs(store=store_path, label="BASE")] == [
        a.config_id]  # fmt: skip
    assert [c.config_id for c in osmo_store.configs(store=store_path, model="oth")] == [
        b.config_id]  # fmt: skip
    assert [c.config_id for c in osmo_store.configs(store=store_path, dataset="data")] == [
        a.config_id]  # fmt: skip
    assert osmo_store.configs(store=store_path, status="interrupted") == []
    assert osmo_store.load("baseline", store=store_path).config_id == a.config_id
    with pytest.raises(UsageError):
        osmo_store.configs(store=store_path, status="done")


def test_a_notebook_function_is_keyed_by_its_source_and_what_it_reads(
    server, store_path, project
) -> None:
    cell = {}
    define_in_cell("THRESHOLD = 0\nNOTES = 'unused'\n", cell)
    define_in_cell(
        "def check(solution_str, ground_truth, extra_info):\n"
        "    return int(solution_str.strip() == ground_truth) > THRESHOLD\n",
        cell,
    )
    first, calls = run(server, store_path, "data.jsonl", [cell["check"]])
    assert calls == ROWS and first.score == 1.0
    assert first.config["eval_fns"] == ["__main__:check"]
    # A global it does not read is not part of its key.
    cell["NOTES"] = "changed"
    same, calls = run(server, store_path, "data.jsonl", [cell["check"]])
    assert (same.config_id, calls) == (first.config_id, 0)
    # A global it reads is: rescored, no model call.
    cell["THRESHOLD"] = 1
    rescored, calls = run(server, store_path, "data.jsonl", [cell["check"]])
    assert rescored.config_id != first.config_id and calls == 0 and rescored.score == 0.0
    assert rescored.session["reused_rollouts"] == ROWS
    # So is a helper from another cell that it calls: redefined, the key changes.
    define_in_cell("def norm(s):\n    return s.strip()\n", cell)
    define_in_cell(
        "def graded(solution_str, ground_truth, extra_info):\n"
        "    return norm(solution_str) == ground_truth\n",
        cell,
    )
    before, _ = run(server, store_path, "data.jsonl", [cell["graded"]])
    define_in_cell("def norm(s):\n    return s.strip() + '!'\n", cell)
    after, calls = run(server, store_path, "data.jsonl", [cell["graded"]])
    assert after.config_id != before.config_id and calls == 0 and after.score == 0.0


def test_a_function_whose_source_cannot_be_read_is_refused(server, store_path, project) -> None:
    namespace: dict = {}
    exec(compile(FNS, "<no source kept>", "exec"), namespace)
    with pytest.raises(CodeLoadError, match="cannot read its source"):
        run(server, store_path, "data.jsonl", [namespace["exact"]])


_calls = {"count": 0, "interrupt_at": 0}
_calls_lock = threading.Lock()


def interrupting_agent(messages, row, client):
    """Asks the model, and on the ``interrupt_at``-th call sends this process a SIGINT, as
    Ctrl-C in a terminal (or a notebook's interrupt button, to its kernel) does. Later
    runs finish only once the eval has taken the stop request: the handler runs on the
    main thread, which a busy machine may not schedule before the other worker has run
    every row (the eval would then complete, not stop)."""
    reply = client.chat(messages)
    with _calls_lock:
        _calls["count"] += 1
        count, interrupt_at = _calls["count"], _calls["interrupt_at"]
    if count == interrupt_at:
        os.kill(os.getpid(), signal.SIGINT)
    elif 0 < interrupt_at < count:
        wait_until(_eval_took_the_stop, timeout=60, what="the eval's SIGINT handler to run")
    return [*messages, reply]


def _eval_took_the_stop() -> bool:
    """The eval's SIGINT handler has set its stop event (the one event it closes over)."""
    handler = signal.getsignal(signal.SIGINT)
    cells = getattr(handler, "__closure__", None) or ()
    events = [c.cell_contents for c in cells if isinstance(c.cell_contents, threading.Event)]
    return bool(events) and events[0].is_set()


def test_ctrl_c_leaves_a_resumable_config_and_a_later_call_runs_only_the_rest(
    server, store_path, project
) -> None:
    rows = default_rows(24)
    _calls.update(count=0, interrupt_at=3)
    before = server.calls
    with pytest.raises(osmo_store.EvalInterrupted) as info:
        run(server, store_path, rows, "fns.py:exact", agent=interrupting_agent, concurrency=2)
    assert isinstance(info.value, KeyboardInterrupt) and not isinstance(info.value, Exception)
    partial = info.value.result
    assert partial is not None and partial.status == "interrupted"
    recorded = partial.summary["runs"]
    assert 3 <= recorded < len(rows)
    first_calls = server.calls - before
    assert osmo_store.load(partial.config_id, store=store_path).status == "interrupted"
    # The Ctrl-C handler was only the eval's: Python's own is back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    _calls.update(count=0, interrupt_at=0)
    done, calls = run(server, store_path, rows, "fns.py:exact", agent=interrupting_agent,
                      concurrency=2)  # fmt: skip
    assert done.config_id == partial.config_id and done.status == "completed"
    assert done.session["reused_samples"] == recorded
    assert calls == len(rows) - recorded and first_calls + calls == len(rows)
    assert done.summary["runs"] == len(rows) and done.score == 1.0


def test_evaluate_async_runs_in_a_running_event_loop(server, store_path, project) -> None:
    async def notebook_cell():
        assert asyncio.get_running_loop() is not None
        return await osmo_store.evaluate_async(
            "data.jsonl", "fns.py:exact", model="mock", base_url=server.base_url,
            store=store_path, progress=False,
        )  # fmt: skip

    first = asyncio.run(notebook_cell())
    assert first.status == "completed" and first.summary["runs"] == ROWS
    before = server.calls
    assert asyncio.run(notebook_cell()).config_id == first.config_id
    assert server.calls == before


def test_bad_input_is_an_osmo_error_and_nothing_is_printed(
    server, store_path, project, capfd
) -> None:
    bad = [
        ({"n": 0}, UsageError),
        ({"concurrency": 0}, UsageError),
        ({"limit": 2.5}, UsageError),
        ({"offset": -1}, UsageError),
        ({"temperature": float("nan")}, UsageError),
        ({"shard": (3, 2)}, UsageError),
        ({"model": None}, UsageError),
        ({"older_keys": "maybe"}, UsageError),
    ]
    for kwargs, error in bad:
        with pytest.raises(error):
            run(server, store_path, "data.jsonl", "fns.py:exact", **kwargs)
    with pytest.raises(DatasetError):
        run(server, store_path, "missing.jsonl", "fns.py:exact")
    with pytest.raises(DatasetError):
        run(server, store_path, [{"prompt": "no user_prompt column"}], "fns.py:exact")
    with pytest.raises(UsageError, match="a list of dicts or a pandas DataFrame"):
        run(server, store_path, 42, "fns.py:exact")
    with pytest.raises(CodeLoadError):
        run(server, store_path, "data.jsonl", [42])
    with pytest.raises(StoreError):
        osmo_store.load("abcd", store=project / "not-a-store")
    with pytest.raises(OsmoError):
        osmo_store.load("abcd", store=store_path)
    result, _ = run(server, store_path, "data.jsonl", "fns.py:exact")  # and a run that works
    with pytest.raises(ConfigNotFound) as short:
        osmo_store.load(result.config_id[:3], store=store_path)
    assert short.value.hint == "an id prefix needs at least 4 hex characters"
    assert capfd.readouterr() == ("", "")


def test_the_librarys_warnings_go_to_its_logger_not_to_stderr(server, store_path, project) -> None:
    """A warning (here: a file in the config's journal that is no journal segment) is the
    ``osmo_store`` logger's: with no handler of the caller's, Python's last resort printed
    it on stderr. A process of its own: under pytest the root logger has handlers."""
    first, _ = run(server, store_path, "data.jsonl", "fns.py:exact")
    journal = store_path / "journal" / first.config_id
    journal.mkdir(parents=True, exist_ok=True)
    (journal / "00000001.jnl").write_bytes(b"not a journal segment")
    code = (
        "import logging, osmo_store\n"
        f"r = osmo_store.evaluate('data.jsonl', 'fns.py:exact', model='mock', "
        f"base_url={server.base_url!r}, store={str(store_path)!r}, progress=False)\n"
        "print(r.session['model_calls'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=project, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "0\n", "")
    # ... and a caller who configures logging gets it.
    logged = subprocess.run(
        [sys.executable, "-c", "import logging; logging.basicConfig()\n" + code],
        capture_output=True, text=True, cwd=project, timeout=120,
    )  # fmt: skip
    assert "is not an eval journal segment" in logged.stderr


def test_importing_osmo_store_loads_none_of_the_api() -> None:
    code = "import json, sys, osmo_store\nprint(json.dumps(sorted(sys.modules)))\n"
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    assert not {m for m in loaded if m.startswith("osmo_store.")}
    assert not {"tqdm", "dataclasses", "inspect", "pandas"} & loaded


def test_the_api_is_listed_typed_and_documented() -> None:
    for name in ("evaluate", "evaluate_async", "load", "configs", "EvalResult",
                 "EvalInterrupted", "ConfigInfo", "report", "label", "remove",
                 "VerifyReport"):  # fmt: skip
        assert name in osmo_store.__all__
        obj = getattr(osmo_store, name)
        assert obj.__doc__ and len(obj.__doc__) > 40, name
    import inspect

    result = osmo_store.EvalResult
    for fn in (osmo_store.evaluate, osmo_store.evaluate_async, osmo_store.load,
               osmo_store.configs, osmo_store.report, osmo_store.label, osmo_store.remove,
               result.diff, result.export, result.verify):  # fmt: skip
        assert fn.__doc__ and len(fn.__doc__) > 40, fn
        signature = inspect.signature(fn)
        assert signature.return_annotation is not inspect.Signature.empty
        assert all(p.annotation is not inspect.Parameter.empty
                   for p in signature.parameters.values() if p.name != "self")  # fmt: skip


def test_a_notebook_function_is_keyed_by_the_user_modules_it_uses(
    server, store_path, project
) -> None:
    (project / "grading.py").write_text("def norm(s):\n    return s.strip()\n")
    cell: dict = {}
    define_in_cell("import grading\n", cell)
    define_in_cell(
        "def graded(solution_str, ground_truth, extra_info):\n"
        "    return grading.norm(solution_str) == ground_truth\n",
        cell,
    )
    first, calls = run(server, store_path, "data.jsonl", [cell["graded"]])
    assert calls == ROWS and first.score == 1.0
    (project / "grading.py").write_text("def norm(s):\n    return s.strip() + '!'\n")
    forget_modules_under(project)
    define_in_cell("import grading\n", cell)  # the cell that imports it, run again
    again, calls = run(server, store_path, "data.jsonl", [cell["graded"]])
    assert again.config_id != first.config_id and calls == 0 and again.score == 0.0


def test_cancelling_evaluate_async_stops_the_eval_resumably(store_path, project) -> None:
    rows = default_rows(30)

    async def cancel_after_some_calls(server: MockServer) -> None:
        task = asyncio.ensure_future(osmo_store.evaluate_async(
            rows, "fns.py:exact", model="mock", base_url=server.base_url, store=store_path,
            concurrency=2, progress=False))  # fmt: skip
        deadline = time.monotonic() + 60
        while server.calls < 4:
            assert not task.done() and time.monotonic() < deadline
            await asyncio.sleep(0.01)  # the loop is free while the eval runs
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with MockServer(latency=0.05) as slow:
        asyncio.run(cancel_after_some_calls(slow))
        stopped = osmo_store.configs(store=store_path)[0]
        assert stopped.status == "interrupted"
        assert 4 <= stopped.counts["done"] < len(rows)
        first = slow.calls
        done, calls = run(slow, store_path, rows, "fns.py:exact", concurrency=2)
    assert done.status == "completed" and done.config_id == stopped.config_id
    assert first + calls == len(rows)  # the runs in flight were recorded before it returned


# What the ``osmo eval`` views do, from Python: each gives what its command gives.

HARSH = (
    "def exact(solution_str, ground_truth, extra_info):\n"
    "    return solution_str.strip() == ground_truth and ground_truth not in ('3', '7')\n"
)


def cli_json(store: Path, capsys, *argv: str) -> Any:
    code = main(["--store", str(store), "eval", *argv, "--json"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    return json.loads(captured.out)


def two_configs(server, store: Path, project: Path) -> tuple[Any, Any]:
    """A and B on the same rows; B's eval function fails rows 1 and 3."""
    (project / "harsh.py").write_text(HARSH)
    a, _ = run(server, store, "data.jsonl", "fns.py:exact", n=2)
    b, _ = run(server, store, "data.jsonl", "harsh.py:exact", n=2)
    return a, b


def test_diff_is_what_eval_diff_json_prints(server, store_path, project, capsys) -> None:
    a, b = two_configs(server, store_path, project)
    cli = cli_json(store_path, capsys, "diff", a.config_id, b.config_id, "--resamples", "500",
                   "--seed", "3")  # fmt: skip
    api = a.diff(b, resamples=500, seed=3)
    assert api == cli and api["difference"] < 0 and len(api["changes"]) == 2
    assert a.diff(b.config_id[:8], resamples=500, seed=3) == cli  # a config named by text
    cli = cli_json(store_path, capsys, "diff", a.config_id, b.config_id, "--confidence", "0.8")
    assert a.diff(b, confidence=0.8) == cli
    with pytest.raises(UsageError, match="no 'nonsense' score"):
        a.diff(b, metric="nonsense")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_export_writes_the_bytes_eval_export_writes(
    server, store_path, project, capsys, suffix
) -> None:
    a, _ = two_configs(server, store_path, project)
    code = main(["--store", str(store_path), "eval", "export", a.config_id, "-o",
                 str(project / f"cli{suffix}")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert a.export(project / "out" / f"api{suffix}") == project / "out" / f"api{suffix}"
    assert (project / "out" / f"api{suffix}").read_bytes() == (
        project / f"cli{suffix}").read_bytes()  # fmt: skip
    a.export(project / "named.txt", format=suffix[1:])
    assert (project / "named.txt").read_bytes() == (project / f"cli{suffix}").read_bytes()


def test_verify_gives_the_agreement_eval_verify_gives(server, store_path, project, capsys) -> None:
    a, _ = two_configs(server, store_path, project)
    report = a.verify()
    assert report.ok and (report.checked, report.agreed) == (2 * ROWS, 2 * ROWS)
    assert report.as_dict() == cli_json(store_path, capsys, "verify", a.config_id)
    changed = a.verify(["harsh.py:exact"])
    assert not changed.ok and changed.agreed == 2 * ROWS - 4 and len(changed.disagreements) == 4
    assert changed.as_dict() == cli_json(store_path, capsys, "verify", a.config_id,
                                         "--eval-fn", "harsh.py:exact")  # fmt: skip
    cell: dict = {}
    define_in_cell("def exact(solution_str, ground_truth, extra_info):\n    return False\n", cell)
    by_callable = a.verify(cell["exact"])  # one function, not in a list
    assert by_callable.agreed == 0 and len(by_callable.disagreements) == 2 * ROWS


def test_report_writes_the_page_of_eval_report(server, store_path, project, capsys) -> None:
    a, b = two_configs(server, store_path, project)
    path = osmo_store.report([a, b.config_id[:8]], project / "report.html", store=store_path)
    assert path == project / "report.html"
    page = path.read_text()
    code = main(["--store", str(store_path), "eval", "report", a.config_id, b.config_id, "-o",
                 str(project / "cli.html")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    cli = (project / "cli.html").read_text()
    for result in (a, b):
        assert result.config_id in page and result.config_id in cli
    # The same page but for the time it was made.
    assert len(page.splitlines()) == len(cli.splitlines())
    assert sum(x != y for x, y in zip(page.splitlines(), cli.splitlines(), strict=True)) <= 1


def test_label_and_remove_do_what_the_commands_do(server, store_path, project, capsys) -> None:
    a, b = two_configs(server, store_path, project)
    assert osmo_store.label(a.config_id[:8], "  baseline ", store=store_path) == a.config_id
    assert osmo_store.load("baseline", store=store_path).label == "baseline"
    listed = cli_json(store_path, capsys, "cache", "ls", "--label", "baseline")
    assert [c["config_id"] for c in listed] == [a.config_id]
    osmo_store.label(a.config_id, "", store=store_path)
    assert osmo_store.load(a.config_id, store=store_path).label is None
    assert osmo_store.remove([b.config_id[:8]], store=store_path) == [b.config_id]
    assert [c["config_id"] for c in cli_json(store_path, capsys, "cache", "ls")] == [a.config_id]
    with pytest.raises(ConfigNotFound):
        osmo_store.load(b.config_id, store=store_path)
    # Removed, the same eval runs again from its reused rollouts: no model call.
    again, calls = run(server, store_path, "data.jsonl", "harsh.py:exact", n=2)
    assert again.config_id == b.config_id and calls == 0


def test_views_refuse_bad_input_with_osmo_errors_and_print_nothing(
    server, store_path, project, capfd
) -> None:
    a, b = two_configs(server, store_path, project)
    capfd.readouterr()
    (project / "folder.jsonl").mkdir()
    with pytest.raises(UsageError, match="cannot tell the format"):
        a.export(project / "out.txt")
    with pytest.raises(UsageError, match="is a directory"):
        a.export(project / "folder.jsonl")
    os.mkfifo(project / "pipe.csv")
    with pytest.raises(UsageError, match="named pipe"):
        a.export(project / "pipe.csv")
    with pytest.raises(UsageError, match="is a directory"):
        osmo_store.report([a], project / "folder.jsonl")
    with pytest.raises(UsageError, match="given twice"):
        osmo_store.report([a, a.config_id], project / "r.html", store=store_path)
    with pytest.raises(UsageError):
        osmo_store.report([], project / "r.html", store=store_path)
    with pytest.raises(UsageError):
        a.diff(b, confidence=1.5)
    with pytest.raises(CodeLoadError):
        a.verify(["nowhere.py:exact"])
    with pytest.raises(ConfigNotFound):
        osmo_store.remove(["ffff0000"], store=store_path)
    with pytest.raises(UsageError):
        osmo_store.label(a.config_id, "two\nlines", store=store_path)
    assert not (project / "r.html").exists()
    assert capfd.readouterr() == ("", "")
