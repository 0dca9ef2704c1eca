"""Refs and reflogs in an S3 bucket, moved by compare-and-swap with conditional writes
(``IfMatch`` / ``IfNoneMatch``); see ``S3RefStore``. And ``open_s3_remote``, which opens a
bucket's objects and refs together (this module builds on ``s3``, never the reverse)."""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptRef, InvalidRefName, LockTimeout
from ..hashing import ObjectId, is_oid
from ..refs import ANY, REF_LOCK_TIMEOUT, ReflogEntry, RefStore, validate_ref_name
from .s3 import (
    _LOST_RACE,
    _SWAP_RE,
    MAX_KEY_BYTES,
    SWAP_META,
    WORKERS,
    S3Location,
    S3ObjectStore,
    _parallel_map,
    make_s3_client,
    parse_s3_url,
)


@dataclass(frozen=True)
class _RefObject:
    value: ObjectId | None  # None if the body is not an id (damaged)
    etag: str
    swap: str  # SWAP_META of the write that made it ("" if written by something else)

    @property
    def time_ns(self) -> int:
        match = _SWAP_RE.match(self.swap)
        return int(match.group(1)) if match else 0


class S3RefStore(RefStore):
    """Refs at ``<prefix>/refs/...``, moved by conditional writes; reflog entries as one
    immutable object each under ``<prefix>/logs/<name>/``.

    A swap: GET the ref (value and etag); check ``expected``; write the reflog entry; PUT
    the new value ``If-Match`` the etag read (``If-None-Match: *`` if there was none), or
    DELETE ``If-Match`` it. If the condition fails someone else moved the ref in between:
    the entry is removed again and the swap starts over from the GET, so an explicit
    ``expected`` now fails with RefConflict naming the actual value, and ANY retries until
    ``swap_timeout`` (LockTimeout). Entry times are kept increasing along the ref's history
    (each ref object records the entry that made it), whatever the writers' clocks say."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        workers: int = WORKERS,
        swap_timeout: float = REF_LOCK_TIMEOUT,
    ) -> None:
        self.location = S3Location(client, bucket, prefix)
        self.workers = workers
        self.swap_timeout = swap_timeout
        self._logs = f"{self.location.base}logs/"

    def _ref_key(self, name: str) -> str:
        # The longest key of a ref is its reflog entry's; refuse names that cannot fit.
        validate_ref_name(name)
        if len(f"{self._logs}{name}/{'0' * 37}".encode()) > MAX_KEY_BYTES:
            raise InvalidRefName(name, f"too long for an S3 key under {self.location.url}")
        return self.location.base + name

    def _log_prefix(self, name: str) -> str:
        self._ref_key(name)
        return f"{self._logs}{name}/"

    def _get(self, name: str) -> _RefObject | None:
        response = self.location.get(self._ref_key(name))
        if response is None:
            return None
        text = response["Body"].decode("ascii", "replace").strip()
        swap = response.get("Metadata", {}).get(SWAP_META, "")
        return _RefObject(ObjectId(text) if is_oid(text) else None, response["ETag"], swap)

    # --- reading -----------------------------------------------------------------------

    def read(self, name: str) -> ObjectId | None:
        ref = self._get(name)
        if ref is not None and ref.value is None:
            raise CorruptRef(name, "does not hold an object id")  # as the local store does
        return None if ref is None else ref.value

    def _names(self, prefix: str) -> list[str]:
        # Only keys under <base>refs/ are refs; narrow the listing when the prefix allows.
        narrow = prefix if prefix.startswith("refs/") else "refs/"
        out = []
        for key in self.location.list_keys(self.location.base + narrow):
            name = key[len(self.location.base) :]
            try:
                validate_ref_name(name)
            except InvalidRefName:
                continue  # not written by us
            if name.startswith(prefix):
                out.append(name)
        return sorted(out)

    def _read_all(self, prefix: str) -> list[tuple[str, _RefObject | None]]:
        names = self._names(prefix)
        return list(zip(names, _parallel_map(self._get, names, self.workers), strict=True))

    def list(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        return {n: ref.value for n, ref in self._read_all(prefix) if ref and ref.value}

    def damaged(self) -> list[str]:
        return [n for n, ref in self._read_all("refs/") if ref and ref.value is None]

    # --- moving --------------------------------------------------------------------------

    def _swap(
        self, name: str, new: ObjectId | None, expected: object, entry: ReflogEntry | None
    ) -> None:
        key = self._ref_key(name)
        deadline = time.monotonic() + self.swap_timeout
        for attempt in itertools.count(1):
            ref = self._get(name)
            current = None if ref is None else ref.value
            if ref is None or current is not None:
                self._check(name, current, new, expected)
            elif expected is not ANY:
                # Damaged: a compare-and-swap cannot compare; an unconditional update or
                # delete replaces it (the way to repair it), as in the local store.
                raise CorruptRef(name, "does not hold an object id")
            if ref is None and new is not None:
                self._check_not_folder(name)
            # Entry times never go backwards along one ref's history, even across machines
            # with skewed clocks: the previous write recorded its entry's time.
            at = max(entry.time_ns if entry else time.time_ns(), ref.time_ns + 1 if ref else 0)
            swap = f"{at:020d}-{random.getrandbits(64):016x}"
            log_key = f"{self._log_prefix(name)}{swap}"
            if entry is not None:
                line = ReflogEntry(current, new, at, entry.who, entry.message).to_line()
                self.location.call("put_object", Key=log_key, Body=line)
            if self._publish(name, key, new, ref, swap):
                return
            # Lost the race. The entry goes again (a crash right here would leave it: see
            # the module docstring), and the next round re-reads the ref.
            if entry is not None:
                self.location.call("delete_object", Key=log_key)
            if time.monotonic() > deadline:
                raise LockTimeout(f"ref {name}", self.swap_timeout)
            time.sleep(random.uniform(0, min(0.5, 0.01 * attempt)))

    def _publish(
        self, name: str, key: str, new: ObjectId | None, ref: _RefObject | None, swap: str
    ) -> bool:
        """The conditional write itself; False if the ref moved since ``ref`` was read."""
        if new is None:
            assert ref is not None  # _check refuses to delete an absent ref
            gone = self.location.call(
                "delete_object", Key=key, IfMatch=ref.etag, none_on=_LOST_RACE
            )
            return gone is not None
        condition = {"IfMatch": ref.etag} if ref is not None else {"IfNoneMatch": "*"}
        body, meta = f"{new}\n".encode("ascii"), {SWAP_META: swap}
        put = self.location.call(
            "put_object", Key=key, Body=body, Metadata=meta, none_on=_LOST_RACE, **condition
        )
        if put is not None:
            return True
        # botocore retries a request whose response was lost; if the first try had landed,
        # the retry fails its own condition. The ref naming our swap tells that case apart.
        latest = self._get(name)
        return latest is not None and latest.swap == swap

    def _check_not_folder(self, name: str) -> None:
        """A name cannot be both a ref and a folder of refs (checked before a create; not
        atomic with it, as S3 offers nothing to make it so)."""
        parts = name.split("/")
        for i in range(2, len(parts)):
            parent = "/".join(parts[:i])
            if self._get(parent) is not None:
                raise InvalidRefName(name, f"conflicts with existing ref {parent}")
        below = self.location.call("list_objects_v2", Prefix=f"{self._ref_key(name)}/", MaxKeys=1)
        if below.get("Contents"):
            raise InvalidRefName(name, "a name cannot be both a ref and a folder of refs")

    # --- reflogs -------------------------------------------------------------------------

    def _log_keys(self, name: str) -> list[str]:
        # The delimiter keeps the logs of refs/a/b out of those of refs/a.
        prefix = self._log_prefix(name)
        keys = self.location.list_keys(prefix, delimiter="/")
        return sorted(k for k in keys if _SWAP_RE.match(k[len(prefix) :]))

    def reflog(self, name: str) -> list[ReflogEntry]:
        def parse(key: str) -> ReflogEntry | None:
            response = self.location.get(key)
            if response is None:
                return None  # expired between the listing and the GET
            return ReflogEntry.from_line(response["Body"].decode("utf-8", "replace").rstrip("\n"))

        entries = _parallel_map(parse, self._log_keys(name), self.workers)
        return [e for e in entries if e is not None]

    def reflog_names(self) -> list[str]:
        names = set()
        for key in self.location.list_keys(self._logs):
            name, _, swap = key[len(self._logs) :].rpartition("/")
            if _SWAP_RE.match(swap):
                try:
                    names.add(validate_ref_name(name))
                except InvalidRefName:
                    continue
        return sorted(names)

    def expire_reflog(self, name: str, cutoff_ns: int) -> int:
        # An entry's key starts with its time, so no entry needs reading.
        prefix = self._log_prefix(name)
        old = [k for k in self._log_keys(name) if int(k[len(prefix) :][:20]) < cutoff_ns]
        self.location.delete_keys(old)
        return len(old)


# --- opening a remote ------------------------------------------------------------------


def open_s3_remote(
    url: str, *, endpoint_url: str | None = None
) -> tuple[S3ObjectStore, S3RefStore]:
    """The object and ref stores at ``s3://BUCKET/PREFIX``, sharing one client. One request
    checks that the bucket exists and is readable, so a wrong bucket or wrong credentials
    fail here with a one-line error rather than in the middle of a sync."""
    bucket, prefix = parse_s3_url(url)
    client = make_s3_client(endpoint_url)
    objects = S3ObjectStore(client, bucket, prefix)
    objects.location.call("list_objects_v2", Prefix=objects.location.base, MaxKeys=1)
    return objects, S3RefStore(client, bucket, prefix)
