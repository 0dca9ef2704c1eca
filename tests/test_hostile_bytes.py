"""Hostile bytes on disk (issue 12): a damaged ref, reflog, pack index, store file or loose
object gives a clear one-line error naming what is damaged, never a traceback; fsck reports
it and checks everything else; repack never copies damaged bytes into a pack. The CLI cases
run the real `osmo` in a subprocess, as a user meets them."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository
from osmo_store.backends.layout import StoreLayout
from osmo_store.backends.local import LocalObjectStore
from osmo_store.errors import CorruptObject, CorruptRef, ObjectNotFound, StoreError
from osmo_store.hashing import ObjectId
from osmo_store.maintenance.fsck import fsck
from osmo_store.maintenance.gc import gc, repack

# Byte layout of a pack index (objects_spec.md, section 5): header, fan-out, records.
IDX_RECORDS = 8 + 4 + 8 + 8 + 256 * 4
IDX_RECORD = 32 + 8 + 4


def _osmo(osmo_cmd: list[str], store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*osmo_cmd, "--store", str(store), *args], capture_output=True, text=True, timeout=120
    )


def _one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed the way a user should see it: exit 1, an `osmo: error:` line
    naming every needle, no traceback."""
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("osmo: error:")]
    assert len(errors) == 1, p.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _blobs(repo: Repository, n: int) -> list[ObjectId]:
    return [repo.objects.put(ObjectType.BLOB, b"result %d " % i * 40) for i in range(n)]


def _packed_store(store_path: Path, n: int = 6) -> tuple[list[ObjectId], Path]:
    """n blobs, each named by a tag, all in one pack; returns the ids and the pack index."""
    with Repository.open(store_path) as repo:
        ids = _blobs(repo, n)
        for i, oid in enumerate(ids):
            repo.update_ref(f"refs/tags/t{i}", oid)
        repack(repo)
        (pack,) = repo.objects.packs()
        return ids, pack.idx_path


def _record_of(idx: Path, oid: ObjectId) -> int:
    """Byte offset of ``oid``'s record in the index."""
    data = idx.read_bytes()
    count = struct.unpack_from(">I", data, 8)[0]
    for i in range(count):
        at = IDX_RECORDS + i * IDX_RECORD
        if data[at : at + 32] == bytes.fromhex(oid):
            return at
    raise AssertionError(f"{oid} not in {idx}")


def _patch(path: Path, offset: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(new)] = new
    path.write_bytes(bytes(data))


# --- G-1: a byte >= 0x80 in a ref file --------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"c9a94c1a\xff\n", b"\x80" * 65, "é".encode() * 32 + b"\n", b"%s\n\xff" % (b"a" * 64)],
)
def test_ref_with_a_high_byte_is_a_damaged_ref(
    osmo_cmd: list[str], store_path: Path, content: bytes
) -> None:
    with Repository.open(store_path) as repo:
        good, other = _blobs(repo, 2)
        repo.update_ref("refs/evals/damaged", good)
        repo.update_ref("refs/tags/fine", other)
    StoreLayout(store_path).ref("refs/evals/damaged").write_bytes(content)

    for args in (
        ["cat-file", "-p", "refs/evals/damaged"],
        ["update-ref", "refs/evals/damaged", good, good],
        ["cache", "gc"],
        ["eval", "cache", "ls"],
    ):
        _one_line_error(_osmo(osmo_cmd, store_path, *args), "damaged ref refs/evals/damaged")
    # Commands that do not need the damaged ref still work.
    p = _osmo(osmo_cmd, store_path, "cat-file", "-p", "refs/tags/fine")
    assert p.returncode == 0, p.stderr
    p = _osmo(osmo_cmd, store_path, "show-ref")
    assert p.returncode == 0 and f"{other} refs/tags/fine" in p.stdout, p.stderr
    # fsck reports the ref, and goes on to check (and report) everything else.
    with Repository.open(store_path) as repo:
        path = repo.objects.loose_path(other)
    path.write_bytes(path.read_bytes()[:-3])
    p = _osmo(osmo_cmd, store_path, "fsck")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "refs/evals/damaged" in p.stdout and other in p.stdout, p.stdout
    assert "2 problem(s)" in p.stderr


def test_a_damaged_ref_raises_corrupt_ref_and_can_be_replaced(repo: Repository, store_path: Path):
    a, b = _blobs(repo, 2)
    repo.update_ref("refs/tags/x", a)
    StoreLayout(store_path).ref("refs/tags/x").write_bytes(b"\xfe\xff garbage\n")
    with pytest.raises(CorruptRef, match="refs/tags/x"):
        repo.refs.read("refs/tags/x")
    with pytest.raises(CorruptRef):
        repo.update_ref("refs/tags/x", b, a)  # a compare-and-swap cannot compare
    assert repo.refs.list() == {}
    assert repo.refs.damaged() == ["refs/tags/x"]
    # An unconditional update repairs it (as `osmo update-ref NAME ID` does), logged.
    repo.update_ref("refs/tags/x", b)
    assert repo.refs.read("refs/tags/x") == b
    assert repo.refs.reflog("refs/tags/x")[-1].new == b
    StoreLayout(store_path).ref("refs/tags/x").write_bytes(b"\xff")
    repo.delete_ref("refs/tags/x")
    assert repo.refs.damaged() == []


def test_reflog_and_ref_files_with_high_bytes_in_their_names_or_lines(
    osmo_cmd: list[str], store_path: Path
) -> None:
    with Repository.open(store_path) as repo:
        (oid,) = _blobs(repo, 1)
        repo.update_ref("refs/tags/a", oid)
    layout = StoreLayout(store_path)
    with open(layout.reflog("refs/tags/a"), "ab") as f:
        f.write(b"%s %s 12\xff34 who\xfe\tmessage \x80\x81\n" % (b"0" * 64, oid.encode()))
        f.write(b"%s %s 1234 wh\xffo\tm\xe9ssage\n" % (b"0" * 64, oid.encode()))
    # File names that are not UTF-8: a reflog and a ref no ref name can spell.
    os.makedirs(bytes(layout.logs / "refs" / "tags") + b"/\xffx", exist_ok=True)
    Path(os.fsdecode(bytes(layout.logs / "refs" / "tags") + b"/\xfey~log")).write_bytes(b"x")
    Path(os.fsdecode(bytes(layout.refs / "tags") + b"/\xfez")).write_text(oid + "\n")

    p = _osmo(osmo_cmd, store_path, "reflog")
    assert p.returncode == 0, p.stderr
    assert "wh\ufffdo: m\ufffdssage" in p.stdout
    for args in (["show-ref"], ["fsck"], ["cache", "gc"], ["reflog", "refs/tags/a"]):
        p = _osmo(osmo_cmd, store_path, *args)
        assert p.returncode == 0, (args, p.stderr)


# --- D-1, D-2: a damaged pack index -------------------------------------------------------


def test_huge_offset_in_a_pack_index_is_a_damaged_pack(
    osmo_cmd: list[str], store_path: Path
) -> None:
    ids, idx = _packed_store(store_path)
    at = _record_of(idx, ids[2])
    _patch(idx, at + 32, struct.pack(">Q", 2**63 + 5))

    p = _osmo(osmo_cmd, store_path, "cat-file", "-p", ids[2])
    _one_line_error(p, ids[2], idx.with_suffix(".pack").name)
    for full in ([], ["--full"]):
        p = _osmo(osmo_cmd, store_path, "fsck", *full)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert idx.name in p.stdout, p.stdout
        assert "refs/tags/t2" in p.stdout
        for other in ids[:2] + ids[3:]:
            assert other not in p.stdout  # checked, and sound
    p = _osmo(osmo_cmd, store_path, "repack", "-a")
    assert "Traceback" not in p.stderr and ids[2] in p.stderr, p.stderr
    p = _osmo(osmo_cmd, store_path, "cat-file", "-p", ids[3])
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("byte", [0, 1, 31])
def test_flipped_id_in_a_pack_index_names_the_pack_and_fsck_checks_the_rest(
    osmo_cmd: list[str], store_path: Path, byte: int
) -> None:
    ids, idx = _packed_store(store_path)
    with Repository.open(store_path) as repo:  # damage elsewhere must still be found
        loose = repo.objects.put(ObjectType.BLOB, b"a loose result")
        repo.update_ref("refs/tags/loose", loose)
        loose_path = repo.objects.loose_path(loose)
    loose_path.write_bytes(loose_path.read_bytes()[:-2])
    flipped = sorted(ids)[3]
    at = _record_of(idx, flipped)
    _patch(idx, at + byte, bytes([idx.read_bytes()[at + byte] ^ 0xFF]))

    for full in ([], ["--full"]):
        p = _osmo(osmo_cmd, store_path, "fsck", *full)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert idx.name in p.stdout, p.stdout  # the damaged pack is named
        assert flipped in p.stdout  # what the damage costs: the ref's object is lost
        assert loose in p.stdout  # and the rest was checked


def test_flipped_byte_mid_index_is_found_by_a_plain_fsck(store_path: Path) -> None:
    ids, idx = _packed_store(store_path)
    # A record's length field: every object is still found, one reads short.
    at = _record_of(idx, ids[0])
    _patch(idx, at + 42, bytes([idx.read_bytes()[at + 42] ^ 0x01]))
    with Repository.open(store_path) as repo:
        report = fsck(repo)
    assert any(idx.name in p for p in report.problems), report.problems


def test_pack_index_damage_in_the_fanout_is_reported(store_path: Path) -> None:
    ids, idx = _packed_store(store_path)
    first = bytes.fromhex(sorted(ids)[0])[0]
    _patch(idx, 8 + 4 + 8 + 8 + 4 * first, b"\x00\x00\x00\x00")
    with Repository.open(store_path) as repo:
        report = fsck(repo)
    assert any(idx.name in p for p in report.problems), report.problems


# --- G-3: the store file ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"[1,2]", b"1", b'"osmo-store"', b"null", b'{"format": [1]}', b"\xff\xfe", b""]
)
def test_store_file_that_is_not_an_object(osmo_cmd: list[str], store_path: Path, body: bytes):
    Repository.open(store_path).close()
    StoreLayout(store_path).store_file.write_bytes(body)
    _one_line_error(_osmo(osmo_cmd, store_path, "show-ref"), str(store_path))
    with pytest.raises(StoreError):
        Repository.open(store_path)


# --- G-4: repack and a corrupt loose object -----------------------------------------------


@pytest.mark.parametrize("damage", ["not zstd", "truncated", "flipped"])
def test_repack_leaves_a_corrupt_loose_object_and_packs_the_rest(
    osmo_cmd: list[str], store_path: Path, damage: str
) -> None:
    with Repository.open(store_path) as repo:
        ids = _blobs(repo, 4)
        bad = ids[1]
        path = repo.objects.loose_path(bad)
    data = path.read_bytes()
    path.write_bytes(
        {
            "not zstd": b"garbage, not a zstd frame",
            "truncated": data[: len(data) // 2],
            "flipped": data[:-4] + bytes([data[-4] ^ 0x40]) + data[-3:],
        }[damage]
    )
    p = _osmo(osmo_cmd, store_path, "repack")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert bad in p.stderr and "packed 3 objects" in p.stdout, (p.stdout, p.stderr)
    assert path.exists()  # left where it was, for fsck and the user
    with Repository.open(store_path) as repo:
        (pack,) = repo.objects.packs()
        assert sorted(pack.ids()) == sorted(i for i in ids if i != bad)
        for oid in ids:
            if oid != bad:
                assert repo.objects.get(oid)[0] is ObjectType.BLOB
                assert not repo.objects.loose_path(oid).exists()
        with pytest.raises(CorruptObject):
            repo.objects.get(bad)


def test_repack_all_never_copies_a_damaged_packed_object(store_path: Path) -> None:
    ids, _ = _packed_store(store_path)
    with Repository.open(store_path) as repo:
        objects = repo.objects
        assert isinstance(objects, LocalObjectStore)
        (pack,) = objects.packs()
        victim = sorted(ids)[2]
        _, offset, length = next(e for e in pack.entries() if e[0] == victim)
        pack_path = pack.pack_path
        _patch(pack_path, offset + length - 3, b"\x00\x01\x02")
        extra = objects.put(ObjectType.BLOB, b"one more, loose")
        report = repack(repo, all_packs=True)
        assert [e.oid for e in report.damaged] == [victim]
        # The damaged pack stays (nothing of it is lost); the new pack holds the rest.
        assert pack_path.exists()
        new = [p for p in objects.packs() if p.pack_path != pack_path]
        assert len(new) == 1
        assert sorted(new[0].ids()) == sorted([*(i for i in ids if i != victim), extra])
        assert any(victim in p for p in fsck(repo).problems)


@pytest.mark.parametrize("damage", ["cut", "empty", "count"])
def test_a_pack_index_that_cannot_be_opened_is_reported_not_fatal(
    osmo_cmd: list[str], store_path: Path, damage: str
) -> None:
    """Found by the pack fuzzer: an index whose size or header is wrong stopped every
    command (CorruptPack while loading the packs). It is left out of reads instead, fsck
    names it, and a miss hints at it."""
    ids, idx = _packed_store(store_path)
    with Repository.open(store_path) as repo:
        loose = repo.objects.put(ObjectType.BLOB, b"a loose one")
    data = idx.read_bytes()
    idx.write_bytes(
        {"cut": data[:-10], "empty": b"", "count": data[:8] + b"\xff" * 4 + data[12:]}[damage]
    )
    p = _osmo(osmo_cmd, store_path, "cat-file", "-p", loose)
    assert p.returncode == 0, p.stderr
    _one_line_error(_osmo(osmo_cmd, store_path, "cat-file", "-p", ids[0]), ids[0])
    with Repository.open(store_path) as repo, pytest.raises(ObjectNotFound) as missing:
        repo.objects.get(ids[0])
    assert idx.name in (missing.value.hint or "")
    p = _osmo(osmo_cmd, store_path, "fsck")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"{idx.name}: cannot be read" in p.stdout, p.stdout
    assert all(f"missing object {oid}" in p.stdout for oid in ids), p.stdout


def test_a_folder_among_the_leases_is_no_lease(store_path: Path) -> None:
    """Found by the lease fuzzer: gc crashed (IsADirectoryError) on a folder named lease-*."""
    with Repository.open(store_path) as repo:
        repo.objects.put(ObjectType.BLOB, b"garbage")
    (StoreLayout(store_path).leases / "lease-123-abc").mkdir()
    (StoreLayout(store_path).leases / "tmp-lease-123-abc").mkdir()
    with Repository.open(store_path) as repo:
        assert gc(repo, prune="now").objects_removed == 1
