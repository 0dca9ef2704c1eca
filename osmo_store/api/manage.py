"""Changing what the store holds, from Python: ``label`` (``osmo eval label``) and
``remove`` (``osmo eval cache rm``)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError
from ..eval.catalog import check_eval_refs, find_config, remove_configs, set_label
from .result import StorePath, open_store


def label(config: str, name: str, *, store: StorePath = None, force: bool = False) -> str:
    """Name a config (``config``: its id, a unique prefix or its current label), as ``osmo
    eval label`` does: one line of at most 100 printable characters, not 4 or more hex
    digits (an id prefix), kept by later runs of the config, shown and filtered by
    ``configs()`` and usable in ``load()``; an empty ``name`` removes the name. A name
    that names another config is refused, or with ``force`` moved here. Returns the config
    id. Raises ``UsageError`` (a bad name), ``LabelTaken``, ``ConfigNotFound`` and
    ``ConfigRunning`` (an eval of it is running)."""
    with open_store(store, create=False) as repo:
        check_eval_refs(repo)
        config_id = find_config(repo, config)
        set_label(repo, config_id, name, force=force)
        return config_id


def remove(configs: Sequence[str], *, store: StorePath = None) -> list[str]:
    """Remove configs (ids, unique prefixes or labels) and their history, as ``osmo eval
    cache rm -y`` does: their data stays until ``osmo eval cache gc`` frees what nothing
    else uses (the rollouts another config shares are kept). To remove by filter, pass
    ``[c.config_id for c in configs(status="interrupted")]``. Returns the removed config
    ids. Raises ``ConfigNotFound`` (nothing is removed then) and ``ConfigRunning``."""
    if isinstance(configs, str):
        raise UsageError("remove takes a list of config ids, prefixes or labels")
    with open_store(store, create=False) as repo:
        check_eval_refs(repo)
        ids = list(dict.fromkeys(find_config(repo, text) for text in configs))
        remove_configs(repo, ids)
        return ids
