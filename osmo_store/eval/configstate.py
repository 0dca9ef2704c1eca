"""A config's state in the store: ``refs/evals/<config-id>`` names a run record whose tree
holds five manifests, ``samples``, ``failed``, ``cache``, ``rows`` and ``rollouts`` (a config
written before version 3 samples has no ``rollouts``: read as empty; ``state`` describes
them and how results are recorded); ``locks/evals/<config-id>.lock`` is held while an eval
of it runs.

It sits below both the recorder (``state``) and ``merge``: the recorder merges a ref that
moved under it, and a merge reads configs' states, so neither may be the other's base.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from ..backends.locking import FileLock
from ..errors import EvalLocked, LockTimeout, StoppedWaiting
from ..hashing import ObjectId
from ..objects import RunRecord
from ..repo import Repository
from .stored import load_eval_record

EVAL_REF_PREFIX = "refs/evals/"
SUBTREES = ("samples", "failed", "cache", "rows", "rollouts")


def config_ref(config_id: str) -> str:
    return EVAL_REF_PREFIX + config_id


def eval_lock(repo: Repository, config_id: str, timeout: float) -> FileLock:
    assert repo.layout is not None
    path = repo.layout.lock(f"evals/{config_id}")
    return FileLock(path, timeout=timeout, what=f"the eval of config {config_id[:12]}")


def acquire_eval_lock(
    repo: Repository,
    config_id: str,
    timeout: float,
    stop: threading.Event,
    on_wait: Callable[[], None] | None,
) -> FileLock:
    """The config's eval lock, waiting up to ``timeout`` s for another eval of it to end;
    a stop request (Ctrl-C) ends the wait at once."""
    lock = eval_lock(repo, config_id, timeout)
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        if stop.is_set():
            raise StoppedWaiting(config_id)
        try:
            # Short tries keep a stop request prompt (a negative timeout would block forever).
            left = deadline - time.monotonic()
            lock.acquire(timeout=max(0.0, min(0.1, left)) if waiting else 0)
        except LockTimeout:
            if time.monotonic() >= deadline:
                raise EvalLocked(config_id, timeout) from None
            if not waiting and on_wait is not None:
                on_wait()
            waiting = True
            continue
        if stop.is_set():
            lock.release()
            raise StoppedWaiting(config_id)
        return lock


def is_eval_running(repo: Repository, config_id: str) -> bool:
    lock = eval_lock(repo, config_id, 0)
    try:
        lock.acquire(blocking=False)
    except LockTimeout:
        return True
    lock.release()
    return False


class ConfigState(NamedTuple):
    """A config's state as of one run record (or nothing yet)."""

    run_id: ObjectId | None
    record: RunRecord | None
    trees: dict[str, ObjectId]

    # The tree functions are imported where they are used: listing configs (`osmo eval
    # cache ls`) reads only refs and run records, and tree.py is a noticeable part of its
    # start-up.

    @classmethod
    def empty(cls, repo: Repository) -> ConfigState:
        from ..tree import empty_tree

        empty = empty_tree(repo.objects)
        return cls(None, None, {name: empty for name in SUBTREES})

    @classmethod
    def load(cls, repo: Repository, config_id: str) -> ConfigState:
        run_id = repo.refs.read(config_ref(config_id))
        return cls.empty(repo) if run_id is None else cls.from_run(repo, run_id)

    @classmethod
    def from_run(cls, repo: Repository, run_id: ObjectId) -> ConfigState:
        from ..tree import empty_tree_for_reading, list_tree

        record = load_eval_record(repo, run_id)
        entries = {e.name: e.oid for e in list_tree(repo.objects, record.tree)}
        empty = None
        trees = {}
        for name in SUBTREES:
            if name not in entries:
                empty = empty or empty_tree_for_reading(repo.objects)
            trees[name] = entries.get(name) or empty
        return cls(run_id, record, trees)

    def names(self, repo: Repository, subtree: str) -> set[str]:
        from ..tree import iter_names

        return set(iter_names(repo.objects, self.trees[subtree]))

    def count(self, repo: Repository, subtree: str) -> int:
        from ..tree import tree_count

        return tree_count(repo.objects, self.trees[subtree])
