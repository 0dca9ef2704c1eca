"""The stored eval configs: listing (from run records only, never samples), finding by
id prefix, history, and removal."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ..errors import (
    AmbiguousId,
    AmbiguousLabel,
    ConfigNotFound,
    ConfigRunning,
    CorruptRef,
    LabelTaken,
    UsageError,
)
from ..hashing import MIN_PREFIX_LEN, ObjectId
from ..objects import RunRecord
from ..repo import Repository
from .configstate import EVAL_REF_PREFIX, config_ref, is_eval_running
from .stored import load_eval_record

STATUSES = ("in_progress", "completed", "interrupted", "partial")


class ConfigInfo(NamedTuple):
    """A config as listed: the fields a listing shows, taken from its run record's metadata
    (a few KB parsed, per config, let go at once); ``meta`` is the whole metadata only when
    asked for (``list_configs(full=True)``: identity, provenance)."""

    config_id: str
    run_id: ObjectId
    status: str
    model: str
    dataset: str
    counts: dict[str, int]  # total, done, failed
    score: float | None
    updated: float
    label: str | None
    eval_fns: tuple[str, ...]  # the eval functions' names (``fns.py:exact`` -> ``exact``)
    n: int | None
    params: dict[str, Any]  # sampling parameters as given, and max_turns
    meta: dict[str, Any] | None = None

    @classmethod
    def from_meta(
        cls, config_id: str, run_id: ObjectId, meta: dict[str, Any], status: str, *, full: bool
    ) -> ConfigInfo:
        c = meta.get("config") or {}
        model = c.get("model")
        if model and c.get("model_id") and c["model_id"] != model:
            model = f"{model} [{c['model_id']}]"  # the identity that tells it apart
        if c.get("agent"):
            model = f"{c['agent']}" + (f" ({model})" if model else "")
        params = dict(c.get("params") or {})
        if c.get("max_turns") is not None:
            params["max_turns"] = c["max_turns"]
        counts = meta.get("counts") or {}
        return cls(
            config_id,
            run_id,
            status,
            model or "-",
            c.get("dataset") or "-",
            {k: counts[k] for k in ("total", "done", "failed") if k in counts},
            _score(meta),
            float((meta.get("session") or {}).get("updated") or 0),
            meta.get("label"),
            tuple(s.rpartition(":")[2] for s in c.get("eval_fns") or []),
            c.get("n"),
            params,
            meta if full else None,
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
    label: str | None = None,
    full: bool = False,
) -> list[ConfigInfo]:
    """Configs newest first; filters are case-insensitive substrings (status: exact). Each
    run record is read, reduced to what a listing shows, and let go: memory is a few
    hundred bytes per config, whatever its records hold. ``full``: each keeps its whole
    metadata (identity, provenance) instead."""
    out = []
    for name, run_id in repo.refs.list(EVAL_REF_PREFIX).items():
        record = load_eval_record(repo, run_id)
        config_id = name[len(EVAL_REF_PREFIX) :]
        st = config_status(repo, config_id, record.meta)
        info = ConfigInfo.from_meta(config_id, run_id, record.meta, st, full=full)
        del record
        if model and model.lower() not in info.model.lower():
            continue
        if dataset and dataset.lower() not in info.dataset.lower():
            continue
        if status and st != status:
            continue
        if label and label.lower() not in (info.label or "").lower():
            continue
        out.append(info)
    out.sort(key=lambda c: c.updated, reverse=True)
    return out


def config_status(repo: Repository, config_id: str, meta: dict[str, Any]) -> str:
    """The status a run record says, except that an eval "in progress" whose process is
    gone (kill -9, power loss) was interrupted."""
    st = meta.get("status", "?")
    if st == "in_progress" and not is_eval_running(repo, config_id):
        return "interrupted"
    return st


def check_eval_refs(repo: Repository) -> None:
    """Stop at a damaged config ref. The ref store lists only refs that hold an id, so a
    damaged one would pass for a removed (or unknown) config instead of a damaged one."""
    for name in repo.refs.damaged():
        if name.startswith(EVAL_REF_PREFIX):
            raise CorruptRef(name, "does not hold an object id")


def find_config(repo: Repository, text: str) -> str:
    """A config id from a unique prefix (>= 4 chars), a full id, or else the config's label
    (exactly as given to ``osmo eval --label`` or ``osmo eval label``)."""
    t = text.lower()
    if t.startswith(EVAL_REF_PREFIX):
        t = t[len(EVAL_REF_PREFIX) :]
    matches = [n[len(EVAL_REF_PREFIX) :] for n in repo.refs.list(EVAL_REF_PREFIX)]
    matches = [m for m in matches if m.startswith(t)] if len(t) >= MIN_PREFIX_LEN else []
    if not matches:
        # Read every config's record only now: an id is the common case, and costs none.
        named = [info.config_id for info in list_configs(repo) if info.label == text]
        if len(named) > 1:
            raise AmbiguousLabel(text, named)
        if not named and 0 < len(t) < MIN_PREFIX_LEN and all(c in "0123456789abcdef" for c in t):
            raise ConfigNotFound(text, hint="an id prefix needs at least 4 hex characters")
        if not named:
            raise ConfigNotFound(text)
        return named[0]
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
        record = load_eval_record(repo, oid)
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
        if repo.layout is not None:  # what a crashed eval of it journaled goes too
            import shutil  # here: `eval cache ls` starts without it (bz2, lzma)

            shutil.rmtree(repo.layout.journal(cid), ignore_errors=True)
    if config_ids:
        # Imported here: the recorder's module (and the merge it builds on) is most of what
        # `osmo eval cache ls` would otherwise load at start-up, for the one command that
        # needs it.
        from .state import rebuild_index

        rebuild_index(repo)
    return len(config_ids)


MAX_LABEL_CHARS = 100


def check_label(label: str) -> str:
    """A config's name: one line of printable text (empty: no name), which ``find_config``
    can find: not 4 or more hex digits, which it would take for an id prefix first."""
    label = label.strip()
    if len(label) > MAX_LABEL_CHARS or not label.isprintable():
        raise UsageError(f"a label is one line of at most {MAX_LABEL_CHARS} printable characters")
    if len(label) >= MIN_PREFIX_LEN and all(c in "0123456789abcdefABCDEF" for c in label):
        raise UsageError(
            f"label {label!r} looks like a config id prefix, which would be looked up first",
            hint=f"add a character other than 0-9 and a-f, such as run-{label}",
        )
    return label


def check_label_free(repo: Repository, label: str, config_id: str) -> None:
    """Refuse ``label`` for ``config_id`` when it names another config."""
    for other in _labelled(repo, label):
        if other != config_id:
            raise LabelTaken(label, other)


def _labelled(repo: Repository, label: str) -> list[str]:
    return [info.config_id for info in list_configs(repo) if info.label == label]


def set_label(repo: Repository, config_id: str, label: str, *, force: bool = False) -> ObjectId:
    """Name a config (an empty label removes its name): a run record like its latest one,
    with the label, on top of it (so ``osmo log`` shows when it was named). Refuses a config
    whose eval is running: that eval writes the config's records. A label that names
    another config is refused (``LabelTaken``), or with ``force`` moved: taken from the
    other first, so that at no point two configs have it."""
    label = check_label(label)
    if is_eval_running(repo, config_id):
        raise ConfigRunning(f"config {config_id[:12]} has an eval running; label it after, "
                            "or name it with osmo eval --label")  # fmt: skip
    ref = config_ref(config_id)
    head = repo.refs.read(ref)
    if head is None:
        raise ConfigNotFound(config_id)
    if label and force:
        for other in _labelled(repo, label):
            if other != config_id:
                set_label(repo, other, "")
    elif label:
        check_label_free(repo, label, config_id)
    record = repo.objects.get_run(head)
    meta = {k: v for k, v in record.meta.items() if k != "label"}
    if label:
        meta["label"] = label
    new = repo.objects.put_run(RunRecord(record.tree, (head,), meta))
    repo.update_ref(ref, new, head, message=f"eval label {label!r}")
    return new


def dataset_label(path: str) -> str:
    return Path(path).name if path and path != "-" else "-"
