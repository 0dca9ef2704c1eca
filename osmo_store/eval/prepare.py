"""An eval loaded and checked before anything runs: its identity (``EvalConfig``) and what
runs it. ``osmo eval`` and a program calling the library both come through
``prepare_eval``, so the same inputs give the same config id whoever runs the eval.

    from osmo_store import Repository
    from osmo_store.eval.client import ChatClient, resolve_api_key
    from osmo_store.eval.prepare import prepare_eval
    from osmo_store.eval.runner import EvalOptions, run_eval

    prepared = prepare_eval("data.jsonl", ["fns.py:exact"], model="m", base_url=url)
    key = resolve_api_key(None)
    with Repository.open(path) as repo, ChatClient(prepared.base_url, api_key=key) as client:
        outcome = run_eval(repo, prepared, client=client, options=EvalOptions())
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .agentcmd import load_command_agent
from .callables import callable_ref
from .code import load_callable
from .config import (
    CodeRef,
    EvalConfig,
    ModelSpec,
    SamplingParams,
    endpoint_identity,
    resolve_base_url,
)
from .dataset import Dataset, load_dataset
from .records import is_records, load_records
from .scoring import EvalFn

if TYPE_CHECKING:
    from .runner import EvalOptions


@dataclass(frozen=True)
class PreparedEval:
    """What ``run_eval`` needs: the config (identity), the rows, the loaded user code, the
    endpoint to call, and the inputs as given (shown and recorded with every run record,
    never hashed)."""

    config: EvalConfig
    dataset: Dataset
    eval_fns: list[EvalFn]
    agent: Callable[..., Any] | None
    base_url: str
    given: dict[str, Any]

    def describe(self, options: EvalOptions) -> dict[str, Any]:
        """The config as shown to the user and recorded in run records: the inputs as
        given, and the options that change what a summary says but not the results."""
        shown = dict(self.given)
        shown["pass_threshold"] = options.pass_threshold
        shown["shard"] = list(options.shard) if options.shard else None
        return shown


#: user code as a ``MODULE:ATTR`` or ``file.py:ATTR`` spec, or as the callable itself
UserCode = str | Callable[..., Any]


def prepare_eval(
    dataset: str | Path | Any,
    eval_fns: Sequence[UserCode],
    *,
    model: str | None = None,
    base_url: str | None = None,
    model_id: str | None = None,
    agent: UserCode | None = None,
    agent_cmd: str | None = None,
    params: SamplingParams | None = None,
    n: int = 1,
    max_turns: int | None = None,
    limit: int | None = None,
    offset: int = 0,
    key_env: Sequence[str] = (),
    key_files: Sequence[str] = (),
    dataset_name: str | None = None,
) -> PreparedEval:
    """Load the dataset (a file, or rows as objects: a list of dicts or a DataFrame, shown
    as ``dataset_name``) and the user code (``MODULE:ATTR`` or ``file.py:ATTR`` specs, or
    callables: see ``callables``) and compute the config's identity. ``agent_cmd`` is an
    agent that is a program (``agentcmd``), in place of ``agent``. ``key_env`` and
    ``key_files`` name environment variables and files the user code depends on: their
    values join the key of the agent and of every eval function. Raises ``UsageError``,
    ``DatasetError`` or ``CodeLoadError`` for input that cannot run, before anything is
    stored."""
    if model is None and agent is None and agent_cmd is None:
        raise UsageError("an eval needs a model or an agent")
    if agent is not None and agent_cmd is not None:
        raise UsageError("give an agent or an agent command, not both")
    if not eval_fns:
        raise UsageError("an eval needs at least one eval function")
    if is_records(dataset):
        loaded = load_records(dataset, name=dataset_name, limit=limit, offset=offset)
    else:
        loaded = load_dataset(dataset, limit=limit, offset=offset)
    if not loaded.selected_rows:
        raise UsageError(f"{loaded.shown}: no rows selected (offset {offset})")
    files = []
    for name in key_files:
        if not Path(name).is_file():
            raise UsageError(f"--key-file {name}: no such file")
        files.append((name, Path(name)))
    declared = {"key_env": tuple(key_env), "key_files": tuple(files)}
    agent_fn: Callable[..., Any] | None = None
    agent_ref = None
    if agent:
        agent_fn, agent_ref = user_code(agent, "agent", **declared)
    elif agent_cmd is not None:
        agent_fn, agent_ref = load_command_agent(agent_cmd, **declared)
    fns = [EvalFn.wrap(*user_code(spec, "eval function", **declared)) for spec in eval_fns]
    names = [f.name for f in fns]
    if len(set(names)) != len(names):
        raise UsageError(f"two eval functions share a name: {', '.join(names)}")
    url = resolve_base_url(base_url)
    spec = ModelSpec(model, url, model_id) if model else None
    params = params or SamplingParams()
    config = EvalConfig(
        model=spec,
        agent=agent_ref,
        eval_fns=tuple(f.ref for f in fns),
        params=params,
        n=n,
        max_turns=max_turns,
        dataset_fingerprint=loaded.selection_fingerprint,
        dataset_path=str(loaded.path),
    )
    given = {
        "model": model,
        # The endpoint called, also when a model id keeps it out of the identity.
        "base_url": endpoint_identity(url) if spec else None,
        "model_id": model_id,
        # Every view shows "agent"; a command is shown there as a shell line.
        "agent": f"$ {agent_cmd}"
        if agent_cmd is not None
        else (agent_ref.spec if agent_ref else None),
        "agent_cmd": agent_cmd,
        "eval_fns": [f.ref.spec for f in fns],
        "dataset": str(loaded.path),
        "rows": loaded.selected_rows,
        "offset": offset,
        "limit": limit,
        "n": n,
        "params": params.as_request_fields(),
        "max_turns": max_turns,
        "key_env": list(key_env),
        "key_files": list(key_files),
    }
    return PreparedEval(config, loaded, fns, agent_fn, url, given)


def user_code(code: UserCode, what: str, **declared: Any) -> tuple[Callable[..., Any], CodeRef]:
    """A spec loaded, or a callable taken as it is, with the reference that keys it."""
    if isinstance(code, str):
        return load_callable(code, what, **declared)
    return code, callable_ref(code, what, **declared)
