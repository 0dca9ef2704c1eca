"""User code given as Python objects (``osmo_store.evaluate(eval_fns=[fn])``): its CodeRef,
as ``code.load_callable`` makes one for a ``MODULE:ATTR`` spec.

A callable defined in a file (imported, or in a script) is keyed by that file and what it
imports, exactly as ``--eval-fn file.py:NAME`` keys it: the same function gives the same
config from Python and from the command line. One with no file (defined in a notebook cell,
or by ``exec``) is keyed by its source text as ``inspect`` reads it (IPython keeps each
cell's text for that), and by what that code reaches by name:

- functions and classes without a file that it names (another cell's helper): their source,
  and what they reach in turn;
- modules, and functions or classes from files, that it names or imports: as an import from
  a file counts them (user files by content, installed packages by version);
- global variables, closure cells and default arguments holding plain data (None, bools,
  numbers, strings, and lists, tuples and dicts of them): their values.

Not covered: values of other types it reads (an object, a DataFrame, a compiled regex: only
the code of their class counts), attributes read through a name (``config.threshold``),
and names reached dynamically (``globals()[name]``, ``getattr``). Declare such inputs with
``key_env``/``key_files``, or pass them as plain data.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import textwrap
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import CodeLoadError
from ..hashing import blake3_hex, canonical_json
from .code import _defining_file, _module_file, declared_values
from .config import CodeRef
from .fingerprint import CodeFingerprint, fingerprint_code, fingerprint_imports, token_digest

_PLAIN = (type(None), bool, int, float, str)


def callable_ref(
    obj: Any,
    what: str,
    *,
    key_env: Sequence[str] = (),
    key_files: Sequence[tuple[str, Path]] = (),
) -> CodeRef:
    """The CodeRef of ``obj`` (a function, a class, a bound method or a callable instance);
    ``key_env`` and ``key_files`` as for ``load_callable``. Raises ``CodeLoadError`` for
    an object that is not callable or whose code cannot be read."""
    if not callable(obj):
        raise CodeLoadError(f"{what} {obj!r} is not callable")
    if isinstance(obj, functools.partial):
        raise CodeLoadError(f"{what}: a functools.partial has no code of its own to key",
                            hint="define a function that calls it")  # fmt: skip
    target = _code_holder(obj)
    attr = getattr(target, "__qualname__", None) or type(obj).__qualname__
    module_name = getattr(target, "__module__", None) or ""
    defining = _defining_file(obj)
    if defining is not None:
        roots = [defining]
        module = sys.modules.get(module_name)
        named_by = _module_file(module) if module is not None else None
        if named_by is not None:
            roots.append(named_by)
        code = fingerprint_code(roots)
        spec, source = f"{defining[0]}:{attr}", defining[1]
    else:
        code = _Reach(what).fingerprint(target)
        spec, source = f"{module_name or '?'}:{attr}", None
    depends = declared_values(obj, source, key_env, key_files)
    return CodeRef(spec, attr, code.digest, source, depends, code)


def _code_holder(obj: Any) -> Any:
    """The function or class whose code ``obj`` runs."""
    if inspect.ismethod(obj):
        return obj.__func__
    if inspect.isfunction(obj) or inspect.isclass(obj):
        return inspect.unwrap(obj) if inspect.isfunction(obj) else obj
    return type(obj)


class _Reach:
    """What code without a file reaches by name, gathered from one function or class:
    digests of the sources and plain values met, the modules named, and the source texts
    (for their import statements)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.sources: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.modules: set[str] = set()
        self.texts: list[bytes] = []
        self._seen: set[int] = set()

    def fingerprint(self, target: Any) -> CodeFingerprint:
        pending = [target]
        while pending:
            obj = pending.pop()
            if id(obj) not in self._seen:
                self._seen.add(id(obj))
                pending += self._visit(obj)
        imports = fingerprint_imports(sorted(self.modules), self.texts)
        body = {"sources": self.sources, "values": self.values, "imports": imports.digest}
        return CodeFingerprint(blake3_hex(canonical_json(body)), imports.files, imports.packages)

    def _visit(self, obj: Any) -> list[Any]:
        """Record ``obj`` (a function or class without a file); return what it reaches
        that needs visiting in turn."""
        if inspect.isclass(obj):
            more = []
            for name, member in vars(obj).items():
                member = getattr(member, "__func__", member)  # static and class methods
                if inspect.isfunction(member):
                    more.append(member)
                elif not name.startswith("__"):
                    more += self._reached(f"{obj.__qualname__}.{name}", member)
            return more
        if not inspect.isfunction(obj):
            return []
        name = f"{obj.__module__}:{obj.__qualname__}"
        try:
            text = textwrap.dedent(inspect.getsource(obj))
        except (OSError, TypeError) as e:
            raise CodeLoadError(
                f"{self.what} {obj.__qualname__}: cannot read its source ({e})",
                hint="define it in a .py file (or a notebook cell) and pass the function",
            ) from None
        self.sources[name] = token_digest(text.encode())
        self.texts.append(text.encode())
        more: list[Any] = []
        for global_name in _names(obj.__code__):
            if global_name in obj.__globals__:
                more += self._reached(global_name, obj.__globals__[global_name])
        cells = zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=False)
        for cell_name, cell in cells:
            try:
                value = cell.cell_contents
            except ValueError:  # a cell not yet filled
                continue
            more += self._reached(f"{name}.<closure>.{cell_name}", value)
        more += self._reached(f"{name}.<defaults>", obj.__defaults__)
        more += self._reached(f"{name}.<kwdefaults>", obj.__kwdefaults__)
        return more

    def _reached(self, name: str, value: Any) -> list[Any]:
        if inspect.ismodule(value):
            self.modules.add(value.__name__)
            return []
        if inspect.isfunction(value) or inspect.isclass(value):
            if _defining_file(value) is None:
                return [value]
            if value.__module__ != "__main__":
                self.modules.add(value.__module__)
            return []
        if inspect.ismethod(value):
            return self._reached(name, value.__func__)
        if inspect.isbuiltin(value):
            module = getattr(value, "__module__", None)
            if module and module not in ("builtins", "__main__"):
                self.modules.add(module)
            return []
        if _is_plain(value):
            self.values[name] = blake3_hex(canonical_json(_plain(value)))
            return []
        kind = type(value)  # an object: its class's code counts, its state does not
        if kind.__module__ not in ("builtins", "__main__"):
            self.modules.add(kind.__module__)
            return []
        return [kind] if kind.__module__ == "__main__" else []


def _names(code: types.CodeType) -> Iterator[str]:
    """The global (and attribute) names ``code`` and the functions nested in it use."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN):
        return not isinstance(value, float) or math.isfinite(value)
    if depth > 20:
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    """``value`` as canonical JSON takes it; a tuple is told apart from a list."""
    if isinstance(value, tuple):
        return {"tuple": [_plain(v) for v in value]}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
