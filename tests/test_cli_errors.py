"""How the CLI reports errors (one line, a hint, the traceback only with --debug), damaged
data reported as damaged, and what start-up imports."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from osmo_store import Repository, RunRecord, write_tree
from osmo_store.cli import main as main_mod
from osmo_store.cli.common import EXIT_ERROR
from osmo_store.cli.evalcmd import SUBCOMMAND_MODULES
from osmo_store.cli.main import COMMAND_MODULES, build_parser, main, modules_for, subcommand_for

CONFIG_ID = "c0" * 32


def _store_with_config(store_path: Path) -> str:
    """A store holding one eval config; returns its run record id."""
    with Repository.open(store_path) as repo:
        tree = write_tree(repo.objects, [])
        meta = {"status": "completed", "config_id": CONFIG_ID, "config": {"model": "m"}}
        run = repo.objects.put_run(RunRecord(tree, (), meta))
        repo.update_ref(f"refs/evals/{CONFIG_ID}", run, None, message="test")
    return run


def _run(store_path: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "osmo_store.cli", "--store", str(store_path), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    "args",
    [("eval", "cache", "ls"), ("eval", "cache", "rm", "-y", CONFIG_ID[:8]),
     ("log", CONFIG_ID[:8]), ("show", CONFIG_ID[:8])],
)  # fmt: skip
def test_a_damaged_config_ref_is_reported_as_damaged_not_missing(
    store_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    """A config whose ref file is damaged must not vanish from `ls` or be "not found"."""
    _store_with_config(store_path)
    ref = store_path / "refs" / "evals" / CONFIG_ID
    data = bytearray(ref.read_bytes())
    data[5] ^= 0x5A
    ref.write_bytes(bytes(data))
    code = main(["--store", str(store_path), *args])
    out, err = capsys.readouterr()
    assert code == EXIT_ERROR, out
    assert f"damaged ref refs/evals/{CONFIG_ID}" in err
    assert "osmo fsck" in err and "Traceback" not in err
    assert ref.read_bytes() == bytes(data)  # nothing removed


def test_a_damaged_run_record_is_reported_with_its_id(store_path: Path) -> None:
    run = _store_with_config(store_path)
    path = store_path / "objects" / run[:2] / run[2:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    for args in (("eval", "cache", "ls"), ("log", CONFIG_ID[:8]), ("show", CONFIG_ID[:8])):
        code, _, err = _run(store_path, *args)
        assert code == EXIT_ERROR
        assert f"corrupt object {run}" in err and "Traceback" not in err, err


def test_gc_stops_at_a_damaged_ref(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _store_with_config(store_path)
    (store_path / "refs" / "evals" / CONFIG_ID).write_text("not an id\n")
    args = ["--store", str(store_path), "cache", "gc", "--prune=now", "--expire-reflog=now"]
    assert main(args) == EXIT_ERROR
    assert "damaged ref" in capsys.readouterr().err
    with Repository.open(store_path) as repo:
        assert repo.objects.has(run)


def test_show_of_an_unknown_name_is_still_not_found(store_path: Path, capsys) -> None:
    _store_with_config(store_path)
    assert main(["--store", str(store_path), "show", "ffff0000"]) == EXIT_ERROR
    assert "no eval config matches 'ffff0000'" in capsys.readouterr().err


@pytest.mark.parametrize("debug", [False, True])
def test_errors_are_one_line_and_a_hint_with_the_traceback_only_under_debug(
    store_path: Path, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    code = main(["--store", str(store_path), *(["--debug"] if debug else []), "cache", "gc",
                 "--prune", "soonish"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    lines = err.strip().splitlines()
    assert lines[-2] == "osmo: error: cannot parse age 'soonish'"
    assert lines[-1].startswith("hint: use now, never")
    assert ("Traceback (most recent call last)" in err) is debug
    if not debug:
        assert len(lines) == 2


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_is_one_line_saying_so_with_the_traceback_only_under_debug(
    store_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    debug: bool,
) -> None:
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(main_mod, "open_repo", broken)
    code = main(["--store", str(store_path), *(["--debug"] if debug else []), "show-ref"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    lines = err.strip().splitlines()
    assert lines[-2] == "osmo: error: internal error: ZeroDivisionError: division by zero"
    assert lines[-1].startswith("hint: this is a bug in osmo: run again with --debug")
    assert ("Traceback (most recent call last)" in err) is debug


def test_a_real_subprocess_shows_no_traceback_without_debug(store_path: Path) -> None:
    code, _, err = _run(store_path, "eval", "cache", "rm")
    assert code == EXIT_ERROR and "Traceback" not in err
    assert err.strip() == "osmo: error: say what to remove: config IDs, filters, or --all"


def test_importing_the_cli_loads_no_command_and_no_store() -> None:
    """Start-up: the entry point imports neither a command's module nor the library."""
    code = "import json, sys\nimport osmo_store.cli.main\nprint(json.dumps(sorted(sys.modules)))\n"
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    heavy = {"osmo_store.eval.runner", "requests", "boto3", "waitress", "pyarrow",
             "osmo_store.repo", "osmo_store.backends.locking", "zstandard"}  # fmt: skip
    assert not heavy & loaded
    assert not {m for m in loaded if m.startswith("osmo_store.cli.")} - {
        "osmo_store.cli.main", "osmo_store.cli.common"}  # fmt: skip


def test_listing_configs_loads_no_heavy_standard_module(store_path: Path) -> None:
    """Start-up of `osmo eval cache ls`: dataclasses (with inspect, ast, dis), shutil (with
    bz2, lzma) and requests cost milliseconds each and are not needed to list configs."""
    code = (
        "import json, sys\nfrom osmo_store.cli.main import main\n"
        f"code = main(['--store', {str(store_path)!r}, 'eval', 'cache', 'ls'])\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    output = subprocess.check_output([sys.executable, "-c", code], text=True)
    exit_code, loaded = json.loads(output.splitlines()[-1])
    assert exit_code == 0
    assert not {"dataclasses", "inspect", "shutil", "requests", "logging"} & set(loaded)
    # Nor what listing configs never uses: the tree code, the in-memory backend, the other
    # eval subcommands' modules, signal handling, and argparse's translations (locale).
    unused = {"osmo_store.tree", "osmo_store.backends.memory", "osmo_store.cli.evalviews",
              "osmo_store.cli.explaincmd", "signal", "select", "locale"}  # fmt: skip
    assert not unused & set(loaded)


def test_each_command_loads_only_its_module() -> None:
    assert modules_for(["--version"]) == ()
    assert modules_for(["--store", "x", "eval", "cache", "ls"]) == ("evalcmd",)
    assert modules_for(["cache", "gc", "--store=eval"]) == ("maintenance",)
    assert modules_for(["--debug", "push", "origin"]) == ("synccmd",)
    for everything in ([], ["-h"], ["fsck", "--help"], ["nonsense"], ["--store"]):
        assert modules_for(everything) == tuple(COMMAND_MODULES)


def test_eval_builds_only_the_subcommand_being_run() -> None:
    assert subcommand_for(["--store", "x", "eval", "cache", "ls"]) == "cache"
    assert subcommand_for(["eval", "show", "abc", "--row", "3"]) == "show"
    for everything in (["eval", "-d", "x.jsonl"], ["eval", "cache", "-h"], ["eval"], []):
        assert subcommand_for(everything) is None

    def eval_subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        top = next(a for a in parser._actions if a.dest == "command")
        eval_parser = top.choices["eval"]
        return next(a for a in eval_parser._actions if a.dest == "eval_command").choices

    full = eval_subcommands(build_parser(modules=("evalcmd",)))
    # The table says where each subcommand lives: one missing from it would be built only
    # in the full parser, and `osmo eval NAME` would then fail to parse.
    assert sorted(full) == sorted(n for names in SUBCOMMAND_MODULES.values() for n in names)
    for name, parser in full.items():
        narrow = eval_subcommands(build_parser(modules=("evalcmd",), subcommand=name))
        assert narrow[name].format_help() == parser.format_help()
        assert len(narrow) < len(full)
    args = build_parser(modules=("evalcmd",), subcommand="cache").parse_args(
        ["eval", "cache", "ls", "--json"]
    )
    assert args.eval_command == "cache" and args.eval_cache_command == "ls" and args.json


def test_the_command_table_names_every_command_in_help_order() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    listed = [c for commands in COMMAND_MODULES.values() for c in commands]
    assert list(sub.choices) == listed
