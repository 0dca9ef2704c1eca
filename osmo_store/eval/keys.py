"""What user code declares its results depend on, besides its code: environment variables
and files. An agent or eval function carries the declaration with it, so nobody has to
remember ``--key-env``/``--key-file`` on the command line::

    from osmo_store.eval.keys import depends_on

    @depends_on(env=["JUDGE_MODEL"], files=["rubric.txt"])
    def graded(solution_str, ground_truth, extra_info): ...

Any callable may instead carry the attributes ``osmo_key_env`` and ``osmo_key_files``
(sequences of names) itself. A declared file is relative to the folder of the file that
defines the function. This module imports nothing else of osmo: user code imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

ENV_ATTR = "osmo_key_env"
FILES_ATTR = "osmo_key_files"


def depends_on(*, env: Iterable[str] = (), files: Iterable[str] = ()) -> Callable[[F], F]:
    """Declare the environment variables and files ``fn``'s results depend on: their values
    (or content) become part of the cache key of whatever ``fn`` computes."""
    env_names, file_names = tuple(env), tuple(files)

    def mark(fn: F) -> F:
        setattr(fn, ENV_ATTR, tuple(getattr(fn, ENV_ATTR, ())) + env_names)
        setattr(fn, FILES_ATTR, tuple(getattr(fn, FILES_ATTR, ())) + file_names)
        return fn

    return mark
