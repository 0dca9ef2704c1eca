"""Round-trip and canonical-form properties of framing, canonical JSON, run records and the
hash-trie manifest (Hypothesis), plus the cost bound of a manifest update."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from unittest import mock

import blake3
import pytest
import zstandard
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from osmo_store import tree
from osmo_store.backends.memory import MemoryObjectStore
from osmo_store.errors import CorruptObject, MalformedObject
from osmo_store.hashing import ObjectId, canonical_json
from osmo_store.maintenance import reachability
from osmo_store.objects import (
    ObjectType,
    RunRecord,
    decode_object,
    encode_object,
    frame_header,
    object_id,
    unframe,
)
from osmo_store.tree import (
    Internal,
    Leaf,
    TreeEntry,
    TreeReader,
    empty_tree,
    iter_tree,
    list_tree,
    load_node,
    tree_count,
    tree_get,
    update_tree,
    write_tree,
)

SMALL_LEAF = 4

otypes = st.sampled_from(list(ObjectType))
oids = st.binary(min_size=32, max_size=32).map(lambda b: ObjectId(b.hex()))
# Entry names: valid tree names, from a small alphabet sometimes so names share prefixes.
names = st.one_of(
    st.text(alphabet="ab.-", min_size=1, max_size=4),
    st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=10),
).filter(lambda s: s not in (".", ".."))
Entries = dict[str, tuple[ObjectType, ObjectId]]
json_texts = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
).map(lambda v: json.dumps(v).encode())
entry_maps = st.dictionaries(names, st.tuples(otypes, oids), max_size=60)


@contextmanager
def small_leaves(n: int = SMALL_LEAF) -> Iterator[None]:
    """Make tries deep with few entries. ``tree`` reads ``LEAF_MAX`` as a module global at
    call time, and so do fsck's placement checks (through the module)."""
    with mock.patch.object(tree, "LEAF_MAX", n):
        yield


def _entries(m: Entries) -> list[TreeEntry]:
    return [TreeEntry(name, t, oid) for name, (t, oid) in m.items()]


def _as_map(entries: list[TreeEntry]) -> Entries:
    return {e.name: (e.type, e.oid) for e in entries}


def _levels(store: MemoryObjectStore, root: ObjectId) -> int:
    """Number of node levels from the root down to the deepest leaf."""
    node = load_node(store, root)
    if isinstance(node, Leaf):
        return 1
    return 1 + max(_levels(store, cid) for _, cid, _ in node.children)


def _apply_in_batches(
    store: MemoryObjectStore,
    root: ObjectId,
    changes: dict[str, TreeEntry | None],
    data: st.DataObject,
) -> ObjectId:
    order = data.draw(st.permutations(sorted(changes)), label="change order")
    i = 0
    while i < len(order):
        k = data.draw(st.integers(1, len(order) - i), label="batch size")
        root = update_tree(store, root, {n: changes[n] for n in order[i : i + k]})
        i += k
    return root


# --- framing ---------------------------------------------------------------------------


def test_spec_example_id() -> None:
    assert object_id(ObjectType.BLOB, b"hello\n") == (
        "c9a94c1a9145087554f265dc47aecd93fd8fe3bbac49d768cf69c6a816bf51ce"
    )


@given(otype=otypes, content=st.binary(max_size=2048))
def test_framing_round_trip(otype: ObjectType, content: bytes) -> None:
    oid, stored = encode_object(otype, content)
    assert oid == object_id(otype, content)
    assert decode_object(oid, stored) == (otype, content)
    framed = zstandard.ZstdDecompressor().decompress(stored)
    assert framed == frame_header(otype, len(content)) + content
    assert unframe(framed) == (otype, content)


@given(otype=otypes, content=st.binary(max_size=4096))
@settings(max_examples=50)
def test_compression_level_never_changes_the_id(otype: ObjectType, content: bytes) -> None:
    oid = object_id(otype, content)
    framed = frame_header(otype, len(content)) + content
    for level in (1, 19):
        data = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(framed)
        assert decode_object(oid, data) == (otype, content)


@given(otype=otypes, a=st.binary(max_size=64), b=st.binary(max_size=64))
def test_decode_rejects_bytes_of_another_object(otype: ObjectType, a: bytes, b: bytes) -> None:
    assume(a != b)
    _, stored_b = encode_object(otype, b)
    with pytest.raises(CorruptObject):
        decode_object(object_id(otype, a), stored_b)


@pytest.mark.parametrize(
    "framed",
    [
        b"blob 01\x00x",
        b"blob +1\x00x",
        b"blob 2\x00x",
        b"blob\x001",
        b"blobx 1\x00x",
        b"blob  1\x00x",
        b"commit 1\x00x",
        b"no terminator",
    ],
)
def test_non_canonical_headers_are_corrupt(framed: bytes) -> None:
    oid = ObjectId(blake3.blake3(framed).hexdigest())
    data = zstandard.ZstdCompressor(write_content_size=True).compress(framed)
    with pytest.raises(CorruptObject):
        decode_object(oid, data)


def test_frame_without_content_size_is_corrupt() -> None:
    framed = frame_header(ObjectType.BLOB, 3) + b"abc"
    oid = object_id(ObjectType.BLOB, b"abc")
    data = zstandard.ZstdCompressor(write_content_size=False).compress(framed)
    with pytest.raises(CorruptObject):
        decode_object(oid, data)


@given(data=st.binary(max_size=300))
@example(data=b"\x00\x00\x01\x01a\x01")  # a leaf cut off inside its only entry
@example(data=b"\x01\x00\xff\xff")  # an internal node with 16 children and no bytes
def test_decode_node_rejects_garbage_cleanly(data: bytes) -> None:
    """fsck and gc catch MalformedObject; any other exception would crash them instead of
    reporting the damaged node."""
    with suppress(MalformedObject):
        tree.decode_node(data)


@given(data=st.binary(max_size=300) | json_texts)
@example(data=b"[" * 100_000)
@example(data=b'{"tree": ' * 50_000)
def test_run_record_parser_rejects_garbage_cleanly(data: bytes) -> None:
    with suppress(MalformedObject):
        RunRecord.from_content(data)


# --- canonical JSON --------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


def _reorder(value: object, rnd) -> object:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_reorder(v, rnd) for v in value]
    return value


@given(value=json_values, rnd=st.randoms(use_true_random=False))
def test_canonical_json_is_stable(value: object, rnd) -> None:
    encoded = canonical_json(value)
    assert json.loads(encoded) == value
    assert canonical_json(json.loads(encoded)) == encoded  # a fixed point
    assert canonical_json(_reorder(value, rnd)) == encoded  # key order never matters


@given(text=st.text())
def test_canonical_json_writes_non_ascii_as_itself(text: str) -> None:
    encoded = canonical_json({"k": text, " ": [text]})
    assert encoded.startswith(b'{" ":[')  # keys sorted, no whitespace added
    for ch in text:
        if ord(ch) >= 0x80:
            assert ch.encode("utf-8") in encoded


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"x": [math.nan]}])
def test_canonical_json_rejects_nan_and_infinity(bad: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(bad)


@given(
    tree_id=oids,
    parents=st.lists(oids, max_size=3, unique=True),
    meta=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_run_record_round_trip(tree_id: ObjectId, parents: list[ObjectId], meta: dict) -> None:
    record = RunRecord(tree_id, tuple(parents), meta)
    content = record.to_content()
    assert RunRecord.from_content(content) == record
    pretty = json.dumps(json.loads(content), indent=1).encode()
    if pretty != content:
        with pytest.raises(MalformedObject):
            RunRecord.from_content(pretty)


# --- manifests (hash trie) -------------------------------------------------------------

TRIE_SETTINGS = settings(max_examples=80, deadline=None)


@TRIE_SETTINGS
@given(final=entry_maps, start=entry_maps, data=st.data())
def test_manifest_is_history_independent(final: Entries, start: Entries, data) -> None:
    """Any sequence of batched updates that ends at the same entry set ends at the same id
    as building that set at once."""
    with small_leaves():
        store = MemoryObjectStore()
        fresh = write_tree(store, _entries(final))
        root = write_tree(store, _entries(start))
        changes: dict[str, TreeEntry | None] = {n: None for n in start if n not in final}
        changes.update({n: TreeEntry(n, *final[n]) for n in final})
        assert _apply_in_batches(store, root, changes, data) == fresh
        assert _apply_in_batches(store, empty_tree(store), changes, data) == fresh


@TRIE_SETTINGS
@given(final=entry_maps, extra=entry_maps, data=st.data())
def test_deletes_collapse_to_a_fresh_build(final: Entries, extra: Entries, data) -> None:
    extra = {n: v for n, v in extra.items() if n not in final}
    with small_leaves():
        store = MemoryObjectStore()
        fresh = write_tree(store, _entries(final))
        root = write_tree(store, _entries({**final, **extra}))
        assert (root == fresh) == (not extra)
        assert _apply_in_batches(store, root, dict.fromkeys(extra), data) == fresh
        everything = dict.fromkeys([*final, *extra])
        assert _apply_in_batches(store, root, everything, data) == empty_tree(store)


@TRIE_SETTINGS
@given(m=entry_maps, absent=st.lists(names, max_size=10))
def test_manifest_reads_return_exactly_its_entries(m: Entries, absent: list[str]) -> None:
    with small_leaves():
        store = MemoryObjectStore()
        root = write_tree(store, _entries(m))
        listed = list_tree(store, root)
        assert [e.name for e in listed] == sorted(m, key=lambda n: n.encode("utf-8"))
        assert _as_map(listed) == m
        iterated = list(iter_tree(store, root))
        assert len(iterated) == len(m)
        assert _as_map(iterated) == m
        assert tree_count(store, root) == len(m)
        reader = TreeReader(store, max_bytes=3000)  # a small cache: evictions happen too
        for name, (t, oid) in m.items():
            assert tree_get(store, root, name) == TreeEntry(name, t, oid)
            assert reader.get(root, name) == TreeEntry(name, t, oid)
        for name in absent:
            if name not in m:
                assert tree_get(store, root, name) is None
                assert reader.get(root, name) is None
        if len(m) > SMALL_LEAF:  # the patch took effect: this is a real multi-level trie
            assert isinstance(load_node(store, root), Internal)
        else:
            assert isinstance(load_node(store, root), Leaf)


@TRIE_SETTINGS
@given(m=entry_maps)
def test_manifest_nodes_pass_the_placement_checks(m: Entries) -> None:
    """What fsck checks (depths, buckets, counts, no undersized internal node) holds for
    every trie the writer builds. Targets are not stored, so only "missing" may show."""
    with small_leaves():
        store = MemoryObjectStore()
        root = write_tree(store, _entries(m))
        result = reachability.walk(store, [root], check=True)
        assert [p for p in result.problems if not p.startswith("missing ")] == []
        assert len(result.problems) == len({oid for _, oid in m.values()})


@given(m=entry_maps)
@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
def test_manifest_id_does_not_depend_on_entry_order(m: Entries) -> None:
    store = MemoryObjectStore()
    entries = _entries(m)
    assert write_tree(store, entries) == write_tree(store, list(reversed(entries)))


# --- cost of an update -----------------------------------------------------------------


class CountingStore(MemoryObjectStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, oid: ObjectId) -> tuple[ObjectType, bytes]:
        self.reads += 1
        return super().get(oid)


def test_updating_k_entries_writes_k_paths_not_the_manifest() -> None:
    """With the real LEAF_MAX, changing 10 entries of a 20,000-entry manifest writes and
    reads O(k * depth) nodes: no whole-manifest rewrite per flush."""
    n, k = 20_000, 10
    store = CountingStore()
    blob = object_id(ObjectType.BLOB, b"result")
    entries = {f"row-{i:05d}": TreeEntry(f"row-{i:05d}", ObjectType.BLOB, blob) for i in range(n)}
    root = write_tree(store, entries.values())
    levels = _levels(store, root)
    assert levels >= 3  # an actual multi-level trie
    nodes_before = len(list(store.iter_ids()))
    other = object_id(ObjectType.BLOB, b"other result")
    changes: dict[str, TreeEntry | None] = {}
    for i in range(4):  # modify
        changes[f"row-{i * 997:05d}"] = TreeEntry(f"row-{i * 997:05d}", ObjectType.BLOB, other)
    for i in range(3):  # add
        changes[f"new-{i}"] = TreeEntry(f"new-{i}", ObjectType.BLOB, other)
    for i in range(3):  # delete
        changes[f"row-{i * 1999 + 5:05d}"] = None
    assert len(changes) == k
    store.reads = 0
    new_root = update_tree(store, root, changes)
    written = len(list(store.iter_ids())) - nodes_before
    assert 0 < written <= k * (levels - 1) + 1
    assert store.reads <= k * (levels - 1) + 1
    assert written * 10 < nodes_before  # a small fraction of the manifest
    for name, change in changes.items():
        if change is None:
            entries.pop(name)
        else:
            entries[name] = change
    assert new_root == write_tree(MemoryObjectStore(), entries.values())
    assert tree_count(store, new_root) == n + 3 - 3


@settings(max_examples=40, deadline=None)
@given(entry_maps)
def test_lean_node_walk_agrees_with_full_decode(entries: dict) -> None:
    """gc's lean parser (tree.node_targets) must see exactly what decode_node sees."""
    from osmo_store.tree import Leaf, decode_node, node_targets

    store = MemoryObjectStore()
    with small_leaves():
        root = write_tree(store, [TreeEntry(n, t, o) for n, (t, o) in entries.items()])
        stack = [root]
        while stack:
            _, content = store.get(stack.pop())
            node = decode_node(content)
            if isinstance(node, Leaf):
                expected = [(e.oid, e.type) for e in node.entries]
            else:
                expected = [(cid, ObjectType.TREE) for _, cid, _ in node.children]
                stack.extend(cid for _, cid, _ in node.children)
            assert node_targets(content) == expected
