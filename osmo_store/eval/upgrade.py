"""Configs recorded under an older key schema. A change of key computation changes every
config id, so a newer osmo would silently compute again what an older one recorded for the
same command. Instead it finds those configs (same dataset content, same inputs as given),
says how many runs they hold and why they no longer match, and lets the user adopt them
knowingly: the new config then starts from the old one's results, as they are.
"""

from __future__ import annotations

from typing import Any

from ..errors import OlderKeys
from ..objects import RunRecord
from ..repo import Repository
from .catalog import ConfigInfo, list_configs
from .config import KEY_SCHEMA_CHANGES, KEY_SCHEMA_VERSION
from .configstate import config_ref, eval_lock
from .prepare import PreparedEval

#: the inputs as given (``PreparedEval.given``) that identify "the same command"; the
#: dataset is compared by content, and flags older osmo did not have are left out
_SAME_COMMAND = (
    "model", "base_url", "model_id", "agent", "eval_fns", "rows", "offset", "limit", "n",
    "params", "max_turns",
)  # fmt: skip


def older_configs(repo: Repository, prepared: PreparedEval) -> list[ConfigInfo]:
    """Stored configs of the same command recorded under an older key schema, newest first;
    none once this config is stored (the choice is asked once)."""
    if repo.refs.read(config_ref(prepared.config.config_id)) is not None:
        return []
    out = []
    for info in list_configs(repo, full=True):
        schema = info.meta.get("identity", {}).get("schema")
        if not isinstance(schema, int) or schema >= KEY_SCHEMA_VERSION:
            continue
        dataset = info.meta.get("provenance", {}).get("dataset", {})
        if dataset.get("fingerprint") != prepared.dataset.fingerprint:
            continue
        given = info.meta.get("config", {})
        # Under a --model-id the endpoint may move (the point of naming it): not compared.
        same = [k for k in _SAME_COMMAND if not (k == "base_url" and prepared.given["model_id"])]
        if all(given.get(k) == prepared.given.get(k) for k in same):
            out.append(info)
    return out


def refuse_older(found: list[ConfigInfo]) -> OlderKeys:
    """The error that tells the user, before anything runs, what the older configs hold."""
    done = sum(_done(info) for info in found)
    oldest = min(info.meta["identity"]["schema"] for info in found)
    why = "; ".join(
        KEY_SCHEMA_CHANGES[v] for v in range(oldest + 1, KEY_SCHEMA_VERSION + 1)
        if v in KEY_SCHEMA_CHANGES
    )  # fmt: skip
    return OlderKeys(done, [info.config_id for info in found], oldest, why)


def _done(info: ConfigInfo) -> int:
    """Runs recorded in a config: its last summary's count, else its planned total."""
    runs = (info.meta.get("summary") or {}).get("runs")
    return runs if isinstance(runs, int) else int(info.counts.get("total") or 0)


def adopt(repo: Repository, prepared: PreparedEval, info: ConfigInfo, lock_timeout: float) -> None:
    """Make the newest older config's results this config's starting state: a run record
    with its tree, naming it as parent, under this config's ref. Its samples then count as
    recorded (resumed, not recomputed); its meta says where they came from."""
    config = prepared.config
    old = repo.objects.get_run(info.run_id)
    meta: dict[str, Any] = dict(old.meta)
    meta.update(
        config_id=config.config_id,
        identity=config.identity(),
        adopted={"from": info.config_id, "schema": old.meta.get("identity", {}).get("schema")},
    )
    with eval_lock(repo, config.config_id, lock_timeout):
        run_id = repo.objects.put_run(RunRecord(old.tree, (info.run_id,), meta))
        repo.update_ref(
            config_ref(config.config_id),
            run_id,
            None,
            message=f"eval: adopted {info.config_id[:12]} (key schema upgrade)",
        )
