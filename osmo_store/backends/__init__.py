"""Layer 3: storage backends behind one small ObjectStore protocol (and their ref stores)."""

from .base import ObjectStore
from .memory import MemoryObjectStore, MemoryRefStore

__all__ = ["MemoryObjectStore", "MemoryRefStore", "ObjectStore"]
