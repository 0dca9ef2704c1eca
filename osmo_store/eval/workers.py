"""The sliding window of runs in flight: worker threads that each take the next run as soon
as their last one is done."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..errors import FatalModelError


class Workers:
    """A sliding window of ``concurrency`` runs in flight: each worker thread takes the next
    run as soon as its last one finishes and hands the result straight to the committer
    (``deliver``). No per-run future or wake-up of the launching thread: at high rates
    those hand-offs were a large share of the eval's CPU.

    A stop request (or a fatal model error) launches nothing new; ``run`` then waits up to
    ``grace`` seconds for the runs in flight. Results that finish later are dropped: they
    are not recorded, so resuming runs them again.
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
        self._deliver = deliver
        self._execute = execute
        self._lock = threading.Lock()
        self._closed = False  # set when the grace period is over: deliver nothing more
        self._idle = threading.Event()
        self._active = 0
        self.fatal: list[FatalModelError] = []
        self.error: BaseException | None = None  # an unexpected failure (a bug): re-raised

    def _next(self) -> tuple[Any, int] | None:
        if self._stop.is_set():
            return None
        with self._lock:
            return next(self._todo, None)

    def _work(self) -> None:
        try:
            while (item := self._next()) is not None:
                try:
                    result = self._execute(*item)
                except FatalModelError as e:
                    with self._lock:
                        self.fatal.append(e)
                    self._stop.set()
                    return
                except BaseException as e:  # noqa: BLE001 - re-raised by run()
                    with self._lock:
                        self.error = self.error or e
                    self._stop.set()
                    return
                with self._lock:
                    if self._closed:
                        return
                    self._deliver(result)
                    self._delivered += 1
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._idle.set()

    def run(self, grace: float) -> bool:
        """Run everything (or until stopped); True if stopped before every run was
        delivered. Whatever ends it (an exception included), no run is launched or
        delivered after it returns."""
        if self._count == 0:
            return False
        try:
            with self._lock:
                self._active = self._count
            for k in range(self._count):
                threading.Thread(target=self._work, name=f"osmo-run-{k}", daemon=True).start()
            # Short waits keep the main thread responsive to signal handlers.
            while not self._idle.wait(0.1) and not self._stop.is_set():
                pass
            if self._stop.is_set():
                self._idle.wait(grace)
        except BaseException:
            self._stop.set()  # e.g. KeyboardInterrupt from a default SIGINT handler
            raise
        finally:
            with self._lock:
                self._closed = True
        return self._stop.is_set() and self._delivered < self._total
