"""Claims on rollouts in flight, shared by the evals of one store across processes.

Two configs with the same solver (say, two eval functions on one model) need the same
rollouts. Each one first looks in the store; a rollout neither has recorded yet would be
computed, and paid for, by both. So before computing a rollout an eval claims its key: an
exclusive ``flock`` on ``locks/rollouts/<kk>/<key>.lock``, held until the commit that
records the result has moved the shared index. Another eval that wants the same rollout
waits for the claim, then looks in the store again: the result is there (it rescored it
without a model call), or the holder failed or died (the kernel drops a dead process's
lock) and it computes the rollout itself.

A claim is never waited on while holding another (a worker claims one rollout at a time,
and the committer releases claims without waiting on any), so claims cannot deadlock.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

_POLL_S = 0.05


class RolloutClaims:
    """This eval's claims, by sample name (a run claims its rollout's key)."""

    #: a holder that takes longer than this (a hung agent) stops being waited for
    WAIT_S = 600.0

    def __init__(
        self,
        path_of: Callable[[str], Path],
        stop: threading.Event,
        on_first_wait: Callable[[], None] | None = None,
    ) -> None:
        self._path_of = path_of
        self._stop = stop
        self._on_first_wait = on_first_wait
        self._held: dict[str, tuple[Path, int]] = {}
        self._lock = threading.Lock()
        self._waited_once = False

    def acquire(self, name: str, key: str) -> bool:
        """Claim ``key`` for the run ``name``, waiting while another eval holds it; True if
        it waited (the caller should then look in the store again). Gives up waiting, and
        holds nothing, after ``WAIT_S`` or on a stop request."""
        path = self._path_of(key)
        waited = False
        deadline = time.monotonic() + self.WAIT_S
        while True:
            fd = _open(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                waited = True
                self._note_wait()
                if self._stop.is_set() or time.monotonic() >= deadline:
                    return waited
                time.sleep(_POLL_S)
                continue
            # The holder before us unlinks the file as it releases: a lock on a file no
            # longer at the path is no claim (a third eval may hold the new file's).
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            with self._lock:
                self._held[name] = (path, fd)
            return waited

    def release(self, name: str) -> None:
        """Drop the run's claim, if it holds one: its result is recorded (or never will be)."""
        with self._lock:
            held = self._held.pop(name, None)
        if held is not None:
            path, fd = held
            # Unlink while still locked, so whoever opened this file meanwhile sees it is
            # stale (above), and the folder does not keep a file per rollout ever made.
            path.unlink(missing_ok=True)
            os.close(fd)

    def release_all(self) -> None:
        with self._lock:
            names = list(self._held)
        for name in names:
            self.release(name)

    def _note_wait(self) -> None:
        with self._lock:
            first = not self._waited_once
            self._waited_once = True
        if first and self._on_first_wait is not None:
            self._on_first_wait()


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the first claim in its folder
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
