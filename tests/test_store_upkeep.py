"""Reflog line safety, lease release for long-lived writers, and pack consolidation."""

from __future__ import annotations

from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.backends.compaction import MAX_PACKS
from osmo_store.backends.memory import MemoryRefStore
from osmo_store.maintenance.gc import gc


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_reflog_message_cannot_forge_entries(repo: Repository, backend: str) -> None:
    refs = repo.refs if backend == "local" else MemoryRefStore()
    oid = repo.objects.put(ObjectType.BLOB, b"x")
    forged = "0" * 64 + " " + "f" * 64 + " 1 mallory\tforged"
    for sep in ("\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x1c"):
        refs.update("refs/x", oid, message=f"hi{sep}{forged}", who=f"eve{sep}{forged}")
    log = refs.reflog("refs/x")
    assert len(log) == 7
    assert all(e.new == oid and "f" * 64 not in (e.old or "") for e in log)


def test_idle_lease_is_released_and_taken_again(repo: Repository, store_path: Path) -> None:
    repo.objects.put(ObjectType.BLOB, b"first")
    leases = store_path / "leases"
    assert len(list(leases.glob("lease-*"))) == 1
    assert not repo.objects.release_idle_lease(3600)  # used just now: kept
    assert repo.objects.release_idle_lease(0)
    assert list(leases.glob("lease-*")) == []
    # gc is no longer held back by this process: an unreachable object written before goes
    junk = repo.objects.put(ObjectType.BLOB, b"junk")
    repo.objects.release_idle_lease(0)
    assert gc(repo, prune="now").objects_removed >= 1
    assert not repo.objects.has(junk)
    repo.objects.put(ObjectType.BLOB, b"again")
    assert len(list(leases.glob("lease-*"))) == 1


def test_many_small_packs_are_folded(repo: Repository) -> None:
    """Packs written by other store objects (other processes: pushes, pulls, evals) pile up
    past the bound; the next bulk write's ``after_bulk_write`` folds the smaller half."""
    ids = []
    for i in range(MAX_PACKS + 8):
        with Repository.open(repo.path) as other, other.objects.bulk() as w:
            ids.append(w.put(ObjectType.BLOB, f"object {i}".encode()))
    repo.objects.refresh()
    assert len(repo.objects.packs()) == MAX_PACKS + 8
    # A writer between two commits (an eval recording) is not held up by the bound ...
    repo.objects.after_bulk_write(more_coming=True)
    assert len(repo.objects.packs()) == MAX_PACKS + 8
    # ... which is kept once it is done.
    repo.objects.after_bulk_write()
    assert len(repo.objects.packs()) <= MAX_PACKS
    for i, oid in enumerate(ids):
        assert repo.objects.get(oid) == (ObjectType.BLOB, f"object {i}".encode())
