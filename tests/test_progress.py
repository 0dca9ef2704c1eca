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


def test_retries_show_once_there_are_any_and_the_line_still_fits_80_columns() -> None:
    stream = FakeTTY()
    display = ProgressDisplay(stream, columns=80)
    display.update(Progress(total=20000, done=100, failed=3, passed=90, scored=97))
    assert "retries" not in stream.getvalue()
    busy = Progress(total=20000, done=15000, failed=1234, passed=9000, scored=12000,
                    reused=12345, retried=4567)  # fmt: skip
    display.update(busy)
    last = stream.getvalue().split("\r\x1b[2K")[-1]
    assert "retries 4567" in last and len(last) <= 79
    plain = io.StringIO()
    ProgressDisplay(plain).update(busy)
    assert "failed 1234 | retries 4567 | reused 12345" in plain.getvalue()
