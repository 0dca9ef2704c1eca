"""Layer 5: verify a store. Every object's hash, every pack's checksums, and that
everything reachable from refs and reflogs exists and is well-formed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..backends.base import ObjectStore
from ..errors import CorruptObject, MalformedObject, ObjectNotFound
from ..hashing import ObjectId, oid_from_raw
from ..repo import Repository
from ..tree import check_structure
from .idset import IdSet
from .reachability import Walk, ref_roots, walk

# Objects read between two calls of the store's ``release_memory``.
_RELEASE_EVERY = 256


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    objects_checked: int = 0
    content_bytes: int = 0
    reachable: int = 0
    dangling: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck(
    repo: Repository, *, full: bool = False, progress: Callable[[int], None] | None = None
) -> FsckReport:
    """Check every stored object's hash (loose and packed) and the connectivity of refs and
    reflogs. ``full`` also parses every object (not just reachable ones), re-hashes whole
    pack and index files, counts dangling objects and reports leftover temp files."""
    report = FsckReport()
    objects = repo.objects
    stored = IdSet()
    corrupt: dict[ObjectId, str] = {}
    for oid in objects.iter_ids():
        stored.add(oid)
        try:
            otype, content = objects.get(oid)
        except CorruptObject as e:
            corrupt[oid] = str(e)
            continue
        except ObjectNotFound:
            # Listed, yet not found where the listing came from: a damaged pack index
            # (storage_problems below names it). Checking goes on with the next object.
            report.problems.append(f"object {oid} is listed but cannot be found")
            continue
        report.objects_checked += 1
        report.content_bytes += len(content)
        if full:
            try:
                check_structure(otype, content)
            except MalformedObject as e:
                report.problems.append(f"malformed {otype} {oid}: {e}")
        if progress is not None:
            progress(report.objects_checked)
        if report.objects_checked % _RELEASE_EVERY == 0:
            objects.release_memory()  # the index pages every look-up maps
    objects.release_memory()
    problems, notes = objects.storage_problems(full=full)
    objects.release_memory()
    report.problems.extend(problems)
    report.notes.extend(notes)

    for name in repo.refs.damaged():
        report.problems.append(f"ref {name} does not hold an object id")
    # Primary refs first, derived ones (the eval lookup index) and reflogs after: messages
    # then name the config and entry that hold a damaged object.
    roots = dict(
        sorted(
            ref_roots(repo.refs).items(),
            key=lambda kv: (kv[1].endswith("(reflog)"), kv[1].startswith("refs/cache/")),
        )
    )
    stored.freeze()
    result = walk(objects, roots, check=True, watch=set(corrupt), blobs_known=True)
    missing = _missing(objects, result, stored)
    if missing:
        # Found by comparing sets, so not yet said what reaches them: walk once more for that.
        where = walk(objects, roots, check=True, watch=missing, blobs_known=True).where
        for oid in sorted(missing):
            via = where.get(oid, ["?"])[0]
            result.problems.append(f"missing blob {oid} (reachable from {via})")
    # Say what a damaged object is (which ref, which manifest entry) unless the walk has.
    for oid, message in corrupt.items():
        if not any(oid in p for p in result.problems):
            where = "; ".join(result.where.get(oid, []))
            report.problems.append(
                f"{message} (reachable from {where})" if where else f"{message} (unreachable)"
            )
    report.problems.extend(result.problems)
    report.reachable = len(result.reachable)
    if full:
        report.dangling = sum(
            len(stored.bucket(b) - result.reachable.bucket(b)) for b in range(256)
        )
    return report


def _missing(objects: ObjectStore, result: Walk, stored: IdSet) -> set[ObjectId]:
    """Blobs the walk reached that are not stored (each object the walk read is stored, or
    has its problem reported already). Looked up once more: an object written after we
    listed the store is not missing."""
    out = set()
    for b in range(256):
        for raw in result.reachable.bucket(b) - stored.bucket(b):
            oid = oid_from_raw(raw)
            if not any(oid in p for p in result.problems) and not objects.has(oid):
                out.add(oid)
    return out
