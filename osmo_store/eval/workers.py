"""The sliding window of runs in flight: worker threads that each take the next run as soon
as their last one is done."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..errors import FatalModelError


class Workers:
    """A sliding window of ``concurrency`` runs in flight: each worker thread takes the next
    run as soon as its last one finishes and hands the result to the committer
    (``deliver``, which may wait: see ``journal``). No per-run future or wake-up of the
    launching thread: at high rates those hand-offs were a large share of the eval's CPU.

    A stop request (the caller's ``stop``, a fatal model error, or ``halt``) launches
    nothing new; ``run`` then delivers the runs in flight as they finish (they were paid
    for), for up to ``grace`` seconds if given. Results that finish later are dropped: they
    are not recorded, so resuming runs them again.
    ``join`` waits for the threads themselves (a run in flight ends when its model call or
    agent returns).
    """

    def __init__(
        self,
        todo: list[tuple[Any, int]],
        concurrency: int,
        stop: threading.Event,
        deliver: Callable[[Any], None],
        execute: Callable[[Any, int], Any],
    ) -> None:
        self._todo = iter(todo)
        self._total = len(todo)
        self._delivered = 0
        self._count = min(max(1, concurrency), len(todo))
        self._stop = stop
        # Our own reasons to stop (a fatal error, the caller's halt): the caller's event
        # stays the caller's, set only when it asks.
        self._halted = threading.Event()
        self._deliver = deliver
        self._execute = execute
        self._lock = threading.Lock()
        self._closed = False  # set when the grace period is over: deliver nothing more
        self._idle = threading.Event()
        self._active = 0
        self._threads: list[threading.Thread] = []
        self.fatal: list[FatalModelError] = []
        self.error: BaseException | None = None  # an unexpected failure (a bug): re-raised

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self._halted.is_set()

    def halt(self) -> None:
        """Launch nothing more (in-flight runs go on, and are delivered until ``run`` ends)."""
        self._halted.set()

    def _next(self) -> tuple[Any, int] | None:
        if self.stopping:
            return None
        with self._lock:
            try:
                return next(self._todo, None)
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller
                # Reading the next run failed (the dataset changed under the eval, say):
                # nothing more is launched, and the eval ends with that error.
                self.error = self.error or e
                self._halted.set()
                return None

    def _work(self) -> None:
        try:
            while (item := self._next()) is not None:
                try:
                    result = self._execute(*item)
                except FatalModelError as e:
                    with self._lock:
                        self.fatal.append(e)
                    self.halt()
                    return
                except BaseException as e:  # noqa: BLE001 - re-raised by the caller
                    with self._lock:
                        self.error = self.error or e
                    self.halt()
                    return
                with self._lock:
                    if self._closed:
                        return
                    self._delivered += 1
                # Outside the lock: delivering may wait (the result made durable, the
                # recorder not too far behind), and the other workers go on meanwhile.
                self._deliver(result)
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._idle.set()

    def run(self, grace: float | None) -> bool:
        """Run everything (or until stopped); True if stopped before every run was
        delivered. Whatever ends it (an exception included), no run is launched or
        delivered after it returns; the threads may still be finishing (``join``)."""
        if self._count == 0:
            return False
        try:
            with self._lock:
                self._active = self._count
            for k in range(self._count):
                thread = threading.Thread(target=self._work, name=f"osmo-run-{k}", daemon=True)
                self._threads.append(thread)
                thread.start()
            # Short waits keep the main thread responsive to signal handlers.
            while not self._idle.wait(0.1) and not self.stopping:
                pass
            stopped = self.stopping
            if stopped:
                self._wait_idle(grace)
        finally:
            self.halt()
            with self._lock:
                self._closed = True
        return stopped and self._delivered < self._total

    def _wait_idle(self, grace: float | None) -> None:
        if grace is not None:
            self._idle.wait(grace)
            return
        while not self._idle.wait(0.1):  # short waits: a second Ctrl-C still gets through
            pass

    def join(self) -> None:
        """Wait until every worker thread has ended. Short waits, so that a signal handler
        (a second Ctrl-C) can still interrupt the wait."""
        for thread in self._threads:
            while thread.is_alive():
                thread.join(0.1)
