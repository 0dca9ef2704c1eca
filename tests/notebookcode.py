"""Code defined as a Jupyter cell defines it: compiled from a string under a made-up file
name that IPython registers in ``linecache`` (so ``inspect.getsource`` finds the text),
into a namespace named ``__main__`` that has no file."""

from __future__ import annotations

import itertools
import linecache
from typing import Any

_cells = itertools.count(1)


def define_in_cell(source: str, namespace: dict[str, Any]) -> None:
    filename = f"<ipython-input-{next(_cells)}-test>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace.setdefault("__name__", "__main__")
    exec(compile(source, filename, "exec"), namespace)
