#!/usr/bin/env python
"""Where an answer waits before a killed `osmo eval` keeps it (issue 11; bench/README.md).

A diagnostic for bench_durable.py's "answered, not kept": one whole (not killed) eval of
--rows runs, C=16, against the mock server (10 ms), under the same busy loop, with `osmo`
run through this file so that it stamps, per run, when ``_execute`` returned (the answer
received, parsed and scored) and when the journal wrote its group (``write``: what a
SIGKILL no longer loses, the pages being the kernel's) and delivered it (after
``fdatasync``: what a power loss no longer loses). The mock server's exchanges give when
each answer was completely written. Printed: the distribution of each step, and how many
answers are written-but-not-journaled at a request's arrival (the instants
bench_durable.py's kills are triggered at) and at uniformly drawn instants.

Run:  .venv/bin/python bench/bench_kill_window.py [--rows 2000] [--no-busy-loop]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
OUT = BENCH_DIR / "out"
STAMPS = "OSMO_KILL_WINDOW_STAMPS"  # set: this file is the stamping `osmo`


def stamping_osmo() -> None:
    """`osmo` with the stamps; they go to the file ``$OSMO_KILL_WINDOW_STAMPS`` at exit."""
    import atexit

    from osmo_store.cli.main import main
    from osmo_store.eval import journal, runner

    stamps: list[tuple[str, float | None, float, float]] = []
    scored: dict[int, float] = {}
    written = [0.0]
    execute, write_all, init = runner._execute, journal.write_all, journal.Journal.__init__

    def timed_execute(*args, **kwargs):
        res = execute(*args, **kwargs)
        scored[id(res)] = time.monotonic()
        return res

    def timed_write_all(fd: int, data: bytes) -> None:
        write_all(fd, data)
        written[0] = time.monotonic()  # the group just written: delivered next

    def timed_init(self, directory, *, writers, backlog, deliver):
        def timed_deliver(seq, res):
            if res.objects and res.objects[0].content:  # the row: its question
                question = json.loads(res.objects[0].content)["user_prompt"]
                stamps.append((question, scored.pop(id(res), None), written[0], time.monotonic()))
            deliver(seq, res)

        init(self, directory, writers=writers, backlog=backlog, deliver=timed_deliver)

    runner._execute = timed_execute
    journal.write_all = timed_write_all
    journal.Journal.__init__ = timed_init
    atexit.register(lambda: Path(os.environ[STAMPS]).write_text(json.dumps(stamps)))
    sys.exit(main())


def quantiles(ms: list[float]) -> str:
    v, n = sorted(ms), len(ms)
    return (f"p50 {v[n // 2]:5.1f}  p90 {v[int(n * 0.9)]:5.1f}  p99 {v[int(n * 0.99)]:5.1f}  "
            f"max {v[-1]:6.1f}  mean {statistics.mean(v):5.1f} ms")  # fmt: skip


def main() -> int:
    sys.path.insert(0, str(BENCH_DIR.parent))
    sys.path.insert(0, str(BENCH_DIR))
    from bench_durable import EXAMPLE_FNS, WORKERS, busy_loop, eval_cmd
    from synthetic import write_dataset

    from osmo_store.testing.mockserver import MockServer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.01)
    ap.add_argument("--no-busy-loop", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT, prefix="kill-window-") as tmp:
        work = Path(tmp)
        dataset = write_dataset(work / "kill.jsonl", args.rows, seed="kill", row_id="k-{:06d}")
        env = {**os.environ, STAMPS: str(work / "stamps.json")}
        with MockServer(latency=args.latency) as srv:
            cmd = eval_cmd(work / "store", dataset, srv.base_url, f"{EXAMPLE_FNS}:exact_match")
            cmd = [sys.executable, __file__, *cmd[cmd.index("--store") :]]
            if args.no_busy_loop:
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            else:
                with busy_loop():
                    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise SystemExit(r.stderr[-2000:])
            exchanges = srv.exchanges
        stamps = json.loads((work / "stamps.json").read_text())
    load = os.getloadavg()[0]
    answered = {e.request["messages"][-1]["content"]: e.answered for e in exchanges}
    print(f"{len(stamps):,} runs, C={WORKERS}, latency {args.latency * 1e3:g} ms, "
          f"load {load:.1f}{'' if args.no_busy_loop else ', busy loop'}")  # fmt: skip
    steps = {
        "scored (client)": [(s - answered[q]) * 1e3 for q, s, _, _ in stamps if s],
        "journal write()": [(w - answered[q]) * 1e3 for q, _, w, _ in stamps],
        "fdatasync done ": [(d - answered[q]) * 1e3 for q, _, _, d in stamps],
    }
    for name, ms in steps.items():
        print(f"  answer written -> {name}: {quantiles(ms)}")
    unwritten = [(answered[q], w) for q, _, w, _ in stamps]
    arrivals = sorted(e.arrived for e in exchanges)
    lo, hi = arrivals[len(arrivals) // 20], arrivals[-len(arrivals) // 20]
    rng = random.Random(11)
    at_arrival = rng.sample([a for a in arrivals if lo <= a <= hi], 300)
    uniform = [rng.uniform(lo, hi) for _ in range(300)]
    for name, instants in (("at an arrival", at_arrival), ("at uniform instants", uniform)):
        held = [sum(1 for a, w in unwritten if a <= t < w) for t in instants]
        print(f"  answered, not yet journaled, {name}: mean {statistics.mean(held):.2f}, "
              f"max {max(held)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    if os.environ.get(STAMPS):
        stamping_osmo()
    else:
        sys.exit(main())
