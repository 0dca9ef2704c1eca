"""Exit codes, opening the store, and formatting shared by every command."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..repo import Repository

# Every exit status osmo uses. Bad arguments exit with 2, from argparse.
EXIT_OK = 0
EXIT_ERROR = 1  # an error (one line, maybe a hint), or a check that found problems
EXIT_ALL_FAILED = 3  # an eval ran to its end, and every one of its runs failed
EXIT_BELOW_THRESHOLD = 4  # an eval's primary score is below --fail-under
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as a shell reports SIGINT


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_time_ns(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ns / 1e9))


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")


def open_repo(args: argparse.Namespace) -> Repository:
    """The store named by ``--store``, else ``$OSMO_STORE``, else the default store. The
    default store is created on first use; a ``--store PATH`` that is not a store is an
    error (a typo would otherwise start an empty store and "lose" every result) unless
    ``--create`` (or ``$OSMO_CREATE=1``) says to make it."""
    from pathlib import Path

    from ..errors import StoreError
    from ..repo import Repository, is_store  # here, not above: `osmo --version` needs no store

    path = getattr(args, "store", None)
    create = getattr(args, "create", False) or os.environ.get("OSMO_CREATE") == "1"
    if path is not None and not create and not is_store(Path(path).expanduser()):
        hint = f"a typo? To make one: osmo init {path}, or add --create"
        raise StoreError(f"no osmo store at {path}", hint=hint)
    return Repository.open(path)
