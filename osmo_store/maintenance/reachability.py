"""Layer 5: what refs and reflogs reach. Shared by fsck (which checks as it walks) and gc
(which must know everything reachable before it deletes anything)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import tree
from ..backends.base import ObjectStore
from ..errors import CorruptObject, MalformedObject, ObjectNotFound, OsmoError
from ..hashing import ObjectId
from ..objects import ObjectType, RunRecord
from ..refs import RefStore
from ..tree import Internal, Leaf, _nibble, decode_node, name_hash, node_targets
from .idset import IdSet


def ref_roots(refs: RefStore, reflog_cutoff_ns: int | None = None) -> dict[ObjectId, str]:
    """Every id a ref or a reflog entry (newer than the cutoff, if given) names, with the
    name of one ref that reaches it, for messages."""
    roots: dict[ObjectId, str] = {}
    for name, oid in refs.list().items():
        roots.setdefault(oid, name)
    for name in refs.reflog_names():
        for e in refs.reflog(name):
            if reflog_cutoff_ns is not None and e.time_ns < reflog_cutoff_ns:
                continue
            for oid in (e.old, e.new):
                if oid is not None:
                    roots.setdefault(oid, f"{name} (reflog)")
    return roots


@dataclass
class Walk:
    #: everything reached (frozen when the walk returns)
    reachable: IdSet = field(default_factory=IdSet)
    problems: list[str] = field(default_factory=list)
    content_bytes: int = 0
    #: for each watched id reached: how (a ref, then manifest entry names), up to 3 ways
    where: dict[ObjectId, list[str]] = field(default_factory=dict)


# Objects read between two calls of the store's ``release_memory`` (a walk of a big store
# would otherwise keep every page of every pack index it looked in mapped).
_RELEASE_EVERY = 16

# A stack item: (id, expected type or None, tree position or None, where it was reached from)
# Tree position: (depth, hash-prefix nibbles, expected entry count or None).
_Pos = tuple[int, tuple[int, ...], "int | None"]


def walk(
    objects: ObjectStore,
    roots: dict[ObjectId, str] | Iterable[ObjectId],
    *,
    check: bool = False,
    watch: set[ObjectId] | frozenset[ObjectId] = frozenset(),
    seen: IdSet | None = None,
    blobs_known: bool = False,
) -> Walk:
    """Mark everything reachable from ``roots``.

    With ``check=False`` (gc) a missing or unreadable object raises at once: gc cannot know
    what such an object would have kept alive, so it must not delete anything. With
    ``check=True`` (fsck) problems are collected and the walk goes on; blobs are checked for
    existence (unless ``blobs_known``: fsck checks them all at once against the stored ids)
    and tree nodes for their placement in the trie, and the ids in ``watch`` get the path
    that reaches them (``refs/evals/X: samples/<row>.0``) in ``where``. ``seen`` (frozen by
    an earlier walk) is not walked again, and is what the result's ``reachable`` grows."""
    if not isinstance(roots, dict):
        roots = {oid: "root" for oid in roots}
    result = Walk() if seen is None else Walk(reachable=seen)
    marks = result.reachable
    earlier = marks.frozen
    # What this walk has read (trees, run records), and blobs it looked up: few next to the
    # blobs, which are only marked (a blob that several trees name is marked again, not
    # looked for first; the marks drop repeats when frozen).
    walked: set[ObjectId] = set()
    look_up_blobs = check and not blobs_known
    # Reversed: the first roots (refs, before reflog entries) are walked first.
    stack: list[tuple[ObjectId, ObjectType | None, _Pos | None, str]] = [
        (oid, None, None, via) for oid, via in reversed(roots.items())
    ]
    while stack:
        oid, etype, pos, via = stack.pop()
        if oid in watch and len(paths := result.where.setdefault(oid, [])) < 3:
            paths.append(via)
        if oid in walked or (earlier and oid in marks):
            continue
        if etype is ObjectType.BLOB:
            # Leaves need no reading: nothing hangs below a blob.
            marks.add(oid)
            if look_up_blobs:
                walked.add(oid)
                if not objects.has(oid):
                    result.problems.append(f"missing blob {oid} (reachable from {via})")
            continue
        walked.add(oid)
        marks.add(oid)
        if len(walked) % _RELEASE_EVERY == 0:
            objects.release_memory()
        try:
            otype, content = objects.get(oid)
            if etype is not None and otype is not etype:
                raise MalformedObject(f"expected a {etype}, found a {otype}")
            result.content_bytes += len(content)
            if otype is ObjectType.TREE and not check:
                stack.extend((t, ot, None, via) for t, ot in node_targets(content))
            elif otype is ObjectType.TREE:
                node = decode_node(content)
                if pos is None:
                    pos = (0, (), None)
                _check_placement(node, pos)
                _push_tree_children(stack, node, pos, via)
            elif otype is ObjectType.RUN:
                record = RunRecord.from_content(content)
                stack.append((record.tree, ObjectType.TREE, None, via))
                stack.extend((p, ObjectType.RUN, None, via) for p in record.parents)
        except ObjectNotFound:
            if not check:
                raise OsmoError(
                    f"object {oid} reachable from {via} is missing; gc stopped without deleting",
                    hint="run: osmo fsck",
                ) from None
            result.problems.append(f"missing {etype or 'object'} {oid} (reachable from {via})")
        except (CorruptObject, MalformedObject) as e:
            if not check:
                raise OsmoError(
                    f"{e} (reachable from {via}); gc stopped without deleting",
                    hint="run: osmo fsck",
                ) from None
            result.problems.append(f"{e} (reachable from {via})")
    objects.release_memory()
    marks.freeze()
    return result


def _push_tree_children(stack: list, node: Leaf | Internal, pos: _Pos, via: str) -> None:
    depth, prefix, _ = pos
    if isinstance(node, Leaf):
        sep = "/" if ": " in via else ": "
        for e in node.entries:
            # An entry of type tree is a nested manifest: the root of a trie of its own.
            stack.append((e.oid, e.type, None, f"{via}{sep}{e.name}"))
    else:
        for nib, cid, count in node.children:
            stack.append((cid, ObjectType.TREE, (depth + 1, (*prefix, nib), count), via))


def _check_placement(node: Leaf | Internal, pos: _Pos) -> None:
    depth, prefix, expected_count = pos
    if node.depth != depth:
        raise MalformedObject(f"tree node at depth {depth} says depth {node.depth}")
    count = len(node.entries) if isinstance(node, Leaf) else node.count
    if expected_count is not None and count != expected_count:
        raise MalformedObject(f"tree node holds {count} entries, its parent says {expected_count}")
    if isinstance(node, Internal) and node.count <= tree.LEAF_MAX:
        raise MalformedObject("internal tree node small enough to be a leaf")
    if isinstance(node, Leaf) and prefix:
        for e in node.entries:
            h = name_hash(e.name.encode("utf-8"))
            if tuple(_nibble(h, d) for d in range(len(prefix))) != prefix:
                raise MalformedObject(f"tree entry {e.name!r} is in the wrong trie bucket")
