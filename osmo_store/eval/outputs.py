"""Output files (an export, a report, the eval command's ``-o``): a path checked before any
work, so that one that could not be written is refused up front, not after the store was
read; and a file written whole or not at all. The command and the Python API both write
through here."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import OutputError, UsageError

# What a path that is neither a regular file nor a directory is, to say why it is refused.
_SPECIAL_FILES = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                  (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def check_writable(text: str | os.PathLike[str], flag: str, *, is_dir: bool = False) -> None:
    """Refuse, before any work, an output path that could not be written afterwards: a file
    where a directory is wanted or the reverse, something that is not a regular file (a
    device or a named pipe: ``write_output`` would replace it, and writing into it is not
    writing a file), a file in the way of a directory to create, no permission. A symlink
    is judged by its target, which is what gets written."""
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


def write_output(text: str | os.PathLike[str], flag: str, write: Callable[[Path], None]) -> None:
    """Write the file the user named (``flag text``) whole or not at all: ``write`` fills a
    temp file in the target's directory, which then replaces the target, so no reader sees
    half a file. Through a symlink, its target is replaced and the link stays. Checked again
    first (``check_writable``): the path may have changed while the work ran. A failed
    write is an ``OutputError`` naming ``text``, never the temp file."""
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
