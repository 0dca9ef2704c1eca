"""``osmo eval show|diff|export|verify|label``: looking at stored results. This module only
declares the commands; each one's code is imported when it runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from .common import open_repo


def _run(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        fn = getattr(importlib.import_module(f".{module}", __package__), name)
        with open_repo(args) as repo:
            return fn(args, repo)

    return run


def register(csub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = csub.add_parser(
        "show",
        parents=[common],
        help="a config's parameters, summary and failures; one sample with --row",
        description="Show a stored config: its parameters, summary and failures by cause. "
        "--row shows one sample: its conversation, answer, scores, errors, usage and calls.",
    )
    p.add_argument("config", metavar="CONFIG", help="config id or unique prefix")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--row",
        metavar="KEY|INDEX",
        help="a row by its 0-based position in the dataset file or its key (prefix); "
        "append .RUN for one run (default: every run of the row)",
    )
    which.add_argument("--failed", action="store_true", help="list the failed samples")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(cache_func=_run("evalshow", "cmd_show"))
