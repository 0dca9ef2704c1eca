#!/usr/bin/env python
"""What the eval's recording endpoint costs, against `client.chat` (see bench/README.md).

Run:  .venv/bin/python bench/bench_endpoint.py [--quick] [--rows N] [--latency S]

The mock model server runs in a process of its own (its CPU is not this process's).

  1. Per-call overhead: 32 rollouts (threads) in flight at once, each making model calls
     through `AgentClient.chat` or, with a keep-alive httpx client (what the openai SDK
     uses), through the endpoint at `client.base_url`. Every call is a miss (it goes to the
     model). Rounds alternate the two ways; the figure is the median latency through the
     endpoint minus the median through `client.chat`. Target: <= 1 ms.
  2. A whole eval of N calls (one per run, concurrency 32) through `run_eval` on a local
     store, its agent calling `client.chat` or the endpoint (httpx); the two alternate per
     rep. The figure is the ratio of wall times. Target: <= 1.3x.

Nothing is asserted; PASS/MISS lines are printed and the script exits 0. The machine is
small and shared: the 1-minute load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from osmo_store import Repository  # noqa: E402
from osmo_store.eval.client import ChatClient  # noqa: E402
from osmo_store.eval.config import ModelSpec  # noqa: E402
from osmo_store.eval.endpoint import RecordingEndpoint  # noqa: E402
from osmo_store.eval.prepare import prepare_eval  # noqa: E402
from osmo_store.eval.runner import EvalOptions, run_eval  # noqa: E402
from osmo_store.eval.solver import AgentClient, ModelCaller, StoreLookup  # noqa: E402

MODEL = "osmo-mock"
CONCURRENCY = 32

CHAT_AGENT = """\
def solve(messages, row, client):
    return [*messages, client.chat(messages)]
"""
ENDPOINT_AGENT = """\
import threading
import httpx

_local = threading.local()

def solve(messages, row, client):
    http = getattr(_local, "http", None) or httpx.Client()
    _local.http = http
    answer = http.post(
        client.base_url + "/chat/completions",
        headers={"Authorization": "Bearer " + client.api_key},
        json={"model": client.model, "messages": messages},
    )
    answer.raise_for_status()
    return [*messages, answer.json()["choices"][0]["message"]]
"""


def start_mock(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "osmo_store.testing.mockserver", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f})"


def overhead(url: str, calls: int, rounds: int) -> dict[str, float]:
    """Median per-call latency each way, 32 rollouts in flight."""
    repo = Repository.memory()
    client = ChatClient(url, api_key="bench", pool_size=CONCURRENCY, max_retries=0)
    caller = ModelCaller(StoreLookup(repo), client, ModelSpec(MODEL, url))
    endpoint = RecordingEndpoint(MODEL)
    latencies: dict[str, list[float]] = {"chat": [], "endpoint": []}
    counter = iter(range(10**9))
    lock = threading.Lock()

    def rollout(way: str, index: int, http: httpx.Client) -> None:
        agent = AgentClient(caller, index, {}, None, endpoint=endpoint)
        mine = []
        with agent.endpoint:  # type: ignore[union-attr]
            for _ in range(calls):
                with lock:
                    n = next(counter)  # a new question each call: every call is a miss
                messages = [{"role": "user", "content": f"What is {n} + 1?"}]
                started = time.perf_counter()
                if way == "chat":
                    agent.chat(messages)
                else:
                    answer = http.post(
                        agent.base_url + "/chat/completions",
                        headers={"Authorization": f"Bearer {agent.api_key}"},
                        json={"model": MODEL, "messages": messages},
                    )
                    answer.raise_for_status()
                    answer.json()
                mine.append(time.perf_counter() - started)
        with lock:
            latencies[way].extend(mine)

    https = [httpx.Client() for _ in range(CONCURRENCY)]
    try:
        for r in range(rounds + 1):  # round 0 warms both ways up and is not counted
            for way in ("chat", "endpoint") if r % 2 else ("endpoint", "chat"):
                before = len(latencies[way])
                threads = [
                    threading.Thread(target=rollout, args=(way, i, https[i]))
                    for i in range(CONCURRENCY)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if r == 0:
                    del latencies[way][before:]
    finally:
        for http in https:
            http.close()
        endpoint.close()
        client.close()
    return {way: statistics.median(xs) for way, xs in latencies.items()}


def whole_eval(url: str, rows: int, reps: int, work: Path) -> dict[str, list[float]]:
    """Wall time of an eval of ``rows`` runs, its agent calling each way."""
    data = work / "data.jsonl"
    data.write_text(
        "".join(f'{{"user_prompt": "What is {i} + 1?", "ground_truth": "{i + 1}"}}\n'
                for i in range(rows))
    )  # fmt: skip
    (work / "fns.py").write_text("def exact(solution_str, ground_truth, extra_info):\n"
                                 "    return solution_str.strip() == ground_truth\n")  # fmt: skip
    (work / "chat_agent.py").write_text(CHAT_AGENT)
    (work / "endpoint_agent.py").write_text(ENDPOINT_AGENT)
    walls: dict[str, list[float]] = {"chat": [], "endpoint": []}
    for rep in range(reps):
        for way in ("chat", "endpoint") if rep % 2 == 0 else ("endpoint", "chat"):
            prepared = prepare_eval(
                data, [str(work / "fns.py") + ":exact"], model=MODEL, base_url=url,
                agent=str(work / f"{way}_agent.py") + ":solve",
            )  # fmt: skip
            store = work / f"store-{way}-{rep}"
            options = EvalOptions(concurrency=CONCURRENCY)
            with (
                Repository.open(store) as repo,
                ChatClient(url, api_key="bench", pool_size=CONCURRENCY) as client,
            ):
                started = time.perf_counter()
                outcome = run_eval(repo, prepared, client=client, options=options)
                wall = time.perf_counter() - started
            assert outcome.summary["runs"] == rows and outcome.session["model_calls"] == rows
            walls[way].append(wall)
            print(f"    eval rep {rep} {way:8}: {wall:6.2f} s  ({load()})", flush=True)
    return walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a loaded machine)")
    ap.add_argument("--rows", type=int, help="runs of the whole eval (default 10000)")
    ap.add_argument("--latency", type=float, default=0.02, help="model latency (default 0.02 s)")
    ap.add_argument("--reps", type=int, help="whole-eval repetitions per way (default 3)")
    args = ap.parse_args()
    rows = args.rows or (2000 if args.quick else 10000)
    reps = args.reps or (1 if args.quick else 3)
    calls, rounds = (10, 4) if args.quick else (30, 8)
    mock, url = start_mock(args.latency)
    try:
        print(f"{load()}; model latency {args.latency * 1000:.0f} ms, {CONCURRENCY} in flight")
        print(f"[1] per-call latency, {rounds} rounds x {CONCURRENCY} rollouts x {calls} calls")
        medians = overhead(url, calls, rounds)
        extra_ms = (medians["endpoint"] - medians["chat"]) * 1000
        print(f"    client.chat {medians['chat'] * 1000:.2f} ms, endpoint "
              f"{medians['endpoint'] * 1000:.2f} ms: +{extra_ms:.2f} ms per call")  # fmt: skip
        print(f"    {'PASS' if extra_ms <= 1.0 else 'MISS'} endpoint overhead <= 1 ms ({load()})")
        print(f"[2] a {rows}-call eval, concurrency {CONCURRENCY}, {reps} rep(s) per way")
        with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as work:
            walls = whole_eval(url, rows, reps, Path(work))
        chat, through = statistics.median(walls["chat"]), statistics.median(walls["endpoint"])
        ratio = through / chat
        print(f"    client.chat {chat:.2f} s, endpoint {through:.2f} s: {ratio:.2f}x")
        print(f"    {'PASS' if ratio <= 1.3 else 'MISS'} endpoint eval <= 1.3x ({load()})")
    finally:
        mock.terminate()
        mock.wait()


if __name__ == "__main__":
    main()
