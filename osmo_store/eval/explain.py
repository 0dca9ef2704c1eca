"""``osmo eval explain``: what a config's keys are made of, and what a run of it would reuse.

Runs nothing and writes nothing. It lists every key component with its value or fingerprint,
plans the run as ``run_eval`` would (runs recorded in the config, rollouts found in the store
to rescore, the rest to compute), and compares the config with the nearest stored config of
the same dataset to say why the rest misses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ObjectNotFound
from ..repo import Repository
from .catalog import ConfigInfo, list_configs
from .config import KEY_SCHEMA_VERSION, CodeRef, EvalConfig, rollout_key
from .configstate import ConfigState
from .prepare import PreparedEval
from .state import IndexReader, sample_name


def explain_eval(repo: Repository, prepared: PreparedEval) -> dict[str, Any]:
    config = prepared.config
    own = ConfigState.load(repo, config.config_id)
    nearest = _nearest(repo, prepared)
    return {
        "config_id": config.config_id,
        "key_schema": KEY_SCHEMA_VERSION,
        "stored": own.run_id is not None,
        "components": components(prepared),
        "plan": _plan(repo, prepared, own),
        "nearest": nearest,
    }


def components(prepared: PreparedEval) -> dict[str, Any]:
    """Every part of the config's key, as it is hashed, with the files behind each code
    fingerprint."""
    config = prepared.config
    return {
        "model": config.model.identity() if config.model else None,
        "params": config.params.as_request_fields(),
        "max_turns": config.max_turns,
        "agent": _code(config.agent) if config.agent else None,
        "eval_fns": [_code(f) for f in config.eval_fns],
        "n": config.n,
        "dataset": {
            "path": str(prepared.dataset.path),
            "rows": len(prepared.dataset.rows),
            "fingerprint": config.dataset_fingerprint,
        },
    }


def _code(ref: CodeRef) -> dict[str, Any]:
    described = ref.code.describe() if ref.code else {"files": {}, "packages": {}}
    return {
        "spec": ref.spec,
        "attr": ref.attr,
        "fingerprint": ref.fingerprint,
        "files": {m: f["fingerprint"] for m, f in described["files"].items()},
        "paths": {m: f["path"] for m, f in described["files"].items()},
        "packages": described["packages"],
        "depends": dict(ref.depends),
    }


def _plan(repo: Repository, prepared: PreparedEval, own: ConfigState) -> dict[str, Any]:
    """What ``run_eval`` would do with each run: reuse it as recorded in this config, rescore
    a rollout found in the store, or compute it."""
    config = prepared.config
    recorded = own.names(repo, "samples") | own.names(repo, "failed")
    readers = [IndexReader(repo)]
    if own.run_id is not None:
        readers.insert(0, IndexReader(repo, only=own.trees["cache"]))
    counts = {"total": 0, "recorded": 0, "rescore": 0, "compute": 0}
    for row in prepared.dataset.rows:
        for i in range(config.n):
            counts["total"] += 1
            if sample_name(row.key, i) in recorded:
                counts["recorded"] += 1
            elif any(r.get(rollout_key(config, row.key, i)) for r in readers):
                counts["rescore"] += 1
            else:
                counts["compute"] += 1
    return counts


def _nearest(repo: Repository, prepared: PreparedEval) -> dict[str, Any] | None:
    """The stored config of the same dataset (same file content, or same path) that differs
    from this one in the fewest key components, newest first among equals; with what
    differs, split into what makes rollouts miss (``compute``) and what only rescores."""
    dataset = prepared.dataset
    best: tuple[int, dict[str, Any]] | None = None
    for info in list_configs(repo, full=True):
        prov = info.meta.get("provenance", {}).get("dataset", {})
        if prov.get("fingerprint") != dataset.fingerprint and info.dataset != str(dataset.path):
            continue
        found = _differences(repo, prepared, info)
        score = len(found["compute"]) + len(found["rescore"])
        if best is None or score < best[0]:
            best = (score, found)
    return best[1] if best else None


def _differences(repo: Repository, prepared: PreparedEval, info: ConfigInfo) -> dict[str, Any]:
    config = prepared.config
    theirs = info.meta.get("identity", {})
    code = info.meta.get("provenance", {}).get("code", {})
    compute: list[str] = []
    rescore: list[str] = []
    if theirs.get("schema") != KEY_SCHEMA_VERSION:
        compute.append(f"key schema {theirs.get('schema')} -> {KEY_SCHEMA_VERSION}")
    mine_solver = config.solver_identity()
    their_solver = theirs.get("solver", {})
    if mine_solver.get("model") != their_solver.get("model"):
        compute.append(
            f"model {_model(their_solver.get('model'))} -> {_model(mine_solver.get('model'))}"
        )
    for name in ("params", "max_turns"):
        if mine_solver.get(name) != their_solver.get(name):
            compute.append(f"{name} {their_solver.get(name)} -> {mine_solver.get(name)}")
    mine_agent, their_agent = mine_solver.get("agent"), their_solver.get("agent")
    if mine_agent != their_agent:
        compute.append(_code_change("agent", config.agent, their_agent, code))
    rescore += _eval_fn_changes(config, theirs.get("eval_fns", []), code)
    if config.n != theirs.get("n"):
        (compute if config.n > (theirs.get("n") or 0) else rescore).append(
            f"n {theirs.get('n')} -> {config.n}"
        )
    if config.dataset_fingerprint != theirs.get("dataset"):
        new_rows, dropped_rows = _row_changes(repo, prepared, info)
        compute += new_rows
        rescore += dropped_rows
    return {
        "config_id": info.config_id,
        "status": info.status,
        "runs": info.counts.get("total"),
        "compute": [c for c in compute if c],
        "rescore": rescore,
    }


def _model(identity: Mapping[str, Any] | None) -> str:
    if not identity:
        return "none"
    where = identity.get("endpoint_id") or identity.get("endpoint") or identity.get("model_id")
    return f"{identity.get('model', '?')} @ {where}"


def _code_change(
    what: str, ref: CodeRef | None, theirs: Mapping[str, Any] | None, code: Mapping[str, Any]
) -> str:
    if ref is None:
        return f"{what} removed"
    if not theirs:
        return f"{what} {ref.spec} added"
    if theirs.get("attr") != ref.attr:
        return f"{what} {theirs.get('attr')} -> {ref.attr}"
    if theirs.get("code") == ref.fingerprint:
        changed = sorted(
            k for k in {*ref.identity().get("depends", {}), *theirs.get("depends", {})}
            if ref.identity().get("depends", {}).get(k) != theirs.get("depends", {}).get(k)
        )  # fmt: skip
        return f"{what} {ref.attr} declared {', '.join(changed)} changed"
    return f"{what} {ref.attr} changed ({_changed_files(ref, code)})"


def _changed_files(ref: CodeRef, code: Mapping[str, Any]) -> str:
    """The files whose fingerprints differ from those the stored config's provenance lists
    for the same function (matched by attribute), as paths relative to here."""
    stored = next(
        (c.get("files") for spec, c in code.items() if spec.rpartition(":")[2] == ref.attr), None
    )
    if not stored or ref.code is None:
        return "code"
    mine = {f.module: f for f in ref.code.files}
    names = [
        _shown(mine[m].path) if m in mine else m
        for m in sorted({*mine, *stored})
        if m not in stored or m not in mine or stored[m].get("fingerprint") != mine[m].digest
    ]
    if not names:  # the same files: an installed package moved
        return "installed packages"
    return ", ".join(names)


def _shown(path: str) -> str:
    rel = os.path.relpath(path)
    return Path(path).name if rel.startswith("..") else rel


def _eval_fn_changes(
    config: EvalConfig, theirs: list[dict[str, Any]], code: Mapping[str, Any]
) -> list[str]:
    by_attr = {f.get("attr"): f for f in theirs}
    out = []
    for ref in config.eval_fns:
        old = by_attr.pop(ref.attr, None)
        if old is None:
            out.append(f"eval fn {ref.attr} added")
        elif old != ref.identity():
            out.append(_code_change("eval fn", ref, old, code))
    out += [f"eval fn {attr} removed" for attr in sorted(by_attr)]
    return out


def _row_changes(
    repo: Repository, prepared: PreparedEval, info: ConfigInfo
) -> tuple[list[str], list[str]]:
    """Rows it lacks (computed) and rows of its that are not selected (a new config of the
    rest: its rollouts are rescored)."""
    try:
        theirs = ConfigState.from_run(repo, info.run_id).names(repo, "rows")
    except ObjectNotFound:
        return ["rows changed"], []
    mine = {r.key for r in prepared.dataset.rows}
    new = [f"{len(mine - theirs)} rows not in it"] if mine - theirs else []
    dropped = [f"{len(theirs - mine)} of its rows not selected"] if theirs - mine else []
    return new, dropped
