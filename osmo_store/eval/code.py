"""Loading user code (agents, eval functions) by ``MODULE:ATTR`` or ``file.py:ATTR``, with a
fingerprint of the code that produced a result, the values of what it declares it depends
on, and, for provenance, its git state."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import CodeLoadError
from ..hashing import blake3_hex
from .config import CodeRef
from .fingerprint import fingerprint_code
from .keys import ENV_ATTR, FILES_ATTR

#: the prefix of the module name a ``file.py:ATTR`` spec is imported under
_FILE_MODULE_PREFIX = "_osmo_user_"

# What user code (an agent, an eval function, a module they import) may raise that makes
# its run fail rather than the eval: any exception, and exit()/sys.exit(), which in a worker
# thread would otherwise end the whole eval with the user's exit status (0 for ``exit()``).
USER_CODE_ERRORS = (Exception, SystemExit)


def describe_error(e: BaseException) -> str:
    """One line for a failure of user code."""
    if isinstance(e, SystemExit):
        return f"SystemExit: the code called exit({'' if e.code is None else repr(e.code)})"
    return f"{type(e).__name__}: {e}"


def load_callable(
    spec: str,
    what: str,
    *,
    key_env: Sequence[str] = (),
    key_files: Sequence[tuple[str, Path]] = (),
) -> tuple[Callable[..., Any], CodeRef]:
    """Import ``spec`` and return the callable and its CodeRef. The fingerprint covers the
    file that defines the object (found from the object: a re-export or a package
    ``__init__`` is not where the code is), the module it was named by, and every module of
    the user's they import, transitively. ``key_env`` and ``key_files`` (``(name as typed,
    path)``) are dependencies declared for it on the command line, added to those the
    object declares itself (``osmo_store.eval.keys.depends_on``)."""
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
    roots = [r for r in (_defining_file(obj), _module_file(module)) if r is not None]
    if roots:
        code = fingerprint_code(roots)
        fingerprint = code.digest
    else:  # built-in or compiled: its name and version are all we can identify
        code = None
        fingerprint = blake3_hex(f"{module.__name__}:{getattr(module, '__version__', '')}".encode())
    source = roots[0][1] if roots else None
    depends = declared_values(obj, source, key_env, key_files)
    return obj, CodeRef(spec, attr, fingerprint, source, depends, code)


def declared_values(
    obj: Any,
    source: str | None,
    key_env: Sequence[str],
    key_files: Sequence[tuple[str, Path]],
) -> tuple[tuple[str, str], ...]:
    """``env:NAME`` and ``file:NAME`` to a digest of the value or content, for what the
    command line and the object declare. An unset variable is ``unset`` and a missing file
    ``missing``: both are states the results may depend on, not errors. Values are hashed
    so that a secret in a variable never reaches the store."""
    env = [*key_env, *_names(obj, ENV_ATTR)]
    here = Path(source).parent if source else Path.cwd()
    files = [*key_files, *((n, here / n) for n in _names(obj, FILES_ATTR))]
    out: dict[str, str] = {}
    for name in env:
        value = os.environ.get(name)
        out[f"env:{name}"] = "unset" if value is None else blake3_hex(value.encode())
    for name, path in files:
        try:
            out[f"file:{name}"] = blake3_hex(path.read_bytes())
        except FileNotFoundError:
            out[f"file:{name}"] = "missing"
        except OSError as e:
            raise CodeLoadError(f"declared file {name}: {e.strerror or e}") from None
    return tuple(sorted(out.items()))


def _names(obj: Any, attribute: str) -> list[str]:
    value = getattr(obj, attribute, ())
    if isinstance(value, str):
        value = (value,)
    return [str(v) for v in value]


def _defining_file(obj: Any) -> tuple[str, str] | None:
    """``(module name, file)`` of the code that defines ``obj``: a function or class itself
    (what a decorator wraps, if it says so), else the class of a callable instance."""
    target = obj if inspect.isfunction(obj) or inspect.isclass(obj) else type(obj)
    if inspect.ismethod(obj):
        target = obj.__func__
    if inspect.isfunction(target):
        target = inspect.unwrap(target)
    try:
        f = inspect.getsourcefile(target)
    except TypeError:
        return None
    if not f or not Path(f).is_file():
        return None
    return _label(getattr(target, "__module__", None) or "", f), str(Path(f).resolve())


def _module_file(module: Any) -> tuple[str, str] | None:
    f = _source_file(module)
    return (_label(module.__name__, f), f) if f else None


def _label(module_name: str, path: str) -> str:
    """A module's name as its fingerprint lists it: a ``file.py:ATTR`` module's own name
    holds a digest of its path, so it is named by its file's stem (its folder is on
    ``sys.path``, so that is also the name it imports by)."""
    if not module_name or module_name.startswith(_FILE_MODULE_PREFIX):
        return Path(path).stem
    return module_name


def _import(target: str, what: str, spec: str):
    if target.endswith(".py") or "/" in target or target.startswith("."):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise CodeLoadError(f"{what} {spec!r}: no such file {target}")
        name = f"{_FILE_MODULE_PREFIX}{blake3_hex(str(path).encode())[:16]}_{path.stem}"
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
    # MODULE names resolve from the working directory first, like python -m, even after a
    # file.py load in this process put that file's folder in front (a library caller's
    # second eval, or a test run in-process, would import another folder's module).
    if sys.path[:1] != [""]:
        while "" in sys.path:
            sys.path.remove("")
        sys.path.insert(0, "")
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
