"""``report``: the HTML report of ``osmo eval report``, from Python."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from ..eval.outputs import check_writable, write_output
from ..eval.report_data import gather
from ..eval.report_html import render_report
from .result import EvalResult, StorePath, opened


def report(
    configs: Sequence[EvalResult | str],
    path: str | os.PathLike[str],
    *,
    metric: str | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    store: StorePath = None,
) -> Path:
    """Write the self-contained HTML page ``osmo eval report CONFIG... -o PATH`` writes, of
    ``configs`` (results, or config ids, prefixes or labels in ``store``): each config's
    scores and failures, every later one compared with the first (``metric``,
    ``confidence``, ``resamples`` and ``seed`` as in ``EvalResult.diff``), and the samples.
    The page is written whole or not at all. Returns the path. Raises ``UsageError`` (no
    configs, one given twice, a path it cannot write to), ``ConfigNotFound`` and
    ``OutputError`` (the write failed)."""
    if isinstance(configs, (str, EvalResult)) or not configs:
        raise UsageError("report needs a list of one or more results or config ids")
    check_writable(path, "path")  # refused before the store is read, not after
    with opened(configs, store) as stored:
        data = gather(stored, metric=metric, confidence=confidence, resamples=resamples,
                      seed=seed)  # fmt: skip
        html = render_report(data)
    write_output(path, "path", lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return Path(path)
