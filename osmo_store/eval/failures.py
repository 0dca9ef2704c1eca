"""Failures grouped by cause, so a summary says *why* runs failed, not only how many.

A failed run's cause is its error's type, HTTP status and message; a scoring error's is the
eval function and its message. Messages that differ only in numbers (a row's value, a port,
an attempt count) are one cause: the group keeps the count and one example run (the first
by name, so the same samples give the same example whatever order they are read in).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_NUMBER = re.compile(r"\d+")
#: causes kept per summary (per eval function for scoring errors); the rest are counted as
#: one "other causes" group, so a summary stays small when every run fails differently
MAX_GROUPS = 20
_MESSAGE_CHARS = 300


@dataclass
class _Group:
    count: int
    example: str  # sample name: <row-key>.<run>
    message: str  # the example's message


class FailureGroups:
    """Failed runs by cause and scoring errors by eval function and cause, fed one sample
    record (a dict as stored) at a time."""

    def __init__(self) -> None:
        self.failures: dict[tuple[str, Any, str], _Group] = {}
        self.scoring: dict[str, dict[str, _Group]] = {}

    def add(self, sample: dict[str, Any]) -> None:
        name = f"{sample.get('row')}.{sample.get('run')}"
        if sample.get("status") == "failed":
            error = sample.get("error") or {}
            message = str(error.get("message") or "")
            key = (str(error.get("type") or "error"), error.get("status"), _cause(message))
            _count(self.failures, key, name, message)
        for fn, message in (sample.get("scoring_errors") or {}).items():
            _count(self.scoring.setdefault(fn, {}), _cause(str(message)), name, str(message))

    def result(self) -> dict[str, Any]:
        """``{"failures": [...], "scoring_errors": {fn: [...]}}``; each group is ``count``,
        ``message`` and ``example`` (plus ``type`` and ``status`` for a failed run), most
        frequent first."""
        failures = [
            {"type": t, "status": status, "count": g.count, "message": g.message,
             "example": g.example}
            for (t, status, _), g in self.failures.items()
        ]  # fmt: skip
        scoring = {fn: _top([_scoring_group(g) for g in groups.values()])
                   for fn, groups in sorted(self.scoring.items())}  # fmt: skip
        return {"failures": _top(failures), "scoring_errors": scoring}


def group_failures(samples: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``FailureGroups`` of ``samples``."""
    groups = FailureGroups()
    for s in samples:
        groups.add(s)
    return groups.result()


def describe_cause(group: dict[str, Any]) -> str:
    """One line naming a failed run's cause, as the summary prints it."""
    kind = group.get("type") or "error"
    status = f" {group['status']}" if group.get("status") else ""
    return f"{kind}{status}: {group['message']}"


def _scoring_group(g: _Group) -> dict[str, Any]:
    return {"count": g.count, "message": g.message, "example": g.example}


def _cause(message: str) -> str:
    return _NUMBER.sub("N", message[:_MESSAGE_CHARS])


def _count(groups: dict, key: Any, name: str, message: str) -> None:
    g = groups.get(key)
    if g is None:
        groups[key] = _Group(1, name, message[:_MESSAGE_CHARS])
        return
    g.count += 1
    if name < g.example:
        g.example, g.message = name, message[:_MESSAGE_CHARS]


def _top(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups.sort(key=lambda g: (-g["count"], g["message"], g["example"]))
    if len(groups) <= MAX_GROUPS:
        return groups
    rest = groups[MAX_GROUPS - 1 :]
    other = {"count": sum(g["count"] for g in rest), "message": f"({len(rest)} other causes)",
             "example": rest[0]["example"]}  # fmt: skip
    if "type" in rest[0]:
        other.update(type="other", status=None)
    return [*groups[: MAX_GROUPS - 1], other]
