"""``osmo eval diff A B``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..eval.compare import compare
from ..repo import Repository
from .common import out
from .evalshow import open_config


def cmd_diff(args: argparse.Namespace, repo: Repository) -> int:
    a, b = open_config(repo, args.a), open_config(repo, args.b)
    result = compare(a, b, metric=args.metric, confidence=args.confidence,
                     resamples=args.resamples, seed=args.seed)  # fmt: skip
    if args.json:
        out(json.dumps(result, indent=2, sort_keys=True))
        return 0
    _print(result, args.limit)
    return 0


def _name(side: dict[str, Any]) -> str:
    who = side.get("label") or side.get("agent") or side.get("model") or "-"
    return f"{side['config_id'][:12]}  {who}"


def _print(r: dict[str, Any], limit: int) -> None:
    m = r["metric"]
    out(f"A  {_name(r['a'])}  {m} {r['a']['mean']:.4f}")
    out(f"B  {_name(r['b'])}  {m} {r['b']['mean']:.4f}")
    out(f"{r['pairs']} runs of {r['rows']} rows compared; not scored (failed or a scoring "
        f"error): {r['unscored']['a']} in A, {r['unscored']['b']} in B")  # fmt: skip
    if any(r["unpaired_runs"].values()):
        u = r["unpaired_runs"]
        out(f"runs of shared rows with no partner (n differs): {u['a']} in A, {u['b']} in B")
    lo, hi = r["ci"]
    out("")
    out(f"B - A  {r['difference']:+.4f}   {100 * r['confidence']:g}% CI [{lo:+.4f}, {hi:+.4f}]  "
        f"(paired bootstrap over rows, {r['resamples']} resamples)")  # fmt: skip
    t = r["test"]
    if t["name"] == "McNemar exact":
        out(f"McNemar exact test: {t['a_only']} runs pass in A only, {t['b_only']} in B only; "
            f"p = {t['p_value']:.4g}")  # fmt: skip
    else:
        out(f"sign-flip permutation test over rows: p = {t['p_value']:.4g}")
    for side, other in (("a", "B"), ("b", "A")):
        only = r[f"only_in_{side}"]
        if only:
            shown = ", ".join(_row(x) for x in only[:10]) + (" ..." if len(only) > 10 else "")
            out(f"{len(only)} rows only in {side.upper()} (not in {other}): {shown}")
    changes = r["changes"]
    worse = sum(1 for c in changes if c["delta"] < 0)
    out("")
    if not changes:
        out(f"no row's {m} changed")
        return
    out(f"{len(changes)} rows changed: {worse} worse, {len(changes) - worse} better "
        "(regressions first)")  # fmt: skip
    shown = changes if limit == 0 else changes[:limit]
    out(f"{'ROW':>6}  {'KEY':<12}  {'A':>7}  {'B':>7}  {'B - A':>7}")
    for c in shown:
        index = "-" if c["index"] is None else str(c["index"])
        out(f"{index:>6}  {c['row'][:12]:<12}  {c['a']:7.4f}  {c['b']:7.4f}  {c['delta']:+7.4f}")
    if len(shown) < len(changes):
        out(f"... {len(changes) - len(shown)} more (--limit 0 lists them all)")


def _row(x: dict[str, Any]) -> str:
    return x["row"][:12] if x["index"] is None else f"{x['index']} ({x['row'][:8]})"
