#!/usr/bin/env bash
# A tour of the store on the default store ($OSMO_STORE, else ~/.cache/osmo): store some
# eval-like records, name them in a manifest and a run record, move a ref, inspect, verify,
# pack and collect garbage. Safe to run repeatedly: identical content is stored once.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== store: $(osmo cache stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')"
for i in 1 2 3; do
  printf '{"row": %d, "prompt": "What is %d + %d?", "answer": "%d", "score": 1.0}\n' \
    "$i" "$i" "$i" $((i + i)) > "$work/sample-$i.json"
done
echo "== hash-object -w: three samples"
osmo hash-object -w "$work"/sample-*.json | tee "$work/ids"

echo "== a manifest (tree) naming them, and a run record pointing at it"
python3 - "$work/ids" > "$work/run-id" <<'PY'
import sys
from osmo_store import ObjectType, Repository, RunRecord, TreeEntry, write_tree
ids = open(sys.argv[1]).read().split()
with Repository.open() as repo:
    tree = write_tree(repo.objects, [TreeEntry(f"sample-{i}", ObjectType.BLOB, oid)
                                     for i, oid in enumerate(ids, 1)])
    print(repo.objects.put_run(RunRecord(tree, (), {"status": "completed", "n": len(ids)})))
PY
run=$(cat "$work/run-id")
osmo update-ref -m "walkthrough" refs/demo/walkthrough "$run"
echo "== show-ref / ls-tree / cat-file"
osmo show-ref demo
osmo ls-tree "${run:0:8}"
osmo cat-file -p refs/demo/walkthrough
osmo cat-file -p "$(head -n1 "$work/ids")"
echo "== reflog"
osmo reflog refs/demo/walkthrough | head -n 3
echo "== fsck / repack / gc / stats"
osmo fsck
osmo repack
osmo cache gc
osmo cache stats
