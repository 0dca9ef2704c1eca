#!/usr/bin/env python
"""CPU and wall time per call of the eval's model client (`ChatClient.chat`).

Run:  .venv/bin/python bench/bench_client.py [--calls N] [--rounds R] [--compare FILE]

Starts the mock model server in its own process (so its CPU is not counted), then times N
sequential `chat()` calls per round, R rounds, and prints the medians: CPU of this process
per call (the figure that holds on a busy machine) and wall time per call.

`--compare FILE` also times another version of `osmo_store/eval/client.py` (for example
`git show eb5d531:osmo_store/eval/client.py > /tmp/old_client.py`), interleaved with the
installed one, the order alternating per round, and prints the CPU ratio. Nothing is
asserted; the script exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import subprocess
import sys
import time
from types import ModuleType


def _load_copy(path: str) -> ModuleType:
    """Import a client.py saved elsewhere, its relative imports pointed at the package."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    source = re.sub(r"from \.\.(\w+)", r"from osmo_store.\1", source)
    source = re.sub(r"from \.(\w+)", r"from osmo_store.eval.\1", source)
    spec = importlib.util.spec_from_loader("compared_client", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    exec(compile(source, path, "exec"), module.__dict__)
    return module


def _round(module: ModuleType, url: str, calls: int) -> tuple[float, float]:
    request = {"model": "osmo-mock", "messages": [{"role": "user", "content": "6 * 7"}]}
    client = module.ChatClient(url, api_key="bench", pool_size=4)
    try:
        for _ in range(50):  # connect and warm up
            client.chat(request)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            client.chat(request)
        return (time.process_time() - cpu) / calls, (time.perf_counter() - wall) / calls
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1500, help="calls per round (default 1500)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds per client (default 7)")
    ap.add_argument("--compare", metavar="FILE", help="another client.py to time, interleaved")
    args = ap.parse_args()

    from osmo_store.eval import client as installed

    clients = {"installed": installed}
    if args.compare:
        clients[args.compare] = _load_copy(args.compare)
    server = subprocess.Popen(
        [sys.executable, "-m", "osmo_store.testing.mockserver"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        found = re.search(r"http://\S+", server.stdout.readline())
        if not found:
            raise SystemExit("the mock server did not print its URL")
        url = found.group(0).rstrip(".,")
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        names = list(clients)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                figures[name].append(_round(clients[name], url, args.calls))
    finally:
        server.terminate()
        server.wait()
    cpu = {name: statistics.median(f[0] for f in rows) for name, rows in figures.items()}
    for name, rows in figures.items():
        wall = statistics.median(f[1] for f in rows)
        print(f"{name}: {cpu[name] * 1e6:.0f} us CPU/call, {wall * 1e6:.0f} us wall/call "
              f"(medians of {args.rounds} x {args.calls} sequential calls)")  # fmt: skip
    if args.compare:
        print(
            f"CPU per call, {args.compare} / installed: {cpu[args.compare] / cpu['installed']:.2f}x"
        )


if __name__ == "__main__":
    main()
