"""One exception hierarchy for the whole library.

The CLI maps every ``OsmoError`` to a one-line message (and its hint) and exit code 1;
anything else is a bug and is reported as one (the traceback is shown with ``--debug``).
Subclasses carry the facts (``oid``, ``name``...) as attributes so callers can act on them
without parsing messages; ``hint`` is an optional "what to do next" line.
"""

from __future__ import annotations


class OsmoError(Exception):
    """Base of every error the library raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


# --- ids and objects ---


class InvalidObjectId(OsmoError, ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(f"invalid object id: {text!r} (expected 64 lowercase hex characters)")
        self.text = text


class ObjectNotFound(OsmoError, KeyError):
    def __init__(self, oid: str) -> None:
        super().__init__(f"object not found: {oid}")
        self.oid = oid

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class RefTargetMissing(ObjectNotFound):
    """A ref write naming an object the store does not have (or that gc has just taken):
    refused, as git refuses, so that no ref ever names a missing object."""

    def __init__(self, name: str, oid: str) -> None:
        super().__init__(oid)
        self.args = (f"cannot point {name} at {oid}: object not found",)
        self.name = name
        self.hint = "store the object first (osmo hash-object -w), then move the ref"


class AmbiguousId(OsmoError, LookupError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(c[:12] for c in candidates[:5])
        super().__init__(
            f"ambiguous id prefix {prefix!r}: matches {len(candidates)} objects ({shown})",
            hint="give more characters of the id",
        )
        self.prefix = prefix
        self.candidates = candidates


class AmbiguousLabel(AmbiguousId):
    """A label given where one config is meant, which names several."""

    def __init__(self, label: str, candidates: list[str]) -> None:
        shown = ", ".join(c[:12] for c in candidates[:5])
        OsmoError.__init__(
            self,
            f"{len(candidates)} eval configs are labelled {label!r} ({shown})",
            hint="name one by its id, or relabel one: osmo eval label CONFIG NAME",
        )
        self.prefix = label
        self.candidates = candidates


class LabelTaken(OsmoError, ValueError):
    """A label asked for a config while it names another one (a label names one config:
    ``osmo eval show LABEL`` must find one)."""

    def __init__(self, label: str, config_id: str) -> None:
        short = config_id[:12]
        super().__init__(
            f"label {label!r} already names config {short}",
            hint=f'remove it from that config first (osmo eval label {short} ""), or move it '
            "with osmo eval label --force CONFIG NAME",
        )
        self.label = label
        self.config_id = config_id


class CorruptObject(OsmoError):
    """Stored bytes that do not decode, or decode to content with another hash."""

    def __init__(self, oid: str, reason: str, *, where: str | None = None) -> None:
        loc = f" in {where}" if where else ""
        super().__init__(f"corrupt object {oid}{loc}: {reason}")
        self.oid = oid
        self.reason = reason
        self.where = where


class CorruptPack(OsmoError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt pack {path}: {reason}")
        self.path = path
        self.reason = reason


class UnsupportedPackVersion(CorruptPack):
    """A pack of a format version this osmo does not read (a newer osmo wrote it)."""

    def __init__(self, path: str, version: str) -> None:
        reason = f"pack format version {version} is not one this osmo reads (1 and 2)"
        OsmoError.__init__(self, f"{path}: {reason}", hint="a newer osmo wrote it: upgrade osmo")
        self.path = path
        self.reason = reason


class MalformedObject(OsmoError, ValueError):
    """Content that is not a valid encoding of its declared type (trees, run records)."""


# --- refs ---


class InvalidRefName(OsmoError, ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid ref name {name!r}: {reason}")
        self.name = name


class RefNotFound(OsmoError, KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(f"ref not found: {name}")
        self.name = name

    def __str__(self) -> str:
        return self.args[0]


class RefConflict(OsmoError):
    """A compare-and-swap ref update whose expected old value did not match."""

    def __init__(self, name: str, expected: str | None, actual: str | None) -> None:
        exp = expected or "(absent)"
        act = actual or "(absent)"
        super().__init__(f"ref {name} moved: expected {exp}, found {act}")
        self.name = name
        self.expected = expected
        self.actual = actual


class CorruptRef(OsmoError):
    """A ref whose stored value cannot be read: it names something, but not what."""

    def __init__(self, name: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"damaged ref {name}: {reason}",
            hint=hint or "run: osmo fsck (nothing is deleted while a ref is damaged)",
        )
        self.name = name
        self.reason = reason


# --- the store and its callers ---


class StoreError(OsmoError):
    """Problems with the store as a whole: not a store, unsupported format, read-only, locked."""


class LockTimeout(StoreError):
    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"timed out after {timeout:g}s waiting for the lock on {what}")
        self.what = what
        self.timeout = timeout


class UsageError(OsmoError, ValueError):
    """Bad arguments given to a library function by a user (ages, names, sizes)."""


class OutputError(OsmoError):
    """A file the user asked for (``osmo eval report -o``...) that could not be written;
    ``path`` as the user gave it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path


# --- eval ---


class DatasetError(OsmoError):
    """A dataset that cannot be loaded. ``where`` is ``file:LINE``, ``file item N`` or
    ``file row N`` when one row is at fault, else None; the message always starts with it
    (or with the file when no row is)."""

    def __init__(
        self, reason: str, *, path: str, where: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(f"{where or path}: {reason}", hint=hint)
        self.path = path
        self.where = where
        self.reason = reason


class CodeLoadError(OsmoError):
    """An agent or eval function given as ``MODULE:NAME`` or ``file.py:NAME`` that cannot be
    loaded."""


class ModelError(OsmoError):
    """A model call that did not produce an answer. ``status`` is the last HTTP status, if any."""

    def __init__(
        self, message: str, *, status: int | None = None, attempts: int = 1, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.attempts = attempts


class FatalModelError(ModelError):
    """A failure that every call would hit (key, model, endpoint): stop the eval."""


class ModelCallError(ModelError):
    """A failure of this call only: record it as a failed run and carry on."""


class NoModelConfigured(FatalModelError):
    """Every run would hit it: stops the eval at once."""

    def __init__(self) -> None:
        super().__init__(
            "the agent called client.chat() but no model was given",
            hint="pass --model NAME (and --base-url URL) along with --agent",
        )


class AgentError(OsmoError):
    """The agent raised or returned something that is not a list of messages."""


class ScoringError(OsmoError, ValueError):
    """An eval function returned something that is not a score (recorded as that run's
    scoring error, never as a zero)."""


class OlderKeys(OsmoError):
    """Runs of this eval were recorded under an older key schema: the user chooses, once,
    before anything runs, to adopt them as they are or to compute them anew."""

    def __init__(self, runs: int, configs: list[str], schema: int, why: str) -> None:
        super().__init__(
            f"{runs} runs of this eval were recorded by an older osmo (key schema {schema}, "
            f"config {', '.join(c[:12] for c in configs)}); keys now {why}, so a run would "
            "compute them again",
            hint="--adopt-old-keys takes them as results of this config as they are; "
            "--recompute computes them anew",
        )
        self.runs = runs
        self.configs = configs


class EvalLocked(OsmoError):
    def __init__(self, config_id: str, timeout: float) -> None:
        super().__init__(
            f"another eval of config {config_id[:12]} is running (waited {timeout:g}s)",
            hint="wait for it to finish, or raise OSMO_LOCK_TIMEOUT",
        )
        self.config_id = config_id


class StoppedWaiting(Exception):
    """The eval was asked to stop while it waited for another eval of its config.

    Not an ``OsmoError``: nothing failed, the caller asked for it (like KeyboardInterrupt),
    so code that reports every ``OsmoError`` as a failure must not catch it."""


class RecorderDied(OsmoError):
    """The eval's recorder process ended before the eval did."""


class JournalError(OsmoError):
    """The eval's journal could not be written (a full disk, say): the eval stops, since
    answers it could not keep would be paid for again."""

    def __init__(self, directory: object, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        super().__init__(f"cannot write the eval's journal in {directory}: {reason}")
        self.directory = directory


class ConfigNotFound(OsmoError):
    def __init__(self, text: str, *, hint: str = "list them: osmo eval cache ls") -> None:
        super().__init__(f"no eval config matches {text!r}", hint=hint)


class ConfigRunning(OsmoError):
    """A config that cannot be removed while an eval of it runs."""


class SampleNotFound(OsmoError, LookupError):
    """A row or run asked for (``osmo eval show --row``) that a config does not hold."""


# --- remotes and sync ---


class RemoteError(OsmoError):
    """A remote store (directory, HTTP server, bucket) that cannot be used as asked.
    ``status``/``code``: the HTTP status and error code, when a server answered."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class PushRejected(RemoteError):
    """A push that would move a remote ref to a run record that does not descend from it."""


# --- HTTP ---


class AuthError(RemoteError):
    """The server wants a token we did not send, or refused the one we sent (401)."""


class RemoteRefused(RemoteError, StoreError):
    """The server understood and refused (403): it is read-only, or append-only and the
    update would delete a ref or move it backwards. ``code`` says which."""


class RecordStreamError(OsmoError):
    """A record stream that ends inside a record. ``oid``: the record's id, if its header
    was read."""

    def __init__(self, message: str, oid: str | None = None) -> None:
        super().__init__(message)
        self.oid = oid


class RecordTooLarge(OsmoError):
    """A record stream longer than the reader's budget."""


class HttpError(OsmoError):
    """An error answer the server sends: HTTP status, error code (``osmo_store.http.
    protocol``), a one-line message, extra JSON fields and extra headers."""

    def __init__(self, status: int, code: str, message: str, **fields: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers: list[tuple[str, str]] = []
