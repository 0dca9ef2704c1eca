#!/usr/bin/env bash
# Run `make test` N times, each in a fresh clone of HEAD, while a busy loop keeps every core
# fully loaded: how tests/README.md's stability tally is measured.
#   bash tests/stability.sh [N]        (default 10; clones under a temp dir, removed after)
set -u
n=${1:-10}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d)
busy=()
for _ in $(seq "$(nproc)"); do (while :; do :; done) & busy+=($!); done
cleanup() { kill "${busy[@]}" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
pass=0
for i in $(seq "$n"); do
    git clone -q "$repo" "$work/run-$i"
    start=$(date +%s)
    if make -C "$work/run-$i" test > "$work/log-$i" 2>&1; then
        pass=$((pass + 1)); verdict=passed
    else
        verdict=FAILED; cp "$work/log-$i" "/tmp/osmo-stability-fail-$i.log"
    fi
    echo "run $i: $verdict in $(( $(date +%s) - start )) s; $(grep -E '^[0-9]+ (passed|failed)|passed|failed' "$work/log-$i" | tail -1)"
    rm -rf "$work/run-$i"
done
echo "$pass/$n passed ($(nproc) busy loops; HEAD $(git -C "$repo" rev-parse --short HEAD))"
[ "$pass" -eq "$n" ]
