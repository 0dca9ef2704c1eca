"""Running an eval: plan what is missing, run it with a sliding window of C runs in flight,
record results by group commit, and finish with a summary.

Threads: the caller's thread plans and launches; C worker threads produce rollouts and
scores; on a local store, one journal thread makes each result durable before its worker
goes on (see ``journal``); one committer thread records finished runs in the store (see
``state.Recorder``) and only then reports them as done. A stop request (first SIGINT)
stops launching, gives in-flight runs a grace period, commits what finished, and waits for
the rest: ``run_eval`` never leaves a thread of its own running, unless the caller aborts
(a KeyboardInterrupt after a stop).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FatalModelError, ModelError
from ..hashing import ObjectId, canonical_json
from ..repo import STORE_VERSION, Repository, upgrade_store_format
from ..tree import iter_tree
from . import heap
from .claims import RolloutClaims
from .client import ChatClient
from .code import USER_CODE_ERRORS, describe_error
from .config import EvalConfig, rollout_key
from .configstate import acquire_eval_lock
from .dataset import Row
from .endpoint import RecordingEndpoint
from .journal import Journal, to_replay
from .plan import Plan, Todo
from .prepare import PreparedEval
from .provenance import provenance
from .recorder_proc import RecorderProcess, meta_builder
from .rowkeys import RunSet
from .scoring import EvalFn, score_all
from .solver import CallOutcome, ModelCaller, Rollout, Solver, StoreLookup
from .state import (
    ConfigState,
    PendingObject,
    Recorder,
    SampleResult,
    blob,
    config_ref,
    sample_name,
)
from .stored import SampleReader, load_sample, sample_blob
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
    #: after a stop, how long to wait for the runs in flight; each one that ends in time is
    #: recorded (it was paid for). None: wait for them all.
    stop_grace: float | None = None
    #: (index, count), 1-based: run only rows whose key falls in shard ``index`` of ``count``
    shard: tuple[int, int] | None = None
    #: record in a child process (True), in a thread of this one (False), or decide (None)
    recorder_process: bool | None = None
    #: a name for the config, shown by `eval cache ls` (None: keep the one it has)
    label: str | None = None
    #: results journaled but not yet recorded in the store past which workers wait
    backlog: int = 1024


@dataclass
class Progress:
    """Counts shown while running; updated by the committer after each commit."""

    total: int = 0
    done: int = 0  # recorded (committed) runs, including ones reused from earlier
    failed: int = 0
    passed: int = 0
    scored: int = 0
    reused: int = 0
    retried: int = 0  # model call attempts retried so far (429s, 5xx, timeouts)
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
        self.waited = 0  # rollouts another eval was computing: waited for, not paid twice
        self.failed = 0
        self.primary_sum = 0.0
        self.primary_count = 0


def run_eval(
    repo: Repository,
    prepared: PreparedEval,
    *,
    client: ChatClient | None,
    options: EvalOptions,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_wait: Callable[[], None] | None = None,
    on_shared_wait: Callable[[], None] | None = None,
) -> EvalOutcome:
    """Run the eval. ``on_wait`` is called once if another eval of the config holds its
    lock (this one then waits up to ``options.lock_timeout`` s, or until ``stop``);
    ``on_shared_wait`` once if it first waits for a rollout another eval is computing.

    It returns, or raises, once the threads it started have ended: after a stop, the runs
    in flight are recorded as they finish (within ``options.stop_grace`` s if set, else
    all of them; later ones are waited for and dropped). The one exception is a
    KeyboardInterrupt after a stop request (a second Ctrl-C): that aborts at once, leaving
    the runs in flight to daemon threads that end with the process."""
    stop = stop or threading.Event()
    config_id = prepared.config.config_id
    lock = acquire_eval_lock(repo, config_id, options.lock_timeout, stop, on_wait)
    try:
        # What this osmo records (version 3 samples and a rollouts manifest) an older one
        # would damage by resuming the config: it must refuse the store instead.
        upgrade_store_format(repo, STORE_VERSION)
        return _EvalRun(repo, prepared, client, options, stop, on_progress, on_shared_wait).run()
    finally:
        lock.release()


def _calls_of_failed(repo: Repository, state: ConfigState) -> frozenset[ObjectId]:
    """The answers the failed runs' attempts got (ids: a retry cut short records new answers
    under the same keys, and those its resume does replay)."""
    ids: set[ObjectId] = set()
    for e in iter_tree(repo.objects, state.trees["failed"]):
        body = load_sample(repo, e.oid, e.name)
        ids.update(call["id"] for call in body.get("calls") or ())
    return frozenset(ids)


class _EvalRun:
    """One session of one config, its lock held. The launching thread plans, runs the
    workers, and finishes (summary, final commit); the journal thread makes what the
    workers deliver durable, and the committer thread records it. The fields are what they
    share."""

    def __init__(
        self,
        repo: Repository,
        prepared: PreparedEval,
        client: ChatClient | None,
        options: EvalOptions,
        stop: threading.Event,
        on_progress: Callable[[Progress], None] | None,
        on_shared_wait: Callable[[], None] | None = None,
    ) -> None:
        self.repo = repo
        self.config = config = prepared.config
        self.config_id = config.config_id
        self.dataset = prepared.dataset
        self.options = options
        self.stop = stop
        self.on_progress = on_progress
        self.started = time.time()
        # A crashed session's journal: its results are recorded by this session's opening
        # commit (a fresh start computes everything anew: it drops them).
        self.journal_dir = repo.layout.journal(self.config_id) if repo.layout else None
        state = ConfigState.load(repo, self.config_id)
        replayed: list[SampleResult] = []
        if self.journal_dir is not None and not options.fresh:
            replayed = to_replay(repo, self.journal_dir, state)
        # Started over with --fresh (in this session or one it resumes): reuse nothing but
        # what the config computed itself since, so every run is computed anew.
        isolated = options.fresh or bool(state.record and state.record.meta.get("isolated"))
        self.head = state.run_id
        label = options.label or (state.record.meta.get("label") if state.record else None)
        if options.fresh and state.run_id is not None:
            # Start over: the old state stays reachable through the reflog until it expires.
            state = ConfigState.empty(repo)
        self.state = state
        self.parents: tuple[ObjectId, ...] = (state.run_id,) if state.run_id else ()
        plan = Plan.load(
            state, repo, config.n, retry_failed=options.retry_failed, shard=options.shard,
            replayed=frozenset(r.name for r in replayed if r.name),
        )  # fmt: skip
        self.todo = Todo(plan, self.dataset)
        n_done, n_failed, self.failed_names = self.todo.n_done, self.todo.n_failed, plan.failed
        self.total = self.dataset.selected_rows * config.n
        self.stats = _Stats()
        self.stats.reused_samples = n_done
        self.primary = prepared.eval_fns[0].name if prepared.eval_fns else None
        self.progress = Progress(
            total=self.total, done=n_done + n_failed, failed=n_failed, reused=n_done
        )
        if on_progress is not None and n_done:
            self.progress.passed, self.progress.scored = _passes_before(
                repo, state, self.primary, options.pass_threshold, n_done + n_failed
            )
        # A retried run asks the model again: the answers its failed attempt got (an agent's
        # calls are recorded as they are answered) are not taken from the store.
        retried = _calls_of_failed(repo, state) if options.retry_failed else frozenset()
        # Sized for a rollout and a model call per run (an agent's more calls grow it).
        self.lookup = lookup = StoreLookup(
            repo, state.trees["cache"], shared=not isolated, skip=retried,
            expected=2 * len(self.todo),
        )  # fmt: skip
        for res in replayed:  # an agent's answered calls, say, that its rollout will ask for
            for obj in res.objects:
                if obj.subtree == "cache" and obj.content is not None:
                    lookup.remember(obj.name, obj.oid, obj.content)
        self.caller = ModelCaller(lookup, client, config.model)
        # Rollouts in flight are claimed across the store's evals (see ``claims``); a config
        # started over with --fresh takes nothing from others, so it waits for none.
        layout = repo.layout
        self.claims = (
            RolloutClaims(layout.rollout_claims, stop, on_shared_wait)
            if layout is not None and not isolated
            else None
        )
        # An agent may call the model through an SDK of its own: the eval's endpoint serves
        # it (started at the first rollout that asks for its URL).
        self.endpoint = (
            RecordingEndpoint(config.model.name if config.model else None)
            if prepared.agent is not None
            else None
        )
        solver = Solver(config, lookup, self.caller, prepared.agent, self.endpoint)
        self.base_meta: dict[str, Any] = {
            "kind": "osmo.eval",
            "schema": SCHEMA,
            "config_id": self.config_id,
            "identity": config.identity(),
            "config": prepared.describe(options),
            "provenance": None,  # filled in by the first commit, off the launching path
        }
        if isolated:
            self.base_meta["isolated"] = True
        if label:
            self.base_meta["label"] = label
        self.prev_counts = (
            state.record.meta.get("counts", {}) if state.record and not options.fresh else {}
        )
        # Workers append finished runs (through the journal, with their journal seq); the
        # committer wakes once per commit interval (or when the workers are done) and
        # takes them all. Waking it per result cost a hand-off of the interpreter per run.
        self.results: queue.SimpleQueue[tuple[int, SampleResult]] = queue.SimpleQueue()
        for res in replayed:
            self.results.put((0, res))
            body = res.body if res.name and not res.failed else {}
            v = primary_value(body.get("scores") or {}, self.primary)
            if v is not None:
                self.stats.primary_sum += v
                self.stats.primary_count += 1
        self.journal: Journal | None = None
        self.workers_done = threading.Event()
        self.commit_error: BaseException | None = None
        # The summary of the runs recorded in this session is built as they are committed;
        # only runs recorded before it are read back at the end.
        keys = self.dataset.keys
        self.summary = SummaryBuilder(
            n=config.n, pass_threshold=options.pass_threshold, primary=self.primary, rows=keys
        )
        self.recorded_now = RunSet(keys, config.n)  # a bit a run: not a name per run kept
        if prepared.agent is not None:
            self.caller.record_now = lambda c: self._deliver(
                SampleResult.objects_only([PendingObject("cache", c.key, c.content, c.oid)])
            )
        eval_fns = prepared.eval_fns
        self.workers = Workers(
            self.todo,
            options.concurrency,
            stop,
            self._deliver,
            lambda row, i: _execute(config, solver, eval_fns, row, i, self.stats, self.claims),
        )
        self.committer = threading.Thread(
            target=self._commit_loop, name="osmo-committer", daemon=True
        )
        self.recorder: Recorder | RecorderProcess | None = None

    def _deliver(self, res: SampleResult) -> None:
        """A worker's result: durable (journaled) when this returns, on a local store."""
        if self.journal is not None:
            self.journal.append(res)
        else:
            self.results.put((0, res))

    def run(self) -> EvalOutcome:
        abort = False
        self.recorder = _open_recorder(
            self.repo, self.config_id, self.state, self.parents, self.head,
            self.failed_names, self.options, self.todo,
        )  # fmt: skip
        if self.journal_dir is not None and not self.repo.objects.read_only:
            self.journal = Journal(
                self.journal_dir,
                writers=self.options.concurrency,
                backlog=self.options.backlog,
                deliver=lambda seq, res: self.results.put((seq, res)),
            )
        try:
            interrupted = self._run_workers()
            return self._finish(interrupted)
        except KeyboardInterrupt:
            # Interrupted after a stop request: the caller asked twice, and will not wait
            # for the runs in flight.
            abort = self.stop.is_set()
            raise
        finally:
            self._end_threads(wait_for_runs=not abort)
            if self.endpoint is not None and not abort:
                self.endpoint.close()
            if self.claims is not None:
                self.claims.release_all()
            if isinstance(self.recorder, RecorderProcess):
                self.recorder.close()

    def _run_workers(self) -> bool:
        """Run the plan with the committer recording as results arrive; True if stopped
        before every run was recorded."""
        self.committer.start()
        try:
            interrupted = self.workers.run(self.options.stop_grace)
        finally:
            self.workers_done.set()
            self.committer.join()
        fatal = self.workers.fatal
        if self.workers.error is not None:
            raise self.workers.error
        if self.commit_error is not None:
            raise self.commit_error
        assert self.recorder is not None
        if fatal and self.recorder.commits <= 1 and self.recorder.recorded == 0:
            # An error every run would hit (a bad key, a wrong URL) and nothing recorded (not
            # even an agent's call: only the opening commit): put the config back as it was,
            # so a mistyped command leaves no empty config behind.
            ref = config_ref(self.config_id)
            message = "eval stopped before any run"
            if self.head is None:
                self.repo.delete_ref(ref, self.recorder.head, message=message)
            else:
                self.repo.update_ref(ref, self.head, self.recorder.head, message=message)
            raise fatal[0]
        return interrupted and not fatal

    def _commit_loop(self) -> None:
        """The committer thread: the opening commit at once, then one per interval."""
        assert self.recorder is not None
        first = True
        while True:
            end = self.workers_done.wait(0 if first else self.options.commit_interval)
            seqs: list[int] = []
            batch: list[SampleResult] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    seq, res = self.results.get_nowait()
                    seqs.append(seq)
                    batch.append(res)
            if batch or first:
                try:
                    self.recorder.commit(batch, self._meta("in_progress"))
                except BaseException as e:  # noqa: BLE001 - surfaced to the main thread
                    self.commit_error = e
                    self.workers.halt()
                    if self.journal is not None:
                        self.journal.unbound()  # no commit will make room any more
                    return
                if first:
                    # What this process wrote (an empty manifest) is named by the config's
                    # ref now: its lease would only keep the recorder from reclaiming the
                    # superseded checkpoints at the end (see ``Recorder.reclaim``).
                    self.repo.objects.release_idle_lease(0)
                first = False
                if self.journal is not None and seqs:
                    self.journal.committed(max(seqs))
                self.lookup.committed(
                    self.recorder.trees["cache"],
                    (o.name for res in batch for o in res.objects if o.subtree == "cache"),
                )
                # The workers' lookups map pack index pages at random: let them go now and
                # then, or every page of every index ends up counted in this process.
                self.repo.objects.release_memory()
                heap.give_back()  # the batch just recorded was freed across the heap
                for res in batch:
                    if not res.name:
                        continue  # an agent's model call, recorded ahead of its run
                    if self.claims is not None:
                        self.claims.release(res.name)  # recorded, and in the shared index
                    _update_progress(self.progress, res, self.primary, self.options.pass_threshold)
                    self.summary.add(res.body)
                    self.recorded_now.add(res.name)
                if self.on_progress:
                    self.progress.retried = self.caller.retried_attempts
                    self.on_progress(self.progress)
            if end:
                return

    def _finish(self, interrupted: bool) -> EvalOutcome:
        """The session's summary and final commit; a fatal error is raised after it."""
        recorder = self.recorder
        assert recorder is not None
        fatal = self.workers.fatal
        complete = not interrupted and not fatal and recorder.counts.get("done", 0) >= self.total
        if complete:
            status = "completed"
        elif self.options.shard and not interrupted and not fatal:
            status = "partial"  # this shard is done; the others come by sync
        else:
            status = "interrupted"
        trees = dict(recorder.trees)
        summary = self._summary(trees)
        summary["wall_time_s"] = round(time.time() - self.started, 3)
        run_id = recorder.commit([], self._meta(status, summary), final=True)
        if fatal:
            raise fatal[0]
        session = recorder.last_meta["session"]
        self.repo.objects.refresh()  # the recorder process may have written packs
        self.repo.objects.after_bulk_write()  # keep the pack count bounded across many evals
        repo = self.repo
        return EvalOutcome(
            self.config_id, run_id, status, summary, session, interrupted,
            lambda: load_samples(repo, trees),
        )  # fmt: skip

    def _summary(self, trees: dict[str, ObjectId]) -> dict[str, Any]:
        assert self.recorder is not None
        record = self.state.record
        previous = record.meta.get("summary") if record else None
        if (
            self.recorder.recorded == 0
            and previous
            and previous.get("pass_threshold") == self.options.pass_threshold
            and previous.get("primary_metric") == self.primary
            and "primary_score" in previous  # else written before summaries had it
        ):
            return dict(previous)  # nothing new recorded: the stored summary still holds
        # Runs recorded before this session are read back; none if it recorded them all.
        if self.recorder.counts.get("done", 0) > len(self.recorded_now):
            for sub in ("samples", "failed"):
                for e in iter_tree(self.repo.objects, trees[sub]):
                    if e.name not in self.recorded_now:
                        self.summary.add(load_sample(self.repo, e.oid, e.name))
        return self.summary.result()

    def _meta(
        self, status: str, summary: dict[str, Any] | None = None
    ) -> Callable[[dict[str, int]], dict[str, Any]]:
        """The run record's metadata as of now; the commit adds the manifest counts."""
        if self.base_meta["provenance"] is None:  # git calls: not worth delaying the runs for
            self.base_meta["provenance"] = provenance(self.config, self.dataset, self.started)
        stats = self.stats
        with stats.lock:
            psum = stats.primary_sum + self.prev_counts.get("primary_sum", 0.0)
            pcount = stats.primary_count + self.prev_counts.get("primary_count", 0)
        m = dict(self.base_meta)
        m["status"] = status
        m["counts"] = {"total": self.total, "primary_sum": psum, "primary_count": pcount}
        m["score"] = psum / pcount if pcount else None
        m["session"] = {
            "started": round(self.started, 3),
            "updated": round(time.time(), 3),
            "reused_samples": stats.reused_samples,
            "reused_rollouts": stats.reused_rollouts,
            "computed": stats.computed,
            "waited_for_other_evals": stats.waited,
            "model_calls": self.caller.calls_made,
            "retried_attempts": self.caller.retried_attempts,
            "failed_attempts": self.caller.failed_attempts,
            "failed_calls": self.caller.failed_calls,
            "retry_failed": self.options.retry_failed,
            "fresh": self.options.fresh,
        }
        if summary is not None:
            m["summary"] = summary
        return meta_builder(m)

    def _end_threads(self, *, wait_for_runs: bool) -> None:
        """However the session ends: nothing more is launched or recorded, the committer
        has made its last commit, and (unless aborting) the runs in flight have ended."""
        self.workers.halt()
        self.workers_done.set()
        if self.journal is not None:
            self.journal.unbound()  # workers held back by the backlog: let them finish
        if self.committer.is_alive():
            self.committer.join()
        if wait_for_runs:
            self.workers.join()
        if self.journal is not None:
            # What is journaled and not committed (a commit that failed, a run that ended
            # after the last one) stays for the next session to record.
            self.journal.close()


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
    reader = SampleReader(repo, trees)
    out = []
    for sub in ("samples", "failed"):
        for e in iter_tree(repo.objects, trees[sub]):
            out.append(reader.load(e.oid, e.name))
    return out


def _passes_before(
    repo: Repository, state: ConfigState, primary: str | None, threshold: float, recorded: int
) -> tuple[int, int]:
    """(passed, scored) of the runs recorded before this session, which the progress line
    counts with this session's: from the summary the last session stored when it covers
    them all under the same pass rule, else read back (a crashed session stored none)."""
    summary = state.record.meta.get("summary") if state.record else None
    if (
        summary
        and "passed" in summary  # else stored before summaries counted passes
        and summary.get("runs") == recorded
        and summary.get("pass_threshold") == threshold
        and summary.get("primary_metric") == primary
    ):
        return summary["passed"], summary["scored"]
    passed = scored = 0
    for e in iter_tree(repo.objects, state.trees["samples"]):  # failed runs pass nothing
        v = primary_value(load_sample(repo, e.oid, e.name).get("scores") or {}, primary)
        if v is not None:
            scored += 1
            passed += v >= threshold
    return passed, scored


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
    claims: RolloutClaims | None,
) -> SampleResult:
    key = rollout_key(config, row.key, run_index)
    objects: list[PendingObject] = [blob(row.key, "rows", canonical_json(row.data))]
    calls: list[CallOutcome] = []  # the rollout's model calls, as it makes them
    rollout: Rollout | None = solver.reuse(key)
    waited = (
        rollout is None
        and claims is not None
        and claims.acquire(sample_name(row.key, run_index), key)
    )
    if waited:
        # Another eval was computing it: it is recorded now, unless that eval failed.
        solver.lookup.refresh()
        rollout = solver.reuse(key)
        with stats.lock:
            stats.waited += 1
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
    # ``finished`` orders two results for the same run when stores merge (newer wins); in
    # whole seconds, so that runs with equal results share a sample blob. The sample as
    # readers see it; its blob (``sample_blob``) leaves out what others say.
    sample: dict[str, Any] = {
        "row": row.key,
        "run": run_index,
        "finished": int(time.time()),
    }
    if rollout is None:
        sample.update(status="failed", error=error, rollout=None, scores={}, scoring_errors={})
        if calls:  # made before it failed: kept, and not reused by --retry-failed
            sample["calls"] = [{"key": c.key, "id": c.oid} for c in calls]
            objects += [_cached(c.key, c.content, c.oid, c.reused) for c in calls]
        with stats.lock:
            stats.failed += 1
        return SampleResult(
            sample_name(row.key, run_index), True, sample_blob(sample), sample, objects
        )
    objects.append(_cached(rollout.key, rollout.content, rollout.oid, rollout.reused))
    # The sample blob does not name its rollout: the config's ``rollouts`` manifest does.
    name = sample_name(row.key, run_index)
    objects.append(PendingObject("rollouts", name, None, rollout.oid))
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
    return SampleResult(name, False, sample_blob(sample), sample, objects)


def _cached(key: str, content: bytes | None, oid: ObjectId, reused: bool) -> PendingObject:
    # Content that comes with a reused result was made by another run of this session, which
    # may be recorded first: look for the copy before writing another.
    return PendingObject("cache", key, content, oid, may_exist=reused and content is not None)
