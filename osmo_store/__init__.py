"""osmo-store: a content-addressed artifact store for LLM evaluation results."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Every import of a submodule (`osmo --version` imports osmo_store.cli) runs this file, so
# the public names load on first use (PEP 562), not here: start-up pays only for what runs.
_EXPORTS = {
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
    "ObjectId",
    "ObjectType",
    "OsmoError",
    "Repository",
    "RunRecord",
    "TreeEntry",
    "default_store_path",
    "init_store",
    "iter_tree",
    "list_tree",
    "parse_oid",
    "tree_get",
    "update_tree",
    "write_tree",
]

if TYPE_CHECKING:
    from .errors import OsmoError
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
