"""A config's stored results, read back for people: its samples (finished and failed), the
row each one ran on, its conversation and its model calls. ``show``, ``diff``, ``export``
and ``verify`` read a config through this one class, so they agree on what a sample is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigNotFound, DatasetError, SampleNotFound
from ..hashing import ObjectId
from ..objects import ObjectType
from ..repo import Repository
from ..tree import TreeReader, iter_tree
from .configstate import ConfigState, config_ref
from .scoring import final_text
from .stored import SampleReader, split_sample_name

_MIN_KEY_PREFIX = 4


@dataclass(frozen=True)
class SampleRef:
    """Where a sample stands: its row's key and run index, the subtree that holds it, and
    the row's position in the dataset file when that is known."""

    row: str
    run: int
    subtree: str  # "samples" or "failed"
    oid: ObjectId
    index: int | None

    @property
    def name(self) -> str:
        return f"{self.row}.{self.run}"


class StoredConfig:
    """One config as of the run record its ref names (or ``run_id``)."""

    def __init__(self, repo: Repository, config_id: str, run_id: ObjectId | None = None) -> None:
        self.repo = repo
        self.config_id = config_id
        run_id = run_id or repo.refs.read(config_ref(config_id))
        if run_id is None:
            raise ConfigNotFound(config_id)
        self.state = ConfigState.from_run(repo, run_id)
        self.run_id = run_id
        assert self.state.record is not None
        self.meta: dict[str, Any] = self.state.record.meta
        self._reader = TreeReader(repo.objects)
        self._samples = SampleReader(repo, self.state.trees)
        self._indexes: dict[str, int] | bool | None = False  # False: not looked for yet

    @property
    def summary(self) -> dict[str, Any]:
        return self.meta.get("summary") or {}

    @property
    def primary_metric(self) -> str | None:
        fns = self.meta.get("config", {}).get("eval_fns") or []
        return self.summary.get("primary_metric") or (fns[0].rpartition(":")[2] if fns else None)

    # -- samples --

    def refs(self, *, failed_only: bool = False) -> list[SampleRef]:
        """Every stored sample, in dataset order when the dataset can be read (else by row
        key), then by run index."""
        indexes = self.row_indexes() or {}
        out = []
        for sub in ("failed",) if failed_only else ("samples", "failed"):
            for e in iter_tree(self.repo.objects, self.state.trees[sub]):
                row, run = split_sample_name(e.name)
                out.append(SampleRef(row, run, sub, e.oid, indexes.get(row)))
        missing = len(indexes) + 1  # rows the dataset no longer has go last
        out.sort(key=lambda r: (r.index if r.index is not None else missing, r.row, r.run))
        return out

    def sample(self, ref: SampleRef) -> dict[str, Any]:
        return self._samples.load(ref.oid, ref.name)

    def samples(self) -> Iterator[tuple[SampleRef, dict[str, Any]]]:
        for ref in self.refs():
            yield ref, self.sample(ref)

    def row_data(self, row_key: str) -> dict[str, Any] | None:
        entry = self._reader.get(self.state.trees["rows"], row_key)
        return None if entry is None else self._json(entry.oid)

    def rollout(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        """The rollout blob (``messages``, ``usage``, ``calls``, ``latency_s``) of a
        finished sample; None for a failed one."""
        rid = sample.get("rollout_id")
        return self._json(rid) if rid else None

    def call(self, call_id: ObjectId) -> dict[str, Any]:
        """A model call blob: ``request``, ``response``, ``latency_s``, ``attempts``."""
        return self._json(call_id)

    def view(self, ref: SampleRef, *, calls: bool = False) -> dict[str, Any]:
        """One sample as people read it: the row (position, key, data), the run, its status,
        the conversation and answer, scores, errors, usage, and (``calls``) each model call's
        request and response. A failed run has no conversation; its calls are the ones it
        made before failing."""
        sample = self.sample(ref)
        rollout = self.rollout(sample)
        messages = rollout["messages"] if rollout else None
        view: dict[str, Any] = {
            "index": ref.index,
            "row": ref.row,
            "run": ref.run,
            "status": sample.get("status"),
            "data": self.row_data(ref.row),
            "messages": messages,
            "solution": final_text(messages) if messages else None,
            "scores": sample.get("scores") or {},
            "scoring_errors": sample.get("scoring_errors") or {},
            "error": sample.get("error"),
            "usage": sample.get("usage") or (rollout or {}).get("usage"),
            "latency_s": (rollout or {}).get("latency_s"),
        }
        if calls:
            made = (rollout or {}).get("calls") or sample.get("calls") or []
            view["calls"] = [{"key": c["key"], "id": c["id"], **self.call(c["id"])} for c in made]
        return view

    def find(self, text: str) -> list[SampleRef]:
        """The samples ``text`` names: ``INDEX`` (the row's 0-based position in the dataset
        file) or ``KEY`` (a row key or a unique prefix of >= 4 characters), either with
        ``.RUN`` for one run; a number is an index when the dataset can be read."""
        what, dot, run_text = text.partition(".")
        if dot and not run_text.isdigit():
            raise SampleNotFound(f"{text!r}: the run after '.' must be a number")
        refs = self.refs()
        rows: list[str] = []
        indexes = self.row_indexes()
        if what.isdigit() and indexes:
            rows = sorted({r.row for r in refs if r.index == int(what)})
        if not rows and len(what) >= _MIN_KEY_PREFIX:
            rows = sorted({r.row for r in refs if r.row.startswith(what.lower())})
        if not rows:
            hint = None if indexes or not what.isdigit() else (
                "the dataset file cannot be read to number its rows: give a row key")  # fmt: skip
            raise SampleNotFound(f"no stored row matches {what!r} in config "
                                 f"{self.config_id[:12]}", hint=hint)  # fmt: skip
        if len(rows) > 1:
            shown = ", ".join(r[:12] for r in rows[:5])
            raise SampleNotFound(f"row key prefix {what!r} matches {len(rows)} rows ({shown})",
                                 hint="give more characters of the key")  # fmt: skip
        found = [r for r in refs if r.row == rows[0] and (not dot or r.run == int(run_text))]
        if not found:
            raise SampleNotFound(f"row {rows[0][:12]} has no run {run_text} stored")
        return found

    # -- the dataset --

    def row_indexes(self) -> dict[str, int] | None:
        """Row key -> 0-based position in the dataset file, if the file recorded for the
        config can still be read and holds the config's rows (else None)."""
        if self._indexes is False:
            self._indexes = self._load_indexes()
        return self._indexes  # type: ignore[return-value]

    def use_row_indexes(self, indexes: dict[str, int]) -> None:
        """Number the rows by ``indexes`` (row key -> position) rather than from the
        dataset file: rows given as Python objects have no file to read again."""
        self._indexes = indexes

    def _load_indexes(self) -> dict[str, int] | None:
        from .dataset import load_dataset  # here: only a row index needs the dataset

        given = self.meta.get("config") or {}
        path = given.get("dataset")
        if not path or not Path(path).is_file():
            return None
        try:
            data = load_dataset(path, limit=given.get("limit"), offset=given.get("offset") or 0)
        except DatasetError:
            return None
        if data.selection_fingerprint != self.meta.get("identity", {}).get("dataset"):
            return None  # the file changed since: its positions are not the config's rows
        return {r.key: r.index for r in data.rows}

    def _json(self, oid: ObjectId) -> dict[str, Any]:
        return json.loads(self.repo.objects.get_typed(oid, ObjectType.BLOB))
