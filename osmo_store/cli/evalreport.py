"""``osmo eval report CONFIG... -o FILE``."""

from __future__ import annotations

import argparse

from ..eval.outputs import check_writable, write_output
from ..eval.report_data import gather
from ..eval.report_html import render_report
from ..repo import Repository
from .common import out
from .evalshow import open_config


def cmd_report(args: argparse.Namespace, repo: Repository) -> int:
    check_writable(args.output, "-o")  # refused before the store is read, not after
    configs = [open_config(repo, text) for text in args.configs]
    data = gather(configs, metric=args.metric, confidence=args.confidence,
                  resamples=args.resamples, seed=args.seed)  # fmt: skip
    html = render_report(data)
    write_output(args.output, "-o", lambda tmp: tmp.write_text(html, encoding="utf-8"))
    samples = sum(len(c.views) for c in data.configs)
    out(f"wrote a report of {len(configs)} config{'s' if len(configs) > 1 else ''} "
        f"({samples} samples) to {args.output}")  # fmt: skip
    return 0
