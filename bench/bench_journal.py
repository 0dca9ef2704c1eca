#!/usr/bin/env python
"""How long ``Journal.append`` takes at a given pace (see bench/README.md, issue 14).

Run:  .venv/bin/python bench/bench_journal.py [--rate 160 1600] [--seconds 8] [--code DIR]

32 writer threads append results at random times (exponential gaps), ``--rate`` results per
second in all, as an eval's workers do when each call an agent makes is journaled; the
median and p90 of ``append`` (the wait for the result to be on disk) are printed, with how
many groups waited for more results. ``--code DIR`` imports ``osmo_store`` from DIR instead
(an older tree: ``git archive REV osmo_store | tar -x -C DIR``), for a before/after in one
sitting. The journal is written under a temporary folder in the current directory (the
store's disk, not a tmpfs). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

WRITERS = 32


def run(rate: float, seconds: float) -> None:
    from osmo_store.eval.journal import Journal
    from osmo_store.eval.state import SampleResult, blob

    def result(i: int) -> SampleResult:
        record = json.dumps({"row": f"r{i}", "run": 0}).encode()
        answer = blob(f"k{i}", "cache", f"answer {i}".encode() * 20)
        return SampleResult(f"r{i}.0", False, record, json.loads(record), [answer])

    with tempfile.TemporaryDirectory(prefix="bench-journal-", dir=".") as work:
        journal = Journal(Path(work) / "j", writers=WRITERS, backlog=10**9,
                          deliver=lambda seq, res: None)  # fmt: skip
        times: list[float] = []
        lock = threading.Lock()
        counter = iter(range(10**9))
        stop = time.monotonic() + seconds

        def writer() -> None:
            mine = []
            while time.monotonic() < stop:
                time.sleep(random.expovariate(rate / WRITERS))
                with lock:
                    i = next(counter)
                started = time.perf_counter()
                journal.append(result(i))
                mine.append(time.perf_counter() - started)
            with lock:
                times.extend(mine)

        threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        journal.close()
    p90 = statistics.quantiles(times, n=10)[8]
    waits = getattr(journal, "group_waits", "-")  # older trees do not count them
    print(f"  {rate:6.0f} results/s: {len(times):6} appends, median "
          f"{statistics.median(times) * 1000:5.2f} ms, p90 {p90 * 1000:5.2f} ms, "
          f"groups that waited: {waits}  (load average {os.getloadavg()[0]:.1f})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, nargs="+", default=[160.0, 1600.0],
                    help="results per second, from 32 writers (default 160 1600)")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=8.0, help="per rate (default 8)")
    ap.add_argument("--code", help="import osmo_store from this folder")
    args = ap.parse_args()
    root = args.code or str(Path(__file__).resolve().parent.parent)
    sys.path.insert(0, root)
    print(f"Journal.append, {WRITERS} writers, osmo_store from {root}")
    for rate in args.rate:
        run(rate, args.seconds)


if __name__ == "__main__":
    main()
