"""The local on-disk ref store: refs as files, reflogs as append-only files, a lock file per
ref (paths from ``StoreLayout``). Moved only by compare-and-swap under the ref's lock."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import CorruptRef, InvalidRefName
from ..hashing import ObjectId, is_oid
from ..refs import ANY, REF_LOCK_TIMEOUT, ReflogEntry, RefStore, validate_ref_name
from .fsutil import fsync_dir, replace_durably, write_all
from .layout import REFLOG_SUFFIX, StoreLayout
from .locking import FileLock


class LocalRefStore(RefStore):
    """Refs as files ``<root>/refs/...`` holding ``<id>\\n``; reflogs as append-only files
    ``<root>/logs/refs/...``; per-ref lock files under ``<root>/locks/``."""

    def __init__(self, layout: StoreLayout, *, lock_timeout: float = REF_LOCK_TIMEOUT) -> None:
        self.layout = layout
        self.lock_timeout = lock_timeout

    def _path(self, name: str) -> Path:
        return self.layout.ref(validate_ref_name(name))

    def _log_path(self, name: str) -> Path:
        return self.layout.reflog(validate_ref_name(name))

    def _lock(self, name: str) -> FileLock:
        path = self.layout.lock(name)
        # A new FileLock per use: each holds its own fd, so threads of one process exclude
        # each other too (flock is per open file description). The kernel drops it on death.
        return FileLock(path, timeout=self.lock_timeout, what=f"ref {name}")

    def read(self, name: str) -> ObjectId | None:
        """The ref's id; None if there is no such ref. A ref file that does not hold an id
        (garbage, a byte >= 0x80, a torn disk block) raises CorruptRef: it names something,
        and taking it for absent would let gc delete what it names."""
        try:
            data = self._path(name).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        text = data.strip().decode("ascii", "replace")
        if not is_oid(text):
            raise CorruptRef(name, "does not hold an object id")
        return ObjectId(text)

    def _read_sound(self, name: str) -> ObjectId | None:
        """``read``, with a damaged ref taken as absent: for listings, which name damaged
        refs through ``damaged()`` instead."""
        try:
            return self.read(name)
        except CorruptRef:
            return None

    def list(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.layout.refs):
            dirnames.sort()
            for fn in filenames:
                name = self.layout.ref_name(os.path.join(dirpath, fn))
                if not name.startswith(prefix):
                    continue
                try:
                    validate_ref_name(name)
                except InvalidRefName:
                    continue  # temp files and strays
                oid = self._read_sound(name)
                if oid is not None:
                    out[name] = oid
        return dict(sorted(out.items()))

    def _swap(
        self, name: str, new: ObjectId | None, expected: object, entry: ReflogEntry | None
    ) -> None:
        path = self._path(name)
        with self._lock(name):
            try:
                current = self.read(name)
            except CorruptRef:
                # A compare-and-swap cannot compare with a damaged value; an unconditional
                # update or delete replaces it (the way to repair it), logged as from absent.
                if expected is not ANY:
                    raise
                current = None
            else:
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
                    _remove_empty_parents(path.parent, self.layout.refs)
                else:
                    self._write_ref(path, new)
            except (NotADirectoryError, IsADirectoryError, FileExistsError):
                raise InvalidRefName(
                    name, "a name cannot be both a ref and a folder of refs"
                ) from None

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
        for dirpath, _, filenames in os.walk(self.layout.logs / "refs"):
            for fn in filenames:
                if not fn.endswith(REFLOG_SUFFIX):
                    continue
                name = self.layout.reflog_name(os.path.join(dirpath, fn))
                try:
                    out.append(validate_ref_name(name))
                except InvalidRefName:
                    continue
        return sorted(out)

    def damaged(self) -> list[str]:
        """Ref files that do not hold an object id (for fsck)."""
        out = []
        for dirpath, _, filenames in os.walk(self.layout.refs):
            for fn in filenames:
                name = self.layout.ref_name(os.path.join(dirpath, fn))
                try:
                    validate_ref_name(name)
                except InvalidRefName:
                    continue
                try:
                    self.read(name)
                except CorruptRef:
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
