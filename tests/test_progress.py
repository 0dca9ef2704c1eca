from __future__ import annotations

import io

from osmo_store.cli.progress import ProgressDisplay
from osmo_store.eval.runner import Progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_live_bar_redrawn_in_place() -> None:
    stream = FakeTTY()
    display = ProgressDisplay(stream, columns=120)
    display.update(Progress(total=10, done=2, failed=1, passed=1, scored=1))
    display.update(Progress(total=10, done=5, failed=1, passed=3, scored=4))
    display.close()
    text = stream.getvalue()
    assert text.count("\r\x1b[2K") == 2 and text.endswith("\n")
    last = text.split("\r\x1b[2K")[-1]
    assert "[###############..............." in last
    assert "5/10 runs" in last and "pass 75%" in last and "failed 1" in last and "ETA" in last


def test_pipe_gets_plain_lines_without_control_characters() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream)
    display.update(Progress(total=4, done=1))
    display.update(Progress(total=4, done=2))  # within the interval: not printed
    display.update(Progress(total=4, done=4))  # the end is always printed
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("osmo: ") for line in lines)
    assert "\r" not in stream.getvalue() and "4/4 runs" in lines[-1]


def test_fields_keep_their_order_off_a_terminal() -> None:
    stream = io.StringIO()
    ProgressDisplay(stream).update(Progress(total=4, done=4, failed=1, reused=2))
    line = stream.getvalue()
    fields = ["runs/s", "ETA", "pass", "failed", "reused"]
    assert sorted(fields, key=line.index) == fields
