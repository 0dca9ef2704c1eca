"""``osmo eval show CONFIG [--row KEY|INDEX | --failed] [--json]``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..eval.catalog import check_eval_refs, config_status, find_config
from ..eval.failures import describe_cause, group_failures
from ..eval.results import SampleRef, StoredConfig
from ..repo import Repository
from .common import out
from .summarytext import print_failures, print_scores

_LABEL = 9  # width of the labels in the left column ("config   ", "scores   ")


def open_config(repo: Repository, text: str) -> StoredConfig:
    """The config a user named by id or prefix (a damaged ref stops here, never passing
    for an unknown config)."""
    check_eval_refs(repo)
    return StoredConfig(repo, find_config(repo, text))


def cmd_show(args: argparse.Namespace, repo: Repository) -> int:
    stored = open_config(repo, args.config)
    if args.row is not None:
        views = [stored.view(ref, calls=True) for ref in stored.find(args.row)]
        if args.json:
            _json({"config_id": stored.config_id, "samples": views})
        else:
            for i, v in enumerate(views):
                if i:
                    out("")
                _print_sample(stored, v)
        return 0
    if args.failed:
        failed = [_failed_entry(stored, ref) for ref in stored.refs(failed_only=True)]
        if args.json:
            _json({"config_id": stored.config_id, "failed": failed})
        else:
            _print_failed(stored, failed)
        return 0
    status = config_status(repo, stored.config_id, stored.meta)
    if args.json:
        m = stored.meta
        _json({"config_id": stored.config_id, "run": stored.run_id, "status": status,
               "label": m.get("label"), "config": m.get("config"), "identity": m.get("identity"),
               "counts": m.get("counts"), "session": m.get("session"),
               "summary": stored.summary})  # fmt: skip
        return 0
    _print_config(stored, status)
    return 0


def describe_solver(given: dict[str, Any]) -> str:
    """``model NAME @ URL`` or ``agent SPEC / NAME``, as a config was given."""
    if given.get("agent"):
        return f"agent    {given['agent']}" + (f" / {given['model']}" if given.get("model") else "")
    url = f" @ {given['base_url']}" if given.get("base_url") else ""
    return f"model    {given.get('model') or '-'}{url}"


def describe_params(given: dict[str, Any]) -> str:
    params = dict(given.get("params") or {})
    if given.get("max_turns"):
        params["max_turns"] = given["max_turns"]
    return ", ".join(f"{k} {v}" for k, v in sorted(params.items())) or "-"


def _print_config(stored: StoredConfig, status: str) -> None:
    m, s = stored.meta, stored.summary
    given = m.get("config") or {}
    counts = m.get("counts") or {}
    updated = (m.get("session") or {}).get("updated")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(updated)) if updated else "-"
    label = f"  label {m['label']}" if m.get("label") else ""
    out(f"config   {stored.config_id[:12]}  ({status})  run {stored.run_id[:12]}  "
        f"updated {when}{label}")  # fmt: skip
    out(describe_solver(given))
    out(f"eval fns {', '.join(given.get('eval_fns') or []) or '-'}")
    out(f"dataset  {given.get('dataset', '-')}  ({given.get('rows', '?')} rows x "
        f"n={given.get('n', '?')})")  # fmt: skip
    out(f"params   {describe_params(given)}")
    if not s:
        done = f"{counts.get('done', 0)}/{counts.get('total', 0)}"
        out(f"runs     {done} recorded, {counts.get('failed', 0)} failed (no summary yet: "
            "the eval did not finish)")  # fmt: skip
        return
    ok = s["runs"] - s["failed"]
    out(f"runs     {counts.get('done', s['runs'])}/{counts.get('total', s['runs'])} recorded: "
        f"{ok} ok, {s['failed']} failed, {s['scoring_errors']} with scoring errors")  # fmt: skip
    print_scores(s)
    print_failures(_with_groups(stored, s), stored.config_id)


def _with_groups(stored: StoredConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with its failure groups; a summary recorded before summaries had them
    gets them from the samples."""
    if "failure_groups" in summary or not (summary.get("failed") or summary.get("scoring_errors")):
        return summary
    groups = group_failures(sample for _, sample in stored.samples())
    return {**summary, "failure_groups": groups["failures"],
            "scoring_error_groups": groups["scoring_errors"]}  # fmt: skip


def _print_sample(stored: StoredConfig, v: dict[str, Any]) -> None:
    where = f"row {v['index']}, run {v['run']}" if v["index"] is not None else f"run {v['run']}"
    out(f"sample   {v['row'][:12]}.{v['run']}  ({where})  {v['status']}")
    data = v["data"] or {}
    fields = {k.lower(): k for k in data}
    meta = {k: val for k, val in data.items() if k.lower() not in _PROMPT_COLUMNS}
    if "ground_truth" in fields:
        out(f"ground truth  {_scalar(data[fields['ground_truth']])}")
    if meta:
        out(f"metadata {json.dumps(meta, ensure_ascii=False, sort_keys=True)}")
    messages = v["messages"]
    if messages is None:
        out("prompt   (the run failed: the row's prompt)")
        messages = _prompt_of(data, fields)
    else:
        out("conversation")
    for msg in messages:
        _print_message(msg)
    if v["scores"]:
        out("scores   " + ", ".join(f"{k} {_scalar(x)}" for k, x in sorted(v["scores"].items())))
    for fn, message in sorted(v["scoring_errors"].items()):
        out(f"scoring error  {fn}: {message}")
    if v["error"]:
        out(f"error    {describe_cause(v['error'])}")
    usage = v["usage"] or {}
    out("usage    " + (", ".join(f"{k} {x}" for k, x in sorted(usage.items())) or "-"))
    calls = v.get("calls") or []
    out(f"calls    {len(calls)}" + (":" if calls else ""))
    for c in calls:
        attempts = c.get("attempts")
        tries = f", {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
        out(f"  {c['id'][:12]}  {c.get('latency_s', 0):.2f}s{tries}")


_PROMPT_COLUMNS = {"user_prompt", "system_prompt", "messages", "ground_truth"}


def _prompt_of(data: dict[str, Any], fields: dict[str, str]) -> list[dict[str, Any]]:
    if "messages" in fields:
        return list(data[fields["messages"]])
    msgs = []
    if "system_prompt" in fields and data[fields["system_prompt"]]:
        msgs.append({"role": "system", "content": data[fields["system_prompt"]]})
    if "user_prompt" in fields:
        msgs.append({"role": "user", "content": data[fields["user_prompt"]]})
    return msgs


def _print_message(msg: dict[str, Any]) -> None:
    content = msg.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    text = str(content or "")
    if msg.get("tool_calls"):
        text += (" " if text else "") + json.dumps(msg["tool_calls"], ensure_ascii=False)
    lines = text.splitlines() or [""]
    out(f"  {msg.get('role', '?')}: {lines[0]}")
    for line in lines[1:]:
        out(f"    {line}")


def _scalar(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k} {_scalar(v)}" for k, v in sorted(x.items())) + "}"
    return str(x) if isinstance(x, (int, str)) else json.dumps(x, ensure_ascii=False)


def _failed_entry(stored: StoredConfig, ref: SampleRef) -> dict[str, Any]:
    sample = stored.sample(ref)
    return {"index": ref.index, "row": ref.row, "run": ref.run, "error": sample.get("error")}


def _print_failed(stored: StoredConfig, failed: list[dict[str, Any]]) -> None:
    if not failed:
        out(f"config {stored.config_id[:12]} has no failed runs")
        return
    for f in failed:
        index = "-" if f["index"] is None else str(f["index"])
        out(f"{index:>6}  {f['row'][:12]}.{f['run']}  {describe_cause(f['error'] or {})}")
    out(f"{len(failed)} failed; one in full: osmo eval show {stored.config_id[:12]} --row "
        f"{failed[0]['row'][:12]}.{failed[0]['run']}")  # fmt: skip


def _json(obj: Any) -> None:
    out(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True))


def cmd_label(args: argparse.Namespace, repo: Repository) -> int:
    from ..eval.catalog import set_label

    check_eval_refs(repo)
    config_id = find_config(repo, args.config)
    set_label(repo, config_id, args.name, force=args.force)
    name = args.name.strip()
    out(f"config {config_id[:12]} " + (f"labelled {name!r}" if name else "has no label now"))
    return 0
