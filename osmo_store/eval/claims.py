"""Claims on rollouts in flight, shared by the evals of one store across processes.

Two configs with the same solver (say, two eval functions on one model) need the same
rollouts. Each one first looks in the store; a rollout neither has recorded yet would be
computed, and paid for, by both. So before computing a rollout an eval claims its key: an
exclusive POSIX record lock on one byte of ``locks/rollouts.lock``, at an offset taken
from the key (60 bits of it: two keys meet by chance about never), held until the commit
that records the result has moved the shared index. Another eval that wants the same
rollout waits for the claim, then looks in the store again: the result is there (it
rescored it without a model call), or the holder failed or died (the kernel drops a dead
process's locks) and it computes the rollout itself.

One byte of one file, not a file per rollout: creating and unlinking a file per rollout
was the largest part of an eval's CPU on some filesystems. Record locks belong to the
process, so the claims of all of its evals share one descriptor (closing any descriptor
of the file would drop them all) and count their holders per byte; the threads of one
process never wait for each other here (one process asks once for identical requests
anyway, see ``solver``).

A claim is never waited on while holding another (a worker claims one rollout at a time,
and the committer releases claims without waiting on any), so claims cannot deadlock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

_POLL_S = 0.05


class _ClaimFile:
    """The process's one descriptor of a claims file and its byte locks, by holders."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.holders: dict[int, int] = {}
        self.lock = threading.Lock()

    @classmethod
    def of(cls, path: Path) -> _ClaimFile:
        """The one for ``path``; a new one if the file there is another (a store made
        again at the same path) or gone."""
        with _FILES_LOCK:
            claim_file = _FILES.get(path)
            if claim_file is not None:
                try:
                    same = os.stat(path).st_ino == os.fstat(claim_file.fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same and not claim_file.holders:
                    os.close(claim_file.fd)  # its file is gone: its locks guard nothing
                if not same:
                    claim_file = None
            if claim_file is None:
                claim_file = _FILES[path] = cls(path)
            return claim_file

    def try_lock(self, offset: int) -> bool:
        with self.lock:
            if offset in self.holders:
                self.holders[offset] += 1
                return True
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    return False
                raise
            self.holders[offset] = 1
            return True

    def unlock(self, offset: int) -> None:
        with self.lock:
            left = self.holders.get(offset, 0) - 1
            if left > 0:
                self.holders[offset] = left
                return
            self.holders.pop(offset, None)
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)


_FILES: dict[Path, _ClaimFile] = {}
_FILES_LOCK = threading.Lock()


def _offset(key: str) -> int:
    """A byte for the key: 60 bits of its hex digits (after its kind letter)."""
    digits = "".join(c for c in key if c in "0123456789abcdef")
    return int(digits[:15] or "0", 16)


class RolloutClaims:
    """This eval's claims, by sample name (a run claims its rollout's key)."""

    #: a holder that takes longer than this (a hung agent) stops being waited for
    WAIT_S = 600.0

    def __init__(
        self,
        path: Path,
        stop: threading.Event,
        on_first_wait: Callable[[], None] | None = None,
    ) -> None:
        self._file = _ClaimFile.of(path)
        self._stop = stop
        self._on_first_wait = on_first_wait
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._waited_once = False

    def acquire(self, name: str, key: str) -> bool:
        """Claim ``key`` for the run ``name``, waiting while another eval holds it; True if
        it waited (the caller should then look in the store again). Gives up waiting, and
        holds nothing, after ``WAIT_S`` or on a stop request."""
        offset = _offset(key)
        waited = False
        deadline = time.monotonic() + self.WAIT_S
        while not self._file.try_lock(offset):
            waited = True
            self._note_wait()
            if self._stop.is_set() or time.monotonic() >= deadline:
                return waited
            time.sleep(_POLL_S)
        with self._lock:
            if name in self._held:  # claimed twice for one run: keep one hold
                self._file.unlock(offset)
            else:
                self._held[name] = offset
        return waited

    def release(self, name: str) -> None:
        """Drop the run's claim, if it holds one: its result is recorded (or never will be)."""
        with self._lock:
            offset = self._held.pop(name, None)
        if offset is not None:
            self._file.unlock(offset)

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
