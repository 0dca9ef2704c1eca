#!/usr/bin/env python
"""What the eval's recording endpoint costs, against `client.chat` (see bench/README.md).

Run:  .venv/bin/python bench/bench_endpoint.py [--quick] [--rows N] [--latency S]

The mock model server runs in a process of its own (its CPU is not this process's).

  1. Per-call overhead: 32 rollouts (threads) in flight at once, each making model calls
     through `AgentClient.chat` or through the endpoint at `client.base_url`, with a
     keep-alive httpx client (the openai SDK's transport) or urllib3 (a leaner client: the
     endpoint's own share). Every call is a miss (it goes to the model). The order of the
     ways rotates per round; the figure is the median latency through the endpoint minus
     the median through `client.chat`, and the CPU of this process per call. Target: <= 1 ms.
  2. A whole eval of N calls (one per run, concurrency 32) through `run_eval` on a local
     store, its agent calling each of those ways, the order rotating per rep. The figure is
     the ratio of wall times (and of CPU). Target: <= 1.3x.

Nothing is asserted; PASS/MISS lines are printed and the script exits 0. The machine is
small and shared: the 1-minute load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import urllib3

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
HTTPX_AGENT = """\
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
URLLIB3_AGENT = """\
import json
import urllib3

_pool = urllib3.PoolManager(maxsize=64)

def solve(messages, row, client):
    answer = _pool.urlopen(
        "POST", client.base_url + "/chat/completions",
        body=json.dumps({"model": client.model, "messages": messages}).encode(),
        headers={"Authorization": "Bearer " + client.api_key,
                 "Content-Type": "application/json"},
    )
    assert answer.status == 200, answer.data
    return [*messages, json.loads(answer.data)["choices"][0]["message"]]
"""
#: how an agent calls the model: osmo's client.chat; the endpoint through httpx (the openai
#: SDK's transport); the endpoint through urllib3 (a lean client: the endpoint's own share)
AGENTS = {"chat": CHAT_AGENT, "httpx": HTTPX_AGENT, "urllib3": URLLIB3_AGENT}


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


def overhead(url: str, calls: int, rounds: int) -> dict[str, tuple[float, float]]:
    """(median latency, CPU of this process) per call each way, 32 rollouts in flight."""
    repo = Repository.memory()
    client = ChatClient(url, api_key="bench", pool_size=CONCURRENCY, max_retries=0)
    caller = ModelCaller(StoreLookup(repo), client, ModelSpec(MODEL, url))
    endpoint = RecordingEndpoint(MODEL)
    latencies: dict[str, list[float]] = {way: [] for way in AGENTS}
    cpu = dict.fromkeys(AGENTS, 0.0)
    counter = iter(range(10**9))
    lock = threading.Lock()
    pool = urllib3.PoolManager(maxsize=CONCURRENCY)
    https = [httpx.Client() for _ in range(CONCURRENCY)]

    def ask(way: str, agent: AgentClient, http: httpx.Client, messages: list) -> None:
        url = agent.base_url + "/chat/completions"
        auth = f"Bearer {agent.api_key}"
        if way == "chat":
            agent.chat(messages)
        elif way == "httpx":
            answer = http.post(
                url, headers={"Authorization": auth}, json={"model": MODEL, "messages": messages}
            )
            answer.raise_for_status()
            answer.json()
        else:
            body = json.dumps({"model": MODEL, "messages": messages}).encode()
            headers = {"Authorization": auth, "Content-Type": "application/json"}
            raw = pool.urlopen("POST", url, body=body, headers=headers)
            assert raw.status == 200, raw.data
            json.loads(raw.data)

    def rollout(way: str, index: int) -> None:
        agent = AgentClient(caller, index, {}, None, endpoint=endpoint)
        mine = []
        with agent.endpoint:  # type: ignore[union-attr]
            for _ in range(calls):
                with lock:
                    n = next(counter)  # a new question each call: every call is a miss
                started = time.perf_counter()
                ask(way, agent, https[index], [{"role": "user", "content": f"What is {n} + 1?"}])
                mine.append(time.perf_counter() - started)
        with lock:
            latencies[way].extend(mine)

    ways = list(AGENTS)
    try:
        for r in range(rounds + 1):  # round 0 warms every way up and is not counted
            for way in ways[r % 3 :] + ways[: r % 3]:  # the order rotates per round
                before, started = len(latencies[way]), time.process_time()
                threads = [
                    threading.Thread(target=rollout, args=(way, i)) for i in range(CONCURRENCY)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if r == 0:
                    del latencies[way][before:]
                else:
                    cpu[way] += time.process_time() - started
    finally:
        for http in https:
            http.close()
        endpoint.close()
        client.close()
    return {way: (statistics.median(xs), cpu[way] / len(xs)) for way, xs in latencies.items()}


def whole_eval(url: str, rows: int, reps: int, work: Path) -> dict[str, list[tuple[float, float]]]:
    """(wall time, CPU of this process) of an eval of ``rows`` runs, its agent calling each
    way; the order rotates per rep."""
    data = work / "data.jsonl"
    data.write_text(
        "".join(f'{{"user_prompt": "What is {i} + 1?", "ground_truth": "{i + 1}"}}\n'
                for i in range(rows))
    )  # fmt: skip
    (work / "fns.py").write_text("def exact(solution_str, ground_truth, extra_info):\n"
                                 "    return solution_str.strip() == ground_truth\n")  # fmt: skip
    for way, source in AGENTS.items():
        (work / f"{way}_agent.py").write_text(source)
    runs: dict[str, list[tuple[float, float]]] = {way: [] for way in AGENTS}
    ways = list(AGENTS)
    for rep in range(reps):
        for way in ways[rep % 3 :] + ways[: rep % 3]:
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
                started, cpu = time.perf_counter(), time.process_time()
                outcome = run_eval(repo, prepared, client=client, options=options)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert outcome.summary["runs"] == rows and outcome.session["model_calls"] == rows
            runs[way].append((wall, cpu))
            print(f"    rep {rep} {way:8}: {wall:6.2f} s, cpu {cpu:6.2f} s  ({load()})", flush=True)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a loaded machine)")
    ap.add_argument("--rows", type=int, help="runs of the whole eval (default 10000)")
    ap.add_argument("--latency", type=float, default=0.02, help="model latency (default 0.02 s)")
    ap.add_argument("--reps", type=int, help="whole-eval repetitions per way (default 3)")
    args = ap.parse_args()
    rows = args.rows or (2000 if args.quick else 10000)
    reps = args.reps or (1 if args.quick else 3)
    calls, rounds = (10, 3) if args.quick else (30, 6)
    mock, url = start_mock(args.latency)
    try:
        print(f"{load()}; model latency {args.latency * 1000:.0f} ms, {CONCURRENCY} in flight")
        print(f"[1] per call, {rounds} rounds x {CONCURRENCY} rollouts x {calls} calls each way")
        per_call = overhead(url, calls, rounds)
        base, base_cpu = per_call["chat"]
        for way, (latency, cpu) in per_call.items():
            extra = f"  (+{(latency - base) * 1000:.2f} ms, +{(cpu - base_cpu) * 1e6:.0f} us cpu)"
            print(f"    {way:8} median {latency * 1000:7.2f} ms, cpu/call {cpu * 1e6:5.0f} us"
                  + (extra if way != "chat" else ""))  # fmt: skip
        extra_ms = (per_call["httpx"][0] - base) * 1000
        verdict = "PASS" if extra_ms <= 1.0 else "MISS"
        print(f"    {verdict} endpoint overhead <= 1 ms (httpx: +{extra_ms:.2f} ms; {load()})")
        print(f"[2] a {rows}-call eval, concurrency {CONCURRENCY}, {reps} rep(s) each way")
        with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as work:
            runs = whole_eval(url, rows, reps, Path(work))
        chat_wall = statistics.median(w for w, _ in runs["chat"])
        chat_cpu = statistics.median(c for _, c in runs["chat"])
        for way in ("httpx", "urllib3"):
            wall = statistics.median(w for w, _ in runs[way])
            cpu = statistics.median(c for _, c in runs[way])
            print(f"    endpoint via {way:8}: {wall:.2f} s vs client.chat {chat_wall:.2f} s: "
                  f"{wall / chat_wall:.2f}x wall, {cpu / chat_cpu:.2f}x cpu")  # fmt: skip
        ratio = statistics.median(w for w, _ in runs["httpx"]) / chat_wall
        verdict = "PASS" if ratio <= 1.3 else "MISS"
        print(f"    {verdict} endpoint eval <= 1.3x wall (httpx: {ratio:.2f}x; {load()})")
    finally:
        mock.terminate()
        mock.wait()


if __name__ == "__main__":
    main()
