"""Layer 4: refs, named pointers to objects, moved only by compare-and-swap.

Every update and deletion is appended to the ref's reflog (old, new, time, who, why)
before the ref itself changes, so gc and fsck can treat recent history as reachable and
a user can always find where a ref used to point.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from .backends.fsutil import fsync_dir, replace_durably, write_all
from .errors import InvalidRefName, LockTimeout, RefConflict, RefNotFound
from .hashing import ZERO_ID, ObjectId, is_oid

REF_LOCK_TIMEOUT = 30.0
# Leave room under the usual 255-byte file name limit for ".lock" and temp-file affixes.
MAX_COMPONENT_BYTES = 200
MAX_NAME_BYTES = 1024
# A reflog lives at logs/<name>~log: "~" cannot occur in a ref name, so the log of refs/a
# never collides with the folder holding the logs of refs/a/b (kept after refs/a/b is gone).
REFLOG_SUFFIX = "~log"
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
# every character str.splitlines() treats as a line boundary
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: ``expected`` value meaning "do not compare" (an unconditional update)
ANY = _Any()


def validate_ref_name(name: str) -> str:
    """Git's check-ref-format rules, and the name must live under ``refs/``. This is what
    keeps a ref name from reaching outside the store (no ``..``, no absolute paths)."""
    if not isinstance(name, str) or not name:
        raise InvalidRefName(str(name), "empty")
    if not name.startswith("refs/"):
        raise InvalidRefName(name, "ref names start with refs/ (for example refs/tags/best)")
    if _BAD_CHARS.search(name):
        raise InvalidRefName(name, "contains a space, control or special character (~^:?*[\\)")
    if ".." in name or "@{" in name or name.endswith((".", "/", ".lock")) or "//" in name:
        raise InvalidRefName(name, "contains '..', '@{', '//' or a bad ending")
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            raise InvalidRefName(name, f"component {part!r} starts with '.' or ends with '.lock'")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidRefName(name, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidRefName(name, f"longer than {MAX_NAME_BYTES} bytes")
    return name


def default_who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class ReflogEntry:
    old: ObjectId | None
    new: ObjectId | None
    time_ns: int
    who: str
    message: str

    def to_line(self) -> bytes:
        # Everything str.splitlines() would split on is folded too, so no message can
        # forge a second entry in any reader's view of the log.
        who = _LINE_BREAKS.sub("_", self.who.replace(" ", "_").replace("\t", "_")) or "-"
        msg = _LINE_BREAKS.sub(" ", self.message.replace("\t", " "))
        return f"{self.old or ZERO_ID} {self.new or ZERO_ID} {self.time_ns} {who}\t{msg}\n".encode()

    @classmethod
    def from_line(cls, line: str) -> ReflogEntry | None:
        head, tab, msg = line.partition("\t")
        parts = head.split(" ")
        if not tab or len(parts) != 4 or not (is_oid(parts[0]) and is_oid(parts[1])):
            return None
        if not parts[2].isdigit():
            return None
        old = None if parts[0] == ZERO_ID else ObjectId(parts[0])
        new = None if parts[1] == ZERO_ID else ObjectId(parts[1])
        return cls(old, new, int(parts[2]), parts[3], msg)


class RefStore(ABC):
    @abstractmethod
    def read(self, name: str) -> ObjectId | None: ...

    @abstractmethod
    def list(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        """All refs whose name starts with ``prefix``, sorted by name."""

    @abstractmethod
    def _swap(
        self, name: str, new: ObjectId | None, expected: object, entry: ReflogEntry | None
    ) -> None:
        """Atomically: check ``expected`` (ANY, None for absent, or an id), append
        ``entry`` to the reflog (unless None), then set (or delete, if ``new`` is None)."""

    @abstractmethod
    def reflog(self, name: str) -> list[ReflogEntry]:
        """Entries oldest first; [] if none. Kept after the ref is deleted."""

    @abstractmethod
    def reflog_names(self) -> list[str]: ...

    @abstractmethod
    def expire_reflog(self, name: str, cutoff_ns: int) -> int:
        """Drop entries older than ``cutoff_ns``; return how many were dropped."""

    def damaged(self) -> list[str]:
        """Names of refs whose stored value is unreadable (a backend without such a state
        returns [])."""
        return []

    def update(
        self,
        name: str,
        new: ObjectId,
        expected: object = ANY,
        *,
        message: str = "",
        who: str | None = None,
        log: bool = True,
    ) -> None:
        """Compare-and-swap ``name`` to ``new``. ``log=False`` skips the reflog: for
        checkpoints that supersede each other within one logged operation (an eval's
        intermediate flushes), whose history nobody needs kept alive."""
        validate_ref_name(name)
        if not is_oid(new) or new == ZERO_ID:
            raise InvalidRefName(name, f"cannot point at {new!r}")
        entry = self._entry(name, new, message, who) if log else None
        self._swap(name, new, expected, entry)

    def delete(
        self, name: str, expected: object = ANY, *, message: str = "", who: str | None = None
    ) -> None:
        validate_ref_name(name)
        self._swap(name, None, expected, self._entry(name, None, message, who))

    def _entry(self, name: str, new: ObjectId | None, message: str, who: str | None) -> ReflogEntry:
        # ``old`` is filled in under the lock by _swap via _check.
        return ReflogEntry(None, new, time.time_ns(), who or default_who(), message)

    @staticmethod
    def _check(name: str, current: ObjectId | None, new: ObjectId | None, expected: object) -> None:
        if expected is not ANY and expected != current:
            raise RefConflict(name, expected, current)  # type: ignore[arg-type]
        if new is None and current is None:
            raise RefNotFound(name)


class MemoryRefStore(RefStore):
    def __init__(self) -> None:
        self._refs: dict[str, ObjectId] = {}
        self._logs: dict[str, list[ReflogEntry]] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> ObjectId | None:
        return self._refs.get(validate_ref_name(name))

    def list(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        with self._lock:
            return {k: v for k, v in sorted(self._refs.items()) if k.startswith(prefix)}

    def _swap(
        self, name: str, new: ObjectId | None, expected: object, entry: ReflogEntry | None
    ) -> None:
        with self._lock:
            current = self._refs.get(name)
            self._check(name, current, new, expected)
            for other in self._refs:
                if other != name and (other.startswith(name + "/") or name.startswith(other + "/")):
                    raise InvalidRefName(name, f"conflicts with existing ref {other}")
            if entry is not None:
                full = ReflogEntry(current, new, entry.time_ns, entry.who, entry.message)
                # Round-trip through the line format, so both backends store alike.
                parsed = ReflogEntry.from_line(full.to_line().decode()[:-1])
                self._logs.setdefault(name, []).append(parsed or full)
            if new is None:
                del self._refs[name]
            else:
                self._refs[name] = new

    def reflog(self, name: str) -> list[ReflogEntry]:
        with self._lock:
            return list(self._logs.get(validate_ref_name(name), []))

    def reflog_names(self) -> list[str]:
        with self._lock:
            return sorted(self._logs)

    def expire_reflog(self, name: str, cutoff_ns: int) -> int:
        validate_ref_name(name)
        with self._lock:
            log = self._logs.get(name, [])
            kept = [e for e in log if e.time_ns >= cutoff_ns]
            if kept:
                self._logs[name] = kept
            else:
                self._logs.pop(name, None)
            return len(log) - len(kept)


class LocalRefStore(RefStore):
    """Refs as files ``<root>/refs/...`` holding ``<id>\\n``; reflogs as append-only files
    ``<root>/logs/refs/...``; per-ref lock files under ``<root>/locks/``."""

    def __init__(self, root: Path, *, lock_timeout: float = REF_LOCK_TIMEOUT) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def _path(self, name: str) -> Path:
        return self.root / validate_ref_name(name)

    def _log_path(self, name: str) -> Path:
        return self.root / "logs" / (validate_ref_name(name) + REFLOG_SUFFIX)

    def _lock(self, name: str) -> FileLock:
        path = self.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        # A new FileLock per use: each holds its own fd, so threads of one process exclude
        # each other too (flock is per open file description). The kernel drops it on death.
        return FileLock(path, timeout=self.lock_timeout, thread_local=False)

    def read(self, name: str) -> ObjectId | None:
        try:
            text = self._path(name).read_text(encoding="ascii").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return ObjectId(text) if is_oid(text) else None

    def list(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        out = {}
        base = self.root / "refs"
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fn in filenames:
                name = os.path.relpath(os.path.join(dirpath, fn), self.root).replace(os.sep, "/")
                if not name.startswith(prefix):
                    continue
                try:
                    validate_ref_name(name)
                except InvalidRefName:
                    continue  # temp files and strays
                oid = self.read(name)
                if oid is not None:
                    out[name] = oid
        return dict(sorted(out.items()))

    def _swap(
        self, name: str, new: ObjectId | None, expected: object, entry: ReflogEntry | None
    ) -> None:
        path = self._path(name)
        try:
            with self._lock(name):
                current = self.read(name)
                self._check(name, current, new, expected)
                try:
                    if entry is not None:
                        full = ReflogEntry(current, new, entry.time_ns, entry.who, entry.message)
                        self._append_log(name, full)
                    if new is None:
                        path.unlink()
                        # Another ref's deletion may have removed the emptied folder already.
                        with contextlib.suppress(FileNotFoundError):
                            fsync_dir(path.parent)
                        _remove_empty_parents(path.parent, self.root / "refs")
                    else:
                        self._write_ref(path, new)
                except (NotADirectoryError, IsADirectoryError, FileExistsError):
                    raise InvalidRefName(
                        name, "a name cannot be both a ref and a folder of refs"
                    ) from None
        except FileLockTimeout:
            raise LockTimeout(f"ref {name}", self.lock_timeout) from None

    @staticmethod
    def _write_ref(path: Path, new: ObjectId) -> None:
        # Deleting the last ref of a folder removes the folder (under that ref's lock, not
        # ours), so the folder can vanish between our mkdir and our write: make it again.
        for attempt in range(5):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.is_dir():
                    _remove_empty_tree(path)  # left by a deleted refs/<name>/...
                replace_durably(path, f"{new}\n".encode("ascii"))
                return
            except (FileNotFoundError, FileExistsError):
                if attempt == 4:
                    raise

    def _append_log(self, name: str, entry: ReflogEntry) -> None:
        path = self._log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            write_all(fd, entry.to_line())
            os.fsync(fd)
        finally:
            os.close(fd)

    def reflog(self, name: str) -> list[ReflogEntry]:
        validate_ref_name(name)
        try:
            text = self._log_path(name).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return []
        # A torn last line (crash mid-append) does not parse and is skipped.
        return [e for line in text.split("\n") if (e := ReflogEntry.from_line(line))]

    def reflog_names(self) -> list[str]:
        out = []
        base = self.root / "logs"
        for dirpath, _, filenames in os.walk(base / "refs"):
            for fn in filenames:
                if not fn.endswith(REFLOG_SUFFIX):
                    continue
                name = os.path.relpath(os.path.join(dirpath, fn), base).replace(os.sep, "/")
                try:
                    out.append(validate_ref_name(name[: -len(REFLOG_SUFFIX)]))
                except InvalidRefName:
                    continue
        return sorted(out)

    def damaged(self) -> list[str]:
        """Ref files that do not hold an object id (for fsck)."""
        out = []
        for dirpath, _, filenames in os.walk(self.root / "refs"):
            for fn in filenames:
                name = os.path.relpath(os.path.join(dirpath, fn), self.root).replace(os.sep, "/")
                try:
                    validate_ref_name(name)
                except InvalidRefName:
                    continue
                if self.read(name) is None:
                    out.append(name)
        return sorted(out)

    def expire_reflog(self, name: str, cutoff_ns: int) -> int:
        validate_ref_name(name)
        with self._lock(name):
            log = self.reflog(name)
            kept = [e for e in log if e.time_ns >= cutoff_ns]
            if len(kept) != len(log):
                path = self._log_path(name)
                if kept:
                    replace_durably(path, b"".join(e.to_line() for e in kept))
                else:
                    path.unlink(missing_ok=True)
            return len(log) - len(kept)


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    """Remove now-empty folders from ``directory`` up to (not including) ``stop``."""
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _remove_empty_tree(path: Path) -> None:
    """Remove a folder tree that holds no files; a file in it means a real conflict."""
    for dirpath, _dirnames, filenames in os.walk(path, topdown=False):
        if filenames:
            raise IsADirectoryError(str(path))
        os.rmdir(dirpath)
