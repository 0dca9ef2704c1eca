"""The eval's journal: every finished run (and every model call an agent makes) on disk,
fsynced, before its worker asks the model anything else.

Group commits to the store (``state.Recorder``) are what other evals and ``osmo`` see, but
they are slow (a pack, manifest updates, a run record, a ref) and under load fall behind the
workers by seconds. The journal is the durable record in between: an append-only file per
eval under the store (``StoreLayout.journal``) written by one thread in group commits of
whatever arrived during the last fsync. A worker waits for its result to be durable before
it takes its next run, so a SIGKILL at any moment costs at most one call per worker: those
in flight. Workers also wait (backpressure) while more than ``backlog`` journaled results
are not yet in the store, so the recorder's lag stays bounded.

The next session of the config reads the journal back (``read_journal``) and records what
it holds in its opening commit; a segment is deleted once everything in it is committed,
and the folder when the session ends with nothing left. Replaying a result that was
committed already changes nothing (the same entries), so every crash window is safe.

Segment format (objects_spec.md, "Eval journal"): the magic line, then records, each
``length (u32 LE) | CRC-32 of the payload (u32 LE) | payload``; a payload is ``header
length (u32 LE) | header (JSON) | the sample record | object contents``. A torn or damaged
record ends the segment's replay: appends are sequential, so only the tail can be torn.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from ..backends.fsutil import fsync_dir, write_all
from ..errors import JournalError
from ..hashing import ObjectId
from ..repo import Repository
from .configstate import ConfigState
from .state import PendingObject, SampleResult
from .stored import normalise_sample

log = logging.getLogger(__name__)

MAGIC = b"osmo-journal 1\n"
_FRAME = struct.Struct("<II")
_U32 = struct.Struct("<I")
SEGMENT_BYTES = 1 << 20  # a new segment past this, so committed ones can be deleted
# A group waits this long after its first result for more (unless every writer is waiting
# already): one fsync per result costs about a quarter of the throughput at high rates.
# It waits only while results come faster than one per wait, on average (GroupPace): at a
# model's pace (32 rollouts at 200 ms: one result every ~6 ms) the wait would gather nothing
# and add 2 ms to every call an agent makes; what arrives during an fsync is grouped anyway.
GROUP_WAIT_S = 0.002
_SUFFIX = ".jnl"


def encode_result(res: SampleResult) -> bytes:
    """One journal record (framed and checksummed)."""
    contents = [o.content for o in res.objects if o.content is not None]
    objects = [
        [o.subtree, o.name, o.oid, o.may_exist, -1 if o.content is None else len(o.content)]
        for o in res.objects
    ]
    header = json.dumps([res.name, res.failed, len(res.record), objects]).encode()
    payload = b"".join((_U32.pack(len(header)), header, res.record, *contents))
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_result(payload: bytes) -> SampleResult:
    (hlen,) = _U32.unpack_from(payload)
    pos = 4 + hlen
    name, failed, rlen, objects = json.loads(payload[4:pos])
    record = payload[pos : pos + rlen]
    pos += rlen
    pending = []
    for subtree, oname, oid, may_exist, clen in objects:
        content = None
        if clen >= 0:
            content = payload[pos : pos + clen]
            pos += clen
        pending.append(PendingObject(subtree, oname, content, ObjectId(oid), may_exist))
    if pos != len(payload):
        raise ValueError("record length does not match its contents")
    # An eval's own record (its checksum verified): made what readers see, not checked as a
    # blob from elsewhere is. A version 3 sample's rollout is its ``rollouts`` object.
    rollout_id = next((o.oid for o in pending if o.subtree == "rollouts"), None)
    body = normalise_sample(json.loads(record), name, name, rollout_id=rollout_id) if name else {}
    return SampleResult(name, failed, record, body, pending)


def _read_segment(path: Path) -> Iterator[SampleResult]:
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        if _caught_being_made(data):
            log.debug("osmo: %s was being made when the eval stopped: empty", path)
        else:
            log.warning("osmo: %s is not an eval journal segment: ignored", path)
        return
    pos = len(MAGIC)
    while pos < len(data):
        if pos + _FRAME.size > len(data):
            break  # torn: the crash came mid-write
        length, crc = _FRAME.unpack_from(data, pos)
        if length == 0:
            break  # the zeros a segment is made with: no record there yet
        payload = data[pos + _FRAME.size : pos + _FRAME.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            yield _decode_result(payload)
        except (ValueError, KeyError, TypeError) as e:  # checksum fine, content not: a bug
            log.warning("osmo: %s: a journal record does not parse (%s): ignored", path, e)
            return
        pos += _FRAME.size + length
    if data[pos:].strip(b"\0"):
        log.info("osmo: %s: a torn record at the end ignored", path)


def _caught_being_made(data: bytes) -> bool:
    """A segment a kill caught between its creation and the end of its first write (the
    magic line and its zeros): a part of the magic line at most, then zeros. Records come
    only after the whole magic line, so it holds none."""
    return MAGIC.startswith(data[: len(MAGIC)].rstrip(b"\0")) and not data[len(MAGIC) :].strip(
        b"\0"
    )


def _segments(directory: Path) -> list[Path]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(directory / n for n in names if n.endswith(_SUFFIX))


def read_journal(directory: Path) -> list[SampleResult]:
    """Every intact record of the journal, oldest first."""
    return [res for path in _segments(directory) for res in _read_segment(path)]


def to_replay(repo: Repository, directory: Path, state: ConfigState) -> list[SampleResult]:
    """What a crashed session journaled and the config's ``state`` lacks: not what was
    committed before the crash (a success, or a failure where there is a result already),
    and not a result naming an object that is in neither the journal nor the store (an
    answer reused from another config, collected since: its run is made again)."""
    results = read_journal(directory)
    if not results:
        return []
    carried = {o.oid for res in results for o in res.objects if o.content is not None}
    named = {o.oid for res in results for o in res.objects if o.content is None} - carried
    gone = set(repo.objects.missing(named))
    done = state.names(repo, "samples")
    failed = state.names(repo, "failed") | done
    return [
        res
        for res in results
        if res.name not in (failed if res.failed else done)
        and not any(o.oid in gone for o in res.objects)
    ]


class GroupPace:
    """When a group is worth waiting for: the mean time between appends (an exponentially
    weighted one; a gap counts at most ``_MAX_GAP_S``, so that a pause is forgotten after a
    dozen quick appends) is at most ``GROUP_WAIT_S``."""

    _WEIGHT = 0.25
    _MAX_GAP_S = 0.05

    def __init__(self) -> None:
        self._last: float | None = None
        self.mean_gap = self._MAX_GAP_S  # no wait before the pace is known

    def arrived(self, now: float) -> None:
        if self._last is not None:
            gap = min(now - self._last, self._MAX_GAP_S)
            self.mean_gap += (gap - self.mean_gap) * self._WEIGHT
        self._last = now

    def worth_waiting(self) -> bool:
        return self.mean_gap <= GROUP_WAIT_S


class Journal:
    """The journal of one eval session: ``append`` (from worker threads) returns once the
    result is on disk and the recorder is at most ``backlog`` results behind; ``deliver``
    then has it (called in journal order, from the journal's thread). The committer calls
    ``committed(seq)`` after each commit, with the highest ``seq`` it recorded (``deliver``
    gets ``(seq, result)``). Segments found at open (a crashed session's) count as seq 0."""

    def __init__(
        self,
        directory: Path,
        *,
        writers: int,
        backlog: int,
        deliver: Callable[[int, SampleResult], None],
    ) -> None:
        self.directory = directory
        self._writers = max(1, writers)
        self._pace = GroupPace()
        self.group_waits = 0  # groups that waited for more results (for tests and benches)
        self._backlog = backlog
        self._deliver = deliver
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the journal thread waits on it
        self._room = threading.Condition(self._lock)  # workers held back by the backlog
        # (seq, result, a lock its writer waits on, released once the result is durable):
        # woken, a writer goes on without taking the journal's lock again, as a
        # Condition's waiters all would at once.
        self._pending: list[tuple[int, SampleResult, threading.Lock]] = []
        self._next = 1
        self._committed = -1  # the opening commit records the old segments' results: seq 0
        self._unbounded = False  # the committer is gone: backpressure would never end
        self._closing = False
        self._error: JournalError | None = None
        # Segments no longer written to, with the last seq in each, oldest first.
        self._closed: list[tuple[Path, int]] = [(p, 0) for p in _segments(directory)]
        self._number = int(self._closed[-1][0].stem) + 1 if self._closed else 1
        self._fd = -1
        self._path: Path | None = None
        self._last = 0  # the last seq written to the open segment
        self._size = 0
        self._thread = threading.Thread(target=self._run, name="osmo-journal", daemon=True)
        self._thread.start()

    def append(self, res: SampleResult) -> None:
        durable = threading.Lock()
        durable.acquire()
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._closing:
                return  # the session is over (an abort): nothing waits for it any more
            seq = self._next
            self._next += 1
            self._pace.arrived(time.monotonic())
            self._pending.append((seq, res, durable))
            if len(self._pending) in (1, self._writers):  # a group starts, or is full
                self._work.notify()
        durable.acquire()  # released by the journal's thread
        if self._error is not None:
            raise self._error
        if seq - self._committed > self._backlog:
            with self._lock:
                while seq - self._committed > self._backlog and not self._unbounded:
                    self._room.wait()

    def committed(self, seq: int) -> None:
        """Everything up to ``seq`` is in the store: its segments can go."""
        with self._lock:
            self._committed = max(self._committed, seq)
            self._room.notify_all()
            gone = [p for p, last in self._closed if last <= seq]
            self._closed = [(p, last) for p, last in self._closed if last > seq]
        for path in gone:
            path.unlink(missing_ok=True)

    def unbound(self) -> None:
        """Stop holding workers back (the committer has stopped)."""
        with self._lock:
            self._unbounded = True
            self._room.notify_all()

    def close(self) -> None:
        """Write what is pending, stop the thread, and delete what is committed; the folder
        goes too if nothing is left in it."""
        with self._lock:
            self._closing = True
            self._unbounded = True
            self._work.notify()
            self._room.notify_all()
        self._thread.join()
        with self._lock:
            if self._path is not None:
                self._closed.append((self._path, self._last))
                self._path = None
        self.committed(self._committed)
        with contextlib.suppress(OSError):  # not empty: a later session replays the rest
            self.directory.rmdir()

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._pending and not self._closing:
                        self._work.wait()
                    wait = (
                        len(self._pending) < self._writers
                        and not self._closing
                        and self._pace.worth_waiting()
                    )
                    self.group_waits += wait
                    deadline = time.monotonic() + GROUP_WAIT_S
                    while wait and len(self._pending) < self._writers and not self._closing:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._work.wait(left)
                    batch, self._pending = self._pending, []
                if not batch:
                    break
                try:
                    self._write(b"".join([encode_result(res) for _, res, _ in batch]))
                except OSError as e:
                    with self._lock:
                        self._error = JournalError(self.directory, e)
                        batch += self._pending  # nobody waits for a write that failed
                        self._pending = []
                    for _, _, durable in batch:
                        durable.release()
                    return
                self._last = batch[-1][0]
                for seq, res, durable in batch:
                    self._deliver(seq, res)
                    durable.release()
                if self._size >= SEGMENT_BYTES:
                    self._rotate()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _write(self, data: bytes) -> None:
        if self._fd < 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._path = self.directory / f"{self._number:08d}{_SUFFIX}"
            self._number += 1
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            # Made whole (zeros) and synced up front: each group's fsync then writes data
            # in place, with no change of the file's size to commit (on ext4, a third of
            # the time of an append's fsync). A record's length is never 0.
            write_all(self._fd, MAGIC + bytes(SEGMENT_BYTES - len(MAGIC)))
            os.fsync(self._fd)
            os.lseek(self._fd, len(MAGIC), os.SEEK_SET)
            self._size = len(MAGIC)
            # A new file's name is durable once its folder is synced, and so on up to the
            # store's root (the folders may be new).
            for d in (self.directory, self.directory.parent, self.directory.parent.parent):
                fsync_dir(d)
        write_all(self._fd, data)  # past the zeros, the segment grows: rotated after
        os.fdatasync(self._fd)
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        with self._lock:
            assert self._path is not None
            self._closed.append((self._path, self._last))
            self._path = None
            done = self._committed
        self.committed(done)
