"""An example agent written with the official `openai` SDK, as agents are outside osmo: it
asks the model, and asks again (a second turn) if the answer is not a number. The SDK
talks to the eval's recording endpoint (`client.base_url`, `client.api_key`), so each call
is cached in the store like a `client.chat` call, and a re-run makes none of them again.

    osmo eval -d arithmetic.jsonl --model toy-arith --base-url URL \\
        --agent sdk_agent.py:solve --eval-fn scoring.py:exact_match
"""

from __future__ import annotations

import re

import openai

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
# One HTTP client for every rollout. Each rollout has a base URL of its own, so it builds
# its own SDK client; without a shared `http_client` each would build an HTTP client too,
# and httpx loads the CA bundle for every one (~30 ms of CPU: more than 30 model calls
# through the endpoint cost).
HTTP = openai.DefaultHttpxClient()


def solve(messages, row, client):
    api = openai.OpenAI(base_url=client.base_url, api_key=client.api_key, http_client=HTTP)
    conversation = list(messages)
    for _ in range(client.max_turns or 3):
        answer = api.chat.completions.create(model=client.model, messages=conversation)
        reply = answer.choices[0].message.model_dump(exclude_none=True)
        conversation.append(reply)
        if NUMBER.match((reply.get("content") or "").strip()):
            break
        conversation.append({"role": "user", "content": "Answer with the number only."})
    return conversation
