"""Loading user code (agents, eval functions) by ``MODULE:ATTR`` or ``file.py:ATTR``, with a
fingerprint of the code that produced a result and, for provenance, its git state."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CodeLoadError
from ..hashing import blake3_hex
from .config import CodeRef

# What user code (an agent, an eval function, a module they import) may raise that makes
# its run fail rather than the eval: any exception, and exit()/sys.exit(), which in a worker
# thread would otherwise end the whole eval with the user's exit status (0 for ``exit()``).
USER_CODE_ERRORS = (Exception, SystemExit)


def describe_error(e: BaseException) -> str:
    """One line for a failure of user code."""
    if isinstance(e, SystemExit):
        return f"SystemExit: the code called exit({'' if e.code is None else repr(e.code)})"
    return f"{type(e).__name__}: {e}"


def load_callable(spec: str, what: str) -> tuple[Callable[..., Any], CodeRef]:
    """Import ``spec`` and return the callable and its CodeRef. The fingerprint is the
    BLAKE3 of the defining module's source file, so editing anything in that file (a
    helper, a constant) counts as a code change; code in other files does not."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise CodeLoadError(f"{what} {spec!r} must look like MODULE:NAME or path/to/file.py:NAME")
    module = _import(target, what, spec)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise CodeLoadError(f"{what} {spec!r}: {target} has no attribute {attr!r}")
    if not callable(obj):
        raise CodeLoadError(f"{what} {spec!r} is not callable")
    source_file = _source_file(module)
    if source_file is not None:
        code = Path(source_file).read_bytes()
        fingerprint = blake3_hex(code)
    else:  # built-in or compiled: its name and version are all we can identify
        fingerprint = blake3_hex(f"{module.__name__}:{getattr(module, '__version__', '')}".encode())
    return obj, CodeRef(spec=spec, attr=attr, fingerprint=fingerprint, source=source_file)


def _import(target: str, what: str, spec: str):
    if target.endswith(".py") or "/" in target or target.startswith("."):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise CodeLoadError(f"{what} {spec!r}: no such file {target}")
        name = f"_osmo_user_{blake3_hex(str(path).encode())[:16]}_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise CodeLoadError(f"{what} {spec!r}: cannot load {target}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        # The file's folder on sys.path lets it import its sibling modules.
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        try:
            module_spec.loader.exec_module(module)
        except USER_CODE_ERRORS as e:
            del sys.modules[name]
            raise CodeLoadError(
                f"{what} {spec!r}: importing {target} failed: {describe_error(e)}"
            ) from None
        return module
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # MODULE names resolve from the working directory, like python -m
    try:
        return importlib.import_module(target)
    except USER_CODE_ERRORS as e:
        why = describe_error(e)
        raise CodeLoadError(f"{what} {spec!r}: cannot import {target}: {why}") from None


def _source_file(module) -> str | None:
    try:
        f = inspect.getsourcefile(module)
    except TypeError:
        return None
    return str(Path(f).resolve()) if f and Path(f).is_file() else None


def git_state(path: str | None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git work tree holding ``path``, if any."""
    if not path:
        return None
    folder = str(Path(path).parent)

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", "-C", folder, *args], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--", path)
    return {"commit": commit, "dirty": bool(status)}
