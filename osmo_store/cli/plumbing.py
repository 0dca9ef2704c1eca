"""Plumbing commands: init, hash-object, cat-file, ls-tree and the ref commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import MalformedObject, UsageError
from ..hashing import ZERO_ID
from ..objects import ObjectType, RunRecord, object_id
from ..refs import ANY
from ..repo import Repository, default_store_path, init_store
from ..tree import TreeEntry, check_structure, list_tree
from .common import format_time_ns, open_repo, out

_TYPES = [t.value for t in ObjectType]


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a store (default: the default store)")
    p.add_argument(
        "path", nargs="?", help="where to create it (default: --store or the default store)"
    )
    p.set_defaults(func=cmd_init, needs_repo=False)

    p = sub.add_parser("hash-object", parents=[common], help="compute object ids, optionally store")
    p.add_argument("-w", dest="write", action="store_true", help="write the objects to the store")
    p.add_argument(
        "-t", dest="type", choices=_TYPES, default="blob", help="object type (default blob)"
    )
    p.add_argument("--stdin", action="store_true", help="read the content from standard input")
    p.add_argument("files", nargs="*", metavar="FILE", help="files whose content to hash")
    p.set_defaults(func=cmd_hash_object, needs_repo=False)

    p = sub.add_parser("cat-file", parents=[common], help="show an object's content, type or size")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "-p", dest="mode", action="store_const", const="p", help="pretty-print content"
    )
    mode.add_argument("-t", dest="mode", action="store_const", const="t", help="print the type")
    mode.add_argument("-s", dest="mode", action="store_const", const="s", help="print the size")
    p.add_argument("id", metavar="ID", help="object id, unique prefix (>= 4 chars) or ref name")
    p.set_defaults(func=cmd_cat_file)

    p = sub.add_parser("ls-tree", parents=[common], help="list a manifest's entries")
    p.add_argument("-r", dest="recursive", action="store_true", help="recurse into nested trees")
    p.add_argument("id", metavar="ID", help="a tree, or a run record (lists its tree)")
    p.set_defaults(func=cmd_ls_tree)

    p = sub.add_parser("update-ref", parents=[common], help="move a ref (compare-and-swap)")
    p.add_argument("-m", dest="message", default="update-ref", help="reason, kept in the reflog")
    p.add_argument("name", metavar="NAME", help="ref name, e.g. refs/tags/best")
    p.add_argument("new", metavar="NEW", help="object the ref will point at")
    p.add_argument(
        "old", metavar="OLD", nargs="?", help="expected current value; 64 zeros: must not exist"
    )
    p.set_defaults(func=cmd_update_ref)

    p = sub.add_parser("delete-ref", parents=[common], help="delete a ref (its reflog is kept)")
    p.add_argument("-m", dest="message", default="delete-ref", help="reason, kept in the reflog")
    p.add_argument("name", metavar="NAME")
    p.add_argument("old", metavar="OLD", nargs="?", help="expected current value")
    p.set_defaults(func=cmd_delete_ref)

    p = sub.add_parser("show-ref", parents=[common], help="list refs and the ids they point at")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="only refs containing these")
    p.set_defaults(func=cmd_show_ref)

    p = sub.add_parser("reflog", parents=[common], help="show the history of a ref (or of all)")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.set_defaults(func=cmd_reflog)


def cmd_init(args: argparse.Namespace, repo: None) -> int:
    target = Path(args.path or args.store or default_store_path())
    path, created = init_store(target)
    out(f"{'Initialized empty' if created else 'Reinitialized existing'} osmo store in {path}")
    return 0


def _check_content(otype: ObjectType, content: bytes, source: str) -> None:
    try:
        check_structure(otype, content)
    except MalformedObject as e:
        raise UsageError(f"{source}: not a valid {otype}: {e}") from None


def cmd_hash_object(args: argparse.Namespace, repo: None) -> int:
    if args.stdin and args.files:
        raise UsageError("give --stdin or FILE arguments, not both")
    if not args.stdin and not args.files:
        raise UsageError("nothing to hash: give FILE arguments or --stdin")
    otype = ObjectType(args.type)
    sources: list[tuple[str, bytes]] = []
    if args.stdin:
        sources.append(("<stdin>", sys.stdin.buffer.read()))
    for f in args.files:
        try:
            sources.append((f, Path(f).read_bytes()))
        except OSError as e:
            raise UsageError(f"cannot read {f}: {e.strerror}") from None
    for name, content in sources:
        _check_content(otype, content, name)
    if not args.write:
        for _, content in sources:
            out(object_id(otype, content))
        return 0
    with open_repo(args) as r:
        ids = [r.objects.put(otype, c) for _, c in sources]
        r.objects.flush()
    for oid in ids:
        out(oid)
    return 0


def _pretty_tree_lines(entries: list[TreeEntry], prefix: str = "") -> list[str]:
    return [f"{e.type.value} {e.oid}\t{prefix}{e.name}" for e in entries]


def cmd_cat_file(args: argparse.Namespace, repo: Repository) -> int:
    oid = repo.resolve(args.id)
    otype, content = repo.objects.get(oid)
    if args.mode == "t":
        out(otype.value)
    elif args.mode == "s":
        out(str(len(content)))
    elif otype is ObjectType.BLOB:
        sys.stdout.flush()
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
    elif otype is ObjectType.TREE:
        for line in _pretty_tree_lines(list_tree(repo.objects, oid)):
            out(line)
    else:
        record = RunRecord.from_content(content)
        out(
            json.dumps(
                {"tree": record.tree, "parents": list(record.parents), "meta": record.meta},
                indent=2,
                ensure_ascii=False,
                sort_keys=True,
            )
        )
    return 0


def cmd_ls_tree(args: argparse.Namespace, repo: Repository) -> int:
    oid = repo.resolve(args.id)
    otype, content = repo.objects.get(oid)
    if otype is ObjectType.RUN:
        oid = RunRecord.from_content(content).tree
    elif otype is not ObjectType.TREE:
        raise UsageError(f"{args.id} is a {otype}, not a tree or run record")

    def walk(tree_id: str, prefix: str) -> None:
        for e in list_tree(repo.objects, tree_id):
            if args.recursive and e.type is ObjectType.TREE:
                walk(e.oid, f"{prefix}{e.name}/")
            else:
                out(f"{e.type.value} {e.oid}\t{prefix}{e.name}")

    walk(oid, "")
    return 0


def _expected(repo: Repository, old: str | None) -> object:
    if old is None:
        return ANY
    if old in ("", ZERO_ID):
        return None
    return repo.resolve(old)


def cmd_update_ref(args: argparse.Namespace, repo: Repository) -> int:
    new = repo.resolve(args.new)
    repo.update_ref(args.name, new, _expected(repo, args.old), message=args.message)
    return 0


def cmd_delete_ref(args: argparse.Namespace, repo: Repository) -> int:
    repo.delete_ref(args.name, _expected(repo, args.old), message=args.message)
    return 0


def cmd_show_ref(args: argparse.Namespace, repo: Repository) -> int:
    refs = repo.refs.list()
    if args.patterns:
        refs = {n: o for n, o in refs.items() if any(p in n for p in args.patterns)}
        if not refs:
            raise UsageError(f"no ref matches {' '.join(args.patterns)}")
    for name, oid in refs.items():
        out(f"{oid} {name}")
    return 0


def cmd_reflog(args: argparse.Namespace, repo: Repository) -> int:
    names = [args.name] if args.name else repo.refs.reflog_names()
    rows = []
    for name in names:
        log = repo.refs.reflog(name)
        if args.name and not log:
            raise UsageError(f"no reflog for {name}")
        for i, e in enumerate(reversed(log)):
            rows.append((e.time_ns, name, i, e))
    rows.sort(key=lambda r: r[0], reverse=True)
    for _, name, i, e in rows:
        target = (e.new or "(deleted)")[:12]
        out(f"{target} {name}@{{{i}}}: {format_time_ns(e.time_ns)} {e.who}: {e.message}")
    return 0
