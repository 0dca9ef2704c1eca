"""Metrics over recorded samples: per-score mean/std/min/max/median and pass@k."""

from __future__ import annotations

import math
import statistics
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .rowkeys import RowKeys

from .failures import FailureGroups


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError("k > n")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(n: int) -> list[int]:
    """Powers of two up to n, and n itself."""
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n not in ks and n > 0:
        ks.append(n)
    return ks


def metric_values(scores: dict[str, Any]) -> dict[str, float]:
    """Flatten {fn: number | {name: number}} into {metric: number}; the metric of a plain
    number is the function name, of a dict entry ``fn/name``."""
    out = {}
    for fn, value in scores.items():
        if isinstance(value, dict):
            for name, v in value.items():
                out[f"{fn}/{name}"] = v
        else:
            out[fn] = value
    return out


def describe(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
        "count": len(values),
    }


class SummaryBuilder:
    """Summary of sample records (dicts as stored), fed one at a time. A run *passes* when
    its primary metric (the first eval function's score; for a dict, its "score", "pass",
    "correct" or "accuracy" entry, else the alphabetically first) is >= ``pass_threshold``;
    failed runs and runs whose primary score errored do not pass.

    Given the dataset's ``rows``, what it keeps per run is a few bytes: each metric's
    values as 8-byte floats, and per row two counters (runs, passes) found by the row's
    index; a row not among ``rows`` is counted in a dict."""

    def __init__(
        self, *, n: int, pass_threshold: float, primary: str | None, rows: RowKeys | None = None
    ) -> None:
        self.n = n
        self.pass_threshold = pass_threshold
        self.primary = primary
        self.by_metric: dict[str, array] = defaultdict(lambda: array("d"))
        self._rows = rows
        size = len(rows) if rows is not None else 0
        self._row_runs = array("I", bytes(4 * size))
        self._row_passes = array("I", bytes(4 * size))
        self._other_rows: dict[str, list[int]] = {}  # row key -> [runs, passes]
        self.failed = self.scoring_errors = self.runs = 0
        self.errors_by_fn: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, int] = defaultdict(int)
        self.groups = FailureGroups()
        self.primary_sum = 0.0
        self.primary_count = 0

    def _count_row(self, row: str, passed: bool) -> None:
        index = self._rows.index(row) if self._rows is not None else None
        if index is None:
            counts = self._other_rows.setdefault(row, [0, 0])
            counts[0] += 1
            counts[1] += passed
        else:
            self._row_runs[index] += 1
            self._row_passes[index] += passed

    def _per_row(self) -> Iterator[tuple[int, int]]:
        """(runs, passes) of every row that has runs."""
        for runs, passes in zip(self._row_runs, self._row_passes, strict=True):
            if runs:
                yield runs, passes
        for runs, passes in self._other_rows.values():
            yield runs, passes

    def add(self, s: dict[str, Any]) -> None:
        self.runs += 1
        self.groups.add(s)
        for k, v in (s.get("usage") or {}).items():
            if isinstance(v, int):
                self.tokens[k] += v
        if s.get("status") == "failed":
            self.failed += 1
            self._count_row(s["row"], False)
            return
        if s.get("scoring_errors"):
            self.scoring_errors += 1
            for fn in s["scoring_errors"]:
                self.errors_by_fn[fn] += 1
        for m, v in metric_values(s.get("scores") or {}).items():
            self.by_metric[m].append(v)
        p = primary_value(s.get("scores") or {}, self.primary)
        if p is not None:
            self.primary_sum += p
            self.primary_count += 1
        self._count_row(s["row"], p is not None and p >= self.pass_threshold)

    def result(self) -> dict[str, Any]:
        groups = self.groups.result()
        # Every pass@k is over the same rows, each row's estimate from its own runs (as
        # HumanEval's evaluation does): a k is given only when every row has k runs. Over
        # only the rows that reached k instead, an interrupted eval whose easy rows had
        # fewer runs showed pass@2 below pass@1.
        fewest = min((runs for runs, _ in self._per_row()), default=0)
        pass_k: dict[str, float] = {}
        for k in ks_for(self.n):
            if k > fewest:
                break
            pass_k[f"pass@{k}"] = statistics.fmean(
                pass_at_k(runs, passes, k) for runs, passes in self._per_row()
            )
        return {
            "runs": self.runs,
            "rows": sum(1 for _ in self._per_row()),
            "n": self.n,
            # rows with fewer than n runs (an interrupted eval): pass@k beyond is left out
            "incomplete_rows": sum(1 for runs, _ in self._per_row() if runs < self.n),
            # runs that passed, and runs with a primary score (a failed run has none)
            "passed": sum(passes for _, passes in self._per_row()),
            "scored": self.primary_count,
            "failed": self.failed,
            "scoring_errors": self.scoring_errors,
            "scoring_errors_by_fn": dict(self.errors_by_fn),
            "failure_groups": groups["failures"],
            "scoring_error_groups": groups["scoring_errors"],
            "metrics": {m: describe(v) for m, v in sorted(self.by_metric.items())},
            "pass_at_k": pass_k,
            "pass_threshold": self.pass_threshold,
            "primary_metric": self.primary,
            # the mean of the primary metric over the runs it scored (a dict's entry as
            # chosen above): what `cache ls` shows and `--fail-under` compares
            "primary_score": self.primary_sum / self.primary_count if self.primary_count else None,
            "tokens": dict(self.tokens),
        }


def summarize(
    samples: Iterable[dict[str, Any]], *, n: int, pass_threshold: float, primary: str | None
) -> dict[str, Any]:
    """Summary of sample records; see ``SummaryBuilder``."""
    builder = SummaryBuilder(n=n, pass_threshold=pass_threshold, primary=primary)
    for s in samples:
        builder.add(s)
    return builder.result()


def primary_value(scores: dict[str, Any], primary: str | None) -> float | None:
    if primary is None or primary not in scores:
        return None
    v = scores[primary]
    if isinstance(v, dict):
        key = primary_entry(v)
        return None if key is None else v[key]
    return v


def primary_entry(score: dict[str, Any]) -> str | None:
    """The entry of a dict score that stands for it: "score", "pass", "correct" or
    "accuracy", else the alphabetically first."""
    for name in ("score", "pass", "correct", "accuracy"):
        if name in score:
            return name
    return min(score) if score else None
