"""Advisory file locks (``flock``) between processes and between threads: a ref's lock, the
maintenance lock, an eval config's lock, the store settings' lock.

Each ``FileLock`` opens its own file description, so two locks on one path exclude each
other whether they are in two processes or in two threads of one (flock belongs to the open
file description). The kernel drops a lock when its holder dies: no stale lock files to
clean up, and the files themselves are never removed (removing one could let two holders
lock two different files of the same name).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import LockTimeout

_POLL_S = 0.01


class FileLock:
    def __init__(
        self, path: Path, *, timeout: float, what: str | None = None, shared: bool = False
    ) -> None:
        self.path = path
        #: a shared lock: any number of shared holders at once, or one exclusive holder
        self._mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        self.timeout = timeout
        self.what = what or str(path)
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> None:
        """Take the lock, waiting up to ``timeout`` s (default: the lock's own; not at all
        when ``blocking`` is false). Raises LockTimeout if it stays taken."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        wait = 0.0 if not blocking else self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the first lock of its folder (locks/refs/..., evals/)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, self._mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LockTimeout(self.what, wait) from None
                    time.sleep(min(_POLL_S, left))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the description drops the lock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
