"""Code fingerprints: content only, comments and layout ignored, the same under every Python
version, and a cache by size and mtime that never serves a stale digest."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osmo_store.eval import fingerprint
from osmo_store.eval.fingerprint import fingerprint_code, token_digest, token_parts

SOURCE = '''\
import os
from . import rel

def f(x, *, y=2):
    """Doc."""
    name = f"{x!r:>{y}} and {'nested ' f'{x}'} {x:{y}.{y}f}"
    multi = f"""
    {x
     + y}
    """
    return {k: v for k, v in os.environ.items() if k.startswith(name)} or multi
'''


def test_comments_blank_lines_and_layout_do_not_count() -> None:
    base = token_digest(SOURCE.encode())
    relaid = SOURCE.replace(
        "def f(x, *, y=2):", "# a comment\n\n\ndef f(x,  *,\n      y=2):  # why"
    )
    assert token_digest(relaid.encode()) == base
    assert token_digest(SOURCE.replace("y=2", "y=3").encode()) != base
    assert token_digest(SOURCE.replace('"""Doc."""', '"""Docs."""').encode()) != base
    # Inside an f-string, text is code: not layout.
    assert token_digest(SOURCE.replace("and {'nested", "and  {'nested").encode()) != base


def test_source_that_does_not_tokenize_counts_byte_for_byte() -> None:
    broken = b"def f(:\n    '''unterminated\n"
    assert token_parts(broken) is None
    assert token_digest(broken) != token_digest(broken + b" ")


def _other_pythons() -> list[str]:
    """Python 3.10+ interpreters on this machine other than the one running the tests (on
    PATH, or installed by pyenv)."""
    candidates = [shutil.which(f"python3.{v}") for v in range(10, 15)]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.*/bin/python3"))
    found: dict[str, str] = {}
    for exe in filter(None, candidates):
        done = subprocess.run(
            [exe, "-c", "import sys; print(sys.version_info[:2] >= (3, 10), sys.version[:5])"],
            capture_output=True,
            text=True,
        )
        ok, _, version = done.stdout.strip().partition(" ")
        if done.returncode == 0 and ok == "True" and version != sys.version[:5]:
            found.setdefault(version, exe)
    return list(found.values())


@pytest.mark.skipif(not _other_pythons(), reason="no other Python version installed")
@pytest.mark.parametrize("python", _other_pythons())
def test_the_token_stream_is_the_same_under_other_python_versions(python: str) -> None:
    program = "\n".join(
        [
            "import io, json, sys, tokenize",
            inspect.getsource(fingerprint._span),
            inspect.getsource(token_parts),
            "print(json.dumps(token_parts(sys.stdin.buffer.read())))",
        ]
    )
    done = subprocess.run(
        [python, "-c", program], input=SOURCE.encode(), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == token_parts(SOURCE.encode())


def _write(path: Path, text: str, *, age: float = 3600.0) -> None:
    path.write_text(text)
    past = time.time() - age
    os.utime(path, (past, past))


def test_a_cached_file_is_read_again_when_its_size_or_mtime_changes(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    _write(f, "X = 1\n")
    first = fingerprint_code([("m", str(f))]).digest
    assert fingerprint_code([("m", str(f))]).digest == first  # served from the cache
    _write(f, "X = 2\n", age=1800.0)  # same size, another mtime
    assert fingerprint_code([("m", str(f))]).digest != first


def test_a_file_modified_just_now_is_never_trusted_from_the_cache(tmp_path: Path) -> None:
    # Same size and, on a coarse clock, the same mtime: only reading it again tells.
    f = tmp_path / "m.py"
    f.write_text("X = 1\n")
    first = fingerprint_code([("m", str(f))]).digest
    st = f.stat()
    f.write_text("X = 2\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint_code([("m", str(f))]).digest != first


def test_user_imports_are_followed_and_the_rest_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(
        tmp_path / "top.py", "import json\nimport mid\nimport blake3\n\ndef f():\n    import late\n"
    )
    _write(tmp_path / "mid.py", "from pkg import sub\n")
    (tmp_path / "pkg").mkdir()
    _write(tmp_path / "pkg" / "__init__.py", "")
    _write(tmp_path / "pkg" / "sub.py", "from . import leaf\n")
    _write(tmp_path / "pkg" / "leaf.py", "Y = 1\n")
    _write(tmp_path / "late.py", "Z = 1\n")
    code = fingerprint_code([("top", str(tmp_path / "top.py"))])
    assert {f.module for f in code.files} == {"top", "mid", "pkg", "pkg.sub", "pkg.leaf", "late"}
    assert dict(code.packages) == {
        "blake3": __import__("importlib.metadata").metadata.version("blake3")
    }
    # Content only: the same files elsewhere give the same fingerprint.
    other = tmp_path / "elsewhere"
    shutil.copytree(tmp_path, other, ignore=shutil.ignore_patterns("elsewhere"))
    for name in list(sys.modules):
        if name in {"mid", "pkg", "pkg.sub", "pkg.leaf", "late"}:
            del sys.modules[name]
    monkeypatch.syspath_prepend(str(other))
    moved = fingerprint_code([("top", str(other / "top.py"))])
    assert {f.path for f in moved.files} != {f.path for f in code.files}
    assert moved.digest == code.digest
