#!/usr/bin/env python
"""Fingerprinting the code of an agent that imports 50 modules of the user's.

Run:  .venv/bin/python bench/bench_fingerprint.py [--modules 50] [--reps 200]

Writes a project to a temporary folder: ``agent.py`` importing ``m00`` .. ``m49`` (each ~40
lines, importing two standard-library modules, an installed package and the next module, so
the import graph is a chain as well as a fan), with mtimes in the past (a file modified in
the last 2 s is always read again: see ``osmo_store.eval.fingerprint``). Then it times
``load_callable("agent.py:solve")`` (what ``osmo eval`` runs for ``--agent``): cold (the
fingerprint caches cleared first, as in a new process: every file read, tokenized and
parsed; the import itself excluded; median of 5) and warm (median of ``--reps`` calls: a stat
per file). Target: warm <= 20 ms. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BODY = '''
import json
import re

import requests

{next_import}

PATTERN = re.compile(r"\\d+")


def helper_{i}(text: str) -> str:
    """Normalize ``text`` the way module {i} does."""
    found = PATTERN.findall(text)
    if not found:
        return text.strip()
    total = sum(int(x) for x in found)
    return json.dumps({{"module": {i}, "total": total}})


class Tool{i}:
    name = "tool_{i}"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, value: float) -> float:
        return value * self.scale + {i}


def describe() -> str:
    return f"module {i} with {{len(PATTERN.pattern)}} chars of pattern and {{requests.__name__}}"
'''


def write_project(folder: Path, modules: int) -> None:
    past = time.time() - 3600
    for i in range(modules):
        nxt = f"import m{i + 1:02d}  # noqa: F401" if i + 1 < modules else ""
        (folder / f"m{i:02d}.py").write_text(BODY.format(i=i, next_import=nxt))
    imports = "\n".join(f"import m{i:02d}" for i in range(modules))
    (folder / "agent.py").write_text(
        f"{imports}\n\n\ndef solve(messages, row, client):\n"
        "    return messages + [client.chat(messages)]\n"
    )
    for p in folder.iterdir():
        os.utime(p, (past, past))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", type=int, default=50)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    from osmo_store.eval.code import load_callable
    from osmo_store.eval.fingerprint import clear_caches

    with tempfile.TemporaryDirectory(prefix="osmo-fp-") as work:
        folder = Path(work)
        write_project(folder, args.modules)
        os.chdir(folder)
        spec = str(folder / "agent.py") + ":solve"
        sys.path.insert(0, str(folder))
        # Import first (not timed): the fingerprint is what is measured, not the user's import.
        __import__("agent")
        colds = []
        for _ in range(5):
            clear_caches()
            start = time.perf_counter()
            _, ref = load_callable(spec, "agent")
            colds.append(time.perf_counter() - start)
        cold = statistics.median(colds)
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            _, again = load_callable(spec, "agent")
            times.append(time.perf_counter() - start)
            assert again.fingerprint == ref.fingerprint
        files = len(ref.code.files) if ref.code else 0
        packages = dict(ref.code.packages) if ref.code else {}
    warm = statistics.median(times)
    print(f"files fingerprinted: {files}; packages: {packages}")
    print(f"cold (median of 5, every file read): {cold * 1000:8.2f} ms")
    print(f"warm (median of {args.reps}):              {warm * 1000:8.2f} ms")
    print(
        f"{'PASS' if warm <= 0.020 else 'MISS'}  warm fingerprint of an agent importing "
        f"{args.modules} user modules <= 20 ms: {warm * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
