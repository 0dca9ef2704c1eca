"""Progress while an eval runs: a live bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..eval.runner import Progress


def _eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0 or seconds > 99 * 3600:  # NaN or absurd
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressDisplay:
    """Renders ``Progress`` snapshots: done/total, rate, ETA, pass rate, failures."""

    PLAIN_INTERVAL = 5.0

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.width = width
        self._last_plain = 0.0
        self._base: tuple[float, int] | None = None
        self._closed = False

    def line(self, p: Progress) -> str:
        now = time.time()
        if self._base is None:
            self._base = (now, p.done)
        t0, d0 = self._base
        rate = (p.done - d0) / (now - t0) if now > t0 and p.done > d0 else 0.0
        left = p.total - p.done
        eta = _eta(left / rate) if rate > 0 else ("00:00" if left == 0 else "?")
        pct = p.done / p.total if p.total else 1.0
        passed = f"{100 * p.passed / p.scored:.0f}%" if p.scored else "-"
        text = (
            f"{p.done}/{p.total} runs {100 * pct:3.0f}% | {rate:.1f} runs/s | ETA {eta} "
            f"| pass {passed} | failed {p.failed}"
        )
        if p.reused:
            text += f" | reused {p.reused}"
        if self.tty:
            filled = int(self.width * pct)
            text = f"[{'#' * filled}{'.' * (self.width - filled)}] {text}"
        return text

    def update(self, p: Progress) -> None:
        if self._closed:
            return
        text = self.line(p)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
        elif time.time() - self._last_plain >= self.PLAIN_INTERVAL or p.done == p.total:
            self._last_plain = time.time()
            self.stream.write("osmo: " + text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if not self._closed and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True
