"""The mock server's answers beyond a plain chat completion: streamed chat completions
(server-sent events), legacy text completions and embeddings.

The stream is cut differently from the way the eval's endpoint re-streams a stored answer
(a chunk per word, tool call arguments in two pieces), so a test that streams through both
checks that assembling and re-rendering keep the message as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Any

#: numbers per embedding vector
EMBEDDING_DIMS = 8


def chat_stream(completion: dict[str, Any], *, include_usage: bool) -> bytes:
    """``completion`` (a ``chat.completion``) as the SSE body a streaming server sends."""
    head = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    events: list[dict[str, Any]] = []
    for choice in completion["choices"]:
        index, message = choice["index"], choice["message"]

        def part(delta: dict[str, Any], finish: str | None = None, *, index: int = index) -> None:
            events.append(
                {**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}]}
            )  # fmt: skip

        part({"role": "assistant", "content": ""})
        for word in re.findall(r"\S+\s*|\s+", message.get("content") or ""):
            part({"content": word})
        for position, call in enumerate(message.get("tool_calls") or []):
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            part({"tool_calls": [{"index": position, "id": call["id"], "type": "function",
                                  "function": {"name": call["function"]["name"],
                                               "arguments": arguments[:half]}}]})  # fmt: skip
            part({"tool_calls": [{"index": position, "function": {"arguments": arguments[half:]}}]})
        part({}, choice["finish_reason"])
    if include_usage:
        events.append({**head, "choices": [], "usage": completion["usage"]})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + b"data: [DONE]\n\n"


def text_completion(request: dict[str, Any], text: str) -> dict[str, Any]:
    """A ``text_completion`` answering ``request`` (``POST /v1/completions``) with ``text``."""
    prompt = request.get("prompt")
    prompt_tokens = len(str(prompt).split())
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": request["model"],
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        },
    }


def embeddings(request: dict[str, Any]) -> dict[str, Any] | None:
    """Deterministic vectors for ``request["input"]`` (a string or a list of them), or None
    if it is neither."""
    given = request.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return None
    data = []
    for index, text in enumerate(texts):
        digest = hashlib.blake2b(text.encode(), digest_size=EMBEDDING_DIMS).digest()
        vector = [round(b / 255 - 0.5, 6) for b in digest]
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": request.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
