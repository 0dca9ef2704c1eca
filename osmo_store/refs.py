"""Layer 2: refs, named pointers to objects, moved only by compare-and-swap.

Every update and deletion is appended to the ref's reflog (old, new, time, who, why)
before the ref itself changes, so gc and fsck can treat recent history as reachable and
a user can always find where a ref used to point.
"""

from __future__ import annotations

import os
import re
import time
from abc import ABC, abstractmethod
from typing import NamedTuple

from .errors import InvalidRefName, RefConflict, RefNotFound
from .hashing import ZERO_ID, ObjectId, is_oid

REF_LOCK_TIMEOUT = 30.0
# Leave room under the usual 255-byte file name limit for ".lock" and temp-file affixes.
MAX_COMPONENT_BYTES = 200
MAX_NAME_BYTES = 1024
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
# every character str.splitlines() treats as a line boundary
_TIME_NS = re.compile(r"[0-9]{1,19}\Z")
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
    try:
        # A lone surrogate: a file name that is not UTF-8 (os.fsdecode), or a crafted
        # string. No ref can be stored or sent under such a name.
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRefName(name, "is not valid UTF-8") from None
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
    # Imported here: only writers ask, and socket is a noticeable part of start-up.
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class ReflogEntry(NamedTuple):
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
        # ASCII digits only (str.isdigit also takes "²", which int() refuses), and a
        # time that fits the 64 bits every reader (and the OS clock functions) can hold.
        if not _TIME_NS.match(parts[2]) or int(parts[2]) >= 2**63:
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
