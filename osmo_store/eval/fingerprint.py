"""Fingerprints of user code: the files that define an agent or eval function and every
module of the user's they import, transitively, plus the installed packages they import by
distribution name and version.

A fingerprint depends on content only, never on where the files are (two machines with the
project in different folders get the same one). A file counts by its token stream without
comments and layout, so a comment or a re-indented blank line is not a code change. Files
are read once per (size, mtime) in a process: fingerprinting a project of 50 modules again
costs a few stat calls.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.metadata
import io
import os
import re
import sys
import sysconfig
import threading
import time
import tokenize
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hashing import blake3_hex, canonical_json

#: modules whose code is osmo's own, never the user's: they are versioned with osmo
_OSMO_TOP = "osmo_store"
_INSTALLED_DIRS = ("site-packages", "dist-packages")
# A file modified this recently may be modified again within the file system's timestamp
# granularity without its (size, mtime) changing (git's "racy clean" problem): such a file
# is read again each time rather than trusted from the cache.
_RACY_SECONDS = 2.0


@dataclass(frozen=True)
class FileFingerprint:
    """One file of the user's code: its module name (path-independent), the digest of its
    tokens, and where it was read (provenance only, never hashed)."""

    module: str
    digest: str
    path: str


@dataclass(frozen=True)
class CodeFingerprint:
    digest: str
    files: tuple[FileFingerprint, ...]
    packages: tuple[tuple[str, str], ...]  # (distribution, version)

    def describe(self) -> dict[str, Any]:
        return {
            "files": {f.module: {"fingerprint": f.digest, "path": f.path} for f in self.files},
            "packages": dict(self.packages),
        }


@dataclass(frozen=True)
class _FileFacts:
    digest: str
    imports: tuple[tuple[int, str, tuple[str, ...]], ...]  # (level, module, names)


@dataclass(frozen=True)
class _Found:
    name: str
    origin: str | None
    search: tuple[str, ...] | None  # a package's submodule folders


_cache_lock = threading.Lock()
_file_cache: dict[str, tuple[int, int, _FileFacts]] = {}
_dists_cache: dict[tuple[str, int | None, str], tuple[str, str] | None] = {}


def clear_caches() -> None:
    """Forget every file and distribution read (what a new process starts with)."""
    with _cache_lock:
        _file_cache.clear()
        _dists_cache.clear()
    _real.cache_clear()
    _classify.cache_clear()


def fingerprint_code(roots: Sequence[tuple[str, str]]) -> CodeFingerprint:
    """The fingerprint of ``roots`` (``(module name, file path)`` pairs: the file that defines
    an object and the module it was named by) and everything of the user's they import."""
    walk = _Walk()
    for module, path in roots:
        walk.visit(module, path)
    return walk.fingerprint()


class _Walk:
    """One traversal of the import graph from some roots: the user files seen (by path) and
    the installed distributions imported."""

    def __init__(self) -> None:
        self.files: dict[str, FileFingerprint] = {}
        self.packages: dict[str, str] = {}
        self._labels: set[str] = set()
        self._followed: set[str] = set()
        self._installed_tops: set[str] = set()  # their submodules count with them

    def fingerprint(self) -> CodeFingerprint:
        files = tuple(sorted(self.files.values(), key=lambda f: f.module))
        packages = tuple(sorted(self.packages.items()))
        body = {"files": {f.module: f.digest for f in files}, "packages": dict(packages)}
        return CodeFingerprint(blake3_hex(canonical_json(body)), files, packages)

    def visit(self, module: str, path: str) -> None:
        path = _real(path)
        if path in self.files:
            return
        facts = file_facts(path)
        label = module
        while label in self._labels:  # two files under one name: keep both, in walk order
            label += "'"
        self._labels.add(label)
        self.files[path] = FileFingerprint(label, facts.digest, path)
        package = module if Path(path).name == "__init__.py" else module.rpartition(".")[0]
        for level, name, names in facts.imports:
            for target in _import_targets(package, level, name, names):
                self.follow(target)

    def follow(self, name: str) -> None:
        top = name.partition(".")[0]
        if not top or top == _OSMO_TOP or _is_stdlib_name(top) or name in self._followed:
            return
        if top in self._installed_tops:
            return
        self._followed.add(name)
        found = _find(name)
        if found is None or not found.origin or not os.path.isfile(found.origin):
            return
        kind = _classify(found.origin)
        if kind == "stdlib":
            return
        if kind == "installed":
            dist, version = _distribution(top, found.origin)
            self.packages[dist] = version
            self._installed_tops.add(top)
            return
        if found.origin.endswith((".py", ".pyw")):
            self.visit(name, found.origin)
        else:  # a compiled module of the user's: its bytes are all there is to hash
            path = _real(found.origin)
            digest = blake3_hex(Path(path).read_bytes())
            self.files.setdefault(path, FileFingerprint(name, digest, path))


def _import_targets(package: str, level: int, name: str, names: tuple[str, ...]) -> Iterable[str]:
    """Every module an import statement may load: each parent package (its ``__init__``
    runs), the module, and for ``from X import a`` the submodule ``X.a`` where one exists."""
    if level:
        base = package.split(".") if package else []
        if level - 1 > len(base):
            return
        base = base[: len(base) - (level - 1)]
        full = ".".join([*base, *([name] if name else [])])
    else:
        full = name
    if not full:
        return
    parts = full.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])
    for n in names:
        if n != "*":
            yield f"{full}.{n}"


def _is_stdlib_name(top: str) -> bool:
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def _find(name: str) -> _Found | None:
    """Where ``name`` is (or would be) loaded from, without importing anything: the loaded
    module if there is one, else the path finders over ``sys.path`` (a parent's folders for
    a submodule)."""
    module = sys.modules.get(name)
    if module is not None:
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
        search = getattr(module, "__path__", None)
        return _Found(name, origin, tuple(search) if search is not None else None)
    parent, _, last = name.rpartition(".")
    if parent:
        found_parent = _find(parent)
        if found_parent is None or found_parent.search is None:
            return None
        path: list[str] | None = list(found_parent.search)
    else:
        path = None
    try:
        spec = importlib.machinery.PathFinder.find_spec(last, path)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    search = spec.submodule_search_locations
    return _Found(name, spec.origin, tuple(search) if search is not None else None)


def _stdlib_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib") if k in paths})


_STDLIB_ROOTS = _stdlib_roots()


@functools.lru_cache(maxsize=8192)  # a path's real path does not change within a walk
def _real(path: str) -> str:
    return os.path.realpath(path)


@functools.lru_cache(maxsize=8192)  # where a file lies never changes its kind
def _classify(origin: str) -> str:
    """``installed`` (in a site-packages folder), ``stdlib`` or ``user``. Installed comes
    first: site-packages usually lies inside the standard library's folder."""
    parts = Path(origin).parts
    if any(p in _INSTALLED_DIRS for p in parts):
        return "installed"
    resolved = _real(origin)
    if any(resolved.startswith(root + os.sep) for root in _STDLIB_ROOTS):
        return "stdlib"
    return "user"


def _distribution(top: str, origin: str) -> tuple[str, str]:
    """The installed distribution that provides the import name ``top`` (found in the
    site-packages folder holding ``origin``), with its version; a module no distribution
    claims counts by its content. Remembered per folder until the folder changes (an
    install or upgrade renames a ``.dist-info`` in it, which changes its mtime)."""
    site = _site_folder(origin)
    found = None
    if site is not None:
        try:
            stamp = os.stat(site).st_mtime_ns
        except OSError:
            stamp = None
        key = (str(site), stamp, top)
        with _cache_lock:
            known = key in _dists_cache
            found = _dists_cache.get(key)
        if not known:
            found = _find_distribution(site, top)
            with _cache_lock:
                _dists_cache[key] = found
    if found:
        return found
    return f"module:{top}", blake3_hex(Path(origin).read_bytes())


def _site_folder(origin: str) -> Path | None:
    for folder in Path(origin).parents:
        if folder.name in _INSTALLED_DIRS:
            return folder
    return None


def _find_distribution(site: Path, top: str) -> tuple[str, str] | None:
    """Read only what is needed: the ``.dist-info`` whose name matches ``top`` is tried
    first (``requests`` in ``requests-2.32.dist-info``), the others only if it does not
    provide it. ``importlib.metadata.packages_distributions()`` would parse the metadata of
    every installed distribution (~2 ms each)."""
    try:
        entries = [e for e in os.listdir(site) if e.endswith((".dist-info", ".egg-info"))]
    except OSError:
        return None
    want = _normalized(top)
    entries.sort(key=lambda e: (_normalized(e.partition("-")[0]) != want, e))
    for entry in entries:
        if top in _top_levels(site / entry):
            dist = importlib.metadata.Distribution.at(site / entry)
            name = dist.metadata["Name"] or entry.partition("-")[0]
            return name, dist.version or "?"
    return None


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _top_levels(info: Path) -> set[str]:
    """The import names a distribution provides: its ``top_level.txt``, else the first
    part of each path its ``RECORD`` lists."""
    try:
        return {line.strip() for line in (info / "top_level.txt").read_text().splitlines()}
    except OSError:
        pass
    try:
        record = (info / "RECORD").read_text()
    except OSError:
        return set()
    tops = set()
    for line in record.splitlines():
        first = line.split(",", 1)[0].split("/", 1)[0]
        if first and not first.endswith((".dist-info", ".data")) and first != "..":
            tops.add(first.removesuffix(".py"))
    return tops


def file_facts(path: str) -> _FileFacts:
    """The token digest and import statements of one source file, from the cache while the
    file's size and mtime are those it was read with."""
    st = os.stat(path)
    with _cache_lock:
        cached = _file_cache.get(path)
    if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
        return cached[2]
    source = Path(path).read_bytes()
    facts = _FileFacts(token_digest(source), _imports(source))
    if time.time_ns() - st.st_mtime_ns > _RACY_SECONDS * 1e9:
        with _cache_lock:
            _file_cache[path] = (st.st_size, st.st_mtime_ns, facts)
    return facts


def token_digest(source: bytes) -> str:
    """BLAKE3 of the file's tokens without comments, blank lines and layout (see
    ``token_parts``); source that does not tokenize counts byte for byte."""
    parts = token_parts(source)
    if parts is None:
        return blake3_hex(b"raw\x00", source)
    return blake3_hex("\x1e".join(parts).encode("utf-8"))


def token_parts(source: bytes) -> list[str] | None:
    """The tokens that make the code, or None if it does not tokenize. Token types are
    written by name, layout tokens without their text, and an f-string as one string token
    (its source text), as Python 3.11 tokenizes it: 3.12 splits f-strings into parts, and
    the digest must not change with the Python version. (Standard library only: a test runs
    it under every Python it finds.)"""
    try:
        text = source.decode(tokenize.detect_encoding(io.BytesIO(source).readline)[0])
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return None
    # The lines as the tokenizer reads them (split at "\n" only), for f-string spans.
    lines = io.StringIO(text).readlines()
    out: list[str] = []
    fstring_depth = 0
    fstring_start = (0, 0)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            kind = tokenize.tok_name[tok.type]
            if kind in ("COMMENT", "NL", "ENCODING"):
                continue
            if kind == "FSTRING_START":
                if fstring_depth == 0:
                    fstring_start = tok.start
                fstring_depth += 1
                continue
            if kind == "FSTRING_END":
                fstring_depth -= 1
                if fstring_depth == 0:
                    out.append("STRING\x00" + _span(lines, fstring_start, tok.end))
                continue
            if fstring_depth:
                continue
            if kind in ("INDENT", "DEDENT", "NEWLINE", "ENDMARKER"):
                out.append(kind)
            else:
                out.append(f"{kind}\x00{tok.string}")
    except (tokenize.TokenError, SyntaxError):
        return None
    return out


def _span(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    (r0, c0), (r1, c1) = start, end
    if r0 == r1:
        return lines[r0 - 1][c0:c1]
    return lines[r0 - 1][c0:] + "".join(lines[r0 : r1 - 1]) + lines[r1 - 1][:c1]


def _imports(source: bytes) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """Every import statement in the file, wherever it is (a function body imports at call
    time, still in the code's key)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            found += [(0, a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(a.name for a in node.names)))
    return tuple(found)


#: the fields of a node that hold statements (an import is a statement, so the walk never
#: needs to enter an expression: ``ast.walk`` over everything cost 4x more)
_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(body: list[ast.AST]) -> Iterator[ast.AST]:
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        for name in _BODIES:
            children = getattr(node, name, None)
            if isinstance(children, list):
                stack.extend(reversed(children))


def fingerprint_imports(modules: Iterable[str], sources: Iterable[bytes] = ()) -> CodeFingerprint:
    """The fingerprint of what code without a file of its own (a function defined in a
    notebook cell) uses: the ``modules`` it names, and those the import statements in
    ``sources`` may load, counted as an import of them from a file would be (user files by
    content and what they import, installed packages by version, the standard library not
    at all)."""
    walk = _Walk()
    names = list(modules)
    for source in sources:
        for level, name, imported in _imports(source):
            if not level:  # a relative import has no package to be relative to here
                names += _import_targets("", 0, name, imported)
    for name in names:
        walk.follow(name)
    return walk.fingerprint()
