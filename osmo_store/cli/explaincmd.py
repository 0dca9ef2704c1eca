"""``osmo eval explain``: the same flags as ``osmo eval``; runs nothing, prints the config id,
every key component, and what a run would reuse and why the rest misses."""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .common import open_repo, out

if TYPE_CHECKING:
    from ..eval.prepare import PreparedEval


def register_explain(
    csub: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    add_eval_arguments: Callable[[argparse.ArgumentParser], None],
    build_config: Callable[[argparse.Namespace], PreparedEval],
    usage: str,
) -> None:
    """``osmo eval explain``, with the flags, their reading and usage that ``osmo eval`` passes
    (``evalcmd`` owns them; importing it from here would make a cycle)."""
    p = csub.add_parser(
        "explain",
        parents=[common],
        usage=usage,
        help="show a config's keys and what a run would reuse, running nothing",
        description="Takes the same flags as `osmo eval` and runs nothing: prints the config "
        "id, every key component with its value or fingerprint, and what a run would reuse "
        "(compared with the nearest stored config of the same dataset).",
    )
    add_eval_arguments(p)
    p.set_defaults(cache_func=functools.partial(cmd_explain, build_config=build_config))


def cmd_explain(
    args: argparse.Namespace, build_config: Callable[[argparse.Namespace], PreparedEval]
) -> int:
    from ..eval.explain import explain_eval

    prepared = build_config(args)
    with open_repo(args) as repo:
        report = explain_eval(repo, prepared)
    if args.json:
        out(json.dumps(report, indent=2, sort_keys=True))
    else:
        for line in render(report):
            out(line)
    return 0


def render(report: dict[str, Any]) -> list[str]:
    c = report["components"]
    state = "stored" if report["stored"] else "not stored yet"
    lines = [f"config    {report['config_id']}  (key schema {report['key_schema']}; {state})"]
    if c["model"]:
        lines.append("model     " + "  ".join(f"{k}={v}" for k, v in c["model"].items()))
    params = "  ".join(f"{k}={v}" for k, v in c["params"].items()) or "(defaults)"
    turns = "-" if c["max_turns"] is None else c["max_turns"]
    lines.append(f"params    {params}  max_turns={turns}")
    if c["agent"]:
        lines += _code("agent", c["agent"])
    for fn in c["eval_fns"]:
        lines += _code("eval fn", fn)
    lines.append(f"n         {c['n']}")
    d = c["dataset"]
    lines.append(f"dataset   {_shown(d['path'])}: {d['rows']} rows  {d['fingerprint'][:12]}")
    plan = report["plan"]
    nearest = report["nearest"]
    lines.append("")
    if nearest is None:
        lines.append("nearest   no stored config of this dataset")
    else:
        differs = "; ".join(nearest["compute"] + nearest["rescore"]) or "the same config"
        lines.append(
            f"nearest   {nearest['config_id'][:12]} ({nearest['status']}, "
            f"{nearest['runs']} runs): {differs}"
        )
    lines.append(_verdict(plan, nearest))
    return lines


def _code(what: str, code: dict[str, Any]) -> list[str]:
    lines = [f"{what:<9} {code['spec']}  code {code['fingerprint'][:12]}"]
    for module, digest in code["files"].items():
        lines.append(f"            {digest[:12]}  {_shown(code['paths'][module])}")
    for dist, version in code["packages"].items():
        lines.append(f"            {dist}=={version}")
    for name, value in code["depends"].items():
        lines.append(f"            {name} {value if value in ('unset', 'missing') else value[:12]}")
    return lines


def _shown(path: str) -> str:
    """A path under the working directory relative to it (as the user would type it)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _verdict(plan: dict[str, int], nearest: dict[str, Any] | None) -> str:
    total = plan["total"]
    parts = []
    if plan["recorded"]:
        parts.append(f"{plan['recorded']}/{total} runs already recorded in this config")
    reused = plan["recorded"] + plan["rescore"]
    if plan["rescore"]:
        why = "; ".join(nearest["rescore"]) if nearest and nearest["rescore"] else ""
        parts.append(
            f"would reuse {reused}/{total} rollouts; rescore {plan['rescore']} runs"
            + (f": {why}" if why else "")
        )
    if plan["compute"]:
        why = "; ".join(nearest["compute"]) if nearest and nearest["compute"] else ""
        if nearest is None:
            why = "nothing stored for this dataset"
        parts.append(f"compute {plan['compute']} runs" + (f": {why}" if why else ""))
    return "; ".join(parts) if parts else "nothing to run"
