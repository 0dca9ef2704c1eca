"""examples/analysis.ipynb, executed by a real Jupyter kernel (ipykernel, started by
nbclient from this environment): it must run without an error, show its tables and its
plot, and be committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

from .conftest import ROOT

NOTEBOOK = ROOT / "examples" / "analysis.ipynb"


def test_the_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_the_analysis_notebook_runs_in_a_jupyter_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel is a child of this process: what it and Jupyter write stays under tmp_path.
    # (Its kernelspec runs "python", which jupyter_client replaces by this sys.executable:
    # the venv's, without activating it or installing a kernelspec with --user.)
    for name in ("TMPDIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
        (tmp_path / name.lower()).mkdir()
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on an error
    code = [c for c in nb.cells if c.cell_type == "code"]
    kinds = {o.output_type for c in code for o in c.outputs}
    assert "error" not in kinds
    texts = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "Warning" not in texts and "Traceback" not in texts
    tables = [o for c in code for o in c.outputs if "text/html" in o.get("data", {})]
    assert len(tables) >= 3  # configs, the comparison, the rows that differ
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)


def test_interrupting_the_kernel_leaves_a_resumable_config(tmp_path: Path, monkeypatch) -> None:
    """The notebook's interrupt button (SIGINT to the kernel) during ``evaluate``: the cell
    ends with EvalInterrupted, and running it again runs only the missing runs. The eval
    function is defined in the cell, keyed by its source as IPython keeps it."""
    from jupyter_client.manager import start_new_kernel

    from osmo_store.testing.mockserver import MockServer

    from .waiting import wait_until

    for name in ("TMPDIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
        (tmp_path / name.lower()).mkdir()
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    rows = [{"user_prompt": f"What is {i} + 1?", "ground_truth": str(i + 1)} for i in range(40)]
    with MockServer(latency=0.1) as server:
        cell = (
            "import osmo_store\n"
            f"rows = {rows!r}\n"
            "def exact(solution_str, ground_truth, extra_info):\n"
            "    return solution_str.strip() == ground_truth\n"
            f"result = osmo_store.evaluate(rows, [exact], model='m', base_url={server.base_url!r},"
            f" store={str(tmp_path / 'store')!r}, concurrency=2, progress=False)\n"
            "print(result.status, result.summary['runs'])\n"
        )
        km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
        try:
            replies: list[dict] = []
            # Not stop_on_error: after an error the kernel aborts every request that reaches
            # its queue before its own "stop aborting" message does, and under load the
            # second run of the cell, sent as soon as the error came back, sometimes did
            # ("aborted"). A person re-running the cell is seconds behind that window.
            msg_id = kc.execute(cell, stop_on_error=False)
            wait_until(lambda: server.calls >= 4, what="the eval's first model calls")
            km.interrupt_kernel()
            reply = kc.get_shell_msg(timeout=60)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=60)
            assert reply["content"]["status"] == "error"
            assert reply["content"]["ename"] == "EvalInterrupted"
            first = server.calls
            assert first < len(rows)

            def collect(msg: dict) -> None:
                replies.append(msg)

            done = kc.execute_interactive(cell, timeout=60, output_hook=collect)
            assert done["content"]["status"] == "ok"
            printed = "".join(m["content"].get("text", "") for m in replies
                              if m["msg_type"] == "stream")  # fmt: skip
            assert printed == f"completed {len(rows)}\n"
            assert server.calls == len(rows)  # only the missing runs were asked for
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
