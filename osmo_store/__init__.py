"""osmo-store: a content-addressed artifact store for LLM evaluation results."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Every import of a submodule (`osmo --version` imports osmo_store.cli) runs this file, so
# the public names load on first use (PEP 562), not here: start-up pays only for what runs.
_EXPORTS = {
    # the Python API for scripts and notebooks (docs/python.md)
    "evaluate": ".api.run",
    "evaluate_async": ".api.run",
    "EvalInterrupted": ".api.run",
    "EvalResult": ".api.result",
    "load": ".api.result",
    "configs": ".api.result",
    "report": ".api.report",
    "label": ".api.manage",
    "remove": ".api.manage",
    "VerifyReport": ".eval.verify",
    "ConfigInfo": ".eval.catalog",
    # the store
    "OsmoError": ".errors",
    "ObjectId": ".hashing",
    "parse_oid": ".hashing",
    "ObjectType": ".objects",
    "RunRecord": ".objects",
    "Repository": ".repo",
    "default_store_path": ".repo",
    "init_store": ".repo",
    "TreeEntry": ".tree",
    "iter_tree": ".tree",
    "list_tree": ".tree",
    "tree_get": ".tree",
    "update_tree": ".tree",
    "write_tree": ".tree",
}

__all__ = [
    "ConfigInfo",
    "EvalInterrupted",
    "EvalResult",
    "ObjectId",
    "ObjectType",
    "OsmoError",
    "Repository",
    "RunRecord",
    "TreeEntry",
    "VerifyReport",
    "configs",
    "default_store_path",
    "evaluate",
    "evaluate_async",
    "init_store",
    "iter_tree",
    "label",
    "list_tree",
    "load",
    "parse_oid",
    "remove",
    "report",
    "tree_get",
    "update_tree",
    "write_tree",
]

if TYPE_CHECKING:
    from .api.manage import label, remove
    from .api.report import report
    from .api.result import EvalResult, configs, load
    from .api.run import EvalInterrupted, evaluate, evaluate_async
    from .errors import OsmoError
    from .eval.catalog import ConfigInfo
    from .eval.verify import VerifyReport
    from .hashing import ObjectId, parse_oid
    from .objects import ObjectType, RunRecord
    from .repo import Repository, default_store_path, init_store
    from .tree import TreeEntry, iter_tree, list_tree, tree_get, update_tree, write_tree


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
