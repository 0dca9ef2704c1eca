"""Layer 3: storage backends behind one small ObjectStore protocol."""

from .base import ObjectStore
from .memory import MemoryObjectStore

__all__ = ["MemoryObjectStore", "ObjectStore"]
