"""What ``osmo fsck`` checks of the eval layout beyond objects and reachability: that each
config's version 3 finished samples find their rollout in the config's ``rollouts``
manifest (objects_spec.md section 9), since they do not name it themselves. A sample that
does not is as lost to ``osmo eval show`` and to a merge as a missing object would be.

Damage below the manifests (a missing or corrupt node or blob) is the object check's to
report: it is skipped here, not reported twice.
"""

from __future__ import annotations

import functools
import json

from ..errors import CorruptObject, MalformedObject, ObjectNotFound
from ..hashing import ObjectId
from ..objects import ObjectType
from ..repo import Repository
from ..tree import TreeReader, iter_tree, list_tree
from .configstate import EVAL_REF_PREFIX
from .stored import SAMPLE_VERSION, load_eval_record, parse_rollout

_DAMAGE = (CorruptObject, MalformedObject, ObjectNotFound)


def check_rollouts(repo: Repository) -> list[str]:
    """One problem per finished version 3 sample whose ``rollouts`` entry is missing, is
    not a blob, or names a blob that is not a rollout; each names the config and entry."""
    problems: list[str] = []
    objects = repo.objects
    for ref, run_id in sorted(repo.refs.list(EVAL_REF_PREFIX).items()):
        try:
            # The record's tree as it is (``ConfigState`` would store an empty manifest
            # for one it lacks: fsck writes nothing).
            trees = {e.name: e.oid for e in list_tree(objects, load_eval_record(repo, run_id).tree)
                     if e.type is ObjectType.TREE}  # fmt: skip
            if "samples" not in trees:
                continue
            reader = TreeReader(objects, max_bytes=1 << 20)
            # Runs with equal results share a version 3 blob: read each once (bounded).
            finished = functools.lru_cache(maxsize=4096)(lambda oid: _finished_v3(repo, oid))
            for e in iter_tree(objects, trees["samples"]):
                if not finished(e.oid):
                    continue
                problem = _problem(repo, reader, trees.get("rollouts"), e.name)
                if problem:
                    problems.append(f"{ref}: samples/{e.name}: {problem}")
        except _DAMAGE:
            continue
    return problems


def _finished_v3(repo: Repository, oid: ObjectId) -> bool:
    """Whether the blob ``oid`` is a finished run's version 3 sample (its rollout is then the
    ``rollouts`` entry of its name)."""
    try:
        body = json.loads(repo.objects.get_typed(oid, ObjectType.BLOB))
    except (*_DAMAGE, ValueError, UnicodeDecodeError):
        return False  # not a sample blob at all: the readers name it, fsck --full its damage
    return isinstance(body, dict) and body.get("schema") == SAMPLE_VERSION and "error" not in body


def _problem(repo: Repository, reader: TreeReader, rollouts: ObjectId | None, name: str) -> str:
    entry = reader.get(rollouts, name) if rollouts is not None else None
    if entry is None:
        return "a finished sample with no entry in the config's 'rollouts' manifest"
    if entry.type is not ObjectType.BLOB:
        return f"its 'rollouts' entry is a {entry.type}, not a rollout blob"
    try:
        parse_rollout(repo.objects.get_typed(entry.oid, ObjectType.BLOB), entry.oid)
    except ObjectNotFound:
        return f"its 'rollouts' entry names the missing blob {entry.oid}"
    except (CorruptObject, MalformedObject) as e:
        return f"its 'rollouts' entry is not a rollout ({e})"
    return ""
