"""Example eval functions (both signatures osmo accepts)."""

from __future__ import annotations


def exact_match(solution_str, ground_truth, extra_info):
    """Simple signature: the final answer text, the ground truth, the row's metadata."""
    return solution_str.strip() == str(ground_truth).strip()


def closeness(messages, ground_truth, metadata):
    """Full signature: all messages. Returns named scores: how far off, and whether the
    answer is a number at all."""
    text = (messages[-1].get("content") or "").strip()
    try:
        got = float(text)
    except ValueError:
        return {"numeric": 0.0, "within_1pct": 0.0}
    want = float(ground_truth)
    return {"numeric": 1.0, "within_1pct": float(abs(got - want) <= abs(want) * 0.01)}
