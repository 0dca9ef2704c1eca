"""``osmo eval export CONFIG -o FILE``."""

from __future__ import annotations

import argparse

from ..eval.export import check_format, sample_records, write_records
from ..repo import Repository
from .common import out
from .evalshow import open_config


def cmd_export(args: argparse.Namespace, repo: Repository) -> int:
    fmt = check_format(args.output, args.format)
    stored = open_config(repo, args.config)
    records = sample_records(stored)
    write_records(records, args.output, fmt)
    out(f"wrote {len(records)} samples of config {stored.config_id[:12]} to {args.output} ({fmt})")
    return 0
