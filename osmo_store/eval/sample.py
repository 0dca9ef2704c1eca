"""Reading a sample blob: the stored record of one finished run (docs/eval.md).

A sample blob's hash says it is intact, not that it is a sample: a remote's push or pull
can bring any blob under a config's ``samples`` tree, and a blob written by a bug stays.
Every reader goes through :func:`parse_sample`, which returns the record only if it has
the shape the summaries, merges and resumes rely on, and raises MalformedObject naming the
blob otherwise (a one-line error, never a crash deep in a summary).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import MalformedObject
from ..hashing import ObjectId, is_oid
from ..objects import ObjectType
from ..repo import Repository

STATUSES = ("ok", "failed")


def load_sample(repo: Repository, oid: ObjectId) -> dict[str, Any]:
    return parse_sample(repo.objects.get_typed(oid, ObjectType.BLOB), oid)


def parse_sample(content: bytes, oid: str) -> dict[str, Any]:
    try:
        body = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _malformed(oid, "is not UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise _malformed(oid, "is not a JSON object")
    _check(oid, body)
    return body


def _check(oid: str, body: dict[str, Any]) -> None:
    """Each field a reader uses, with the type it uses it as (absent optional fields are
    fine: older samples lack some)."""
    if not isinstance(body.get("row"), str):
        raise _malformed(oid, "has no row key")
    run = body.get("run", 0)
    if not isinstance(run, int) or isinstance(run, bool) or run < 0:
        raise _malformed(oid, "has a run index that is not a count")
    if body.get("status") not in STATUSES:
        raise _malformed(oid, f"has status {str(body.get('status'))[:40]!r}")
    finished = body.get("finished")
    if finished is not None and not _finite(finished):
        raise _malformed(oid, "has a 'finished' time that is not a number")
    for key in ("scores", "scoring_errors", "usage"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise _malformed(oid, f"has {key!r} that is not an object")
    for fn, score in (body.get("scores") or {}).items():
        values = score.values() if isinstance(score, dict) else [score]
        if not all(_finite(v) for v in values):
            raise _malformed(oid, f"has a score of {fn[:40]!r} that is not a number")
    if body.get("rollout_id") is not None and not is_oid(body["rollout_id"]):
        raise _malformed(oid, "has a 'rollout_id' that is not an object id")
    if body.get("rollout") is not None and not isinstance(body["rollout"], str):
        raise _malformed(oid, "has a 'rollout' key that is not a string")
    calls = body.get("calls")
    if calls is not None and not (
        isinstance(calls, list)
        and all(isinstance(c, dict) and isinstance(c.get("key"), str) and is_oid(c.get("id"))
                for c in calls)
    ):  # fmt: skip
        raise _malformed(oid, "has 'calls' that are not a list of {key, id}")


def _finite(value: object) -> bool:
    # bool counts: an eval function's pass/fail is a score (True is 1.0). An int too big
    # for a float would break every mean taken over it.
    if not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _malformed(oid: str, what: str) -> MalformedObject:
    return MalformedObject(f"sample blob {oid} {what}")
