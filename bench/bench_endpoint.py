#!/usr/bin/env python
"""What the eval's recording endpoint costs, side by side (see bench/README.md).

Run:  .venv/bin/python bench/bench_endpoint.py [--quick] [--rows N] [--latency S [S ...]]
      [--per-call]  (section 1 alone: A/B runs of the per-call figure)

The mock model server runs in a process of its own (its CPU is not this process's). Four
ways of calling the model, in one run, the order rotating per round/rep:

  chat     the agent calls ``client.chat`` (osmo's own client, no HTTP hop of the agent's)
  httpx    the agent's httpx client (the openai SDK's transport) at ``client.base_url``
  urllib3  a leaner client at ``client.base_url`` (closer to the endpoint's own share)
  direct   the same httpx client calling the model directly: no osmo, nothing recorded;
           what the agent's SDK costs by itself

  0. The floor, sequentially (one rollout, a model with no latency): CPU of this process
     per call each way, the openai SDK's too; httpx against a do-nothing server on
     127.0.0.1 (the cost of any local HTTP hop) and against the endpoint answering at once
     (no forward: the difference is the endpoint's own work); the CPU of building an
     openai SDK client, with its own HTTP client and with a shared one.
  Per model latency (``--latency``, several: 20 ms is a stress, 200 ms and 1 s are like
  a model's):
  1. Per call: 32 rollouts in flight (their starts spread over one model latency: a
     steady stream of calls), each making calls; every call is a miss. The figure
     is the median latency through the endpoint (httpx) minus the median through
     ``client.chat``, and minus the median of the direct calls. Target: <= 1 ms.
  2. A whole eval (one call per run, concurrency 32) through ``run_eval`` on a local
     store, its agent calling each way. The figure is the ratio of wall times, against
     ``client.chat`` and against the direct agent. Target: <= 1.3x. Slower latencies get
     fewer rows (at most ~64 s of model time a way: 10,000 calls at 200 ms, 2,048 at 1 s;
     at least 10 calls per rollout).

Nothing is asserted; PASS/MISS lines, each naming its baseline, are printed and the script
exits 0. The machine is small and shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import urllib3

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from osmo_store import Repository  # noqa: E402
from osmo_store.eval.client import ChatClient  # noqa: E402
from osmo_store.eval.config import ModelSpec  # noqa: E402
from osmo_store.eval.endpoint import Answer, RecordingEndpoint  # noqa: E402
from osmo_store.eval.localhttp import LocalHTTPServer, Reply  # noqa: E402
from osmo_store.eval.prepare import prepare_eval  # noqa: E402
from osmo_store.eval.runner import EvalOptions, run_eval  # noqa: E402
from osmo_store.eval.solver import AgentClient, ModelCaller, StoreLookup  # noqa: E402

MODEL = "osmo-mock"
CONCURRENCY = 32
CHUNKS = 10  # of the sequential calls, each case in turn
#: the model's own URL, for the direct agent (it runs in this process)
MODEL_URL_ENV = "BENCH_MODEL_URL"

CHAT_AGENT = """\
def solve(messages, row, client):
    return [*messages, client.chat(messages)]
"""
HTTPX_AGENT = """\
import os
import httpx

# One client for every rollout (a client per rollout would cost ~30 ms of CPU to build).
_http = httpx.Client(limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

def solve(messages, row, client):
    base, key = {base}
    answer = _http.post(
        base + "/chat/completions",
        headers={{"Authorization": "Bearer " + key}},
        json={{"model": client.model, "messages": messages}},
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
AGENTS = {
    "chat": CHAT_AGENT,
    "httpx": HTTPX_AGENT.format(base="client.base_url, client.api_key"),
    "urllib3": URLLIB3_AGENT,
    "direct": HTTPX_AGENT.format(base=f'os.environ["{MODEL_URL_ENV}"], "bench"'),
}
WAYS = list(AGENTS)


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


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


class Caller:
    """The ways of making one call, for a rollout of the eval's endpoint (``agent``)."""

    def __init__(self, model_url: str) -> None:
        self.model_url = model_url
        self.pool = urllib3.PoolManager(maxsize=CONCURRENCY)

    def ask(self, way: str, agent: AgentClient, http: httpx.Client, messages: list) -> None:
        if way == "chat":
            agent.chat(messages)
            return
        base, key = (
            (self.model_url, "bench") if way == "direct" else (agent.base_url, agent.api_key)
        )
        if way == "urllib3":
            body = json.dumps({"model": MODEL, "messages": messages}).encode()
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            raw = self.pool.urlopen("POST", base + "/chat/completions", body=body, headers=headers)
            assert raw.status == 200, raw.data
            json.loads(raw.data)
            return
        answer = http.post(
            base + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": MODEL, "messages": messages},
        )
        answer.raise_for_status()
        answer.json()


def sequential(calls: int) -> dict[str, float]:
    """CPU of this process per call (the median of chunks of calls), one rollout, no model
    latency."""
    import openai

    mock, url = start_mock(0.0)
    repo = Repository.memory()
    client = ChatClient(url, api_key="bench", pool_size=4, max_retries=0)
    caller = ModelCaller(StoreLookup(repo), client, ModelSpec(MODEL, url))
    endpoint = RecordingEndpoint(MODEL)
    agent = AgentClient(caller, 0, {}, None, endpoint=endpoint)
    answer = {
        "id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "2"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }  # fmt: skip
    canned = json.dumps(answer).encode()
    null = LocalHTTPServer(lambda method, target, headers, body: Reply(200, canned))
    null_url = f"http://127.0.0.1:{null.port}/v1"
    # A rollout whose model path answers at once: the endpoint's own work, without the
    # forward (the path client.chat takes) to the model.
    at_once = endpoint.rollout(lambda api, fields, transport: Answer(answer, canned))
    http = httpx.Client()
    ways = Caller(url)
    sdk_endpoint = openai.OpenAI(base_url=agent.base_url, api_key=agent.api_key, max_retries=0)
    sdk_direct = openai.OpenAI(base_url=url, api_key="bench", max_retries=0)
    counter = iter(range(10**9))

    def messages() -> list[dict[str, Any]]:
        return [{"role": "user", "content": f"What is {next(counter)} + 1?"}]

    def plain(base: str, key: str) -> Callable[[], None]:
        def call() -> None:
            headers = {"Authorization": f"Bearer {key}"}
            body = {"model": MODEL, "messages": messages()}
            reply = http.post(base + "/chat/completions", headers=headers, json=body)
            reply.raise_for_status()
            reply.json()

        return call

    def way(name: str) -> Callable[[], None]:
        return lambda: ways.ask(name, agent, http, messages())

    def sdk(openai_client: Any) -> Callable[[], None]:
        return lambda: openai_client.chat.completions.create(model=MODEL, messages=messages())

    cases = {
        "client.chat": way("chat"),
        "endpoint, httpx": way("httpx"),
        "endpoint, urllib3": way("urllib3"),
        "endpoint, openai SDK": sdk(sdk_endpoint),
        "direct, httpx": way("direct"),
        "direct, openai SDK": sdk(sdk_direct),
        "httpx to a do-nothing server": plain(null_url, "x"),
        "endpoint, httpx, answered at once": plain(at_once.base_url, at_once.api_key),
    }
    out: dict[str, list[float]] = {name: [] for name in cases}
    try:
        with agent.endpoint, at_once:  # type: ignore[union-attr]
            # Chunk 0 warms every case up and is not counted; then the cases take turns in
            # chunks, so that the machine's drift hits them alike. The garbage collector runs
            # between chunks: a full collection (the openai SDK makes many objects) would
            # otherwise land in whichever case comes next.
            for chunk in range(CHUNKS + 1):
                for name, call in cases.items():
                    gc.collect()
                    gc.disable()
                    started = time.process_time()
                    for _ in range(calls // CHUNKS):
                        call()
                    gc.enable()
                    if chunk:
                        out[name].append((time.process_time() - started) / (calls // CHUNKS))
    finally:
        http.close()
        null.close()
        endpoint.close()
        client.close()
        mock.terminate()
        mock.wait()
    floor = {name: statistics.median(xs) for name, xs in out.items()}
    # What an SDK agent pays per rollout if it builds its client there (each rollout has a
    # base URL of its own): httpx loads the CA bundle for every new client, http:// or not.
    shared = openai.DefaultHttpxClient()
    for name, make in {
        "building openai.OpenAI(...)": lambda: openai.OpenAI(base_url=url, api_key="bench"),
        "the same with a shared http_client": lambda: openai.OpenAI(
            base_url=url, api_key="bench", http_client=shared
        ),
    }.items():
        started = time.process_time()
        for _ in range(20):
            make()
        floor[name] = (time.process_time() - started) / 20
    shared.close()
    return floor


class PerCall(NamedTuple):
    """One way's figures in section 1, per call: the median latency, the CPU of this
    process, and the median CPU of the agent's own thread (its HTTP client for httpx,
    urllib3 and direct; the whole forward for ``client.chat``, which runs on it)."""

    median: float
    cpu: float
    agent_cpu: float


def overhead(url: str, latency: float, calls: int, rounds: int) -> dict[str, PerCall]:
    """Each way's figures per call, 32 rollouts in flight."""
    repo = Repository.memory()
    client = ChatClient(url, api_key="bench", pool_size=CONCURRENCY, max_retries=0)
    caller = ModelCaller(StoreLookup(repo), client, ModelSpec(MODEL, url))
    endpoint = RecordingEndpoint(MODEL)
    ways = Caller(url)
    latencies: dict[str, list[float]] = {way: [] for way in WAYS}
    agent_cpu: dict[str, list[float]] = {way: [] for way in WAYS}
    cpu = dict.fromkeys(WAYS, 0.0)
    counter = iter(range(10**9))
    lock = threading.Lock()
    # Kept alive past the other ways' turns (httpx drops a connection idle for 5 s): an
    # agent's pool in an eval is in use all the time, and with the default, each rollout's
    # first call here (half of them at 1 s) reconnected for httpx and direct, never for
    # client.chat (urllib3 keeps its connections).
    warm = httpx.Limits(max_connections=None, keepalive_expiry=600)
    https = [httpx.Client(limits=warm) for _ in range(CONCURRENCY)]

    def rollout(way: str, index: int) -> None:
        agent = AgentClient(caller, index, {}, None, endpoint=endpoint)
        mine, mine_cpu = [], []
        # The rollouts start spread over one model latency, as a steady stream of calls
        # arrives; started together, a model of constant latency would keep all 32 in step,
        # and each wave of 32 calls would queue for the interpreter at the same instant.
        time.sleep(index * latency / CONCURRENCY)
        with agent.endpoint:  # type: ignore[union-attr]
            for _ in range(calls):
                with lock:
                    n = next(counter)  # a new question each call: every call is a miss
                messages = [{"role": "user", "content": f"What is {n} + 1?"}]
                started, thread_cpu = time.perf_counter(), time.thread_time()
                ways.ask(way, agent, https[index], messages)
                mine.append(time.perf_counter() - started)
                mine_cpu.append(time.thread_time() - thread_cpu)
        with lock:
            latencies[way].extend(mine)
            agent_cpu[way].extend(mine_cpu)

    try:
        for r in range(rounds + 1):  # round 0 warms every way up and is not counted
            shift = r % len(WAYS)
            for way in WAYS[shift:] + WAYS[:shift]:  # the order rotates per round
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
                    del agent_cpu[way][before:]
                else:
                    cpu[way] += time.process_time() - started
    finally:
        for http in https:
            http.close()
        endpoint.close()
        client.close()
    return {
        way: PerCall(statistics.median(xs), cpu[way] / len(xs), statistics.median(agent_cpu[way]))
        for way, xs in latencies.items()
    }


def write_eval(work: Path, rows: int) -> Path:
    """A dataset of ``rows`` questions, the eval function and the agents, in ``work``."""
    work.mkdir(parents=True)
    data = work / "data.jsonl"
    data.write_text(
        "".join(f'{{"user_prompt": "What is {i} + 1?", "ground_truth": "{i + 1}"}}\n'
                for i in range(rows))
    )  # fmt: skip
    (work / "fns.py").write_text("def exact(solution_str, ground_truth, extra_info):\n"
                                 "    return solution_str.strip() == ground_truth\n")  # fmt: skip
    for way, source in AGENTS.items():
        (work / f"{way}_agent.py").write_text(source)
    return data


def one_eval(url: str, data: Path, rows: int, way: str, store: Path) -> tuple[float, float]:
    """(wall time, CPU of this process) of the eval of ``data``, its agent calling ``way``."""
    work = data.parent
    prepared = prepare_eval(
        data, [str(work / "fns.py") + ":exact"], model=MODEL, base_url=url,
        agent=str(work / f"{way}_agent.py") + ":solve",
    )  # fmt: skip
    options = EvalOptions(concurrency=CONCURRENCY)
    with (
        Repository.open(store) as repo,
        ChatClient(url, api_key="bench", pool_size=CONCURRENCY) as client,
    ):
        started, cpu = time.perf_counter(), time.process_time()
        outcome = run_eval(repo, prepared, client=client, options=options)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert outcome.summary["runs"] == rows
    # The direct agent calls the model past osmo: nothing of it is recorded.
    assert outcome.session["model_calls"] == (0 if way == "direct" else rows)
    return wall, cpu


def whole_eval(url: str, rows: int, reps: int, work: Path) -> dict[str, list[tuple[float, float]]]:
    """(wall time, CPU of this process) of an eval of ``rows`` runs, its agent calling each
    way; the order rotates per rep, after a small eval each way to warm up (not counted)."""
    os.environ[MODEL_URL_ENV] = url
    warm = write_eval(work / "warm-up", 2 * CONCURRENCY)
    for way in WAYS:
        one_eval(url, warm, 2 * CONCURRENCY, way, work / f"warm-up/store-{way}")
    data = write_eval(work / "eval", rows)
    runs: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    for rep in range(reps):
        shift = rep % len(WAYS)
        for way in WAYS[shift:] + WAYS[:shift]:
            wall, cpu = one_eval(url, data, rows, way, work / f"store-{way}-{rep}")
            runs[way].append((wall, cpu))
            print(f"    rep {rep} {way:8}: {wall:6.2f} s, cpu {cpu:6.2f} s  ({load()})", flush=True)
    return runs


def at_latency(args: argparse.Namespace, latency: float, work: Path) -> dict[str, float]:
    """Sections 1 and 2 against a model with ``latency``; the figures judged."""
    calls, rounds = (10, 3) if args.quick else (30, 6)
    # Slow models get fewer calls per rollout: at most ~4 s of model time per way and round.
    calls = max(2, min(calls, int(4.0 / latency / rounds)))
    # Each way's eval asks for at most ~64 s of model time (2 s with --quick): 10,000 calls
    # at 20 and 200 ms, 2,048 at 1 s.
    budget = 2.0 if args.quick else 64.0
    rows = min(args.rows, max(10 * CONCURRENCY, int(budget * CONCURRENCY / latency)))
    mock, url = start_mock(latency)
    try:
        print(f"\n== model latency {latency * 1000:.0f} ms, {CONCURRENCY} in flight; {load()}")
        print(f"[1] per call, {rounds} rounds x {CONCURRENCY} rollouts x {calls} calls each way")
        per_call = overhead(url, latency, calls, rounds)
        chat, direct = per_call["chat"].median, per_call["direct"].median
        for way, f in per_call.items():
            print(f"    {way:8} median {f.median * 1000:8.2f} ms, cpu/call {f.cpu * 1e6:5.0f} us"
                  f" (on the agent's thread {f.agent_cpu * 1e6:5.0f} us)")  # fmt: skip
        over_chat = (per_call["httpx"].median - chat) * 1000
        over_direct = (per_call["httpx"].median - direct) * 1000
        # The agent's own client (its thread's CPU: it sends, waits, and reads the answer)
        # is on the call's path through the endpoint and not through client.chat, whose
        # forward runs on the agent's thread instead. What the endpoint way costs over
        # client.chat beyond that client is the endpoint's share: its hop, its HTTP, and the
        # forward on the connection thread where client.chat runs it on the agent's.
        sdk = per_call["httpx"].agent_cpu * 1000
        print(f"    {verdict(over_chat <= 1.0)} endpoint (httpx) adds <= 1 ms per call over "
              f"client.chat: {over_chat:+.2f} ms")  # fmt: skip
        share = over_chat - sdk
        print(f"      of which the agent's own httpx client (its thread's CPU, median) "
              f"{sdk:.2f} ms; the rest, the endpoint's share: {share:+.2f} ms")  # fmt: skip
        print(
            f"    {verdict(over_direct <= 1.0)} endpoint (httpx) adds <= 1 ms per call over "
            f"the same httpx calling the model directly: {over_direct:+.2f} ms  ({load()})"
        )
        if args.per_call:
            return {"over_chat": over_chat, "over_direct": over_direct, "share": share}
        print(f"[2] a {rows}-call eval, concurrency {CONCURRENCY}, {args.reps} rep(s) each way")
        runs = whole_eval(url, rows, args.reps, work / f"latency-{latency}")
    finally:
        mock.terminate()
        mock.wait()
    wall = {way: statistics.median(w for w, _ in xs) for way, xs in runs.items()}
    cpu = {way: statistics.median(c for _, c in xs) for way, xs in runs.items()}
    for way in WAYS:
        print(f"    {way:8}: {wall[way]:6.2f} s wall ({wall[way] / wall['chat']:.2f}x client.chat,"
              f" {wall[way] / wall['direct']:.2f}x direct), cpu {cpu[way]:6.2f} s "
              f"({cpu[way] / cpu['chat']:.2f}x client.chat)")  # fmt: skip
    ratio_chat, ratio_direct = wall["httpx"] / wall["chat"], wall["httpx"] / wall["direct"]
    print(f"    {verdict(ratio_chat <= 1.3)} eval through the endpoint (httpx) <= 1.3x the wall "
          f"of client.chat: {ratio_chat:.2f}x")  # fmt: skip
    print(
        f"    {verdict(ratio_direct <= 1.3)} eval through the endpoint (httpx) <= 1.3x the "
        f"wall of the direct httpx agent: {ratio_direct:.2f}x  ({load()})"
    )
    return {"over_chat": over_chat, "over_direct": over_direct, "share": share, "rows": rows,
            "ratio_chat": ratio_chat, "ratio_direct": ratio_direct}  # fmt: skip


def floor_section(seq_calls: int) -> None:
    """Section 0, printed."""
    print(f"[0] the floor: CPU of this process per call, one rollout, no model latency, "
          f"{seq_calls} calls each, in {CHUNKS} chunks; {load()}")  # fmt: skip
    floor = sequential(seq_calls)
    for name, cpu in floor.items():
        print(f"    {name:30} {cpu * 1e6:6.0f} us")
    own = floor["endpoint, httpx, answered at once"] - floor["httpx to a do-nothing server"]
    print(f"    the endpoint's own work (HTTP, JSON, routing; no forward): {own * 1e6:4.0f} us")
    for sdk in ("httpx", "openai SDK"):
        extra = floor[f"endpoint, {sdk}"] - floor[f"direct, {sdk}"]
        print(f"    the endpoint adds {extra * 1e6:4.0f} us of CPU per call to the {sdk} "
              f"agent's own (over calling the model directly)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a loaded machine)")
    ap.add_argument("--rows", type=int,
                    help="runs of each eval (default 10000; fewer at slow latencies)")  # fmt: skip
    ap.add_argument("--latency", type=float, nargs="+", default=[0.02, 0.2, 1.0],
                    help="model latencies in seconds (default 0.02 0.2 1.0)")  # fmt: skip
    ap.add_argument("--reps", type=int, help="whole-eval repetitions per way (default 3)")
    ap.add_argument("--per-call", action="store_true",
                    help="section 1 only (for A/B runs of the per-call figure)")  # fmt: skip
    args = ap.parse_args()
    args.rows = args.rows or (2000 if args.quick else 10000)
    args.reps = args.reps or (1 if args.quick else 3)
    seq_calls = 300 if args.quick else 1000
    if not args.per_call:
        floor_section(seq_calls)
    summary = {}
    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as work:
        for latency in args.latency:
            summary[latency] = at_latency(args, latency, Path(work))
    print("\nsummary (endpoint through httpx; target: +1 ms per call, 1.3x eval wall)")
    print(
        "  latency | per call vs client.chat (endpoint's share) | vs direct httpx | eval rows | "
        "wall vs client.chat | vs direct httpx"
    )
    for latency, s in summary.items():
        cells = [
            f"{s['over_chat']:+8.2f} ms {verdict(s['over_chat'] <= 1)} ({s['share']:+.2f} ms)",
            f"{s['over_direct']:+7.2f} ms {verdict(s['over_direct'] <= 1)}",
        ]
        if "rows" in s:
            cells += [
                f"{s['rows']:9}",
                f"{s['ratio_chat']:6.2f}x {verdict(s['ratio_chat'] <= 1.3)}",
                f"{s['ratio_direct']:5.2f}x {verdict(s['ratio_direct'] <= 1.3)}",
            ]
        print(f"  {latency * 1000:5.0f} ms | " + " | ".join(cells))
    print(f"  ({load()})")


if __name__ == "__main__":
    main()
