"""docs/python.md runs as written: its code blocks, in order, in one namespace (as cells of
one notebook), in a copy of examples/, against the mock server the first block starts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT
from .evalproject import forget_modules_under
from .notebookcode import define_in_cell

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_the_python_walk_through_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall((ROOT / "docs" / "python.md").read_text())
    assert len(blocks) >= 8
    for name in ("arithmetic.jsonl", "scoring.py", "agent.py"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    namespace: dict = {}
    try:
        for block in blocks:
            define_in_cell(block, namespace)
    finally:
        forget_modules_under(tmp_path)
        if "server" in namespace:
            namespace["server"].close()
