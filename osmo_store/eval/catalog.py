"""The stored eval configs: listing (from run records only, never samples), finding by
id prefix, history, and removal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AmbiguousId, ConfigNotFound, ConfigRunning
from ..hashing import ObjectId
from ..objects import RunRecord
from ..repo import Repository
from .configstate import EVAL_REF_PREFIX, config_ref, is_eval_running

STATUSES = ("in_progress", "completed", "interrupted", "partial")


@dataclass(frozen=True, slots=True)
class ConfigInfo:
    """What a listing shows of a config: a few fields of its run record's metadata, not the
    metadata (a few KB parsed, per config)."""

    config_id: str
    run_id: ObjectId
    status: str
    model: str
    dataset: str
    counts: dict[str, Any]  # total, done, failed
    score: float | None
    updated: float

    @classmethod
    def from_meta(cls, config_id: str, run_id: ObjectId, meta: dict[str, Any], status: str):
        c = meta.get("config", {})
        if c.get("agent"):
            model = f"{c['agent']}" + (f" ({c['model']})" if c.get("model") else "")
        else:
            model = c.get("model") or "-"
        counts = meta.get("counts", {})
        return cls(
            config_id,
            run_id,
            status,
            model,
            c.get("dataset") or "-",
            {k: counts[k] for k in ("total", "done", "failed") if k in counts},
            _score(meta),
            float(meta.get("session", {}).get("updated") or 0),
        )


def _score(meta: dict[str, Any]) -> float | None:
    summary = meta.get("summary")
    if summary and summary.get("primary_metric") in summary.get("metrics", {}):
        return summary["metrics"][summary["primary_metric"]]["mean"]
    return meta.get("score")


def list_configs(
    repo: Repository,
    *,
    model: str | None = None,
    dataset: str | None = None,
    status: str | None = None,
) -> list[ConfigInfo]:
    """Configs newest first; filters are case-insensitive substrings (status: exact). Each
    run record is read, reduced to what a listing shows, and let go: memory is a few
    hundred bytes per config, whatever its records hold."""
    out = []
    for name, run_id in repo.refs.list(EVAL_REF_PREFIX).items():
        meta = repo.objects.get_run(run_id).meta
        st = meta.get("status", "?")
        config_id = name[len(EVAL_REF_PREFIX) :]
        if st == "in_progress" and not is_eval_running(repo, config_id):
            st = "interrupted"  # its process died (kill -9, power loss) mid-run
        info = ConfigInfo.from_meta(config_id, run_id, meta, st)
        del meta
        if model and model.lower() not in info.model.lower():
            continue
        if dataset and dataset.lower() not in info.dataset.lower():
            continue
        if status and st != status:
            continue
        out.append(info)
    out.sort(key=lambda c: c.updated, reverse=True)
    return out


def find_config(repo: Repository, text: str) -> str:
    """A config id from a unique prefix (>= 4 chars) or a full id."""
    t = text.lower()
    if t.startswith(EVAL_REF_PREFIX):
        t = t[len(EVAL_REF_PREFIX) :]
    matches = [n[len(EVAL_REF_PREFIX) :] for n in repo.refs.list(EVAL_REF_PREFIX)]
    matches = [m for m in matches if m.startswith(t)] if len(t) >= 4 else []
    if not matches:
        raise ConfigNotFound(text)
    if len(matches) > 1:
        raise AmbiguousId(text, matches)
    return matches[0]


def history(repo: Repository, config_id: str) -> list[tuple[ObjectId, RunRecord]]:
    """Run records of a config, newest first: every one its ref reaches through parents, so
    after a merge both machines' sessions are listed (as ``git log`` lists both sides)."""
    out = []
    head = repo.refs.read(config_ref(config_id))
    stack = [] if head is None else [head]
    seen = set(stack)
    while stack:
        oid = stack.pop()
        record = repo.objects.get_run(oid)
        out.append((oid, record))
        for parent in record.parents:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)

    def updated(item: tuple[ObjectId, RunRecord]) -> float:
        session = item[1].meta.get("session") or {}
        return float(session.get("updated") or session.get("started") or 0)

    out.sort(key=updated, reverse=True)  # stable: ties keep the walk's order
    return out


def remove_configs(repo: Repository, config_ids: list[str]) -> int:
    """Delete configs' refs and reflogs (so gc can free their data) and rebuild the shared
    lookup index without them. Refuses a config whose eval is running."""
    for cid in config_ids:
        if is_eval_running(repo, cid):
            raise ConfigRunning(f"config {cid[:12]} has an eval running; stop it first")
    for cid in config_ids:
        ref = config_ref(cid)
        repo.delete_ref(ref, message="eval cache rm")
        repo.refs.expire_reflog(ref, 1 << 62)
    if config_ids:
        # Imported here: the recorder's module (and the merge it builds on) is most of what
        # `osmo eval cache ls` would otherwise load at start-up, for the one command that
        # needs it.
        from .state import rebuild_index

        rebuild_index(repo)
    return len(config_ids)


def dataset_label(path: str) -> str:
    return Path(path).name if path and path != "-" else "-"
