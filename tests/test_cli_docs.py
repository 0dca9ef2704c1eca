from __future__ import annotations

import re
import sys

import pytest

from osmo_store.cli import docgen

from .conftest import ROOT


def test_cli_reference_matches_help() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    m = re.search(r"Rendered by Python (\d+)\.(\d+)", committed)
    assert m, "docs/cli.md lacks its 'Rendered by Python' line"
    if (int(m.group(1)), int(m.group(2))) != sys.version_info[:2]:
        pytest.skip("argparse help layout differs between Python versions")
    assert committed == docgen.render(), (
        "docs/cli.md is stale: run `python -m osmo_store.cli.docgen > docs/cli.md`"
    )


def test_every_command_is_documented() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, _ in docgen._subcommands(docgen.build_parser()):
        assert f"## osmo {name}\n" in committed
