"""The shipped store and ref contracts against every in-tree backend, plus what only the
local on-disk backend promises (compression on disk, freshening, packs, atomic publish)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import zstandard

from osmo_store import ObjectType, Repository
from osmo_store.backends.layout import StoreLayout
from osmo_store.backends.local import LocalObjectStore
from osmo_store.backends.memory import MemoryObjectStore, MemoryRefStore
from osmo_store.backends.pack import PackWriter
from osmo_store.errors import InvalidRefName, ObjectNotFound, StoreError
from osmo_store.hashing import ObjectId
from osmo_store.objects import frame_header, object_id
from osmo_store.refs import RefStore
from osmo_store.repo import STORE_FILE, default_store_path, init_store

# The contract's asserts live in the library; let pytest explain their failures too.
pytest.register_assert_rewrite("osmo_store.testing.contract")
from osmo_store.testing.contract import RefStoreContract, StoreContract  # noqa: E402

DAY = 24 * 3600


class TestMemoryStore(StoreContract):
    def make_store(self) -> MemoryObjectStore:
        return MemoryObjectStore()


class _LocalFactory:
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.count = 0

    def _new_path(self) -> Path:
        self.count += 1
        return self.tmp_path / f"store{self.count}"


class TestLocalStore(_LocalFactory, StoreContract):
    def make_store(self) -> LocalObjectStore:
        objects = Repository.open(self._new_path()).objects
        assert isinstance(objects, LocalObjectStore)
        return objects

    def make_read_only(self, store: LocalObjectStore) -> LocalObjectStore:  # type: ignore[override]
        return LocalObjectStore(store.layout, read_only=True)


class _PackEveryPut(LocalObjectStore):
    """The local backend with every new object written as a one-object pack, so the
    contract exercises the pack read, list, prefix and delete paths too."""

    def _put_raw(self, oid: ObjectId, data: bytes) -> None:
        if self._freshen(oid):
            return
        writer = PackWriter(self.pack_dir)
        writer.add(oid, data)
        writer.finish()
        self.reload_packs()


class TestLocalPackedStore(_LocalFactory, StoreContract):
    def make_store(self) -> LocalObjectStore:
        path, _ = init_store(self._new_path())
        return _PackEveryPut(StoreLayout(path))

    def make_read_only(self, store: LocalObjectStore) -> LocalObjectStore:  # type: ignore[override]
        return LocalObjectStore(store.layout, read_only=True)


class TestMemoryRefs(RefStoreContract):
    def make_refs(self) -> RefStore:
        return MemoryRefStore()


class TestLocalRefs(_LocalFactory, RefStoreContract):
    def make_refs(self) -> RefStore:
        return Repository.open(self._new_path()).refs


# --- local backend only ----------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _temp_files(root: Path) -> list[Path]:
    return [p for p in _files(root) if p.name.startswith(("tmp-", "gc-", "."))]


def test_loose_object_is_zstd_compressed_on_disk(repo: Repository) -> None:
    content = b'{"row": 1, "answer": "the same words again"}\n' * 200
    oid = repo.objects.put(ObjectType.BLOB, content)
    path = repo.objects.loose_path(oid)
    assert path == repo.path / "objects" / oid[:2] / oid[2:]
    stored = path.read_bytes()
    assert stored[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    assert len(stored) < len(content) // 10
    framed = frame_header(ObjectType.BLOB, len(content)) + content
    assert zstandard.frame_content_size(stored) == len(framed)
    assert zstandard.ZstdDecompressor().decompress(stored) == framed


def test_put_again_freshens_loose_file(repo: Repository) -> None:
    oid = repo.objects.put(ObjectType.BLOB, b"re-used result")
    path = repo.objects.loose_path(oid)
    old = time.time() - 3 * DAY
    os.utime(path, (old, old))
    assert repo.objects.put(ObjectType.BLOB, b"re-used result") == oid
    assert path.stat().st_mtime > old + 2 * DAY
    assert repo.objects.get(oid) == (ObjectType.BLOB, b"re-used result")


def test_put_again_freshens_pack_holding_the_object(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        oid = w.put(ObjectType.BLOB, b"packed and re-used")
    (pack,) = repo.objects.packs()
    old = time.time() - 3 * DAY
    os.utime(pack.pack_path, (old, old))
    assert repo.objects.put(ObjectType.BLOB, b"packed and re-used") == oid
    assert pack.pack_path.stat().st_mtime > old + 2 * DAY
    assert not repo.objects.loose_path(oid).exists()  # freshened, not copied


def test_writes_leave_no_temp_files(repo: Repository) -> None:
    objects = repo.objects
    for i in range(40):
        objects.put(ObjectType.BLOB, b"result %d" % i)
    objects.put(ObjectType.BLOB, b"result 3")
    with objects.bulk() as w:
        ids = [w.put(ObjectType.BLOB, b"packed %d" % i) for i in range(10)]
    objects.delete(ids[0])  # rewrites the pack
    objects.flush()
    assert _temp_files(repo.path / "objects") == []
    assert len(list(objects.iter_ids())) == 40 + 9


def test_bulk_publishes_one_pack_readable_by_others(repo: Repository, store_path: Path) -> None:
    other = Repository.open(store_path)  # opened before the pack exists
    try:
        with repo.objects.bulk() as w:
            ids = [w.put(ObjectType.BLOB, b"row %d" % i) for i in range(100)]
        names = sorted(p.suffix for p in (store_path / "objects" / "pack").iterdir())
        assert names == [".idx", ".pack"]
        assert not any(repo.objects.loose_path(oid).exists() for oid in ids)
        for i, oid in enumerate(ids):
            assert repo.objects.get(oid) == (ObjectType.BLOB, b"row %d" % i)
            assert other.objects.get(oid) == (ObjectType.BLOB, b"row %d" % i)
        assert set(other.objects.iter_ids()) == set(ids)
        assert other.objects.resolve_prefix(ids[0][:12]) == ids[0]
    finally:
        other.close()


def test_delete_from_pack_keeps_pack_mates(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        ids = [w.put(ObjectType.BLOB, b"mate %d" % i) for i in range(5)]
    repo.objects.delete(ids[2])
    assert not repo.objects.has(ids[2])
    assert set(repo.objects.iter_ids()) == set(ids) - {ids[2]}
    for i in (0, 1, 3, 4):
        assert repo.objects.get(ids[i]) == (ObjectType.BLOB, b"mate %d" % i)
    assert len(repo.objects.packs()) == 1


def test_object_both_loose_and_packed_is_listed_once(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        oid = w.put(ObjectType.BLOB, b"in two places")
    loose = repo.objects.loose_path(oid)
    loose.parent.mkdir(parents=True, exist_ok=True)
    loose.write_bytes(repo.objects.get_raw(oid))
    assert list(repo.objects.iter_ids()) == [oid]
    assert repo.objects.resolve_prefix(oid[:8]) == oid


def test_update_ref_refuses_missing_object(repo: Repository) -> None:
    missing = object_id(ObjectType.BLOB, b"never written")
    with pytest.raises(ObjectNotFound):
        repo.update_ref("refs/evals/x", missing)
    assert repo.refs.read("refs/evals/x") is None
    assert repo.refs.reflog("refs/evals/x") == []
    present = repo.objects.put(ObjectType.BLOB, b"written")
    repo.update_ref("refs/evals/x", present, expected=None)
    assert repo.resolve("evals/x") == present


def test_default_store_path_honours_osmo_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OSMO_STORE", str(tmp_path / "chosen"))
    assert default_store_path() == tmp_path / "chosen"
    with Repository.open() as repo:
        assert repo.path == (tmp_path / "chosen").absolute()
    assert (tmp_path / "chosen" / STORE_FILE).is_file()
    assert not (tmp_path / "xdg-cache" / "osmo").exists()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OSMO_STORE", "~/elsewhere")
    assert default_store_path() == tmp_path / "home" / "elsewhere"


@pytest.mark.skipif(os.name == "nt" or os.uname().sysname == "Darwin", reason="XDG platforms")
def test_default_store_path_honours_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_store_path() == tmp_path / "cache" / "osmo"
    with Repository.open() as repo:
        assert repo.path == tmp_path / "cache" / "osmo"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert default_store_path() == tmp_path / "home" / ".cache" / "osmo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_store_path() == tmp_path / "home" / ".cache" / "osmo"


def test_init_refuses_non_empty_non_store_directory(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(StoreError) as info:
        init_store(target)
    assert info.value.hint
    with pytest.raises(StoreError):
        Repository.open(target)
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "mine"


def test_init_is_idempotent_and_refuses_a_file(tmp_path: Path) -> None:
    path, created = init_store(tmp_path / "s")
    assert created
    with Repository.open(path) as repo:
        oid = repo.objects.put(ObjectType.BLOB, b"kept")
    assert init_store(tmp_path / "s") == (path, False)
    with Repository.open(path) as repo:
        assert repo.objects.get(oid) == (ObjectType.BLOB, b"kept")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        init_store(tmp_path / "file")


def test_open_without_create_and_wrong_version(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        Repository.open(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()
    path, _ = init_store(tmp_path / "s")
    (path / STORE_FILE).write_text('{"format": "osmo-store", "version": 99}')
    with pytest.raises(StoreError) as info:
        Repository.open(path)
    assert "99" in str(info.value)


def test_expire_reflog_with_crafted_name_touches_nothing_outside(tmp_path: Path) -> None:
    store = tmp_path / "deep" / "store"
    with Repository.open(store) as repo:
        before = _files(tmp_path)
        with pytest.raises(InvalidRefName):
            repo.refs.expire_reflog("refs/../../../escape", 0)
        assert _files(tmp_path) == before
