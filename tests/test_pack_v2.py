"""Pack format version 2 (a zstd dictionary per pack): round trips, damage reported by id,
version rules, and stores holding version 1 and version 2 packs side by side."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osmo_store import ObjectType, Repository
from osmo_store.backends import pack as pack_mod
from osmo_store.backends.pack import PackReader, PackWriter
from osmo_store.backends.packdict import DICT_SAMPLE_BYTES
from osmo_store.cli.main import main
from osmo_store.errors import CorruptObject, ObjectNotFound, UnsupportedPackVersion
from osmo_store.maintenance.fsck import fsck
from osmo_store.maintenance.gc import repack
from osmo_store.objects import RunRecord, compress_framed, decode_object, frame_object
from osmo_store.tree import TreeEntry, write_tree

_WORDS = [b"score", b"model", b"answer", b"rubric", b"question", b'{"role":', b"0.95", b"ok"]


def _content(rng: random.Random, size: int) -> bytes:
    """Eval-record-like bytes: shared words (what a dictionary learns) and random ones."""
    out = bytearray()
    while len(out) < size:
        out += rng.choice(_WORDS) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 12))
    return bytes(out[:size])


def _objects(seed: int, sizes: list[int]) -> dict[str, bytes]:
    """id -> framed form, for distinct blobs of the given sizes."""
    rng = random.Random(seed)
    made = {}
    for i, size in enumerate(sizes):
        oid, framed = frame_object(ObjectType.BLOB, b"%d:" % i + _content(rng, size))
        made[oid] = framed
    return made


def _write(directory: Path, objects: dict[str, bytes], *, in_id_order: bool, stored: bool,
           version: int = 2) -> PackReader:  # fmt: skip
    writer = PackWriter(directory, in_id_order=in_id_order, version=version)
    for oid in sorted(objects) if in_id_order else objects:
        if stored:
            writer.add(oid, compress_framed(objects[oid]))
        else:
            writer.add_framed(oid, objects[oid])
    idx = writer.finish()
    assert idx is not None
    return PackReader(idx)


def _big_pack(directory: Path, n: int = 120, size: int = 4000) -> tuple[PackReader, dict]:
    """A version 2 pack large enough to get a dictionary."""
    objects = _objects(7, [size] * n)
    reader = _write(directory, objects, in_id_order=False, stored=False)
    assert reader.version == 2 and reader._load_codec(next(iter(objects))).dictionary
    return reader, objects


# Sizes: mostly records of a few KB, some tiny, some bigger than the writer's dictionary
# sample (the object that fills the sample is then in it, and the rest follow).
_SIZES = st.lists(
    st.one_of(
        st.integers(0, 64),
        st.integers(1000, 6000),
        st.integers(DICT_SAMPLE_BYTES, DICT_SAMPLE_BYTES + 300_000),
    ),
    max_size=80,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1), sizes=_SIZES, in_id_order=st.booleans(),
       stored=st.booleans(), data=st.data())  # fmt: skip
def test_round_trip(tmp_path: Path, seed: int, sizes: list[int], in_id_order: bool,
                    stored: bool, data: st.DataObject) -> None:  # fmt: skip
    objects = _objects(seed, sizes)
    if not objects:
        assert PackWriter(tmp_path, version=2).finish() is None
        return
    reader = _write(tmp_path / f"p{seed}", objects, in_id_order=in_id_order, stored=stored)
    try:
        assert reader.version == 2
        assert sorted(reader.ids()) == sorted(objects)
        assert reader.framed_total == sum(map(len, objects.values()))
        assert reader.verify_index() == [] and reader.verify_checksums() == []
        ids = sorted(objects)
        for oid in data.draw(st.lists(st.sampled_from(ids), max_size=20)):
            assert reader.read_framed(oid) == objects[oid]
            # read() gives the stored form of section 2 (what sync sends, loose files hold)
            assert decode_object(oid, reader.read(oid))[1] == objects[oid].split(b"\0", 1)[1]
        for oid, offset, length in reader.entries():
            assert reader.read_framed_at(oid, offset, length) == objects[oid]
    finally:
        reader.close()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(victim=st.integers(0, 119), where=st.floats(0, 1, exclude_max=True), data=st.data())
def test_damaged_frame_is_reported_by_id(tmp_path: Path, victim: int, where: float,
                                         data: st.DataObject) -> None:  # fmt: skip
    directory = tmp_path / f"d{victim}-{where}"
    reader, objects = _big_pack(directory)
    entries = sorted(reader.entries(), key=lambda e: e[1])
    oid, offset, length = entries[victim]
    reader.close()
    raw = bytearray(reader.pack_path.read_bytes())
    raw[offset + int(where * length)] ^= data.draw(st.integers(1, 255))
    reader.pack_path.write_bytes(bytes(raw))
    damaged = PackReader(reader.idx_path)
    try:
        with pytest.raises(CorruptObject) as e:
            decode_object(oid, damaged.read(oid))  # the frame, or the hash, gives it away
        assert e.value.oid == oid
        for other, _, _ in entries:
            if other != oid:
                assert damaged.read_framed(other) == objects[other]
    finally:
        damaged.close()


def test_damaged_dictionary_fails_every_read_by_id(tmp_path: Path) -> None:
    reader, objects = _big_pack(tmp_path)
    reader.close()
    raw = bytearray(reader.pack_path.read_bytes())
    raw[16 + 100] ^= 0xFF  # inside the dictionary
    reader.pack_path.write_bytes(bytes(raw))
    damaged = PackReader(reader.idx_path)
    failed = []
    for oid in objects:
        try:
            framed = damaged.read_framed(oid)
        except CorruptObject as e:
            failed.append(e.oid)
            continue
        if framed != objects[oid]:
            failed.append(oid)
    damaged.close()
    assert len(failed) > len(objects) // 2  # what the dictionary helped to compress


def test_fsck_verifies_every_object_of_a_v2_pack(repo: Repository) -> None:
    rng = random.Random(3)
    with repo.objects.bulk() as w:
        ids = [w.put(ObjectType.BLOB, _content(rng, 3000)) for _ in range(200)]
    (pack,) = repo.objects.packs()
    assert pack.version == 2 and pack._load_codec(ids[0]).dictionary
    report = fsck(repo)
    assert report.ok and report.objects_checked == 200
    victim, offset, length = next(e for e in pack.entries() if e[0] == ids[17])
    raw = bytearray(pack.pack_path.read_bytes())
    raw[offset + length // 2] ^= 0x55
    pack.pack_path.write_bytes(bytes(raw))
    report = fsck(repo)
    assert report.objects_checked == 199
    assert len(report.problems) == 1 and victim in report.problems[0], report.problems


def test_unknown_pack_version_is_refused_clearly(repo: Repository) -> None:
    with repo.objects.bulk() as w:
        oid = w.put(ObjectType.BLOB, b"kept")
    (pack,) = repo.objects.packs()
    idx = pack.idx_path.read_bytes()
    assert idx.startswith(b"OSMOIDX2")
    future = repo.objects.pack_dir / ("pack-" + "ab" * 32 + ".idx")
    future.write_bytes(b"OSMOIDX3" + idx[8:])
    with pytest.raises(UnsupportedPackVersion, match="version 3 is not one this osmo reads"):
        PackReader(future)
    repo.objects.reload_packs()
    assert repo.objects.get(oid) == (ObjectType.BLOB, b"kept")  # the other packs read on
    with pytest.raises(ObjectNotFound) as missing:
        repo.objects.get("cd" * 32)
    assert "version 3 is not one this osmo reads" in (missing.value.hint or "")
    problems = fsck(repo).problems
    assert problems == [f"{future.stem}.idx: cannot be read: pack format version 3 is not one "
                        "this osmo reads (1 and 2)"]  # fmt: skip


def test_repack_all_rewrites_v1_packs_as_v2(repo: Repository, monkeypatch) -> None:
    rng = random.Random(5)
    contents = [_content(rng, 2500) for _ in range(300)]
    with monkeypatch.context() as m:
        m.setattr(pack_mod, "PACK_VERSION", 1)  # the old writer
        with repo.objects.bulk() as w:
            v1 = [w.put(ObjectType.BLOB, c) for c in contents[:150]]
    with repo.objects.bulk() as w:
        v2 = [w.put(ObjectType.BLOB, c) for c in contents[150:]]
    assert sorted(p.version for p in repo.objects.packs()) == [1, 2]
    loose = repo.objects.put(ObjectType.BLOB, b"loose")
    before = sum(p.stored_total for p in repo.objects.packs())
    report = repack(repo, all_packs=True)
    assert report.objects_packed == 301 and not report.damaged
    (pack,) = repo.objects.packs()
    assert pack.version == 2
    assert pack.stored_total < before
    for oid, content in zip(v1 + v2, contents, strict=True):  # ids unchanged
        assert repo.objects.get(oid) == (ObjectType.BLOB, content)
    assert repo.objects.get(loose) == (ObjectType.BLOB, b"loose")
    assert fsck(repo, full=True).ok


def _pack_versions(store: Path) -> list[int]:
    with Repository.open(store) as repo:
        return sorted({p.version for p in repo.objects.packs()})


def test_sync_between_v1_and_v2_stores_both_ways(tmp_path: Path, monkeypatch, capsys) -> None:
    """A store written by the old (version 1) writer pushes to a version 2 store, and a
    store written with version 1 packs clones from it: every object arrives, ids and all."""
    old, remote, clone = tmp_path / "old", tmp_path / "remote", tmp_path / "clone"
    rng = random.Random(11)
    contents = [_content(rng, 3000) for _ in range(150)]
    with monkeypatch.context() as m:
        m.setattr(pack_mod, "PACK_VERSION", 1)
        with Repository.open(old, create=True) as repo:
            with repo.objects.bulk() as w:
                ids = [w.put(ObjectType.BLOB, c) for c in contents]
                tree = write_tree(
                    w, [TreeEntry(f"r{i}", ObjectType.BLOB, o) for i, o in enumerate(ids)]
                )
                run = w.put(ObjectType.RUN, RunRecord(tree, (), {}).to_content())
            repo.update_ref("refs/evals/" + "ab" * 32, run)
    assert _pack_versions(old) == [1]
    assert main(["--store", str(old), "remote", "add", "up", str(remote)]) == 0
    assert main(["--store", str(old), "push", "up"]) == 0  # v1 -> v2
    assert _pack_versions(remote) == [2]
    with monkeypatch.context() as m:
        m.setattr(pack_mod, "PACK_VERSION", 1)
        assert main(["clone", str(remote), str(clone)]) == 0  # v2 -> a v1 writer
    assert _pack_versions(clone) == [1]
    for store in (old, remote, clone):
        with Repository.open(store) as repo:
            assert repo.refs.read("refs/evals/" + "ab" * 32) == run
            for oid, content in zip(ids, contents, strict=True):
                assert repo.objects.get(oid) == (ObjectType.BLOB, content)
            report = fsck(repo, full=True)
            assert report.ok, (store, report.problems)
    capsys.readouterr()


def test_a_pack_of_similar_records_takes_about_one_zstd_stream(
    repo: Repository, monkeypatch
) -> None:
    """Issue 15: one frame per object took 2.1x the bytes of one zstd-3 stream of the same
    records; the pack's dictionary shares what the records have in common."""
    rng = random.Random(13)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
             for _ in range(800)]  # fmt: skip
    records = [
        b'{"config":{"model":"m-%d","temperature":0.7},"response":"%s","scores":{"em":%d}}'
        % (i % 5, " ".join(rng.choices(vocab, k=300)).encode(), i % 2)
        for i in range(600)
    ]
    stream = len(zstandard.ZstdCompressor(level=3).compress(b"".join(records)))
    sizes = {}
    for version in (1, 2):
        with monkeypatch.context() as m:
            m.setattr(pack_mod, "PACK_VERSION", version)
            with repo.objects.bulk() as w:
                for r in records:
                    w.put(ObjectType.BLOB, b"%d" % version + r)
        (sizes[version],) = [p.stored_total for p in repo.objects.packs() if p.version == version]
    assert sizes[1] > 1.5 * stream  # what version 1 costs: the test can tell
    assert sizes[2] <= 1.3 * stream, (sizes, stream)  # 1.17x when written


def _store_version(store: Path) -> int:
    return json.loads((store / "osmo.json").read_text())["version"]


def test_a_version_1_store_keeps_version_1_packs_until_repack_upgrades_it(
    tmp_path: Path, capsys
) -> None:
    """An older osmo reads only version 1 stores and packs. A store it made (osmo.json
    version 1) must not get version 2 packs behind its back, which it would not see: osmo
    writes version 1 packs there until `osmo repack` raises the store to version 2."""
    store = tmp_path / "store"
    assert main(["init", str(store)]) == 0
    assert _store_version(store) == 3  # new stores are version 3
    (store / "osmo.json").write_text(json.dumps({"format": "osmo-store", "version": 1}))
    rng = random.Random(17)
    contents = [_content(rng, 2000) for _ in range(200)]
    with Repository.open(store) as repo, repo.objects.bulk() as w:
        ids = [w.put(ObjectType.BLOB, c) for c in contents]
    assert _pack_versions(store) == [1]
    assert main(["--store", str(store), "repack", "-a"]) == 0
    assert "upgraded the store to format version 2" in capsys.readouterr().out
    assert _store_version(store) == 2
    assert _pack_versions(store) == [2]
    with Repository.open(store) as repo:
        for oid, content in zip(ids, contents, strict=True):
            assert repo.objects.get(oid) == (ObjectType.BLOB, content)
        with repo.objects.bulk() as w:
            w.put(ObjectType.BLOB, _content(rng, 2000))
    assert _pack_versions(store) == [2]
    assert main(["--store", str(store), "repack"]) == 0
    assert "upgraded" not in capsys.readouterr().out  # once only


def test_a_store_of_an_unknown_format_version_is_refused(tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    assert main(["init", str(store)]) == 0
    (store / "osmo.json").write_text(json.dumps({"format": "osmo-store", "version": 4}))
    assert main(["--store", str(store), "cat-file", "-t", "ab" * 32]) != 0
    err = capsys.readouterr().err
    assert "has store format version 4; this osmo reads versions 1, 2 and 3" in err
    assert "hint: upgrade osmo" in err


def _v1_store(path: Path) -> None:
    assert main(["init", str(path)]) == 0
    (path / "osmo.json").write_text(json.dumps({"format": "osmo-store", "version": 1}))


def test_version_1_and_version_2_stores_sync_both_ways(tmp_path: Path, capsys) -> None:
    """Stores of format version 1 (osmo.json says 1: version 1 packs only) and 3 push and
    pull to each other, ids and all. A pull or push raises a store to version 3 first (it
    may bring configs an older osmo must not resume): the pulling store writes version 2
    packs from then on, and the packs it had stay readable."""
    old, new, back = tmp_path / "old", tmp_path / "new", tmp_path / "back"
    _v1_store(old)
    _v1_store(back)
    rng = random.Random(23)
    contents = [_content(rng, 3000) for _ in range(150)]
    with Repository.open(old) as repo:
        with repo.objects.bulk() as w:
            ids = [w.put(ObjectType.BLOB, c) for c in contents]
            tree = write_tree(
                w, [TreeEntry(f"r{i}", ObjectType.BLOB, o) for i, o in enumerate(ids)]
            )
            run = w.put(ObjectType.RUN, RunRecord(tree, (), {}).to_content())
        repo.update_ref("refs/evals/" + "cd" * 32, run)
    assert main(["--store", str(old), "remote", "add", "up", str(new)]) == 0
    assert main(["--store", str(old), "push", "up"]) == 0  # a v1 store into a new (v2) one
    assert main(["--store", str(back), "remote", "add", "up", str(new)]) == 0
    assert main(["--store", str(back), "pull", "up"]) == 0  # and from it into a v1 store
    assert [_store_version(p) for p in (old, new, back)] == [3, 3, 3]
    assert [_pack_versions(p) for p in (old, new, back)] == [[1], [2], [2]]
    for store in (old, new, back):
        with Repository.open(store) as repo:
            assert repo.refs.read("refs/evals/" + "cd" * 32) == run
            for oid, content in zip(ids, contents, strict=True):
                assert repo.objects.get(oid) == (ObjectType.BLOB, content)
            assert fsck(repo, full=True).ok
    capsys.readouterr()
