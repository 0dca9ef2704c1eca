"""Atomic, durable file primitives shared by the local backend, packs and refs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# errnos meaning "this filesystem cannot hard-link": fall back to rename
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(directory: Path, data: bytes, prefix: str = "tmp-") -> Path:
    """Write ``data`` to a new temp file in ``directory`` and fsync it. On any failure
    (ENOSPC included) the temp file is removed before the error propagates."""
    tmp = directory / f"{prefix}{os.getpid()}-{os.urandom(8).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def publish_no_overwrite(tmp: Path, final: Path) -> bool:
    """Move a complete temp file to its final name unless that name exists. Returns True if
    this call published it. A hard link is atomic and never replaces an existing file;
    where links are not supported we fall back to rename (the content at a content-
    addressed name is the same either way)."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return False
    except OSError as e:
        if e.errno not in _NO_LINKS:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        return True
    tmp.unlink()
    return True


def publish_or_freshen(tmp: Path, final: Path, attempts: int = 10) -> bool:
    """Publish a content-addressed file, or, if an identical one is there already, make
    sure it counts as fresh (gc spares files touched since it started). If gc moved the
    existing file aside between our link and our touch, the touch fails and we publish
    ours after all. Returns True if this call published the file."""
    try:
        for _ in range(attempts):
            try:
                os.link(tmp, final)
                return True
            except FileExistsError:
                try:
                    os.utime(final)
                    return False
                except FileNotFoundError:
                    continue
            except OSError as e:
                if e.errno not in _NO_LINKS:
                    raise
                os.replace(tmp, final)
                return True
        raise OSError(errno.EBUSY, f"could not publish {final.name}: it keeps vanishing")
    finally:
        tmp.unlink(missing_ok=True)


def replace_durably(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (temp + fsync + rename + dir fsync)."""
    tmp = write_temp(path.parent, data, prefix=f".{path.name}.tmp-")
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_reading_mtimes(paths: list[Path]) -> int:
    """Remove files that writers may freshen (``utime``) meanwhile, and return the latest
    mtime any of them had when it went (0 if none was there). Each is moved aside first
    (``gc-`` name, which a reader puts back if we die before the unlink) and its mtime read
    there, from the same inode: a touch that landed before the move shows, and one after
    finds the file gone, so its writer stores the object anew."""
    freshest = 0
    for path in paths:
        aside = move_aside(path)
        if aside is None:
            continue
        freshest = max(freshest, os.stat(aside).st_mtime_ns)
        aside.unlink()
    return freshest


def move_aside(path: Path) -> Path | None:
    """Rename ``path`` to its ``gc-`` name in the same folder (a reader that misses an
    object puts ``gc-`` files back if their mover died) and return that name; None if the
    file is gone already."""
    aside = path.with_name(f"gc-{path.name}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    return aside


def at_least_as_fresh(path: Path, mtime_ns: int) -> None:
    """Move ``path``'s mtime up to ``mtime_ns`` if it is older (never down, never to now)."""
    try:
        st = os.stat(path)
        if st.st_mtime_ns < mtime_ns:
            os.utime(path, ns=(st.st_atime_ns, mtime_ns))
    except FileNotFoundError:
        pass
