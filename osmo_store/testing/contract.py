"""Contract test suites every backend runs (zarr's ``StoreTests`` idea).

A new object backend subclasses :class:`StoreContract` and implements ``make_store``; a new
ref backend subclasses :class:`RefStoreContract` and implements ``make_refs``. pytest then
collects every ``test_*`` method against that backend::

    class TestMyStore(StoreContract):
        def make_store(self) -> ObjectStore:
            return MyStore(...)

The suites use only the public protocol, never a backend's internals, so a passing run means
"this backend honours the contract". pytest is needed only to run them.
"""

from __future__ import annotations

import itertools
import random
from functools import cache

import pytest
import zstandard

from ..backends.base import ObjectStore
from ..errors import (
    AmbiguousId,
    CorruptObject,
    InvalidObjectId,
    InvalidRefName,
    ObjectNotFound,
    OsmoError,
    RefConflict,
    RefNotFound,
    StoreError,
)
from ..hashing import ZERO_ID, ObjectId
from ..objects import ObjectType, RunRecord, encode_object, frame_header, object_id
from ..refs import ANY, RefStore
from ..tree import TreeEntry, encode_leaf, write_tree

#: ids built to reach outside a directory if a backend used them as paths unchecked
CRAFTED_IDS = (
    "../../etc/passwd", "ab/../cd", "ab/" + "c" * 61, "/" + "a" * 63, "a" * 63 + "/", "..", "",
    "A" * 64, "a" * 63 + "\x00", "a" * 65,
)  # fmt: skip


@cache
def colliding_blobs(prefix_len: int = 4) -> tuple[bytes, bytes]:
    """Two blob contents whose ids share their first ``prefix_len`` hex digits."""
    seen: dict[str, bytes] = {}
    for i in itertools.count():
        content = b"prefix-collision-%d" % i
        key = object_id(ObjectType.BLOB, content)[:prefix_len]
        if key in seen:
            return seen[key], content
        seen[key] = content
    raise AssertionError("unreachable")


def _sample_objects(store: ObjectStore) -> list[tuple[ObjectType, bytes]]:
    """One object of every type, with content that decodes as that type."""
    blob = b"a result line\n" * 20
    blob_id = object_id(ObjectType.BLOB, blob)
    tree = encode_leaf(0, [])  # the empty manifest
    tree_id = write_tree(store, [TreeEntry("row-0", ObjectType.BLOB, blob_id)])
    run = RunRecord(tree_id, (), {"status": "ok", "n": 1}).to_content()
    return [(ObjectType.BLOB, blob), (ObjectType.BLOB, b""), (ObjectType.TREE, tree),
            (ObjectType.RUN, run)]  # fmt: skip


class StoreContract:
    """The ObjectStore protocol, as tests. Subclasses implement ``make_store``."""

    def make_store(self) -> ObjectStore:
        """A new, empty store. Called once or more per test; every store is closed after."""
        raise NotImplementedError

    def make_read_only(self, store: ObjectStore) -> ObjectStore | None:
        """A read-only store showing the objects of ``store``, or None if the backend has
        no read-only mode (the read-only tests are then skipped)."""
        return None

    # --- plumbing ----------------------------------------------------------------------

    def setup_method(self, method: object) -> None:
        self._stores: list[ObjectStore] = []

    def teardown_method(self, method: object) -> None:
        for store in self._stores:
            store.close()

    def store(self) -> ObjectStore:
        store = self.make_store()
        self._stores.append(store)
        return store

    # --- put / get ---------------------------------------------------------------------

    def test_round_trip_every_type(self) -> None:
        store = self.store()
        for otype, content in _sample_objects(store):
            oid = store.put(otype, content)
            assert oid == object_id(otype, content)
            assert store.get(oid) == (otype, content)
            assert store.get_typed(oid, otype) == content

    def test_type_is_part_of_the_id(self) -> None:
        store = self.store()
        a = store.put(ObjectType.BLOB, b"same bytes")
        b = store.put(ObjectType.TREE, b"same bytes")
        assert a != b
        assert store.get(a)[0] is ObjectType.BLOB
        assert store.get(b)[0] is ObjectType.TREE

    def test_large_blob_round_trip(self) -> None:
        store = self.store()
        content = random.Random(7).randbytes(1 << 20)
        oid = store.put(ObjectType.BLOB, content)
        assert store.get(oid) == (ObjectType.BLOB, content)

    def test_run_record_round_trip(self) -> None:
        store = self.store()
        tree = store.put(ObjectType.TREE, encode_leaf(0, []))
        record = RunRecord(tree, (), {"model": "m", "score": 0.5})
        assert store.get_run(store.put_run(record)) == record
        with pytest.raises(StoreError):
            store.get_run(tree)  # a tree is not a run record

    def test_put_is_idempotent(self) -> None:
        store = self.store()
        first = store.put(ObjectType.BLOB, b"twice")
        second = store.put(ObjectType.BLOB, b"twice")
        assert first == second
        assert list(store.iter_ids()) == [first]
        assert store.get(first) == (ObjectType.BLOB, b"twice")

    def test_get_raw_is_a_stored_frame(self) -> None:
        store = self.store()
        raw = store.get_raw(store.put(ObjectType.BLOB, b"raw"))
        framed = frame_header(ObjectType.BLOB, 3) + b"raw"
        assert zstandard.ZstdDecompressor().decompress(raw) == framed

    # --- has / iter_ids / absent -------------------------------------------------------

    def test_has_and_iter_ids_list_each_object_once(self) -> None:
        store = self.store()
        assert list(store.iter_ids()) == []
        ids = {store.put(ObjectType.BLOB, b"blob %d" % i) for i in range(25)}
        store.put(ObjectType.BLOB, b"blob 3")
        listed = list(store.iter_ids())
        assert len(listed) == len(set(listed))
        assert set(listed) == ids
        assert all(store.has(oid) for oid in ids)
        assert not store.has(object_id(ObjectType.BLOB, b"never stored"))

    def test_get_absent_raises_object_not_found(self) -> None:
        store = self.store()
        absent = object_id(ObjectType.BLOB, b"absent")
        with pytest.raises(ObjectNotFound) as info:
            store.get(absent)
        assert info.value.oid == absent
        with pytest.raises(KeyError):
            store.get(absent)
        with pytest.raises(ObjectNotFound):
            store.get_raw(absent)

    # --- crafted ids -------------------------------------------------------------------

    @pytest.mark.parametrize("crafted", CRAFTED_IDS)
    def test_crafted_id_is_rejected(self, crafted: str) -> None:
        store = self.store()
        store.put(ObjectType.BLOB, b"something")
        for call in (store.get, store.get_raw):
            with pytest.raises(InvalidObjectId):
                call(crafted)
        with pytest.raises(InvalidObjectId):
            store.put_raw(crafted, encode_object(ObjectType.BLOB, b"x")[1])
        if store.supports_delete and not store.read_only:
            with pytest.raises(InvalidObjectId):
                store.delete(crafted)

    @pytest.mark.parametrize("crafted", CRAFTED_IDS)
    def test_has_crafted_id_is_rejected(self, crafted: str) -> None:
        # ``has`` must never look outside the store: "../../etc/passwd" exists on most
        # machines, so a backend that turned the id into a path unchecked would say True.
        store = self.store()
        with pytest.raises(InvalidObjectId):
            store.has(crafted)

    # --- delete ------------------------------------------------------------------------

    def test_delete(self) -> None:
        store = self.store()
        if not store.supports_delete:
            pytest.skip("backend does not support delete")
        keep = store.put(ObjectType.BLOB, b"keep")
        gone = store.put(ObjectType.BLOB, b"gone")
        store.delete(gone)
        assert not store.has(gone)
        with pytest.raises(ObjectNotFound):
            store.get(gone)
        assert list(store.iter_ids()) == [keep]
        assert store.get(keep) == (ObjectType.BLOB, b"keep")
        store.delete(gone)  # absent: not an error
        assert store.put(ObjectType.BLOB, b"gone") == gone  # and it can come back
        assert store.get(gone) == (ObjectType.BLOB, b"gone")

    def test_delete_unsupported_raises(self) -> None:
        store = self.store()
        if store.supports_delete:
            pytest.skip("backend supports delete")
        oid = store.put(ObjectType.BLOB, b"stays")
        with pytest.raises(StoreError):
            store.delete(oid)
        assert store.has(oid)

    # --- put_raw -----------------------------------------------------------------------

    def test_put_raw_accepts_valid_bytes_at_any_compression_level(self) -> None:
        store = self.store()
        content = b"payload " * 100
        oid = object_id(ObjectType.BLOB, content)
        framed = frame_header(ObjectType.BLOB, len(content)) + content
        data = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(framed)
        store.put_raw(oid, data)
        assert store.get(oid) == (ObjectType.BLOB, content)

    def test_put_raw_rejects_bytes_of_another_object(self) -> None:
        store = self.store()
        oid, _ = encode_object(ObjectType.BLOB, b"claimed")
        _, other = encode_object(ObjectType.BLOB, b"actual")
        for bad in (other, b"not zstd at all", other[:-1], b""):
            with pytest.raises(CorruptObject):
                store.put_raw(oid, bad)
        as_tree, _ = encode_object(ObjectType.TREE, b"actual")  # same content, other type
        with pytest.raises(CorruptObject):
            store.put_raw(as_tree, other)
        assert not store.has(oid) and not store.has(as_tree)
        assert list(store.iter_ids()) == []
        with pytest.raises(ObjectNotFound):
            store.get(oid)

    def test_put_raw_inside_bulk_verifies_too(self) -> None:
        store = self.store()
        oid, _ = encode_object(ObjectType.BLOB, b"claimed")
        _, other = encode_object(ObjectType.BLOB, b"actual")
        with pytest.raises(CorruptObject), store.bulk() as writer:
            writer.put_raw(oid, other)
        assert not store.has(oid)
        with store.bulk() as writer:
            with pytest.raises(CorruptObject):
                writer.put_raw(oid, other)
            good = writer.put(ObjectType.BLOB, b"good")
        assert not store.has(oid)
        assert list(store.iter_ids()) == [good]

    # --- bulk --------------------------------------------------------------------------

    def test_put_many(self) -> None:
        store = self.store()
        objects = [(ObjectType.BLOB, b"many %d" % i) for i in range(50)]
        objects.append(objects[0])  # a repeat inside one batch
        ids = store.put_many(objects)
        assert ids == [object_id(t, c) for t, c in objects]
        assert set(store.iter_ids()) == set(ids)
        for oid, (t, c) in zip(ids, objects, strict=True):
            assert store.get(oid) == (t, c)

    def test_bulk_objects_visible_after_block(self) -> None:
        store = self.store()
        before = store.put(ObjectType.BLOB, b"already there")
        with store.bulk() as writer:
            ids = [writer.put(ObjectType.BLOB, b"bulk %d" % i) for i in range(30)]
            again = writer.put(ObjectType.BLOB, b"already there")
            # read-your-writes inside the block
            assert writer.get(ids[5]) == (ObjectType.BLOB, b"bulk 5")
            assert writer.has(ids[7])
        assert again == before
        assert set(store.iter_ids()) == {*ids, before}
        for i, oid in enumerate(ids):
            assert store.get(oid) == (ObjectType.BLOB, b"bulk %d" % i)

    def test_bulk_exception_publishes_nothing(self) -> None:
        store = self.store()
        kept = store.put(ObjectType.BLOB, b"from before")

        class Boom(Exception):
            pass

        with pytest.raises(Boom), store.bulk() as writer:
            doomed = [writer.put(ObjectType.BLOB, b"doomed %d" % i) for i in range(10)]
            raise Boom
        assert list(store.iter_ids()) == [kept]
        assert not any(store.has(oid) for oid in doomed)
        assert store.get(kept) == (ObjectType.BLOB, b"from before")

    def test_empty_bulk_is_harmless(self) -> None:
        store = self.store()
        with store.bulk():
            pass
        assert list(store.iter_ids()) == []

    # --- prefixes ----------------------------------------------------------------------

    def test_resolve_prefix_unique(self) -> None:
        store = self.store()
        ids = [store.put(ObjectType.BLOB, b"p %d" % i) for i in range(20)]
        for oid in ids:
            for n in (12, 64):
                assert store.resolve_prefix(oid[:n]) == oid
            assert store.resolve_prefix(oid[:16].upper()) == oid

    def test_resolve_prefix_ambiguous(self) -> None:
        store = self.store()
        a, b = (store.put(ObjectType.BLOB, c) for c in colliding_blobs())
        shared = next(a[:i] for i in range(64) if a[i] != b[i])
        assert len(shared) >= 4
        with pytest.raises(AmbiguousId) as info:
            store.resolve_prefix(shared[:4])
        assert sorted(info.value.candidates) == sorted([a, b])
        assert store.resolve_prefix(a[: len(shared) + 1]) == a
        assert store.resolve_prefix(b[: len(shared) + 1]) == b

    @pytest.mark.parametrize(
        "bad", ["", "a", "abc", "ghij", "abcd/", "../../etc", "ab cd", "a" * 65]
    )
    def test_resolve_prefix_invalid(self, bad: str) -> None:
        store = self.store()
        store.put(ObjectType.BLOB, b"x")
        with pytest.raises(InvalidObjectId):
            store.resolve_prefix(bad)

    def test_resolve_prefix_absent(self) -> None:
        store = self.store()
        oid = store.put(ObjectType.BLOB, b"present")
        absent = object_id(ObjectType.BLOB, b"absent")
        other = next(c for c in "0123456789abcdef" if c != oid[0])
        with pytest.raises(ObjectNotFound):
            store.resolve_prefix(other * 8)
        with pytest.raises(ObjectNotFound):
            store.resolve_prefix(absent)

    # --- read-only ---------------------------------------------------------------------

    def test_read_only(self) -> None:
        store = self.store()
        oid = store.put(ObjectType.BLOB, b"readable")
        ro = self.make_read_only(store)
        if ro is None:
            pytest.skip("backend has no read-only mode")
        self._stores.append(ro)
        assert ro.read_only
        assert ro.get(oid) == (ObjectType.BLOB, b"readable")
        assert ro.has(oid)
        assert ro.resolve_prefix(oid[:10]) == oid
        new_id, new_data = encode_object(ObjectType.BLOB, b"new")
        attempts = [
            lambda: ro.put(ObjectType.BLOB, b"new"),
            lambda: ro.put_raw(new_id, new_data),
            lambda: ro.put_many([(ObjectType.BLOB, b"new")]),
            lambda: ro.delete(oid),
        ]
        for attempt in attempts:
            with pytest.raises(StoreError):
                attempt()
        with pytest.raises(StoreError), ro.bulk() as writer:
            writer.put(ObjectType.BLOB, b"new")
        assert list(ro.iter_ids()) == [oid]
        assert list(store.iter_ids()) == [oid]
        assert ro.get(oid) == (ObjectType.BLOB, b"readable")


def _oid(n: int) -> ObjectId:
    return object_id(ObjectType.BLOB, b"ref target %d" % n)


A, B, C = _oid(1), _oid(2), _oid(3)

BAD_REF_NAMES = (
    "", "main", "heads/main", "/refs/abs", "/etc/passwd", "refs/", "refs/x/", "refs/a/../b",
    "refs/..", "refs/../escape", "refs/a/./b", "refs/.hidden", "refs/a.lock", "refs/a.lock/b",
    "refs/a b", "refs/tab\tname", "refs/new\nline", "refs/nul\x00", "refs/bell\x07",
    "refs/del\x7f", "refs/a//b", "refs/a~1", "refs/a^2", "refs/a:b", "refs/a?", "refs/a*",
    "refs/a[b", "refs/a\\b", "refs/a@{1}", "refs/dot.", "refs/lone\udcff", "refs/\ud800x",
)  # fmt: skip


class RefStoreContract:
    """The RefStore protocol, as tests. Subclasses implement ``make_refs``."""

    def make_refs(self) -> RefStore:
        """A new, empty ref store."""
        raise NotImplementedError

    def test_create_with_expected_none(self) -> None:
        refs = self.make_refs()
        assert refs.read("refs/evals/one") is None
        refs.update("refs/evals/one", A, expected=None)
        assert refs.read("refs/evals/one") == A
        with pytest.raises(RefConflict) as info:
            refs.update("refs/evals/one", B, expected=None)
        assert (info.value.name, info.value.expected, info.value.actual) == (
            "refs/evals/one", None, A
        )  # fmt: skip
        assert refs.read("refs/evals/one") == A

    def test_compare_and_swap(self) -> None:
        refs = self.make_refs()
        refs.update("refs/r", A, expected=None)
        refs.update("refs/r", B, expected=A)
        assert refs.read("refs/r") == B
        log_before = refs.reflog("refs/r")
        with pytest.raises(RefConflict) as info:
            refs.update("refs/r", C, expected=A)
        assert (info.value.expected, info.value.actual) == (A, B)
        assert refs.read("refs/r") == B
        assert refs.reflog("refs/r") == log_before  # a failed swap leaves no trace
        with pytest.raises(RefConflict) as info:
            refs.update("refs/absent", C, expected=A)
        assert (info.value.expected, info.value.actual) == (A, None)
        assert refs.read("refs/absent") is None

    def test_update_any(self) -> None:
        refs = self.make_refs()
        refs.update("refs/r", A)
        refs.update("refs/r", B, expected=ANY)
        refs.update("refs/r", B)
        assert refs.read("refs/r") == B

    @pytest.mark.parametrize("target", [ZERO_ID, "", "abc", "A" * 64, "../../etc/passwd"])
    def test_update_rejects_invalid_target(self, target: str) -> None:
        refs = self.make_refs()
        refs.update("refs/r", A)
        with pytest.raises(OsmoError):
            refs.update("refs/r", target)  # type: ignore[arg-type]
        with pytest.raises(OsmoError):
            refs.update("refs/new", target)  # type: ignore[arg-type]
        assert refs.read("refs/r") == A
        assert refs.read("refs/new") is None

    def test_delete(self) -> None:
        refs = self.make_refs()
        refs.update("refs/a", A)
        refs.update("refs/b", B)
        with pytest.raises(RefConflict):
            refs.delete("refs/a", expected=B)
        assert refs.read("refs/a") == A
        refs.delete("refs/a", expected=A)
        assert refs.read("refs/a") is None
        assert refs.list() == {"refs/b": B}
        with pytest.raises(RefNotFound):
            refs.delete("refs/a")
        with pytest.raises(KeyError):
            refs.delete("refs/never")
        refs.delete("refs/b")
        assert refs.list() == {}

    def test_list_with_prefix_sorted(self) -> None:
        refs = self.make_refs()
        names = ["refs/evals/zeta", "refs/tags/v1", "refs/evals/alpha", "refs/evals/m/x",
                 "refs/evalsx", "refs/tags/a"]  # fmt: skip
        for i, name in enumerate(names):
            refs.update(name, _oid(i))
        everything = refs.list()
        assert list(everything) == sorted(names)
        assert everything == {name: _oid(i) for i, name in enumerate(names)}
        evals = refs.list("refs/evals/")
        assert list(evals) == ["refs/evals/alpha", "refs/evals/m/x", "refs/evals/zeta"]
        assert refs.list("refs/evals") == {k: v for k, v in everything.items() if "evals" in k}
        assert refs.list("refs/nothing/") == {}

    def test_reflog_records_every_change(self) -> None:
        refs = self.make_refs()
        refs.update("refs/r", A, expected=None, who="alice@box", message="create")
        refs.update("refs/r", B, expected=A, who="bob@box", message="move")
        refs.delete("refs/r", who="carol@box", message="drop it")
        log = refs.reflog("refs/r")
        assert [(e.old, e.new, e.who, e.message) for e in log] == [
            (None, A, "alice@box", "create"),
            (A, B, "bob@box", "move"),
            (B, None, "carol@box", "drop it"),
        ]
        assert [e.time_ns for e in log] == sorted(e.time_ns for e in log)
        assert "refs/r" in refs.reflog_names()
        assert refs.read("refs/r") is None  # deleted, but its history stays
        assert refs.reflog("refs/never") == []

    def test_reflog_fields_are_normalised_alike(self) -> None:
        # One reflog line per change: whitespace in ``who`` becomes "_", newlines in the
        # message become spaces (objects_spec.md, section 6), whatever the backend.
        refs = self.make_refs()
        refs.update("refs/r", A, who="ada lovelace@box", message="first line\nsecond line")
        (entry,) = refs.reflog("refs/r")
        assert (entry.who, entry.message) == ("ada_lovelace@box", "first line second line")

    def test_reflog_who_defaults(self) -> None:
        refs = self.make_refs()
        refs.update("refs/r", A)
        (entry,) = refs.reflog("refs/r")
        assert entry.who
        assert entry.message == ""

    @pytest.mark.parametrize("name", BAD_REF_NAMES)
    def test_invalid_names_rejected(self, name: str) -> None:
        refs = self.make_refs()
        refs.update("refs/ok", A)
        with pytest.raises(InvalidRefName):
            refs.update(name, A)
        with pytest.raises(InvalidRefName):
            refs.update(name, A, expected=None)
        with pytest.raises(InvalidRefName):
            refs.delete(name)
        with pytest.raises(InvalidRefName):
            refs.read(name)
        with pytest.raises(InvalidRefName):
            refs.reflog(name)
        assert refs.list() == {"refs/ok": A}
        assert refs.reflog_names() == ["refs/ok"]

    @pytest.mark.parametrize("name", ["refs/../../../escape", "refs/x/", "main", "/abs"])
    def test_expire_reflog_rejects_invalid_names(self, name: str) -> None:
        refs = self.make_refs()
        refs.update("refs/ok", A)
        with pytest.raises(InvalidRefName):
            refs.expire_reflog(name, 0)
        assert refs.reflog_names() == ["refs/ok"]

    @pytest.mark.parametrize(
        "name", ["refs/evals/gpt-4o_2024.08", "refs/a/b/c/d", "refs/évals/ü", "refs/x-1.2"]
    )
    def test_unusual_valid_names(self, name: str) -> None:
        refs = self.make_refs()
        refs.update(name, A)
        assert refs.read(name) == A
        assert refs.list() == {name: A}
        refs.delete(name, expected=A)
        assert refs.list() == {}

    def test_overlong_name_is_stored_or_rejected_cleanly(self) -> None:
        # Either works, or fails with the library's own error (a one-line message).
        refs = self.make_refs()
        name = "refs/" + "n" * 300
        try:
            refs.update(name, A)
        except InvalidRefName:
            assert refs.list() == {}
        else:
            assert refs.read(name) == A

    def test_name_cannot_be_ref_and_folder(self) -> None:
        refs = self.make_refs()
        refs.update("refs/a", A)
        with pytest.raises(InvalidRefName):
            refs.update("refs/a/b", B)
        refs.update("refs/c/d", C)
        with pytest.raises(InvalidRefName):
            refs.update("refs/c", A)
        assert refs.list() == {"refs/a": A, "refs/c/d": C}

    def test_deleted_ref_frees_its_name_as_a_folder(self) -> None:
        refs = self.make_refs()
        refs.update("refs/x/y", A)
        refs.delete("refs/x/y")
        refs.update("refs/x", B)
        assert refs.list() == {"refs/x": B}
        refs.delete("refs/x")
        refs.update("refs/x/y", C)
        assert refs.list() == {"refs/x/y": C}

    def test_expire_reflog(self) -> None:
        refs = self.make_refs()
        for oid in (A, B, C):
            refs.update("refs/r", oid)
        refs.update("refs/other", A)
        log = refs.reflog("refs/r")
        cutoff = log[-1].time_ns
        older = [e for e in log if e.time_ns < cutoff]
        assert older, "entries were written at distinct times"
        assert refs.expire_reflog("refs/r", 0) == 0
        assert refs.expire_reflog("refs/r", cutoff) == len(older)
        assert refs.reflog("refs/r") == log[len(older) :]
        assert refs.read("refs/r") == C  # the ref itself never moves
        assert len(refs.reflog("refs/other")) == 1
        assert refs.expire_reflog("refs/r", cutoff) == 0

    def test_expire_reflog_of_deleted_ref_can_drop_everything(self) -> None:
        refs = self.make_refs()
        refs.update("refs/r", A)
        refs.delete("refs/r")
        dropped = refs.expire_reflog("refs/r", refs.reflog("refs/r")[-1].time_ns + 1)
        assert dropped == 2
        assert refs.reflog("refs/r") == []
        assert refs.read("refs/r") is None

    def test_expire_reflog_of_absent_ref(self) -> None:
        refs = self.make_refs()
        refs.update("refs/ok", A)
        assert refs.expire_reflog("refs/never", 0) == 0
        assert refs.expire_reflog("refs/never", 2**62) == 0
        assert refs.reflog_names() == ["refs/ok"]
