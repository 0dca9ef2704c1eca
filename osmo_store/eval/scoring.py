"""Eval functions: two signatures, sync or async, returning a number, a bool or a dict of
named scores. A function that raises is a *scoring error* on that run, counted separately,
never silently a zero."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ScoringError
from .code import USER_CODE_ERRORS, describe_error
from .config import CodeRef

FULL_SIGNATURE_FIRST_PARAM = "messages"


@dataclass(frozen=True)
class EvalFn:
    fn: Callable[..., Any]
    ref: CodeRef
    full: bool  # (messages, ground_truth, metadata) rather than (solution_str, gt, extra)

    @property
    def name(self) -> str:
        return self.ref.attr

    @classmethod
    def wrap(cls, fn: Callable[..., Any], ref: CodeRef) -> EvalFn:
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            params = []
        return cls(fn, ref, bool(params) and params[0] == FULL_SIGNATURE_FIRST_PARAM)


def final_text(messages: list[dict[str, Any]]) -> str:
    """The solution string: the content of the last assistant message."""
    for m in reversed(messages):
        if m.get("role") == "assistant":
            content = m.get("content")
            if isinstance(content, list):  # content parts
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    raise ScoringError(f"{what} is {value!r}; expected a finite number or a bool")


def normalize(value: Any) -> float | dict[str, float]:
    if isinstance(value, dict):
        if not value:
            raise ScoringError("returned an empty dict")
        return {str(k): _number(v, f"score {k!r}") for k, v in value.items()}
    return _number(value, "the result")


def score_one(
    fn: EvalFn, messages: list[dict[str, Any]], ground_truth: Any, metadata: dict[str, Any]
) -> float | dict[str, float]:
    if fn.full:
        result = fn.fn(messages, ground_truth, metadata)
    else:
        result = fn.fn(final_text(messages), ground_truth, metadata)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return normalize(result)


async def _await(aw: Any) -> Any:
    return await aw


def score_all(
    fns: list[EvalFn], messages: list[dict[str, Any]], ground_truth: Any, metadata: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """(scores by function name, scoring errors by function name)."""
    scores: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for fn in fns:
        try:
            scores[fn.name] = score_one(fn, messages, ground_truth, metadata)
        except USER_CODE_ERRORS as e:  # user code: any failure is a scoring error
            errors[fn.name] = describe_error(e)[:500]
    return scores, errors
