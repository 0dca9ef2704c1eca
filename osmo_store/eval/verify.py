"""Re-scoring a config's stored samples with the eval functions as they are now, without any
model call (the conversations are in the store), to check that the stored scores still come
out: for audits, and to see whether an eval function's code changed what it says."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .code import load_callable
from .dataset import row_from_data
from .prepare import UserCode, user_code
from .results import StoredConfig
from .scoring import EvalFn, score_all

#: how far apart two scores may be and still agree (floating-point noise, not a change)
REL_TOL = 1e-9


@dataclass
class Disagreement:
    row: str
    run: int
    index: int | None
    fn: str
    stored: Any  # a score, or {"error": message}
    now: Any


@dataclass
class VerifyReport:
    """How a config's stored scores compare with its eval functions run again: ``checked``
    samples re-scored, ``agreed`` (every function gave its stored score), failed runs
    ``skipped_failed``, ``not_stored`` (function -> samples with no stored score for it),
    each ``disagreements`` entry, ``ok`` (none), and ``as_dict()`` as ``--json`` prints."""

    config_id: str
    fns: list[dict[str, Any]]  # name, spec, code as stored and now, changed
    checked: int = 0
    agreed: int = 0
    skipped_failed: int = 0
    not_stored: dict[str, int] = field(default_factory=dict)  # fn -> samples it never scored
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.disagreements

    def as_dict(self) -> dict[str, Any]:
        return {
            "config_id": self.config_id,
            "eval_fns": self.fns,
            "checked": self.checked,
            "agreed": self.agreed,
            "skipped_failed": self.skipped_failed,
            "not_stored": self.not_stored,
            "disagreements": [d.__dict__ for d in self.disagreements],
            "ok": self.ok,
        }


def load_eval_fns(stored: StoredConfig, specs: Sequence[UserCode] | None = None) -> list[EvalFn]:
    """The config's eval functions as they are now: ``specs`` (specs or callables) if given,
    else each one as recorded, loaded from the source file the eval recorded for it when
    that was a file (so the check does not depend on the directory it runs in)."""
    if specs:
        return [EvalFn.wrap(*user_code(s, "eval function")) for s in specs]
    code = (stored.meta.get("provenance") or {}).get("code") or {}
    fns = []
    for spec in stored.meta.get("config", {}).get("eval_fns") or []:
        target, _, attr = spec.rpartition(":")
        source = (code.get(spec) or {}).get("source")
        if target.endswith(".py") and source and Path(source).is_file():
            spec = f"{source}:{attr}"
        fns.append(EvalFn.wrap(*load_callable(spec, "eval function")))
    return fns


def verify(stored: StoredConfig, fns: list[EvalFn]) -> VerifyReport:
    """Re-score every finished sample with ``fns`` and compare, function by function, with
    the stored scores (a scoring error agrees with a scoring error). Failed runs have no
    conversation to score: they are counted as skipped."""
    recorded = {f["attr"]: f["code"] for f in stored.meta.get("identity", {}).get("eval_fns", [])}
    report = VerifyReport(stored.config_id, [
        {"name": f.name, "spec": f.ref.spec, "stored_code": recorded.get(f.name),
         "code": f.ref.fingerprint, "changed": recorded.get(f.name) != f.ref.fingerprint}
        for f in fns
    ])  # fmt: skip
    for ref, sample in stored.samples():
        if sample.get("status") != "ok":
            report.skipped_failed += 1
            continue
        rollout = stored.rollout(sample) or {}
        row = row_from_data(stored.row_data(ref.row) or {})
        scores, errors = score_all(fns, rollout.get("messages") or [], row.ground_truth,
                                   row.metadata)  # fmt: skip
        report.checked += 1
        agreed = True
        stored_scores = sample.get("scores") or {}
        stored_errors = sample.get("scoring_errors") or {}
        for fn in fns:
            before = _outcome(stored_scores, stored_errors, fn.name)
            if before is None:
                report.not_stored[fn.name] = report.not_stored.get(fn.name, 0) + 1
                continue
            now = _outcome(scores, errors, fn.name)
            if not _same(before, now):
                agreed = False
                report.disagreements.append(
                    Disagreement(ref.row, ref.run, ref.index, fn.name, before, now)
                )
        report.agreed += agreed
    return report


def _outcome(scores: dict[str, Any], errors: dict[str, str], name: str) -> Any:
    if name in errors:
        return {"error": errors[name]}
    return scores.get(name)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and "error" in a:
        return isinstance(b, dict) and "error" in b  # both failed: the message may differ
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(_same(a[k], b[k]) for k in a))  # fmt: skip
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    return a == b
