#!/usr/bin/env python
"""Peak memory of an eval and of `osmo eval cache ls` (issue 11; see bench/README.md).

Run:  .venv/bin/python bench/bench_memory.py [--sizes 10000,100000] [--configs 5000] [--only ab]

  a. peak RSS of `osmo eval` (the eval process, its recorder process, and the short git
     calls of provenance) at each size, n=1, concurrency 16, against the mock server on
     127.0.0.1 (zero latency) in this process; the sizes run side by side in one run and
     their ratio is reported.
  b. peak RSS of `osmo eval cache ls` (and `--json`) over ``--configs`` configs whose run
     records carry a real eval's metadata: all in one pack, and one pack per config.

The eval's processes are sampled every 10 ms from /proc (Linux only): the peak of their
summed RSS, and each one's own peak (VmHWM, which only grows: the last sample before a
process ends is its peak, give or take its last 10 ms). Figures go
to bench/out/bench_memory.json; PASS/MISS lines, exit 0 either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT = BENCH_DIR / "out"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_eval import build_configs, osmo_cmd, template_meta  # noqa: E402
from synthetic import write_dataset  # noqa: E402

from osmo_store.testing.mockserver import MockServer  # noqa: E402

SCORING = ROOT / "examples" / "scoring.py"
MB = 1024 * 1024
TARGET_BIG_MB = 150  # at 100,000 runs
TARGET_GROWTH = 1.2  # 10,000 -> 100,000 runs
TARGET_LS_MB = 60  # at 5,000 configs


def log(msg: str = "") -> None:
    print(msg, flush=True)


def _descendants(pid: int) -> list[int]:
    out = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        for kid in kids:
            out += _descendants(int(kid))
    return out


def _status_kib(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM", "Name"):
                    found[name] = value.strip() if name == "Name" else int(value.split()[0])
    except OSError:
        pass
    return found


class TreeSampler:
    """Samples a process tree's RSS until stopped: the peak of the sum, each one's VmHWM."""

    def __init__(self, root: int, interval: float = 0.01) -> None:
        self.root, self.interval = root, interval
        self.peak_sum_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in _descendants(self.root):
                st = _status_kib(pid)
                if "VmRSS" not in st:
                    continue
                total += st["VmRSS"]
                self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), st["VmHWM"])
                self.names.setdefault(pid, st.get("Name", "?"))
            self.peak_sum_kib = max(self.peak_sum_kib, total)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; its peak RSS and its children's (VmHWM, sampled to the end), the peak
    of their sum. Not ru_maxrss: Linux keeps a process's maximum across exec, so a child
    spawned by this (large) process would report this process's RSS as its own."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid)
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:8])}... exited {proc.returncode}: {stderr[-2000:]!r}")
    own = sampler.hwm_kib.get(proc.pid, 0)
    others = {f"{sampler.names[p]}:{p}": kib for p, kib in sampler.hwm_kib.items() if p != proc.pid}
    return {
        "wall_s": wall,
        "self_mb": own / 1024,
        "children_mb": {k: v / 1024 for k, v in others.items()},
        "peak_sum_sampled_mb": sampler.peak_sum_kib / 1024,
        "sum_of_peaks_mb": (own + sum(others.values())) / 1024,
    }


def section_eval(work: Path, sizes: list[int], res: dict) -> None:
    log(f"\n[a] peak RSS of `osmo eval`, n=1, concurrency 16, zero latency: {sizes}")
    out = {}
    with MockServer() as server:
        for size in sizes:
            data = write_dataset(work / f"eval-{size}.jsonl", size, seed="mem", row_id="m-{:07d}")
            store = work / f"eval-store-{size}"
            cmd = [
                *osmo_cmd(), "--store", str(store), "--create", "eval", "-d", str(data),
                "--model", "mem-model",
                "--base-url", server.base_url, "--eval-fn", f"{SCORING}:exact_match",
                "--concurrency", "16", "--json", "-q",
            ]  # fmt: skip
            m = run_measured(cmd)
            m["runs_per_s"] = size / m["wall_s"]
            out[size] = m
            recorder = max(m["children_mb"].values(), default=0.0)
            log(
                f"    {size:>7,} runs: peak (all processes, sampled) {m['peak_sum_sampled_mb']:.1f}"
                f" MB; eval {m['self_mb']:.1f} MB, largest child {recorder:.1f} MB; "
                f"{m['wall_s']:.1f} s ({m['runs_per_s']:.0f} runs/s)"
            )
            shutil.rmtree(store)
    res["eval"] = out
    small, big = min(sizes), max(sizes)
    if small != big:
        ratio = out[big]["peak_sum_sampled_mb"] / out[small]["peak_sum_sampled_mb"]
        res["eval_growth"] = ratio
        log(f"  => {small:,} -> {big:,} runs: x{ratio:.2f} (target <= {TARGET_GROWTH})")
        log(f"  {'PASS' if ratio <= TARGET_GROWTH else 'MISS'} growth x{ratio:.2f}")
    if big >= 100_000:
        peak = out[big]["peak_sum_sampled_mb"]
        log(f"  {'PASS' if peak <= TARGET_BIG_MB else 'MISS'} {big:,} runs: {peak:.1f} MB")


def section_ls(work: Path, configs: int, res: dict) -> None:
    log(f"\n[b] peak RSS of `osmo eval cache ls` over {configs:,} configs")
    template = template_meta(work)
    out = {}
    for layout, each in (("one_pack", False), ("pack_per_config", True)):
        store = work / f"ls-{layout}"
        build_configs(store, configs, template, one_pack_each=each)
        for flag in ([], ["--json"]):
            m = run_measured([*osmo_cmd(), "--store", str(store), "eval", "cache", "ls", *flag])
            name = f"{layout}{'_json' if flag else ''}"
            out[name] = m
            verdict = "PASS" if m["self_mb"] <= TARGET_LS_MB else "MISS"
            log(f"  {verdict} {name}: {m['self_mb']:.1f} MB, {m['wall_s']:.2f} s")
        shutil.rmtree(store)
    res["ls"] = out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000", help="eval sizes in runs, comma-separated")
    ap.add_argument("--configs", type=int, default=5000)
    ap.add_argument("--only", default="ab")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        log("needs Linux (/proc)")
        return 0
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mem-run-", dir=OUT))
    res: dict = {"load_start": os.getloadavg()}
    try:
        if "a" in args.only:
            section_eval(work, [int(s) for s in args.sizes.split(",")], res)
        if "b" in args.only:
            section_ls(work, args.configs, res)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["load_end"] = os.getloadavg()
    (OUT / "bench_memory.json").write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
