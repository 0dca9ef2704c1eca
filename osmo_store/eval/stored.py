"""Reading what an eval stored: sample blobs (the record of one finished run), rollout and
model-call blobs (what a later run reuses), and the ``meta`` of its run records
(docs/eval.md); and writing sample blobs, whose format versions this module alone knows.

A blob's hash says it is intact, not that it has the shape its readers expect: a remote's
push or pull can bring any blob or run record under a config, and one written by a bug
stays. Every reader goes through the functions here, which
return the value only if it has the shape the summaries, listings, merges and resumes rely
on, and raise MalformedObject naming the object otherwise (a one-line error, never a crash
deep in a listing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import MalformedObject
from ..hashing import ObjectId, canonical_json, is_oid
from ..objects import ObjectType, RunRecord
from ..repo import Repository

STATUSES = ("ok", "failed")

#: the sample blob version osmo writes (objects_spec.md section 9); it reads 1, 2 and 3
SAMPLE_VERSION = 3
#: fields of a sample (as readers get it) that a version 3 blob leaves out: the manifest
#: entry's name says the row key and run, the config's ``rollouts`` manifest the rollout's
#: id (``rollout_id``) under the same name, the rollout blob its own key (``key``), and
#: ``error`` the status (present: failed)
_IMPLIED = ("row", "run", "rollout", "rollout_id", "status", "schema")
#: fields a version 3 blob leaves out when they hold nothing (null, {}): readers get them
#: back as null or {}
_EMPTY = ("scores", "scoring_errors")


def sample_blob(sample: dict[str, Any]) -> bytes:
    """The blob that records ``sample`` (a finished run as readers get it back: ``row``,
    ``run``, ``status``, ``finished``, ``rollout_id``, ``scores``...): version 3, which says
    only what nothing else does. Without the rollout's id, and with ``finished`` in whole
    seconds, the runs of a config that finish in one second with the same scores and usage
    share one blob: a second config on a solver then costs little more than its manifest
    entries (version 2 had an id and a millisecond time in each, so a blob per run)."""
    body = {k: v for k, v in sample.items() if k not in _IMPLIED and not (k in _EMPTY and not v)}
    if sample.get("status") == "failed":
        body["error"] = sample.get("error") or {}  # present iff failed: it says the status
    else:
        body.pop("error", None)
    if body.get("finished") is not None:
        body["finished"] = int(body["finished"])
    body["schema"] = SAMPLE_VERSION
    return canonical_json(body)


def split_sample_name(name: str) -> tuple[str, int]:
    """The row key and run index a sample's manifest name (``<row-key>.<run>``) holds."""
    row, dot, run = name.rpartition(".")
    if not (row and dot and run.isascii() and run.isdigit() and run == str(int(run))):
        raise MalformedObject(f"sample name {name[:80]!r} is not <row key>.<run>")
    return row, int(run)


class SampleReader:
    """A config's samples as readers get them, from the config's manifests (``trees``, as
    ``ConfigState.trees``): a version 3 sample's ``rollout_id`` is the config's
    ``rollouts`` entry of the same name, looked up through cached manifest nodes (the two
    manifests are tries keyed by the name's hash, so walking ``samples`` in order reads
    ``rollouts`` in order too). Version 1 and 2 blobs name their rollout themselves. Not
    thread-safe."""

    #: nodes kept: a walk of ``samples`` reads ``rollouts`` leaf after leaf
    CACHE_BYTES = 1 << 20

    def __init__(self, repo: Repository, trees: Mapping[str, ObjectId]) -> None:
        from ..tree import TreeReader  # here: listing configs never reads a sample

        self.repo = repo
        self.rollouts = trees.get("rollouts")
        self._reader = TreeReader(repo.objects, max_bytes=self.CACHE_BYTES)

    def load(self, oid: ObjectId, name: str) -> dict[str, Any]:
        """The sample blob ``oid``, listed under ``name`` in the config's ``samples`` or
        ``failed`` manifest, as :func:`parse_sample` gives it."""
        return self.parse(self.repo.objects.get_typed(oid, ObjectType.BLOB), oid, name)

    def parse(self, content: bytes, oid: str, name: str) -> dict[str, Any]:
        body = _json_object(content, oid, "sample")
        rollout_id = None
        if body.get("schema") == SAMPLE_VERSION and "error" not in body:
            rollout_id = self.rollout_id(name)
            if rollout_id is None:
                raise _malformed(oid, f"({name[:80]}) is finished but its config's 'rollouts' "
                                      "manifest has no blob of that name")  # fmt: skip
        return parse_sample(content, oid, name, rollout_id=rollout_id, body=body)

    def rollout_id(self, name: str) -> ObjectId | None:
        """The ``rollouts`` entry ``name`` (a blob id), if there is one."""
        if self.rollouts is None:
            return None
        entry = self._reader.get(self.rollouts, name)
        return entry.oid if entry is not None and entry.type is ObjectType.BLOB else None


def load_sample(repo: Repository, oid: ObjectId, name: str) -> dict[str, Any]:
    """The sample blob ``oid``, listed under ``name`` in a config's ``samples`` or
    ``failed`` manifest, as :func:`parse_sample` gives it, without its config's
    ``rollouts`` manifest: a version 3 sample then has no ``rollout_id``. For readers that
    need only scores, usage, errors or calls; :class:`SampleReader` gives it all."""
    return parse_sample(repo.objects.get_typed(oid, ObjectType.BLOB), oid, name)


def parse_sample(
    content: bytes,
    oid: str,
    name: str,
    *,
    rollout_id: str | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A sample blob of any version, as :func:`normalise_sample` gives it, checked."""
    if body is None:
        body = _json_object(content, oid, "sample")
    body = normalise_sample(body, oid, name, rollout_id=rollout_id)
    _check(oid, body)
    return body


def normalise_sample(
    body: dict[str, Any], oid: str, name: str, *, rollout_id: str | None = None
) -> dict[str, Any]:
    """A sample of any version as readers use it, the same for all: ``row`` and ``run``
    (for versions 2 and 3 from ``name``), ``status``, ``finished``, ``error`` (None unless
    failed), ``scores`` and ``scoring_errors`` ({} if none), and if present ``rollout_id``
    (for version 3 the caller's, from the config's ``rollouts`` manifest), ``usage``,
    ``calls`` (and, from a version 1 blob, ``rollout``: its key). Version 1 is returned as
    it is: it says all of that itself."""
    if not isinstance(body, dict):
        raise MalformedObject(f"sample blob {oid} is not a JSON object")
    version = body.get("schema", 1)
    if version == 1:
        return body
    if version not in (2, SAMPLE_VERSION):
        raise MalformedObject(
            f"sample blob {oid} has format version {str(version)[:20]} (this osmo reads 1 "
            f"to {SAMPLE_VERSION})", hint="a newer osmo wrote it: upgrade osmo")  # fmt: skip
    row, run = split_sample_name(name)
    out = {"error": None, "scores": {}, "scoring_errors": {}, **body, "row": row, "run": run}
    if version == 2:
        out["status"] = "ok" if body.get("rollout_id") is not None else "failed"
        return out
    out["status"] = "failed" if "error" in body else "ok"
    if rollout_id is not None and out["status"] == "ok":
        out["rollout_id"] = rollout_id
    return out


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
    for key in ("scores", "scoring_errors", "usage", "error"):
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
    if not _calls_ok(body.get("calls")):
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


# --- rollouts and model calls ----------------------------------------------------------------


def parse_rollout(content: bytes, oid: str) -> dict[str, Any]:
    """A rollout blob: ``messages`` (a list of message objects), ``usage``, ``calls``."""
    body = _json_object(content, oid, "rollout")
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise MalformedObject(f"rollout blob {oid} has no list of messages")
    if body.get("usage") is not None and not isinstance(body["usage"], dict):
        raise MalformedObject(f"rollout blob {oid} has 'usage' that is not an object")
    if not _calls_ok(body.get("calls")):
        raise MalformedObject(f"rollout blob {oid} has 'calls' that are not a list of {{key, id}}")
    return body


def parse_call(content: bytes, oid: str) -> dict[str, Any]:
    """A model-call blob: the server's ``response``, whose first choice's ``message`` is
    the answer, and its ``usage``."""
    body = _json_object(content, oid, "model-call")
    response = body.get("response") or {}
    choices = response.get("choices") if isinstance(response, dict) else None
    if (
        not isinstance(response, dict)
        or not isinstance(choices or [], list)
        or not all(isinstance(c, dict) for c in choices or [])
        or not isinstance((choices or [{}])[0].get("message") or {}, dict)
        or not isinstance(response.get("usage") or {}, dict)
    ):
        raise MalformedObject(f"model-call blob {oid} has no response of the expected shape")
    return body


def _json_object(content: bytes, oid: str, what: str) -> dict[str, Any]:
    try:
        body = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedObject(f"{what} blob {oid} is not UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise MalformedObject(f"{what} blob {oid} is not a JSON object")
    return body


def _calls_ok(calls: object) -> bool:
    return calls is None or (
        isinstance(calls, list)
        and all(isinstance(c, dict) and isinstance(c.get("key"), str) and is_oid(c.get("id"))
                for c in calls)
    )  # fmt: skip


# --- run records -----------------------------------------------------------------------------

_NONE = type(None)
_TIME = (int, float, _NONE)
#: meta fields that hold an object, when present, and the types of the fields read in them
#: (null where every reader takes null for "none")
_META_OBJECTS: dict[str, dict[str, tuple[type, ...]]] = {
    "config": {"agent": (str, _NONE), "model": (str, _NONE), "dataset": (str, _NONE)},
    "counts": {"total": (int, _NONE), "done": (int, _NONE), "failed": (int, _NONE)},
    "session": {"started": _TIME, "updated": _TIME},  # and in range: see below
    "summary": {"primary_metric": (str, _NONE), "metrics": (dict,), "pass_threshold": _TIME},
    "provenance": {},
    "identity": {},
}


# Unix seconds a calendar can show (year 5138): a time past it breaks every date printed.
_LAST_TIME = 1e11


def load_eval_record(repo: Repository, oid: ObjectId) -> RunRecord:
    """A config's run record, its ``meta`` checked as :func:`check_eval_meta` does."""
    record = repo.objects.get_run(oid)
    check_eval_meta(record.meta, oid)
    return record


def check_eval_meta(meta: dict[str, Any], oid: str) -> None:
    for key, fields in _META_OBJECTS.items():
        value = meta.get(key)
        if key not in meta or (value is None and key == "summary"):
            continue  # (readers take an absent field as empty; a summary may be null)
        if not isinstance(value, dict):
            raise _not_eval(oid, f"its {key!r} is not an object")
        for field, types in fields.items():
            got = value.get(field)
            if field in value and (not isinstance(got, types) or isinstance(got, bool)):
                raise _not_eval(oid, f"its {key}.{field} is not a {types[0].__name__}")
    session = meta.get("session") or {}
    if not all(0 <= (session.get(t) or 0) < _LAST_TIME for t in ("started", "updated")):
        raise _not_eval(oid, "its session times are out of range")
    metrics = (meta.get("summary") or {}).get("metrics") or {}
    if not all(isinstance(m, dict) and _finite(m.get("mean")) for m in metrics.values()):
        raise _not_eval(oid, "its summary metrics are not numbers")
    if "status" in meta and not isinstance(meta["status"], str):
        raise _not_eval(oid, "its status is not a string")
    if meta.get("score") is not None and not _finite(meta["score"]):
        raise _not_eval(oid, "its score is not a number")


def _not_eval(oid: str, what: str) -> MalformedObject:
    return MalformedObject(f"run record {oid} is not an eval record: {what}")
