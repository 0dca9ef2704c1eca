"""Memory that does not grow with the eval (issue 11): the peak RSS of an eval's processes
(the eval's Python allocations, its recorder's RSS) and of `osmo eval cache ls` are measured
at two sizes, and the growth per run (per config) must stay small. Not a fixed number: what
fails is memory kept per run, whatever the machine's baseline."""

from __future__ import annotations

import contextlib
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from osmo_store import Repository
from osmo_store.backends.pack import PackReader, PackWriter
from osmo_store.cli.main import main as cli_main
from osmo_store.eval.configstate import config_ref
from osmo_store.eval.state import IndexReader, update_index
from osmo_store.hashing import blake3_hex
from osmo_store.objects import ObjectType, RunRecord, encode_object
from osmo_store.testing.mockserver import ArithmeticResponder, MockServer
from osmo_store.tree import TreeEntry, empty_tree

from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
SCORING = ROOT / "examples" / "scoring.py"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads peak RSS from /proc"
)

# Runs the CLI in a fresh interpreter, then reports the peak of its Python allocations
# (tracemalloc: the eval's own state, without the allocator's noise).
_DRIVER = """
import json, sys, tracemalloc
tracemalloc.start()
from osmo_store.cli.main import main
code = main(sys.argv[1:])
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"code": code, "traced_peak": peak}), file=sys.stderr)
"""


def _recorder_hwm_kib(root: int) -> int:
    """The recorder process's peak RSS so far (VmHWM: it only grows), 0 if not running.
    Read from /proc, not ru_maxrss: Linux keeps a process's maximum across exec, so a child
    would report the RSS of the process that spawned it."""
    try:
        with open(f"/proc/{root}/task/{root}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return 0
    peak = 0
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if b"recorder_proc" not in f.read():
                    continue
            with open(f"/proc/{kid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak


def _peak_rss(args: list[str], cwd: Path) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd,
    )  # fmt: skip
    recorder = 0
    while proc.poll() is None:
        recorder = max(recorder, _recorder_hwm_kib(proc.pid))
        try:
            proc.wait(0.02)
        except subprocess.TimeoutExpired:
            continue
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads(stderr.strip().splitlines()[-1])
    assert report["code"] == 0, stderr[-3000:]
    report["recorder_kib"] = recorder
    return report


def _dataset(path: Path, rows: int) -> Path:
    with path.open("w") as f:
        for i in range(rows):
            row = {
                "user_prompt": f"What is {i} + {i % 97}?",
                "ground_truth": str(i + i % 97),
                "system_prompt": "Answer with the number only.",
                "id": f"row-{i:07d}",
            }
            f.write(json.dumps(row) + "\n")
    return path


def _eval_peak(tmp_path: Path, server: MockServer, rows: int) -> dict:
    store = tmp_path / f"store-{rows}"
    data = _dataset(tmp_path / f"data-{rows}.jsonl", rows)
    args = [
        "--store", str(store), "eval", "-d", str(data), "--model", "mem-model",
        "--base-url", server.base_url, "--eval-fn", f"{SCORING}:exact_match",
        "--concurrency", "16", "--json", "-q",
    ]  # fmt: skip
    report = _peak_rss(args, tmp_path)
    with Repository.open(store, create=False) as repo:
        (run_id,) = repo.refs.list("refs/evals/").values()
        assert repo.objects.get_run(run_id).meta["counts"]["done"] == rows
    return report


def test_eval_peak_rss_does_not_grow_per_run(tmp_path: Path) -> None:
    # 20 ms answers: the recorder keeps up even on a loaded machine, so what is measured is
    # memory per run, not a backlog of unrecorded results (that one is bounded by
    # backpressure, tested on its own).
    small, big = 1500, 6000
    with MockServer(latency=0.02) as server:
        a = _eval_peak(tmp_path, server, small)
        b = _eval_peak(tmp_path, server, big)
    runs = big - small
    main_per_run = (b["traced_peak"] - a["traced_peak"]) / runs
    assert a["recorder_kib"] and b["recorder_kib"], (a, b)  # it was seen, and measured
    recorder_per_run = (b["recorder_kib"] - a["recorder_kib"]) * 1024 / runs
    # Before issue 11: ~5,900 bytes of Python objects per run in the eval. Left at these
    # sizes (~1,000): the index reader's cache filling up to its 4 MB, and results waiting
    # for a recorder that falls behind on a busy machine (bounded by backpressure, not
    # here). The recorder's RSS cannot tell before from after at these sizes (~600-1,500
    # bytes a run either way, moved by when its pack folds land): it is held to a coarse
    # bound only, 2x what a loaded machine measured (1,512 once, failing a bound of 1,500).
    # Its own growth (ids of superseded nodes, mapped index pages) is tested directly in
    # test_eval_garbage.py.
    assert main_per_run < 2500, (a, b, main_per_run)
    assert recorder_per_run < 3000, (a, b, recorder_per_run)


def _configs(store: Path, count: int, template: dict) -> None:
    """``count`` configs whose run records carry a real eval's metadata."""
    with Repository.open(store) as repo:
        with repo.objects.bulk() as w:
            tree = empty_tree(w)
            made = []
            for i in range(count):
                meta = json.loads(json.dumps(template))
                meta["config_id"] = blake3_hex(f"config-{i}".encode())
                meta["config"]["model"] = f"model-{i % 7}"
                meta["session"]["updated"] = 1.79e9 + i
                run_id = w.put(ObjectType.RUN, RunRecord(tree, (), meta).to_content())
                made.append((meta["config_id"], run_id))
        for config_id, run_id in made:
            repo.update_ref(config_ref(config_id), run_id, None, message="eval: completed")


def test_cache_ls_memory_does_not_grow_per_config(tmp_path: Path) -> None:
    with MockServer() as server:
        _eval_peak(tmp_path, server, 20)
    with Repository.open(tmp_path / "store-20", create=False) as repo:
        (run_id,) = repo.refs.list("refs/evals/").values()
        template = repo.objects.get_run(run_id).meta
    peaks = {}
    for count in (200, 800):
        store = tmp_path / f"configs-{count}"
        _configs(store, count, template)
        for flags in ((), ("--json",)):
            args = ["--store", str(store), "eval", "cache", "ls", *flags]
            peaks[count, flags] = _peak_rss(args, tmp_path)["traced_peak"]
    for flags in ((), ("--json",)):
        per_config = (peaks[800, flags] - peaks[200, flags]) / 600
        # Before issue 11: ~14 KB per config (every run record's whole metadata kept);
        # what is left is the listing's own fields and the ref names (~1 KB).
        assert per_config < 2500, (peaks, flags, per_config)


@pytest.mark.parametrize("fresh", [False, True])
def test_an_answer_committed_and_released_is_still_shared(tmp_path: Path, fresh: bool) -> None:
    """Rows that send the same request share one answer, also when the first one's answer
    was committed (and its content let go) long before the second asks: `--fresh` (no
    shared index) included. One worker: A, then B (whose answer waits until A is
    recorded), then A' (A's request, other metadata)."""
    store = tmp_path / "store"
    rows = [
        {"user_prompt": "What is 2 + 2?", "ground_truth": "4", "tag": "a"},
        {"user_prompt": "What is 3 + 3?", "ground_truth": "6", "tag": "b"},
        {"user_prompt": "What is 2 + 2?", "ground_truth": "4", "tag": "a2"},
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    arithmetic = ArithmeticResponder()

    def recorded() -> int:
        with Repository.open(store, create=False) as repo:
            refs = repo.refs.list("refs/evals/")
            if not refs:
                return 0
            (run_id,) = refs.values()
            return repo.objects.get_run(run_id).meta["counts"].get("done", 0)

    def responder(request: dict) -> str | dict:
        if "3 + 3" in request["messages"][-1]["content"]:
            wait_until(lambda: recorded() >= 1, what="the first run recorded")
        return arithmetic(request)

    with MockServer(responder=responder) as server:
        argv = [
            "--store", str(store), "eval", "-d", str(data), "--model", "m",
            "--base-url", server.base_url, "--eval-fn", f"{SCORING}:exact_match",
            "--concurrency", "1", "-q", "--json", *(["--fresh"] if fresh else []),
        ]  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert cli_main(argv) == 0
        assert server.calls == 2
    body = json.loads(out.getvalue())
    assert body["summary"]["runs"] == 3 and body["session"]["model_calls"] == 2


def test_a_pack_written_in_id_order_is_the_one_built_from_records(tmp_path: Path) -> None:
    """Merges (an eval's recorder folding its packs) index objects as they come, in id
    order, instead of holding a record per object: the same bytes as the indexed build."""
    objects = sorted(encode_object(ObjectType.BLOB, b"object %d" % i) for i in range(3000))
    built = PackWriter(tmp_path / "a")
    streamed = PackWriter(tmp_path / "b", in_id_order=True)
    for oid, data in objects:
        built.add(oid, data)
        streamed.add(oid, data)
        streamed.add(oid, data)  # a repeat (an object in two merged packs) is written once
    a, b = built.finish(), streamed.finish()
    assert a is not None and b is not None and a.name == b.name
    assert a.read_bytes() == b.read_bytes()
    assert a.with_suffix(".pack").read_bytes() == b.with_suffix(".pack").read_bytes()
    reader = PackReader(b)
    assert [oid for oid, _, _ in reader.entries()] == [oid for oid, _ in objects]
    assert reader.verify_checksums() == []
    reader.close()
    late = PackWriter(tmp_path / "c", in_id_order=True)
    late.add(*objects[1])
    with pytest.raises(ValueError):
        late.add(*objects[0])
    late.abort()
    assert list((tmp_path / "c").iterdir()) == []


def test_a_dataset_edited_while_the_eval_reads_it_stops_it(tmp_path: Path, capsys) -> None:
    """Rows are read again as the workers take them: one that is not the row loaded (the
    file was edited meanwhile) ends the eval with an error naming it, never runs under
    the key of other content. The runs before it are recorded."""
    store = tmp_path / "store"
    data = tmp_path / "rows.jsonl"
    pad = "x" * 1000  # past the reader's buffer: the last rows are read from disk later
    rows = [{"user_prompt": f"What is {i} + 1?", "ground_truth": str(i + 1), "pad": pad}
            for i in range(40)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    arithmetic = ArithmeticResponder()
    edited = []

    def responder(request: dict) -> str | dict:
        if not edited:  # the first question: change the last row in place, same length
            text = data.read_bytes()
            at = text.rindex(b"What is 39 + 1?")
            with data.open("r+b") as f:
                f.seek(at)
                f.write(b"What is 93 + 1?")
            edited.append(True)
        return arithmetic(request)

    with MockServer(responder=responder) as server:
        argv = [
            "--store", str(store), "eval", "-d", str(data), "--model", "m",
            "--base-url", server.base_url, "--eval-fn", f"{SCORING}:exact_match",
            "--concurrency", "1", "-q", "--json",
        ]  # fmt: skip
        code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "changed since the eval loaded it" in err and f"{data}:40" in err, err
    assert "Traceback" not in err
    assert server.calls == 39


def test_index_lookups_cache_a_bounded_number_of_nodes(tmp_path: Path) -> None:
    """Every new key an eval looks up reads an index leaf: the reader's cache stays at
    its bound however big the index (it was 4 MB, of leaves mostly superseded by the
    recorder's next commit: with it, the eval's RSS grew ~8 MB more over 25k runs)."""
    with Repository.open(tmp_path / "store", create=True) as repo:
        keys = [blake3_hex(b"key %d" % i) for i in range(30_000)]
        blob = repo.objects.put(ObjectType.BLOB, b"an answer")
        update_index(repo, {k: TreeEntry(k, ObjectType.BLOB, blob) for k in keys})
        reader = IndexReader(repo)
        assert all(reader.get(k) == blob for k in keys[::7])
        assert 0 < reader.reader.cached_bytes <= 1 << 20


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def _index_pages_counted(tmp_path: Path, count: int) -> tuple[int, int]:
    """(KiB of this process's RSS that lookups and a walk of a ``count``-object pack add,
    the index's size in KiB), the pack's pages in the page cache as after an eval's commit."""
    rnd = random.Random(count)
    writer = PackWriter(tmp_path / f"pack-{count}", in_id_order=True)
    objects = sorted(encode_object(ObjectType.BLOB, b"%d" % i) for i in range(count))
    for oid, data in objects:
        writer.add(oid, data)
    idx = writer.finish()
    assert idx is not None
    reader = PackReader(idx)
    before = _rss_file_kib()
    for oid, _ in rnd.sample(objects, 2000):
        raw = bytes.fromhex(oid)
        assert reader.contains_raw(raw)
    for _ in range(2000):
        reader.contains_raw(rnd.randbytes(32))
    assert sum(1 for _ in reader.entries()) == sum(1 for _ in reader.ids()) == count
    grown = _rss_file_kib() - before
    reader.close()
    return grown, idx.stat().st_size // 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self/status")
def test_reading_a_pack_index_does_not_count_its_pages_in_memory(tmp_path: Path) -> None:
    """An eval's lookups (16 workers, every pack, every new key) and its recorder's folds
    (every record of the packs merged) read pack indexes: mapped, every page they touched
    counted in the process's RSS until released, so both processes grew with the store
    (~12 MB each at 100,000 runs). Read with pread, the pages stay in the page cache only."""
    _index_pages_counted(tmp_path, 2_000)  # warm up: code paths' own pages
    small, small_kib = _index_pages_counted(tmp_path, 10_000)
    big, big_kib = _index_pages_counted(tmp_path, 80_000)
    assert big - small < (big_kib - small_kib) / 8, (small, big, small_kib, big_kib)


_ARENAS_DRIVER = """
import ctypes, sys
from osmo_store.cli.main import main
code = main(sys.argv[1:])
sys.stderr.flush()
print("--- malloc_stats", file=sys.stderr, flush=True)
stats = getattr(ctypes.CDLL(None), "malloc_stats", None)  # glibc's
if stats is not None:
    stats()  # one "Arena N:" paragraph per malloc arena, to stderr
sys.exit(code)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or sys.implementation.name != "cpython",
    reason="counts glibc's malloc arenas",
)
def test_the_eval_workers_share_one_malloc_arena(tmp_path: Path) -> None:
    """glibc gives each thread that mallocs while others do an arena of its own (up to 8
    per core); what the 16 workers free stays in their arenas, scattered between what they
    keep, and the eval's RSS grew ~0.15 KB a run with it (free chunks from 2 to 14 MB over
    30,000 runs). The eval holds its workers to the main arena and gives its free pages
    back after each commit."""
    store = tmp_path / "store"
    data = _dataset(tmp_path / "rows.jsonl", 400)
    with MockServer(latency=0.005) as server:
        args = [
            "--store", str(store), "eval", "-d", str(data), "--model", "mem-model",
            "--base-url", server.base_url, "--eval-fn", f"{SCORING}:exact_match",
            "--concurrency", "16", "--json", "-q",
        ]  # fmt: skip
        stats = _malloc_stats(_ARENAS_DRIVER, args, tmp_path)
    assert stats.count("Arena ") == 1, stats


def _malloc_stats(driver: str, args: list[str], cwd: Path) -> str:
    """What glibc's ``malloc_stats`` printed at the end of ``driver`` run with ``args`` in
    a Python process of its own (the test is skipped if the malloc is not glibc's)."""
    proc = subprocess.run(
        [sys.executable, "-c", driver, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stderr.partition("--- malloc_stats")[2]
    if "Arena 0:" not in stats:
        pytest.skip("not glibc's malloc")
    return stats


# An eval through the Python API, then four threads of the caller's that each malloc and
# hold it while the arenas are counted.
_API_ARENAS_DRIVER = """
import ctypes, sys, threading
import osmo_store
store, data, scoring, base_url = sys.argv[1:]
osmo_store.evaluate(
    data, f"{scoring}:exact_match", model="mem-model", base_url=base_url, store=store,
    concurrency=16, progress=False,
)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
if getattr(libc, "malloc_stats", None) is None:
    sys.exit(0)  # not glibc
barrier = threading.Barrier(5)
def hold():
    block = libc.malloc(4096)  # where this thread's malloc puts it: its arena
    barrier.wait()  # all four hold a block while malloc_stats counts the arenas
    barrier.wait()
    libc.free(ctypes.c_void_p(block))
threads = [threading.Thread(target=hold) for _ in range(4)]
for t in threads:
    t.start()
barrier.wait()
print("--- malloc_stats", file=sys.stderr, flush=True)
libc.malloc_stats()
barrier.wait()
for t in threads:
    t.join()
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or sys.implementation.name != "cpython",
    reason="counts glibc's malloc arenas",
)
def test_an_eval_through_the_api_leaves_the_callers_malloc_arenas_alone(
    tmp_path: Path,
) -> None:
    """One arena is the ``osmo eval`` process's choice: glibc latches its arena limit the
    first time a thread wants an arena, so ``mallopt(M_ARENA_MAX, 1)`` during an eval
    bound every thread a notebook or script started afterwards to the main arena for the
    rest of its life, and setting it back to 0 would not undo that. An eval run through
    the Python API leaves the allocator as glibc set it."""
    data = _dataset(tmp_path / "rows.jsonl", 100)
    with MockServer(latency=0.005) as server:
        args = [str(tmp_path / "store"), str(data), str(SCORING), server.base_url]
        stats = _malloc_stats(_API_ARENAS_DRIVER, args, tmp_path)
    assert stats.count("Arena ") > 1, stats
