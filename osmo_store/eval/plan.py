"""What a session of an eval runs: every selected (row, sample index) of the config's shard
that is not recorded yet (nor failed, unless retrying failures), in dataset order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..repo import Repository
from .configstate import ConfigState
from .dataset import Dataset, Row
from .state import sample_name


def in_shard(row_key: str, shard: tuple[int, int] | None) -> bool:
    """Rows are assigned to shards by their content key, so every machine agrees whatever
    the row order, and a config's shards are disjoint and cover it."""
    if shard is None:
        return True
    index, count = shard
    return int(row_key[:8], 16) % count == index - 1


@dataclass
class Plan:
    """Decides, from the names recorded when the session starts, which runs to do."""

    done: set[str]  # names in the ``samples`` manifest
    failed: set[str]  # names in the ``failed`` manifest
    n: int
    retry_failed: bool
    shard: tuple[int, int] | None = None
    #: runs a crashed session journaled: not run, and counted when the opening commit
    #: records them (a failure among them is run again with ``retry_failed``)
    replayed: frozenset[str] = frozenset()

    @classmethod
    def load(
        cls,
        state: ConfigState,
        repo: Repository,
        n: int,
        *,
        retry_failed: bool,
        shard: tuple[int, int] | None = None,
        replayed: frozenset[str] = frozenset(),
    ) -> Plan:
        done = state.names(repo, "samples")
        return cls(done, state.names(repo, "failed"), n, retry_failed, shard, replayed)

    def count(self, keys: Iterable[str]) -> tuple[int, int, int]:
        """(to do, done, failed and not retried) among the runs of the rows ``keys``."""
        todo = n_done = n_failed = 0
        for key in keys:
            if not in_shard(key, self.shard):
                continue
            for i in range(self.n):
                name = sample_name(key, i)
                if name in self.replayed:
                    continue
                if name in self.done:
                    n_done += 1
                elif name in self.failed and not self.retry_failed:
                    n_failed += 1
                else:
                    todo += 1
        return todo, n_done, n_failed

    def runs(self, rows: Iterable[Row]) -> Iterator[tuple[Row, int]]:
        """The runs to do among ``rows``, in order."""
        for row in rows:
            if not in_shard(row.key, self.shard):
                continue
            for i in range(self.n):
                name = sample_name(row.key, i)
                if name in self.replayed or name in self.done:
                    continue
                if self.retry_failed or name not in self.failed:
                    yield row, i


class Todo:
    """The runs a session does, counted up front from the row keys and read from the file
    as the workers take them: no row is held before its run starts (``Dataset.iter_rows``
    checks that each one read is the one planned)."""

    def __init__(self, plan: Plan, dataset: Dataset) -> None:
        self.plan = plan
        self.dataset = dataset
        self.count, self.n_done, self.n_failed = plan.count(dataset.selected_keys())

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[Row, int]]:
        return self.plan.runs(self.dataset.iter_rows())
