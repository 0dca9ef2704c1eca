"""Crash safety: SIGKILL a real writer process at random instants, then check that the store
is clean, that nothing the writer showed as completed (its journal) was lost, and that a new
writer carries on from where the killed one stopped.

Kills are aimed: the worker keeps its current phase in a file, the test waits until it
reads the phase it wants (loose object writes, pack writes, pack publish, manifest, run
record, ref move, journal line) and kills a random 0-4 ms later (less in short phases).
Some kills use only a random delay. Set OSMO_TEST_SEED to replay a run (every failure
message has the seed).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from osmo_store import Repository, init_store
from osmo_store.maintenance.gc import gc

from .writer_worker import read_journal, ref_name, start, stderr_of, store_problems

# Read at import: the autouse fixture removes OSMO_* variables before each test runs.
SEED = int(os.environ.get("OSMO_TEST_SEED") or random.randrange(2**32))
PHASES = ("objects", "pack", "pack-publish", "tree", "run", "ref", "journal")
# After the worker is seen in a phase, the kill comes a random 0..N s later; short phases get
# a short N (the journal line is one write + fsync: wait any longer and the kill misses it).
EXTRA_DELAY = {"run": 0.001, "ref": 0.002, "journal": 0.0}
AIM_TIMEOUT = 10.0
WORKER = str(Path(__file__).with_name("writer_worker.py"))


def wait_ready(proc, journal: Path) -> None:
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"worker did not start: {stderr_of(journal)}"


def kill_at(proc, phase_file: Path, phase: str | None, rng: random.Random) -> str:
    """Kill ``proc`` once it is in ``phase`` (or, for None, after a random delay). Returns
    the phase it was in when it died."""
    fd = os.open(phase_file, os.O_RDONLY)
    try:
        if phase is None:
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            deadline = time.monotonic() + AIM_TIMEOUT
            while os.pread(fd, 16, 0).decode().strip() != phase:
                assert proc.poll() is None, "worker exited on its own"
                assert time.monotonic() < deadline, f"worker never reached phase {phase!r}"
            delay = rng.uniform(0.0, EXTRA_DELAY.get(phase, 0.004))
            if delay:
                time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return os.pread(fd, 16, 0).decode().strip()
    finally:
        os.close(fd)


def crash_and_check(tmp_path: Path, store: Path, targets: list[str | None], seed: int) -> Counter:
    """Kill a worker once per target, checking the store after every kill; then let a new
    worker run to completion on the same store, gc, and check again. Returns where the
    kills landed."""
    rng = random.Random(seed)
    init_store(store)
    journal = tmp_path / "journal-0"
    phase_file = tmp_path / "phase-0"
    landed: Counter = Counter()
    for n, target in enumerate(targets, 1):
        proc = start(store, 0, journal, "--phase-file", str(phase_file), seed=rng.randrange(2**31))
        wait_ready(proc, journal)
        died_in = kill_at(proc, phase_file, target, rng)
        landed[died_in] += 1
        where = f"kill {n} aimed at {target or 'a random delay'}, died in {died_in!r}, seed {seed}"
        assert proc.returncode == -signal.SIGKILL, f"{where}: {stderr_of(journal)}"
        problems = store_problems(store, {0: journal}, after_last=1, unjournaled=n)
        assert problems == [], f"{where}: {problems}"

    # The store is usable after all that: a new worker continues the same history.
    before = len(read_journal(journal))
    proc = start(store, 0, journal, "--iterations", "20", seed=rng.randrange(2**31))
    wait_ready(proc, journal)
    assert proc.wait(timeout=60) == 0, (
        f"restarted worker failed (seed {seed}): {stderr_of(journal)}"
    )
    assert len(read_journal(journal)) == before + 20
    problems = store_problems(store, {0: journal}, after_last=0, unjournaled=len(targets))
    assert problems == [], f"after the restarted worker (seed {seed}): {problems}"

    # gc after crashes (stale leases, temp files, packs without an index) keeps everything
    # the journal names, and leaves a clean store.
    with Repository.open(store, create=False) as repo:
        gc(repo, prune="now")
    problems = store_problems(store, {0: journal}, after_last=0, unjournaled=len(targets))
    assert problems == [], f"after gc --prune=now (seed {seed}): {problems}"
    return landed


def test_kill_during_writes_loses_nothing_shown_as_completed(tmp_path: Path, store_path: Path):
    landed = crash_and_check(tmp_path, store_path, [*PHASES, None], SEED)
    print(f"{len(PHASES) + 1} kills landed in: {dict(landed)} (seed {SEED})")


@pytest.mark.slow
def test_many_kills_at_random_moments(tmp_path: Path, store_path: Path):
    rng = random.Random(SEED)
    targets: list[str | None] = [*PHASES * 6, *[None] * 18]
    rng.shuffle(targets)
    landed = crash_and_check(tmp_path, store_path, targets, SEED)
    print(f"{len(targets)} kills landed in: {dict(landed)} (seed {SEED})")


def sweep_crash_points(tmp_path: Path, *, bulk: bool, sample: int | None, seed: int) -> int:
    """Kill a worker right after its k-th file-changing os call (see
    writer_worker.install_kill_hook) during one iteration, for every k (or ``sample`` of
    them), each time on a fresh copy of the same store, so the kills land on exactly the
    instants between two calls. After each: the store checks clean, and a new writer carries
    on. Returns how many instants were tried."""
    rng = random.Random(seed)
    base = tmp_path / "base"
    init_store(base / "store")
    proc = start(base / "store", 0, base / "journal-0", "--iterations", "3", seed=seed)
    assert proc.wait(timeout=60) == 0, stderr_of(base / "journal-0")
    args = ["--iterations", "1", "--bulk", str(int(bulk)), "--big-batch", "0"]

    def run_copy(case: Path, *extra: str) -> subprocess.CompletedProcess:
        shutil.copytree(base, case)
        cmd = [str(case / "store"), "--id", "0", "--journal", str(case / "journal-0")]
        cmd += ["--seed", str(seed + 1), *args, *extra]
        return subprocess.run(
            [sys.executable, WORKER, *cmd], capture_output=True, text=True, timeout=60
        )

    counted = run_copy(tmp_path / "count", "--kill-after-calls", str(10**9))
    assert counted.returncode == 0, counted.stderr
    calls = int(counted.stdout.split("calls ")[1])
    # Call k must be the same instant in every run: the iteration writes the same objects
    # (else a new fan-out dir, say, shifts the calls after it, and the last k never comes).
    again = run_copy(tmp_path / "again", "--kill-after-calls", str(10**9))
    assert again.stdout == counted.stdout, "the same seed made different os calls"
    assert read_journal(tmp_path / "again" / "journal-0") == read_journal(
        tmp_path / "count" / "journal-0"
    ), "the same seed wrote a different run"
    points = list(range(1, calls + 1))
    if sample is not None:
        points = sorted(rng.sample(points, min(sample, len(points))))
    for k in points:
        case = tmp_path / f"kill-after-{k}"
        r = run_copy(case, "--kill-after-calls", str(k))
        where = f"killed after os call {k} of {calls} ({'pack' if bulk else 'loose'}, seed {seed})"
        assert r.returncode != 0, f"{where}: not killed, this time: {r.stdout}"
        assert r.returncode == -signal.SIGKILL, f"{where}: {r.stderr}"
        journal = case / "journal-0"
        problems = store_problems(case / "store", {0: journal}, after_last=1, unjournaled=1)
        assert problems == [], f"{where}: {problems}"
        proc = start(case / "store", 0, journal, "--iterations", "1", seed=seed + 2)
        rc = proc.wait(timeout=60)
        assert rc == 0, f"{where}, the next writer failed: {stderr_of(journal)}"
        problems = store_problems(case / "store", {0: journal}, after_last=0, unjournaled=1)
        assert problems == [], f"{where}, after the next writer: {problems}"
        shutil.rmtree(case)
    return len(points)


@pytest.mark.parametrize("bulk", [False, True], ids=["loose", "pack"])
def test_kill_at_sampled_instants_of_one_iteration(tmp_path: Path, bulk: bool):
    sweep_crash_points(tmp_path, bulk=bulk, sample=5, seed=SEED)


@pytest.mark.slow
@pytest.mark.parametrize("bulk", [False, True], ids=["loose", "pack"])
def test_kill_at_every_instant_of_one_iteration(tmp_path: Path, bulk: bool):
    tried = sweep_crash_points(tmp_path, bulk=bulk, sample=None, seed=SEED)
    print(f"{tried} crash instants tried ({'pack' if bulk else 'loose'}, seed {SEED})")


@pytest.mark.parametrize(
    ("created", "bulk"),
    [
        # Was a bug: the empty temp index was read as a published pack; no store opened.
        pytest.param("tmp-pack-*-index", True, id="pack-index-temp"),
        pytest.param("tmp-pack-*", True, id="pack-temp"),
        pytest.param("tmp-[0-9]*", False, id="loose-temp"),
        pytest.param("tmp-lease-*", False, id="lease-temp"),
        pytest.param(".worker-0.tmp-*", False, id="ref-temp"),
    ],
)
def test_kill_right_after_a_file_is_created(tmp_path: Path, created: str, bulk: bool):
    """Named instants the sweep above covers in the slow tier, here in the default one."""
    init_store(tmp_path / "store")
    journal = tmp_path / "journal-0"
    proc = start(tmp_path / "store", 0, journal, "--iterations", "2")
    assert proc.wait(timeout=60) == 0, stderr_of(journal)
    args = ["--iterations", "5", "--bulk", str(int(bulk)), "--kill-after-open", created]
    proc = start(tmp_path / "store", 0, journal, *args, seed=1)
    rc = proc.wait(timeout=60)
    assert rc != 0, f"5 iterations and the library never created a file named {created}"
    assert rc == -signal.SIGKILL, stderr_of(journal)
    problems = store_problems(tmp_path / "store", {0: journal}, after_last=1, unjournaled=1)
    assert problems == []
    proc = start(tmp_path / "store", 0, journal, "--iterations", "1", seed=2)
    assert proc.wait(timeout=60) == 0, stderr_of(journal)
    problems = store_problems(tmp_path / "store", {0: journal}, after_last=0, unjournaled=1)
    assert problems == []


def test_kill_between_ref_move_and_journal_line(tmp_path: Path, store_path: Path):
    """The run whose ref move finished but whose journal line was never written is kept,
    and a restarted worker builds on it."""
    init_store(store_path)
    journal = tmp_path / "journal-0"
    proc = start(store_path, 0, journal, "--die-after-ref", "3")
    assert proc.wait(timeout=60) == -signal.SIGKILL, stderr_of(journal)
    runs = read_journal(journal)
    assert len(runs) == 2
    with Repository.open(store_path, create=False) as repo:
        head = repo.refs.read(ref_name(0))
        assert repo.objects.get_run(head).parents == (runs[-1],)
    assert store_problems(store_path, {0: journal}, after_last=0, unjournaled=1) != []
    assert store_problems(store_path, {0: journal}, after_last=1, unjournaled=1) == []

    proc = start(store_path, 0, journal, "--iterations", "2", seed=1)
    assert proc.wait(timeout=60) == 0, stderr_of(journal)
    assert len(read_journal(journal)) == 4
    with Repository.open(store_path, create=False) as repo:
        assert repo.objects.get_run(read_journal(journal)[2]).parents == (head,)
    assert store_problems(store_path, {0: journal}, after_last=0, unjournaled=1) == []


def test_journal_check_sees_a_lost_run(tmp_path: Path, store_path: Path):
    """The checker itself can fail: a run the journal names, removed from the store."""
    init_store(store_path)
    journal = tmp_path / "journal-0"
    proc = start(store_path, 0, journal, "--iterations", "3")
    assert proc.wait(timeout=60) == 0, stderr_of(journal)
    assert store_problems(store_path, {0: journal}, after_last=0, unjournaled=0) == []
    first = read_journal(journal)[0]
    with Repository.open(store_path) as repo:
        tree = repo.objects.get_run(first).tree
        repo.objects.delete(tree)
    problems = store_problems(store_path, {0: journal}, after_last=0, unjournaled=0)
    assert any(tree in p for p in problems), problems


def test_journal_check_sees_a_ref_behind_the_journal(tmp_path: Path, store_path: Path):
    """A ref moved back to an older run (lost finished work) is reported."""
    init_store(store_path)
    journal = tmp_path / "journal-0"
    proc = start(store_path, 0, journal, "--iterations", "3")
    assert proc.wait(timeout=60) == 0, stderr_of(journal)
    runs = read_journal(journal)
    with Repository.open(store_path) as repo:
        repo.update_ref(ref_name(0), runs[1], expected=runs[2])
    problems = store_problems(store_path, {0: journal}, after_last=1, unjournaled=1)
    assert any("not in its history" in p for p in problems), problems
