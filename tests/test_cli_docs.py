from __future__ import annotations

import re
import sys

from osmo_store.cli import docgen

from .conftest import ROOT

STALE = "docs/cli.md is stale: run `python -m osmo_store.cli.docgen > docs/cli.md`"


def layout_free(text: str) -> str:
    """The help's content without the layout argparse changes between Python versions: which
    version rendered it, line breaks and column widths (3.13 wraps usage and pads columns
    differently), and how an option with a short and a long form shows its metavar (before
    3.13 ``-d FILE, --dataset FILE``, since ``-d, --dataset FILE``)."""
    text = re.sub(r"Rendered by Python \d+\.\d+", "Rendered by Python", text)
    text = re.sub(r"(?<![\w-])(-\w) (\S+), (--[\w-]+) \2(?!\S)", r"\1, \3 \2", text)
    return " ".join(text.split())


def test_cli_reference_matches_help() -> None:
    """On every supported Python: the same commands, options and help texts. On the Python
    that rendered the file: the same bytes."""
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    m = re.search(r"Rendered by Python (\d+)\.(\d+)", committed)
    assert m, "docs/cli.md lacks its 'Rendered by Python' line"
    rendered = docgen.render()
    assert layout_free(committed) == layout_free(rendered), STALE
    if (int(m.group(1)), int(m.group(2))) == sys.version_info[:2]:
        assert committed == rendered, STALE


def test_layout_free_sees_a_changed_word_but_not_a_changed_layout() -> None:
    old = "usage: osmo eval [--fresh | --retry-failed]\n  -d FILE, --dataset FILE\n    rows\n"
    new = "usage: osmo eval [--fresh |\n        --retry-failed]\n  -d, --dataset FILE    rows\n"
    assert layout_free(old) == layout_free(new)
    assert layout_free(old) != layout_free(new.replace("rows", "row"))
    assert layout_free(old) != layout_free(new.replace("--dataset FILE", "--dataset PATH"))


def test_every_command_is_documented() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, _ in docgen._subcommands(docgen.build_parser()):
        assert f"## osmo {name}\n" in committed
