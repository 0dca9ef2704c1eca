"""``osmo eval show|diff|export|verify|label|report``: looking at stored results. This module only
declares the commands; each one's code is imported when it runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from .argtypes import nonneg_int, positive_int, probability
from .common import EXIT_ERROR, open_repo


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
    p.add_argument("config", metavar="CONFIG", help="config id, unique prefix or label")
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

    p = csub.add_parser(
        "diff",
        parents=[common],
        help="compare two configs run for run: changes, mean difference with a CI, a test",
        description="Compare config B with config A on the runs they share (same row by "
        "content, same run index): rows whose score changed (regressions first), the mean "
        "difference B - A with a paired bootstrap confidence interval (rows resampled), a "
        "paired test (McNemar's exact test for 0/1 scores, else a sign-flip permutation "
        "test), and the rows only one of them has.",
    )
    p.add_argument("a", metavar="A", help="config id, unique prefix or label (the baseline)")
    p.add_argument("b", metavar="B", help="config id, unique prefix or label (compared with A)")
    p.add_argument(
        "--metric", metavar="NAME", help="metric to compare (default: A's primary metric)"
    )
    _resampling_arguments(p)
    p.add_argument(
        "--limit",
        type=nonneg_int,
        default=20,
        metavar="N",
        help="changed rows listed (default 20; 0: all)",
    )
    p.add_argument("--json", action="store_true", help="print as JSON (every changed row)")
    p.set_defaults(cache_func=_run("evaldiff", "cmd_diff"))

    p = csub.add_parser(
        "export",
        parents=[common],
        help="write a config's samples as a table: jsonl, csv or parquet",
        description="Write one row per sample (row index and key, run, status, prompt, "
        "ground truth, solution, a score/<metric> column per metric, errors, usage, the "
        "row's data and the conversation) to FILE; the format comes from its suffix "
        "(.jsonl, .csv, .parquet) or --format.",
    )
    p.add_argument("config", metavar="CONFIG", help="config id, unique prefix or label")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="file to write")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="default: by suffix")
    p.set_defaults(cache_func=_run("evalexport", "cmd_export"))

    p = csub.add_parser(
        "verify",
        parents=[common],
        help="re-score the stored samples with the current eval functions, no model call",
        description="Re-score every stored sample of CONFIG with its eval functions as they "
        "are now (or those given with --eval-fn), without calling any model, and compare with "
        f"the stored scores. Exits {EXIT_ERROR} if any score disagrees.",
    )
    p.add_argument("config", metavar="CONFIG", help="config id, unique prefix or label")
    p.add_argument(
        "--eval-fn",
        metavar="MODULE:FN",
        action="append",
        default=[],
        help="score with these instead of the config's own (repeatable); compared by name",
    )
    p.add_argument(
        "--limit",
        type=nonneg_int,
        default=20,
        metavar="N",
        help="disagreements listed (default 20; 0: all)",
    )
    p.add_argument("--json", action="store_true", help="print as JSON (every disagreement)")
    p.set_defaults(cache_func=_run("evalverify", "cmd_verify"))

    p = csub.add_parser(
        "label",
        parents=[common],
        help="name a config (shown and filtered by osmo eval cache ls)",
        description='Name a config; an empty NAME ("") removes its name. The name is kept '
        "by later runs of the config and shown by osmo eval cache ls, show and diff. A name "
        "belongs to one config (refused when it names another, unless --force) and is not "
        "4 or more hex digits (an id prefix, looked up first).",
    )
    p.add_argument("config", metavar="CONFIG", help="config id, unique prefix or label")
    p.add_argument("name", metavar="NAME", help="one line, at most 100 characters")
    p.add_argument(
        "--force", action="store_true", help="move the name here from the config it names"
    )
    p.set_defaults(cache_func=_run("evalshow", "cmd_label"))

    p = csub.add_parser(
        "report",
        parents=[common],
        help="one self-contained HTML page of configs: summaries, plots, comparisons, samples",
        description="Write one HTML file (it needs no network to open) showing each CONFIG's "
        "parameters, summary, score distributions and failure groups; with two configs or "
        "more, each one compared with the first (mean difference with a paired bootstrap CI, "
        "a paired test, per-row plots); and a table of samples whose conversation, scores, "
        "errors and usage open with a click.",
    )
    p.add_argument("configs", metavar="CONFIG", nargs="+", help="config id, unique prefix or label")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="HTML file to write")
    p.add_argument(
        "--metric",
        metavar="NAME",
        help="metric to compare and list per sample (default: the first config's primary)",
    )
    _resampling_arguments(p)
    p.set_defaults(cache_func=_run("evalreport", "cmd_report"))


def _resampling_arguments(p: argparse.ArgumentParser) -> None:
    """The paired comparison's flags, which diff and report share."""
    p.add_argument(
        "--confidence",
        type=probability,
        default=0.95,
        metavar="C",
        help="confidence level of the interval (default 0.95)",
    )
    p.add_argument(
        "--resamples",
        type=positive_int,
        default=2000,
        metavar="N",
        help="bootstrap and permutation resamples (default 2000)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="of the resampling (default 0)")
