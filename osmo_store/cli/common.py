"""Exit codes, opening the store, and formatting shared by every command."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from ..repo import Repository

# Every exit status osmo uses. Bad arguments exit with 2, from argparse.
EXIT_OK = 0
EXIT_ERROR = 1  # an error (one line, maybe a hint), or a check that found problems
EXIT_ALL_FAILED = 3  # an eval ran to its end, and every one of its runs failed
EXIT_BELOW_THRESHOLD = 4  # an eval's primary score is below --fail-under
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as a shell reports SIGINT


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_time_ns(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ns / 1e9))


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")


# What a path that is neither a regular file nor a directory is, to say why it is refused.
_SPECIAL_FILES = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                  (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def check_writable(text: str, flag: str, *, is_dir: bool = False) -> None:
    """Refuse, before any work, an output path that could not be written afterwards: a file
    where a directory is wanted or the reverse, something that is not a regular file (a
    device or a named pipe: ``write_output`` would replace it, and writing into it is not
    writing a file), a file in the way of a directory to create, no permission. A symlink
    is judged by its target, which is what gets written."""
    from pathlib import Path

    from ..errors import UsageError

    path = Path(text)
    try:
        mode: int | None = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as e:  # a symlink loop, say
        raise UsageError(f"{flag} {text}: {e.strerror or e}") from None
    if mode is not None and not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
        wanted = "a directory" if is_dir else "a regular file"
        raise UsageError(f"{flag} {text}: is {kind}, not {wanted}")
    if mode is not None and stat.S_ISDIR(mode) != is_dir:
        raise UsageError(f"{flag} {text}: is {'a file' if is_dir else 'a directory'}")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if existing != path and not existing.is_dir():
        raise UsageError(f"{flag} {text}: {existing} is not a directory")
    # A file is written as a new file in its target's directory, renamed over the target.
    where = path if is_dir else Path(os.path.realpath(text)).parent
    if not os.access(next((p for p in (where, *where.parents) if p.exists()), where), os.W_OK):
        raise UsageError(f"{flag} {text}: permission denied")


def write_output(text: str, flag: str, write: Callable[[Path], None]) -> None:
    """Write the file the user named (``flag text``) whole or not at all: ``write`` fills a
    temp file in the target's directory, which then replaces the target, so no reader sees
    half a file. Through a symlink, its target is replaced and the link stays. Checked again
    first (``check_writable``): the path may have changed while the work ran. A failed
    write is an ``OutputError`` naming ``text``, never the temp file."""
    import contextlib
    from pathlib import Path

    from ..errors import OutputError

    check_writable(text, flag)
    target = Path(os.path.realpath(text))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with contextlib.suppress(FileNotFoundError):  # a new file gets the default mode
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except OSError as e:
        raise OutputError(text, e.strerror or str(e)) from e
    finally:
        with contextlib.suppress(OSError):  # gone already, or never made
            tmp.unlink()


def open_repo(args: argparse.Namespace) -> Repository:
    """The store named by ``--store``, else ``$OSMO_STORE``, else the default store. The
    default store is created on first use; a ``--store PATH`` that is not a store is an
    error (a typo would otherwise start an empty store and "lose" every result) unless
    ``--create`` (or ``$OSMO_CREATE=1``) says to make it."""
    from pathlib import Path

    from ..errors import StoreError
    from ..repo import Repository, is_store  # here, not above: `osmo --version` needs no store

    path = getattr(args, "store", None)
    create = getattr(args, "create", False) or os.environ.get("OSMO_CREATE") == "1"
    if path is not None and not create and not is_store(Path(path).expanduser()):
        hint = f"a typo? To make one: osmo init {path}, or add --create"
        raise StoreError(f"no osmo store at {path}", hint=hint)
    return Repository.open(path)
