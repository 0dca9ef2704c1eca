"""``evaluate``: run an eval from Python, as ``osmo eval`` runs it (the same config ids,
store, reuse and resume: both go through ``eval.prepare`` and ``eval.launch``), taking
Python objects as well as paths, and returning an ``EvalResult``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec

from ..errors import StoppedWaiting, UsageError
from ..eval.catalog import check_label
from ..eval.config import SamplingParams
from ..eval.launch import (
    ClientSettings,
    OlderKeysChoice,
    launch,
    lock_timeout_from_env,
    recorder_from_env,
)
from ..eval.prepare import UserCode, prepare_eval
from ..eval.records import is_records
from ..eval.results import StoredConfig
from ..eval.runner import EvalOptions
from .progress import ProgressBar
from .result import EvalResult, StorePath, open_store

if TYPE_CHECKING:
    import pandas

log = logging.getLogger("osmo_store")
# The library's notices and warnings go to the "osmo_store" logger and nowhere else: without
# a handler of its own, Python's last resort would print its warnings on stderr, and the API
# prints nothing but its progress bar. A caller who wants them configures logging.
log.addHandler(logging.NullHandler())

P = ParamSpec("P")


class EvalInterrupted(KeyboardInterrupt):
    """The eval was stopped (Ctrl-C, a notebook's interrupt, ``stop`` set) after recording
    the runs that finished: running the same eval again resumes it. A KeyboardInterrupt,
    so that it ends a notebook cell or a loop over models as Ctrl-C does; ``result`` holds
    what was recorded (None if the eval was stopped while waiting for another eval of the
    same config, before running anything)."""

    def __init__(self, result: EvalResult | None) -> None:
        if result is None:
            message = "eval interrupted while waiting for another eval of its config"
        else:
            runs = result.summary.get("runs", 0)
            message = (f"eval interrupted: {runs} runs of config {result.config_id[:12]} "
                       "recorded; run it again to resume")  # fmt: skip
        super().__init__(message)
        self.result = result


def evaluate(
    dataset: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | pandas.DataFrame,
    eval_fns: UserCode | Sequence[UserCode],
    *,
    model: str | None = None,
    agent: UserCode | None = None,
    agent_cmd: str | None = None,
    n: int = 1,
    store: StorePath = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model_id: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    max_turns: int | None = None,
    limit: int | None = None,
    offset: int = 0,
    key_env: Sequence[str] = (),
    key_files: Sequence[str] = (),
    dataset_name: str | None = None,
    concurrency: int = 8,
    timeout: float = 60.0,
    max_retries: int = 5,
    fresh: bool = False,
    retry_failed: bool = False,
    older_keys: OlderKeysChoice = None,
    shard: tuple[int, int] | None = None,
    pass_threshold: float = 1.0,
    label: str | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> EvalResult:
    """Run ``dataset`` through ``model`` or ``agent``, score every run with ``eval_fns``
    and record it in ``store``, as ``osmo eval`` does with the same inputs (same config
    id: a config started here is resumed by the command, and the other way round).
    Running it again resumes it, and costs no model call once it is complete.

    ``dataset``: a ``.jsonl``/``.json``/``.csv``/``.parquet`` path, a list of dicts (one
    per row) or a pandas DataFrame, with the columns of docs/eval.md (``user_prompt`` or
    ``messages``, ``system_prompt``, ``ground_truth``; others are metadata), shown as
    ``dataset_name`` when given as objects. ``eval_fns`` and ``agent``: ``MODULE:NAME`` or
    ``file.py:NAME`` specs, or the callables themselves; a function defined in a notebook
    cell is keyed by its source and what it reaches by name (docs/python.md says what that
    does not cover). ``agent_cmd``: a program run per rollout against the eval's recording
    endpoint, as ``--agent-cmd`` (docs/eval.md). The other arguments are the flags of
    ``osmo eval`` (``n=`` is
    ``--n``, ``older_keys="adopt"`` is ``--adopt-old-keys``, ``"recompute"``
    ``--recompute``; ``shard=(1, 3)`` is ``--shard 1/3``).

    ``progress``: a tqdm bar (a widget in Jupyter). ``stop``: set it (from another
    thread) to stop as Ctrl-C does. Nothing else is printed; notices go to the
    ``osmo_store`` logger.

    Returns an ``EvalResult``. A Ctrl-C (or a notebook's interrupt) stops launching runs,
    records those in flight as they finish and raises ``EvalInterrupted`` (a
    KeyboardInterrupt): the config is resumable. A second Ctrl-C abandons the runs in
    flight. Errors are ``OsmoError`` subclasses (``UsageError``, ``DatasetError``,
    ``CodeLoadError``, ``FatalModelError``, ``OlderKeys``, ``EvalLocked``, ``LabelTaken``,
    ...)."""
    _check_numbers(
        ints={"n": (n, 1), "concurrency": (concurrency, 1), "max_retries": (max_retries, 0),
              "offset": (offset, 0), "max_tokens": (max_tokens, 1), "max_turns": (max_turns, 1),
              "limit": (limit, 0), "seed": (seed, None)},
        floats={"temperature": temperature, "top_p": top_p, "pass_threshold": pass_threshold},
        timeout=timeout, shard=shard,
    )  # fmt: skip
    if older_keys not in (None, "adopt", "recompute"):
        raise UsageError(f"older_keys must be 'adopt', 'recompute' or None, not {older_keys!r}")
    fns = [eval_fns] if isinstance(eval_fns, str) or callable(eval_fns) else list(eval_fns)
    prepared = prepare_eval(
        dataset, fns, model=model, base_url=base_url, model_id=model_id, agent=agent,
        agent_cmd=agent_cmd, params=SamplingParams(temperature, max_tokens, top_p, seed), n=n,
        max_turns=max_turns, limit=limit, offset=offset, key_env=list(key_env),
        key_files=list(key_files), dataset_name=dataset_name,
    )  # fmt: skip
    options = EvalOptions(
        concurrency=concurrency, fresh=fresh, retry_failed=retry_failed,
        pass_threshold=pass_threshold, lock_timeout=lock_timeout_from_env(), shard=shard,
        recorder_process=recorder_from_env(), label=check_label(label) if label else None,
    )  # fmt: skip
    keys = prepared.dataset.keys
    # Rows given as objects have no file that a later read could number them from.
    indexes = {keys[i]: i for i in range(len(keys))} if is_records(dataset) else None
    stop = stop or threading.Event()
    settings = ClientSettings(api_key, timeout, max_retries)
    bar = ProgressBar(f"osmo {prepared.config.config_id[:12]}") if progress else None
    with open_store(store, create=True) as repo, _interrupts_stop(stop):
        try:
            outcome = launch(
                repo, prepared, options, client=settings, older_keys=older_keys, stop=stop,
                on_progress=bar.update if bar else None, on_notice=log.info,
            )  # fmt: skip
        except StoppedWaiting:
            raise EvalInterrupted(None) from None
        finally:
            if bar is not None:
                bar.close()
        stored = StoredConfig(repo, outcome.config_id, outcome.run_id)
        result = EvalResult.from_stored(stored, outcome.status, indexes)
    if outcome.interrupted:
        raise EvalInterrupted(result)
    return result


def _awaitable(
    fn: Callable[P, EvalResult],
) -> Callable[P, Coroutine[Any, Any, EvalResult]]:
    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> EvalResult:
        stop = kwargs.get("stop") or threading.Event()
        kwargs["stop"] = stop
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))
        with _interrupts_stop(stop):
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # Cancelled (a notebook's interrupt of an awaiting cell): stop as Ctrl-C
                # does, and return only once the runs in flight are recorded.
                stop.set()
                await asyncio.wait([work])
                raise

    return run


evaluate_async = _awaitable(evaluate)
evaluate_async.__doc__ = """``evaluate`` as a coroutine, for code that runs in an event loop
(``await osmo_store.evaluate_async(...)`` in a Jupyter cell): the eval runs in a worker
thread, so the loop goes on meanwhile. Takes the arguments of ``evaluate`` and returns or
raises what it does; cancelling the awaiting task stops the eval as Ctrl-C does, once the
runs in flight are recorded. (``evaluate`` itself also works in Jupyter: it blocks the
cell, not needing the loop.)"""


@contextlib.contextmanager
def _interrupts_stop(stop: threading.Event) -> Iterator[None]:
    """While the eval runs, the first SIGINT (Ctrl-C, a notebook's interrupt) sets
    ``stop``, and a second one raises KeyboardInterrupt, as in ``osmo eval``. Only the main
    thread can set a signal handler; elsewhere the caller stops the eval with ``stop``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_numbers(
    *,
    ints: dict[str, tuple[int | None, int | None]],
    floats: dict[str, float | None],
    timeout: float,
    shard: tuple[int, int] | None,
) -> None:
    """What the command line's argument types check, for arguments given in Python:
    ``ints`` maps a name to its value (None: not given) and its least value (None: any)."""
    for name, (value, least) in ints.items():
        if value is None:
            if name in ("n", "concurrency", "max_retries", "offset"):
                raise UsageError(f"{name} must be an int, not None")
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{name} must be an int, not {value!r}")
        if least is not None and value < least:
            raise UsageError(f"{name} must be >= {least}, not {value!r}")
    if not isinstance(timeout, (int, float)) or not timeout > 0 or not math.isfinite(timeout):
        raise UsageError(f"timeout must be a number of seconds > 0, not {timeout!r}")
    for name, x in floats.items():
        if x is not None and (not isinstance(x, (int, float)) or not math.isfinite(x)):
            raise UsageError(f"{name} must be a finite number, not {x!r}")
    if shard is not None:
        ok = isinstance(shard, tuple) and len(shard) == 2 and all(
            isinstance(v, int) for v in shard)  # fmt: skip
        if not ok or not 1 <= shard[0] <= shard[1]:
            raise UsageError(f"shard must be (I, N) with 1 <= I <= N, not {shard!r}")
