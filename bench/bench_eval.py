#!/usr/bin/env python
"""Benchmarks of the eval layer (`osmo eval`) against the real mock server (see bench/README.md).

Run:  .venv/bin/python bench/bench_eval.py [--quick] [--only 123456] [--reps N] [--profile]

Sections (all model calls go to osmo_store.testing.mockserver.MockServer on 127.0.0.1):
  1. end-to-end runs/s of `osmo eval`, zero-latency server, fresh store (subprocess + in-process)
  2. cost of recording the 100,000th run vs the 100th (Recorder.commit), vs a JSON-file design
  3. resume planning with 100,000 finished runs (ConfigState.load + Plan.count)
  4. `eval cache ls` over 1,000 configs (list_configs in-process, and the CLI subprocess)
  5. re-run of a completed 10,000-run config (wall time, zero model calls)
  6. throughput at 50 ms latency and concurrency 64, vs the ideal 64 / 0.05 s

Every figure is the median of several repetitions, and every ratio compares two things
measured in the same run (the machine is small and noisy; where two things are timed in a
loop they are interleaved). Targets are printed as PASS/MISS lines; the script exits 0
either way. Figures go to bench/out/bench_eval.json. Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT = BENCH_DIR / "out"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sampler import Sampler  # noqa: E402 - bench/ is on sys.path when run as a script
from synthetic import SYSTEM  # noqa: E402
from synthetic import write_dataset as write_rows  # noqa: E402

from osmo_store.backends.fsutil import fsync_dir  # noqa: E402
from osmo_store.eval.catalog import list_configs  # noqa: E402
from osmo_store.eval.plan import Plan  # noqa: E402
from osmo_store.eval.state import (  # noqa: E402
    EVAL_REF_PREFIX,
    INDEX_REF,
    SUBTREES,
    ConfigState,
    PendingObject,
    Recorder,
    SampleResult,
    blob,
    config_ref,
    sample_name,
)
from osmo_store.eval.stored import sample_blob  # noqa: E402
from osmo_store.hashing import blake3_hex, canonical_json  # noqa: E402
from osmo_store.objects import ObjectType, RunRecord, object_id  # noqa: E402
from osmo_store.repo import Repository  # noqa: E402
from osmo_store.testing.mockserver import MockServer  # noqa: E402
from osmo_store.tree import TreeEntry, write_tree  # noqa: E402

perf = time.perf_counter
SCORING = ROOT / "examples" / "scoring.py"
EVAL_FN = f"{SCORING}:exact_match"
MODEL = "bench-model"

TARGETS = {
    "record_ratio": ("<=", 1.3),
    "plan_seconds": ("<=", 1.0),
    "ls_seconds": ("<=", 0.5),
    "rerun_seconds": ("<=", 2.0),
    "rerun_model_calls": ("<=", 0),
    "latency_efficiency": (">=", 0.85),
}

SIZES = {
    "full": {
        "e2e_rows": 2000,
        "e2e_conc": 16,
        "rec_small": 100,
        "rec_big": 100_000,
        "rec_commits": 50,
        "json_big_reps": 7,
        "configs": 1000,
        "rerun_rows": 5000,
        "rerun_n": 2,
        "lat_runs": 3000,
        "lat_conc": 64,
        "lat_s": 0.05,
        "reps": 5,
    },
    "quick": {
        "e2e_rows": 500,
        "e2e_conc": 16,
        "rec_small": 100,
        "rec_big": 10_000,
        "rec_commits": 20,
        "json_big_reps": 5,
        "configs": 1000,
        "rerun_rows": 1000,
        "rerun_n": 2,
        "lat_runs": 1000,
        "lat_conc": 64,
        "lat_s": 0.05,
        "reps": 3,
    },
}


# --- helpers ---------------------------------------------------------------------------


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_s(x: float) -> str:
    if x != x:
        return "n/a"
    if x < 1e-3:
        return f"{x * 1e6:.0f} us"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def log(msg: str = "") -> None:
    print(msg, flush=True)


def osmo_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "osmo"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "osmo_store.cli"]


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_cli(args: list[str], *, profile_to: Path | None = None, cpu_to: Path | None = None) -> dict:
    """Run the osmo CLI in a subprocess; wall time, CPU time of the child, output. With
    ``profile_to``/``cpu_to`` the CLI runs under this script's profiling/CPU wrappers."""
    cmd = osmo_cmd() + args
    if profile_to is not None:
        cmd = [sys.executable, str(Path(__file__)), "--_sampled-cli", str(profile_to), *args]
    elif cpu_to is not None:
        cmd = [sys.executable, str(Path(__file__)), "--_cpu-cli", str(cpu_to), *args]
    cpu0 = children_cpu()
    t0 = perf()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = perf() - t0
    cpu = children_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(
            f"osmo {' '.join(args[:6])}... exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    return {"wall": wall, "cpu": cpu, "stdout": proc.stdout, "stderr": proc.stderr}


def write_dataset(path: Path, rows: int, tag: str) -> Path:
    return write_rows(path, rows, seed=tag, row_id=tag + "-{:06d}")


def eval_args(
    store: Path, dataset: Path, base_url: str, *, n: int = 1, conc: int = 16, model: str = MODEL
) -> list:
    return [
        "--store",
        str(store),
        "eval",
        "-d",
        str(dataset),
        "--model",
        model,
        "--base-url",
        base_url,
        "--eval-fn",
        EVAL_FN,
        "--n",
        str(n),
        "--concurrency",
        str(conc),
        "--json",
        "-q",
    ]


def parse_json_out(stdout: str) -> dict:
    return json.loads(stdout)


def drop_caches_light() -> None:
    """Let the previous phase's writeback settle (not a cache drop: reads stay warm)."""
    os.sync()
    time.sleep(0.2)


def sampled_cli_main(out_path: str, args: list[str]) -> int:
    """Entry used by ``run_cli(profile_to=...)``: run the osmo CLI in this process with every
    thread under its own cProfile (merged at the end: ``<out>.prof`` and the top functions
    in ``<out>``), plus the stack sampler (``<out>.sampled.txt``)."""
    from osmo_store.cli.main import main

    clock = os.environ.get("BENCH_PROFILE_CLOCK", "cpu")
    timer = time.thread_time if clock == "cpu" else None
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    orig_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        if self.name == "bench-sampler":
            return orig_run(self)
        prof = cProfile.Profile(timer) if timer else cProfile.Profile()
        with lock:
            profiles.append(prof)
        prof.enable()
        try:
            orig_run(self)
        finally:
            prof.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    main_prof = cProfile.Profile(timer) if timer else cProfile.Profile()
    profiles.append(main_prof)
    sampler = Sampler(interval=0.005)
    with sampler:
        main_prof.enable()
        try:
            rc = main(args)
        finally:
            main_prof.disable()
    time.sleep(0.2)  # let worker threads finish their last call
    stats = None
    for prof in profiles:
        with contextlib.suppress(TypeError, ValueError):  # a profile still enabled or empty
            prof.create_stats()
            stats = pstats.Stats(prof) if stats is None else stats.add(prof)
    if stats is not None:
        stats.dump_stats(out_path + ".prof")
        buf = io.StringIO()
        stats.stream = buf
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        Path(out_path).write_text(
            f"cProfile of all {len(profiles)} threads merged; clock: {clock} "
            "(cpu = per-thread CPU time, time.thread_time; wall = includes blocking and "
            "GIL waits; set BENCH_PROFILE_CLOCK=wall)\n" + buf.getvalue()
        )
    Path(out_path + ".sampled.txt").write_text(sampler.report())
    return rc


def cpu_cli_main(out_path: str, args: list[str]) -> int:
    """Entry used by ``run_cli(cpu_to=...)``: run the osmo CLI in this process (no profiler)
    and write the CPU time (time.thread_time) of each thread group as JSON."""
    from osmo_store.cli.main import main

    cpu: Counter = Counter()
    lock = threading.Lock()
    orig_run = threading.Thread.run

    def counted_run(self: threading.Thread) -> None:
        try:
            orig_run(self)
        finally:
            with lock:
                cpu[self.name.rstrip("0123456789_-")] += time.thread_time()

    threading.Thread.run = counted_run  # type: ignore[method-assign]
    import_cpu = time.process_time()  # interpreter start + imports, before main()
    rc = main(args)
    time.sleep(0.3)  # let the pool's workers exit and count themselves
    cpu["MainThread"] += time.thread_time() - import_cpu
    cpu["_startup_and_imports"] = import_cpu
    cpu["_process"] = time.process_time()
    Path(out_path).write_text(json.dumps(cpu))
    return rc


def cpu_split(work: Path, args: list[str], runs: int) -> dict[str, float]:
    """One extra run through the CPU-accounting wrapper: ms of CPU per run by thread group."""
    path = work / "cpu.json"
    run_cli(args, cpu_to=path)
    cpu = json.loads(path.read_text())
    return {k: 1e3 * v / runs for k, v in sorted(cpu.items())}


def fmt_split(split: dict[str, float]) -> str:
    names = {
        "MainThread": "main thread after startup",
        "osmo-run": "workers",
        "osmo-committer": "committer",
        "_process": "process total",
        "_startup_and_imports": "startup+imports",
    }
    return ", ".join(f"{names.get(k, k)} {v:.2f}" for k, v in split.items())


def cprofile_text(prof: cProfile.Profile, top: int = 30) -> str:
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("cumulative").print_stats(top)
    st.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# --- synthetic results (shaped as runner._execute / solver build them) -------------------


def synth_bodies(tag: str, i: int) -> dict[str, Any]:
    rnd = random.Random(f"{tag}/{i}")
    a, b = rnd.randrange(1000), rnd.randrange(1000)
    row_data = {
        "id": f"{tag}-{i:07d}",
        "user_prompt": f"What is {a} + {b}?",
        "ground_truth": str(a + b),
        "difficulty": "simple",
        "system_prompt": SYSTEM,
    }
    row_key = blake3_hex(canonical_json(["row", tag, i]))[:32]
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"What is {a} + {b}?"},
    ]
    reply = {"role": "assistant", "content": str(a + b)}
    usage = {"prompt_tokens": 17, "completion_tokens": 1, "total_tokens": 18}
    request = {"model": MODEL, "messages": messages}
    ckey = "c" + blake3_hex(canonical_json(["call", tag, i]))
    rkey = "r" + blake3_hex(canonical_json(["rollout", tag, i]))
    response = {
        "id": f"chatcmpl-{blake3_hex(ckey.encode())[:24]}",
        "object": "chat.completion",
        "created": 1790000000 + i,
        "model": MODEL,
        "system_fingerprint": "osmo-mock",
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
    }
    call = {
        "schema": 1,
        "kind": "call",
        "key": ckey,
        "request": request,
        "response": response,
        "latency_s": round(rnd.random() / 10, 6),
        "attempts": 1,
        "started": 1790000000.0 + i,
    }
    rollout = {
        "schema": 1,
        "kind": "rollout",
        "key": rkey,
        "messages": [*messages, reply],
        "usage": usage,
        "calls": [ckey],
        "latency_s": round(rnd.random() / 10, 6),
    }
    rollout_c = canonical_json(rollout)
    sample = {
        "schema": 1,
        "row": row_key,
        "run": 0,
        "status": "ok",
        "error": None,
        "rollout": rkey,
        "rollout_id": object_id(ObjectType.BLOB, rollout_c),
        "scores": {"exact_match": 1.0},
        "scoring_errors": {},
        "usage": usage,
    }
    return {
        "row_key": row_key,
        "row": row_data,
        "ckey": ckey,
        "call": call,
        "rkey": rkey,
        "rollout": rollout,
        "rollout_c": rollout_c,
        "sample": sample,
    }


def synth_parts(tag: str, i: int) -> tuple:
    """The contents a worker thread would produce for one run (not yet encoded)."""
    d = synth_bodies(tag, i)
    objs = [
        ("rows", d["row_key"], canonical_json(d["row"])),
        ("cache", d["rkey"], d["rollout_c"]),
        ("cache", d["ckey"], canonical_json(d["call"])),
    ]
    return sample_name(d["row_key"], 0), sample_blob(d["sample"]), d["sample"], objs


def encode_result(parts: tuple) -> SampleResult:
    """What the worker does to hand a run to the committer: encode its objects."""
    name, record, body, objs = parts
    objects = [blob(n, sub, c) for sub, n, c in objs]
    # the sample blob (version 3) does not name its rollout: the rollouts manifest does
    objects.append(PendingObject("rollouts", name, None, body["rollout_id"]))
    return SampleResult(name, False, record, body, objects)


def synth_result(tag: str, i: int) -> SampleResult:
    return encode_result(synth_parts(tag, i))


def json_design_result(tag: str, i: int) -> tuple[str, dict]:
    """One run as a JSON-file design would hold it: the row, the conversation, the raw
    response, scores and usage (about what osmo stores per run, without dedup)."""
    d = synth_bodies(tag, i)
    return sample_name(d["row_key"], 0), {
        "row": d["row"],
        "messages": d["rollout"]["messages"],
        "response": d["call"]["response"],
        "scores": d["sample"]["scores"],
        "usage": d["sample"]["usage"],
        "status": "ok",
    }


def make_meta_fn(template: dict, config_id: str, total: int):
    def meta(counts: dict[str, int]) -> dict:
        m = dict(template)
        m["config_id"] = config_id
        m["status"] = "in_progress"
        m["counts"] = {
            "total": total,
            **counts,
            "primary_sum": float(counts["done"]),
            "primary_count": counts["done"],
        }
        m["score"] = 1.0
        m.pop("summary", None)
        s = dict(m.get("session", {}))
        s["updated"] = round(time.time(), 3)
        m["session"] = s
        return m

    return meta


def build_config_state(repo: Repository, config_id: str, tag: str, n: int, template: dict):
    """A config holding ``n`` finished samples, laid out as Recorder.commit lays it out, built
    in one pack with a bulk writer; plus the shared lookup index. Returns the row keys."""
    samples, cache, rows, rollouts = [], [], [], []
    with repo.objects.bulk() as w:
        for i in range(n):
            d = synth_bodies(tag, i)
            rid = w.put(ObjectType.BLOB, canonical_json(d["row"]))
            rows.append(TreeEntry(d["row_key"], ObjectType.BLOB, rid))
            roid = w.put(ObjectType.BLOB, d["rollout_c"])
            cache.append(TreeEntry(d["rkey"], ObjectType.BLOB, roid))
            coid = w.put(ObjectType.BLOB, canonical_json(d["call"]))
            cache.append(TreeEntry(d["ckey"], ObjectType.BLOB, coid))
            soid = w.put(ObjectType.BLOB, sample_blob(d["sample"]))
            samples.append(TreeEntry(sample_name(d["row_key"], 0), ObjectType.BLOB, soid))
            rollouts.append(TreeEntry(sample_name(d["row_key"], 0), ObjectType.BLOB, roid))
        trees = {
            "samples": write_tree(w, samples),
            "failed": write_tree(w, []),
            "cache": write_tree(w, cache),
            "rows": write_tree(w, rows),
            "rollouts": write_tree(w, rollouts),
        }
        root = write_tree(w, [TreeEntry(s, ObjectType.TREE, trees[s]) for s in SUBTREES])
        meta = make_meta_fn(template, config_id, n)({"done": n, "failed": 0})
        run_id = w.put(ObjectType.RUN, RunRecord(root, (), meta).to_content())
        base = repo.refs.read(INDEX_REF)
        if base is None:
            index = write_tree(w, cache)
        else:
            from osmo_store.tree import update_tree

            index = update_tree(w, base, {e.name: e for e in cache})
    repo.update_ref(config_ref(config_id), run_id, None, message="eval: in_progress")
    repo.update_ref(INDEX_REF, index, base, message="index", log=False)
    return [e.name for e in rows]


def pack_count(store: Path) -> int:
    return sum(1 for p in (store / "objects" / "pack").iterdir() if p.suffix == ".idx")


# --- the sections ------------------------------------------------------------------------


def template_meta(work: Path) -> dict:
    """A real run record's meta: one tiny real eval."""
    store = work / "template-store"
    ds = write_dataset(work / "template.jsonl", 5, "tmpl")
    with MockServer() as server:
        run_cli(eval_args(store, ds, server.base_url, conc=4))
    with Repository.open(store, create=False) as repo:
        refs = repo.refs.list(EVAL_REF_PREFIX)
        (run_id,) = refs.values()
        return repo.objects.get_run(run_id).meta


def section_e2e(work: Path, sz: dict, reps: int, res: dict, profile: bool) -> None:
    rows, conc = sz["e2e_rows"], sz["e2e_conc"]
    log(f"\n[1] end-to-end `osmo eval`: {rows} rows x n=1, concurrency {conc}, zero latency")
    ds = write_dataset(work / "e2e.jsonl", rows, "e2e")
    sub, inproc = [], []
    from osmo_store.cli.main import main as osmo_main

    with MockServer() as server:
        for r in range(reps):
            # subprocess
            store = work / f"e2e-sub-{r}"
            calls0 = server.calls
            cpu_srv0 = time.process_time()
            out = run_cli(eval_args(store, ds, server.base_url, conc=conc))
            srv_cpu = time.process_time() - cpu_srv0
            body = parse_json_out(out["stdout"])
            calls = server.calls - calls0
            sub.append(
                {
                    "wall": out["wall"],
                    "eval_wall": body["summary"]["wall_time_s"],
                    "client_cpu": out["cpu"],
                    "server_cpu": srv_cpu,
                    "model_calls": calls,
                    "runs": body["summary"]["runs"],
                    "packs": pack_count(store),
                }
            )
            log(
                f"    subprocess rep {r}: wall {out['wall']:.2f} s, in-eval "
                f"{body['summary']['wall_time_s']:.2f} s, {rows / out['wall']:.0f} runs/s, "
                f"cpu client {out['cpu']:.2f} s server {srv_cpu:.2f} s, calls {calls}, "
                f"packs {sub[-1]['packs']}"
            )
            shutil.rmtree(store)
            # in-process (the server shares this process's GIL)
            store = work / f"e2e-inproc-{r}"
            calls0 = server.calls
            buf = io.StringIO()
            cpu0 = time.process_time()
            t0 = perf()
            with contextlib.redirect_stdout(buf):
                rc = osmo_main(eval_args(store, ds, server.base_url, conc=conc))
            wall = perf() - t0
            cpu = time.process_time() - cpu0
            assert rc == 0, rc
            body = parse_json_out(buf.getvalue())
            inproc.append(
                {
                    "wall": wall,
                    "eval_wall": body["summary"]["wall_time_s"],
                    "cpu": cpu,
                    "model_calls": server.calls - calls0,
                }
            )
            log(
                f"    in-process rep {r}: wall {wall:.2f} s, {rows / wall:.0f} runs/s, "
                f"cpu (client+server) {cpu:.2f} s"
            )
            shutil.rmtree(store)
        split = cpu_split(work, eval_args(work / "e2e-cpu", ds, server.base_url, conc=conc), rows)
        shutil.rmtree(work / "e2e-cpu")
        log(f"    client CPU per run, ms (one extra run): {fmt_split(split)}")
        if profile:
            store = work / "e2e-prof"
            prof_path = OUT / "eval_profile_e2e.txt"
            run_cli(eval_args(store, ds, server.base_url, conc=conc), profile_to=prof_path)
            log(f"    profile: {prof_path} (+ .prof)")
            shutil.rmtree(store)
    s_wall = med([x["wall"] for x in sub])
    s_eval = med([x["eval_wall"] for x in sub])
    i_wall = med([x["wall"] for x in inproc])
    res["e2e"] = {
        "rows": rows,
        "concurrency": conc,
        "reps_subprocess": sub,
        "reps_inprocess": inproc,
        "subprocess_wall_s": s_wall,
        "subprocess_runs_per_s": rows / s_wall,
        "subprocess_in_eval_runs_per_s": rows / s_eval,
        "inprocess_wall_s": i_wall,
        "inprocess_runs_per_s": rows / i_wall,
        "client_cpu_per_run_ms": 1e3 * med([x["client_cpu"] for x in sub]) / rows,
        "server_cpu_per_run_ms": 1e3 * med([x["server_cpu"] for x in sub]) / rows,
        "client_cpu_split_ms_per_run": split,
    }
    e = res["e2e"]
    log(
        f"  => subprocess {e['subprocess_runs_per_s']:.0f} runs/s (wall {s_wall:.2f} s; "
        f"{e['subprocess_in_eval_runs_per_s']:.0f} runs/s inside run_eval), in-process "
        f"{e['inprocess_runs_per_s']:.0f} runs/s; CPU per run: client "
        f"{e['client_cpu_per_run_ms']:.2f} ms, server {e['server_cpu_per_run_ms']:.2f} ms"
    )


def json_flush(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(results, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def section_record(work: Path, sz: dict, template: dict, res: dict, profile: bool) -> dict:
    small_n, big_n, commits = sz["rec_small"], sz["rec_big"], sz["rec_commits"]
    log(
        f"\n[2] recording one run: config with {small_n} vs {big_n:,} existing samples "
        f"({commits} commits each, interleaved)"
    )
    stores = {}
    for label, n in (("small", small_n), ("big", big_n)):
        path = work / f"rec-{label}"
        repo = Repository.open(path)
        cid = blake3_hex(f"bench-record-{label}".encode())
        t0 = perf()
        row_keys = build_config_state(repo, cid, f"rec{label}", n, template)
        log(f"    built {label}: {n:,} samples in {perf() - t0:.1f} s")
        state = ConfigState.load(repo, cid)
        rec = Recorder(repo, cid, state, (state.run_id,))
        meta_fn = make_meta_fn(template, cid, n + commits + 1)
        stores[label] = {
            "path": path,
            "repo": repo,
            "cid": cid,
            "rec": rec,
            "meta": meta_fn,
            "n": n,
            "next": n,
            "times": [],
            "row_keys": row_keys,
            "tag": f"rec{label}",
        }
    drop_caches_light()
    # one untimed warm-up commit each (the first commit of a session is reflogged)
    for st in stores.values():
        st["rec"].commit([synth_result(st["tag"], st["next"])], st["meta"])
        st["next"] += 1
    chunk = 5
    order = ["small", "big"]
    done = 0
    while done < commits:
        k = min(chunk, commits - done)
        for label in order:
            st = stores[label]
            for _ in range(k):
                parts = synth_parts(f"rec{label}", st["next"])
                st["next"] += 1
                t0 = perf()  # encoding (done by a worker thread in an eval) + the commit
                st["rec"].commit([encode_result(parts)], st["meta"])
                st["times"].append(perf() - t0)
        order.reverse()
        done += k
    for st in stores.values():
        st["packs_after"] = pack_count(st["path"])
    if profile:
        st = stores["big"]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20):
            st["rec"].commit([synth_result("recbig", st["next"])], st["meta"])
            st["next"] += 1
        prof.disable()
        (OUT / "eval_profile_record.txt").write_text(cprofile_text(prof))
        prof.dump_stats(str(OUT / "eval_profile_record.prof"))
        log(f"    profile: {OUT / 'eval_profile_record.txt'}")
    ts, tb = stores["small"]["times"], stores["big"]["times"]
    osmo_ratio = med(tb) / med(ts)
    log(
        f"    osmo commit: {small_n}: median {fmt_s(med(ts))} (mean {fmt_s(statistics.mean(ts))}), "
        f"{big_n:,}: median {fmt_s(med(tb))} (mean {fmt_s(statistics.mean(tb))}); "
        f"ratio {osmo_ratio:.2f}; packs after: small {stores['small']['packs_after']}, "
        f"big {stores['big']['packs_after']}"
    )

    # The JSON-file design: one file per config with every result, rewritten on each flush.
    jd = work / "jsondesign"
    jd.mkdir()
    jres = {}
    for label, n in (("small", small_n), ("big", big_n)):
        t0 = perf()
        data = dict(json_design_result(f"json{label}", i) for i in range(n))
        path = jd / f"{label}.json"
        json_flush(path, data)
        jres[label] = {"data": data, "path": path, "next": n, "times": []}
        log(
            f"    built JSON {label}: {n:,} results, {path.stat().st_size / 1e6:.1f} MB "
            f"in {perf() - t0:.1f} s"
        )
    drop_caches_light()
    big_reps = sz["json_big_reps"]
    small_per_big = max(1, commits // big_reps)
    for rep in range(big_reps):
        order = ["small", "big"] if rep % 2 == 0 else ["big", "small"]
        for label in order:
            st = jres[label]
            for _ in range(small_per_big if label == "small" else 1):
                name, body = json_design_result(f"json{label}", st["next"])
                st["next"] += 1
                t0 = perf()
                st["data"][name] = body
                json_flush(st["path"], st["data"])
                st["times"].append(perf() - t0)
    js, jb = jres["small"]["times"], jres["big"]["times"]
    json_ratio = med(jb) / med(js)
    big_size = jres["big"]["path"].stat().st_size
    log(
        f"    JSON file: {small_n}: median {fmt_s(med(js))}, {big_n:,}: median {fmt_s(med(jb))} "
        f"({big_size / 1e6:.0f} MB per flush); ratio {json_ratio:.0f}"
    )
    res["record"] = {
        "small_n": small_n,
        "big_n": big_n,
        "commits": commits,
        "osmo_small_s": ts,
        "osmo_big_s": tb,
        "osmo_small_median_s": med(ts),
        "osmo_big_median_s": med(tb),
        "osmo_small_mean_s": statistics.mean(ts),
        "osmo_big_mean_s": statistics.mean(tb),
        "osmo_ratio": osmo_ratio,
        "osmo_ratio_of_means": statistics.mean(tb) / statistics.mean(ts),
        "packs_after": {k: v["packs_after"] for k, v in stores.items()},
        "json_small_s": js,
        "json_big_s": jb,
        "json_small_median_s": med(js),
        "json_big_median_s": med(jb),
        "json_ratio": json_ratio,
        "json_big_file_bytes": big_size,
    }
    del jres
    shutil.rmtree(jd)
    for st in stores.values():
        st["repo"].close()
    return stores["big"]


class _LightRow:
    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


def section_plan(big: dict, reps: int, res: dict, profile: bool) -> None:
    path, cid, row_keys = big["path"], big["cid"], big["row_keys"]
    rows = [_LightRow(k) for k in row_keys]
    log(
        f"\n[3] resume planning: config with {big['next']:,} finished samples, "
        f"{len(rows):,} rows x n=1"
    )
    opens, loads, plans, totals = [], [], [], []
    for r in range(reps + 1):
        t0 = perf()
        repo = Repository.open(path, create=False)
        t1 = perf()
        state = ConfigState.load(repo, cid)
        t2 = perf()
        todo, n_done, _ = Plan.load(state, repo, 1, retry_failed=False).count(r.key for r in rows)
        t3 = perf()
        repo.close()
        assert not todo and n_done == len(rows), (todo, n_done)
        if r == 0:
            continue  # first pass warms the page cache; the rest are timed
        opens.append(t1 - t0)
        loads.append(t2 - t1)
        plans.append(t3 - t2)
        totals.append(t3 - t1)
    if profile:
        repo = Repository.open(path, create=False)
        prof = cProfile.Profile()
        prof.enable()
        state = ConfigState.load(repo, cid)
        Plan.load(state, repo, 1, retry_failed=False).count(r.key for r in rows)
        prof.disable()
        repo.close()
        (OUT / "eval_profile_plan.txt").write_text(cprofile_text(prof))
        log(f"    profile: {OUT / 'eval_profile_plan.txt'}")
    res["plan"] = {
        "samples": big["next"],
        "rows": len(rows),
        "open_s": opens,
        "load_s": loads,
        "plan_s": plans,
        "load_plus_plan_s": totals,
        "median_s": med(totals),
        "open_median_s": med(opens),
        "packs": pack_count(path),
    }
    log(
        f"  => ConfigState.load {fmt_s(med(loads))} + Plan.count {fmt_s(med(plans))} = "
        f"{fmt_s(med(totals))} (median of {reps}); Repository.open {fmt_s(med(opens))}"
    )


def build_configs(path: Path, n: int, template: dict, *, one_pack_each: bool) -> None:
    rnd = random.Random(1234)
    models = ["gpt-4o-mini", "gpt-4.1", "llama-3.1-8b-instruct", "qwen2.5-72b", "mistral-large"]
    repo = Repository.open(path)
    recs = []
    root_tree = None

    def one(w, i):
        nonlocal root_tree
        if root_tree is None or one_pack_each:
            empty = write_tree(w, [])
            root_tree = write_tree(w, [TreeEntry(s, ObjectType.TREE, empty) for s in SUBTREES])
        cid = blake3_hex(f"bench-config-{i}".encode())
        m = json.loads(json.dumps(template))
        m["config_id"] = cid
        m["identity"]["dataset"] = blake3_hex(f"ds-{i % 37}".encode())
        m["config"]["model"] = models[i % len(models)]
        m["config"]["dataset"] = f"/data/evals/set-{i % 37}.jsonl"
        total = rnd.choice([100, 500, 1000, 5000])
        m["counts"] = {
            "total": total,
            "done": total,
            "failed": 0,
            "primary_sum": total * 0.8,
            "primary_count": total,
        }
        m["status"] = "in_progress" if i % 20 == 7 else "completed"
        m["score"] = round(rnd.random(), 4)
        m["session"] = dict(m["session"], updated=round(1.79e9 + rnd.random() * 1e7, 3))
        run_id = w.put(ObjectType.RUN, RunRecord(root_tree, (), m).to_content())
        recs.append((cid, run_id, m["status"]))

    if one_pack_each:
        for i in range(n):
            with repo.objects.bulk() as w:
                one(w, i)
    else:
        with repo.objects.bulk() as w:
            for i in range(n):
                one(w, i)
    for cid, run_id, status in recs:
        repo.update_ref(config_ref(cid), run_id, None, message=f"eval: {status}")
    repo.close()


def section_ls(work: Path, sz: dict, template: dict, reps: int, res: dict, profile: bool) -> None:
    n = sz["configs"]
    log(f"\n[4] `eval cache ls` over {n:,} configs (5% of them in_progress: lock probe)")
    out: dict[str, Any] = {"configs": n}
    # startup of the CLI alone
    startup = [run_cli(["--version"])["wall"] for _ in range(reps)]
    out["cli_startup_s"] = med(startup)
    log(f"    `osmo --version` (interpreter + import startup): {fmt_s(med(startup))}")
    for layout, each in (("one_pack", False), ("pack_per_config", True)):
        path = work / f"ls-{layout}"
        t0 = perf()
        build_configs(path, n, template, one_pack_each=each)
        packs = pack_count(path)
        log(f"    built {layout}: {n} configs, {packs} packs, in {perf() - t0:.1f} s")
        drop_caches_light()
        inproc, opened, cli = [], [], []
        for r in range(reps + 1):
            t0 = perf()
            repo = Repository.open(path, create=False)
            t1 = perf()
            configs = list_configs(repo)
            t2 = perf()
            repo.close()
            assert len(configs) == n, len(configs)
            c = run_cli(["--store", str(path), "eval", "cache", "ls"])
            lines = c["stdout"].count("\n")
            if r == 0:
                continue
            opened.append(t1 - t0)
            inproc.append(t2 - t1)
            cli.append(c["wall"])
        if profile:
            repo = Repository.open(path, create=False)
            prof = cProfile.Profile()
            prof.enable()
            list_configs(repo)
            prof.disable()
            repo.close()
            (OUT / f"eval_profile_ls_{layout}.txt").write_text(cprofile_text(prof))
            run_cli(
                ["--store", str(path), "eval", "cache", "ls"],
                profile_to=OUT / f"eval_profile_ls_cli_{layout}.txt",
            )
            log(
                f"    profile: {OUT / f'eval_profile_ls_{layout}.txt'}, "
                f"{OUT / f'eval_profile_ls_cli_{layout}.txt'}"
            )
        out[layout] = {
            "packs": packs,
            "list_configs_s": inproc,
            "open_s": opened,
            "cli_s": cli,
            "list_configs_median_s": med(inproc),
            "open_median_s": med(opened),
            "cli_median_s": med(cli),
            "cli_minus_startup_s": med(cli) - med(startup),
            "cli_output_lines": lines,
        }
        log(
            f"  => {layout}: list_configs {fmt_s(med(inproc))} (+ Repository.open "
            f"{fmt_s(med(opened))}); `osmo eval cache ls` {fmt_s(med(cli))} "
            f"({fmt_s(med(cli) - med(startup))} over startup; {lines} lines)"
        )
    res["ls"] = out


def section_rerun(work: Path, sz: dict, reps: int, res: dict, profile: bool) -> None:
    rows, n = sz["rerun_rows"], sz["rerun_n"]
    total = rows * n
    log(f"\n[5] re-run of a completed {total:,}-run config ({rows:,} rows x n={n})")
    ds = write_dataset(work / "rerun.jsonl", rows, "rerun")
    store = work / "rerun-store"
    args_fn = None
    with MockServer() as server:
        args_fn = lambda: eval_args(store, ds, server.base_url, n=n, conc=16)  # noqa: E731
        first = run_cli(args_fn())
        body = parse_json_out(first["stdout"])
        calls_first = server.calls
        log(
            f"    first run: {first['wall']:.2f} s, {body['summary']['runs']} runs, "
            f"{calls_first} model calls, status {body['status']}, packs {pack_count(store)}"
        )
        drop_caches_light()
        walls, evals, calls, session_calls = [], [], [], []
        for r in range(reps):
            c0 = server.calls
            out = run_cli(args_fn())
            b = parse_json_out(out["stdout"])
            walls.append(out["wall"])
            evals.append(b["summary"]["wall_time_s"])
            calls.append(server.calls - c0)
            session_calls.append(b["session"]["model_calls"])
            log(
                f"    re-run {r}: wall {out['wall']:.2f} s (in run_eval {evals[-1]:.2f} s), "
                f"server calls {calls[-1]}, session model_calls {session_calls[-1]}, "
                f"reused_samples {b['session']['reused_samples']}, status {b['status']}"
            )
        if profile:
            prof_path = OUT / "eval_profile_rerun.txt"
            run_cli(args_fn(), profile_to=prof_path)
            log(f"    profile: {prof_path} (+ .prof)")
    res["rerun"] = {
        "runs": total,
        "first_wall_s": first["wall"],
        "first_model_calls": calls_first,
        "wall_s": walls,
        "in_eval_s": evals,
        "server_calls": calls,
        "session_model_calls": session_calls,
        "median_s": med(walls),
        "in_eval_median_s": med(evals),
        "max_server_calls": max(calls),
        "packs": pack_count(store),
    }
    log(
        f"  => re-run {fmt_s(med(walls))} wall (median of {reps}), {fmt_s(med(evals))} inside "
        f"run_eval; model calls on re-runs: {max(calls)}"
    )
    shutil.rmtree(store)


def section_latency(work: Path, sz: dict, reps: int, res: dict, profile: bool) -> None:
    runs, conc, lat = sz["lat_runs"], sz["lat_conc"], sz["lat_s"]
    ideal = conc / lat
    log(
        f"\n[6] throughput at {lat * 1e3:.0f} ms latency, concurrency {conc}: {runs:,} runs, "
        f"ideal {ideal:.0f} runs/s"
    )
    ds = write_dataset(work / "lat.jsonl", runs, "lat")
    reps_out = []
    with MockServer(latency=lat) as server:
        for r in range(reps):
            store = work / f"lat-{r}"
            c0 = server.calls
            srv0 = time.process_time()
            out = run_cli(eval_args(store, ds, server.base_url, conc=conc))
            srv_cpu = time.process_time() - srv0
            b = parse_json_out(out["stdout"])
            ev = b["summary"]["wall_time_s"]
            reps_out.append(
                {
                    "wall": out["wall"],
                    "eval_wall": ev,
                    "calls": server.calls - c0,
                    "client_cpu": out["cpu"],
                    "server_cpu": srv_cpu,
                    "max_concurrency": server.max_concurrency,
                }
            )
            log(
                f"    rep {r}: in run_eval {ev:.2f} s = {runs / ev:.0f} runs/s "
                f"({runs / ev / ideal:.0%} of ideal); subprocess wall {out['wall']:.2f} s = "
                f"{runs / out['wall']:.0f} runs/s; cpu client {out['cpu']:.2f} s server "
                f"{srv_cpu:.2f} s; server max concurrency {server.max_concurrency}"
            )
            shutil.rmtree(store)
        # The same on a store that already holds configs: every run's two lookups (rollout
        # and model call) then search a populated refs/cache/index. Other model names, so
        # nothing is reused.
        populated = []
        store = work / "lat-populated"
        for k in range(3):
            out = run_cli(eval_args(store, ds, server.base_url, conc=conc, model=f"{MODEL}-{k}"))
            ev = parse_json_out(out["stdout"])["summary"]["wall_time_s"]
            if k:
                populated.append({"index_entries": 2 * runs * k, "eval_wall": ev})
                log(
                    f"    on a store already holding {k} such config(s) ({2 * runs * k:,} index "
                    f"entries): {runs / ev:.0f} runs/s ({runs / ev / ideal:.0%} of ideal)"
                )
        shutil.rmtree(store)
        split = cpu_split(work, eval_args(work / "lat-cpu", ds, server.base_url, conc=conc), runs)
        shutil.rmtree(work / "lat-cpu")
        log(f"    client CPU per run, ms (one extra run): {fmt_split(split)}")
        if profile:
            store = work / "lat-prof"
            prof_path = OUT / "eval_profile_latency.txt"
            run_cli(eval_args(store, ds, server.base_url, conc=conc), profile_to=prof_path)
            log(f"    profile: {prof_path} (+ .prof)")
            shutil.rmtree(store)
    ev = med([x["eval_wall"] for x in reps_out])
    wall = med([x["wall"] for x in reps_out])
    res["latency"] = {
        "runs": runs,
        "concurrency": conc,
        "latency_s": lat,
        "ideal_runs_per_s": ideal,
        "reps": reps_out,
        "in_eval_runs_per_s": runs / ev,
        "wall_runs_per_s": runs / wall,
        "efficiency": runs / ev / ideal,
        "efficiency_wall": runs / wall / ideal,
        "floor_s": runs / ideal,
        "client_cpu_split_ms_per_run": split,
        "cpu_budget_ms_per_run_at_85pct": 1e3 / (0.85 * ideal),
        "populated_store": [{**p, "efficiency": runs / p["eval_wall"] / ideal} for p in populated],
    }
    res["latency"]["http_cpu_ms_per_call"] = http_cpu(work)
    h = res["latency"]["http_cpu_ms_per_call"]
    log(
        f"    one model call, sequential, client CPU: ChatClient.chat {h['chat_client']:.3f} ms, "
        f"raw http.client keep-alive + json {h['http_client']:.3f} ms"
    )
    L = res["latency"]
    log(
        f"  => {L['in_eval_runs_per_s']:.0f} runs/s inside run_eval = {L['efficiency']:.0%} of "
        f"ideal; {L['wall_runs_per_s']:.0f} runs/s by subprocess wall "
        f"= {L['efficiency_wall']:.0%}"
    )


def http_cpu(work: Path, calls: int = 1000) -> dict[str, float]:
    """CPU (this thread only) of one chat call: the library's ChatClient vs a bare
    http.client keep-alive POST + json parse, sequential, zero-latency server."""
    import http.client

    from osmo_store.eval.client import ChatClient

    req = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What is 12 + 7?"},
        ],
    }
    out = {}
    with MockServer() as server:
        client = ChatClient(server.base_url, api_key="x", timeout=60, max_retries=5, pool_size=4)
        conn = http.client.HTTPConnection("127.0.0.1", server.port)

        def raw() -> None:
            body = json.dumps(req).encode()
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            json.loads(conn.getresponse().read())

        for name, fn in (("chat_client", lambda: client.chat(req)), ("http_client", raw)):
            samples = []
            for _ in range(3):
                for _ in range(20):
                    fn()
                c0 = time.thread_time()
                for _ in range(calls // 3):
                    fn()
                samples.append(1e3 * (time.thread_time() - c0) / (calls // 3))
            out[name] = med(samples)
        client.close()
        conn.close()
    return out


# --- report ------------------------------------------------------------------------------


def verdict(key: str, value: float) -> tuple[str, str]:
    op, limit = TARGETS[key]
    ok = value <= limit if op == "<=" else value >= limit
    return ("PASS" if ok else "MISS"), f"{op} {limit:g}"


def report(res: dict, sz: dict) -> list[dict]:
    rows: list[tuple[str, str, str, str]] = []  # section, figure, value, target/verdict
    lines = []

    def add(sec, fig, val, key=None, num=None):
        if key is not None:
            v, tgt = verdict(key, num)
            lines.append({"target": key, "value": num, "limit": tgt, "verdict": v, "figure": fig})
            rows.append((sec, fig, val, f"{tgt}  {v}"))
        else:
            rows.append((sec, fig, val, ""))

    if "e2e" in res:
        e = res["e2e"]
        add(
            "1",
            f"osmo eval, {e['rows']} rows, C={e['concurrency']}, subprocess",
            f"{e['subprocess_runs_per_s']:.0f} runs/s ({e['subprocess_wall_s']:.2f} s)",
        )
        add("1", "  same, time inside run_eval", f"{e['subprocess_in_eval_runs_per_s']:.0f} runs/s")
        add(
            "1",
            "  same, in-process main([...]) (server shares GIL)",
            f"{e['inprocess_runs_per_s']:.0f} runs/s ({e['inprocess_wall_s']:.2f} s)",
        )
        add(
            "1",
            "  CPU per run: client (incl. startup) / server",
            f"{e['client_cpu_per_run_ms']:.2f} / {e['server_cpu_per_run_ms']:.2f} ms",
        )
    if "record" in res:
        r = res["record"]
        add(
            "2",
            f"Recorder.commit, 1 run into {r['small_n']} samples (median)",
            fmt_s(r["osmo_small_median_s"]),
        )
        add(
            "2",
            f"Recorder.commit, 1 run into {r['big_n']:,} samples (median)",
            fmt_s(r["osmo_big_median_s"]),
        )
        add(
            "2",
            f"  osmo ratio {r['big_n']:,} / {r['small_n']}",
            f"{r['osmo_ratio']:.2f}",
            "record_ratio" if r["big_n"] >= 100_000 else None,
            r["osmo_ratio"],
        )
        add("2", "  osmo ratio of means (incl. pack merges)", f"{r['osmo_ratio_of_means']:.2f}")
        add(
            "2",
            f"JSON-file flush, {r['small_n']} / {r['big_n']:,} results",
            f"{fmt_s(r['json_small_median_s'])} / {fmt_s(r['json_big_median_s'])}",
        )
        add("2", "  JSON-file ratio", f"{r['json_ratio']:.0f}")
    if "plan" in res:
        p = res["plan"]
        add(
            "3",
            f"ConfigState.load + Plan.count, {p['samples']:,} finished",
            fmt_s(p["median_s"]),
            "plan_seconds" if p["samples"] >= 100_000 else None,
            p["median_s"],
        )
    if "ls" in res:
        L = res["ls"]
        add("4", "osmo --version (CLI startup)", fmt_s(L["cli_startup_s"]))
        for layout in ("one_pack", "pack_per_config"):
            if layout not in L:
                continue
            x = L[layout]
            big = L["configs"] >= 1000
            add(
                "4",
                f"list_configs, {L['configs']} configs, {layout} ({x['packs']} packs)",
                fmt_s(x["list_configs_median_s"]),
                "ls_seconds" if big else None,
                x["list_configs_median_s"],
            )
            add("4", f"  Repository.open ({layout})", fmt_s(x["open_median_s"]))
            add(
                "4",
                f"  `osmo eval cache ls` subprocess ({layout})",
                fmt_s(x["cli_median_s"]),
                "ls_seconds" if big else None,
                x["cli_median_s"],
            )
    if "rerun" in res:
        r = res["rerun"]
        full = r["runs"] >= 10_000
        add(
            "5",
            f"re-run of completed {r['runs']:,}-run config (wall)",
            fmt_s(r["median_s"]),
            "rerun_seconds" if full else None,
            r["median_s"],
        )
        add("5", "  inside run_eval", fmt_s(r["in_eval_median_s"]))
        add(
            "5",
            "  model calls during re-runs",
            str(r["max_server_calls"]),
            "rerun_model_calls",
            r["max_server_calls"],
        )
    if "latency" in res:
        L = res["latency"]
        add(
            "6",
            f"{L['runs']:,} runs, {L['latency_s'] * 1e3:.0f} ms, C={L['concurrency']} "
            "(inside run_eval)",
            f"{L['in_eval_runs_per_s']:.0f} runs/s = {L['efficiency']:.0%} of "
            f"{L['ideal_runs_per_s']:.0f}",
            "latency_efficiency",
            L["efficiency"],
        )
        add(
            "6",
            "  by subprocess wall (incl. startup, dataset load)",
            f"{L['wall_runs_per_s']:.0f} runs/s = {L['efficiency_wall']:.0%}",
        )
        for p in L.get("populated_store", []):
            add(
                "6",
                f"  another config, index already holding {p['index_entries']:,} entries",
                f"{L['runs'] / p['eval_wall']:.0f} runs/s = {p['efficiency']:.0%}",
            )

    w = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    log("\n" + "=" * 100)
    log(f"{'':2} {'figure':{w[1]}}  {'value':{w[2]}}  target")
    for sec, fig, val, tgt in rows:
        log(f"{sec:2} {fig:{w[1]}}  {val:{w[2]}}  {tgt}")
    log("=" * 100)
    for t in lines:
        log(
            f"{t['verdict']} {t['target']}: {t['figure'].strip()} = {t['value']:.4g} "
            f"(target {t['limit']})"
        )
    return lines


def main() -> int:
    # The benches make stores with `--store PATH`; osmo makes a missing one only when asked
    # (the variable, unlike --create, is understood by the older code some benches compare).
    os.environ.setdefault("OSMO_CREATE", "1")
    if len(sys.argv) > 2 and sys.argv[1] == "--_sampled-cli":
        return sampled_cli_main(sys.argv[2], sys.argv[3:])
    if len(sys.argv) > 2 and sys.argv[1] == "--_cpu-cli":
        return cpu_cli_main(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions")
    ap.add_argument("--only", default="123456", help="sections to run, e.g. 25 (3 needs 2)")
    ap.add_argument("--reps", type=int, help="repetitions per figure")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also profile one extra repetition per section (bench/out/eval_profile_*)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    sz = dict(SIZES["quick" if args.quick else "full"])
    reps = args.reps or sz["reps"]
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="eval-run-", dir=OUT))
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "sizes": sz,
        "reps": reps,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "started": time.time(),
    }
    with contextlib.suppress(Exception):
        res["git_head"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    log(f"osmo eval benchmarks ({res['mode']}, {reps} reps), work dir {work}")
    load = os.getloadavg()[0]
    if load > 1.0:
        log(f"note: load average {load:.1f} on {os.cpu_count()} CPUs: other work is running")
    t_all = perf()
    try:
        template = template_meta(work)
        if "1" in args.only:
            section_e2e(work, sz, reps, res, args.profile)
        if "2" in args.only or "3" in args.only:
            big = section_record(work, sz, template, res, args.profile)
            if "3" in args.only:
                section_plan(big, reps, res, args.profile)
            shutil.rmtree(work / "rec-big", ignore_errors=True)
            shutil.rmtree(work / "rec-small", ignore_errors=True)
        if "4" in args.only:
            section_ls(work, sz, template, reps, res, args.profile)
        if "5" in args.only:
            section_rerun(work, sz, max(3, reps - 2), res, args.profile)
        if "6" in args.only:
            section_latency(work, sz, reps, res, args.profile)
    except Exception:  # noqa: BLE001 - report what was measured, then the error
        traceback.print_exc()
        res["error"] = traceback.format_exc()
    finally:
        res["total_s"] = perf() - t_all
        res["loadavg_end"] = os.getloadavg()
        res["targets"] = report(res, sz)
        (OUT / "bench_eval.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        log(f"figures: {OUT / 'bench_eval.json'} (total {res['total_s']:.0f} s)")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
