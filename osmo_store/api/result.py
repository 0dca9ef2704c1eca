"""Stored eval results for Python: ``configs()`` lists them as ``osmo eval cache ls`` does,
``load()`` opens one, and an ``EvalResult`` (also what ``evaluate`` returns) gives its
summary and its samples as plain dicts or a pandas DataFrame."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..eval.catalog import (
    STATUSES,
    ConfigInfo,
    check_eval_refs,
    config_status,
    find_config,
    list_configs,
)
from ..eval.export import flat_record, table_columns
from ..eval.results import StoredConfig
from ..repo import Repository

if TYPE_CHECKING:
    import pandas

#: a store: its folder, or None for ``$OSMO_STORE``, else the default store
StorePath = str | os.PathLike[str] | None

PANDAS_HINT = "pip install 'osmo-store[pandas]'"


def open_store(store: StorePath, *, create: bool) -> Repository:
    """The store at ``store`` (None: ``$OSMO_STORE``, else the default store); made on
    first use when ``create``, else a ``StoreError`` if there is none."""
    return Repository.open(None if store is None else Path(store), create=create)


@dataclass(frozen=True)
class EvalResult:
    """One config's results, as of one of its run records (the newest when it was loaded
    or when its eval returned): later sessions of the config do not change this object;
    ``load(result.config_id)`` reads it again."""

    config_id: str
    #: the run record this result is as of
    run_id: str
    #: ``completed``, ``interrupted`` (resumable: run the same eval again), ``partial``
    #: (one shard done), or ``in_progress`` (an eval is running it now)
    status: str
    #: counts, metrics, failure groups and tokens: see docs/eval.md, "Summary"
    summary: dict[str, Any]
    #: the inputs as given (model, agent, eval functions, dataset, n, parameters)
    config: dict[str, Any]
    label: str | None
    #: what the session that wrote this run record did: model calls made, runs computed,
    #: runs reused from this config and from the store
    session: dict[str, Any]
    #: the store's folder
    store: Path
    #: row key -> position in the dataset, when the rows are not in a file osmo can read
    #: again (rows given as objects)
    row_indexes: dict[str, int] | None = field(default=None, repr=False, compare=False)

    @property
    def score(self) -> float | None:
        """The primary metric's mean over scored runs (None: no run was scored)."""
        return self.summary.get("primary_score")

    def samples(self) -> Iterator[dict[str, Any]]:
        """Every stored sample (finished and failed) in dataset order, then by sample
        index, as a plain dict: ``index`` (the row's position in the dataset, None when
        unknown), ``row`` (its key), ``run`` (the sample index), ``status``, ``data`` (the
        row), ``messages``, ``solution``, ``scores``, ``scoring_errors``, ``error``,
        ``usage`` and ``latency_s``. Reads the store as it goes."""
        with open_store(self.store, create=False) as repo:
            stored = StoredConfig(repo, self.config_id, self.run_id)
            if self.row_indexes is not None:
                stored.use_row_indexes(self.row_indexes)
            for ref in stored.refs():
                yield stored.view(ref)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per sample, with the columns of ``osmo eval export``: ``index``, ``row``,
        ``run``, ``status``, ``prompt``, ``ground_truth``, ``solution``, a ``score/<metric>``
        column per metric, ``scoring_error/<fn>``, ``error_*``, ``usage/<name>``,
        ``latency_s``, and ``data`` and ``messages`` as objects. Needs pandas
        (``pip install 'osmo-store[pandas]'``)."""
        try:
            import pandas
        except ImportError:
            raise UsageError("EvalResult.to_pandas needs pandas, which is not installed",
                             hint=PANDAS_HINT) from None  # fmt: skip
        records = [flat_record(self.config_id, v) for v in self.samples()]
        return pandas.DataFrame.from_records(records, columns=table_columns(records))

    @classmethod
    def from_stored(
        cls, stored: StoredConfig, status: str, row_indexes: dict[str, int] | None = None
    ) -> EvalResult:
        meta = stored.meta
        assert stored.repo.path is not None  # only local stores are opened here
        return cls(
            config_id=stored.config_id,
            run_id=stored.run_id,
            status=status,
            summary=dict(meta.get("summary") or {}),
            config=dict(meta.get("config") or {}),
            label=meta.get("label"),
            session=dict(meta.get("session") or {}),
            store=stored.repo.path,
            row_indexes=row_indexes,
        )


def load(config: str, *, store: StorePath = None) -> EvalResult:
    """The stored config named by ``config``: its id, a unique prefix of it (4 characters
    or more) or its label. Raises ``ConfigNotFound``, ``AmbiguousId`` or
    ``AmbiguousLabel``, and ``StoreError`` when there is no store."""
    with open_store(store, create=False) as repo:
        check_eval_refs(repo)
        stored = StoredConfig(repo, find_config(repo, config))
        return EvalResult.from_stored(stored, config_status(repo, stored.config_id, stored.meta))


def configs(
    *,
    store: StorePath = None,
    model: str | None = None,
    dataset: str | None = None,
    status: str | None = None,
    label: str | None = None,
) -> list[ConfigInfo]:
    """The stored configs, newest first, filtered as ``osmo eval cache ls`` filters them:
    ``model`` (model or agent), ``dataset`` (its path) and ``label`` contain the text in
    any case; ``status`` is one of ``completed``, ``interrupted``, ``partial`` or
    ``in_progress``. Each is a ``ConfigInfo`` (a named tuple: ``config_id``, ``status``,
    ``model``, ``dataset``, ``counts``, ``score``, ``label``, ...); ``load(info.config_id)``
    opens one."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    with open_store(store, create=False) as repo:
        check_eval_refs(repo)
        return list_configs(repo, model=model, dataset=dataset, status=status, label=label)
