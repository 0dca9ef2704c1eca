"""Keeping an eval's C heap from growing with its length (glibc's malloc; elsewhere these
do nothing).

The eval's Python objects stay flat as it goes (tracemalloc), but its RSS grew: glibc gives
each thread that mallocs while another does an arena of its own (up to 8 per core), and
what the 16 workers allocate and free there (answers, sample records, index nodes, the
zstd contexts of packs that come and go) stays in their arenas as free chunks scattered
between what is still in use. Measured over 30,000 runs: malloc's free bytes went from 2 to
14 MB; with one arena, 1 to 8 MB; with one arena and the free pages given back after each
commit, to 3 MB (RSS +3 MB instead of +11).
"""

from __future__ import annotations

import ctypes
import sys

_M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt as a stub)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def one_arena() -> None:
    """No more arenas: threads started from now on malloc in those that exist (the main
    one only, in a process that has run no threads before). The GIL serializes most of
    their mallocs anyway, so they hardly ever wait for each other's lock.

    Process-wide and for good: glibc fixes its arena limit the first time a thread wants
    an arena (``arena_get2``'s ``narenas_limit``, computed once), so setting
    ``M_ARENA_MAX`` back to 0 afterwards changes nothing. Hence only the ``osmo eval``
    process calls it, being the eval's for the rest of its life; an eval run through the
    Python API leaves its caller's allocator as it was."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, 1)


def give_back() -> None:
    """Return the whole free pages inside malloc's arenas to the system (``malloc_trim``:
    a few milliseconds for an eval's heap)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
