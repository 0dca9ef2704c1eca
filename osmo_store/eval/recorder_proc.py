"""Group commits in a child process, so recording runs beside the model calls.

An eval's threads share one interpreter lock. The committer's work (compressing objects,
updating manifests, writing packs) is pure Python in stretches of tens of milliseconds,
and while it holds the lock, worker threads whose model answers have arrived wait for the
interpreter's switch interval at every step: at hundreds of runs per second that cost far
more throughput than the commit's own CPU. ``RecorderProcess`` runs the same ``Recorder``
in a child interpreter (on another core) and talks to it over a pipe; the parent keeps
only the batching, the progress display and the summary.

The child is the parent's interpreter running this module's ``main`` (not
``multiprocessing``, which would re-run a user's script that lacks a main guard). Messages
are pickles on its stdin/stdout. It runs in a session of its own and ignores SIGINT (a
terminal's Ctrl-C is the eval's to handle), exits when its stdin closes, and on Linux is
killed with its parent, so a killed eval never leaves a writer behind; a commit cut short
is like any crash of the store's writer (atomic).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import OsmoError, RecorderDied
from ..hashing import ObjectId
from ..repo import Repository
from . import heap
from .state import ConfigState, PendingObject, Recorder, SampleResult

log = logging.getLogger(__name__)


# The child's first lines: the same osmo_store as ours, however we were imported, and not
# the eval's working directory on the import path (a user's json.py there must not shadow).
_BOOTSTRAP = """
import os, sys, importlib.util
try:
    cwd = os.getcwd()
except OSError:  # the working directory was deleted
    cwd = ""
sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]
root = sys.argv[1]
spec = importlib.util.find_spec("osmo_store")
if spec is None or not (spec.origin or "").startswith(root + os.sep):
    sys.path.insert(0, root)
from osmo_store.eval.recorder_proc import main
main()
"""


def merge_counts(fields: dict[str, Any], tree_counts: dict[str, int]) -> dict[str, Any]:
    """A run record's metadata: ``fields`` with the manifest counts the commit found added
    to its ``counts`` (a module-level function, so the builder can cross the pipe)."""
    meta = dict(fields)
    meta["counts"] = {**fields.get("counts", {}), **tree_counts}
    return meta


def meta_builder(fields: dict[str, Any]) -> Callable[[dict[str, int]], dict[str, Any]]:
    return functools.partial(merge_counts, fields)


class RecorderProcess:
    """``Recorder``'s interface (``commit``, ``trees``, ``counts``, ``head``, ...), served by
    a child process writing to ``repo``'s store.

    The child says whether it is ready (store opened) before its first commit; if it never
    is (it cannot start, import or open the store: a frozen app, a deleted working
    directory...), the commits are made in this process instead, with a warning. A child
    that dies after that is an error (``RecorderDied``)."""

    def __init__(
        self,
        repo: Repository,
        config_id: str,
        state: ConfigState,
        parents: tuple[ObjectId, ...],
        *,
        head: ObjectId | None,
        failed_names: set[str] | None,
    ) -> None:
        assert repo.path is not None
        self.config_id = config_id
        self.trees = dict(state.trees)
        self.head = head
        self.commits = 0
        self.recorded = 0
        self.counts: dict[str, int] = {}
        self.last_meta: dict[str, Any] = {}
        self._ready = False
        self._fallback: Recorder | None = None
        # What the in-process fallback needs (copied: the failed-names set is updated).
        self._local = (repo, state, parents, None if failed_names is None else set(failed_names))
        package_root = str(Path(__file__).resolve().parents[2])
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, package_root, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C goes to the eval only, from the start
        )
        setup = (str(repo.path), config_id, state.run_id, dict(state.trees), parents, head)
        with contextlib.suppress(RecorderDied):  # found out at the first commit
            self._send(("open", setup, failed_names))

    def _send(self, message: Any) -> None:
        assert self._proc.stdin is not None
        try:
            pickle.dump(message, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._died() from None

    def _receive(self) -> Any:
        assert self._proc.stdout is not None
        try:
            return pickle.load(self._proc.stdout)
        except Exception:  # noqa: BLE001 - EOF or a cut-off reply: either way the child is gone
            raise self._died() from None

    def _died(self) -> RecorderDied:
        code = self._proc.poll()
        if code is None:
            self._proc.kill()
            code = self._proc.wait()
        return RecorderDied(f"the eval's recorder process died (exit status {code})")

    def _check_ready(self) -> None:
        """Wait for the child's word that it opened the store; else record in-process."""
        if self._ready or self._fallback is not None:
            return
        try:
            reply = self._receive()
        except RecorderDied as e:
            reason = str(e)
        else:
            if reply[0] == "ready":
                self._ready = True
                return
            reason = f"{type(reply[1]).__name__}: {reply[1]}"
        self.close()
        log.warning("recording in the eval's own process: no recorder process (%s)", reason)
        repo, state, parents, failed_names = self._local
        self._fallback = Recorder(repo, self.config_id, state, parents, failed_names=failed_names)
        self._fallback.head = self.head

    def commit(
        self,
        results: Iterable[SampleResult],
        meta: Callable[[dict[str, int]], dict[str, Any]],
        *,
        final: bool = False,
    ) -> ObjectId:
        self._check_ready()
        if self._fallback is not None:
            rec = self._fallback
            run_id = rec.commit(results, meta, final=final)
            self.trees, self.counts, self.last_meta = rec.trees, rec.counts, rec.last_meta
            self.recorded, self.commits, self.head = rec.recorded, rec.commits, rec.head
            return run_id
        batch = [
            (
                r.name,
                r.failed,
                r.record,
                [(o.subtree, o.name, o.content, o.oid, o.may_exist) for o in r.objects],
            )
            for r in results
        ]
        self._send(("commit", batch, meta, final))
        reply = self._receive()
        if reply[0] == "error":
            raise reply[1]
        _, run_id, self.trees, self.counts, self.last_meta, self.recorded, self.commits = reply
        self.head = run_id
        return run_id

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(RecorderDied):
                self._send(("close",))
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        finally:
            for f in (self._proc.stdin, self._proc.stdout):
                if f is not None:
                    # A write the child never read (it is gone) fails again here; the file is
                    # closed all the same.
                    with contextlib.suppress(OSError):
                        f.close()


def _die_with_parent() -> None:
    """Linux: have the kernel kill us when the parent dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip, else an OsmoError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling problem
        return OsmoError(f"recording failed: {type(exc).__name__}: {exc}")


def serve(inp: BinaryIO, out: BinaryIO, parent: int | None = None) -> None:
    """The child's loop: one ``Recorder`` on a store of its own, commits on request."""
    _die_with_parent()
    if parent is not None and os.getppid() != parent:
        return  # the parent died before the kernel was told to kill us with it
    try:
        _, setup, failed_names = pickle.load(inp)
    except Exception:  # noqa: BLE001 - the parent is gone before it said anything
        return
    path, config_id, run_id, trees, parents, head = setup
    try:
        repo = Repository.open(path, create=False)
        rec = Recorder(
            repo, config_id, ConfigState(run_id, None, trees), parents, failed_names=failed_names
        )
        rec.head = head
    except Exception as e:  # noqa: BLE001 - the parent records in-process instead
        pickle.dump(("error", _portable(e)), out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
        return
    pickle.dump(("ready",), out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()
    try:
        while True:
            try:
                message = pickle.load(inp)
            except Exception:  # noqa: BLE001 - EOF, or a message cut off: the parent is gone
                return
            if message[0] == "close":
                return
            _, batch, meta, final = message
            try:
                results = [
                    SampleResult(name, failed, record, {}, [PendingObject(*o) for o in objects])
                    for name, failed, record, objects in batch
                ]
                run_id = rec.commit(results, meta, final=final)
                del results
                heap.give_back()  # the batch, its pack's buffers, a fold's: freed across the heap
                reply: tuple = (
                    "ok", run_id, rec.trees, rec.counts, rec.last_meta, rec.recorded, rec.commits
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
                reply = ("error", _portable(e))
            pickle.dump(reply, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
    finally:
        repo.close()


def main() -> None:
    # Stopping is the eval's decision: a Ctrl-C, or a SIGTERM/SIGHUP sent to the whole
    # group or cgroup (systemctl stop), must not cut the recording of its grace period.
    # The child still ends with the eval: on "close", on EOF, or by PR_SET_PDEATHSIG.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    # Replies go to a private copy of stdout; fd 1 becomes stderr, so a stray print from
    # any library cannot corrupt the stream.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    parent = int(sys.argv[2]) if len(sys.argv) > 2 else None
    serve(sys.stdin.buffer, replies, parent)


if __name__ == "__main__":
    main()
