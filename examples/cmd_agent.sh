#!/bin/sh
# An example agent that is a program (osmo eval --agent-cmd "sh cmd_agent.sh"): any
# language works the same way. osmo runs it once per run with OPENAI_BASE_URL and
# OPENAI_API_KEY naming the eval's recording endpoint (OSMO_MODEL the model to ask for),
# the dataset row as JSON on stdin; it prints the final messages as JSON. The model call it
# makes with curl is cached in the store, so a re-run makes none again.
set -eu
# The request for the row on stdin (python3 for the JSON; jq would do as well).
request=$(python3 -c '
import json, os, sys
row = json.load(sys.stdin)
messages = [{"role": "system", "content": row["system_prompt"]},
            {"role": "user", "content": row["user_prompt"]}]
print(json.dumps({"model": os.environ.get("OSMO_MODEL", ""), "messages": messages}))')
answer=$(curl -sS --fail-with-body \
  -H "Authorization: Bearer $OPENAI_API_KEY" -H "Content-Type: application/json" \
  -d "$request" "$OPENAI_BASE_URL/chat/completions")
# The final messages: the request's, then the model's answer.
printf '%s' "$answer" | REQUEST="$request" python3 -c '
import json, os, sys
answer = json.load(sys.stdin)
messages = json.loads(os.environ["REQUEST"])["messages"]
print(json.dumps(messages + [answer["choices"][0]["message"]]))'
