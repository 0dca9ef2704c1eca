"""Layer 2: the tree (manifest) object, a canonical hash trie.

A manifest maps names to (type, id). To scale to millions of entries with an update of k
entries writing O(k log n) objects, a manifest is stored as a trie over the BLAKE3 hash of
each name, one hex digit (nibble) per level:

* a node whose bucket holds at most ``LEAF_MAX`` entries is a *leaf*: the entries, sorted
  by name;
* a bigger bucket is an *internal* node: up to 16 children, one per next nibble, each with
  the entry count below it.

The shape depends only on the set of entries, never on the order of updates, so equal
manifests have equal ids (and merge/sync can compare subtrees by id). Byte layout: see
objects_spec.md, "tree".
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple, Protocol

import blake3

from .errors import MalformedObject
from .hashing import OID_RAW_LEN, ObjectId, oid_from_raw, oid_to_raw
from .objects import ObjectType, RunRecord, object_id

LEAF_MAX = 256
MAX_NAME_BYTES = 4096
_KIND_LEAF = 0
_KIND_INTERNAL = 1
_TYPE_CODE = {ObjectType.BLOB: 1, ObjectType.TREE: 2, ObjectType.RUN: 3}
_CODE_TYPE = {v: k for k, v in _TYPE_CODE.items()}
_TYPE_BYTE = {k: bytes((v,)) for k, v in _TYPE_CODE.items()}


class NodeStore(Protocol):
    def get(self, oid: ObjectId) -> tuple[ObjectType, bytes]: ...
    def put(self, otype: ObjectType, content: bytes) -> ObjectId: ...


class TreeEntry(NamedTuple):
    name: str
    type: ObjectType
    oid: ObjectId


def validate_name(name: str) -> bytes:
    """Entry names follow git's rules for path components."""
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_NAME_BYTES:
        raise MalformedObject(f"tree entry name must be 1..{MAX_NAME_BYTES} bytes")
    if b"/" in raw or b"\x00" in raw or name in (".", ".."):
        raise MalformedObject(f"invalid tree entry name {name!r}")
    return raw


def name_hash(raw_name: bytes) -> bytes:
    return blake3.blake3(raw_name).digest()


def _nibble(h: bytes, depth: int) -> int:
    b = h[depth >> 1]
    return (b >> 4) if depth % 2 == 0 else (b & 0x0F)


# --- varints (unsigned LEB128) ---------------------------------------------------------


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf):
            raise MalformedObject("tree node truncated in a varint")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and shift:
                raise MalformedObject("tree node has a non-minimal varint")
            return n, pos
        shift += 7
        if shift > 63:
            raise MalformedObject("tree node varint too long")


# --- node encoding ---------------------------------------------------------------------

# A leaf item while building: (name hash, raw name, type, id)
_Item = tuple[bytes, bytes, ObjectType, ObjectId]


class Leaf(NamedTuple):
    depth: int
    entries: tuple[TreeEntry, ...]


class Internal(NamedTuple):
    depth: int
    children: tuple[tuple[int, ObjectId, int], ...]  # (nibble, child id, entry count)

    @property
    def count(self) -> int:
        return sum(c for _, _, c in self.children)


def encode_leaf(depth: int, items: list[_Item]) -> bytes:
    return _leaf_bytes(depth, {raw: _record(raw, otype, oid) for _, raw, otype, oid in items})


def _record(raw: bytes, otype: ObjectType, oid: ObjectId) -> bytes:
    """One leaf entry as stored: name length, name, type code, raw id."""
    n = len(raw)
    if n < 0x80:  # names are short: a one-byte varint
        return b"".join((bytes((n,)), raw, _TYPE_BYTE[otype], oid_to_raw(oid)))
    out = bytearray()
    _put_varint(out, n)
    return b"".join((out, raw, _TYPE_BYTE[otype], oid_to_raw(oid)))


def _leaf_bytes(depth: int, records: Mapping[bytes, bytes]) -> bytes:
    """A leaf from its entry records keyed by raw name (sorted here)."""
    out = bytearray((_KIND_LEAF,))
    _put_varint(out, depth)
    _put_varint(out, len(records))
    out += b"".join([records[raw] for raw in sorted(records)])
    return bytes(out)


def _leaf_records(content: bytes) -> dict[bytes, bytes]:
    """A leaf's entry records keyed by raw name, sliced out without decoding them: the
    lean parse used to update nodes read back (hash-verified) from the store."""
    _, pos = _get_varint(content, 1)
    n, pos = _get_varint(content, pos)
    if n > LEAF_MAX:
        raise MalformedObject(f"tree leaf has {n} entries (max {LEAF_MAX})")
    records = {}
    for _ in range(n):
        start = pos
        ln, pos = _get_varint(content, pos)
        raw = content[pos : pos + ln]
        pos += ln + 1 + OID_RAW_LEN
        records[raw] = content[start:pos]
    if pos != len(content) or len(records) != n:
        raise MalformedObject("tree leaf does not parse")
    return records


def _record_item(raw: bytes, record: bytes) -> _Item:
    # Hash left empty: placing names again is needed only if the leaf splits.
    code = record[-OID_RAW_LEN - 1]
    if code not in _CODE_TYPE:
        raise MalformedObject(f"tree entry has unknown type code {code}")
    return (b"", raw, _CODE_TYPE[code], oid_from_raw(record[-OID_RAW_LEN:]))


def encode_internal(depth: int, children: list[tuple[int, ObjectId, int]]) -> bytes:
    out = bytearray((_KIND_INTERNAL,))
    _put_varint(out, depth)
    bitmap = 0
    for nib, _, _ in children:
        bitmap |= 1 << nib
    out += bitmap.to_bytes(2, "big")
    for _, oid, count in sorted(children):
        out += oid_to_raw(oid)
        _put_varint(out, count)
    return bytes(out)


def decode_node(content: bytes) -> Leaf | Internal:
    """Parse one node, checking everything that can be checked locally (sorting, names,
    counts, no trailing bytes). Placement rules that need the path are checked by fsck."""
    if not content:
        raise MalformedObject("empty tree node")
    kind = content[0]
    depth, pos = _get_varint(content, 1)
    if kind == _KIND_LEAF:
        n, pos = _get_varint(content, pos)
        if n > LEAF_MAX:
            raise MalformedObject(f"tree leaf has {n} entries (max {LEAF_MAX})")
        entries = []
        prev = None
        for _ in range(n):
            ln, pos = _get_varint(content, pos)
            raw = content[pos : pos + ln]
            pos += ln
            if pos + 1 + OID_RAW_LEN > len(content):
                raise MalformedObject("tree leaf truncated")
            code = content[pos]
            oid_raw = content[pos + 1 : pos + 1 + OID_RAW_LEN]
            pos += 1 + OID_RAW_LEN
            if code not in _CODE_TYPE:
                raise MalformedObject(f"tree entry has unknown type code {code}")
            if prev is not None and raw <= prev:
                raise MalformedObject("tree leaf entries are not strictly sorted")
            prev = raw
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedObject("tree entry name is not UTF-8") from None
            validate_name(name)
            entries.append(TreeEntry(name, _CODE_TYPE[code], oid_from_raw(oid_raw)))
        node: Leaf | Internal = Leaf(depth, tuple(entries))
    elif kind == _KIND_INTERNAL:
        if pos + 2 > len(content):
            raise MalformedObject("tree node truncated")
        bitmap = int.from_bytes(content[pos : pos + 2], "big")
        pos += 2
        children = []
        for nib in range(16):
            if bitmap & (1 << nib):
                if pos + OID_RAW_LEN > len(content):
                    raise MalformedObject("tree node truncated")
                oid = oid_from_raw(content[pos : pos + OID_RAW_LEN])
                count, pos = _get_varint(content, pos + OID_RAW_LEN)
                if count == 0:
                    raise MalformedObject("tree node has an empty child")
                children.append((nib, oid, count))
        node = Internal(depth, tuple(children))
        if node.count <= LEAF_MAX:
            raise MalformedObject(f"internal tree node with only {node.count} entries")
    else:
        raise MalformedObject(f"unknown tree node kind {kind}")
    if pos != len(content):
        raise MalformedObject("trailing bytes after tree node")
    return node


def check_structure(otype: ObjectType, content: bytes) -> None:
    """Parse a tree node or a run record (a blob has no structure); MalformedObject if
    the content is not a valid encoding of its type."""
    if otype is ObjectType.TREE:
        decode_node(content)
    elif otype is ObjectType.RUN:
        RunRecord.from_content(content)


def load_node(store: NodeStore, oid: ObjectId) -> Leaf | Internal:
    otype, content = store.get(oid)
    if otype is not ObjectType.TREE:
        raise MalformedObject(f"{oid} is a {otype}, not a tree")
    return decode_node(content)


# --- building and updating -------------------------------------------------------------


def _item(entry: TreeEntry) -> _Item:
    raw = validate_name(entry.name)
    return (name_hash(raw), raw, ObjectType(entry.type), entry.oid)


def _build(store: NodeStore, items: list[_Item], depth: int) -> tuple[ObjectId, int]:
    if len(items) <= LEAF_MAX:
        return store.put(ObjectType.TREE, encode_leaf(depth, items)), len(items)
    buckets: dict[int, list[_Item]] = {}
    for it in items:
        h = it[0] or name_hash(it[1])  # b"": not hashed yet (only a split needs it)
        buckets.setdefault(_nibble(h, depth), []).append((h, *it[1:]))
    children = []
    for nib in sorted(buckets):
        cid, cnt = _build(store, buckets[nib], depth + 1)
        children.append((nib, cid, cnt))
    return store.put(ObjectType.TREE, encode_internal(depth, children)), len(items)


def write_tree(store: NodeStore, entries: Iterable[TreeEntry]) -> ObjectId:
    """Write a whole manifest; the last entry for a repeated name wins."""
    by_name: dict[bytes, _Item] = {}
    for e in entries:
        it = _item(e)
        by_name[it[1]] = it
    return _build(store, list(by_name.values()), 0)[0]


def empty_tree(store: NodeStore) -> ObjectId:
    return store.put(ObjectType.TREE, encode_leaf(0, []))


def empty_tree_for_reading(store: NodeStore) -> ObjectId:
    """The empty manifest's id for a reader: written only if the store lacks it, so that
    reading a config that has no manifest of some name (one recorded before it existed)
    does not write to the store (nor take a writer lease) in the usual case."""
    oid = object_id(ObjectType.TREE, encode_leaf(0, []))
    has = getattr(store, "has", None)
    return oid if has is not None and has(oid) else empty_tree(store)


def _leaf_items(node: Leaf) -> list[_Item]:
    # Hashes are left empty: placing names again is needed only if the leaf splits.
    return [(b"", e.name.encode("utf-8"), e.type, e.oid) for e in node.entries]


def _collect(store: NodeStore, oid: ObjectId) -> list[_Item]:
    node = load_node(store, oid)
    if isinstance(node, Leaf):
        return _leaf_items(node)
    return [it for _, cid, _ in node.children for it in _collect(store, cid)]


def _update(
    store: NodeStore, oid: ObjectId, depth: int, changes: list[tuple[bytes, bytes, _Item | None]]
) -> tuple[ObjectId | None, int]:
    """Apply (hash, name, item-or-None-to-delete) changes below node ``oid``; return the new
    node id (None when the bucket became empty) and its entry count. Only nodes on the paths
    to changed names are read or written."""
    otype, content = store.get(oid)
    if otype is not ObjectType.TREE:
        raise MalformedObject(f"{oid} is a {otype}, not a tree")
    if content[:1] == bytes((_KIND_LEAF,)):
        # Entries are kept as their stored bytes: only changed ones are encoded.
        records = _leaf_records(content)
        changed = False
        for _, raw, it in changes:
            if it is None:
                changed |= records.pop(raw, None) is not None
                continue
            record = _record(raw, it[2], it[3])
            if records.get(raw) != record:
                records[raw] = record
                changed = True
        if not changed:
            return oid, len(records)
        if not records and depth > 0:
            return None, 0
        if len(records) <= LEAF_MAX:
            return store.put(ObjectType.TREE, _leaf_bytes(depth, records)), len(records)
        return _build(store, [_record_item(raw, rec) for raw, rec in records.items()], depth)
    node = decode_node(content)

    groups: dict[int, list[tuple[bytes, bytes, _Item | None]]] = {}
    for ch in changes:
        groups.setdefault(_nibble(ch[0], depth), []).append(ch)
    children = {nib: (cid, cnt) for nib, cid, cnt in node.children}
    changed = False
    for nib, group in groups.items():
        if nib in children:
            new_id, new_cnt = _update(store, children[nib][0], depth + 1, group)
        else:
            adds = {raw: it for _, raw, it in group if it is not None}
            if not adds:
                continue
            new_id, new_cnt = _build(store, list(adds.values()), depth + 1)
        if new_id is None:
            del children[nib]
            changed = True
        elif (new_id, new_cnt) != children.get(nib):
            children[nib] = (new_id, new_cnt)
            changed = True
    if not changed:
        return oid, node.count
    total = sum(cnt for _, cnt in children.values())
    if total <= LEAF_MAX:
        # Canonical form: a bucket this small is a leaf. Its children are all leaves then.
        items = [it for cid, _ in children.values() for it in _collect(store, cid)]
        if not items and depth > 0:
            return None, 0
        return _build(store, items, depth)
    kids = [(nib, cid, cnt) for nib, (cid, cnt) in sorted(children.items())]
    return store.put(ObjectType.TREE, encode_internal(depth, kids)), total


def update_tree(
    store: NodeStore, root: ObjectId, changes: Mapping[str, TreeEntry | None]
) -> ObjectId:
    """Set (entry) or delete (None) names in the manifest at ``root``; return the new root."""
    prepared = []
    for name, entry in changes.items():
        raw = validate_name(name)
        h = name_hash(raw)
        if entry is None:
            prepared.append((h, raw, None))
        elif entry.name != name:
            raise ValueError(f"entry {entry.name!r} given under name {name!r}")
        else:
            prepared.append((h, raw, (h, raw, ObjectType(entry.type), entry.oid)))
    if not prepared:
        return root
    new_root, _ = _update(store, root, 0, prepared)
    return new_root if new_root is not None else empty_tree(store)


# --- reading ---------------------------------------------------------------------------


def node_targets(content: bytes) -> list[tuple[ObjectId, ObjectType]]:
    """What a node points at, (id, type), parsed leanly for reachability walks over nodes
    already verified by hash (gc): no name decoding or checks, unlike ``decode_node``."""
    try:
        return _node_targets(content)
    except (IndexError, KeyError, ValueError) as e:
        raise MalformedObject(f"tree node does not parse: {e!r}") from None


def _node_targets(content: bytes) -> list[tuple[ObjectId, ObjectType]]:
    kind = content[0]
    _, pos = _get_varint(content, 1)
    out = []
    if kind == _KIND_INTERNAL:
        bitmap = int.from_bytes(content[pos : pos + 2], "big")
        pos += 2
        for _ in range(bin(bitmap).count("1")):
            out.append((oid_from_raw(content[pos : pos + OID_RAW_LEN]), ObjectType.TREE))
            _, pos = _get_varint(content, pos + OID_RAW_LEN)
        return out
    n, pos = _get_varint(content, pos)
    for _ in range(n):
        ln, pos = _get_varint(content, pos)
        pos += ln
        code = content[pos]
        out.append((oid_from_raw(content[pos + 1 : pos + 1 + OID_RAW_LEN]), _CODE_TYPE[code]))
        pos += 1 + OID_RAW_LEN
    return out


def iter_names(store: NodeStore, root: ObjectId) -> Iterator[str]:
    """Just the entry names (resume planning): a lean walk over nodes already verified by
    hash on read, skipping the per-entry checks ``decode_node`` makes."""
    stack = [root]
    while stack:
        otype, content = store.get(stack.pop())
        if otype is not ObjectType.TREE:
            raise MalformedObject(f"expected a tree, found a {otype}")
        if content[:1] == bytes((_KIND_INTERNAL,)):
            node = decode_node(content)
            stack.extend(cid for _, cid, _ in node.children)  # type: ignore[union-attr]
            continue
        _, pos = _get_varint(content, 1)
        n, pos = _get_varint(content, pos)
        for _ in range(n):
            ln, pos = _get_varint(content, pos)
            yield content[pos : pos + ln].decode("utf-8")
            pos += ln + 1 + OID_RAW_LEN


def iter_tree(store: NodeStore, root: ObjectId) -> Iterator[TreeEntry]:
    """All entries of the manifest at ``root``, in trie order (stable, not sorted by name)."""
    stack = [root]
    while stack:
        node = load_node(store, stack.pop())
        if isinstance(node, Leaf):
            yield from node.entries
        else:
            stack.extend(cid for _, cid, _ in reversed(node.children))


def list_tree(store: NodeStore, root: ObjectId) -> list[TreeEntry]:
    """All entries sorted by name (UTF-8 byte order), as ``ls-tree`` shows them."""
    return sorted(iter_tree(store, root), key=lambda e: e.name.encode("utf-8"))


def tree_get(store: NodeStore, root: ObjectId, name: str) -> TreeEntry | None:
    raw = validate_name(name)
    h = name_hash(raw)
    oid, depth = root, 0
    while True:
        node = load_node(store, oid)
        if isinstance(node, Leaf):
            for e in node.entries:
                if e.name == name:
                    return e
            return None
        nib = _nibble(h, depth)
        for cn, cid, _ in node.children:
            if cn == nib:
                oid, depth = cid, depth + 1
                break
        else:
            return None


class TreeReader:
    """Repeated lookups in manifests, with nodes cached (nodes are immutable, so the cache
    never goes stale). A leaf is kept as its stored bytes plus where each entry starts, and
    searched by bisection (its names are sorted): not decoded entry by entry on every
    lookup as ``tree_get`` does, and not as an object per entry either (that took ~65 KB
    per 256-entry leaf, against its ~25 KB of bytes). The cache holds at most ``max_bytes``
    of nodes, the least recently used going first. Not thread-safe."""

    def __init__(self, store: NodeStore, max_bytes: int = 4 << 20) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.cached_bytes = 0
        self._nodes: OrderedDict[ObjectId, _CachedNode] = OrderedDict()

    def _node(self, oid: ObjectId) -> _CachedNode:
        node = self._nodes.get(oid)
        if node is not None:
            self._nodes.move_to_end(oid)
            return node
        otype, content = self.store.get(oid)
        if otype is not ObjectType.TREE:
            raise MalformedObject(f"{oid} is a {otype}, not a tree")
        if content[:1] == bytes((_KIND_LEAF,)):
            starts = _leaf_starts(content)
            node = _CachedNode(content, starts, None, len(content) + 4 * len(starts))
        else:
            internal = decode_node(content)
            children = {nib: cid for nib, cid, _ in internal.children}  # type: ignore[union-attr]
            node = _CachedNode(b"", None, children, 128 * len(children))
        self._nodes[oid] = node
        self.cached_bytes += node.size
        while self.cached_bytes > self.max_bytes and len(self._nodes) > 1:
            _, old = self._nodes.popitem(last=False)
            self.cached_bytes -= old.size
        return node

    def get(self, root: ObjectId, name: str) -> TreeEntry | None:
        raw = name.encode("utf-8")
        h = b""
        oid, depth = root, 0
        while True:
            node = self._node(oid)
            if node.children is None:
                return _leaf_find(node.content, node.starts, raw, name)  # type: ignore[arg-type]
            h = h or name_hash(raw)
            child = node.children.get(_nibble(h, depth))
            if child is None:
                return None
            oid, depth = child, depth + 1


def node_ids(store: NodeStore, root: ObjectId) -> Iterator[ObjectId]:
    """The ids of every node of the manifest at ``root``, reading only internal nodes: an
    internal node's child with at most ``LEAF_MAX`` entries is a leaf (canonical form)."""
    stack = [root]
    while stack:
        oid = stack.pop()
        yield oid
        node = load_node(store, oid)
        if isinstance(node, Internal):
            for _, cid, count in node.children:
                if count <= LEAF_MAX:
                    yield cid
                else:
                    stack.append(cid)


class _CachedNode(NamedTuple):
    content: bytes  # a leaf's stored bytes
    starts: array | None  # a leaf: where each entry record starts in ``content``
    children: dict[int, ObjectId] | None  # an internal node: child by nibble
    size: int  # bytes it is counted for in the cache


def _leaf_starts(content: bytes) -> array:
    """Where each entry record of a leaf starts (checking that the records fill it)."""
    _, pos = _get_varint(content, 1)
    n, pos = _get_varint(content, pos)
    if n > LEAF_MAX:
        raise MalformedObject(f"tree leaf has {n} entries (max {LEAF_MAX})")
    starts = array("I")
    for _ in range(n):
        starts.append(pos)
        ln, at = _get_varint(content, pos)
        pos = at + ln + 1 + OID_RAW_LEN
    if pos != len(content):
        raise MalformedObject("tree leaf does not parse")
    return starts


def _leaf_name(content: bytes, start: int) -> bytes:
    ln = content[start]
    if ln < 0x80:  # names are short: a one-byte varint
        return content[start + 1 : start + 1 + ln]
    ln, at = _get_varint(content, start)
    return content[at : at + ln]


def _leaf_find(content: bytes, starts: array, raw: bytes, name: str) -> TreeEntry | None:
    lo, hi = 0, len(starts)
    while lo < hi:
        mid = (lo + hi) >> 1
        if _leaf_name(content, starts[mid]) < raw:
            lo = mid + 1
        else:
            hi = mid
    if lo == len(starts) or _leaf_name(content, starts[lo]) != raw:
        return None
    at = starts[lo + 1] if lo + 1 < len(starts) else len(content)
    code = content[at - OID_RAW_LEN - 1]
    if code not in _CODE_TYPE:
        raise MalformedObject(f"tree entry has unknown type code {code}")
    return TreeEntry(name, _CODE_TYPE[code], oid_from_raw(content[at - OID_RAW_LEN : at]))


def tree_count(store: NodeStore, root: ObjectId) -> int:
    node = load_node(store, root)
    return len(node.entries) if isinstance(node, Leaf) else node.count


def node_children(node: Leaf | Internal) -> list[ObjectId]:
    """Ids a node refers to (child nodes or entry targets), for reachability walks."""
    if isinstance(node, Leaf):
        return [e.oid for e in node.entries]
    return [cid for _, cid, _ in node.children]
