"""Which stored objects are model calls, rollouts, samples, rows, tree nodes or run records,
for ``osmo cache stats``: a walk from every ref and reflog entry that knows the eval layout.

A config's run record names a tree of five manifests (``eval/state.py``): ``cache`` holds
rollouts (keys ``r...``) and model calls (keys ``c...``), ``samples`` and ``failed`` the
sample records, ``rows`` the dataset rows, ``rollouts`` each finished run's rollout (the same
blobs as ``cache``, counted once; its nodes are tree nodes, shared by the configs of one
solver). ``refs/cache/index`` is a manifest of ``cache``
entries. A blob reached any other way (a ref the user set) is ``other``. Ids go into
``IdSet``s (about 32 bytes an id): a store of a million objects is walked in bounded memory;
only the tree nodes and run records walked are kept as an ordinary set, to walk each once.
"""

from __future__ import annotations

from ..errors import CorruptObject, MalformedObject, ObjectNotFound
from ..hashing import ObjectId
from ..maintenance.footprint import KindBytes, footprint
from ..maintenance.idset import IdSet
from ..maintenance.reachability import ref_roots
from ..objects import ObjectType, RunRecord
from ..repo import Repository
from ..tree import Internal, Leaf, decode_node
from .configstate import SUBTREES
from .state import INDEX_REF

#: in the order an object reached in several ways is counted: once, as the first kind
KINDS = ("runs", "trees", "samples", "rows", "rollouts", "calls", "other")
_BLOB_KIND = {"samples": "samples", "failed": "samples", "rows": "rows", "rollouts": "rollouts"}


def _cache_kind(key: str) -> str:
    # Keys are made by eval/config.py: rollout_key ("r" + hash), call_key ("c" + hash).
    return {"r": "rollouts", "c": "calls"}.get(key[:1], "other")


def classify(repo: Repository) -> dict[str, IdSet]:
    """The ids of each kind (``KINDS``) that refs and reflog entries reach; frozen sets.
    Objects a ref names that are missing or damaged are skipped: fsck reports them."""
    kinds = {name: IdSet() for name in KINDS}
    walked: set[ObjectId] = set()
    # (id, subtree it lies in: None above or outside the eval manifests)
    stack: list[tuple[ObjectId, str | None]] = [
        (oid, "cache" if via == INDEX_REF else None) for oid, via in ref_roots(repo.refs).items()
    ]
    while stack:
        oid, subtree = stack.pop()
        if oid in walked:
            continue
        walked.add(oid)
        try:
            otype, content = repo.objects.get(oid)
            if otype is ObjectType.BLOB:
                kinds["other"].add(oid)  # a ref naming a blob: only entries classify one
            elif otype is ObjectType.RUN:
                kinds["runs"].add(oid)
                record = RunRecord.from_content(content)
                stack.append((record.tree, None))
                stack.extend((p, None) for p in record.parents)
            else:
                kinds["trees"].add(oid)
                stack.extend(_tree_children(kinds, decode_node(content), subtree))
        except (ObjectNotFound, CorruptObject, MalformedObject):
            continue
        if len(walked) % 64 == 0:
            repo.objects.release_memory()
    return {name: ids.freeze() for name, ids in kinds.items()}


def _tree_children(
    kinds: dict[str, IdSet], node: Leaf | Internal, subtree: str | None
) -> list[tuple[ObjectId, str | None]]:
    """Blobs of a node go straight into their kind; nodes and runs below it are returned."""
    if isinstance(node, Internal):
        return [(cid, subtree) for _, cid, _ in node.children]
    below = []
    for e in node.entries:
        if e.type is ObjectType.BLOB:
            if subtree == "cache":
                kinds[_cache_kind(e.name)].add(e.oid)
            else:
                kinds[_BLOB_KIND.get(subtree or "", "other")].add(e.oid)
        elif e.type is ObjectType.TREE:
            # A config's tree names its manifests; nested further down, keep the subtree.
            below.append((e.oid, e.name if subtree is None and e.name in SUBTREES else subtree))
        else:
            below.append((e.oid, None))
    return below


def object_kinds(repo: Repository) -> dict[str, KindBytes]:
    """Bytes per kind (``KINDS``, then ``unreachable`` and the packs' ``overhead``)."""
    return footprint(repo, classify(repo))
