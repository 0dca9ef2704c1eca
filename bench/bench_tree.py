"""Manifest (tree) scaling: updating k entries of an n-entry manifest writes O(k log n)
objects, not a rewrite of the whole manifest.

    .venv/bin/python bench/bench_tree.py [--entries N]     (default 1,000,000)

Prints, for k in 1, 10, 100: new objects written, bytes written and time (median of 5)
for an update of k entries, and the same for the naive design (the whole manifest as one
JSON object rewritten on every update). Exit 0 always; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from osmo_store import ObjectType, Repository, TreeEntry, update_tree, write_tree
from osmo_store.hashing import ObjectId, blake3_hex, canonical_json
from osmo_store.objects import encode_object
from osmo_store.tree import tree_count


class CountingStore:
    """Counts what an update writes (objects and stored bytes) on top of a real store."""

    def __init__(self, objects) -> None:
        self.objects, self.written, self.bytes = objects, 0, 0

    def get(self, oid):
        return self.objects.get(oid)

    def put(self, otype, content):
        oid, data = encode_object(otype, content)
        if not self.objects.has(oid):
            self.written += 1
            self.bytes += len(data)
        return self.objects.put(otype, content)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.entries
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp, Repository.open(Path(tmp) / "s") as repo:
        # Distinct result ids, as an eval has (they need not be stored for this measurement).
        ids = [ObjectId(blake3_hex(b"%d" % i)) for i in range(n)]
        t0 = time.perf_counter()
        with repo.objects.bulk() as w:
            root = write_tree(
                w, (TreeEntry(f"row{i:08d}.0", ObjectType.BLOB, ids[i]) for i in range(n))
            )
        build = time.perf_counter() - t0
        print(f"built a {tree_count(repo.objects, root):,}-entry manifest in {build:.1f} s")
        naive = canonical_json({f"row{i:08d}.0": ids[i] for i in range(n)})
        print(f"{'k':>5} {'objects':>8} {'bytes':>10} {'ms':>8}   naive: {'bytes':>11} {'ms':>8}")
        results = {}
        for k in (1, 10, 100):
            counts, times, naive_times = [], [], []
            for rep in range(5):
                store = CountingStore(repo.objects)
                changes = {
                    f"row{(rep * 7919 + j * 104729) % n:08d}.0": TreeEntry(
                        f"row{(rep * 7919 + j * 104729) % n:08d}.0",
                        ObjectType.BLOB,
                        repo.objects.put(ObjectType.BLOB, f"new {rep} {j}".encode()),
                    )
                    for j in range(k)
                }
                t0 = time.perf_counter()
                update_tree(store, root, changes)
                times.append(time.perf_counter() - t0)
                counts.append((store.written, store.bytes))
                t0 = time.perf_counter()
                encode_object(ObjectType.BLOB, naive)  # what rewriting the whole manifest costs
                naive_times.append(time.perf_counter() - t0)
            objs = statistics.median(c[0] for c in counts)
            byts = statistics.median(c[1] for c in counts)
            ms = 1000 * statistics.median(times)
            nms = 1000 * statistics.median(naive_times)
            naive_bytes = len(encode_object(ObjectType.BLOB, naive)[1])
            row = f"{k:>5} {objs:>8.0f} {byts:>10,.0f} {ms:>8.1f}"
            print(f"{row}   naive: {naive_bytes:>11,} {nms:>8.1f}")
            results[k] = {"objects": objs, "bytes": byts, "ms": ms, "naive_bytes": naive_bytes,
                          "naive_ms": nms}  # fmt: skip
        (out / "bench_tree.json").write_text(
            json.dumps({"entries": n, "build_s": build, "updates": results}, indent=2)
        )


if __name__ == "__main__":
    main()
