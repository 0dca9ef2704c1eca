"""osmo-store: a content-addressed artifact store for LLM evaluation results."""

from __future__ import annotations

from .errors import OsmoError
from .hashing import ObjectId, parse_oid
from .objects import ObjectType, RunRecord
from .repo import Repository, default_store_path, init_store
from .tree import TreeEntry, iter_tree, list_tree, tree_get, update_tree, write_tree

__version__ = "0.1.0"

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
