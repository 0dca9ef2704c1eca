"""Output paths (a report, an export, the command's ``-o``) checked before any work, so that
a path that could not be written is refused up front, not after the store was read."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError


def check_writable(text: str | os.PathLike[str], flag: str, *, is_dir: bool = False) -> None:
    """Refuse, before any work, an output path that could not be written afterwards: a file
    where a directory is wanted or the reverse, a file in the way of a directory to create,
    no permission. ``flag`` names the path in the message (``-o``, ``path``)."""
    path = Path(text)
    if path.exists() and path.is_dir() != is_dir:
        kind = "a file" if is_dir else "a directory"
        raise UsageError(f"{flag} {text}: is {kind}")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if existing != path and not existing.is_dir():
        raise UsageError(f"{flag} {text}: {existing} is not a directory")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"{flag} {text}: permission denied")
