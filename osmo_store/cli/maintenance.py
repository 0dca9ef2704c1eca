"""Maintenance commands: fsck, repack, cache gc, cache stats."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..maintenance import DEFAULT_PRUNE, DEFAULT_REFLOG_EXPIRE
from .common import EXIT_ERROR, err, human_bytes, out

if TYPE_CHECKING:
    from ..repo import Repository

# Each command imports its part of the library when it runs: `eval cache ls` builds this
# module's arguments (for `eval cache gc`) but never runs gc.


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("fsck", parents=[common], help="verify every object and what refs reach")
    p.add_argument(
        "--full",
        action="store_true",
        help="also parse unreachable objects, re-hash pack files, count dangling objects",
    )
    p.set_defaults(func=cmd_fsck)

    p = sub.add_parser(
        "repack",
        parents=[common],
        help="move loose objects into a pack",
        description="Move loose objects into one new pack. A store of format version 1 is "
        "upgraded to version 2 first (packs with a shared zstd dictionary; osmo versions "
        "that read only version 1 then refuse the store).",
    )
    p.add_argument(
        "-a",
        "--all",
        dest="all_packs",
        action="store_true",
        help="also fold every existing pack into the new one (rewriting version 1 packs "
        "in the current pack format, version 2)",
    )
    p.set_defaults(func=cmd_repack)


def register_cache(cache_sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = cache_sub.add_parser(
        "gc", parents=[common], help="delete what no ref, reflog entry or live writer reaches"
    )
    add_gc_arguments(p)
    p.set_defaults(func=cmd_gc)

    p = cache_sub.add_parser(
        "stats",
        parents=[common],
        help="objects, packs and bytes stored, per kind of object (calls, rollouts, samples, ...)",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_stats)


def add_gc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", "-n", action="store_true", help="report, delete nothing")
    p.add_argument(
        "--prune",
        metavar="AGE",
        default=DEFAULT_PRUNE,
        help=f"only delete unreachable objects older than AGE (default {DEFAULT_PRUNE}: "
        "live writers are safe anyway; forms: 30m, 12h, 14d, 2.weeks.ago, never)",
    )
    p.add_argument(
        "--expire-reflog",
        metavar="AGE",
        default=DEFAULT_REFLOG_EXPIRE,
        help=f"drop reflog entries older than AGE first (default {DEFAULT_REFLOG_EXPIRE}; never)",
    )
    p.add_argument(
        "--ignore-damaged-refs",
        action="store_true",
        help="go ahead past refs that hold no id (fsck lists them): what only they reach "
        "is deleted",
    )


def cmd_fsck(args: argparse.Namespace, repo: Repository) -> int:
    from ..eval.evalcheck import check_rollouts
    from ..maintenance.fsck import fsck

    report = fsck(repo, full=args.full)
    report.problems.extend(check_rollouts(repo))
    for p in report.problems:
        out(f"error: {p}")
    for n in report.notes:
        out(f"note: {n}")
    summary = (
        f"checked {report.objects_checked} objects ({human_bytes(report.content_bytes)}), "
        f"{report.reachable} reachable"
    )
    if args.full:
        summary += f", {report.dangling} dangling"
    if report.problems:
        err(f"{summary}: {len(report.problems)} problem(s)")
        return EXIT_ERROR
    out(f"{summary}: ok")
    return 0


def cmd_repack(args: argparse.Namespace, repo: Repository) -> int:
    from ..maintenance.gc import repack

    r = repack(repo, all_packs=args.all_packs)
    if r.upgraded:
        out("upgraded the store to format version 2: an osmo that reads only version 1 "
            "cannot open it now")  # fmt: skip
    for e in r.damaged:
        err(f"error: {e} (not packed, left where it is)")
    out(
        f"packed {r.objects_packed} objects, removed {r.loose_removed} loose files; "
        f"packs: {r.packs_before} -> {r.packs_after}"
    )
    if r.damaged:
        err(f"{len(r.damaged)} damaged object(s) left unpacked; see: osmo fsck")
        return EXIT_ERROR
    return 0


def cmd_gc(args: argparse.Namespace, repo: Repository) -> int:
    from ..maintenance.gc import gc

    r = gc(
        repo,
        prune=args.prune,
        reflog_expire=args.expire_reflog,
        dry_run=args.dry_run,
        ignore_damaged_refs=args.ignore_damaged_refs,
    )
    if r.damaged_refs:
        out(f"went ahead without {len(r.damaged_refs)} damaged ref(s): {', '.join(r.damaged_refs)}")
    verb = "would remove" if r.dry_run else "removed"
    out(
        f"{verb} {r.objects_removed} objects, {human_bytes(r.bytes_freed)} "
        f"({r.bytes_freed} bytes); {r.reachable} reachable objects kept"
    )
    extras = []
    if r.reflog_entries_expired:
        extras.append(f"{r.reflog_entries_expired} reflog entries expired")
    if r.temp_files_removed:
        extras.append(f"{r.temp_files_removed} stale temporary files")
    if r.packs_rewritten:
        extras.append(f"{r.packs_rewritten} packs rewritten")
    if extras:
        out(("would also: " if r.dry_run else "also: ") + ", ".join(extras))
    return 0


def cmd_stats(args: argparse.Namespace, repo: Repository) -> int:
    from ..eval.objectkinds import object_kinds
    from ..maintenance.gc import stats

    s = stats(repo)
    kinds = object_kinds(repo)
    body = {
        "path": str(repo.path),
        "objects": s.objects,
        "loose_objects": s.loose_objects,
        "packs": s.packs,
        "packed_objects": s.packed_objects,
        "bytes_stored": s.stored_bytes,
        "bytes_uncompressed": s.content_bytes,
        "ratio": round(s.ratio, 3),
        "kinds": {
            name: {
                "objects": k.objects,
                "logical_bytes": k.logical_bytes,
                "stored_bytes": k.stored_bytes,
                "disk_bytes": k.disk_bytes,
                "ratio": round(k.ratio, 3),
            }
            for name, k in kinds.items()
        },
    }
    if args.json:
        out(json.dumps(body, indent=2))
        return 0
    out(f"store:               {repo.path}")
    where = f"{s.loose_objects} loose, {s.packed_objects} in {s.packs} packs"
    out(f"objects:             {s.objects} ({where})")
    out(f"bytes stored:        {human_bytes(s.stored_bytes)} ({s.stored_bytes})")
    out(f"before compression:  {human_bytes(s.content_bytes)} ({s.content_bytes})")
    out(f"compression ratio:   {s.ratio:.2f}x")
    out("")
    out(f"{'kind':<12} {'objects':>9} {'logical':>11} {'stored':>11} {'on disk':>11} {'ratio':>6}")
    for name, k in kinds.items():
        ratio = f"{k.ratio:.2f}x" if k.objects else "-"
        out(
            f"{name:<12} {k.objects:>9} {human_bytes(k.logical_bytes):>11} "
            f"{human_bytes(k.stored_bytes):>11} {human_bytes(k.disk_bytes):>11} {ratio:>6}"
        )
    return 0
