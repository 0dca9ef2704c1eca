"""An eval's progress as a tqdm bar: ``tqdm.auto`` draws a widget in Jupyter (with
ipywidgets installed) and a text bar elsewhere. Never the command line's own display,
whose terminal escape codes a notebook would show as text."""

from __future__ import annotations

import threading
import warnings
from typing import Any

from ..eval.runner import Progress


class ProgressBar:
    """Takes the runner's ``Progress`` snapshots (from its committer thread) and shows
    runs recorded out of the total, with the pass rate, failures and reused runs."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._bar: Any = None
        self._lock = threading.Lock()

    def update(self, p: Progress) -> None:
        with self._lock:
            if self._bar is None:
                self._bar = _tqdm()(total=p.total, initial=p.done, desc=self.description,
                                    unit="run", leave=True)  # fmt: skip
            self._bar.n = p.done
            postfix = {"pass": f"{100 * p.passed / p.scored:.0f}%" if p.scored else "-",
                       "failed": p.failed}  # fmt: skip
            if p.reused:
                postfix["reused"] = p.reused
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()


def _tqdm() -> Any:
    # tqdm.auto warns (on stderr) when Jupyter lacks ipywidgets, then draws a text bar,
    # which a notebook shows well enough: the API prints nothing but the bar.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm
