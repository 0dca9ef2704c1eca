"""Waiting for another process or thread, the one way tests here do it: on a condition (a
file, a ref, a line on a pipe, a request held at a gate) with a generous deadline, never a
fixed sleep. A deadline is a bound on a hang, not a timing target: on a loaded machine a
test may take longer, it must not fail for it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from osmo_store.backends.lease import filesystem_now_ns
from osmo_store.testing.mockserver import ArithmeticResponder

T = TypeVar("T")
DEADLINE = 60.0


def wait_until(
    pred: Callable[[], T],
    *,
    what: str,
    timeout: float = DEADLINE,
    proc: subprocess.Popen | None = None,
    interval: float = 0.02,
) -> T:
    """Poll ``pred`` until it returns something truthy, and return that. Fails the test
    (``pytest.fail``: a precondition that never came, not the property under test) once
    ``timeout`` seconds pass, or as soon as ``proc`` has exited without it."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: never happened (the process exited with {proc.returncode})")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def wait_for_line(
    stream: IO[str], proc: subprocess.Popen, prefix: str, *, timeout: float = DEADLINE
) -> list[str]:
    """Read lines from ``proc``'s text pipe ``stream`` until one starts with ``prefix``;
    return the lines read, that one last. Past ``timeout`` the process is killed (which ends
    the blocking read) and the test fails."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        for line in stream:
            lines.append(line)
            if line.startswith(prefix):
                return lines
    finally:
        timer.cancel()
    pytest.fail(f"no line starting {prefix!r} (exit status {proc.wait()}): {''.join(lines)}")


class Gate:
    """A mock model server's responder that answers the first ``answered`` requests at once
    (as ``ArithmeticResponder`` does) and holds every later one until ``release()``: the
    eval is then certainly still running, however slow the machine, when the test acts.
    Leaving the ``with`` block releases it, so no server thread is left waiting."""

    def __init__(self, answered: int) -> None:
        self._left = answered
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._answer = ArithmeticResponder()
        self.held = 0  # requests waiting at the gate now

    def __call__(self, request: dict[str, Any]) -> str:
        with self._lock:
            self._left -= 1
            hold = self._left < 0 and not self._open.is_set()
            self.held += hold
        if hold:
            self._open.wait(2 * DEADLINE)
            with self._lock:
                self.held -= 1
        return self._answer(request)

    def release(self) -> None:
        self._open.set()

    @property
    def released(self) -> bool:
        return self._open.is_set()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def wait_for_fs_clock_past(directory: Path, t_ns: int, *, timeout: float = DEADLINE) -> None:
    """Wait until the filesystem's clock (which stamps mtimes, maybe coarsely) in
    ``directory`` reads later than ``t_ns``: what a test needs before an mtime must come
    strictly after another, never a sleep of a guessed length."""
    wait_until(
        lambda: filesystem_now_ns(directory) > t_ns,
        what="the filesystem clock moving on",
        timeout=timeout,
        interval=0.001,
    )
