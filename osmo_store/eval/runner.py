"""Running an eval: plan what is missing, run it with a sliding window of C runs in flight,
record results by group commit, and finish with a summary.

Threads: the caller's thread plans and launches; C worker threads produce rollouts and
scores; one committer thread records finished runs (see ``state.Recorder``) and only then
reports them as done. A stop request (first SIGINT) stops launching, gives in-flight runs
a grace period, and commits what finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from filelock import Timeout as FileLockTimeout

from .. import __version__
from ..errors import EvalLocked, FatalModelError, ModelError, StoppedWaiting
from ..hashing import ObjectId, canonical_json
from ..objects import ObjectType
from ..refs import default_who
from ..repo import Repository
from ..tree import iter_tree
from .client import ChatClient
from .code import USER_CODE_ERRORS, describe_error, git_state
from .config import EvalConfig, rollout_key
from .dataset import Dataset, Row
from .recorder_proc import RecorderProcess, meta_builder
from .scoring import EvalFn, score_all
from .solver import CallOutcome, ModelCaller, Rollout, Solver, StoreLookup
from .state import (
    ConfigState,
    PendingObject,
    Recorder,
    SampleResult,
    blob,
    config_ref,
    eval_lock,
    sample_name,
)
from .summary import SummaryBuilder, primary_value
from .workers import Workers

log = logging.getLogger(__name__)
SCHEMA = 1


@dataclass
class EvalOptions:
    concurrency: int = 8
    fresh: bool = False
    retry_failed: bool = False
    pass_threshold: float = 1.0
    lock_timeout: float = 30.0
    commit_interval: float = 0.2
    stop_grace: float = 5.0
    #: (index, count), 1-based: run only rows whose key falls in shard ``index`` of ``count``
    shard: tuple[int, int] | None = None
    #: record in a child process (True), in a thread of this one (False), or decide (None)
    recorder_process: bool | None = None


def in_shard(row_key: str, shard: tuple[int, int] | None) -> bool:
    """Rows are assigned to shards by their content key, so every machine agrees whatever
    the row order, and a config's shards are disjoint and cover it."""
    if shard is None:
        return True
    index, count = shard
    return int(row_key[:8], 16) % count == index - 1


@dataclass
class Progress:
    """Counts shown while running; updated by the committer after each commit."""

    total: int = 0
    done: int = 0  # recorded (committed) runs, including ones reused from earlier
    failed: int = 0
    passed: int = 0
    scored: int = 0
    reused: int = 0
    started: float = field(default_factory=time.time)


@dataclass
class EvalOutcome:
    config_id: str
    run_id: str
    status: str
    summary: dict[str, Any]
    session: dict[str, Any]
    interrupted: bool
    #: reads every recorded sample record (outputs need them; a summary usually not)
    load_samples: Callable[[], list[dict[str, Any]]]


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reused_samples = 0  # already recorded in this config
        self.reused_rollouts = 0  # found in the store (another config, or earlier work)
        self.computed = 0  # new rollouts
        self.failed = 0
        self.primary_sum = 0.0
        self.primary_count = 0


def run_eval(
    repo: Repository,
    config: EvalConfig,
    dataset: Dataset,
    eval_fns: list[EvalFn],
    *,
    client: ChatClient | None,
    agent: Callable[..., Any] | None,
    options: EvalOptions,
    display: dict[str, Any],
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> EvalOutcome:
    """Run the eval. ``on_wait`` is called once if another eval of the config holds its
    lock (this one then waits up to ``options.lock_timeout`` s, or until ``stop``)."""
    stop = stop or threading.Event()
    config_id = config.config_id
    lock = _acquire_eval_lock(repo, config_id, options.lock_timeout, stop, on_wait)
    try:
        return _run_locked(
            repo, config, dataset, eval_fns, client, agent, options, display, stop, on_progress
        )
    finally:
        lock.release()


def _acquire_eval_lock(repo, config_id, timeout, stop, on_wait):
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
        except FileLockTimeout:
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


def _plan(state: ConfigState, repo: Repository, rows: list[Row], n: int, retry_failed: bool):
    done = state.names(repo, "samples")
    failed = state.names(repo, "failed")
    todo: list[tuple[Row, int]] = []
    n_done = n_failed = 0
    for row in rows:
        for i in range(n):
            name = sample_name(row.key, i)
            if name in done:
                n_done += 1
            elif name in failed and not retry_failed:
                n_failed += 1
            else:
                todo.append((row, i))
    return todo, n_done, n_failed, failed


def _calls_of_failed(repo: Repository, state: ConfigState) -> frozenset[ObjectId]:
    """The answers the failed runs' attempts got (ids: a retry cut short records new answers
    under the same keys, and those its resume does replay)."""
    ids: set[ObjectId] = set()
    for e in iter_tree(repo.objects, state.trees["failed"]):
        body = json.loads(repo.objects.get_typed(e.oid, ObjectType.BLOB))
        ids.update(call["id"] for call in body.get("calls", ()))
    return frozenset(ids)


def _run_locked(
    repo, config, dataset, eval_fns, client, agent, options, display, stop, on_progress
):
    config_id = config.config_id
    started = time.time()
    state = ConfigState.load(repo, config_id)
    # Started over with --fresh (in this session or one it resumes): reuse nothing but what
    # the config computed itself since, so every run is computed anew.
    isolated = options.fresh or bool(state.record and state.record.meta.get("isolated"))
    if options.fresh and state.run_id is not None:
        # Start over: the old state stays reachable through the reflog until it expires.
        head = state.run_id
        state = ConfigState.empty(repo)
        parents: tuple = ()
    else:
        parents = (state.run_id,) if state.run_id else ()
        head = state.run_id
    rows = [r for r in dataset.rows if in_shard(r.key, options.shard)]
    todo, n_done, n_failed, failed_names = _plan(state, repo, rows, config.n, options.retry_failed)
    total = len(dataset.rows) * config.n
    stats = _Stats()
    stats.reused_samples = n_done

    # A retried run asks the model again: the answers its failed attempt got (an agent's
    # calls are recorded as they are answered) are not taken from the store.
    retried_calls = _calls_of_failed(repo, state) if options.retry_failed else frozenset()
    lookup = StoreLookup(repo, state.trees["cache"], shared=not isolated, skip=retried_calls)
    caller = ModelCaller(lookup, client, config.model)
    solver = Solver(config, lookup, caller, agent)
    recorder = _open_recorder(repo, config_id, state, parents, head, failed_names, options, todo)
    try:
        primary = eval_fns[0].name if eval_fns else None
        progress = Progress(total=total, done=n_done + n_failed, failed=n_failed, reused=n_done)

        base_meta = {
            "kind": "osmo.eval",
            "schema": SCHEMA,
            "config_id": config_id,
            "identity": config.identity(),
            "config": display,
            "provenance": None,  # filled in by the first commit, off the launching path
        }
        if isolated:
            base_meta["isolated"] = True
        prev_counts = (
            state.record.meta.get("counts", {}) if state.record and not options.fresh else {}
        )

        def meta(status: str, summary: dict | None = None) -> Callable[[dict[str, int]], dict]:
            """The run record's metadata as of now; the commit adds the manifest counts."""
            return meta_builder(_meta(status, summary))

        def _meta(status: str, summary: dict | None) -> dict[str, Any]:
            counts: dict[str, Any] = {"total": total}
            if base_meta["provenance"] is None:  # git calls: not worth delaying the runs for
                base_meta["provenance"] = _provenance(config, dataset, started)
            m = dict(base_meta)
            m["status"] = status
            m["counts"] = counts
            with stats.lock:
                psum = stats.primary_sum + prev_counts.get("primary_sum", 0.0)
                pcount = stats.primary_count + prev_counts.get("primary_count", 0)
            counts["primary_sum"] = psum
            counts["primary_count"] = pcount
            m["score"] = psum / pcount if pcount else None
            m["session"] = {
                "started": round(started, 3),
                "updated": round(time.time(), 3),
                "reused_samples": stats.reused_samples,
                "reused_rollouts": stats.reused_rollouts,
                "computed": stats.computed,
                "model_calls": caller.calls_made,
                "retry_failed": options.retry_failed,
                "fresh": options.fresh,
            }
            if summary is not None:
                m["summary"] = summary
            return m

        # Workers append finished runs; the committer wakes once per commit interval (or when
        # the workers are done) and takes them all. Waking it per result cost a hand-off of the
        # interpreter per run.
        results: queue.SimpleQueue[SampleResult] = queue.SimpleQueue()
        workers_done = threading.Event()
        commit_error: list[BaseException] = []
        # The summary of the runs recorded in this session is built as they are committed;
        # only runs recorded before it are read back at the end.
        summary_of_session = SummaryBuilder(
            n=config.n, pass_threshold=options.pass_threshold, primary=primary
        )
        recorded_now: set[str] = set()
        if agent is not None:
            caller.record_now = lambda c: results.put(
                SampleResult.objects_only([PendingObject("cache", c.key, c.content, c.oid)])
            )

        def committer() -> None:
            first = True
            while True:
                end = workers_done.wait(0 if first else options.commit_interval)
                batch: list[SampleResult] = []
                with contextlib.suppress(queue.Empty):
                    while True:
                        batch.append(results.get_nowait())
                if batch or first:
                    try:
                        recorder.commit(batch, meta("in_progress"))
                    except BaseException as e:  # noqa: BLE001 - surfaced to the main thread
                        commit_error.append(e)
                        stop.set()
                        return
                    first = False
                    for res in batch:
                        if not res.name:
                            continue  # an agent's model call, recorded ahead of its run
                        _update_progress(progress, res, primary, options.pass_threshold)
                        summary_of_session.add(res.body)
                        recorded_now.add(res.name)
                    if on_progress:
                        on_progress(progress)
                if end:
                    return

        commit_thread = threading.Thread(target=committer, name="osmo-committer", daemon=True)
        commit_thread.start()

        workers = Workers(
            todo,
            options.concurrency,
            stop,
            results.put,
            lambda row, i: _execute(config, solver, eval_fns, row, i, stats),
        )
        try:
            interrupted = workers.run(options.stop_grace)
        finally:
            workers_done.set()
            commit_thread.join()
        fatal = workers.fatal
        interrupted = interrupted and not fatal and not commit_error
        if workers.error is not None:
            raise workers.error
        if commit_error:
            raise commit_error[0]
        if fatal and recorder.commits <= 1 and recorder.recorded == 0:
            # An error every run would hit (a bad key, a wrong URL) and nothing recorded (not
            # even an agent's call: only the opening commit): put the config back as it was,
            # so a mistyped command leaves no empty config behind.
            ref = config_ref(config_id)
            if head is None:
                repo.delete_ref(ref, recorder.head, message="eval stopped before any run")
            else:
                repo.update_ref(ref, head, recorder.head, message="eval stopped before any run")
            raise fatal[0]

        complete = not interrupted and not fatal and recorder.counts.get("done", 0) >= total
        if complete:
            status = "completed"
        elif options.shard and not interrupted and not fatal:
            status = "partial"  # this shard is done; the others come by sync
        else:
            status = "interrupted"
        trees = dict(recorder.trees)
        previous = state.record.meta.get("summary") if state.record else None
        if (
            recorder.recorded == 0
            and previous
            and previous.get("pass_threshold") == options.pass_threshold
            and previous.get("primary_metric") == primary
        ):
            summary = dict(previous)  # nothing new recorded: the stored summary still holds
        else:
            # Runs recorded before this session are read back; none if it recorded them all.
            if recorder.counts.get("done", 0) > len(recorded_now):
                for sub in ("samples", "failed"):
                    for e in iter_tree(repo.objects, trees[sub]):
                        if e.name not in recorded_now:
                            body = json.loads(repo.objects.get_typed(e.oid, ObjectType.BLOB))
                            summary_of_session.add(body)
            summary = summary_of_session.result()
        summary["wall_time_s"] = round(time.time() - started, 3)
        run_id = recorder.commit([], meta(status, summary), final=True)
        if fatal:
            raise fatal[0]
        session = recorder.last_meta["session"]
        repo.objects.refresh()  # the recorder process may have written packs
        repo.objects.after_bulk_write()  # keep the pack count bounded across many evals
        return EvalOutcome(
            config_id, run_id, status, summary, session, interrupted,
            lambda: load_samples(repo, trees),
        )  # fmt: skip
    finally:
        if isinstance(recorder, RecorderProcess):
            recorder.close()


def _open_recorder(repo, config_id, state, parents, head, failed_names, options, todo):
    """The group committer: in a child process for a local store with work to record (so
    recording runs beside the model calls, see ``recorder_proc``), else in this one."""
    use_process = options.recorder_process
    if use_process is None:
        # A process of its own needs a store it can open by path.
        use_process = bool(todo) and repo.objects.local_path is not None
    if use_process and repo.path is not None:
        try:
            return RecorderProcess(
                repo, config_id, state, parents, head=head, failed_names=failed_names
            )
        except OSError as e:  # no interpreter to start (an embedded Python, say)
            log.warning("recording in this process: cannot start a recorder process (%s)", e)
    recorder = Recorder(repo, config_id, state, parents, failed_names=failed_names)
    recorder.head = head
    return recorder


def load_samples(repo: Repository, trees: dict[str, ObjectId]) -> list[dict[str, Any]]:
    out = []
    for sub in ("samples", "failed"):
        for e in iter_tree(repo.objects, trees[sub]):
            out.append(json.loads(repo.objects.get_typed(e.oid, ObjectType.BLOB)))
    return out


def _update_progress(progress: Progress, res: SampleResult, primary, threshold) -> None:
    progress.done += 1
    if res.failed:
        progress.failed += 1
        return
    v = primary_value(res.body.get("scores") or {}, primary)
    if v is not None:
        progress.scored += 1
        progress.passed += v >= threshold


def _execute(
    config: EvalConfig,
    solver: Solver,
    eval_fns: list[EvalFn],
    row: Row,
    run_index: int,
    stats: _Stats,
) -> SampleResult:
    key = rollout_key(config, row.key, run_index)
    objects: list[PendingObject] = [blob(row.key, "rows", canonical_json(row.data))]
    calls: list[CallOutcome] = []  # the rollout's model calls, as it makes them
    rollout: Rollout | None = solver.reuse(key)
    error = None
    if rollout is not None:
        with stats.lock:
            stats.reused_rollouts += 1
    else:
        try:
            rollout = solver.run(key, row.data, row.messages, run_index, calls)
            with stats.lock:
                stats.computed += 1
        except FatalModelError:
            raise
        except ModelError as e:
            error = {"type": "model_error", "status": getattr(e, "status", None), "message": str(e)}
        except USER_CODE_ERRORS as e:  # agent code: any failure is a failed run
            error = {"type": "agent_error", "message": describe_error(e)[:2000]}
    # ``finished`` orders two results for the same run when stores merge (newer wins).
    sample: dict[str, Any] = {
        "schema": SCHEMA,
        "row": row.key,
        "run": run_index,
        "finished": round(time.time(), 3),
    }
    if rollout is None:
        sample.update(status="failed", error=error, rollout=None, scores={}, scoring_errors={})
        if calls:  # made before it failed: kept, and not reused by --retry-failed
            sample["calls"] = [{"key": c.key, "id": c.oid} for c in calls]
            objects += [_cached(c.key, c.content, c.oid, c.reused) for c in calls]
        with stats.lock:
            stats.failed += 1
        return SampleResult(
            sample_name(row.key, run_index), True, canonical_json(sample), sample, objects
        )
    objects.append(_cached(rollout.key, rollout.content, rollout.oid, rollout.reused))
    objects += [_cached(c.key, c.content, c.oid, c.reused) for c in rollout.calls]
    scores, scoring_errors = score_all(eval_fns, rollout.messages, row.ground_truth, row.metadata)
    sample.update(
        status="ok",
        error=None,
        rollout=rollout.key,
        rollout_id=rollout.oid,
        scores=scores,
        scoring_errors=scoring_errors,
        usage=rollout.usage,
    )
    v = primary_value(scores, eval_fns[0].name if eval_fns else None)
    if v is not None:
        with stats.lock:
            stats.primary_sum += v
            stats.primary_count += 1
    return SampleResult(
        sample_name(row.key, run_index), False, canonical_json(sample), sample, objects
    )


def _cached(key: str, content: bytes | None, oid: ObjectId, reused: bool) -> PendingObject:
    # Content that comes with a reused result was made by another run of this session, which
    # may be recorded first: look for the copy before writing another.
    return PendingObject("cache", key, content, oid, may_exist=reused and content is not None)


def _provenance(config: EvalConfig, dataset: Dataset, started: float) -> dict[str, Any]:
    code = {}
    for ref in ([config.agent] if config.agent else []) + list(config.eval_fns):
        code[ref.spec] = {
            "fingerprint": ref.fingerprint,
            "source": ref.source,
            "git": git_state(ref.source),
        }
    return {
        "osmo_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": default_who(),
        "pid": os.getpid(),
        "started": round(started, 3),
        "argv": redact_argv(sys.argv[1:]),
        "dataset": {
            "path": str(dataset.path),
            "fingerprint": dataset.fingerprint,
            "rows_total": dataset.total_rows,
            "rows_selected": len(dataset.rows),
        },
        "code": code,
    }


def redact_argv(argv: list[str]) -> list[str]:
    """The command line as provenance, without secrets."""
    out, hide = [], False
    for a in argv:
        if hide:
            out.append("***")
            hide = False
        elif a == "--api-key":
            out.append(a)
            hide = True
        elif a.startswith("--api-key="):
            out.append("--api-key=***")
        else:
            out.append(a)
    return out
