"""Every answer paid for is kept: a real `osmo eval` killed with SIGKILL at random points
asks the model again, when resumed, for at most the calls it had in flight (one per
worker), however far its recording had fallen behind. Counted from the mock server's
request log: a request seen both before and after the kill was paid for twice."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from osmo_store import Repository
from osmo_store.eval.evalcheck import check_rollouts
from osmo_store.eval.journal import GroupPace, Journal, read_journal
from osmo_store.eval.state import PendingObject, SampleResult, blob
from osmo_store.maintenance.fsck import fsck
from osmo_store.testing.mockserver import MockServer

from .test_eval_crash import killed, recorded, shown_done
from .waiting import Gate, wait_until

WORKERS = 16


def write_project(tmp_path: Path, rows: int) -> Path:
    data = [{"user_prompt": f"What is {i} + 7?", "ground_truth": str(i + 7)} for i in range(rows)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    return tmp_path


def eval_cmd(osmo_bin: str, store: Path, base_url: str) -> list[str]:
    return [
        osmo_bin, "--store", str(store), "eval", "-d", "data.jsonl", "--model", "m",
        "--base-url", base_url, "--eval-fn", "fns.py:exact", "--concurrency", str(WORKERS),
        "--json",
    ]  # fmt: skip


def asked(srv: MockServer) -> list[str]:
    """The questions the server was asked, in order (one per request)."""
    return [r["messages"][-1]["content"] for r in srv.requests]


def kill_and_resume(
    osmo_bin: str,
    store: Path,
    project: Path,
    srv: MockServer,
    rows: int,
    at: int,
    *,
    gc_between: bool = False,
) -> int:
    """SIGKILL an eval once the server has been asked ``at`` questions (the last few held
    at a gate, so that the kill lands before the eval is done); resume it (after a gc that
    deletes every unreachable object, with ``gc_between``); return how many questions the
    resume asked again."""
    seen = len(srv.requests)
    with Gate(rows - 8) as gate:
        srv.responder = gate
        cmd = eval_cmd(osmo_bin, store, srv.base_url)
        proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_until(lambda: srv.calls - seen >= at, what=f"{at} model calls", proc=proc,
                   interval=0.001)  # fmt: skip
        err = killed(proc)
    done, _ = recorded(store)
    assert done >= shown_done(err)  # nothing shown as done was lost
    wait_until(srv.settled, what="the mock server to have read every request sent so far")
    before = set(asked(srv)[seen:])
    if gc_between:
        gc = subprocess.run([osmo_bin, "--store", str(store), "cache", "gc", "--prune", "now"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
        assert gc.returncode == 0, gc.stderr
    resumed_from = len(srv.requests)
    r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["status"] == "completed" and body["summary"]["runs"] == rows
    assert body["summary"]["metrics"]["exact"]["mean"] == 1.0
    again = asked(srv)[resumed_from:]
    assert len(set(again)) == len(again)  # the resume asked each question once
    assert before | set(again) >= {f"What is {i} + 7?" for i in range(rows)}
    with Repository.open(store) as repo:
        report = fsck(repo, full=True)
        assert report.ok, report.problems
        assert check_rollouts(repo) == []  # each replayed run's rollout is recorded
        assert not repo.layout.journals.exists() or not any(repo.layout.journals.iterdir())
    return len(before & set(again))


def kills(osmo_bin: str, tmp_path: Path, rows: int, times: int, seed: int) -> list[int]:
    project = write_project(tmp_path, rows)
    rng = random.Random(seed)
    out = []
    with MockServer() as srv:
        for k in range(times):
            at = rng.randint(WORKERS, rows - 16)
            store = tmp_path / f"store-{k}"
            out.append(
                kill_and_resume(osmo_bin, store, project, srv, rows, at, gc_between=k % 2 == 1)
            )
    return out


def test_a_killed_eval_asks_again_at_most_the_calls_it_had_in_flight(
    osmo_bin: str, tmp_path: Path
) -> None:
    reasked = kills(osmo_bin, tmp_path, rows=400, times=3, seed=11)
    assert max(reasked) <= WORKERS, reasked


@pytest.mark.slow
def test_killed_many_times_at_random_points_each_asks_again_at_most_its_workers(
    osmo_bin: str, tmp_path: Path
) -> None:
    reasked = kills(osmo_bin, tmp_path, rows=1500, times=10, seed=12)
    assert max(reasked) <= WORKERS, reasked


# --- the journal file itself -------------------------------------------------------------


def result(i: int) -> SampleResult:
    record = json.dumps({"row": f"r{i}", "run": 0}).encode()
    objects = [blob(f"k{i}", "cache", f"answer {i}".encode() * 50),
               PendingObject("rows", f"r{i}", None, blob("x", "rows", b"x").oid)]  # fmt: skip
    return SampleResult(f"r{i}.0", i % 3 == 0, record, json.loads(record), objects)


def write_journal(directory: Path, results: list[SampleResult]) -> list[int]:
    """Journal ``results`` and stop, as a crash would: nothing committed."""
    seqs: list[int] = []
    journal = Journal(
        directory, writers=1, backlog=10_000, deliver=lambda seq, res: seqs.append(seq)
    )
    for res in results:
        journal.append(res)
    journal.close()
    return seqs


def test_the_journal_reads_back_what_was_appended(tmp_path: Path) -> None:
    results = [result(i) for i in range(20)]
    assert write_journal(tmp_path / "j", results) == list(range(1, 21))
    back = read_journal(tmp_path / "j")
    assert [(r.name, r.failed, r.record, r.objects) for r in back] == [
        (r.name, r.failed, r.record, r.objects) for r in results
    ]


def test_records_past_a_segments_zeros_and_in_the_next_segment_read_back(tmp_path: Path) -> None:
    big = [SampleResult(f"b{i}.0", False, b"{}", {}, [blob(f"k{i}", "cache", bytes([i]) * 600_000)])
           for i in range(1, 4)]  # fmt: skip
    write_journal(tmp_path / "j", big)  # the 2nd record runs past the 1st segment's 1 MiB
    assert len(list((tmp_path / "j").iterdir())) == 2
    assert [r.objects for r in read_journal(tmp_path / "j")] == [r.objects for r in big]


@pytest.mark.parametrize("damage", ["torn", "flipped"])
def test_a_torn_or_damaged_tail_record_is_ignored(tmp_path: Path, damage: str) -> None:
    results = [result(i) for i in range(5)]
    write_journal(tmp_path / "j", results)
    (segment,) = (tmp_path / "j").iterdir()
    data = bytearray(segment.read_bytes())
    end = len(data.rstrip(b"\0"))  # the records' end: a segment is made of zeros first
    if damage == "torn":
        data[end - 7 : end] = bytes(7)  # the crash came in the middle of the last write
    else:
        data[end - 3] ^= 0xFF  # a bit the disk lost: the checksum no longer matches
    segment.write_bytes(bytes(data))
    assert [r.name for r in read_journal(tmp_path / "j")] == [r.name for r in results[:4]]


def test_committed_segments_are_deleted_and_the_rest_kept(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    journal = Journal(directory, writers=1, backlog=10_000, deliver=lambda seq, res: None)
    for i in range(3):
        journal.append(result(i))
    journal.committed(3)
    journal.close()
    assert not directory.exists()  # all committed: nothing left, not even the folder
    write_journal(directory, [result(7)])
    again = Journal(directory, writers=1, backlog=10_000, deliver=lambda seq, res: None)
    again.append(result(8))
    again.committed(0)  # the crashed session's segment (seq 0) is recorded; seq 1 is not
    again.close()
    assert [r.name for r in read_journal(directory)] == ["r8.0"]


def test_a_group_waits_for_more_results_only_while_they_come_faster_than_the_wait() -> None:
    pace = GroupPace()
    assert not pace.worth_waiting()  # the pace is not known yet
    now = 100.0
    for _ in range(20):  # 32 rollouts of a model at 200 ms: a result every ~6 ms
        now += 0.006
        pace.arrived(now)
        assert not pace.worth_waiting()
    quick = 0
    while not pace.worth_waiting():  # a result every 0.1 ms: a group gathers several
        now += 0.0001
        pace.arrived(now)
        quick += 1
    assert quick <= 12
    now += 30.0  # a pause (the next dataset's rows being read, say) is not a pace
    pace.arrived(now)
    now += 0.0001
    pace.arrived(now)
    assert not pace.worth_waiting()
    for _ in range(12):
        now += 0.0001
        pace.arrived(now)
    assert pace.worth_waiting()


def test_results_coming_slower_than_the_group_wait_are_written_without_it(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j", writers=8, backlog=10_000, deliver=lambda seq, res: None)
    for i in range(10):
        time.sleep(0.01)  # slower than GROUP_WAIT_S: a group would gather nothing
        journal.append(result(i))
    journal.close()
    assert journal.group_waits == 0


@pytest.mark.parametrize("made", [b"", b"osmo-jou", b"\0" * 4096, b"osmo-jou" + b"\0" * 100])
def test_a_segment_the_kill_caught_being_made_is_empty_not_foreign(
    tmp_path: Path, made: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGKILL between a segment's creation and its magic line's write leaves an empty
    file or a part of it (seen by the kill benchmark): nothing was in it, so no warning."""
    directory = tmp_path / "j"
    write_journal(directory, [result(1)])
    (directory / "00000009.jnl").write_bytes(made)
    with caplog.at_level("INFO", logger="osmo_store"):
        assert [r.name for r in read_journal(directory)] == ["r1.0"]
    assert not [r for r in caplog.records if r.levelname != "DEBUG"], caplog.text


def test_a_foreign_file_in_the_journal_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "j"
    write_journal(directory, [result(1)])
    (directory / "00000009.jnl").write_bytes(b"hello, not a journal\n")
    with caplog.at_level("WARNING", logger="osmo_store"):
        assert [r.name for r in read_journal(directory)] == ["r1.0"]
    assert "is not an eval journal segment" in caplog.text
