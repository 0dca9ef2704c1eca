"""Layer 6: moving objects and refs between stores (push, fetch, pull, clone).

Any two stores can sync: the local one and a *remote* (another store directory, an
``osmo serve`` over HTTP, or an S3 bucket), all behind the same ObjectStore/RefStore
protocol. A transfer learns what the receiver lacks in batches (``missing`` over a whole
frontier of ids, never one request per object), prunes every subtree the receiver already
has, and sends children before parents (blobs first, then tree nodes and run records in
post-order), so the receiver never holds an object whose closure it lacks, even when the
transfer is cut off. Refs move last, by compare-and-swap.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.base import ObjectStore
from ..errors import CorruptObject, PushRejected, RefConflict, RemoteError, UsageError
from ..hashing import ObjectId, blake3_hex
from ..objects import ObjectType, RunRecord, verify_framed
from ..refs import default_who, validate_ref_name
from ..repo import Repository
from ..tree import Internal, Leaf, decode_node
from .remotes import Remote, add_remote, open_remote

#: refs never pushed or fetched by default: remote-tracking refs, and derived caches
LOCAL_ONLY_PREFIXES = ("refs/remotes/", "refs/cache/")
#: objects read at once while walking what the receiver lacks
READ_CHUNK = 2000
#: most objects and framed bytes sent as one batch (one pack at the receiver): few, large
#: packs each train one dictionary (a directory remote that got 2,000-object batches held
#: 1.05x the sender's pack bytes, a 64 KiB dictionary per small pack)
CHUNK_OBJECTS = 20_000
CHUNK_BYTES = 32 * 2**20


#: merge(repo, ref name, ours, theirs) -> merged id, or None when that ref does not merge
MergeFn = Callable[[Repository, str, ObjectId, ObjectId], "ObjectId | None"]
#: called with the names of refs a sync created or moved in a store (e.g. to update indexes)
UpdatedFn = Callable[[Repository, list[str]], None]


def is_ancestor(
    repo: Repository, ancestor: ObjectId, descendant: ObjectId, limit: int = 100_000
) -> bool:
    """Whether ``ancestor`` is ``descendant`` or reachable from it through run-record
    parents (for other objects only equality counts)."""
    if ancestor == descendant:
        return True
    seen = {descendant}
    stack = [descendant]
    while stack and len(seen) <= limit:
        otype, content = repo.objects.get(stack.pop())
        if otype is not ObjectType.RUN:
            continue
        for p in RunRecord.from_content(content).parents:
            if p == ancestor:
                return True
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return False


def default_refs(refs: dict[str, ObjectId], prefix: str) -> list[str]:
    return [n for n in refs if n.startswith(prefix) and not n.startswith(LOCAL_ONLY_PREFIXES)]


# --- moving objects ---------------------------------------------------------------------


@dataclass
class Transfer:
    objects: int = 0
    bytes: int = 0  # the objects' framed (uncompressed) bytes
    total: int = 0


Progress = Callable[[Transfer], None]


def _children(otype: ObjectType, content: bytes) -> list[tuple[ObjectId, ObjectType | None]]:
    if otype is ObjectType.TREE:
        node = decode_node(content)
        if isinstance(node, Leaf):
            return [(e.oid, e.type) for e in node.entries]
        assert isinstance(node, Internal)
        return [(cid, ObjectType.TREE) for _, cid, _ in node.children]
    if otype is ObjectType.RUN:
        record = RunRecord.from_content(content)
        return [(record.tree, ObjectType.TREE), *((p, ObjectType.RUN) for p in record.parents)]
    return []


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def copy_closure(
    src: ObjectStore,
    dst: ObjectStore,
    tips: Iterable[ObjectId],
    *,
    progress: Progress | None = None,
) -> Transfer:
    """Copy everything reachable from ``tips`` that ``dst`` lacks. An object ``dst`` has is
    taken to come with its closure (the invariant every writer keeps), so its subtree is
    not walked."""
    seen: set[ObjectId] = set()
    frontier: list[tuple[ObjectId, ObjectType | None]] = [(t, None) for t in tips]
    blobs: list[ObjectId] = []
    nodes: dict[ObjectId, tuple[bytes, list[ObjectId]]] = {}
    while frontier:
        batch = []
        for oid, hint in frontier:
            if oid not in seen:
                seen.add(oid)
                batch.append((oid, hint))
        missing: set[ObjectId] = set()
        for chunk in _chunks([oid for oid, _ in batch], 10_000):
            missing.update(dst.missing(chunk))
        blobs.extend(oid for oid, hint in batch if oid in missing and hint is ObjectType.BLOB)
        to_read = [oid for oid, hint in batch if oid in missing and hint is not ObjectType.BLOB]
        frontier = []
        for chunk in _chunks(to_read, READ_CHUNK):
            for oid, data in src.get_many_framed(chunk):
                otype, content = verify_framed(oid, data)  # verified on the way
                kids = _children(otype, content)
                nodes[oid] = (data, [k for k, _ in kids])
                frontier.extend(kids)
    order = _post_order(nodes)
    report = Transfer(total=len(blobs) + len(order))
    # Blobs, then nodes children first, cut into batches in that order: each batch is
    # published whole, so the receiver never holds a parent without its children.
    objects = itertools.chain(src.get_many_framed(blobs), ((o, nodes[o][0]) for o in order))
    for batch in _batches(objects):
        _send(dst, batch, report, progress)
    if report.objects:
        dst.after_bulk_write()  # each chunk arrived as a pack of its own
    return report


@contextmanager
def _reading(remote: Remote) -> Iterator[None]:
    """Copying from ``remote``: an object that fails its checks (a damaged one, or one
    declaring more than a remote's objects may hold) is named with the remote it came from,
    not taken for damage here (nothing of it is stored)."""
    try:
        yield
    except CorruptObject as e:
        where = f"{remote.label} ({e.where})" if e.where else remote.label
        raise CorruptObject(e.oid, e.reason, where=where) from None


def _batches(items: Iterable[tuple[ObjectId, bytes]]) -> Iterator[list[tuple[ObjectId, bytes]]]:
    batch: list[tuple[ObjectId, bytes]] = []
    size = 0
    for oid, data in items:
        if batch and (len(batch) >= CHUNK_OBJECTS or size + len(data) > CHUNK_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((oid, data))
        size += len(data)
    if batch:
        yield batch


def _send(
    dst: ObjectStore, items: Iterable[tuple[ObjectId, bytes]], report: Transfer, progress
) -> None:
    """Objects in their framed form: sync moves them so (a version 2 pack reads them so
    without recompressing; the receiver verifies each, and packs it with its own
    dictionary)."""
    batch = list(items)
    for oid, framed in batch:
        # What a remote takes, any reader of it must be able to fetch back: each reads an
        # object to the bound a store read from elsewhere has (``max_object_size``).
        if len(framed) > dst.max_object_size:
            raise RemoteError(
                f"object {oid} is {len(framed)} bytes (framed), more than the "
                f"{dst.max_object_size} an object read from a remote may be",
                hint="it cannot be synced: leave the refs that reach it out of the push",
            )
    dst.put_many_framed(batch)
    report.objects += len(batch)
    report.bytes += sum(len(d) for _, d in batch)
    if progress:
        progress(report)


def _post_order(nodes: dict[ObjectId, tuple[bytes, list[ObjectId]]]) -> list[ObjectId]:
    """Children before parents (iterative DFS)."""
    order: list[ObjectId] = []
    done: set[ObjectId] = set()
    for root in nodes:
        if root in done:
            continue
        stack = [(root, iter(nodes[root][1]))]
        done.add(root)
        while stack:
            oid, kids = stack[-1]
            for kid in kids:
                if kid in nodes and kid not in done:
                    done.add(kid)
                    stack.append((kid, iter(nodes[kid][1])))
                    break
            else:
                stack.pop()
                order.append(oid)
    return order


# --- refs: push, fetch, pull ----------------------------------------------------------


@dataclass
class SyncReport:
    transfer: Transfer = field(default_factory=Transfer)
    fetched: Transfer = field(default_factory=Transfer)  # by a push, to compare or merge
    updated: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def add(self, t: Transfer) -> None:
        self.transfer.objects += t.objects
        self.transfer.bytes += t.bytes
        self.transfer.total += t.total


def expand_refs(specs: Iterable[str], available: Iterable[str], prefix: str) -> list[str]:
    """Ref names from what a user typed: a full name, a name under refs/, or the last part
    (or a unique prefix of it, >= 4 chars) of a ref under ``prefix`` (an eval config id)."""
    names = sorted(set(available))
    out = []
    for spec in specs:
        if spec in names:
            out.append(spec)
            continue
        full = spec if spec.startswith("refs/") else "refs/" + spec
        if full in names:
            out.append(full)
            continue
        hits = [n for n in names if n.startswith(prefix) and n[len(prefix) :].startswith(spec)]
        if len(spec) >= 4 and len(hits) == 1:
            out.append(hits[0])
        elif len(hits) > 1 and len(spec) >= 4:
            raise UsageError(f"{spec!r} matches {len(hits)} refs; give more characters")
        else:
            raise UsageError(f"no ref matches {spec!r}")
    return out


def push(
    repo: Repository,
    remote: Remote,
    refs: list[str] | None = None,
    *,
    prefix: str = "refs/",
    force: bool = False,
    merge: MergeFn | None = None,
    on_updated: UpdatedFn | None = None,
    progress: Progress | None = None,
    attempts: int = 5,
) -> SyncReport:
    """Send ``refs`` (default: every ref under ``prefix``). A remote ref that moved since
    we last saw it is fetched and, where ``merge`` knows how, merged and pushed again;
    other refs that would not fast-forward need ``force``."""
    ours = repo.refs.list()
    names = expand_refs(refs, ours, prefix) if refs else default_refs(ours, prefix)
    report = SyncReport()
    pending = {n: repo.refs.read(n) for n in names}
    who = default_who()
    for _ in range(attempts):
        theirs = remote.refs.list()
        todo = {n: o for n, o in pending.items() if o is not None and theirs.get(n) != o}
        report.up_to_date += [n for n, o in pending.items() if o is not None and theirs.get(n) == o]
        if not todo:
            break
        report.add(copy_closure(repo.objects, remote.objects, todo.values(), progress=progress))
        retry: dict[str, ObjectId | None] = {}
        for name, new in todo.items():
            old = theirs.get(name)
            try:
                _push_one(repo, remote, name, new, old, force, merge, report, who, progress)
            except RefConflict:
                retry[name] = repo.refs.read(name)  # the remote moved meanwhile: again
        pending = retry
        if not pending:
            break
    else:
        raise RemoteError(f"{remote.label} kept moving; push gave up after {attempts} attempts")
    if on_updated is not None and remote.repo is not None:
        on_updated(remote.repo, report.created + report.updated + report.merged)
    return report


def _push_one(repo, remote, name, new, old, force, merge, report, who, progress) -> None:
    if old is None:
        remote.update_ref(name, new, None, f"push by {who}")
        report.created.append(name)
        return
    if not repo.objects.has(old):
        # To compare (and maybe merge) we need theirs here; counted apart from what we send.
        with _reading(remote):
            got = copy_closure(remote.objects, repo.objects, [old])
        report.fetched.objects += got.objects
        report.fetched.bytes += got.bytes
    merged = None
    if is_ancestor(repo, new, old):
        report.up_to_date.append(name)  # the remote has ours already, and more
    elif is_ancestor(repo, old, new):
        remote.update_ref(name, new, old, f"push by {who}")
        report.updated.append(name)
    elif merge is not None and (merged := merge(repo, name, new, old)) is not None:
        if merged != new:
            repo.update_ref(name, merged, new, message=f"merge {remote.label}")
        report.add(copy_closure(repo.objects, remote.objects, [merged], progress=progress))
        remote.update_ref(name, merged, old, f"push (merged) by {who}")
        report.merged.append(name)
    elif force:
        remote.update_ref(name, new, old, f"forced push by {who}")
        report.updated.append(name)
    else:
        report.rejected.append(name)
        raise PushRejected(
            f"{name} on {remote.label} is not an ancestor of ours (non-fast-forward)",
            hint="pull first, or push --force to overwrite",
        )


def tracking_ref(remote: Remote, name: str) -> str:
    label = remote.name or "url-" + blake3_hex(remote.url.encode())[:8]
    return validate_ref_name(f"refs/remotes/{label}/{name.removeprefix('refs/')}")


def fetch(
    repo: Repository,
    remote: Remote,
    refs: list[str] | None = None,
    *,
    prefix: str = "refs/",
    progress: Progress | None = None,
) -> tuple[SyncReport, dict[str, ObjectId]]:
    """Copy the remote's refs under ``prefix`` (or ``refs``) and everything they reach;
    record where they pointed as ``refs/remotes/<remote>/...``.
    Returns (report, {name: remote id})."""
    theirs = remote.refs.list()
    names = expand_refs(refs, theirs, prefix) if refs else default_refs(theirs, prefix)
    wanted = {n: theirs[n] for n in names}
    report = SyncReport()
    with _reading(remote):
        got = copy_closure(remote.objects, repo.objects, wanted.values(), progress=progress)
    report.add(got)
    for name, oid in wanted.items():
        track = tracking_ref(remote, name)
        if repo.refs.read(track) != oid:
            repo.update_ref(track, oid, message=f"fetch {remote.label}")
    return report, wanted


def pull(
    repo: Repository,
    remote: Remote,
    refs: list[str] | None = None,
    *,
    prefix: str = "refs/",
    merge: MergeFn | None = None,
    on_updated: UpdatedFn | None = None,
    progress: Progress | None = None,
) -> SyncReport:
    """Fetch, then bring each local ref up to date: create, fast-forward, or merge (where
    ``merge`` knows how); a ref that diverged and cannot merge is reported rejected."""
    report, wanted = fetch(repo, remote, refs, prefix=prefix, progress=progress)
    changed = []
    for name, theirs in wanted.items():
        for _ in range(5):
            ours = repo.refs.read(name)
            try:
                if ours is None:
                    repo.update_ref(name, theirs, None, message=f"pull {remote.label}")
                    report.created.append(name)
                elif is_ancestor(repo, theirs, ours):
                    report.up_to_date.append(name)
                elif is_ancestor(repo, ours, theirs):
                    msg = f"pull {remote.label} (fast-forward)"
                    repo.update_ref(name, theirs, ours, message=msg)
                    report.updated.append(name)
                elif merge is not None and (merged := merge(repo, name, ours, theirs)) is not None:
                    repo.update_ref(name, merged, ours, message=f"pull {remote.label} (merge)")
                    report.merged.append(name)
                else:
                    report.rejected.append(name)
                break
            except RefConflict:
                continue  # a local eval moved the ref meanwhile: look again
        if name not in report.up_to_date and name not in report.rejected:
            changed.append(name)
    if on_updated is not None:
        on_updated(repo, changed)
    return report


def clone(
    url: str,
    path: Path,
    *,
    prefix: str = "refs/",
    merge: MergeFn | None = None,
    on_updated: UpdatedFn | None = None,
    progress: Progress | None = None,
) -> tuple[Repository, SyncReport]:
    """A new store at ``path`` with ``url`` as remote ``origin``, holding all its refs."""
    from ..repo import init_store

    target = Path(path).expanduser()
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not empty")
    init_store(target)
    repo = Repository.open(target)
    try:
        add_remote(repo, "origin", url)
        remote = open_remote(repo, "origin")
        try:
            report = pull(repo, remote, prefix=prefix, merge=merge, on_updated=on_updated,
                          progress=progress)  # fmt: skip
        finally:
            remote.close()
    except BaseException:
        repo.close()
        raise
    return repo, report
