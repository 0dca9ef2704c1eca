"""A thread that finds nothing in the packs it has loaded must look again at the pack
folder, whatever another thread of the same process has loaded meanwhile.

One store object serves every request thread of ``osmo serve``. When a fold moved an
object from its loose file into a new pack, the thread asking for it could miss it in the
packs it had (stale), miss the loose file (folded), and then find that its reload changed
nothing, because another thread had loaded the new pack in between: it gave up, and a
ref update naming a run just pushed was refused with "object not found"
(test_http.py::test_concurrent_pushes_and_ref_updates failed so about one run in four)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.backends.compaction import fold_loose
from osmo_store.backends.local import LocalObjectStore


def _fold_behind_its_back(store: LocalObjectStore, other: LocalObjectStore, monkeypatch) -> None:
    """The first look of ``store`` at its loaded packs misses (they are stale); right
    after it, another process folds the loose objects into a pack and another thread of
    this process loads that pack."""
    looked = store._pack_with
    done = []

    def stale_then_folded(oid):
        found = looked(oid)
        if not done:
            done.append(True)
            assert found is None
            assert fold_loose(other, at_least=1)
            store.reload_packs()  # what another request thread did meanwhile
        return found

    monkeypatch.setattr(store, "_pack_with", stale_then_folded)


@pytest.mark.parametrize("ask", ["protect", "get", "has"])
def test_an_object_folded_while_looking_is_found(tmp_path: Path, monkeypatch, ask: str) -> None:
    with Repository.open(tmp_path / "store") as repo, Repository.open(tmp_path / "store") as b:
        store, other = repo.objects, b.objects
        assert isinstance(store, LocalObjectStore) and isinstance(other, LocalObjectStore)
        oid = store.put(ObjectType.BLOB, b"a run just pushed")
        assert not store.packs()  # loose: a single write
        _fold_behind_its_back(store, other, monkeypatch)
        if ask == "protect":
            assert store.protect(oid)
        elif ask == "get":
            assert store.get(oid) == (ObjectType.BLOB, b"a run just pushed")
        else:
            assert store.has(oid)
