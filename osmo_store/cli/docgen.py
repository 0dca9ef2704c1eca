"""Generate docs/cli.md from the parser's own help, so the reference cannot drift.

    python -m osmo_store.cli.docgen > docs/cli.md

tests/test_cli_docs.py fails when the committed file differs from this output.
"""

from __future__ import annotations

import argparse
import sys

from .main import build_parser

WIDTH = 88


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((name, sub))
                out.extend((f"{name} {n}", p) for n, p in _subcommands(sub))
    return out


def render() -> str:
    parser = build_parser(width=WIDTH)
    parts = [
        "# `osmo` command reference",
        "",
        "Generated from `osmo --help` by `python -m osmo_store.cli.docgen > docs/cli.md`;",
        "a test fails when this file and the real help differ.",
        f"Rendered by Python {sys.version_info[0]}.{sys.version_info[1]} "
        "(help layout varies by version).",
        "",
        "## osmo",
        "",
        "```",
        parser.format_help().rstrip(),
        "```",
    ]
    for name, sub in _subcommands(parser):
        parts += ["", f"## osmo {name}", "", "```", sub.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
