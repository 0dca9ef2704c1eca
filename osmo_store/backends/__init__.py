"""Layer 3: storage backends behind one small ObjectStore protocol (and their ref stores)."""

from __future__ import annotations

from typing import Any

from .base import ObjectStore

__all__ = ["MemoryObjectStore", "MemoryRefStore", "ObjectStore"]


def __getattr__(name: str) -> Any:
    # The in-memory backend loads on first use: the CLI never needs it at start-up.
    if name in ("MemoryObjectStore", "MemoryRefStore"):
        from . import memory

        return getattr(memory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
