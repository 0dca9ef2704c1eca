"""A stored summary as text: scores, pass@k, failures by cause. Shared by the summary an
eval prints and ``osmo eval show``; light to import (no eval machinery)."""

from __future__ import annotations

from typing import Any

from ..eval.failures import describe_cause
from .common import out


def print_scores(s: dict[str, Any]) -> None:
    """The metrics table and pass@k of a summary."""
    if s["metrics"]:
        width = max(12, *(len(m) for m in s["metrics"]))
        out("")
        cols = " ".join(f"{c:>7}" for c in ("mean", "std", "min", "max", "median", "n"))
        out(f"{'metric':<{width}}  {cols}")
        for m, d in s["metrics"].items():
            out(
                f"{m:<{width}}  {d['mean']:7.4f} {d['std']:7.4f} {d['min']:7.4f} "
                f"{d['max']:7.4f} {d['median']:7.4f} {d['count']:7d}"
            )
    if s["pass_at_k"]:
        out("")
        out(
            "  ".join(f"{k} {v:.4f}" for k, v in s["pass_at_k"].items())
            + f"   (pass: {s['primary_metric']} >= {s['pass_threshold']:g})"
        )
    incomplete = s.get("incomplete_rows")  # absent from summaries stored before it was kept
    if incomplete:
        out(f"{incomplete} of the {s['rows']} rows run have fewer than {s['n']} runs: pass@k "
            "is shown for the k every one has")  # fmt: skip


def print_failures(summary: dict[str, Any], config_id: str) -> None:
    """Failed runs by cause and scoring errors by eval function, each cause with its count
    and a command that shows an example run."""
    failures = summary.get("failure_groups") or []
    scoring = summary.get("scoring_error_groups") or {}
    if failures:
        out("")
        out(f"failures ({summary.get('failed', 0)} runs):")
        for g in failures:
            out(f"  {g['count']} x {describe_cause(g)}")
            out(f"      example: {show_row_command(config_id, g['example'])}")
    if scoring:
        out("")
        out("scoring errors:")
        for fn, groups in scoring.items():
            for g in groups:
                out(f"  {fn}: {g['count']} x {g['message']}")
                out(f"      example: {show_row_command(config_id, g['example'])}")


def show_row_command(config_id: str, sample: str) -> str:
    """The command that shows one stored run (``sample``: ``<row-key>.<run>``)."""
    row, _, run = sample.rpartition(".")
    return f"osmo eval show {config_id[:12]} --row {row[:12]}.{run}"
