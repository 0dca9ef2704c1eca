"""A tiny sampling profiler for threaded code, shared by the benchmarks (cProfile sees
only one thread)."""

from __future__ import annotations

import io
import re
import sys
import threading
from collections import Counter
from typing import Any


class Sampler:
    """Samples every thread's stack every ``interval`` s (wall clock: a thread blocked in
    fsync or a socket shows where it waits). 'self' = innermost frame; 'incl' = on stack."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.self_counts: Counter = Counter()
        self.incl_counts: Counter = Counter()
        self.samples = 0
        self.idle: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-sampler")

    #: innermost frames of a thread that waits for work (waitress workers, its poll loop)
    IDLE = frozenset({"wait", "poll2", "poll", "select"})

    @staticmethod
    def _label(code: Any) -> str:
        fn = code.co_filename
        for marker in ("osmo_store/", "site-packages/", "lib/python3"):
            i = fn.find(marker)
            if i >= 0:
                fn = fn[i:]
                break
        return f"{fn}:{code.co_firstlineno}({code.co_name})"

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                group = re.sub(r"[-_\d]+$", "", names.get(tid, "?"))
                if frame.f_code.co_name in self.IDLE:
                    self.idle[group] += 1  # a thread waiting for work, not working
                    continue
                self.self_counts[(group, self._label(frame.f_code))] += 1
                seen = set()
                f = frame
                while f is not None:
                    lab = self._label(f.f_code)
                    if lab not in seen:
                        seen.add(lab)
                        self.incl_counts[(group, lab)] += 1
                    f = f.f_back
                self.samples += 1

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, top: int = 40) -> str:
        out = io.StringIO()
        out.write(
            f"{self.samples} busy thread-samples every {self.interval * 1e3:.0f} ms; "
            f"idle (waiting for work) samples not counted: {dict(self.idle)}\n"
        )
        out.write("\n== self (innermost frame), by thread group\n")
        for (group, lab), c in self.self_counts.most_common(top):
            out.write(f"{c:7d}  {group:24s} {lab}\n")
        out.write("\n== inclusive (on stack), by thread group\n")
        for (group, lab), c in self.incl_counts.most_common(top * 2):
            out.write(f"{c:7d}  {group:24s} {lab}\n")
        return out.getvalue()
