"""What ``osmo fsck`` checks of the eval layout beyond objects and reachability: that each
config's version 3 finished samples find their rollout in the config's ``rollouts``
manifest (objects_spec.md section 9), since they do not name it themselves. A sample that
does not is as lost to ``osmo eval show`` and to a merge as a missing object would be.

Damage below the manifests (a missing or corrupt node or blob) is the object check's to
report: it is skipped here, not reported twice.
"""

from __future__ import annotations

import json

from ..errors import CorruptObject, MalformedObject, ObjectNotFound
from ..objects import ObjectType
from ..repo import Repository
from ..tree import TreeReader, iter_tree
from .configstate import EVAL_REF_PREFIX, ConfigState
from .stored import SAMPLE_VERSION, parse_rollout

_DAMAGE = (CorruptObject, MalformedObject, ObjectNotFound)


def check_rollouts(repo: Repository) -> list[str]:
    """One problem per finished version 3 sample whose ``rollouts`` entry is missing, is
    not a blob, or names a blob that is not a rollout; each names the config and entry."""
    problems: list[str] = []
    objects = repo.objects
    for ref, run_id in sorted(repo.refs.list(EVAL_REF_PREFIX).items()):
        try:
            state = ConfigState.from_run(repo, run_id)
            reader = TreeReader(objects, max_bytes=1 << 20)
            for e in iter_tree(objects, state.trees["samples"]):
                problem = _problem(repo, reader, state.trees["rollouts"], e.name, e.oid)
                if problem:
                    problems.append(f"{ref}: samples/{e.name}: {problem}")
        except _DAMAGE:
            continue
    return problems


def _problem(repo: Repository, reader: TreeReader, rollouts: str, name: str, oid: str) -> str:
    try:
        body = json.loads(repo.objects.get_typed(oid, ObjectType.BLOB))
    except (*_DAMAGE, ValueError, UnicodeDecodeError):
        return ""  # not a sample blob at all: the readers name it, fsck --full its damage
    if not isinstance(body, dict) or body.get("schema") != SAMPLE_VERSION or "error" in body:
        return ""
    entry = reader.get(rollouts, name)
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
