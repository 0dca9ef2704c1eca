"""Chat completion streams (server-sent events) to one response and back.

A streamed model answer is stored as the response it assembles to (``assemble_chat_stream``),
so a streamed and a plain request for the same thing share one stored answer; a stored
answer goes back to an agent that asked for a stream as chunks (``render_chat_stream``)
that assemble to the same message, field for field.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ModelCallError

#: characters of content per chunk when a stored answer is streamed
CHUNK_CHARS = 64
_DONE = b"data: [DONE]\n\n"


def parse_sse(body: bytes) -> list[dict[str, Any]]:
    """The JSON events of a whole SSE body (``data:`` lines; ``[DONE]`` and comments
    skipped). Raises ``ValueError`` for an event that is not a JSON object."""
    events: list[dict[str, Any]] = []
    data: list[str] = []
    for line in [*body.decode("utf-8").splitlines(), ""]:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line or not data:
            continue  # an event's other fields, a comment, or a blank line between events
        text, data = "\n".join(data), []
        if text.strip() == "[DONE]":
            continue
        event = json.loads(text)
        if not isinstance(event, dict):
            raise ValueError("a stream event is not a JSON object")
        events.append(event)
    return events


def assemble_chat_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``chat.completion`` response that a stream of ``chat.completion.chunk`` events
    makes: content and tool call arguments concatenated, the last finish reason, usage."""
    for event in events:
        if "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise ModelCallError(f"the model's stream ended with an error: {message}")
    if not events:
        raise ModelCallError("the model's stream had no events")
    first = events[0]
    response: dict[str, Any] = {
        k: first[k] for k in ("id", "created", "model", "system_fingerprint") if k in first
    }
    response["object"] = "chat.completion"
    choices: dict[int, dict[str, Any]] = {}
    for event in events:
        if isinstance(event.get("usage"), dict):
            response["usage"] = event["usage"]
        for part in event.get("choices") or []:
            index = part.get("index", 0)
            choice = choices.setdefault(
                index, {"index": index, "message": {}, "logprobs": None, "finish_reason": None}
            )
            _merge_delta(choice["message"], part.get("delta") or {})
            if part.get("finish_reason") is not None:
                choice["finish_reason"] = part["finish_reason"]
            logprobs = part.get("logprobs")
            if isinstance(logprobs, dict):
                merged = choice["logprobs"] = choice["logprobs"] or {}
                for key, value in logprobs.items():
                    if isinstance(value, list):
                        merged[key] = [*(merged.get(key) or []), *value]
                    else:
                        merged[key] = value
    response["choices"] = [choices[i] for i in sorted(choices)]
    for choice in response["choices"]:
        message = choice["message"]
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        if "tool_calls" in message:
            calls = message["tool_calls"]
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return response


def _merge_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    for key, value in delta.items():
        if key == "tool_calls":
            calls = message.setdefault("tool_calls", {})
            for part in value or []:
                call = calls.setdefault(part.get("index", len(calls)), {"function": {}})
                for name in ("id", "type"):
                    if part.get(name):
                        call[name] = part[name]
                function = part.get("function") or {}
                if function.get("name"):
                    call["function"]["name"] = function["name"]
                arguments = call["function"].get("arguments", "")
                call["function"]["arguments"] = arguments + (function.get("arguments") or "")
        elif isinstance(value, str) and key != "role" and isinstance(message.get(key), str):
            message[key] += value  # content, refusal, reasoning: sent in pieces
        elif value is not None or key not in message:
            message[key] = value


def render_chat_stream(response: dict[str, Any], *, include_usage: bool) -> bytes:
    """A whole SSE body for ``response``: per choice, a first chunk with the role (and any
    field other than content and tool calls), the content in pieces, one chunk per tool
    call, and a last chunk with the finish reason; then usage if asked for, and ``[DONE]``."""
    head = {
        "id": response.get("id", "chatcmpl-osmo"),
        "object": "chat.completion.chunk",
        "created": response.get("created", 0),
        "model": response.get("model", ""),
    }
    if "system_fingerprint" in response:
        head["system_fingerprint"] = response["system_fingerprint"]
    out: list[bytes] = []

    def emit(choice: dict[str, Any] | None, usage: Any = None) -> None:
        chunk = {**head, "choices": [choice] if choice is not None else []}
        if usage is not None:
            chunk["usage"] = usage
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    for choice in response.get("choices") or []:
        index = choice.get("index", 0)
        message = dict(choice.get("message") or {})
        content = message.pop("content", None)
        calls = message.pop("tool_calls", None) or []
        logprobs = choice.get("logprobs")
        first = {"role": message.pop("role", "assistant"), **message}
        if content is not None:
            first["content"] = ""
        emit({"index": index, "delta": first, "logprobs": None, "finish_reason": None})
        # Logprobs belong to the tokens they came with: with them, the content goes whole.
        size = len(content) if logprobs else CHUNK_CHARS
        for start in range(0, len(content or ""), max(size, 1)):
            piece = {"content": content[start : start + size]}  # type: ignore[index]
            emit({"index": index, "delta": piece, "logprobs": logprobs, "finish_reason": None})
        for position, call in enumerate(calls):
            part = {"index": position, **call}
            emit({"index": index, "delta": {"tool_calls": [part]}, "logprobs": None,
                  "finish_reason": None})  # fmt: skip
        finish = choice.get("finish_reason")
        emit({"index": index, "delta": {}, "logprobs": None, "finish_reason": finish})
    if include_usage and response.get("usage") is not None:
        emit(None, response["usage"])
    out.append(_DONE)
    return b"".join(out)
