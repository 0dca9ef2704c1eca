#!/usr/bin/env python
"""Start-up time of the `osmo` command line.

Run:  .venv/bin/python bench/bench_startup.py [--runs N] [--source DIR]

Times, as wall clock of a fresh process, `osmo --version`, `osmo eval cache ls` on an empty
temporary store, and `python -c pass` (the floor: what any Python command costs), and prints
the median of each over N runs with the ratio to the floor. The three are interleaved, the
order rotating per round, so drift on a shared machine hits all of them alike.

`--source DIR` runs the `osmo_store` package found in DIR instead of the installed one
(e.g. an export of another commit: `git archive main | tar -x -C /tmp/before`), so two
versions are compared with the same interpreter. Nothing is asserted; the script exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _time_once(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    ap.add_argument("--source", metavar="DIR", help="import osmo_store from DIR")
    args = ap.parse_args()

    # Bytecode caching on, as in any installed copy: else every run compiles every module.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OSMO_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    if args.source:
        # PYTHONPATH comes before the editable install's finder on the import path.
        env["PYTHONPATH"] = os.path.abspath(args.source)
    osmo = [sys.executable, "-m", "osmo_store.cli"]
    with tempfile.TemporaryDirectory(prefix="osmo-startup-") as work:
        # Run from an empty directory: `python -m` puts the working directory first on the
        # import path, and a checkout there would shadow the code under test.
        store = os.path.join(work, "store")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "osmo --version": [*osmo, "--version"],
            "osmo eval cache ls": [*osmo, "--store", store, "eval", "cache", "ls"],
        }
        names = list(commands)
        for name in names:  # warm the page cache and write the bytecode cache
            _time_once(commands[name], env, work)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.runs):
            for name in names[i % 3 :] + names[: i % 3]:
                samples[name].append(_time_once(commands[name], env, work))

    floor = statistics.median(samples["python -c pass"])
    print(f"median wall time over {args.runs} runs ({sys.executable}"
          f"{', osmo_store from ' + args.source if args.source else ''})")  # fmt: skip
    for name in names:
        med = statistics.median(samples[name])
        print(f"  {name:<20} {med * 1000:7.1f} ms   {med / floor:5.2f}x the floor"
              f"   {(med - floor) * 1000:6.1f} ms above it")  # fmt: skip


if __name__ == "__main__":
    main()
