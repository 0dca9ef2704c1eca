"""Two configs compared on the rows they share (model A vs model B, a prompt before and after):
per-row score changes, the mean difference with a paired confidence interval, a paired
test, and the rows only one of them has. Runs are paired by row key and run index, so the
comparison holds whatever order either dataset file has."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..errors import UsageError
from .results import SampleRef, StoredConfig
from .stats import Cluster, bootstrap_ci, mcnemar_exact, mean_difference, sign_flip_test
from .summary import metric_values, primary_entry


def compare(
    a: StoredConfig,
    b: StoredConfig,
    *,
    metric: str | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """B against A (differences are B - A, so a regression is negative). ``metric``: a
    metric name as the summary shows it (default: A's primary metric)."""
    if not 0 < confidence < 1:
        raise UsageError(f"confidence must be between 0 and 1, got {confidence}")
    samples_a, samples_b = _scored(a), _scored(b)
    for side, scored in ((a, samples_a), (b, samples_b)):
        if not any(flat for _, flat in scored.values()):
            raise UsageError(f"config {side.config_id[:12]} has no scored run",
                             hint=f"see why: osmo eval show {side.config_id[:12]}")  # fmt: skip
    metric = metric or default_metric(a)
    values_a = _values(samples_a, metric)
    values_b = _values(samples_b, metric)
    if not any(v is not None for v in values_b.values()):
        known = ", ".join(sorted({m for _, flat in samples_b.values() for m in flat})) or "none"
        raise UsageError(f"config {b.config_id[:12]} has no {metric!r} score",
                         hint=f"its metrics: {known}; pick one with --metric")  # fmt: skip
    rows_a = {ref.row: ref.index for ref, _ in samples_a.values()}
    rows_b = {ref.row: ref.index for ref, _ in samples_b.values()}
    shared = sorted(set(values_a) & set(values_b))
    # Runs of a row both configs have, but of a run index only one has (n differs).
    both_rows = set(rows_a) & set(rows_b)
    unpaired = {"a": _unpaired(values_a, values_b, both_rows),
                "b": _unpaired(values_b, values_a, both_rows)}  # fmt: skip
    by_row: dict[str, list[tuple[float, float]]] = defaultdict(list)
    unscored = {"a": 0, "b": 0}
    for name in shared:
        va, vb = values_a[name], values_b[name]
        unscored["a"] += va is None
        unscored["b"] += vb is None
        if va is not None and vb is not None:
            by_row[name.rpartition(".")[0]].append((va, vb))
    if not by_row:
        raise UsageError(
            f"configs {a.config_id[:12]} and {b.config_id[:12]} have no scored run in common",
            hint="diff compares the runs of the same rows (by content) and run index",
        )
    clusters: list[Cluster] = [(sum(y - x for x, y in p), len(p)) for p in by_row.values()]
    pairs = [pair for p in by_row.values() for pair in p]
    lo, hi = bootstrap_ci(clusters, confidence=confidence, resamples=resamples, seed=seed)
    changes = []
    for row, p in by_row.items():
        mean_a = sum(x for x, _ in p) / len(p)
        mean_b = sum(y for _, y in p) / len(p)
        if mean_a != mean_b:
            index = rows_a.get(row, rows_b.get(row))
            changes.append({"row": row, "index": index, "a": mean_a, "b": mean_b,
                            "delta": mean_b - mean_a, "runs": len(p)})  # fmt: skip
    changes.sort(key=lambda c: (c["delta"], c["index"] if c["index"] is not None else 1 << 62,
                                c["row"]))  # fmt: skip
    return {
        "metric": metric,
        "a": _side(a, [x for x, _ in pairs]),
        "b": _side(b, [y for _, y in pairs]),
        "pairs": len(pairs),
        "rows": len(by_row),
        "difference": mean_difference(clusters),
        "ci": [lo, hi],
        "confidence": confidence,
        "resamples": resamples,
        "test": _test(pairs, [d for d, _ in clusters], resamples, seed),
        "unscored": unscored,
        "unpaired_runs": unpaired,
        "only_in_a": _only(rows_a, rows_b),
        "only_in_b": _only(rows_b, rows_a),
        "changes": changes,
    }


def _scored(stored: StoredConfig) -> dict[str, tuple[SampleRef, dict[str, float]]]:
    """Sample name -> (where it is, its flat metric values; empty for a failed run)."""
    out = {}
    for ref, sample in stored.samples():
        ok = sample.get("status") == "ok"
        out[ref.name] = (ref, metric_values(sample.get("scores") or {}) if ok else {})
    return out


def _values(scored: dict[str, tuple[SampleRef, dict[str, float]]], metric: str):
    return {name: flat.get(metric) for name, (_, flat) in scored.items()}


def default_metric(stored: StoredConfig) -> str:
    """A config's primary metric as the summary names it: the first eval function, or for a
    dict score the entry that stands for it (``fn/score``...)."""
    primary = stored.primary_metric
    if primary is None:
        raise UsageError(f"config {stored.config_id[:12]} has no eval function to compare by")
    for ref in stored.refs():
        if ref.subtree != "samples":
            continue
        score = (stored.sample(ref).get("scores") or {}).get(primary)
        if isinstance(score, dict):
            return f"{primary}/{primary_entry(score)}"
        if score is not None:
            return primary
    return primary


def _side(stored: StoredConfig, values: list[float]) -> dict[str, Any]:
    given = stored.meta.get("config") or {}
    return {"config_id": stored.config_id, "label": stored.meta.get("label"),
            "model": given.get("model"), "agent": given.get("agent"),
            "mean": sum(values) / len(values)}  # fmt: skip


def _test(pairs: list[tuple[float, float]], row_deltas: list[float], resamples: int,
          seed: int) -> dict[str, Any]:  # fmt: skip
    """McNemar's exact test when every score is 0 or 1 (pass/fail); else a sign-flip
    permutation test on the rows' differences."""
    if all(x in (0.0, 1.0) and y in (0.0, 1.0) for x, y in pairs):
        a_only = sum(1 for x, y in pairs if x > y)
        b_only = sum(1 for x, y in pairs if y > x)
        return {"name": "McNemar exact", "p_value": mcnemar_exact(a_only, b_only),
                "a_only": a_only, "b_only": b_only}  # fmt: skip
    return {"name": "sign-flip permutation", "p_value": sign_flip_test(
        row_deltas, resamples=resamples, seed=seed)}  # fmt: skip


def _unpaired(mine: dict[str, Any], theirs: dict[str, Any], rows: set[str]) -> int:
    return sum(1 for name in mine if name not in theirs and name.rpartition(".")[0] in rows)


def _only(mine: dict[str, int | None], theirs: dict[str, int | None]) -> list[dict[str, Any]]:
    rows = [{"row": r, "index": i} for r, i in mine.items() if r not in theirs]
    rows.sort(key=lambda r: (r["index"] if r["index"] is not None else 1 << 62, r["row"]))
    return rows
