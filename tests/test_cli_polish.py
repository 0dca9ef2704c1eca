"""Small things a new user meets first: help order, suggestions, messages for bad numbers and
ids, help on every sampling flag, a progress line that fits a terminal, the mock server on a
busy port. The installed CLI in a subprocess."""

from __future__ import annotations

import io
import socket
import subprocess
import sys

import pytest

from osmo_store.cli.main import build_parser
from osmo_store.cli.progress import ProgressDisplay
from osmo_store.eval.runner import Progress


def osmo(osmo_bin: str, *argv: str, store=None) -> subprocess.CompletedProcess:
    pre = ["--store", str(store)] if store else []
    return subprocess.run([osmo_bin, *pre, *argv], capture_output=True, text=True, timeout=60)


def test_a_bad_number_says_what_was_expected(osmo_bin) -> None:
    done = osmo(osmo_bin, "eval", "--limit", "abc")
    assert done.returncode == 2
    assert "--limit: expected a whole number, got 'abc'" in done.stderr
    assert "_nonneg_int" not in done.stderr


def test_eval_is_the_first_command_in_help(osmo_bin) -> None:
    text = osmo(osmo_bin, "--help").stdout
    listed = text[text.index("COMMAND\n") :].splitlines()[1:]
    assert listed[0].split()[0] == "eval"


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [(("evl",), "eval"), (("eval", "shwo", "x"), "show"), (("eval", "cache", "sl"), "ls")],
)
def test_a_mistyped_command_gets_a_suggestion(osmo_bin, tmp_path, argv, suggestion) -> None:
    done = osmo(osmo_bin, *argv, store=tmp_path / "s")
    assert done.returncode == 2
    assert f"did you mean {suggestion!r}?" in done.stderr
    assert "choose from" not in done.stderr  # one line, not the list of every command


def test_no_command_says_how_to_find_one(osmo_bin) -> None:
    done = osmo(osmo_bin)
    assert done.returncode == 2
    assert "COMMAND ..." not in done.stderr
    assert "osmo: error: give a command, such as eval" in done.stderr
    assert "osmo --help" in done.stderr


def test_every_sampling_flag_has_help() -> None:
    parser = build_parser(modules=("evalcmd",))
    sub = next(a for a in parser._actions if a.dest == "command")
    eval_parser = sub.choices["eval"]
    group = next(g for g in eval_parser._action_groups if g.title == "sampling")
    assert group._group_actions
    for action in group._group_actions:
        assert action.help, f"{action.option_strings} has no help"


@pytest.mark.parametrize(
    ("given", "hint"),
    [("zz", "at least 4 hex characters"), ("abcd", "no object id starts with 'abcd'")],
)
def test_an_id_that_matches_nothing_says_why(osmo_bin, tmp_path, given, hint) -> None:
    assert osmo(osmo_bin, "init", str(tmp_path / "s")).returncode == 0
    done = osmo(osmo_bin, "cat-file", "-p", given, store=tmp_path / "s")
    assert done.returncode == 1
    assert done.stderr.startswith(f"osmo: error: object not found: {given}")
    assert hint in done.stderr


class FakeTTY(io.StringIO):
    def __init__(self, columns: int) -> None:
        super().__init__()
        self.columns = columns

    def isatty(self) -> bool:
        return True


def test_the_progress_line_fits_an_80_column_terminal() -> None:
    stream = FakeTTY(80)
    display = ProgressDisplay(stream, columns=80)
    display.update(Progress(total=1_000_000, done=1))
    display.update(Progress(total=1_000_000, done=999_999, failed=123_456, passed=500_000,
                            scored=876_543, reused=654_321))  # fmt: skip
    for line in stream.getvalue().split("\r\x1b[2K")[1:]:
        assert len(line.rstrip("\n")) <= 79, line  # the last column would wrap on some terms
    assert "999999/1000000" in stream.getvalue()


def test_off_a_terminal_the_interval_can_be_set() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, interval=0)
    for done in range(1, 5):
        display.update(Progress(total=4, done=done))
    assert len(stream.getvalue().splitlines()) == 4


def test_progress_interval_flag_is_checked(osmo_bin) -> None:
    done = osmo(osmo_bin, "eval", "--progress-interval", "-1")
    assert done.returncode == 2 and "--progress-interval" in done.stderr


def test_the_mock_server_on_a_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "osmo_store.testing.mockserver", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith(f"mockserver: error: port {port} on 127.0.0.1")


def test_the_package_metadata_builds_without_a_deprecation_banner() -> None:
    """setuptools >= 77 warns, on every install, about a license given as a TOML table."""
    from .conftest import ROOT

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(meta["project"]["license"], str)
    assert any(r.startswith("setuptools>=77") for r in meta["build-system"]["requires"])


def test_a_store_path_that_is_not_a_store_is_an_error(osmo_bin, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OSMO_CREATE")
    typo = tmp_path / "stroe"
    done = osmo(osmo_bin, "eval", "cache", "ls", store=typo)
    assert done.returncode == 1
    assert done.stderr.startswith(f"osmo: error: no osmo store at {typo}")
    assert f"osmo init {typo}" in done.stderr and "--create" in done.stderr
    assert not typo.exists()  # nothing was made
    assert osmo(osmo_bin, "--create", "eval", "cache", "ls", store=typo).returncode == 0
    assert osmo(osmo_bin, "eval", "cache", "ls", store=typo).returncode == 0  # a store now
    made = tmp_path / "made"
    assert osmo(osmo_bin, "init", str(made)).returncode == 0
    assert osmo(osmo_bin, "show-ref", store=made).returncode == 0
    # The default store (no --store) is still made on first use.
    default = subprocess.run([osmo_bin, "eval", "cache", "ls"], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert default.returncode == 0, default.stderr
