"""Printing an eval's summary and writing its output files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..eval.config import EvalConfig
from ..eval.dataset import Dataset, Row
from ..eval.failures import describe_cause
from ..eval.runner import EvalOutcome
from ..eval.scoring import final_text
from ..objects import ObjectType
from ..repo import Repository
from .common import out


def print_summary(config: EvalConfig, outcome: EvalOutcome, display: dict[str, Any]) -> None:
    s = outcome.summary
    sess = outcome.session
    who = display["model"] or "-"
    if display.get("agent"):
        who = f"agent {display['agent']}" + (f" / {display['model']}" if display["model"] else "")
    out(f"config   {outcome.config_id[:12]}  ({outcome.status})  run {outcome.run_id[:12]}")
    out(f"solver   {who}" + (f" @ {display['base_url']}" if display.get("base_url") else ""))
    out(f"dataset  {display['dataset']}  ({display['rows']} rows x n={display['n']})")
    ok = s["runs"] - s["failed"]
    out(
        f"runs     {s['runs']} recorded: {ok} ok, {s['failed']} failed, "
        f"{s['scoring_errors']} with scoring errors"
    )
    out(
        f"store    {sess['reused_samples']} reused from this config, "
        f"{sess['reused_rollouts']} rollouts reused from the store, {sess['computed']} computed, "
        + _model_calls(sess, s)
    )
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
    print_failures(s, outcome.config_id)
    tokens = s.get("tokens") or {}
    tok = ", ".join(f"{k.replace('_tokens', '')} {v:,}" for k, v in sorted(tokens.items()))
    out("")
    out(f"tokens   {tok or '-'}   wall {s.get('wall_time_s', 0):.1f}s")


def _model_calls(session: dict[str, Any], summary: dict[str, Any]) -> str:
    """The model calls answered in this session. Calls whose every attempt failed are not
    among them: when runs failed and none was answered, "0 model calls" would read as "no
    call was attempted", so the failures below speak for themselves."""
    calls = session.get("model_calls", 0)
    if calls == 0 and summary.get("failed"):
        return "no model call answered"
    return f"{calls} model calls"


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


def sample_lines(repo: Repository, outcome: EvalOutcome, rows: dict[str, Row]) -> list[dict]:
    """One dict per run for --log-samples: row, run index, messages, scores, error."""
    lines = []
    for s in sorted(outcome.load_samples(), key=lambda s: (rows[s["row"]].index, s["run"])):
        messages = None
        if s.get("rollout_id"):
            body = json.loads(repo.objects.get_typed(s["rollout_id"], ObjectType.BLOB))
            messages = body["messages"]
        row = rows[s["row"]]
        lines.append(
            {
                "row": row.index,
                "row_key": s["row"],
                "data": row.data,
                "run": s["run"],
                "status": s["status"],
                "messages": messages,
                "solution": final_text(messages or []),
                "scores": s.get("scores"),
                "scoring_errors": s.get("scoring_errors"),
                "error": s.get("error"),
                "usage": s.get("usage"),
            }
        )
    return lines


def write_outputs(
    args: argparse.Namespace,
    repo: Repository,
    config: EvalConfig,
    outcome: EvalOutcome,
    dataset: Dataset,
    display: dict[str, Any],
) -> None:
    short = outcome.config_id[:12]
    want_samples = args.log_samples is not None or args.output_path or args.output
    if not want_samples:
        return
    lines = sample_lines(repo, outcome, {r.key: r for r in dataset.rows})
    results = {
        "config_id": outcome.config_id,
        "run": outcome.run_id,
        "status": outcome.status,
        "config": display,
        "identity": config.identity(),
        "session": outcome.session,
        "summary": outcome.summary,
    }
    if args.output_path:
        d = Path(args.output_path)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"results-{short}.json").write_text(
            json.dumps(results, indent=2, sort_keys=True) + "\n"
        )
        _write_jsonl(d / f"samples-{short}.jsonl", lines)
    if args.log_samples is not None:
        target = (
            Path(args.log_samples)
            if args.log_samples
            else (Path(args.output_path or ".") / f"samples-{short}.jsonl")
        )
        _write_jsonl(target, lines)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(
            json.dumps({**results, "runs": lines}, indent=2, sort_keys=True) + "\n"
        )


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
