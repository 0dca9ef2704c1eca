"""Printing an eval's summary and writing its output files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..eval.config import EvalConfig
from ..eval.dataset import Dataset, Row
from ..eval.outputs import write_output
from ..eval.runner import EvalOutcome
from ..eval.scoring import final_text
from ..objects import ObjectType
from ..repo import Repository
from .common import err, out
from .summarytext import print_failures, print_scores


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
    # Each line fits 80 columns while counts have at most five digits.
    out(
        f"store    {sess['computed']} computed; reused {sess['reused_samples']} from this "
        f"config, {sess['reused_rollouts']} from the store"
    )
    # Calls answered and calls failed for good, then the attempts behind them: "0 answered"
    # beside "6 failed" cannot read as "no call was made".
    out(
        f"calls    {sess['model_calls']} answered, {sess['failed_calls']} failed; "
        f"{sess['retried_attempts']} attempts retried, {sess['failed_attempts']} unanswered"
    )
    print_scores(s)
    print_failures(s, outcome.config_id)
    tokens = s.get("tokens") or {}
    tok = ", ".join(f"{k.replace('_tokens', '')} {v:,}" for k, v in sorted(tokens.items()))
    out("")
    out(f"tokens   {tok or '-'}   wall {s.get('wall_time_s', 0):.1f}s")


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
    """Write the files the output flags ask for, and say where each one went (on stderr:
    stdout may be the --json summary)."""
    short = outcome.config_id[:12]
    table = args.output and output_format(args.output) != "json"
    want_lines = args.log_samples is not None or args.output_path or (args.output and not table)
    lines = sample_lines(repo, outcome, {r.key: r for r in dataset.rows}) if want_lines else []
    results = {
        "config_id": outcome.config_id,
        "run": outcome.run_id,
        "status": outcome.status,
        "config": display,
        "identity": config.identity(),
        "session": outcome.session,
        "summary": outcome.summary,
    }
    written: list[Path] = []
    if args.output_path:
        d = Path(args.output_path)
        document = json.dumps(results, indent=2, sort_keys=True) + "\n"
        write_output(str(d / f"results-{short}.json"), "--output-path",
                     lambda tmp: tmp.write_text(document, encoding="utf-8"))  # fmt: skip
        write_output(str(d / f"samples-{short}.jsonl"), "--output-path",
                     lambda tmp: _write_jsonl(tmp, lines))  # fmt: skip
        written += [d / f"results-{short}.json", d / f"samples-{short}.jsonl"]
    if args.log_samples is not None:
        target = (
            Path(args.log_samples)
            if args.log_samples
            else (Path(args.output_path or ".") / f"samples-{short}.jsonl")
        )
        write_output(str(target), "--log-samples", lambda tmp: _write_jsonl(tmp, lines))
        written.append(target)
    if table:
        from ..eval.export import sample_records, write_records
        from ..eval.results import StoredConfig

        records = sample_records(StoredConfig(repo, outcome.config_id, outcome.run_id))
        fmt = output_format(args.output)
        write_output(args.output, "-o", lambda tmp: write_records(records, tmp, fmt))
        written.append(Path(args.output))
    elif args.output:
        document = json.dumps({**results, "runs": lines}, indent=2, sort_keys=True) + "\n"
        write_output(args.output, "-o", lambda tmp: tmp.write_text(document, encoding="utf-8"))
        written.append(Path(args.output))
    for path in dict.fromkeys(written):
        err(f"osmo: wrote {path}")


def output_format(path: str) -> str:
    """What ``osmo eval -o FILE`` writes: ``.json``, one JSON document (config, summary,
    runs); otherwise a table of samples in the format of the suffix (see ``export``).
    Raises ``UsageError`` for a suffix that is neither."""
    from ..eval.export import FORMATS, check_format

    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix not in FORMATS:
        raise UsageError(f"-o {path}: cannot tell the format from the suffix "
                         f"{Path(path).suffix or '(none)'!r}",
                         hint="use .json (one JSON document), or .jsonl, .csv or .parquet "
                         "(one row per sample)")  # fmt: skip
    return check_format(path)


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
