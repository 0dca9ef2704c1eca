"""Bounds of the Hypothesis fuzzers: a few seconds in `make test`, long runs in the slow
tier (`--runslow` or OSMO_SLOW=1), where every fuzzer runs ``SLOW_FACTOR`` times as many
examples. conftest.py sets ``slow`` before any test module is imported."""

from __future__ import annotations

from typing import Any

from hypothesis import settings

SLOW_FACTOR = 50
#: set by conftest.py from --runslow / OSMO_SLOW
slow = False


def fuzz_settings(examples: int, **options: Any) -> settings:
    """``examples`` per fuzzer in `make test`; ``SLOW_FACTOR`` times more in the slow tier.
    No deadline: a loaded machine is slow, not wrong."""
    return settings(
        max_examples=examples * SLOW_FACTOR if slow else examples, deadline=None, **options
    )
