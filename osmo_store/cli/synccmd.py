"""``osmo remote``, ``push``, ``fetch``, ``pull``, ``clone``: syncing stores."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..eval.merge import merge_eval_ref
from ..eval.state import EVAL_REF_PREFIX, refresh_index
from ..repo import STORE_VERSION, Repository, upgrade_store_format
from ..sync.remotes import add_remote, list_remotes, open_remote, remove_remote
from ..sync.transfer import SyncReport, Transfer, clone, fetch, pull, push
from .common import EXIT_ERROR, EXIT_OK, err, human_bytes, out

DEFAULT_REMOTE = "origin"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("remote", parents=[common], help="manage remotes: add, remove, list")
    rs = p.add_subparsers(dest="remote_command", metavar="COMMAND", required=True)
    a = rs.add_parser("add", parents=[common], help="add a remote")
    a.add_argument("name", metavar="NAME")
    a.add_argument(
        "url", metavar="URL", help="a path, file://, http(s):// (osmo serve) or s3://BUCKET/PREFIX"
    )
    a.add_argument(
        "--token-file", metavar="F", help="file holding the server token (else $OSMO_TOKEN)"
    )
    a.add_argument(
        "--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, Ceph, R2...)"
    )
    a.set_defaults(func=cmd_remote_add)
    r = rs.add_parser("remove", parents=[common], help="remove a remote")
    r.add_argument("name", metavar="NAME")
    r.set_defaults(func=cmd_remote_remove)
    ls = rs.add_parser("list", parents=[common], help="list remotes")
    ls.add_argument("-v", "--verbose", action="store_true", help="show URLs")
    ls.set_defaults(func=cmd_remote_list)

    p = sub.add_parser("push", parents=[common], help="send eval results to a remote")
    p.add_argument(
        "remote", metavar="REMOTE", nargs="?", help=f"name or URL (default {DEFAULT_REMOTE})"
    )
    p.add_argument(
        "refs", metavar="REF", nargs="*", help="refs or eval config ids (default: all evals)"
    )
    p.add_argument(
        "--force", action="store_true", help="overwrite remote refs that do not fast-forward"
    )
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "fetch", parents=[common], help="get a remote's eval results (tracking refs only)"
    )
    p.add_argument("remote", metavar="REMOTE", nargs="?")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("pull", parents=[common], help="fetch and merge a remote's eval results")
    p.add_argument("remote", metavar="REMOTE", nargs="?")
    p.add_argument("refs", metavar="REF", nargs="*")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("clone", parents=[common], help="a new store holding a remote's results")
    p.add_argument("url", metavar="URL")
    p.add_argument("path", metavar="PATH", nargs="?", help="where (default: the default store)")
    p.set_defaults(func=cmd_clone, needs_repo=False)


def _progress(label: str):
    if not sys.stderr.isatty():
        return None

    def show(t: Transfer) -> None:
        sys.stderr.write(f"\r\x1b[2K{label}: objects {t.objects}/{t.total}, {human_bytes(t.bytes)}")
        sys.stderr.flush()

    return show


def _summary(verb: str, where: str, report: SyncReport) -> None:
    if sys.stderr.isatty() and report.transfer.objects:
        sys.stderr.write("\n")
    t = report.transfer
    parts = [f"{verb} {t.objects} objects ({human_bytes(t.bytes)})", where]
    if report.created:
        parts.append(f"{len(report.created)} new")
    if report.updated:
        parts.append(f"{len(report.updated)} updated")
    if report.merged:
        parts.append(f"{len(report.merged)} merged")
    if report.up_to_date:
        parts.append(f"{len(report.up_to_date)} up to date")
    if report.fetched.objects:
        parts.append(f"fetched {report.fetched.objects} objects to compare")
    out(", ".join(parts))
    for name in report.rejected:
        err(f"rejected: {name} (diverged; not a mergeable eval ref)")


def _remote_spec(repo: Repository, given: str | None) -> str:
    if given:
        return given
    if DEFAULT_REMOTE in list_remotes(repo):
        return DEFAULT_REMOTE
    from ..errors import UsageError

    raise UsageError(
        "no remote given and no remote named origin", hint="osmo remote add origin URL"
    )


def cmd_remote_add(args: argparse.Namespace, repo: Repository) -> int:
    add_remote(
        repo, args.name, args.url, token_file=args.token_file, endpoint_url=args.endpoint_url
    )
    return 0


def cmd_remote_remove(args: argparse.Namespace, repo: Repository) -> int:
    remove_remote(repo, args.name)
    return 0


def cmd_remote_list(args: argparse.Namespace, repo: Repository) -> int:
    for name, entry in list_remotes(repo).items():
        out(f"{name}\t{entry['url']}" if args.verbose else name)
    return 0


def cmd_push(args: argparse.Namespace, repo: Repository) -> int:
    remote = open_remote(repo, _remote_spec(repo, args.remote), create=True)
    try:
        # A push may merge configs here and writes them there: both stores may then hold
        # what an older osmo must not resume (upgrade_store_format).
        upgrade_store_format(repo, STORE_VERSION)
        if remote.repo is not None:
            upgrade_store_format(remote.repo, STORE_VERSION)
        report = push(
            repo, remote, args.refs or None, prefix=EVAL_REF_PREFIX, force=args.force,
            merge=merge_eval_ref, on_updated=refresh_index, progress=_progress("push"),
        )  # fmt: skip
    finally:
        remote.close()
    _summary("pushed", f"to {remote.label}", report)
    return EXIT_ERROR if report.rejected else EXIT_OK


def cmd_fetch(args: argparse.Namespace, repo: Repository) -> int:
    remote = open_remote(repo, _remote_spec(repo, args.remote))
    try:
        report, _ = fetch(repo, remote, prefix=EVAL_REF_PREFIX, progress=_progress("fetch"))
    finally:
        remote.close()
    _summary("fetched", f"from {remote.label}", report)
    return 0


def cmd_pull(args: argparse.Namespace, repo: Repository) -> int:
    remote = open_remote(repo, _remote_spec(repo, args.remote))
    try:
        upgrade_store_format(repo, STORE_VERSION)  # as for a push
        report = pull(
            repo, remote, args.refs or None, prefix=EVAL_REF_PREFIX, merge=merge_eval_ref,
            on_updated=refresh_index, progress=_progress("pull"),
        )  # fmt: skip
    finally:
        remote.close()
    _summary("pulled", f"from {remote.label}", report)
    return EXIT_ERROR if report.rejected else EXIT_OK


def cmd_clone(args: argparse.Namespace, repo: None) -> int:
    from ..repo import default_store_path

    target = Path(args.path or args.store or default_store_path())
    cloned, report = clone(
        args.url, target, prefix=EVAL_REF_PREFIX, merge=merge_eval_ref, on_updated=refresh_index,
        progress=_progress("clone"),
    )  # fmt: skip
    cloned.close()
    _summary("cloned", f"into {cloned.path}", report)
    return 0
