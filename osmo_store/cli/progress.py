"""Progress while an eval runs: a live bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import shutil
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
    """Renders ``Progress`` snapshots: done/total, rate, ETA, pass rate, failures. On a
    terminal, one line redrawn in place that fits its width (a line that wraps is redrawn
    below itself and floods the screen); elsewhere a plain line every ``interval`` s."""

    PLAIN_INTERVAL = 5.0
    BAR_WIDTH = 30
    MIN_BAR = 10

    def __init__(
        self, stream: TextIO, *, columns: int | None = None, interval: float = PLAIN_INTERVAL
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.columns = columns or shutil.get_terminal_size(fallback=(80, 24)).columns
        self.interval = interval
        self._last_plain = 0.0
        self._base: tuple[float, int] | None = None
        self._closed = False

    # The fields as shown, left to right; ``parts`` lists them by importance instead.
    SHOWN = ("count", "rate", "eta", "pass", "failed", "retries", "reused")

    def parts(self, p: Progress) -> dict[str, str]:
        """The line's fields, most important first."""
        now = time.time()
        if self._base is None:
            self._base = (now, p.done)
        t0, d0 = self._base
        rate = (p.done - d0) / (now - t0) if now > t0 and p.done > d0 else 0.0
        left = p.total - p.done
        eta = _eta(left / rate) if rate > 0 else ("00:00" if left == 0 else "?")
        pct = p.done / p.total if p.total else 1.0
        passed = f"{100 * p.passed / p.scored:.0f}%" if p.scored else "-"
        parts = {"count": f"{p.done}/{p.total} runs {100 * pct:3.0f}%", "eta": f"ETA {eta}",
                 "failed": f"failed {p.failed}"}  # fmt: skip
        if p.retried:  # the endpoint is struggling (rate limits, 5xx): worth a column
            parts["retries"] = f"retries {p.retried}"
        parts["pass"] = f"pass {passed}"
        if p.reused:  # counted in pass: the line says how many there are
            parts["reused"] = f"reused {p.reused}"
        parts["rate"] = f"{rate:.1f} runs/s"
        return parts

    def line(self, p: Progress) -> str:
        parts = self.parts(p)
        importance = list(parts)
        shown = [name for name in self.SHOWN if name in parts]
        if not self.tty:
            return " | ".join(parts[name] for name in shown)
        # The last column is left free: some terminals wrap a line that fills it.
        room = self.columns - 1
        while True:
            text = " | ".join(parts[name] for name in shown)
            bar = min(self.BAR_WIDTH, room - len(text) - 3)
            if bar >= self.MIN_BAR or len(shown) == 1:
                break
            shown.remove(max(shown, key=importance.index))  # drop the least important field
        pct = p.done / p.total if p.total else 1.0
        if bar >= self.MIN_BAR:
            filled = int(bar * pct)
            text = f"[{'#' * filled}{'.' * (bar - filled)}] {text}"
        return text[:room]

    def update(self, p: Progress) -> None:
        if self._closed:
            return
        text = self.line(p)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
        elif time.time() - self._last_plain >= self.interval or p.done == p.total:
            self._last_plain = time.time()
            self.stream.write("osmo: " + text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if not self._closed and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True
