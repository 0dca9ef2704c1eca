"""A writer process for the crash and gc-concurrency tests. A script, not a test module.

    python tests/writer_worker.py STORE --id N --journal PATH [options]

Each iteration writes blobs (loose, or through ``objects.bulk()`` into a pack), updates the
worker's manifest, writes a RunRecord whose parent is the previous run, and moves
``refs/evals/worker-<id>`` by compare-and-swap. Only after the ref moved is the run id
appended to the journal (write + fsync): the journal is what a user was shown as completed.

For the gc tests, ``--pool-groups``/``--pin``/``--scratch``, ``--abandon`` and
``--linger-every`` make garbage and re-use it: a shared pool of content every worker puts
again (the test seeds it as old, unreachable objects), side runs on refs deleted straight
away, iterations written and never committed, and iterations that hold their objects
unnamed for seconds (only the writer lease protects them then).
Right after a ref moves, the worker checks that what it just wrote still exists; a loss
exits with LOST_EXIT and a message naming the object, so a race shows where it happened.

For the crash tests, ``--phase-file`` shows where the worker is (to aim kills), and
``--die-after-ref``, ``--kill-after-calls`` and ``--kill-after-open`` kill it at exact
instants. The helpers at the end (``start``, ``store_problems``...) are the tests' checks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

from osmo_store import (
    ObjectType,
    OsmoError,
    Repository,
    RunRecord,
    TreeEntry,
    update_tree,
    write_tree,
)
from osmo_store.hashing import ObjectId, is_oid
from osmo_store.maintenance.fsck import fsck
from osmo_store.maintenance.reachability import walk

LOST_EXIT = 3
POOL_BIG_GROUP_EVERY = 16
POOL_BIG_GROUP_SIZE = 300  # more than tree.LEAF_MAX: a trie with internal nodes
POOL_GROUP_SIZE = 8
_WORDS = (
    "the", "model", "answered", "correctly", "incorrectly", "partially", "because", "prompt",
    "row", "score", "judge", "reference", "completion", "token", "latency", "retry", "agent",
    "tool", "call", "result", "passed", "failed",
)  # fmt: skip


def ref_name(worker_id: int) -> str:
    return f"refs/evals/worker-{worker_id}"


def jsonish(rng: random.Random, size: int) -> bytes:
    """Random JSON-looking bytes of about ``size`` bytes, compressible like real results."""
    record: dict[str, object] = {"row": rng.randrange(10**9), "score": round(rng.random(), 6)}
    text: list[str] = []
    while len(json.dumps(record)) + sum(len(w) + 1 for w in text) < size:
        text.extend(rng.choices(_WORDS, k=16))
        text.append(str(rng.randrange(10**6)))
    record["response"] = " ".join(text)
    return json.dumps(record, sort_keys=True).encode()


# --- the shared pool ----------------------------------------------------------------------


def pool_members(group: int) -> range:
    """Pool item numbers of one group. Item numbers are sparse so groups can differ in size."""
    big = group % POOL_BIG_GROUP_EVERY == POOL_BIG_GROUP_EVERY - 1
    size = POOL_BIG_GROUP_SIZE if big else POOL_GROUP_SIZE
    return range(group * 1000, group * 1000 + size)


def pool_blob(item: int) -> bytes:
    """Content of pool item ``item``: the same bytes in every process."""
    rng = random.Random(f"pool-{item}")
    return jsonish(rng, rng.randrange(300, 1200))


def write_pool_group(store, group: int) -> ObjectId:
    """Put every blob of ``group`` and its manifest. Every node is put again (not referred
    to by id), so each existing object is freshened, never assumed."""
    entries = [
        TreeEntry(f"pool-{i}", ObjectType.BLOB, store.put(ObjectType.BLOB, pool_blob(i)))
        for i in pool_members(group)
    ]
    return write_tree(store, entries)


def seed_pool(repo: Repository, groups: int) -> list[ObjectId]:
    """Write the pool as it would be after an eval whose ref was deleted: every group under
    a ref (even groups loose, odd ones in a pack each), then the refs deleted. Returns the
    group manifests. Ageing the files is the caller's business; until gc expires the reflogs
    (``--expire-reflog=now``) the deleted refs' history still reaches the pool."""
    roots = []
    for g in range(groups):
        if g % 2:
            with repo.objects.bulk() as w:
                tree = write_pool_group(w, g)
                run = w.put(ObjectType.RUN, RunRecord(tree, (), {"seed": g}).to_content())
        else:
            tree = write_pool_group(repo.objects, g)
            run = repo.objects.put_run(RunRecord(tree, (), {"seed": g}))
        repo.update_ref(f"refs/seed/group-{g}", run, expected=None)
        repo.delete_ref(f"refs/seed/group-{g}", expected=run)
        roots.append(tree)
    return roots


# --- the worker ---------------------------------------------------------------------------


class LostObject(Exception):
    pass


# os functions through which the library changes files. ``open`` counts only when it may
# create or write; ``close`` and read-only opens change nothing a kill would not (and their
# number varies: readers close their fds when the garbage collector gets to them).
_FILE_CHANGING_CALLS = (
    "open", "write", "fsync", "link", "rename", "replace", "unlink", "mkdir", "utime",
    "ftruncate",
)  # fmt: skip
_WRITING_OPEN = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC


def _opens_for_writing(path, flags, *args, **kwargs) -> bool:
    return bool(flags & _WRITING_OPEN)


def install_kill_hook(after_calls: int, after_open: str | None):
    """SIGKILL this process right after its ``after_calls``-th file-changing os call, or
    right after it opens a file whose name matches the glob ``after_open``: an exact crash
    instant that the same seed on the same store reproduces. Returns a call counter."""
    count = 0

    def wrap(name, fn):
        def call(*args, **kwargs):
            nonlocal count
            result = fn(*args, **kwargs)
            if name == "open" and not _opens_for_writing(*args, **kwargs):
                return result
            count += 1
            opened = (
                name == "open" and after_open and fnmatch(os.path.basename(args[0]), after_open)
            )
            if count == after_calls or opened:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return call

    for name in _FILE_CHANGING_CALLS:
        setattr(os, name, wrap(name, getattr(os, name)))
    return lambda: count


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.ref = ref_name(args.id)
        self.phase_fd = -1
        if args.phase_file:
            self.phase_fd = os.open(args.phase_file, os.O_RDWR | os.O_CREAT, 0o644)
        self.set_phase("open")
        self.journal_fd = open_journal(Path(args.journal))
        self.repo = Repository.open(args.store, create=False)
        self.head = self.repo.refs.read(self.ref)
        self.tree: ObjectId | None = None
        self.seq = 0
        if self.head is not None:
            # Continue after a crash from whatever the ref says, which may be one run past
            # the journal (ref moved, journal line not yet written).
            record = self.repo.objects.get_run(self.head)
            self.tree, self.seq = record.tree, record.meta["seq"]
        self.recent: list[bytes] = []  # contents written before, to put again (dedupe)
        self.names: list[str] = []  # names this process added, candidates for deletion
        self.lingered = time.monotonic()
        self.commits = 0

    def set_phase(self, phase: str) -> None:
        """Where the worker is, so the crash test can aim its kills (one pwrite, no fsync)."""
        if self.phase_fd >= 0:
            os.pwrite(self.phase_fd, phase.encode().ljust(16), 0)

    def run(self) -> None:
        print("ready", flush=True)
        calls = None
        if self.args.kill_after_calls or self.args.kill_after_open:
            calls = install_kill_hook(self.args.kill_after_calls, self.args.kill_after_open)
        while self.args.iterations == 0 or self.commits < self.args.iterations:
            if self.args.stop_file and os.path.exists(self.args.stop_file):
                break
            if self.args.reopen:
                # A new Repository is a new writer lease: gc's cutoff moves forward, so what
                # earlier iterations left unreachable becomes prunable while we re-use it.
                self.repo.close()
                self.repo = Repository.open(self.args.store, create=False)
            if self.args.pool_groups and self.rng.random() < self.args.scratch:
                self.scratch_run()
            self.iteration()
            if self.args.throttle:
                self.set_phase("idle")
                time.sleep(self.rng.uniform(0, self.args.throttle))
        self.set_phase("exit")
        self.repo.close()
        if calls is not None:
            print(f"calls {calls()}", flush=True)

    def iteration(self) -> None:
        """One unit of work: commit a run, or (``--abandon``) write it and walk away."""
        rng = self.rng
        current = self.repo.refs.read(self.ref)
        if current != self.head:
            raise RuntimeError(f"{self.ref} moved under us: {self.head} -> {current}")
        written: list[tuple[ObjectId, ObjectType]] = []
        if rng.random() < self.args.bulk:
            self.set_phase("pack")
            with self.repo.objects.bulk() as w:
                tree = self.write_manifest(w, written)
                run = None
                if rng.random() < 0.5:
                    run = w.put(ObjectType.RUN, self.record(tree).to_content())
                self.set_phase("pack-publish")
        else:
            self.set_phase("objects")
            tree = self.write_manifest(self.repo.objects, written)
            run = None
        if run is None:
            self.set_phase("run")
            run = self.repo.objects.put_run(self.record(tree))
        written.append((run, ObjectType.RUN))
        if rng.random() < self.args.abandon:
            return
        if self.args.linger_every and time.monotonic() - self.lingered >= self.args.linger_every:
            # A long pause between writing objects and naming them (a slow model call): gc
            # runs several times meanwhile, and only our lease keeps it off them.
            self.set_phase("linger")
            time.sleep(self.args.linger_seconds)
            self.lingered = time.monotonic()
        self.set_phase("ref")
        self.repo.update_ref(self.ref, run, expected=self.head, message=f"seq {self.seq + 1}")
        self.commits += 1
        if self.commits == self.args.die_after_ref:
            # The instant a timed kill can hardly hit: the ref has moved, the user has not
            # been told yet.
            os.kill(os.getpid(), signal.SIGKILL)
        self.set_phase("journal")
        os.write(self.journal_fd, f"{run}\n".encode())
        os.fsync(self.journal_fd)
        self.set_phase("verify")
        self.head, self.tree, self.seq = run, tree, self.seq + 1
        self.verify(written, f"run {run} (seq {self.seq})")

    def record(self, tree: ObjectId) -> RunRecord:
        parents = (self.head,) if self.head is not None else ()
        # Nothing that differs between processes (no pid): the same seed on the same store
        # must write the same objects, so that the crash sweep's k-th os call is one instant.
        meta = {"worker": self.args.id, "seq": self.seq + 1}
        return RunRecord(tree, parents, meta)

    def write_manifest(self, store, written: list[tuple[ObjectId, ObjectType]]) -> ObjectId:
        rng = self.rng
        changes: dict[str, TreeEntry | None] = {}
        # Now and then a big batch, so manifests grow past one leaf into a trie.
        big = rng.random() < self.args.big_batch
        count = rng.randrange(60, 150) if big else rng.randrange(1, 9)
        for k in range(count):
            if self.recent and rng.random() < 0.25:
                content = rng.choice(self.recent)  # already stored: freshen, not rewrite
            else:
                content = jsonish(rng, rng.randrange(1000, 4000))
                self.recent.append(content)
            name = f"row-{self.seq + 1}-{k}"
            changes[name] = self.put(store, ObjectType.BLOB, content, name, written)
        if self.args.pool_groups:
            for _ in range(rng.randrange(0, 3)):
                item = rng.choice(pool_members(rng.randrange(self.args.pool_groups)))
                name = f"pool-{item}"
                changes[name] = self.put(store, ObjectType.BLOB, pool_blob(item), name, written)
            if rng.random() < self.args.pin:
                g = rng.randrange(self.args.pool_groups)
                tree = write_pool_group(store, g)
                written.append((tree, ObjectType.TREE))
                changes[f"group-{g}"] = TreeEntry(f"group-{g}", ObjectType.TREE, tree)
        if len(self.recent) > 400:
            del self.recent[:200]
        if self.names and rng.random() < 0.2:
            for name in rng.sample(self.names, min(len(self.names), rng.randrange(1, 4))):
                if name not in changes:
                    changes[name] = None
        self.names.extend(n for n, e in changes.items() if e is not None)
        self.set_phase("tree")
        if self.tree is None:
            tree = write_tree(store, [e for e in changes.values() if e is not None])
        else:
            tree = update_tree(store, self.tree, changes)
        written.append((tree, ObjectType.TREE))
        return tree

    @staticmethod
    def put(store, otype: ObjectType, content: bytes, name: str, written: list) -> TreeEntry:
        oid = store.put(otype, content)
        written.append((oid, otype))
        return TreeEntry(name, otype, oid)

    def scratch_run(self) -> None:
        """A side run on a ref that is deleted at once: its objects become unreachable (once
        gc expires the reflog), and later iterations put them again."""
        g = self.rng.randrange(self.args.pool_groups)
        self.set_phase("scratch")
        if self.rng.random() < 0.5:
            with self.repo.objects.bulk() as w:
                tree = write_pool_group(w, g)
        else:
            tree = write_pool_group(self.repo.objects, g)
        run = self.repo.objects.put_run(RunRecord(tree, (), {"scratch": self.args.id}))
        name = f"refs/scratch/worker-{self.args.id}"
        self.repo.update_ref(name, run)
        self.verify([(tree, ObjectType.TREE), (run, ObjectType.RUN)], f"scratch run {run}")
        self.repo.delete_ref(name, expected=run)

    def verify(self, written: list[tuple[ObjectId, ObjectType]], what: str) -> None:
        """Everything just put is reachable from a ref now, so gc must have left it."""
        for oid, otype in written:
            if otype is ObjectType.BLOB:
                problems = [] if self.repo.objects.has(oid) else [f"missing blob {oid}"]
            elif otype is ObjectType.TREE and oid != self.tree:
                problems = walk(self.repo.objects, {oid: what}, check=True).problems
            else:
                # The run and the root manifest: read, not walked (the walk would follow the
                # whole history); their new nodes and blobs are checked one by one above.
                try:
                    self.repo.objects.get(oid)
                    problems = []
                except OsmoError as e:
                    problems = [f"{otype} {oid}: {e}"]
            if problems:
                raise LostObject(f"after committing {what}: " + "; ".join(problems))


# --- used by the tests: starting workers, checking a store afterwards ------------------------


def start(store: Path, worker_id: int, journal: Path, *extra: str, seed: int = 0, **kw):
    """Start a worker process; its stdout is a pipe (it prints ``ready`` once the store is
    open), its stderr goes to ``<journal>.stderr``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), str(store), "--id", str(worker_id)]
    cmd += ["--journal", str(journal), "--seed", str(seed), *extra]
    stderr = open(f"{journal}.stderr", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, **kw)
    finally:
        stderr.close()


def stderr_of(journal: Path) -> str:
    path = Path(f"{journal}.stderr")
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def read_journal(path: Path) -> list[ObjectId]:
    """Complete lines only: a line cut short by a kill was never fsynced, never shown."""
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")[:-1]
    bad = [line for line in lines if not is_oid(line.decode(errors="replace"))]
    assert not bad, f"{path.name}: lines that are not run ids: {bad[:3]}"
    return [ObjectId(line.decode()) for line in lines]


def worker_problems(
    repo: Repository, worker_id: int, journal: Path, *, after_last: int, unjournaled: int
) -> list[str]:
    """What is wrong with one worker's journal against the store.

    Every journal entry and everything it reaches must be present and well-formed; the
    ref's first-parent chain must be the whole history (seq 1, 2, ...), hold every journal
    entry in journal order, and run at most ``after_last`` commits past the last journal
    entry, with at most ``unjournaled`` commits missing from the journal overall (a kill
    between the ref move and the journal line leaves one)."""
    entries = read_journal(journal)
    name = ref_name(worker_id)
    problems = []
    if len(set(entries)) != len(entries):
        problems.append(f"{journal.name}: a run id appears twice")
    roots = {oid: f"{journal.name} line {i + 1}" for i, oid in enumerate(entries)}
    problems += walk(repo.objects, roots, check=True).problems
    head = repo.refs.read(name)
    if head is None:
        if entries:
            problems.append(f"{name} is missing but {journal.name} has {len(entries)} runs")
        return problems
    chain = []
    oid: ObjectId | None = head
    try:
        while oid is not None:
            record = repo.objects.get_run(oid)
            chain.append((oid, record.meta.get("seq")))
            oid = record.parents[0] if record.parents else None
    except OsmoError as e:
        return [*problems, f"{name}: history broken at {oid}: {e}"]
    chain.reverse()
    seqs = [seq for _, seq in chain]
    if seqs != list(range(1, len(chain) + 1)):
        problems.append(f"{name}: history seqs are {seqs[:10]}..., not 1, 2, 3, ...")
    position = {oid: i for i, (oid, _) in enumerate(chain)}
    missing = [e for e in entries if e not in position]
    if missing:
        problems.append(f"{name}: journal runs not in its history: {missing[:3]}")
        return problems
    places = [position[e] for e in entries]
    if places != sorted(places):
        problems.append(f"{name}: journal order differs from history order")
    past = len(chain) - 1 - (places[-1] if places else -1)
    if past > after_last:
        problems.append(
            f"{name} is {past} runs past the last journal entry (at most {after_last} allowed)"
        )
    if len(chain) - len(entries) > unjournaled:
        problems.append(
            f"{name}: {len(chain) - len(entries)} runs in history are not in the journal "
            f"(at most {unjournaled} allowed)"
        )
    return problems


def store_problems(
    store: Path, journals: dict[int, Path], *, after_last: int, unjournaled: int
) -> list[str]:
    """fsck --full (a superset of plain fsck's checks), every ref a readable run record,
    every worker's journal. Leftover temp files are notes, not problems."""
    try:
        repo = Repository.open(store, create=False)
    except OsmoError as e:
        return [f"the store does not open: {e}"]
    with repo:
        problems = [f"fsck --full: {p}" for p in fsck(repo, full=True).problems]
        for name, oid in repo.refs.list().items():
            try:
                repo.objects.get_run(oid)
            except OsmoError as e:
                problems.append(f"{name} -> {oid} is not a readable run record: {e}")
        for worker_id, journal in journals.items():
            problems += worker_problems(
                repo, worker_id, journal, after_last=after_last, unjournaled=unjournaled
            )
    return problems


def open_journal(path: Path) -> int:
    """Open the journal for appending. A partial last line (a kill mid-write; never
    fsynced, so never shown as completed) is cut off so the next line starts clean."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.ftruncate(fd, data.rfind(b"\n") + 1)
    return fd


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=0, help="commits to make; 0: no limit")
    p.add_argument("--stop-file", help="stop (cleanly) once this file exists")
    p.add_argument("--die-after-ref", type=int, default=0, help="SIGKILL self after ref move N")
    p.add_argument("--kill-after-calls", type=int, default=0, help="SIGKILL self after os call N")
    p.add_argument("--kill-after-open", help="SIGKILL self after opening a file named like GLOB")
    p.add_argument("--bulk", type=float, default=0.35, help="P(an iteration writes a pack)")
    p.add_argument("--big-batch", type=float, default=0.08, help="P(60-150 blobs, not 1-8)")
    p.add_argument("--phase-file", help="keep the current phase name at offset 0 of this file")
    p.add_argument("--reopen", action="store_true", help="new Repository (lease) per iteration")
    p.add_argument("--throttle", type=float, default=0.0, help="max sleep between iterations")
    p.add_argument("--pool-groups", type=int, default=0, help="groups in the shared pool")
    p.add_argument("--pin", type=float, default=0.0, help="P(commit a whole pool group)")
    p.add_argument("--scratch", type=float, default=0.0, help="P(side run on a deleted ref)")
    p.add_argument("--abandon", type=float, default=0.0, help="P(never commit an iteration)")
    p.add_argument("--linger-every", type=float, default=0.0, help="seconds between lingers")
    p.add_argument("--linger-seconds", type=float, default=3.0, help="objects held uncommitted")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    worker = Worker(parse_args(argv))
    try:
        worker.run()
    except LostObject as e:
        print(f"LOST: {e}", file=sys.stderr, flush=True)
        return LOST_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
