"""The files that `osmo eval report -o`, `osmo eval export -o` and `osmo eval -o` write: the
CLI in-process against the mock model server. A symlink is written through to its target
(replaced atomically there); a path that is something other than a regular file (a device,
a named pipe, a directory) is refused before any work; a write that fails names the -o path,
never an internal temp file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from osmo_store.cli.main import main
from osmo_store.testing.mockserver import MockServer

ROWS = 4


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store holding one config of 4 rows (built once; the tests only read it)."""
    project = tmp_path_factory.mktemp("outputs")
    rows = [{"user_prompt": f"What is {i} + 1?", "ground_truth": str(i + 1)} for i in range(ROWS)]
    (project / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    argv = COMMANDS["eval"](project, "unused")[:-2]  # without -o
    with MockServer() as srv:
        argv[argv.index("--base-url") + 1] = srv.base_url
        code = main(["--store", str(project / "store"), "--create", *argv, "--label", "one"])
    assert code == 0
    return {"project": project, "store": str(project / "store")}


def osmo(stored: dict, capsys, *argv: str) -> tuple[int, str]:
    """Runs ``osmo --store STORE ARGV`` in-process: (exit code, stderr)."""
    capsys.readouterr()
    code = main(["--store", stored["store"], *argv])
    return code, capsys.readouterr().err


def _eval(project: Path, out: str) -> list[str]:
    """`osmo eval` of the stored config: every run is stored already, so no model is called
    (none listens at :9)."""
    return ["eval", "-d", str(project / "data.jsonl"), "--model", "m", "--model-id", "m",
            "--base-url", "http://127.0.0.1:9/v1", "--eval-fn", f"{project / 'fns.py'}:exact",
            "-q", "--max-retries", "0", "-o", out]  # fmt: skip


# Each command's arguments, given the project and the -o path.
COMMANDS = {
    "report": lambda project, out: ["eval", "report", "one", "-o", out],
    "export": lambda project, out: ["eval", "export", "one", "-o", out, "--format", "csv"],
    "eval": _eval,
}


@pytest.fixture
def here(stored: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(stored["project"])
    return stored["project"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_symlink_is_written_through_to_its_target(stored, here, tmp_path, capsys,
                                                    command) -> None:  # fmt: skip
    suffix = ".html" if command == "report" else ".csv"
    target = tmp_path / "real" / f"target{suffix}"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / f"link{suffix}"
    link.symlink_to(target)
    code, err = osmo(stored, capsys, *COMMANDS[command](here, str(link)))
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    written = target.read_text()
    assert ("<html" if command == "report" else "score/exact") in written
    # atomically: through a temp file beside the target, none left behind
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == [link.name, "real"]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    """A character device like /dev/full (1, 7): writing to it fails with ENOSPC."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("making a device node needs root")


def _directory(path: Path) -> None:
    path.mkdir()


KINDS = {"fifo": (_fifo, stat.S_ISFIFO, "is a named pipe, not a regular file"),
         "device": (_device, stat.S_ISCHR, "is a character device, not a regular file"),
         "directory": (_directory, stat.S_ISDIR, "is a directory")}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("via_link", [False, True], ids=["direct", "symlink"])
def test_a_path_that_is_not_a_regular_file_is_refused_before_any_work(
    stored, here, tmp_path, capsys, command, kind, via_link
) -> None:
    make, is_kind, says = KINDS[kind]
    thing = tmp_path / f"thing.{'html' if command == 'report' else 'csv'}"
    make(thing)
    given = thing
    if via_link:
        given = tmp_path / f"link{thing.suffix}"
        given.symlink_to(thing)
    # A reader on the pipe, so a write into it would not block but be seen.
    reader = os.open(thing, os.O_RDONLY | os.O_NONBLOCK) if kind == "fifo" else None
    try:
        code, err = osmo(stored, capsys, *COMMANDS[command](here, str(given)))
        assert code == 1
        assert err == f"osmo: error: -o {given}: {says}\n"
        assert is_kind(os.lstat(thing).st_mode)  # still what it was
        assert not via_link or given.is_symlink()
        if reader is not None:
            assert os.read(reader, 1) == b""  # no writer, and nothing was written into it
    finally:
        if reader is not None:
            os.close(reader)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({thing.name, given.name})


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("where", ["/proc", "/sys"])
def test_a_failed_write_names_the_output_path(stored, here, capsys, command, where) -> None:
    """/proc takes no new file (ENOENT), /sys refuses one (EACCES, even to root): the error
    names the path given to -o, not the temp file osmo wrote first."""
    given = f"{where}/osmo-report.{'html' if command == 'report' else 'csv'}"
    code, err = osmo(stored, capsys, *COMMANDS[command](here, given))
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("osmo: error: "), err
    assert given in lines[0] and ".tmp" not in lines[0], err
    if os.geteuid() == 0:  # as root the up-front check passes: the write itself fails
        assert lines[0].startswith(f"osmo: error: cannot write {given}: "), err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_in_the_way_of_a_directory_is_the_same_error_everywhere(
    stored, here, capsys, command
) -> None:
    (here / "one.html").write_text("keep\n")
    given = "one.html/x.html" if command == "report" else "one.html/x.csv"
    code, err = osmo(stored, capsys, *COMMANDS[command](here, given))
    assert code == 1
    assert err == f"osmo: error: -o {given}: one.html is not a directory\n"
    assert (here / "one.html").read_text() == "keep\n"
