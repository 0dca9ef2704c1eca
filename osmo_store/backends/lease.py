"""Writer leases: how gc learns that a live process may be about to reference objects that
no ref names yet.

A process that writes objects holds a lease: a file ``leases/lease-<pid>-<rand>`` with an
exclusive ``flock`` on it for as long as it lives. The kernel drops the lock when
the process dies (kill -9 included), so a lease whose lock can be taken is stale. gc treats
every object freshened since the oldest live lease started as possibly in use.

A lease's start is the lease file's mtime, set by touching it *after* it became visible:
a gc that lists leases before that sees either no lease (and then its own start, earlier
than ours, is the cutoff) or an older mtime (a more cautious cutoff), never a start later
than what it protects. It is an mtime, not ``time.time_ns()``, because object mtimes are
set by the filesystem's clock (coarse, maybe whole seconds), and gc compares within it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

_PREFIX = "lease-"


class WriterLease:
    def __init__(self, leases_dir: Path) -> None:
        leases_dir.mkdir(parents=True, exist_ok=True)
        tmp = leases_dir / f"tmp-{_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        self._fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        # Lock first, then rename into view: gc never sees an unlocked lease file that is
        # about to become live, so it cannot mistake it for a stale one and remove it.
        self.path = leases_dir / f"{_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        os.replace(tmp, self.path)
        os.utime(self._fd)
        self.start_ns = os.fstat(self._fd).st_mtime_ns

    def release(self) -> None:
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1


def live_lease_starts(leases_dir: Path, exclude: Path | None = None) -> list[int]:
    """Start times (ns) of live leases (but ``exclude``, a writer's own); stale lease files
    found on the way are removed."""
    starts = []
    try:
        names = os.listdir(leases_dir)
    except FileNotFoundError:
        return starts
    for name in names:
        if name.startswith("tmp-" + _PREFIX):
            _remove_if_unlocked(leases_dir / name)  # a writer killed while making its lease
            continue
        if not name.startswith(_PREFIX):
            continue
        path = leases_dir / name
        if path == exclude:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except (FileNotFoundError, IsADirectoryError):
            continue  # gone, or no lease file (nothing of ours makes a folder here)
        except OSError:
            # Cannot be locked to tell (another user's, say): taken as live, so gc stays
            # on the safe side of it.
            with contextlib.suppress(FileNotFoundError):
                starts.append(os.stat(path).st_mtime_ns)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            starts.append(os.fstat(fd).st_mtime_ns)
        else:
            path.unlink(missing_ok=True)  # holder is gone
        finally:
            os.close(fd)
    return starts


def _remove_if_unlocked(path: Path, min_age_s: float = 60.0) -> None:
    """Remove a stale temp lease. It must also be old: a writer creates the file and only
    then locks it, so a brand-new unlocked one may be about to become a lease."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # gone, a folder, or not ours to remove
    if time.time() - os.fstat(fd).st_mtime < min_age_s:
        os.close(fd)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # being made right now
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)


def filesystem_now_ns(directory: Path) -> int:
    """The current time as the filesystem in ``directory`` stamps files."""
    probe = directory / "clock-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.utime(fd)
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
