"""``osmo eval export CONFIG -o FILE``."""

from __future__ import annotations

import argparse

from ..eval.export import check_format, sample_records, write_records
from ..eval.outputs import check_writable, write_output
from ..repo import Repository
from .common import out
from .evalshow import open_config


def cmd_export(args: argparse.Namespace, repo: Repository) -> int:
    fmt = check_format(args.output, args.format)
    check_writable(args.output, "-o")  # refused before the store is read, not after
    stored = open_config(repo, args.config)
    records = sample_records(stored)
    write_output(args.output, "-o", lambda tmp: write_records(records, tmp, fmt))
    out(f"wrote {len(records)} samples of config {stored.config_id[:12]} to {args.output} ({fmt})")
    return 0
