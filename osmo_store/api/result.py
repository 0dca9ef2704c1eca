"""Stored eval results for Python: ``configs()`` lists them as ``osmo eval cache ls`` does,
``load()`` opens one, and an ``EvalResult`` (also what ``evaluate`` returns) gives its
summary, its samples as plain dicts or a pandas DataFrame, and what ``osmo eval diff``,
``export`` and ``verify`` give, through the code those commands run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
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
from ..eval.compare import compare
from ..eval.export import check_format, flat_record, sample_records, table_columns, write_records
from ..eval.outputs import check_writable, write_output
from ..eval.prepare import UserCode
from ..eval.results import StoredConfig
from ..eval.verify import VerifyReport, load_eval_fns, verify
from ..hashing import ObjectId
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
            stored = self._stored(repo)
            for ref in stored.refs():
                yield stored.view(ref)

    def _stored(self, repo: Repository) -> StoredConfig:
        """This result's run record in ``repo`` (its store, opened)."""
        stored = StoredConfig(repo, self.config_id, ObjectId(self.run_id))
        if self.row_indexes is not None:
            stored.use_row_indexes(self.row_indexes)
        return stored

    def diff(
        self,
        other: EvalResult | str,
        *,
        metric: str | None = None,
        confidence: float = 0.95,
        resamples: int = 2000,
        seed: int = 0,
    ) -> dict[str, Any]:
        """``other`` (B: a result, or a config id, prefix or label in this result's store)
        against this one (A), as ``osmo eval diff A B --json`` prints it: differences are
        B - A on the runs both have (paired by row content and run index), ``difference``
        with its ``ci`` (a paired bootstrap over rows, ``resamples`` draws from ``seed``),
        a paired ``test``, per-row ``changes`` (regressions first), ``only_in_a``/``_b``.
        ``metric``: a metric as the summary names it (default: A's primary metric). Raises
        ``UsageError`` when there is nothing to compare (docs/eval.md, "Comparing two configs")."""
        with opened([self, other], self.store) as (a, b):
            return compare(a, b, metric=metric, confidence=confidence, resamples=resamples,
                           seed=seed)  # fmt: skip

    def export(self, path: str | os.PathLike[str], format: str | None = None) -> Path:
        """Write every sample to ``path`` as ``osmo eval export CONFIG -o PATH`` writes it
        (the same bytes): one row per sample with the columns of ``to_pandas``, as JSON
        lines, CSV or Parquet, by ``path``'s suffix or ``format`` (``jsonl``, ``csv``,
        ``parquet``: needs pyarrow). Returns the path. Raises ``UsageError`` for a format
        it cannot write or a path it cannot write to, before reading the store, and
        ``OutputError`` when the write fails; the file is written whole or not at all. (A result
        of rows given as objects also fills in ``index``, as ``samples()`` does.)"""
        fmt = check_format(path, format)
        check_writable(path, "path")  # refused before the store is read, not after
        with open_store(self.store, create=False) as repo:
            records = sample_records(self._stored(repo))
        write_output(path, "path", lambda tmp: write_records(records, tmp, fmt))
        return Path(path)

    def verify(self, eval_fns: UserCode | Sequence[UserCode] | None = None) -> VerifyReport:
        """Score the stored conversations again, with no model call, as ``osmo eval verify``
        does: with ``eval_fns`` (specs or callables, compared with the stored scores of the
        functions of the same name) or else the config's own eval functions as their files
        are now. Returns a ``VerifyReport``: ``checked``, ``agreed``, ``disagreements``,
        ``ok``, and ``as_dict()`` (what ``--json`` prints). Raises ``CodeLoadError`` for
        code that cannot be loaded."""
        if isinstance(eval_fns, str) or callable(eval_fns):
            eval_fns = [eval_fns]
        with open_store(self.store, create=False) as repo:
            stored = self._stored(repo)
            return verify(stored, load_eval_fns(stored, eval_fns))

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


@contextlib.contextmanager
def opened(results: Sequence[EvalResult | str], store: StorePath) -> Iterator[list[StoredConfig]]:
    """Each of ``results`` opened in its store: a result in the one it came from, a config
    id, prefix or label in ``store``; a store is opened once however many name it."""
    with contextlib.ExitStack() as stack:
        repos: dict[Path | None, Repository] = {}

        def repo_of(where: StorePath) -> Repository:
            key = None if where is None else Path(where).resolve()
            if key not in repos:
                repos[key] = stack.enter_context(open_store(where, create=False))
                check_eval_refs(repos[key])
            return repos[key]

        stored = []
        for r in results:
            if isinstance(r, EvalResult):
                stored.append(r._stored(repo_of(r.store)))
            else:
                repo = repo_of(store)
                stored.append(StoredConfig(repo, find_config(repo, r)))
        yield stored


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
