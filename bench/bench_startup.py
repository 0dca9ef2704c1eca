#!/usr/bin/env python
"""Start-up time of the `osmo` command line.

Run:  .venv/bin/python bench/bench_startup.py [--runs N] [--compare DIR]

Times, as wall clock and as CPU time (user + system) of a fresh process, `osmo --version`,
`osmo eval cache ls` on an empty temporary store, and `python -c pass` (the floor: what any
Python command costs), and prints the median of each over N runs with the ratio to the
floor. The three are interleaved, the order rotating per round, so drift on a shared machine
hits all of them alike; CPU time moves far less than wall time when the machine is busy.

`--compare DIR` also times the `osmo_store` package found in DIR (e.g. an export of another
commit: `git archive main | tar -x -C /tmp/before`) with the same interpreter, interleaved
with the installed one, and prints the speed-up. Nothing is asserted; the script exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _time_once(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {errors.decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    ap.add_argument("--compare", metavar="DIR", help="also time the osmo_store in DIR, interleaved")
    args = ap.parse_args()

    # Bytecode caching on, as in any installed copy: else every run compiles every module.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OSMO_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    # `--store PATH` names a new store: osmo makes it only when asked (the variable, unlike
    # --create, is understood by the older code --compare times too).
    env["OSMO_CREATE"] = "1"
    sources = {"installed": env}
    if args.compare:
        # PYTHONPATH comes before the editable install's finder on the import path.
        sources[args.compare] = {**env, "PYTHONPATH": os.path.abspath(args.compare)}
    osmo = [sys.executable, "-m", "osmo_store.cli"]
    with tempfile.TemporaryDirectory(prefix="osmo-startup-") as work:
        # Run from an empty directory: `python -m` puts the working directory first on the
        # import path, and a checkout there would shadow the code under test.
        runs = [("python -c pass", [sys.executable, "-c", "pass"], env)]
        for n, (label, source_env) in enumerate(sources.items()):
            # A store per source: each code makes its own (an older osmo refuses a store of
            # a newer format version).
            store = os.path.join(work, f"store-{n}")
            runs.append((f"{label}: osmo --version", [*osmo, "--version"], source_env))
            runs.append((f"{label}: osmo eval cache ls",
                         [*osmo, "--store", store, "eval", "cache", "ls"], source_env))  # fmt: skip
        for _, cmd, cmd_env in runs:  # warm the page cache and write the bytecode cache
            _time_once(cmd, cmd_env, work)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in runs}
        for i in range(args.runs):
            shift = i % len(runs)
            for name, cmd, cmd_env in runs[shift:] + runs[:shift]:
                samples[name].append(_time_once(cmd, cmd_env, work))

    # CPU time is printed beside wall time: on a busy machine it moves far less.
    for kind, index in (("wall", 0), ("CPU (user + system)", 1)):
        medians = {name: statistics.median(t[index] for t in ts) for name, ts in samples.items()}
        floor = medians["python -c pass"]
        print(f"median {kind} time over {args.runs} runs, {sys.executable}")
        for name, med in medians.items():
            print(f"  {name:<40} {med * 1000:7.1f} ms   {med / floor:5.2f}x the floor"
                  f"   {(med - floor) * 1000:6.1f} ms above it")  # fmt: skip
        if args.compare:
            print(f"  speed-up of installed over {args.compare}:")
            for what in ("osmo --version", "osmo eval cache ls"):
                ratio = medians[f"{args.compare}: {what}"] / medians[f"installed: {what}"]
                print(f"    {what:<38} {ratio:5.2f}x")


if __name__ == "__main__":
    main()
