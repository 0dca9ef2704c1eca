"""Running a prepared eval the one way every caller does: ``osmo eval`` and the Python API
(``osmo_store.evaluate``) both come through ``launch``, so they read the same settings,
handle configs of an older key schema alike, open the same model client and call the
runner the same way. What differs is theirs: how a stop is asked for (signals, a notebook's
interrupt), how progress and notices are shown, and what they make of the outcome."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import UsageError
from ..repo import Repository
from .catalog import check_label_free
from .client import ChatClient, resolve_api_key
from .prepare import PreparedEval
from .runner import EvalOptions, EvalOutcome, Progress, run_eval
from .upgrade import adopt, older_configs, refuse_older

#: what to do with runs of this eval recorded under an older key schema (None: refuse
#: with ``OlderKeys``, which says what they hold)
OlderKeysChoice = Literal["adopt", "recompute"] | None


@dataclass(frozen=True)
class ClientSettings:
    """How the model endpoint is called (never part of a config's identity)."""

    api_key: str | None = None  # else $OSMO_API_KEY, else $OPENAI_API_KEY
    timeout: float = 60.0
    max_retries: int = 5


def lock_timeout_from_env() -> float:
    """``$OSMO_LOCK_TIMEOUT``: how long an eval waits for another eval of its config."""
    text = os.environ.get("OSMO_LOCK_TIMEOUT", "30")
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise UsageError(f"OSMO_LOCK_TIMEOUT must be a number of seconds >= 0, not {text!r}")
    return v


def recorder_from_env() -> bool | None:
    """``$OSMO_RECORDER``: record in a child process, in a thread, or decide (auto)."""
    recorder = os.environ.get("OSMO_RECORDER", "auto")
    if recorder not in ("auto", "process", "thread"):
        raise UsageError(f"OSMO_RECORDER must be auto, process or thread, not {recorder!r}")
    return {"auto": None, "process": True, "thread": False}[recorder]


def launch(
    repo: Repository,
    prepared: PreparedEval,
    options: EvalOptions,
    *,
    client: ClientSettings,
    older_keys: OlderKeysChoice = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> EvalOutcome:
    """Run ``prepared`` on ``repo``: configs of the same eval under an older key schema are
    adopted, recomputed or refused first (``older_keys``), then the runner runs with a model
    client (when the eval calls a model) that is closed however it ends. ``on_notice`` gets
    one line each time the eval waits for another one, or adopts older runs. Raises what
    ``run_eval`` raises; ``StoppedWaiting`` if ``stop`` is set while it waits for a lock."""
    config_id = prepared.config.config_id
    if options.label:  # before anything runs: a name for one config at a time
        check_label_free(repo, options.label, config_id)
    if not options.fresh and older_keys != "recompute":
        found = older_configs(repo, prepared)
        if found and older_keys is None:
            raise refuse_older(found)
        if found:
            adopt(repo, prepared, found[0], options.lock_timeout)
            if on_notice:
                on_notice(f"adopted the runs of config {found[0].config_id[:12]} "
                          "(older key schema)")  # fmt: skip
    chat = None
    if prepared.config.model is not None:
        chat = ChatClient(
            prepared.base_url,
            api_key=resolve_api_key(client.api_key),
            timeout=client.timeout,
            max_retries=client.max_retries,
            pool_size=max(options.concurrency, 4),
        )
    notice = on_notice or (lambda line: None)
    try:
        return run_eval(
            repo, prepared, client=chat, options=options, stop=stop, on_progress=on_progress,
            on_wait=lambda: notice(
                f"another eval of config {config_id[:12]} is running; waiting up to "
                f"{options.lock_timeout:g}s for it to finish"),
            on_shared_wait=lambda: notice(
                "another eval is computing runs this one needs (the same solver): waiting "
                "for them rather than paying twice"),
        )  # fmt: skip
    finally:
        if chat is not None:
            chat.close()
