"""How compact a store is right after an eval, and what sync moves (issue 15).

One eval of ``--runs`` rows (the synthetic arithmetic dataset, the mock model server on
127.0.0.1, ``osmo eval`` as a subprocess, no gc, no repack), then, side by side:

* bytes on disk of the store (every file's filesystem blocks), and its packs' bytes;
* the same objects as **one zstd-3 stream** (their framed forms, in id order);
* the **seed's JSON cache**: the design osmo grew from kept one JSON file of every run's
  result (row id, run, answer and scores), as bench_store.py section b emulates;
* loose objects left (issue 15 item 2: none after an eval);
* ``osmo cache stats`` per kind;
* push and pull of the store through ``osmo serve``'s app on 127.0.0.1, with every request
  and answer body counted, and a push to a directory remote (the bytes of the packs it
  receives), each against the stored pack bytes of the store pushed.

    .venv/bin/python bench/bench_compact.py              # 20,000 runs
    .venv/bin/python bench/bench_compact.py --runs 2000  # quick
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
from typing import Any

import zstandard

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT = BENCH_DIR / "out"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from synthetic import write_dataset  # noqa: E402

from osmo_store.eval.catalog import list_configs  # noqa: E402
from osmo_store.eval.runner import load_samples  # noqa: E402
from osmo_store.eval.state import ConfigState  # noqa: E402
from osmo_store.http.app import make_app  # noqa: E402
from osmo_store.http.serve import HttpServer  # noqa: E402
from osmo_store.objects import frame_header  # noqa: E402
from osmo_store.repo import Repository  # noqa: E402
from osmo_store.sync.remotes import open_remote  # noqa: E402
from osmo_store.sync.transfer import pull, push  # noqa: E402
from osmo_store.testing.mockserver import MockServer  # noqa: E402

EVAL_FN = f"{ROOT / 'examples' / 'scoring.py'}:exact_match"


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def pack_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "objects" / "pack").glob("*.pack"))


def loose_count(store: Path) -> int:
    objects = store / "objects"
    return sum(len(os.listdir(d)) for d in objects.iterdir() if len(d.name) == 2)


def one_zstd_stream(store: Path) -> tuple[int, int]:
    """(framed bytes, bytes of them as one zstd level-3 stream), every stored object."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    framed = compressed = 0
    with Repository.open(store) as repo:
        for oid in sorted(repo.objects.iter_ids()):
            otype, content = repo.objects.get(oid)
            data = frame_header(otype, len(content)) + content
            framed += len(data)
            compressed += len(compressor.compress(data))
    return framed, compressed + len(compressor.flush())


def seed_json_bytes(store: Path) -> int:
    """The seed's cache: one JSON file of every run's row, run, answer and scores."""
    results = {}
    with Repository.open(store) as repo:
        for config in list_configs(repo):
            trees = ConfigState.from_run(repo, config.run_id).trees
            for s in load_samples(repo, trees):
                rollout = json.loads(repo.objects.get(s["rollout_id"])[1])
                answer = rollout["messages"][-1].get("content")
                results[f"{s['row']}.{s['run']}"] = {"answer": answer, "scores": s["scores"]}
    return len(json.dumps(results).encode())


class CountingServer:
    """``osmo serve``'s app in a thread, counting request and answer body bytes."""

    def __init__(self, path: Path) -> None:
        self.repo = Repository.open(path)
        self.bytes = 0
        lock = threading.Lock()
        app = make_app(self.repo, token=None)

        def counting(environ: dict[str, Any], start_response: Any):
            read = environ["wsgi.input"].read

            def counted(*a: Any) -> bytes:
                data = read(*a)
                with lock:
                    self.bytes += len(data)
                return data

            environ["wsgi.input"].read = counted
            for chunk in app(environ, start_response):
                with lock:
                    self.bytes += len(chunk)
                yield chunk

        self.server = HttpServer(counting, "127.0.0.1", 0, threads=2, max_body=app.max_body)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.stop()
        self.thread.join(10)
        self.repo.close()


def run_eval(store: Path, dataset: Path) -> float:
    with MockServer() as server:
        cmd = [sys.executable, "-m", "osmo_store.cli", "--store", str(store), "eval",
               "-d", str(dataset), "--model", "bench-model", "--base-url", server.base_url,
               "--eval-fn", EVAL_FN, "--concurrency", "16", "-q", "--json"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0


def sync_figures(work: Path, store: Path) -> dict[str, int]:
    stored = pack_bytes(store)
    server = CountingServer(work / "remote")
    try:
        with Repository.open(store) as repo:
            push(repo, open_remote(repo, server.server.url))
        pushed = server.bytes
        with Repository.open(work / "pulled") as repo:
            pull(repo, open_remote(repo, server.server.url))
        pulled = server.bytes - pushed
    finally:
        server.close()
    with Repository.open(store) as repo:
        push(repo, open_remote(repo, str(work / "dir-remote"), create=True))
    return {
        "stored_pack_bytes": stored,
        "http_push_bytes": pushed,
        "http_pull_bytes": pulled,
        "dir_push_pack_bytes": pack_bytes(work / "dir-remote"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20_000)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compact-", dir=OUT))
    try:
        store = work / "store"
        subprocess.run([sys.executable, "-m", "osmo_store.cli", "init", str(store)], check=True)
        dataset = write_dataset(work / "data.jsonl", args.runs, seed="compact", row_id="c-{:06d}")
        wall = run_eval(store, dataset)
        res: dict[str, Any] = {"runs": args.runs, "eval_wall_s": round(wall, 2)}
        res["disk_bytes"] = disk_bytes(store)
        res["pack_bytes"] = pack_bytes(store)
        res["loose_objects"] = loose_count(store)
        res["framed_bytes"], res["zstd_stream_bytes"] = one_zstd_stream(store)
        res["seed_json_bytes"] = seed_json_bytes(store)
        stats = subprocess.run(
            [sys.executable, "-m", "osmo_store.cli", "--store", str(store), "cache", "stats",
             "--json"], check=True, capture_output=True, text=True,
        )  # fmt: skip
        res["kinds"] = json.loads(stats.stdout)["kinds"]
        res["sync"] = sync_figures(work, store)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    z = res["zstd_stream_bytes"]
    s = res["sync"]
    print(f"eval of {args.runs} runs: {res['eval_wall_s']} s; loose objects left: "
          f"{res['loose_objects']}")  # fmt: skip
    print(f"on disk {res['disk_bytes']:,} B = {res['disk_bytes'] / z:.2f}x one zstd-3 stream "
          f"({z:,} B; target <= 1.5x); packs {res['pack_bytes']:,} B = "
          f"{res['pack_bytes'] / z:.2f}x")  # fmt: skip
    print(f"seed JSON cache {res['seed_json_bytes']:,} B: on disk = "
          f"{res['disk_bytes'] / res['seed_json_bytes']:.1f}x it")  # fmt: skip
    for name, k in res["kinds"].items():
        print(f"  {name:<12} {k['objects']:>8} objects  logical {k['logical_bytes']:>12,}  "
              f"stored {k['stored_bytes']:>12,}  disk {k['disk_bytes']:>12,}")  # fmt: skip
    for key in ("http_push_bytes", "http_pull_bytes", "dir_push_pack_bytes"):
        print(f"{key}: {s[key]:,} B = {s[key] / s['stored_pack_bytes']:.2f}x the stored packs "
              f"({s['stored_pack_bytes']:,} B; target <= 1.0x)")  # fmt: skip
    (OUT / "bench_compact.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
