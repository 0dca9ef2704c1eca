"""Exit codes, opening the store, and formatting shared by every command."""

from __future__ import annotations

import argparse
import sys
import time

from ..repo import Repository

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


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
    """The store named by ``--store``, else ``$OSMO_STORE``, else the default store;
    created on first use."""
    return Repository.open(getattr(args, "store", None))
