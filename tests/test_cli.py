"""The plumbing CLI, in-process (fast) plus a few real subprocess runs of `osmo`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from osmo_store import ObjectType, Repository, RunRecord, write_tree
from osmo_store.cli.main import main
from osmo_store.objects import object_id
from osmo_store.tree import TreeEntry


@pytest.fixture
def osmo(store_path: Path, capsys: pytest.CaptureFixture[str]):
    """Run `osmo --store STORE ARGS...` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--store", str(store_path), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _put_file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_init_creates_then_reinitializes(tmp_path: Path, capsys) -> None:
    target = tmp_path / "s"
    assert main(["init", str(target)]) == 0
    assert "Initialized empty osmo store" in capsys.readouterr().out
    assert (target / "osmo.json").is_file()
    assert main(["init", str(target)]) == 0
    assert "Reinitialized existing" in capsys.readouterr().out


def test_init_refuses_nonempty_directory(tmp_path: Path, capsys) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "precious.txt").write_text("x")
    assert main(["init", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("osmo: error:") and "not empty" in err
    assert (tmp_path / "d" / "precious.txt").read_text() == "x"
    assert not (tmp_path / "d" / "objects").exists()


def test_hash_object_without_write_stores_nothing(osmo, tmp_path: Path, store_path: Path) -> None:
    f = _put_file(tmp_path, "a.txt", b"hello\n")
    code, out, _ = osmo("hash-object", str(f))
    assert code == 0
    assert out.strip() == object_id(ObjectType.BLOB, b"hello\n")
    assert not store_path.exists() or not Repository.open(store_path).objects.has(out.strip())


def test_hash_object_write_and_cat_file(osmo, tmp_path: Path) -> None:
    f = _put_file(tmp_path, "a.txt", b"hello\n")
    code, out, _ = osmo("hash-object", "-w", str(f))
    oid = out.strip()
    assert code == 0 and oid == object_id(ObjectType.BLOB, b"hello\n")
    assert osmo("cat-file", "-t", oid[:6])[1] == "blob\n"
    assert osmo("cat-file", "-s", oid)[1] == "6\n"


def test_cat_file_p_blob_is_byte_exact(store_path: Path, tmp_path: Path, osmo_bin: str) -> None:
    data = bytes(range(256)) * 3
    f = _put_file(tmp_path, "bin", data)
    oid = subprocess.run(
        [osmo_bin, "--store", str(store_path), "hash-object", "-w", str(f)],
        capture_output=True, check=True, text=True,
    ).stdout.strip()  # fmt: skip
    got = subprocess.run(
        [osmo_bin, "--store", str(store_path), "cat-file", "-p", oid],
        capture_output=True,
        check=True,
    ).stdout
    assert got == data


def test_hash_object_stdin_and_types(osmo, monkeypatch, tmp_path: Path) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"abc")))
    code, out, _ = osmo("hash-object", "--stdin")
    assert code == 0 and out.strip() == object_id(ObjectType.BLOB, b"abc")
    bad = _put_file(tmp_path, "notatree", b"garbage")
    code, _, err = osmo("hash-object", "-t", "tree", str(bad))
    assert code == 1 and "not a valid tree" in err
    code, _, err = osmo("hash-object")
    assert code == 1 and "nothing to hash" in err


def _populate(store_path: Path) -> tuple[str, str, str]:
    with Repository.open(store_path) as repo:
        b1 = repo.objects.put(ObjectType.BLOB, b"one")
        b2 = repo.objects.put(ObjectType.BLOB, b"two")
        inner = write_tree(repo.objects, [TreeEntry("x", ObjectType.BLOB, b2)])
        root = write_tree(
            repo.objects,
            [TreeEntry("b", ObjectType.BLOB, b1), TreeEntry("a", ObjectType.TREE, inner)],
        )
        run = repo.objects.put_run(RunRecord(root, (), {"status": "completed"}))
        repo.update_ref("refs/evals/demo", run, None, message="test")
    return root, run, b2


def test_ls_tree_and_cat_file_pretty(osmo, store_path: Path) -> None:
    root, run, b2 = _populate(store_path)
    code, out, _ = osmo("ls-tree", root)
    lines = out.splitlines()
    assert code == 0 and [line.split("\t")[1] for line in lines] == ["a", "b"]
    assert lines[0].startswith("tree ")
    code, out, _ = osmo("ls-tree", "-r", run)  # a run record lists its tree
    assert f"blob {b2}\ta/x" in out.splitlines()
    code, out, _ = osmo("cat-file", "-p", "refs/evals/demo")
    assert code == 0 and json.loads(out)["tree"] == root
    assert osmo("cat-file", "-p", root)[1] == osmo("ls-tree", root)[1]


def test_update_ref_cas_show_ref_reflog_delete(osmo, store_path: Path) -> None:
    root, run, _ = _populate(store_path)
    code, _, err = osmo("update-ref", "refs/evals/demo", root, root)  # wrong OLD
    assert code == 1 and "moved" in err
    assert osmo("update-ref", "-m", "point at tree", "refs/evals/demo", root, run)[0] == 0
    code, out, _ = osmo("show-ref")
    assert out == f"{root} refs/evals/demo\n"
    code, out, _ = osmo("reflog", "refs/evals/demo")
    assert code == 0 and out.splitlines()[0].endswith("point at tree")
    assert len(out.splitlines()) == 2
    zeros = "0" * 64
    code, _, err = osmo("update-ref", "refs/evals/demo", run, zeros)  # must-not-exist
    assert code == 1
    assert osmo("delete-ref", "refs/evals/demo")[0] == 0
    assert osmo("show-ref")[1] == ""
    code, out, _ = osmo("reflog", "refs/evals/demo")
    assert "(deleted)" in out.splitlines()[0]
    code, _, err = osmo("delete-ref", "refs/evals/demo")
    assert code == 1 and "ref not found" in err


@pytest.mark.parametrize(
    "name", ["refs/../x", "/etc/passwd", "refs/a/../../b", "heads/x", "refs/x.lock", "refs/a b"]
)
def test_bad_ref_names_are_one_line_errors(osmo, store_path: Path, name: str) -> None:
    _, run, _ = _populate(store_path)
    code, out, err = osmo("update-ref", name, run)
    assert code == 1 and out == ""
    assert err.startswith("osmo: error: invalid ref name")
    assert not (store_path.parent / "x").exists()


def test_ref_to_missing_object_refused(osmo, store_path: Path) -> None:
    _populate(store_path)
    code, _, err = osmo("update-ref", "refs/tags/t", "ab" * 32)
    assert code == 1 and "not found" in err
    assert "refs/tags/t" not in osmo("show-ref")[1]


def test_ambiguous_and_invalid_prefixes(osmo, store_path: Path) -> None:
    with Repository.open(store_path) as repo:
        ids = [repo.objects.put(ObjectType.BLOB, str(i).encode()) for i in range(600)]
    by_prefix: dict[str, list[str]] = {}
    for oid in ids:
        by_prefix.setdefault(oid[:4], []).append(oid)
    prefix = next((p for p, v in by_prefix.items() if len(v) > 1), None)
    if prefix is None:  # make one: two ids sharing 4 chars are near certain with 600 ids
        pytest.skip("no shared 4-char prefix among 600 ids")
    code, _, err = osmo("cat-file", "-t", prefix)
    assert code == 1 and "ambiguous" in err
    code, _, err = osmo("cat-file", "-t", "../" + "a" * 61)
    assert code == 1 and err.count("\n") <= 2


def test_fsck_gc_stats_repack_flow(osmo, store_path: Path) -> None:
    _root, _run, _ = _populate(store_path)
    with Repository.open(store_path) as repo:
        junk = repo.objects.put(ObjectType.BLOB, b"unreachable junk")
    code, out, _ = osmo("fsck")
    assert code == 0 and out.strip().endswith("ok")
    code, out, _ = osmo("cache", "gc", "--dry-run", "--prune=now")
    assert code == 0 and out.startswith("would remove 1 objects")
    code, out, _ = osmo("cache", "gc", "--prune=1h")  # a grace period keeps the new junk
    assert out.startswith("removed 0 objects")
    code, out, _ = osmo("cache", "gc")  # by default, all that is unreachable now goes
    assert out.startswith("removed 1 objects")
    assert osmo("cat-file", "-t", junk)[0] == 1
    assert osmo("repack")[0] == 0
    code, out, _ = osmo("cache", "stats", "--json")
    s = json.loads(out)
    assert s["loose_objects"] == 0 and s["packs"] == 1 and s["objects"] == 5
    code, out, _ = osmo("fsck", "--full")
    assert code == 0 and "0 dangling" in out


def test_gc_rejects_bad_age(osmo, store_path: Path) -> None:
    _populate(store_path)
    code, _, err = osmo("cache", "gc", "--prune=soonish")
    assert code == 1 and "cannot parse age" in err


def test_fsck_reports_corruption_exit_1(osmo, store_path: Path) -> None:
    _, _run, b2 = _populate(store_path)
    path = store_path / "objects" / b2[:2] / b2[2:]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out, err = osmo("fsck")
    assert code == 1
    assert b2 in out and "problem" in err


def test_store_option_after_command(store_path: Path, tmp_path: Path, capsys) -> None:
    f = _put_file(tmp_path, "a", b"x")
    assert main(["hash-object", "-w", "--store", str(store_path), str(f)]) == 0
    oid = capsys.readouterr().out.strip()
    assert Repository.open(store_path).objects.has(oid)


def test_default_store_is_created_under_xdg_cache(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["show-ref"]) == 0
    assert (tmp_path / "cache" / "osmo" / "osmo.json").is_file()
    monkeypatch.setenv("OSMO_STORE", str(tmp_path / "env-store"))
    assert main(["show-ref"]) == 0
    assert (tmp_path / "env-store" / "osmo.json").is_file()


def test_subprocess_exit_codes(store_path: Path, osmo_bin: str) -> None:
    ok = subprocess.run(
        [osmo_bin, "--store", str(store_path), "fsck"], capture_output=True, text=True
    )
    assert ok.returncode == 0
    bad = subprocess.run(
        [osmo_bin, "--store", str(store_path), "cat-file", "-p", "deadbeef"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[0].startswith("osmo: error:")
    assert "Traceback" not in bad.stderr


def test_output_closed_early_is_not_an_error(store_path: Path, osmo_bin: str) -> None:
    """`osmo ... | head`: the reader is gone before osmo writes; exit 0, nothing on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run(
            [osmo_bin, "--store", str(store_path), "eval", "cache", "ls"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert r.returncode == 0 and r.stderr == ""


def test_a_broken_pipe_that_is_not_stdout_is_an_error(
    store_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken pipe to a child process (say, the eval's recorder) must not pass for
    `| head`: it is one error line and exit 1."""
    from osmo_store.cli import main as main_mod

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(main_mod, "open_repo", broken)
    code = main(["--store", str(store_path), "show-ref"])
    _, err = capsys.readouterr()
    assert code == 1 and err.strip() == "osmo: error: Broken pipe"


def test_stdout_closed_is_told_from_a_live_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """What decides between `| head` (exit 0) and a real error on another pipe."""
    from osmo_store.cli.main import _stdout_closed

    for reader_gone in (False, True):
        read_end, write_end = os.pipe()
        stream = open(write_end, "w")  # noqa: SIM115 - closed below
        try:
            if reader_gone:
                os.close(read_end)
            monkeypatch.setattr("sys.stdout", stream)
            assert _stdout_closed() is reader_gone
        finally:
            monkeypatch.undo()
            stream.close()
            if not reader_gone:
                os.close(read_end)
