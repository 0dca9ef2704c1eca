#!/usr/bin/env python
"""Benchmarks of sync (`osmo push` / `osmo clone`) over loopback HTTP and S3, against git.

Run:  .venv/bin/python bench/bench_sync.py [--quick] [--samples N] [--reps R] [--profile]

What it does (details and how to read the figures: bench/README.md, "Sync benchmarks"):
  1. builds (once; cached in bench/out/sync-cache/) a store holding N eval samples with a
     real `osmo eval` (N/2 rows x --n 2) against the zero-latency mock server;
  2. per repetition, against a fresh `osmo serve` subprocess on 127.0.0.1: `osmo push URL`
     (objects/s, MiB/s), no-op pushes, and `osmo clone URL PATH` into a fresh store; the
     same data pushed with `git push` to a fresh bare repository, interleaved;
  3. `osmo push s3://...` to a moto S3 server (tests/s3server.py) on 127.0.0.1;
  4. if a target is missed (or with --profile): cProfile of an in-process push (client)
     and of the server, a stack sampler, and per-request timings on both sides.

Every figure is the median of several repetitions; ratios compare things measured in the
same run. Targets are printed as PASS/MISS lines; the script exits 0 either way and asserts
nothing about timing. Figures: bench/out/bench_sync.json (and bench_sync_<mode>.json).
All network traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from sampler import Sampler
from synthetic import write_dataset as write_rows

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT = BENCH_DIR / "out"
CACHE = OUT / "sync-cache"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

perf = time.perf_counter
#: bump to rebuild the cached stores (layout of the build, or of what the cache holds)
CACHE_VERSION = "v1"
TOKEN = "bench-sync-token-7f3a"
MODEL = "bench-model"
EVAL_FN = f"{ROOT / 'examples' / 'scoring.py'}:exact_match"
LISTENING = re.compile(r"osmo serve: listening on (http://\S+) \(store (.*)\)")
SUMMARY = re.compile(r"(pushed|cloned|pulled) (\d+) objects \(([\d.]+) (B|KiB|MiB|GiB|TiB)\)")
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
SERVER_LOG = re.compile(r"osmo_store\.server: (GET|POST) (\S+) (\d+) ([\d.]+)ms")

TARGETS = {
    "push_objects_per_s": (">=", 20_000.0),
    "noop_push_s": ("<=", 1.0),
}


# --- small helpers ---------------------------------------------------------------------


def med(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def log(msg: str = "") -> None:
    print(msg, flush=True)


def fmt_s(x: float) -> str:
    if x != x:
        return "n/a"
    if x < 1:
        return f"{x * 1e3:.0f} ms"
    return f"{x:.2f} s"


def fmt_rate(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f}"


def osmo_exe() -> list[str]:
    exe = Path(sys.executable).parent / "osmo"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "osmo_store.cli"]


def children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle() -> None:
    """Let the previous phase's writeback settle (reads stay warm)."""
    os.sync()
    time.sleep(0.3)


def warm(path: Path) -> None:
    """Read every file under ``path`` once, so timed reads come from the page cache."""
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 22):
                    pass


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def parse_summary(stdout: str) -> tuple[int, int]:
    """(objects, bytes) from the CLI's 'pushed N objects (X MiB), ...' line."""
    m = SUMMARY.search(stdout)
    if m is None:
        raise RuntimeError(f"no transfer summary in {stdout!r}")
    return int(m.group(2)), int(float(m.group(3)) * UNITS[m.group(4)])


def run_timed(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 7200) -> dict:
    cpu0 = children_cpu()
    t0 = perf()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = perf() - t0
    cpu = children_cpu() - cpu0
    if proc.returncode != 0:
        shown = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd[:8]))
        raise RuntimeError(f"{shown} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {"wall": wall, "cpu": cpu, "stdout": proc.stdout, "stderr": proc.stderr}


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OSMO_TOKEN"))}
    env.update(extra)
    return env


def git_env(home: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
    }


def code_hash() -> str:
    """A short hash of osmo_store/*.py as they are now (the library changes under a long
    run when others work in the tree: compared at the start and the end)."""
    h = hashlib.blake2b(digest_size=8)
    for p in sorted((ROOT / "osmo_store").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def repo_head() -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "osmo_store"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else None
    except OSError:
        return None


# --- `osmo serve` as a subprocess --------------------------------------------------------


class Server:
    """``osmo --store STORE serve --port 0 --token-file F`` (optionally under this script's
    profiling wrapper), with its URL parsed from the first line it prints."""

    def __init__(
        self,
        store: Path,
        token_file: Path,
        log_path: Path,
        *,
        debug: bool = False,
        profile_to: Path | None = None,
        cprofile: bool = True,
    ) -> None:
        args = ["--store", str(store)]
        if debug:
            args.append("--debug")  # the server then logs every request with its duration
        args += ["serve", "--port", "0", "--token-file", str(token_file)]
        if profile_to is None:
            cmd = osmo_exe() + args
        else:
            cmd = [sys.executable, str(Path(__file__)), "--_profiled-serve", str(profile_to), *args]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        env["BENCH_SERVE_CPROFILE"] = "1" if cprofile else "0"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        first: list[bytes] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(60)
        line = first[0].decode(errors="replace").strip() if first else ""
        m = LISTENING.match(line)
        if m is None:
            self.stop()
            raise RuntimeError(f"no listening line from osmo serve: {line!r} (log {log_path})")
        self.url = m.group(1)

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        self._log.close()


# --- 1. the store ------------------------------------------------------------------------


def write_dataset(path: Path, rows: int) -> None:
    write_rows(path, rows, seed=f"sync-{rows}", row_id="row-{:07d}")


def closure_stats(store: Path) -> dict:
    """What a push of the store's eval refs sends: every object reachable from them, by type,
    with stored bytes (the same walk as osmo_store.sync.transfer.copy_closure against an empty
    receiver)."""
    from osmo_store.eval.state import EVAL_REF_PREFIX
    from osmo_store.objects import decode_object
    from osmo_store.repo import Repository
    from osmo_store.sync.transfer import _children

    with Repository.open(store) as repo:
        refs = {n: o for n, o in repo.refs.list().items() if n.startswith(EVAL_REF_PREFIX)}
        seen: set[str] = set()
        stack = list(refs.values())
        by_type: Counter = Counter()
        stored = 0
        content = 0
        while stack:
            oid = stack.pop()
            if oid in seen:
                continue
            seen.add(oid)
            data = repo.objects.get_raw(oid)
            otype, body = decode_object(oid, data)
            by_type[otype.value] += 1
            stored += len(data)
            content += len(body)
            stack.extend(k for k, _ in _children(otype, body) if k not in seen)
        all_ids = sum(1 for _ in repo.objects.iter_ids())
    return {
        "refs": refs,
        "objects": len(seen),
        "by_type": dict(by_type),
        "stored_bytes": stored,
        "content_bytes": content,
        "store_objects_total": all_ids,
    }


def build_store(samples: int) -> tuple[Path, dict]:
    """The cached store of ``samples`` eval samples (built with a real `osmo eval` the first
    time). Returns (store path, meta)."""
    from osmo_store.repo import STORE_VERSION
    from osmo_store.testing.mockserver import MockServer

    key = f"{CACHE_VERSION}-n{samples}"
    final = CACHE / key
    meta_path = final / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    if meta_path.exists() and meta.get("store_format", STORE_VERSION) == STORE_VERSION:
        log(f"  store: cached {final.relative_to(ROOT)} ({meta['closure']['objects']:,} objects)")
        meta["cached"] = True
        return final / "store", meta
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"build-{key}-", dir=CACHE))
    n = 2 if samples % 2 == 0 else 1
    rows = samples // n
    dataset = tmp / "data.jsonl"
    write_dataset(dataset, rows)
    store = tmp / "store"
    log(f"  store: building {samples:,} samples ({rows:,} rows x n={n}) with `osmo eval` ...")
    try:
        with MockServer() as model:
            r = run_timed(
                [
                    *osmo_exe(),
                    "--store",
                    str(store),
                    "eval",
                    "-d",
                    str(dataset),
                    "--model",
                    MODEL,
                    "--base-url",
                    model.base_url,
                    "--eval-fn",
                    EVAL_FN,
                    "--n",
                    str(n),
                    "--concurrency",
                    "32",
                    "--json",
                    "-q",
                ]
            )
            calls = model.calls
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = json.loads(r["stdout"])
    computed = summary.get("session", {}).get("computed")
    log(
        f"  store: built in {r['wall']:.1f} s ({samples / r['wall']:,.0f} runs/s), "
        f"{calls:,} model calls, computed={computed}"
    )
    log("  store: walking what a push sends ...")
    t0 = perf()
    closure = closure_stats(store)
    meta = {
        "samples": samples,
        "store_format": STORE_VERSION,
        "rows": rows,
        "n": n,
        "method": "real `osmo eval` subprocess against osmo_store.testing.mockserver.MockServer "
        "(zero latency, in the bench process), --concurrency 32",
        "build_wall_s": r["wall"],
        "build_client_cpu_s": r["cpu"],
        "model_calls": calls,
        "config_id": summary.get("config_id"),
        "summary_session": summary.get("session"),
        "closure": closure,
        "closure_walk_s": perf() - t0,
        "store_bytes_on_disk": dir_bytes(store),
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    dataset.unlink()
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    meta["cached"] = False
    return final / "store", meta


# --- the same records in git ---------------------------------------------------------------


def _fast_import_stream(store: Path, path: Path) -> dict:
    """A `git fast-import` stream holding every blob of the store's eval configs as a file
    (``<config>/<subtree>/<name[:2]>/<name>``: samples, failed, cache, rows) in one commit."""
    from osmo_store.eval.state import EVAL_REF_PREFIX
    from osmo_store.objects import ObjectType
    from osmo_store.repo import Repository
    from osmo_store.tree import iter_tree

    marks: dict[str, int] = {}
    files: list[tuple[str, int]] = []
    nbytes = 0
    with Repository.open(store) as repo, open(path, "wb") as f:

        def add_tree(prefix: str, root: str) -> None:
            nonlocal nbytes
            for e in iter_tree(repo.objects, root):
                if e.type is ObjectType.TREE:
                    add_tree(f"{prefix}{e.name}/", e.oid)
                    continue
                mark = marks.get(e.oid)
                if mark is None:
                    mark = marks[e.oid] = len(marks) + 1
                    _, content = repo.objects.get(e.oid)
                    f.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(content)))
                    f.write(content)
                    f.write(b"\n")
                    nbytes += len(content)
                files.append((f"{prefix}{e.name[:2]}/{e.name}", mark))

        messages = []
        for name, oid in sorted(repo.refs.list().items()):
            if not name.startswith(EVAL_REF_PREFIX):
                continue
            record = repo.objects.get_run(oid)
            config = name[len(EVAL_REF_PREFIX) :][:16]
            for top in iter_tree(repo.objects, record.tree):
                add_tree(f"{config}/{top.name}/", top.oid)
            messages.append(json.dumps(record.meta, sort_keys=True))
        msg = ("osmo eval results\n\n" + "\n".join(messages)).encode()
        f.write(b"commit refs/heads/main\nmark :%d\n" % (len(marks) + 1))
        f.write(b"committer bench <bench@example.invalid> 1700000000 +0000\n")
        f.write(b"data %d\n%s\n" % (len(msg), msg))
        for p, mark in files:
            f.write(b"M 100644 :%d %s\n" % (mark, p.encode()))
        f.write(b"\n")
    return {"blobs": len(marks), "files": len(files), "blob_bytes": nbytes}


def git_count_objects(git_dir: Path, env: dict[str, str]) -> int:
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "count-objects", "-v"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return int(fields.get("count", 0)) + int(fields.get("in-pack", 0))


def build_git(store_dir: Path, store: Path) -> dict:
    """Cached next to the store: ``git-imported.git`` (what fast-import left: one pack,
    no deltas) and ``git-repacked.git`` (the same after ``git repack -adf``)."""
    meta_path = store_dir / "git-meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    env = git_env(store_dir)
    work = Path(tempfile.mkdtemp(prefix="git-build-", dir=store_dir))
    stream = work / "stream.fi"
    log("  git: exporting the store's blobs as a fast-import stream ...")
    t0 = perf()
    info = _fast_import_stream(store, stream)
    info["export_s"] = perf() - t0
    imported = work / "git-imported.git"
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(imported)], env=env, check=True
    )
    t0 = perf()
    with open(stream, "rb") as f:
        subprocess.run(
            ["git", "--git-dir", str(imported), "fast-import", "--quiet"],
            stdin=f,
            env=env,
            check=True,
        )
    info["fast_import_s"] = perf() - t0
    info["stream_bytes"] = stream.stat().st_size
    stream.unlink()
    repacked = work / "git-repacked.git"
    shutil.copytree(imported, repacked)
    log("  git: git repack -adf (for the 'repacked' variant) ...")
    t0 = perf()
    subprocess.run(["git", "--git-dir", str(repacked), "repack", "-adfq"], env=env, check=True)
    info["repack_s"] = perf() - t0
    info["objects"] = git_count_objects(imported, env)
    info["objects_repacked"] = git_count_objects(repacked, env)
    info["imported_bytes"] = dir_bytes(imported / "objects")
    info["repacked_bytes"] = dir_bytes(repacked / "objects")
    for name in ("git-imported.git", "git-repacked.git"):
        if (store_dir / name).exists():
            shutil.rmtree(store_dir / name)
        (work / name).rename(store_dir / name)
    shutil.rmtree(work)
    meta_path.write_text(json.dumps(info, indent=1))
    return info


def git_push(src: Path, dst: Path, env: dict[str, str]) -> dict:
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(dst)], env=env, check=True)
    settle()
    r = run_timed(["git", "--git-dir", str(src), "push", "-q", str(dst), "main:main"], env=env)
    r["received_bytes"] = dir_bytes(dst / "objects")
    return r


# --- 2./3. push, no-op push, clone over HTTP; git side by side ------------------------------


def section_http(store: Path, meta: dict, git_info: dict | None, cfg: dict, work: Path) -> dict:
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = client_env(OSMO_TOKEN=TOKEN)
    genv = git_env(work)
    local_refs = meta["closure"]["refs"]
    store_dir = store.parent
    reps: list[dict] = []
    startup = []
    for i in range(cfg["reps"]):
        rep: dict[str, Any] = {}
        remote, clone_dir = work / f"remote-{i}", work / f"clone-{i}"
        server = Server(remote, token_file, work / f"serve-{i}.log")
        try:
            order = ["osmo", "git"] if i % 2 == 0 else ["git", "osmo"]
            for side in order:
                if side == "git" and git_info is not None:
                    for variant in ("imported", "repacked"):
                        dst = work / f"git-{variant}-{i}.git"
                        g = git_push(store_dir / f"git-{variant}.git", dst, genv)
                        rep[f"git_{variant}"] = {k: g[k] for k in ("wall", "cpu", "received_bytes")}
                        shutil.rmtree(dst)
                elif side == "osmo":
                    settle()
                    s0 = server.cpu()
                    r = run_timed([*osmo_exe(), "--store", str(store), "push", server.url], env)
                    objects, nbytes = parse_summary(r["stdout"])
                    rep["push"] = {
                        "wall": r["wall"],
                        "client_cpu": r["cpu"],
                        "server_cpu": server.cpu() - s0,
                        "objects": objects,
                        "bytes": nbytes,
                        "stdout": r["stdout"].strip(),
                    }
                    rep["push"]["remote_packs"] = _pack_stats(remote)
            noops = []
            for _ in range(cfg["noop_per_rep"]):
                s0 = server.cpu()
                r = run_timed([*osmo_exe(), "--store", str(store), "push", server.url], env)
                objects, _ = parse_summary(r["stdout"])
                noops.append(
                    {
                        "wall": r["wall"],
                        "client_cpu": r["cpu"],
                        "server_cpu": server.cpu() - s0,
                        "objects": objects,
                    }
                )
            rep["noop"] = noops
            startup.append(run_timed([*osmo_exe(), "--version"])["wall"])
            settle()
            s0 = server.cpu()
            r = run_timed([*osmo_exe(), "clone", server.url, str(clone_dir)], env)
            objects, nbytes = parse_summary(r["stdout"])
            rep["clone"] = {
                "wall": r["wall"],
                "client_cpu": r["cpu"],
                "server_cpu": server.cpu() - s0,
                "objects": objects,
                "bytes": nbytes,
                "stdout": r["stdout"].strip(),
            }
        finally:
            server.stop()
        rep["clone_refs_match"] = _eval_refs(clone_dir) == local_refs
        p, c = rep["push"], rep["clone"]
        line = (
            f"  rep {i + 1}: push {p['objects']:,} obj in {fmt_s(p['wall'])} "
            f"({p['objects'] / p['wall']:,.0f}/s; cpu client {p['client_cpu']:.1f} s, "
            f"server {p['server_cpu']:.1f} s; {p['remote_packs']['packs']} packs on the "
            f"remote) | no-op {fmt_s(med([n['wall'] for n in noops]))} "
            f"| clone {c['objects']:,} obj in {fmt_s(c['wall'])} "
            f"({c['objects'] / c['wall']:,.0f}/s)"
        )
        if "git_imported" in rep:
            line += (
                f" | git push {fmt_s(rep['git_imported']['wall'])} "
                f"(repacked {fmt_s(rep['git_repacked']['wall'])})"
            )
        if not rep["clone_refs_match"]:
            line += " | WARNING: the clone's eval refs differ from the source's"
        log(line)
        reps.append(rep)
        if not cfg["keep"]:
            shutil.rmtree(remote, ignore_errors=True)
            shutil.rmtree(clone_dir, ignore_errors=True)
    for _ in range(max(0, 5 - len(startup))):
        startup.append(run_timed([*osmo_exe(), "--version"])["wall"])
    return _summarize_http(reps, startup, git_info)


def _eval_refs(store: Path) -> dict[str, str]:
    from osmo_store.repo import Repository

    with Repository.open(store) as repo:
        return {n: o for n, o in repo.refs.list().items() if n.startswith("refs/evals/")}


def _summarize_http(reps: list[dict], startup: list[float], git_info: dict | None) -> dict:
    def rates(key: str) -> dict:
        walls = [r[key]["wall"] for r in reps]
        objs = reps[0][key]["objects"]
        nbytes = reps[0][key]["bytes"]
        w = med(walls)
        return {
            "wall_s": w,
            "objects": objs,
            "bytes": nbytes,
            "objects_per_s": objs / w,
            "mib_per_s": nbytes / 2**20 / w,
            "client_cpu_s": med([r[key]["client_cpu"] for r in reps]),
            "server_cpu_s": med([r[key]["server_cpu"] for r in reps]),
            "walls": walls,
        }

    res: dict[str, Any] = {"push": rates("push"), "clone": rates("clone")}
    noop_walls = [n["wall"] for r in reps for n in r["noop"]]
    res["noop"] = {
        "wall_s": med(noop_walls),
        "walls": noop_walls,
        "objects": [n["objects"] for r in reps for n in r["noop"]],
        "client_cpu_s": med([n["client_cpu"] for r in reps for n in r["noop"]]),
        "server_cpu_s": med([n["server_cpu"] for r in reps for n in r["noop"]]),
    }
    res["startup"] = {"wall_s": med(startup), "walls": startup}
    res["push"]["objects_per_s_minus_startup"] = res["push"]["objects"] / max(
        1e-9, res["push"]["wall_s"] - res["startup"]["wall_s"]
    )
    res["clone_refs_match"] = all(r["clone_refs_match"] for r in reps)
    if git_info is not None and "git_imported" in reps[0]:
        for variant in ("imported", "repacked"):
            key = f"git_{variant}"
            walls = [r[key]["wall"] for r in reps]
            objs = git_info["objects"] if variant == "imported" else git_info["objects_repacked"]
            w = med(walls)
            per_rep_ratio = [
                (r["push"]["objects"] / r["push"]["wall"]) / (objs / r[key]["wall"]) for r in reps
            ]
            res[key] = {
                "wall_s": w,
                "walls": walls,
                "objects": objs,
                "objects_per_s": objs / w,
                "received_bytes": med([r[key]["received_bytes"] for r in reps]),
                "cpu_s": med([r[key]["cpu"] for r in reps]),
                # > 1: osmo moves more objects per second than git
                "osmo_git_objects_per_s_ratio": med(per_rep_ratio),
                "osmo_git_objects_per_s_ratio_of_medians": res["push"]["objects_per_s"]
                / (objs / w),
                # > 1: osmo pushes the same samples in less time than git
                "git_wall_over_osmo_wall": med([r[key]["wall"] / r["push"]["wall"] for r in reps]),
            }
    res["reps"] = reps
    return res


# --- 4. S3 (moto) --------------------------------------------------------------------------


def section_s3(store: Path, meta: dict, cfg: dict, work: Path) -> dict:
    from tests.s3server import DUMMY_CREDENTIALS, REGION, MotoServer

    reps = []
    with MotoServer() as moto:
        pid = moto._proc.pid  # the moto subprocess, for its CPU time
        env = client_env(
            **DUMMY_CREDENTIALS,
            AWS_DEFAULT_REGION=REGION,
            AWS_ENDPOINT_URL=moto.url,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=str(work / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"),
        )
        for i in range(cfg["s3_reps"]):
            bucket = moto.new_bucket()
            url = f"s3://{bucket}/team-a"
            settle()
            m0 = proc_cpu(pid)
            r = run_timed([*osmo_exe(), "--store", str(store), "push", url], env)
            objects, nbytes = parse_summary(r["stdout"])
            moto_cpu = proc_cpu(pid) - m0
            m0 = proc_cpu(pid)
            noop = run_timed([*osmo_exe(), "--store", str(store), "push", url], env)
            rep = {
                "wall": r["wall"],
                "client_cpu": r["cpu"],
                "server_cpu": moto_cpu,
                "objects": objects,
                "bytes": nbytes,
                "noop_wall": noop["wall"],
                "noop_server_cpu": proc_cpu(pid) - m0,
                "noop_objects": parse_summary(noop["stdout"])[0],
            }
            log(
                f"  rep {i + 1}: push {objects:,} obj in {fmt_s(r['wall'])} "
                f"({objects / r['wall']:,.0f}/s; cpu client {r['cpu']:.1f} s, moto "
                f"{moto_cpu:.1f} s) | no-op {fmt_s(noop['wall'])}"
            )
            reps.append(rep)
    w = med([r["wall"] for r in reps])
    return {
        "samples": meta["samples"],
        "objects": reps[0]["objects"],
        "bytes": reps[0]["bytes"],
        "wall_s": w,
        "objects_per_s": reps[0]["objects"] / w,
        "mib_per_s": reps[0]["bytes"] / 2**20 / w,
        "client_cpu_s": med([r["client_cpu"] for r in reps]),
        "moto_cpu_s": med([r["server_cpu"] for r in reps]),
        "noop_wall_s": med([r["noop_wall"] for r in reps]),
        "reps": reps,
    }


# --- profiling -------------------------------------------------------------------------------


def _stats_text(stats: pstats.Stats, top: int = 45) -> str:
    buf = io.StringIO()
    stats.stream = buf
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return re.sub(r"/\S*/(osmo_store|site-packages|lib/python3[.\d]*)/", r"\1/", buf.getvalue())


def profiled_serve_main(out_prefix: str, args: list[str]) -> int:
    """``--_profiled-serve``: the osmo CLI (``serve``) in this process with the stack sampler
    and, if $BENCH_SERVE_CPROFILE is 1, every thread under its own cProfile (CPU time per
    thread, merged)."""
    from osmo_store.cli.main import main

    if os.environ.get("BENCH_SERVE_CPROFILE") != "1":
        sampler = Sampler()
        with sampler:
            rc = main(args)
        Path(out_prefix + ".sampled.txt").write_text(
            "osmo serve under the stack sampler only (no cProfile)\n" + sampler.report()
        )
        return rc
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    orig_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        if self.name == "bench-sampler":
            return orig_run(self)
        prof = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(prof)
        prof.enable()
        try:
            orig_run(self)
        finally:
            prof.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    main_prof = cProfile.Profile(time.thread_time)
    profiles.append(main_prof)
    sampler = Sampler()
    with sampler:
        main_prof.enable()
        try:
            rc = main(args)
        finally:
            main_prof.disable()
    time.sleep(0.3)  # worker threads finish their last task
    stats = None
    for prof in profiles:
        with contextlib.suppress(TypeError, ValueError):  # still enabled, or empty
            prof.create_stats()
            stats = pstats.Stats(prof) if stats is None else stats.add(prof)
    if stats is not None:
        stats.dump_stats(out_prefix + ".prof")
        Path(out_prefix + ".txt").write_text(
            "osmo serve, every thread, CPU time (time.thread_time), merged\n\n" + _stats_text(stats)
        )
    Path(out_prefix + ".sampled.txt").write_text(sampler.report())
    return rc


class RequestTimer:
    """Wraps HttpConnection.request in this process (instrumentation only, the library is
    untouched): per endpoint, count, wall time until the answer's headers, bytes sent."""

    def __init__(self) -> None:
        self.stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])

    def __enter__(self) -> RequestTimer:
        from osmo_store.http import client as http

        self._cls = http.HttpConnection
        self._orig = self._cls.request
        timer = self

        def request(conn: Any, method: str, path: str, **kw: Any) -> Any:
            t0 = perf()
            try:
                return timer._orig(conn, method, path, **kw)
            finally:
                s = timer.stats[f"{method} {path}"]
                s[0] += 1
                s[1] += perf() - t0
                body = kw.get("data")
                s[2] += len(body) if body is not None else len(json.dumps(kw.get("json") or ""))

        self._cls.request = request  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls.request = self._orig  # type: ignore[method-assign]

    def table(self) -> str:
        lines = [f"{'endpoint':28s} {'count':>6s} {'total s':>9s} {'mean ms':>9s} {'sent MiB':>9s}"]
        for key, (n, t, b) in sorted(self.stats.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"{key:28s} {n:6d} {t:9.2f} {t / n * 1e3:9.1f} {b / 2**20:9.1f}")
        return "\n".join(lines)


def server_log_table(path: Path) -> tuple[str, dict]:
    per: dict[str, list[float]] = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        m = SERVER_LOG.search(line)
        if m:
            per[f"{m.group(1)} {m.group(2)}"].append(float(m.group(4)) / 1e3)
    lines = [f"{'endpoint':28s} {'count':>6s} {'total s':>9s} {'mean ms':>9s} {'max ms':>9s}"]
    out = {}
    for key, ts in sorted(per.items(), key=lambda kv: -sum(kv[1])):
        lines.append(
            f"{key:28s} {len(ts):6d} {sum(ts):9.2f} {sum(ts) / len(ts) * 1e3:9.1f} "
            f"{max(ts) * 1e3:9.1f}"
        )
        out[key] = {"count": len(ts), "total_s": sum(ts), "max_s": max(ts)}
    return "\n".join(lines), out


# Per-call costs of what the server (and a cloning client) does per received object, measured
# in isolation (no profiler) on a store holding a pushed copy of the data; multiplied by the
# exact call counts from the cProfile run they give an unbiased estimate of where the time goes.
UNIT_CALLS = {
    # label: (module, qualified name) of the function, or a built-in's name in the profile;
    # leaf: the row's cost does not include another row's
    "Path join (LocalObjectStore.loose_path)": ("backends.local", "LocalObjectStore.loose_path"),
    "os.stat": (None, "<built-in method posix.stat>"),
    "open() of an absent loose file": (None, "<built-in method io.open>"),
    "PackReader.__contains__ (one pack)": ("backends.pack", "PackReader.__contains__"),
    "os.listdir (reload_packs)": (None, "<built-in method posix.listdir>"),
    "decode_object (decompress + BLAKE3)": ("objects", "decode_object"),
    "iter_records (parse one record)": ("http.protocol", "iter_records"),
    "PackWriter.add (one os.write)": ("backends.pack", "PackWriter.add"),
    "PackReader.read (pread)": ("backends.pack", "PackReader.read"),
    "LocalObjectStore.reload_packs (incl.)": ("backends.local", "LocalObjectStore.reload_packs"),
    "LocalObjectStore.has (absent; incl.)": ("backends.local", "LocalObjectStore._has"),
    "LocalObjectStore._freshen (absent; incl.)": ("backends.local", "LocalObjectStore._freshen"),
}


def _profile_key(module: str | None, name: str) -> tuple[str, int, str] | tuple[str, None, str]:
    """(file, first line, function name) as cProfile names the function."""
    if module is None:
        return ("~", None, name)
    import importlib

    obj: Any = importlib.import_module(f"osmo_store.{module}")
    for part in name.split("."):
        obj = getattr(obj, part)
    code = obj.__code__
    return (code.co_filename, code.co_firstlineno, code.co_name)


def _per_call(fn: Any, items: list, reps: int = 3) -> float:
    """Median over ``reps`` of the mean seconds per call of ``fn(item)`` over ``items``."""
    times = []
    for _ in range(reps):
        t0 = perf()
        for item in items:
            fn(item)
        times.append((perf() - t0) / len(items))
    return med(times)


def unit_costs(remote: Path, k: int = 2000) -> dict[str, float]:
    """Seconds per call, measured on ``remote`` (a quiescent store holding pushed data)."""
    from osmo_store.backends.pack import PackWriter
    from osmo_store.http.protocol import encode_record, iter_records
    from osmo_store.objects import decode_object
    from osmo_store.repo import Repository

    costs: dict[str, float] = {}
    rnd = random.Random(7)
    absent = [f"{rnd.getrandbits(256):064x}" for _ in range(k)]
    with Repository.open(remote) as repo:
        objs = repo.objects
        present = []
        for oid in objs.iter_ids():
            present.append(oid)
            if len(present) >= 20 * k:
                break
        present = rnd.sample(present, min(k, len(present)))
        datas = [(oid, objs.get_raw(oid)) for oid in present]
        costs["packs in the store"] = float(len(objs.packs()))

        def attempt(name: str, fn: Any, items: list) -> None:
            try:
                costs[name] = _per_call(fn, items)
            except Exception as e:  # noqa: BLE001 - a private helper renamed meanwhile
                log(f"      unit cost {name}: n/a ({type(e).__name__}: {e})")

        loose = [str(objs.loose_path(oid)) for oid in absent]

        def stat_miss(path: str) -> None:
            with contextlib.suppress(FileNotFoundError):
                os.stat(path)

        attempt("LocalObjectStore.has (absent; incl.)", objs.has, absent)
        attempt("LocalObjectStore._freshen (absent; incl.)", objs._freshen, absent)
        attempt("Path join (LocalObjectStore.loose_path)", objs.loose_path, absent)
        attempt("os.stat", stat_miss, loose)

        def open_miss(path: str) -> None:
            with contextlib.suppress(FileNotFoundError), open(path, "rb"):
                pass

        attempt("open() of an absent loose file", open_miss, loose)
        pack = max(objs.packs(), key=lambda p: p.count) if objs.packs() else None
        if pack is not None:
            attempt("PackReader.__contains__ (one pack)", pack.__contains__, absent)
            inpack = [oid for oid in present if oid in pack] or present[:1]
            attempt("PackReader.read (pread)", pack.read, inpack)
        attempt("os.listdir (reload_packs)", lambda _: os.listdir(objs.pack_dir), absent[:500])
        attempt(
            "LocalObjectStore.reload_packs (incl.)", lambda _: objs.reload_packs(), absent[:500]
        )
        attempt("decode_object (decompress + BLAKE3)", lambda od: decode_object(*od), datas)
        stream = b"".join(encode_record(o, d) for o, d in datas)
        parse = []
        for _ in range(3):
            buf = io.BytesIO(stream)
            t0 = perf()
            for _rec in iter_records(buf.read):
                pass
            parse.append((perf() - t0) / len(datas))
        costs["iter_records (parse one record)"] = med(parse)
        tmpdir = Path(tempfile.mkdtemp(prefix="unit-pack-", dir=remote))
        adds, finishes = [], []
        for _ in range(3):
            w = PackWriter(tmpdir)
            t0 = perf()
            for o, d in datas:
                w.add(o, d)
            adds.append((perf() - t0) / len(datas))
            t0 = perf()
            w.finish()
            finishes.append(perf() - t0)
        shutil.rmtree(tmpdir, ignore_errors=True)
        costs["PackWriter.add (one os.write)"] = med(adds)
        costs["PackWriter.finish per pack (fsync, publish)"] = med(finishes)
    # The same store folded into one pack (a copy; the library's own repack): how much of
    # has(absent) is the number of packs.
    copy = remote.parent / (remote.name + "-one-pack")
    try:
        from osmo_store.maintenance.gc import repack

        shutil.copytree(remote, copy)
        with Repository.open(copy) as repo:
            repack(repo, all_packs=True)
            costs["packs after repack"] = float(len(repo.objects.packs()))
            costs["LocalObjectStore.has (absent), one pack"] = _per_call(repo.objects.has, absent)
            costs["LocalObjectStore._freshen (absent), one pack"] = _per_call(
                repo.objects._freshen, absent
            )
    except Exception as e:  # noqa: BLE001 - information only
        log(f"      one-pack comparison: n/a ({type(e).__name__}: {e})")
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return costs


def call_counts(prof_path: Path) -> dict[str, int]:
    """ncalls of the functions in UNIT_CALLS in a cProfile dump (matched by file, line and
    name; by file and name alone if the line moved since, as others edit the library)."""
    stats = pstats.Stats(str(prof_path)).stats  # type: ignore[attr-defined]
    out: dict[str, int] = {}
    for label, (module, name) in UNIT_CALLS.items():
        try:
            key = _profile_key(module, name)
        except AttributeError:
            out[label] = 0
            continue
        fname, _line, func = key
        exact = [nc for (f, ln, fn), (_cc, nc, *_) in stats.items() if (f, ln, fn) == key]
        loose = [nc for (f, _ln, fn), (_cc, nc, *_) in stats.items() if (f, fn) == (fname, func)]
        out[label] = sum(exact) if exact else sum(loose)
    return out


def attribution(costs: dict[str, float], counts: dict[str, int], objects: int) -> tuple[str, dict]:
    """Per call x calls = estimated seconds (no profiler overhead in the per-call figures)."""
    rows = {}
    lines = [f"{'call':42s} {'us/call':>8s} {'per obj':>8s} {'calls':>11s} {'est. s':>8s}"]
    leaf_total = 0.0
    for label in UNIT_CALLS:
        leaf = "incl." not in label
        c, n = costs.get(label, float("nan")), counts.get(label, 0)
        # an inclusive row's cost depends on the packs present at the time (they grow during
        # a push): its per-call figure is at the end state, so no estimate is made from it
        est = c * n if leaf else float("nan")
        if leaf and est == est:
            leaf_total += est
        rows[label] = {
            "us_per_call": c * 1e6,
            "calls": n,
            "per_object": n / max(objects, 1),
            "est_s": est,
        }
        lines.append(f"{label:42s} {c * 1e6:8.2f} {n / max(objects, 1):8.2f} {n:11,d} {est:8.2f}")
    lines.append(
        f"{'sum of the leaf rows (not incl.)':42s} {'':8s} {'':8s} {'':11s} {leaf_total:8.2f}"
    )
    rows["leaf_total_s"] = leaf_total
    return "\n".join(lines), rows


def _pack_stats(store: Path) -> dict:
    idx = list((store / "objects" / "pack").glob("*.idx"))
    packs = [p.with_suffix(".pack").stat().st_size for p in idx]
    return {"packs": len(packs), "pack_bytes": sum(packs)}


def _inprocess_push(store: Path, url: str, server: Server, *, profile: bool) -> tuple[dict, Any]:
    from osmo_store.eval.merge import merge_eval_ref
    from osmo_store.eval.state import EVAL_REF_PREFIX, refresh_index
    from osmo_store.repo import Repository
    from osmo_store.sync.remotes import open_remote
    from osmo_store.sync.transfer import push

    prof = cProfile.Profile() if profile else None
    with Repository.open(store) as repo, RequestTimer() as rt:
        remote = open_remote(repo, url)
        try:
            settle()
            s0 = server.cpu()
            t0 = perf()
            cpu0 = time.process_time()
            if prof:
                prof.enable()
            report = push(
                repo, remote, prefix=EVAL_REF_PREFIX, merge=merge_eval_ref, on_updated=refresh_index
            )
            if prof:
                prof.disable()
            out = {
                "wall_s": perf() - t0,
                "client_cpu_s": time.process_time() - cpu0,
                "server_cpu_s": server.cpu() - s0,
                "objects": report.transfer.objects,
                "bytes": report.transfer.bytes,
                "requests": rt.table(),
                "request_stats": {k: list(v) for k, v in rt.stats.items()},
            }
        finally:
            remote.close()
    return out, prof


def _write_profile(prof: cProfile.Profile, name: str, header: str) -> str:
    stats = pstats.Stats(prof)
    path = OUT / f"sync_profile_{name}"
    stats.dump_stats(str(path) + ".prof")
    path.with_suffix(".txt").write_text(header + "\n\n" + _stats_text(stats))
    return str(path.relative_to(ROOT)) + ".txt"


def section_profile(store: Path, meta: dict, work: Path, http: dict | None = None) -> dict:
    """Where a push's (and a clone's) time goes, three ways:
    a. per-request timings, no profiler: an in-process push (client side: wall until each
       answer) against `osmo serve --debug` (server side: time inside the app per request,
       from its log), plus client and server CPU; the server runs under the stack sampler
       only (no cProfile, which inflates pathlib-heavy code ~8x);
    b. cProfile of an in-process push (main thread; the push is single-threaded) against a
       server running with every thread under cProfile (CPU time) and a stack sampler;
    c. the same for an in-process `osmo clone` from that server;
    d. the cost of each call the server (and a cloning client) makes per object, measured in
       isolation without a profiler, times the exact call counts of b and c: an estimate of
       where the time goes that the profiler's overhead does not distort."""
    from osmo_store.cli.main import main

    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    res: dict[str, Any] = {}
    old_token = os.environ.get("OSMO_TOKEN")
    os.environ["OSMO_TOKEN"] = TOKEN
    try:
        # a. request breakdown, nothing profiled
        log_a = work / "serve-debug.log"
        server = Server(
            work / "remote-prof-a",
            token_file,
            log_a,
            debug=True,
            profile_to=OUT / "sync_profile_server_push_sampler",
            cprofile=False,
        )
        try:
            a, _ = _inprocess_push(store, server.url, server, profile=False)
            t0 = perf()
            with contextlib.redirect_stdout(io.StringIO()):
                main(["--store", str(store), "push", server.url])
            a["noop_inprocess_wall_s"] = perf() - t0
        finally:
            server.stop()
        a["server_requests"], a["server_request_stats"] = server_log_table(log_a)
        a["remote_packs"] = _pack_stats(work / "remote-prof-a")
        res["breakdown"] = a
        log(
            f"  (a) in-process push, server under the sampler only: {a['objects']:,} objects "
            f"in {a['wall_s']:.2f} s "
            f"({a['objects'] / a['wall_s']:,.0f}/s); CPU client {a['client_cpu_s']:.1f} s, "
            f"server {a['server_cpu_s']:.1f} s; remote then holds {a['remote_packs']['packs']} "
            f"packs; in-process no-op push {fmt_s(a['noop_inprocess_wall_s'])}"
        )
        log("      client, per request (wall until the answer):")
        log("        " + a["requests"].replace("\n", "\n        "))
        log("      server, per request (time inside the app, from `osmo serve --debug`):")
        log("        " + a["server_requests"].replace("\n", "\n        "))
        shutil.rmtree(work / "remote-prof-a", ignore_errors=True)

        # b. push under cProfile on both sides
        remote_b = work / "remote-prof-b"
        server = Server(
            remote_b,
            token_file,
            work / "serve-prof-push.log",
            profile_to=OUT / "sync_profile_server_push",
        )
        try:
            b, prof = _inprocess_push(store, server.url, server, profile=True)
        finally:
            server.stop()
        files = [
            _write_profile(
                prof,
                "client_push",
                f"in-process osmo_store.sync.transfer.push, main thread, wall {b['wall_s']:.2f} s",
            )
        ]
        res["profiled_push"] = b
        log(
            f"  (b) push under cProfile: {b['wall_s']:.2f} s (CPU client {b['client_cpu_s']:.1f} s,"
            f" server {b['server_cpu_s']:.1f} s)"
        )

        # c. clone under cProfile on both sides
        server = Server(
            remote_b,
            token_file,
            work / "serve-prof-clone.log",
            profile_to=OUT / "sync_profile_server_clone",
        )
        try:
            cprof = cProfile.Profile()
            settle()
            s0 = server.cpu()
            t0 = perf()
            with RequestTimer() as crt, contextlib.redirect_stdout(io.StringIO()):
                cprof.enable()
                main(["clone", server.url, str(work / "clone-prof")])
                cprof.disable()
            c = {"wall_s": perf() - t0, "server_cpu_s": server.cpu() - s0, "requests": crt.table()}
        finally:
            server.stop()
        files.append(
            _write_profile(
                cprof,
                "client_clone",
                f"in-process `osmo clone`, main thread, wall "
                f"{c['wall_s']:.2f} s\n\nper request (wall until the "
                f"answer's headers)\n{c['requests']}",
            )
        )
        res["profiled_clone"] = c
        log(f"  (c) clone under cProfile: {c['wall_s']:.2f} s")

        # d. per-call costs (no profiler) x exact call counts (from the cProfile runs)
        costs = unit_costs(remote_b)
        res["unit_costs_s"] = costs
        log(
            f"  (d) per-call costs measured on the pushed store ({costs['packs in the store']:.0f} "
            f"packs), times the call counts of (b)/(c):"
        )
        cpu = {
            "server, push": a["server_cpu_s"],
            "client, push": a["client_cpu_s"],
            "client, clone": (http or {}).get("clone", {}).get("client_cpu_s", float("nan")),
            "server, clone": (http or {}).get("clone", {}).get("server_cpu_s", float("nan")),
        }
        res["attribution"] = {}
        report = []
        for name, prof_file in (
            ("server, push", "sync_profile_server_push.prof"),
            ("client, push", "sync_profile_client_push.prof"),
            ("client, clone", "sync_profile_client_clone.prof"),
            ("server, clone", "sync_profile_server_clone.prof"),
        ):
            counts = call_counts(OUT / prof_file)
            table, rows = attribution(costs, counts, b["objects"])
            res["attribution"][name] = rows
            head = (
                f"{name}: {b['objects']:,} objects; CPU without profiler "
                f"{cpu[name]:.1f} s; PackWriter.finish "
                f"{costs['PackWriter.finish per pack (fsync, publish)'] * 1e3:.1f} ms per pack"
            )
            report.append(head + "\n" + table)
            log("      " + (head + "\n" + table).replace("\n", "\n        "))
        us = {k: v * 1e6 for k, v in costs.items()}
        nan = float("nan")
        packs_note = (
            f"has(absent): {us.get('LocalObjectStore.has (absent; incl.)', nan):.1f} us with "
            f"{costs['packs in the store']:.0f} packs, "
            f"{us.get('LocalObjectStore.has (absent), one pack', nan):.1f} us after repack to "
            f"{costs.get('packs after repack', nan):.0f}; _freshen(absent): "
            f"{us.get('LocalObjectStore._freshen (absent; incl.)', nan):.1f} us vs "
            f"{us.get('LocalObjectStore._freshen (absent), one pack', nan):.1f} us"
        )
        report.append(packs_note)
        log("      " + packs_note)
        (OUT / "sync_profile_attribution.txt").write_text("\n\n".join(report) + "\n")
    finally:
        if old_token is None:
            os.environ.pop("OSMO_TOKEN", None)
        else:
            os.environ["OSMO_TOKEN"] = old_token
    (OUT / "sync_profile_requests.txt").write_text(
        "in-process push against `osmo serve --debug`, nothing profiled\n\n"
        "client, per request: wall until the answer\n"
        + a["requests"]
        + "\n\nserver, per request: time inside the WSGI app (its --debug log)\n"
        + a["server_requests"]
        + "\n"
    )
    res["files"] = sorted(str(p.relative_to(ROOT)) for p in OUT.glob("sync_profile*"))
    log("  profiles: " + ", ".join(res["files"]))
    return res


# --- report ----------------------------------------------------------------------------------


def judge(name: str, value: float) -> tuple[str, str]:
    op, limit = TARGETS[name]
    if value != value:
        return f"{op} {limit:g}", "n/a"
    ok = value >= limit if op == ">=" else value <= limit
    return f"{op} {limit:,g}", "PASS" if ok else "MISS"


def print_table(res: dict) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    st = res.get("store", {})
    cl = st.get("closure", {})
    if st:
        rows.append(
            (
                "store: eval samples / objects a push sends",
                f"{st['samples']:,} / {cl.get('objects', 0):,}",
                "",
                "",
            )
        )
        rows.append(
            ("store: stored MiB a push sends", f"{cl.get('stored_bytes', 0) / 2**20:,.1f}", "", "")
        )
    h = res.get("http")
    if h:
        p, c, n = h["push"], h["clone"], h["noop"]
        t, v = judge("push_objects_per_s", p["objects_per_s"])
        rows.append(("HTTP push: wall", fmt_s(p["wall_s"]), "", ""))
        rows.append(("HTTP push: objects/s", fmt_rate(p["objects_per_s"]), t, v))
        rows.append(("HTTP push: MiB/s", f"{p['mib_per_s']:.1f}", "", ""))
        rows.append(
            (
                "HTTP push: objects/s, startup subtracted",
                fmt_rate(p["objects_per_s_minus_startup"]),
                "",
                "",
            )
        )
        rows.append(
            (
                "HTTP push: CPU client / server",
                f"{p['client_cpu_s']:.1f} s / {p['server_cpu_s']:.1f} s",
                "",
                "",
            )
        )
        rows.append(("HTTP clone: wall", fmt_s(c["wall_s"]), "", ""))
        rows.append(("HTTP clone: objects/s", fmt_rate(c["objects_per_s"]), "", ""))
        rows.append(("HTTP clone: MiB/s", f"{c['mib_per_s']:.1f}", "", ""))
        rows.append(
            (
                "HTTP clone: CPU client / server",
                f"{c['client_cpu_s']:.1f} s / {c['server_cpu_s']:.1f} s",
                "",
                "",
            )
        )
        t, v = judge("noop_push_s", n["wall_s"])
        rows.append(("no-op push: wall", fmt_s(n["wall_s"]), t, v))
        rows.append(("`osmo --version` startup", fmt_s(h["startup"]["wall_s"]), "", ""))
        for variant in ("imported", "repacked"):
            g = h.get(f"git_{variant}")
            if g:
                rows.append((f"git push ({variant}): wall", fmt_s(g["wall_s"]), "", ""))
                rows.append(
                    (
                        f"git push ({variant}): objects/s ({g['objects']:,} obj)",
                        fmt_rate(g["objects_per_s"]),
                        "",
                        "",
                    )
                )
                rows.append(
                    (
                        f"osmo/git objects/s ({variant})",
                        f"{g['osmo_git_objects_per_s_ratio']:.2f}",
                        "",
                        "",
                    )
                )
                rows.append(
                    (
                        f"git wall / osmo wall, same data ({variant})",
                        f"{g['git_wall_over_osmo_wall']:.2f}",
                        "",
                        "",
                    )
                )
    s3 = res.get("s3")
    if s3:
        rows.append(
            (
                f"S3 (moto) push: {s3['samples']:,} samples, {s3['objects']:,} obj",
                fmt_s(s3["wall_s"]),
                "",
                "",
            )
        )
        rows.append(("S3 (moto) push: objects/s", fmt_rate(s3["objects_per_s"]), "", ""))
        rows.append(
            (
                "S3 (moto) push: CPU client / moto",
                f"{s3['client_cpu_s']:.1f} s / {s3['moto_cpu_s']:.1f} s",
                "",
                "",
            )
        )
        rows.append(("S3 (moto) no-op push", fmt_s(s3["noop_wall_s"]), "", ""))
    w = max(len(r[0]) for r in rows) if rows else 10
    log("")
    log(f"{'measure':{w}s}  {'value':>16s}  {'target':>10s}  result")
    log("-" * (w + 40))
    for name, value, target, verdict in rows:
        log(f"{name:{w}s}  {value:>16s}  {target:>10s}  {verdict}")
    return rows


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    # The benches make stores with `--store PATH`; osmo makes a missing one only when asked
    # (the variable, unlike --create, is understood by the older code some benches compare).
    os.environ.setdefault("OSMO_CREATE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 samples (default 100,000)")
    ap.add_argument("--samples", type=int, help="eval samples in the pushed store")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of push/clone (default 3)")
    ap.add_argument("--noop-per-rep", type=int, default=3, help="no-op pushes per repetition")
    ap.add_argument(
        "--s3-samples",
        type=int,
        help="samples in the store pushed to S3 (default: 2,000 quick, "
        "10,000 full; moto handles ~200 objects/s)",
    )
    ap.add_argument("--s3-reps", type=int, default=1)
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--no-git", action="store_true")
    ap.add_argument("--profile", action="store_true", help="profile even if every target passes")
    ap.add_argument("--no-profile", action="store_true", help="never profile")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    if len(sys.argv) > 2 and sys.argv[1] == "--_profiled-serve":
        return profiled_serve_main(sys.argv[2], sys.argv[3:])
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    samples = args.samples or (10_000 if args.quick else 100_000)
    s3_samples = args.s3_samples or min(samples, 2_000 if args.quick else 10_000)
    cfg = {
        "reps": args.reps,
        "noop_per_rep": args.noop_per_rep,
        "s3_reps": args.s3_reps,
        "keep": args.keep,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sync-run-", dir=OUT))
    res: dict[str, Any] = {
        "mode": mode,
        "samples": samples,
        "s3_samples": s3_samples,
        "config": cfg,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "git_version": subprocess.run(
            ["git", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "repo_head": repo_head(),
        "osmo_store_hash_start": code_hash(),
        "loadavg_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "targets": {},
        "errors": {},
    }
    log(
        f"bench_sync ({mode}): {samples:,} samples, {args.reps} reps, work dir "
        f"{work.relative_to(ROOT)}, load {res['loadavg_start'][0]:.1f}"
    )
    t_start = perf()

    def guarded(name: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - report, keep going, exit 0
            traceback.print_exc()
            res["errors"][name] = f"{type(e).__name__}: {e}"[:4000]
            log(f"  {name}: FAILED ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            return None

    try:
        log("\n[1] the store")
        built = guarded("store", lambda: build_store(samples))
        if built is not None:
            store, meta = built
            res["store"] = meta
            cl = meta["closure"]
            log(
                f"  a push sends {cl['objects']:,} objects ({cl['stored_bytes'] / 2**20:.1f} MiB "
                f"stored): {cl['by_type']}; the store holds {cl['store_objects_total']:,}"
            )
            warm(store)
            git_info = None
            if not args.no_git:
                log("\n[git] the same records in a git repository")
                git_info = guarded("git_build", lambda: build_git(store.parent, store))
                if git_info is not None:
                    res["git_build"] = git_info
                    log(
                        f"  git: {git_info['objects']:,} objects ({git_info['blobs']:,} blobs, "
                        f"{git_info['files']:,} files); export {git_info['export_s']:.1f} s, "
                        f"fast-import {git_info['fast_import_s']:.1f} s, "
                        f"repack -adf {git_info['repack_s']:.1f} s"
                    )
                    warm(store.parent / "git-imported.git")
                    warm(store.parent / "git-repacked.git")
            log("\n[2,3,5] HTTP push / no-op push / clone, and git push, interleaved")
            http = guarded("http", lambda: section_http(store, meta, git_info, cfg, work))
            if http is not None:
                res["http"] = http
                res["targets"]["push_objects_per_s"] = http["push"]["objects_per_s"]
                res["targets"]["noop_push_s"] = http["noop"]["wall_s"]
            if not args.no_s3:
                log(f"\n[4] S3 push to moto on 127.0.0.1 ({s3_samples:,}-sample store)")

                def s3() -> dict:
                    s3_store, s3_meta = (
                        (store, meta) if s3_samples == samples else build_store(s3_samples)
                    )
                    return section_s3(s3_store, s3_meta, cfg, work)

                s3res = guarded("s3", s3)
                if s3res is not None:
                    res["s3"] = s3res
            missed = [k for k, v in res["targets"].items() if judge(k, v)[1] == "MISS"] or (
                [] if http is not None else ["http"]
            )
            if (missed or args.profile) and not args.no_profile:
                log(f"\n[profile] {'targets missed: ' + ', '.join(missed) if missed else 'forced'}")
                prof = guarded("profile", lambda: section_profile(store, meta, work, http))
                if prof is not None:
                    res["profile"] = prof
    finally:
        res["total_s"] = perf() - t_start
        res["loadavg_end"] = os.getloadavg()
        res["osmo_store_hash_end"] = code_hash()
        rows = print_table(res)
        res["table"] = rows
        log("")
        for name, value in res["targets"].items():
            target, verdict = judge(name, value)
            log(f"{verdict}: {name} = {value:,.3g} (target {target})")
        if res["osmo_store_hash_end"] != res["osmo_store_hash_start"]:
            log(
                "WARNING: osmo_store/ changed during this run (hash "
                f"{res['osmo_store_hash_start']} -> {res['osmo_store_hash_end']}): figures "
                "may mix library versions"
            )
        if res["errors"]:
            log(f"errors: {', '.join(res['errors'])}")
        log(
            f"load average: start {res['loadavg_start'][0]:.1f}, end "
            f"{res['loadavg_end'][0]:.1f}; total {res['total_s']:.0f} s"
        )
        text = json.dumps(res, indent=1, default=str)
        (OUT / "bench_sync.json").write_text(text)
        (OUT / f"bench_sync_{mode}.json").write_text(text)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
    sys.exit(0)
