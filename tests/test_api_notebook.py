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
