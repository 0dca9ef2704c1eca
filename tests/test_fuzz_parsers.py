"""Fuzzing every parser of stored bytes (issue 12): refs, reflogs, tree nodes, packs, pack
indexes, the store file, run records, sample blobs and leases. Each fuzzer writes damaged
bytes (mutations of sound ones, and plain noise) where the store keeps them and drives the
code that reads them; the only outcomes allowed are a valid result or an ``OsmoError`` (for
commands: exit 1 with a one-line error, never "internal error"). Bounded in `make test`
(``tests/fuzzing.py``), 50 times longer in the slow tier."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from osmo_store import ObjectType, Repository, RunRecord
from osmo_store.backends.layout import StoreLayout
from osmo_store.backends.lease import live_lease_starts
from osmo_store.backends.local import LocalObjectStore
from osmo_store.cli.main import main as osmo_main
from osmo_store.errors import CorruptRef, MalformedObject, OsmoError
from osmo_store.eval.merge import merge_trees
from osmo_store.eval.solver import Hit, ModelCaller
from osmo_store.eval.state import SUBTREES
from osmo_store.eval.stored import load_sample, parse_rollout, sample_blob
from osmo_store.eval.summary import summarize
from osmo_store.hashing import ObjectId, canonical_json, is_oid
from osmo_store.maintenance.gc import gc, repack
from osmo_store.refs import ReflogEntry
from osmo_store.tree import TreeEntry, check_structure, decode_node, node_targets, write_tree

from .fuzzing import fuzz_settings

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@st.composite
def mutated(draw: st.DrawFn, sound: bytes) -> bytes:
    """``sound`` with 1 to 4 damages: a flipped, dropped or inserted byte, a cut, a tail."""
    data = bytearray(sound)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "drop", "insert", "cut", "tail", "high"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif how == "high" and data:
            data[at] = draw(st.integers(0x80, 0xFF))
        elif how == "drop" and data:
            del data[at]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif how == "cut":
            del data[at:]
        elif how == "tail":
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def damaged(sound: bytes, noise: int = 64) -> st.SearchStrategy[bytes]:
    return mutated(sound) | st.binary(max_size=noise)


def run_osmo(*args: str) -> tuple[int, str]:
    """The CLI in this process: (exit status, stderr). A crash shows as "internal error"."""
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = osmo_main(list(args))
    return code, err.getvalue()


def assert_clean(code: int, err: str) -> None:
    assert "internal error" not in err and "Traceback" not in err, err
    assert code in (0, 1), (code, err)


@pytest.fixture(scope="module")
def sound_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small store with a ref, its reflog, a manifest, a run record, loose objects and a
    pack: the sound bytes every fuzzer damages (on a copy)."""
    path = tmp_path_factory.mktemp("sound") / "store"
    with Repository.open(path) as repo:
        blobs = [repo.objects.put(ObjectType.BLOB, b"answer %d" % i) for i in range(4)]
        root = write_tree(
            repo.objects, [TreeEntry(f"s{i}", ObjectType.BLOB, b) for i, b in enumerate(blobs)]
        )
        run = repo.objects.put_run(RunRecord(root, (), {"status": "completed", "n": 1}))
        repo.update_ref("refs/evals/cfg", run)
        repo.update_ref("refs/tags/one", blobs[0])
        repack(repo)
        repo.objects.put(ObjectType.BLOB, b"a loose one")
    return path


@contextlib.contextmanager
def fresh(sound_store: Path) -> Iterator[Path]:
    """A copy of the sound store for one example."""
    copy = sound_store.parent / f"copy-{os.getpid()}-{os.urandom(4).hex()}"
    shutil.copytree(sound_store, copy)
    try:
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def check_store(path: Path) -> None:
    """What a user would run on a damaged store: every one ends cleanly."""
    for args in (["fsck"], ["fsck", "--full"], ["show-ref"], ["reflog"], ["cache", "stats"],
                 ["eval", "cache", "ls"], ["cache", "gc", "--dry-run"]):  # fmt: skip
        assert_clean(*run_osmo("--store", str(path), *args))


# --- refs and reflogs ------------------------------------------------------------------------


@fuzz_settings(examples=15, suppress_health_check=FIXTURE_OK)
@given(data=st.data())
@example(data=None)
def test_fuzz_ref_files(sound_store: Path, data: st.DataObject | None) -> None:
    with fresh(sound_store) as path:
        layout = StoreLayout(path)
        sound = layout.ref("refs/tags/one").read_bytes()
        content = b"\xff" + sound if data is None else data.draw(damaged(sound))
        layout.ref("refs/tags/one").write_bytes(content)
        with Repository.open(path) as repo:
            try:
                oid = repo.refs.read("refs/tags/one")
            except CorruptRef as e:
                assert "refs/tags/one" in str(e)
                assert repo.refs.damaged() == ["refs/tags/one"]
                assert "refs/tags/one" not in repo.refs.list()
            else:
                assert oid is not None and is_oid(oid)
                assert repo.refs.list()["refs/tags/one"] == oid
        check_store(path)


@fuzz_settings(examples=15, suppress_health_check=FIXTURE_OK)
@given(data=st.data())
@example(data=None)
def test_fuzz_reflog_files(sound_store: Path, data: st.DataObject | None) -> None:
    with fresh(sound_store) as path:
        log = StoreLayout(path).reflog("refs/evals/cfg")
        sound = log.read_bytes()
        if data is None:  # a time in digits Python's int() does not read
            content = sound.replace(b" 1", b" \xc2\xb2", 1)
        else:
            content = data.draw(damaged(sound, noise=200))
        log.write_bytes(content)
        with Repository.open(path) as repo:
            for entry in repo.refs.reflog("refs/evals/cfg"):
                assert entry.old is None or is_oid(entry.old)
                assert entry.new is None or is_oid(entry.new)
                assert 0 <= entry.time_ns < 2**63
        check_store(path)
        # A line that parses but names no stored object stops gc (an OsmoError), as it should.
        with Repository.open(path) as repo, contextlib.suppress(OsmoError):
            gc(repo, prune="now", reflog_expire="now")


@given(line=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@fuzz_settings(examples=200)
@example(line="0" * 64 + " " + "0" * 64 + " ²³ who\tmsg")
@example(line="0" * 64 + " " + "0" * 64 + " 99999999999999999999999999 who\tmsg")
def test_fuzz_reflog_line(line: str) -> None:
    entry = ReflogEntry.from_line(line)
    if entry is not None:
        assert 0 <= entry.time_ns < 2**63
        assert ReflogEntry.from_line(entry.to_line().decode()[:-1]) is not None


# --- objects: tree nodes, run records ----------------------------------------------------------


def _sound_node() -> bytes:
    from osmo_store.backends.memory import MemoryObjectStore

    store = MemoryObjectStore()
    root = write_tree(
        store, [TreeEntry(f"name-{i}", ObjectType.BLOB, ObjectId("ab" * 32)) for i in range(5)]
    )
    return store.get(root)[1]


_NODE = _sound_node()
_RECORD = RunRecord(ObjectId("cd" * 32), (ObjectId("ef" * 32),), {"status": "ok", "x": [1, "é"]})


@fuzz_settings(examples=200)
@given(content=damaged(_NODE, noise=300))
def test_fuzz_tree_nodes(content: bytes) -> None:
    for parse in (decode_node, node_targets):
        with contextlib.suppress(MalformedObject):
            parse(content)
    with contextlib.suppress(MalformedObject):
        check_structure(ObjectType.TREE, content)


@fuzz_settings(examples=200)
@given(content=damaged(_RECORD.to_content(), noise=300))
def test_fuzz_run_records(content: bytes) -> None:
    try:
        record = RunRecord.from_content(content)
    except MalformedObject:
        return
    assert record.to_content() == content


# --- packs and pack indexes -------------------------------------------------------------------


def _the_pack(path: Path) -> tuple[Path, Path]:
    (idx,) = (path / "objects" / "pack").glob("*.idx")
    return idx, idx.with_suffix(".pack")


@fuzz_settings(examples=12, suppress_health_check=FIXTURE_OK)
@given(data=st.data(), which=st.sampled_from(["idx", "pack", "both"]))
def test_fuzz_packs_and_indexes(sound_store: Path, data: st.DataObject, which: str) -> None:
    with fresh(sound_store) as path:
        idx, pack = _the_pack(path)
        if which in ("idx", "both"):
            idx.write_bytes(data.draw(mutated(idx.read_bytes())))
        if which in ("pack", "both"):
            pack.write_bytes(data.draw(mutated(pack.read_bytes())))
        with Repository.open(path) as repo:
            objects = repo.objects
            assert isinstance(objects, LocalObjectStore)
            for oid in list(objects.iter_ids()):
                with contextlib.suppress(OsmoError):
                    objects.get(oid)
        check_store(path)
        assert_clean(*run_osmo("--store", str(path), "repack", "-a"))
        assert_clean(*run_osmo("--store", str(path), "fsck"))


# --- the store file, leases ---------------------------------------------------------------------


@fuzz_settings(examples=25, suppress_health_check=FIXTURE_OK)
@given(data=st.data())
@example(data=None)
def test_fuzz_store_file(sound_store: Path, data: st.DataObject | None) -> None:
    with fresh(sound_store) as path:
        store_file = StoreLayout(path).store_file
        content = b"[1,2]" if data is None else data.draw(damaged(store_file.read_bytes()))
        store_file.write_bytes(content)
        with contextlib.suppress(OsmoError):
            Repository.open(path).close()
        assert_clean(*run_osmo("--store", str(path), "show-ref"))


_lease_names = st.sampled_from(["lease-", "tmp-lease-", "clock-probe", "x"]).flatmap(
    lambda prefix: st.text("abc123-", max_size=6).map(lambda rest: prefix + rest)
)


@fuzz_settings(examples=15, suppress_health_check=FIXTURE_OK)
@given(
    entries=st.lists(
        st.tuples(
            _lease_names,
            st.sampled_from(["file", "dir", "empty", "symlink"]),
            st.binary(max_size=16),
        ),
        max_size=4,
    )
)
@example(entries=[("lease-dir", "dir", b"")])
def test_fuzz_leases(sound_store: Path, entries: list[tuple[str, str, bytes]]) -> None:
    with fresh(sound_store) as path:
        leases = StoreLayout(path).leases
        for name, kind, content in entries:
            target = leases / name
            with contextlib.suppress(FileExistsError, IsADirectoryError, NotADirectoryError):
                if kind == "dir":
                    target.mkdir()
                elif kind == "symlink":
                    target.symlink_to(path / "nowhere")
                else:
                    target.write_bytes(content if kind == "file" else b"")
        live_lease_starts(leases)
        assert_clean(*run_osmo("--store", str(path), "cache", "gc", "--prune=now"))
        with Repository.open(path) as repo:
            repo.objects.put(ObjectType.BLOB, b"a writer takes a lease")


# --- sample blobs -------------------------------------------------------------------------------

_SAMPLE_FIELDS = {
    "schema": 1, "row": "r1", "run": 0, "finished": 1.5, "status": "ok", "error": None,
    "rollout": "rk", "rollout_id": "ab" * 32, "scores": {"exact": 1.0, "judge": {"score": 0.5}},
    "scoring_errors": {}, "usage": {"prompt_tokens": 3}, "calls": [{"key": "k", "id": "cd" * 32}],
}  # fmt: skip
_SAMPLE = canonical_json(_SAMPLE_FIELDS)
_SAMPLE_V2 = (b'{"finished":1.5,"rollout_id":"' + b"ab" * 32 + b'","schema":2,'
              b'"scores":{"exact":1.0}}')  # fmt: skip
_SAMPLE_V3 = sample_blob(_SAMPLE_FIELDS)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_sample_like = st.fixed_dictionaries(
    {
        "row": st.text(max_size=4) | _json_values,
        "status": st.sampled_from(["ok", "failed"]) | _json_values,
    },
    optional={
        k: _json_values
        for k in (
            "run",
            "finished",
            "scores",
            "scoring_errors",
            "usage",
            "calls",
            "rollout",
            "rollout_id",
        )
    },
)


@pytest.fixture(scope="module")
def sample_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    with Repository.open(tmp_path_factory.mktemp("samples") / "store") as repo:
        yield repo


def _one_sample_state(repo: Repository, oid: ObjectId) -> dict[str, ObjectId]:
    entries = {name: [] for name in SUBTREES}
    entries["samples"] = [TreeEntry("r1.0", ObjectType.BLOB, oid)]
    return {name: write_tree(repo.objects, entries[name]) for name in SUBTREES}


@fuzz_settings(examples=60, suppress_health_check=FIXTURE_OK)
@given(
    content=damaged(_SAMPLE, noise=100)
    | damaged(_SAMPLE_V2, noise=100)
    | damaged(_SAMPLE_V3, noise=100)
    | _sample_like.map(lambda v: json.dumps(v).encode())
    | _json_values.map(lambda v: json.dumps(v).encode())
)
@example(content=b"[1]")
@example(content=b'{"schema": 2, "rollout_id": 7}')
@example(content=b'{"schema": 2, "finished": 1, "scores": [1]}')
@example(content=b'{"schema": 3, "finished": 1}')
@example(content=b'{"schema": 3, "error": 7}')
@example(content=b'{"row": "r1", "status": "ok", "finished": "soon"}')
@example(content=b'{"row": "r1", "status": "ok", "scores": {"f": "high"}}')
@example(content=b'{"row": "r1", "status": "ok", "scores": {"f": 1e400}}')
def test_fuzz_sample_blobs(sample_repo: Repository, content: bytes) -> None:
    """Two stores disagree on a run and one holds a damaged sample (a pull merges them):
    the merge and the summary over it either work or name the blob."""
    repo = sample_repo
    sound = repo.objects.put(ObjectType.BLOB, _SAMPLE)
    other = repo.objects.put(ObjectType.BLOB, content)
    try:
        merged = merge_trees(repo, _one_sample_state(repo, sound), _one_sample_state(repo, other))
        samples = [load_sample(repo, oid, name) for name, oid in merged["samples"].items()]
        summarize([*samples, load_sample(repo, other, "r1.0")], n=1, pass_threshold=0.5,
                  primary="exact")  # fmt: skip
    except MalformedObject as e:
        assert other in str(e)


_SETTINGS = b'{"remotes": {"origin": {"url": "http://127.0.0.1:9/", "token_file": "/t"}}}\n'


@fuzz_settings(examples=15, suppress_health_check=FIXTURE_OK)
@given(content=damaged(_SETTINGS) | _json_values.map(lambda v: json.dumps(v).encode()))
@example(content=b"[1, 2]")
@example(content=b'{"remotes": {"origin": {"url": "x", "token_file": 7}}}')
def test_fuzz_store_settings(sound_store: Path, content: bytes) -> None:
    """config.json (the store's remotes): read by every sync command."""
    with fresh(sound_store) as path:
        StoreLayout(path).config_file.write_bytes(content)
        for args in (["remote", "list"], ["remote", "add", "more", str(path / "elsewhere")],
                     ["fetch", "origin"]):  # fmt: skip
            assert_clean(*run_osmo("--store", str(path), *args))


# --- run records of eval configs -------------------------------------------------------------

# What canonical JSON can hold (a run record is canonical JSON: no NaN, no infinity).
_canonical_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_meta_values = st.fixed_dictionaries(
    {},
    optional={
        key: _canonical_values
        | st.dictionaries(st.sampled_from(fields), _canonical_values, max_size=3)
        for key, fields in {
            "config": ["agent", "model", "dataset", "n"],
            "counts": ["total", "done", "failed"],
            "session": ["started", "updated", "computed", "fresh"],
            "summary": ["primary_metric", "metrics", "pass_threshold"],
            "provenance": ["user", "osmo_version", "python"],
            "identity": ["eval_fns"],
            "status": ["x"],
            "score": ["x"],
        }.items()
    },
)


@fuzz_settings(examples=15, suppress_health_check=FIXTURE_OK)
@given(meta=_meta_values)
@example(meta={"config": 1, "counts": "x", "summary": [1], "status": 5, "session": "s"})
@example(meta={"config": {"model": 3}, "counts": {"total": "a"}, "summary": {"metrics": 1}})
@example(meta={"identity": 5, "provenance": 3})
@example(meta={"session": {"started": 1e300}})
@example(meta={"status": None})
@example(meta={"session": {"started": None}})
@example(meta={"summary": {"metrics": None}})
@example(meta={"summary": {"primary_metric": "m", "metrics": {"m": {}}}})
def test_fuzz_eval_run_records(sample_repo: Repository, meta: dict) -> None:
    """A config's run record with a meta of any shape (a push can bring one): listing,
    history and removal work or name the record."""
    repo = sample_repo
    state = _one_sample_state(repo, repo.objects.put(ObjectType.BLOB, _SAMPLE))
    root = write_tree(repo.objects, [TreeEntry(n, ObjectType.TREE, t) for n, t in state.items()])
    run = repo.objects.put_run(RunRecord(root, (), meta))
    repo.update_ref("refs/evals/" + "ab" * 32, run)
    for args in (["eval", "cache", "ls"], ["eval", "cache", "ls", "--json"], ["log", "abab"],
                 ["log", "abab", "--json"], ["eval", "cache", "rm", "abab"]):  # fmt: skip
        assert_clean(*run_osmo("--store", str(repo.path), *args))


@fuzz_settings(examples=20, suppress_health_check=FIXTURE_OK)
@given(content=damaged(_NODE, noise=300), as_run=st.booleans())
def test_fuzz_stored_tree_nodes(sample_repo: Repository, content: bytes, as_run: bool) -> None:
    """A damaged node stored under its own hash (a push can bring one) and named by a ref,
    directly or through a run record: every command that reads it ends cleanly."""
    repo = sample_repo
    oid = repo.objects.put(ObjectType.TREE, content)
    if as_run:
        oid = repo.objects.put_run(RunRecord(oid, (), {}))
    repo.update_ref("refs/tags/tree", oid)
    for args in (["ls-tree", "-r", "refs/tags/tree"], ["show", "refs/tags/tree"], ["fsck"],
                 ["cache", "gc", "--dry-run"]):  # fmt: skip
        assert_clean(*run_osmo("--store", str(repo.path), *args))
    repo.delete_ref("refs/tags/tree")


# --- rollout and model-call blobs -----------------------------------------------------------

_ROLLOUT = canonical_json(
    {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
     "usage": {"prompt_tokens": 3}, "calls": [{"key": "k", "id": "cd" * 32}], "latency_s": 0.1}
)  # fmt: skip
_CALL = canonical_json(
    {"request": {"model": "m"}, "response": {"choices": [{"message": {"role": "assistant",
     "content": "2"}}], "usage": {"total_tokens": 5}}, "latency_s": 0.1, "attempts": 1}
)  # fmt: skip


@fuzz_settings(examples=150)
@given(
    content=damaged(_ROLLOUT, noise=100)
    | damaged(_CALL, noise=100)
    | _json_values.map(lambda v: json.dumps(v).encode())
)
@example(content=b'["not", "a", "rollout"]')
@example(content=b'{"response": {"choices": 7}}')
@example(content=b'{"response": {"choices": [{"message": "hi"}]}}')
def test_fuzz_rollout_and_call_blobs(content: bytes) -> None:
    """What a later run reuses: the answer the solver takes from a call blob, the messages
    and calls it takes from a rollout blob; a blob of another shape is a miss."""
    oid = ObjectId("ef" * 32)
    outcome = ModelCaller._outcome("key", Hit(oid, content, False))
    if outcome is not None:
        assert isinstance(outcome.message, dict) and isinstance(outcome.usage, dict)
    try:
        rollout = parse_rollout(content, oid)
    except MalformedObject:
        return
    assert all(isinstance(m, dict) for m in rollout["messages"])
    assert all(is_oid(c["id"]) for c in rollout.get("calls") or [])
