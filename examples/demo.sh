#!/usr/bin/env bash
# The main job, end to end, offline: serve a scripted OpenAI-compatible model on 127.0.0.1
# (osmo's mock server: arithmetic with some deliberate mistakes and 20 ms latency), run the
# example agent + eval functions over examples/arithmetic.jsonl (240 rows x 2 samples) on
# the default store (--model-id names the endpoint, so the cache survives the server port
# changing between runs), then run the same command again: the second run is served entirely
# from the store, with zero model calls. Then the same for two agents written outside osmo:
# one with the official openai SDK (sdk_agent.py) and one a shell script using curl
# (cmd_agent.sh, run with --agent-cmd): they call the eval's recording endpoint, and their
# re-runs make no model calls either.
set -euo pipefail
cd "$(dirname "$0")"
port_file=$(mktemp)
python -m osmo_store.testing.mockserver --latency 0.02 --error-rate 0.15 > "$port_file" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$port_file"' EXIT
for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.05; done
base_url=$(head -n1 "$port_file")

run() {
  osmo eval -d arithmetic.jsonl --model toy-arith --base-url "$base_url" --model-id toy-arith-mock \
    --agent agent.py:solve --eval-fn scoring.py:exact_match --eval-fn scoring.py:closeness \
    --n 2 --temperature 0.7 --max-turns 3 --concurrency 16 "$@"
}
echo "== first run (model calls go to $base_url)"
run
echo
echo "== same command again: everything comes from the store"
run
echo
osmo eval cache ls
summarize() {
  python3 -c 'import json, sys; s = json.load(sys.stdin)["session"]
print("runs computed:", s["computed"], " model calls:", s["model_calls"])'
}
echo
echo "== an openai-SDK agent (first 40 rows), twice: the second run makes no model calls"
for _ in 1 2; do
  osmo eval -d arithmetic.jsonl --limit 40 --model toy-arith --base-url "$base_url" \
    --model-id toy-arith-mock --agent sdk_agent.py:solve --eval-fn scoring.py:exact_match -q --json \
    | summarize
done
echo
echo "== an agent that is a shell script using curl (--agent-cmd), twice: its first run"
echo "   asks what the SDK agent asked (same messages, model and sample), so the store answers"
for _ in 1 2; do
  osmo eval -d arithmetic.jsonl --limit 40 --model toy-arith --base-url "$base_url" \
    --model-id toy-arith-mock --agent-cmd "sh cmd_agent.sh" --eval-fn scoring.py:exact_match -q --json \
    | summarize
done
