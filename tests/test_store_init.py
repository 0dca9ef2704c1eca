"""Creating the default store on first use must be safe when many processes start at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from osmo_store import Repository, init_store


def test_concurrent_first_use_creates_one_store(tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "store"
    code = (
        "import sys; from osmo_store import Repository, ObjectType\n"
        "with Repository.open(sys.argv[1]) as r:\n"
        "    r.objects.put(ObjectType.BLOB, sys.argv[2].encode())\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(target), str(i)], stderr=subprocess.PIPE)
        for i in range(8)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    with Repository.open(target) as repo:
        assert len(list(repo.objects.iter_ids())) == 8
    assert sorted(p.name for p in target.parent.iterdir()) == ["store"]  # no leftovers


def test_existing_empty_directory_becomes_a_store(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    path, created = init_store(tmp_path / "empty")
    assert created and (path / "osmo.json").is_file() and (path / "objects").is_dir()
    assert init_store(path) == (path, False)
