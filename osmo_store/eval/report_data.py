"""What the HTML report of one or more stored configs shows, read from the store: each
config's samples (as ``StoredConfig.view`` gives them), failure groups, metric values,
and, with two configs or more, each one compared with the first (``compare``), with the
per-row means its plots need. No HTML here: ``report_html`` draws this."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .catalog import config_status
from .compare import compare, default_metric
from .failures import group_failures
from .results import StoredConfig
from .summary import metric_values


@dataclass
class ConfigReport:
    """One config: its stored state, status, every sample in dataset order, its failure
    groups and the values of each metric over its finished runs."""

    stored: StoredConfig
    status: str
    views: list[dict[str, Any]]
    groups: dict[str, Any]
    values: dict[str, list[float]]

    @property
    def name(self) -> str:
        """How the page names the config: its label, else its short id."""
        return self.stored.meta.get("label") or self.stored.config_id[:12]


@dataclass
class Comparison:
    """Config ``other`` compared with the baseline (the first config): ``result`` is what
    ``compare`` returns, or ``error`` says why they cannot be compared; ``row_means`` holds
    each shared row's (baseline mean, other mean) over its paired runs."""

    other: int
    result: dict[str, Any] | None = None
    error: str | None = None
    row_means: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class ReportData:
    configs: list[ConfigReport]
    metric: str | None  # the metric compared and listed per sample
    comparisons: list[Comparison]

    @property
    def metrics(self) -> list[str]:
        """Every metric any config has, sorted."""
        return sorted({m for c in self.configs for m in c.values})


def gather(
    stored: list[StoredConfig],
    *,
    metric: str | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> ReportData:
    """Read everything the report shows. ``metric``: the metric to compare and to list per
    sample (default: the first config's primary metric, as ``osmo eval diff`` picks it)."""
    seen: set[str] = set()
    for s in stored:
        if s.config_id in seen:
            raise UsageError(f"config {s.config_id[:12]} is given twice")
        seen.add(s.config_id)
    configs = [_config_report(s) for s in stored]
    # Only a metric the user named must exist: a config whose eval function raised on
    # every run has no value of its own default one, and is still reported (failures and
    # all), its comparisons saying why there are none.
    if metric is not None and not any(metric in c.values for c in configs):
        known = ", ".join(sorted({m for c in configs for m in c.values})) or "none"
        raise UsageError(f"no config has a {metric!r} score", hint=f"their metrics: {known}")
    if metric is None and configs[0].stored.primary_metric is not None:
        metric = default_metric(configs[0].stored)
    comparisons = []
    for i in range(1, len(configs)):
        comparisons.append(_compare(configs[0], configs[i], i, metric, confidence, resamples,
                                    seed))  # fmt: skip
    return ReportData(configs, metric, comparisons)


def _config_report(stored: StoredConfig) -> ConfigReport:
    views = [stored.view(ref) for ref in stored.refs()]
    values: dict[str, list[float]] = defaultdict(list)
    for v in views:
        if v["status"] == "ok":
            for m, x in metric_values(v["scores"]).items():
                values[m].append(x)
    status = config_status(stored.repo, stored.config_id, stored.meta)
    return ConfigReport(stored, status, views, group_failures(views), dict(values))


def _compare(base: ConfigReport, other: ConfigReport, index: int, metric: str | None,
             confidence: float, resamples: int, seed: int) -> Comparison:  # fmt: skip
    try:
        result = compare(base.stored, other.stored, metric=metric, confidence=confidence,
                         resamples=resamples, seed=seed)  # fmt: skip
    except UsageError as e:
        # A config with no scored run (every call failed, say) is still reported: the page
        # says why this pair has no comparison rather than there being no page.
        return Comparison(index, error=str(e))
    a, b = _metric_by_run(base, result["metric"]), _metric_by_run(other, result["metric"])
    by_row: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, x in a.items():
        y = b.get(name)
        if y is not None:
            by_row[name.rpartition(".")[0]].append((x, y))
    means = [(sum(x for x, _ in p) / len(p), sum(y for _, y in p) / len(p))
             for p in by_row.values()]  # fmt: skip
    return Comparison(index, result=result, row_means=means)


def _metric_by_run(c: ConfigReport, metric: str) -> dict[str, float]:
    out = {}
    for v in c.views:
        value = metric_values(v["scores"]).get(metric) if v["status"] == "ok" else None
        if value is not None:
            out[f"{v['row']}.{v['run']}"] = value
    return out


def sample_table(data: ReportData) -> dict[str, Any]:
    """The samples as the page's script reads them: ``configs`` (id and name), ``metric``,
    ``rows`` (row key -> the row's data, once for every config) and ``samples``: one entry
    per row and run that any config has, ``[row, run, index, [sample or null per config]]``,
    in dataset order. A sample keeps only the fields it has."""
    rows: dict[str, Any] = {}
    entries: dict[tuple[str, int], list[Any]] = {}
    for ci, c in enumerate(data.configs):
        for v in c.views:
            rows.setdefault(v["row"], v["data"])
            entry = entries.get((v["row"], v["run"]))
            if entry is None:
                entry = entries[(v["row"], v["run"])] = [v["row"], v["run"], v["index"],
                                                         [None] * len(data.configs)]  # fmt: skip
            if entry[2] is None:
                entry[2] = v["index"]
            entry[3][ci] = _sample(v, data.metric)
    ordered = sorted(entries.values(),
                     key=lambda e: (e[2] is None, e[2] or 0, e[0], e[1]))  # fmt: skip
    return {
        "configs": [{"id": c.stored.config_id, "name": c.name} for c in data.configs],
        "metric": data.metric,
        "rows": rows,
        "samples": ordered,
    }


def _sample(v: dict[str, Any], metric: str | None) -> dict[str, Any]:
    value = metric_values(v["scores"]).get(metric) if metric and v["status"] == "ok" else None
    s = {"status": v["status"], "value": value, "messages": v["messages"], "scores": v["scores"],
         "scoring_errors": v["scoring_errors"], "error": v["error"], "usage": v["usage"],
         "latency_s": v["latency_s"]}  # fmt: skip
    return {k: x for k, x in s.items() if x not in (None, {}, [])}


def script_json(obj: Any) -> str:
    """``obj`` as JSON that is safe inside a ``<script type="application/json">`` element:
    no ``<``, ``>`` or ``&`` (so no ``</script>`` in model output can end the element), and
    no raw line separators."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(ch, esc)
    return text
