#!/usr/bin/env python
"""Pack format version 1 vs version 2, side by side (issue 15; see bench/README.md).

Run:  .venv/bin/python bench/bench_pack.py [--records 20000 100000] [--reads 200]

For each record count: the same eval records (bench_store's ``make_records``, 4 KB each)
are written into a fresh store through the store's bulk writer once as a version 1 pack and
once as a version 2 pack. Figures:

- stored bytes of the pack, and its ratio to one zstd level-3 stream of the same records;
Times are CPU seconds (this process's, or the subprocess's), medians:

- single read: ``osmo cat-file -p ID`` as a subprocess (median of ``--cat-files`` runs), and
  in-process the first ``get`` after opening the store (the pack's index and, in version 2,
  its dictionary are read then), median over ``--reads`` ids;
- whole-config read: every record read and verified through ``repo.objects.get`` in a
  shuffled order (manifest order is not write order), the versions taking turns, median
  of 5;
- bulk write of the records, and ``repack -a`` of the store afterwards (one loose object
  added, so the pack is rewritten: as version 2 in both columns).

Figures also go to bench/out/bench_pack.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

from bench_store import make_records  # noqa: E402

from osmo_store import ObjectType, Repository  # noqa: E402
from osmo_store.backends import pack as pack_mod  # noqa: E402
from osmo_store.maintenance.gc import repack  # noqa: E402
from osmo_store.objects import ZSTD_LEVEL  # noqa: E402

# CPU time, not wall time: the machine this runs on is shared and loaded (load 13 on 2
# cores when the README's figures were taken), and both versions do the same I/O.
perf = time.process_time
OSMO = [sys.executable, "-m", "osmo_store.cli.main"]


def build(store: Path, records: list[bytes], version: int) -> tuple[list[str], int]:
    """One store holding the records as blobs in one pack of ``version``."""
    saved = pack_mod.PACK_VERSION
    pack_mod.PACK_VERSION = version
    try:
        with Repository.open(store, create=True) as repo:
            with repo.objects.bulk() as w:
                ids = [w.put(ObjectType.BLOB, r) for r in records]
            (pack,) = repo.objects.packs()
            assert pack.version == version
            return ids, pack.stored_total
    finally:
        pack_mod.PACK_VERSION = saved


def first_read_s(store: Path, ids: list[str], n: int) -> float:
    times = []
    for oid in random.Random(1).sample(ids, min(n, len(ids))):
        t = perf()
        with Repository.open(store) as repo:
            repo.objects.get(oid)
        times.append(perf() - t)
    return statistics.median(times)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cat_file_s(store: Path, ids: list[str], n: int) -> float:
    """CPU time of one ``osmo cat-file -p`` process (start-up included)."""
    times = []
    for oid in random.Random(2).sample(ids, min(n, len(ids))):
        t = _children_cpu()
        subprocess.run([*OSMO, "--store", str(store), "cat-file", "-p", oid],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        times.append(_children_cpu() - t)
    return statistics.median(times)


def whole_read_s(stores: dict[int, Path], ids: list[str], reps: int = 5) -> dict[int, float]:
    """Per version, the median time to read every id; the versions take turns, so load
    from other work falls on both alike."""
    order = list(ids)
    random.Random(3).shuffle(order)
    times: dict[int, list[float]] = {v: [] for v in stores}
    repos = {v: Repository.open(store) for v, store in stores.items()}
    try:
        for _ in range(reps):
            for version, repo in repos.items():
                t = perf()
                for oid in order:
                    repo.objects.get(oid)
                times[version].append(perf() - t)
    finally:
        for repo in repos.values():
            repo.close()
    return {v: statistics.median(t) for v, t in times.items()}


def repack_s(store: Path) -> float:
    """``osmo repack -a`` of the pack and one loose object: every object is read, verified
    and written again (a version 1 pack becomes version 2)."""
    with Repository.open(store) as repo:
        repo.objects.put(ObjectType.BLOB, b"one loose object")
        t = perf()
        repack(repo, all_packs=True)
        return perf() - t


def measure(n: int, reads: int, cat_files: int, work: Path) -> dict:
    records = make_records(n)
    stream = len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(b"".join(records)))
    row: dict = {"records": n, "record_bytes": sum(map(len, records)), "zstd3_stream": stream}
    stores = {v: work / f"v{v}-{n}" for v in (1, 2)}
    for version, store in stores.items():
        t = perf()
        ids, stored = build(store, records, version)
        row[f"v{version}"] = {
            "write_s": perf() - t,
            "pack_bytes": stored,
            "ratio_to_stream": stored / stream,
        }
    del records
    whole = whole_read_s(stores, ids)
    for version, store in stores.items():
        row[f"v{version}"].update({
            "first_get_ms": first_read_s(store, ids, reads) * 1e3,
            "cat_file_ms": cat_file_s(store, ids, cat_files) * 1e3,
            "whole_read_s": whole[version],
            "repack_s": repack_s(store),
        })  # fmt: skip
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--records", type=int, nargs="+", default=[20000, 100000])
    ap.add_argument("--reads", type=int, default=200, help="in-process first reads")
    ap.add_argument("--cat-files", type=int, default=15, help="cat-file subprocesses")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        for n in args.records:
            row = measure(n, args.reads, args.cat_files, Path(tmp))
            rows.append(row)
            v1, v2 = row["v1"], row["v2"]
            print(f"{n} records ({row['record_bytes'] / 1e6:.0f} MB), one zstd-3 stream "
                  f"{row['zstd3_stream'] / 1e6:.1f} MB")  # fmt: skip
            print(f"  {'':24} {'v1':>10} {'v2':>10}  v2/v1")
            for key, label, fmt in [
                ("pack_bytes", "pack MB", "{:10.1f}"),
                ("ratio_to_stream", "pack / zstd-3 stream", "{:10.2f}"),
                ("cat_file_ms", "cat-file (subprocess) ms", "{:10.1f}"),
                ("first_get_ms", "open + first get ms", "{:10.2f}"),
                ("whole_read_s", "read all records s", "{:10.2f}"),
                ("write_s", "bulk write s", "{:10.2f}"),
                ("repack_s", "repack -a s", "{:10.2f}"),
            ]:
                a, b = v1[key], v2[key]
                scale = 1e6 if key == "pack_bytes" else 1
                print(f"  {label:24} {fmt.format(a / scale)} {fmt.format(b / scale)}  "
                      f"{b / a:.2f}")  # fmt: skip
            ok = v2["ratio_to_stream"] <= 1.2
            print(f"  target pack <= 1.2x stream: {'PASS' if ok else 'MISS'}")
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_pack.json").write_text(json.dumps({"pid": os.getpid(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
