"""``osmo serve``: serve a store over HTTP for push, pull and clone from other machines."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

from ..errors import UsageError
from ..repo import STORE_VERSION, Repository, upgrade_store_format
from .common import EXIT_OK, err, out

DEFAULT_PORT = 8080


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the store over HTTP (a push/pull remote)",
        description="Serve a store over HTTP until interrupted (SIGINT or SIGTERM). Every "
        "upload is verified; refs move by compare-and-swap. The token comes from --token, "
        "--token-file or $OSMO_TOKEN; without one, anyone who can connect may read and write.",
    )
    p.add_argument(
        "--root",
        metavar="PATH",
        help="store to serve (default: --store, $OSMO_STORE or the default store)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    token = p.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        metavar="T",
        help="required bearer token (visible to other local users in "
        "the process list: prefer --token-file or $OSMO_TOKEN)",
    )
    token.add_argument("--token-file", metavar="F", help="read the token from file F")
    p.add_argument("--read-only", action="store_true", help="refuse every upload and ref update")
    p.add_argument(
        "--append-only",
        action="store_true",
        help="refuse ref deletions and updates that are not fast-forwards",
    )
    p.set_defaults(func=cmd_serve, needs_repo=False)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def read_token(args: argparse.Namespace) -> str | None:
    """--token, else the content of --token-file, else $OSMO_TOKEN, else None."""
    if args.token is not None:
        token = args.token
    elif args.token_file is not None:
        path = Path(args.token_file).expanduser()
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise UsageError(f"token file {path} is empty")
    else:
        token = os.environ.get("OSMO_TOKEN") or None
    from ..http.auth import validate_token

    return validate_token(token)


def _is_loopback(host: str) -> bool:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(str(a).startswith("127.") or a == "::1" for a in addresses)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # waitress stops cleanly on KeyboardInterrupt; SIGTERM gets the same treatment.
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace, _repo: Repository | None) -> int:
    from ..http.serve import serve

    token = read_token(args)
    root = args.root if args.root is not None else getattr(args, "store", None)
    if token is None and not args.read_only and not _is_loopback(args.host):
        err(
            f"osmo serve: warning: no token, and {args.host} is reachable from other "
            "machines: anyone who can connect can write to this store"
        )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Repository.open(root) as repo:
            if not args.read_only:  # pushes may bring configs an older osmo must not resume
                try:
                    upgrade_store_format(repo, STORE_VERSION)
                except OSError as e:  # a store this user cannot write: serving reads works
                    err(f"osmo serve: warning: cannot raise the store's format version: {e}")

            def ready(url: str) -> None:
                out(f"osmo serve: listening on {url} (store {repo.path})")
                sys.stdout.flush()

            serve(
                repo,
                args.host,
                args.port,
                token=token,
                read_only=args.read_only,
                append_only=args.append_only,
                ready=ready,
            )
    except KeyboardInterrupt:
        pass  # stopped before the server was running
    finally:
        signal.signal(signal.SIGTERM, previous)
    err("osmo serve: stopped")
    return EXIT_OK
