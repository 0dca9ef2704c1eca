"""Layer 5: verify a store. Every object's hash, every pack's checksums, and that
everything reachable from refs and reflogs exists and is well-formed."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backends.local import LocalObjectStore
from ..errors import CorruptObject, MalformedObject
from ..hashing import ObjectId
from ..repo import Repository
from ..tree import check_structure
from .reachability import ref_roots, walk


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
    ids = set()
    corrupt: dict[ObjectId, str] = {}
    for oid in objects.iter_ids():
        ids.add(oid)
        try:
            otype, content = objects.get(oid)
        except CorruptObject as e:
            corrupt[oid] = str(e)
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
    if isinstance(objects, LocalObjectStore):
        _check_local(objects, report, full=full)

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
    result = walk(objects, roots, check=True, watch=set(corrupt))
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
        report.dangling = len(ids - result.reachable)
    return report


def _check_local(objects: LocalObjectStore, report: FsckReport, *, full: bool) -> None:
    objects.reload_packs()
    for pack in objects.packs():
        if full:
            report.problems.extend(pack.verify_checksums())
        else:
            size = os.stat(pack.pack_path).st_size
            end = max((off + ln for _, off, ln in pack.entries()), default=0)
            if size < end + 32:
                report.problems.append(f"{pack.pack_path.name}: pack is truncated")
    names = set(os.listdir(objects.pack_dir)) if objects.pack_dir.is_dir() else set()
    for name in sorted(names):
        if name.endswith(".pack") and name[:-5] + ".idx" not in names:
            report.notes.append(f"pack without index (unpublished or interrupted): {name}")
    if full:
        for d in objects.root.iterdir():
            if d.is_dir():
                for n in os.listdir(d):
                    if n.startswith(("tmp-", "gc-")):
                        report.notes.append(f"leftover temporary file: {d.name}/{n}")
