"""``osmo eval verify CONFIG``."""

from __future__ import annotations

import argparse
import json

from ..eval.verify import VerifyReport, load_eval_fns, verify
from ..repo import Repository
from .common import EXIT_ERROR, EXIT_OK, out
from .evalshow import open_config


def cmd_verify(args: argparse.Namespace, repo: Repository) -> int:
    stored = open_config(repo, args.config)
    report = verify(stored, load_eval_fns(stored, args.eval_fn))
    if args.json:
        out(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        _print(report, args.limit)
    return EXIT_OK if report.ok else EXIT_ERROR


def _print(r: VerifyReport, limit: int) -> None:
    out(f"config   {r.config_id[:12]}")
    for f in r.fns:
        if f["stored_code"] is None:
            state = "not one of the config's eval functions"
        else:
            state = "code changed since the eval" if f["changed"] else "same code as the eval"
        out(f"eval fn  {f['name']}  ({f['spec']}): {state}")
    skipped = f"; {r.skipped_failed} failed runs have nothing to score" if r.skipped_failed else ""
    out(f"{r.agreed} of {r.checked} samples agree with their stored scores{skipped}")
    for fn, count in sorted(r.not_stored.items()):
        out(f"{fn}: no stored score to compare in {count} samples")
    if r.ok:
        return
    out("")
    out(f"{len(r.disagreements)} scores disagree:")
    shown = r.disagreements if limit == 0 else r.disagreements[:limit]
    for d in shown:
        where = f"row {d.index}" if d.index is not None else f"row {d.row[:12]}"
        out(f"  {where} ({d.row[:12]}.{d.run})  {d.fn}: stored {_value(d.stored)}, now "
            f"{_value(d.now)}")  # fmt: skip
    if len(shown) < len(r.disagreements):
        out(f"  ... {len(r.disagreements) - len(shown)} more (--limit 0 lists them all)")


def _value(v: object) -> str:
    if isinstance(v, dict) and "error" in v:
        return f"error ({v['error']})"
    return json.dumps(v, sort_keys=True)
