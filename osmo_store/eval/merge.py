"""Merging two histories of one eval config, as two machines (or shards) leave them.

The merged state is the union of both sides' results. Where both hold a result for the
same run, a success beats a failure, then the later ``finished`` wins, then the larger
blob id (a total order, so the choice never depends on which side is "ours"). This makes
the merge of manifests commutative, associative and idempotent. ``finished`` is compared in
whole seconds, the resolution every sample version keeps: a version 3 blob truncates it,
and a version 1 or 2 blob's milliseconds would otherwise let a result up to a second older
beat a version 3 one of the same second. The ``cache`` entry of a
rollout follows the winning sample (it is that sample's rollout); other conflicting cache
entries (the same model call made on both machines) keep the larger blob id.

Where the sides' entries for a rollout key differ, each is a rollout of that key (a rollout
blob holds its key, so no other key names it), so the winning sample's rollout says which to
keep: a sample need not repeat its rollout's key (versions 2 and 3 do not). A version 3
sample does not name its rollout either: the ``rollouts`` entry of the side that holds it
does, and the merged ``rollouts`` follows the winning samples.
"""

from __future__ import annotations

import time
from typing import Any

from ..hashing import ObjectId
from ..objects import ObjectType, RunRecord
from ..refs import default_who
from ..repo import Repository
from ..sync.transfer import is_ancestor
from ..tree import TreeEntry, iter_tree, tree_count, write_tree
from .configstate import EVAL_REF_PREFIX, SUBTREES, ConfigState
from .stored import SampleReader, load_eval_record, load_sample
from .summary import primary_value, summarize


def _entries(repo: Repository, tree: ObjectId) -> dict[str, ObjectId]:
    return {e.name: e.oid for e in iter_tree(repo.objects, tree)}


def _rank(reader: SampleReader, name: str, oid: ObjectId, ok: bool) -> tuple[bool, int, str]:
    body = reader.load(oid, name)
    # Truncated as ``sample_blob`` writes a version 3 time (the reader has checked it is a
    # finite number).
    return (ok, int(body.get("finished") or 0), oid)


def merge_trees(
    repo: Repository, a: dict[str, ObjectId], b: dict[str, ObjectId]
) -> dict[str, dict[str, ObjectId]]:
    """Merge two configs' subtrees (name -> tree id); returns name -> {entry -> blob id}."""
    sides = [{name: _entries(repo, trees[name]) for name in SUBTREES} for trees in (a, b)]
    readers = [SampleReader(repo, trees) for trees in (a, b)]
    out: dict[str, dict[str, ObjectId]] = {name: {} for name in SUBTREES}
    keys = set()
    for side in sides:
        keys |= side["samples"].keys() | side["failed"].keys()
    winning_rollouts: set[ObjectId] = set()  # of results that beat another one
    for key in keys:
        held: dict[tuple[ObjectId, bool], int] = {}  # result -> a side holding it
        for i, side in enumerate(sides):
            for sub in ("samples", "failed"):
                if key in side[sub]:
                    held.setdefault((side[sub][key], sub == "samples"), i)
        if len(held) == 1:
            ((oid, ok),) = held
        else:
            oid, ok = max(held, key=lambda c: _rank(readers[held[c]], key, c[0], c[1]))
        out["samples" if ok else "failed"][key] = oid
        if not ok:
            continue
        # The winning sample's rollout: where both sides hold that sample blob (version 3
        # blobs of equal results repeat) with different rollouts, the larger id, as for
        # cache entries. A version 1 or 2 blob names its own (no ``rollouts`` entry).
        holders = [i for i, side in enumerate(sides) if side["samples"].get(key) == oid]
        rollouts = {sides[i]["rollouts"][key] for i in holders if key in sides[i]["rollouts"]}
        if rollouts:
            out["rollouts"][key] = max(rollouts)
        if len(held) > 1 or len(rollouts) > 1:
            rollout_id = (max(rollouts) if rollouts
                          else readers[holders[0]].load(oid, key).get("rollout_id"))  # fmt: skip
            if rollout_id:
                winning_rollouts.add(rollout_id)
    for name in ("cache", "rows"):
        merged: dict[str, ObjectId] = {}
        for side in sides:
            for k, v in side[name].items():
                merged[k] = _pick(merged[k], v, winning_rollouts) if k in merged else v
        out[name] = merged
    return out


def _pick(a: ObjectId, b: ObjectId, winning: set[ObjectId]) -> ObjectId:
    """One of two entries for a key: the winning sample's rollout, else the larger id."""
    if (a in winning) != (b in winning):
        return a if a in winning else b
    return max(a, b)


def merge_configs(
    repo: Repository, ours: ObjectId, theirs: ObjectId, *, who: str | None = None
) -> ObjectId:
    """A run record whose state is the merge of two histories of one config: ``ours`` if
    it already contains ``theirs`` (or the other way round), else a new record with both
    as parents (in id order) and the merge recorded in its metadata."""
    if is_ancestor(repo, theirs, ours):
        return ours
    if is_ancestor(repo, ours, theirs):
        return theirs
    ra, rb = load_eval_record(repo, ours), load_eval_record(repo, theirs)
    sa, sb = ConfigState.from_run(repo, ours), ConfigState.from_run(repo, theirs)
    merged = merge_trees(repo, sa.trees, sb.trees)
    with repo.objects.bulk() as w:
        subtrees = {
            name: write_tree(w, (TreeEntry(k, ObjectType.BLOB, v) for k, v in merged[name].items()))
            for name in SUBTREES
        }
        root = write_tree(w, [TreeEntry(n, ObjectType.TREE, subtrees[n]) for n in SUBTREES])
        failed = tree_count(w, subtrees["failed"])
        done = tree_count(w, subtrees["samples"]) + failed
        meta = _merged_meta(repo, ra.meta, rb.meta, merged, done, failed, (ours, theirs), who)
        return w.put(
            ObjectType.RUN, RunRecord(root, tuple(sorted((ours, theirs))), meta).to_content()
        )


def _merged_meta(
    repo: Repository,
    a: dict[str, Any],
    b: dict[str, Any],
    merged: dict[str, dict[str, ObjectId]],
    done: int,
    failed: int,
    parents: tuple[ObjectId, ObjectId],
    who: str | None,
) -> dict[str, Any]:
    newer = (
        a
        if (a.get("session", {}).get("updated") or 0) >= (b.get("session", {}).get("updated") or 0)
        else b
    )
    meta = {k: v for k, v in newer.items() if k not in ("summary", "session", "score")}
    label = newer.get("label") or a.get("label") or b.get("label")
    if label:
        meta["label"] = label  # named on one machine only: the name is kept
    if a.get("isolated") or b.get("isolated"):
        meta["isolated"] = True  # a --fresh start on either side goes on computing anew
    total = int(newer.get("counts", {}).get("total") or done)
    if done >= total:
        status = "completed"
    elif "partial" in (a.get("status"), b.get("status")):
        status = "partial"  # finished shards, waiting for the others
    else:
        status = "interrupted"
    samples = [
        load_sample(repo, oid, key)
        for name in ("samples", "failed")
        for key, oid in merged[name].items()
    ]
    config = newer.get("config", {})
    identity = newer.get("identity", {})
    primary = None
    if identity.get("eval_fns"):
        names = config.get("eval_fns") or []
        primary = names[0].rpartition(":")[2] if names else identity["eval_fns"][0]["attr"]
    summary = summarize(
        samples,
        n=int(identity.get("n") or config.get("n") or 1),
        pass_threshold=float(config.get("pass_threshold") or 1.0),
        primary=primary,
    )
    # The running score's terms, as the eval keeps them (so its next session's score
    # covers the merged runs too).
    values = [primary_value(s.get("scores") or {}, primary) for s in samples]
    values = [v for v in values if v is not None]
    now = round(time.time(), 3)
    if isinstance(meta.get("config"), dict):
        meta["config"] = {**meta["config"], "shard": None}  # the merge covers every shard given
    meta.update(
        status=status,
        counts={
            "total": total,
            "done": done,
            "failed": failed,
            "primary_sum": float(sum(values)),
            "primary_count": len(values),
        },
        score=sum(values) / len(values) if values else None,
        summary=summary,
        session={
            "started": now,
            "updated": now,
            "merged": list(parents),
            "merged_by": who or default_who(),
            "reused_samples": done,
            "reused_rollouts": 0,
            "computed": 0,
            "model_calls": 0,
            "retried_attempts": 0,
            "failed_attempts": 0,
            "failed_calls": 0,
        },
    )
    return meta


def merge_eval_ref(
    repo: Repository, name: str, ours: ObjectId, theirs: ObjectId
) -> ObjectId | None:
    """The sync layer's merge hook: eval config refs merge, other refs do not."""
    if not name.startswith(EVAL_REF_PREFIX):
        return None
    return merge_configs(repo, ours, theirs)
