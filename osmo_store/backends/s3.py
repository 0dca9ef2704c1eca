"""S3-compatible object storage as a store: objects and refs in one bucket, under a prefix.

Layout under ``s3://BUCKET/PREFIX/``::

    objects/<id>                        stored form of each object (objects_spec.md, 2)
    refs/...                            one object per ref, body "<id>\\n"
    logs/<ref name>/<time_ns:020d>-<r>  one object per reflog entry, body one reflog line

Nothing here is atomic across keys: S3 has no multi-object transactions. That is fine for
objects, which are content-addressed: a batch cut off half way leaves some objects
uploaded, each complete and correct, and a retry uploads the rest. Refs are the one thing
that must not race, and they move by compare-and-swap with S3's conditional writes:
``If-None-Match: *`` to create, ``If-Match: <etag>`` to replace or delete (AWS since 2024,
deletes on general-purpose buckets since 2025; an S3-compatible server that ignores these
headers cannot host refs safely). Known weaknesses, all documented where they arise:

- a reflog entry is written before its ref moves; if the writer dies in between (or fails
  to remove the entry after losing the race), an entry describes a change that never
  happened. That keeps more objects alive for gc, never fewer.
- "a name cannot be both a ref and a folder of refs" is checked before creating a ref, not
  atomically with it: two writers creating ``refs/a`` and ``refs/a/b`` at once both win.
- the listing that ``missing()`` caches for large batches lives as long as the store
  object: objects deleted meanwhile by someone else (gc of the bucket) still count as
  present. Open a fresh store per sync session.
- a ref DELETE whose response is lost is retried by botocore and then fails its own
  condition: the caller sees RefNotFound/RefConflict although the ref is gone, and the
  reflog lacks that deletion. (A lost PUT response is recognised: see ``_publish``.)
- entry times increase along a ref's history, but a ref re-created after a deletion on a
  machine whose clock is behind can log a time before the deletion's.
- the store must not nest inside another store's prefix (``s3://b/x`` and ``s3://b/x/refs``).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..errors import ObjectNotFound, OsmoError, StoreError, UsageError
from ..hashing import ObjectId, is_oid, parse_oid
from ..objects import MAX_REMOTE_OBJECT, ObjectType, decode_object, max_stored_size
from .base import ObjectStore, StagedWriter

#: parallel requests per batch operation (and the client's connection pool size)
WORKERS = 16
#: ``missing()`` lists the whole objects/ prefix once for batches at least this large
LIST_THRESHOLD = 1000
#: attempts per request unless the user configured AWS_MAX_ATTEMPTS / max_attempts
DEFAULT_MAX_ATTEMPTS = 5
#: S3's limit on a key, in UTF-8 bytes
MAX_KEY_BYTES = 1024
#: user metadata on a ref object: the reflog entry (or swap) name of the write that made it
SWAP_META = "osmo-swap"
#: the most bytes read from the body of a ref or reflog entry (a ref is one id, an entry one
#: line): an endpoint can declare, or stream, any length
MAX_SMALL_BODY = 1 << 20

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
# A conditional write that lost: the etag moved (412), a concurrent conditional write won
# (409), or the object it was conditioned on is gone (404).
_LOST_RACE = frozenset(
    {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}
)
_AUTH = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
     "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "403"}
)  # fmt: skip
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}")
_SWAP_RE = re.compile(r"(\d{20})-[0-9a-f]{16}\Z")

T = TypeVar("T")
R = TypeVar("R")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix); the prefix has no leading, trailing or
    doubled slashes and may be empty (the store then fills the bucket's root)."""
    scheme, sep, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme.lower() != "s3" or not sep or not _BUCKET_RE.fullmatch(bucket):
        raise UsageError(f"not an S3 URL: {url!r}", hint="use s3://BUCKET or s3://BUCKET/PREFIX")
    return bucket, _clean_prefix(prefix)


def _clean_prefix(prefix: str) -> str:
    return "/".join(part for part in prefix.split("/") if part)


def _botocore_errors() -> Any:
    # Imported on use, so this module imports without the s3 extra installed.
    from botocore import exceptions

    return exceptions


def _safe_endpoint(url: str) -> str:
    """An endpoint URL fit for a message: scheme, host and port, never a user:password."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}" if parts.scheme else url.rpartition("@")[2]


def _error_code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int = WORKERS) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``workers`` requests in flight; the first
    exception raised (in item order) propagates once every call has finished."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


class S3Location:
    """One bucket and key prefix, and the boto3 client that reaches them. Every request goes
    through ``call``, which turns botocore's errors into one-line OsmoErrors (never with
    credentials in them)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = _clean_prefix(prefix)
        self.base = f"{self.prefix}/" if self.prefix else ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def call(
        self,
        op: str,
        /,
        *,
        none_on: frozenset[str] = frozenset(),
        max_body: int = MAX_SMALL_BODY,
        **kwargs: Any,
    ) -> Any:
        """``client.<op>(Bucket=..., **kwargs)``; None if S3 answers with an error code in
        ``none_on``. A GET's body is read here (at most ``max_body`` bytes: a longer one is
        a StoreError, read no further), so a broken stream is mapped as well."""
        errors = _botocore_errors()
        try:
            response = getattr(self.client, op)(Bucket=self.bucket, **kwargs)
            if "Body" in response:
                response["Body"] = self._read_body(response, kwargs.get("Key", ""), max_body)
            return response
        except errors.ClientError as e:
            if _error_code(e) in none_on:
                return None
            raise self.error(e, op) from None
        except errors.BotoCoreError as e:
            raise self.error(e, op) from None

    def _read_body(self, response: Any, key: str, max_body: int) -> bytes:
        body = response["Body"]
        declared = response.get("ContentLength") or 0
        data = b"" if declared > max_body else body.read(max_body + 1)
        if declared > max_body or len(data) > max_body:
            body.close()
            raise StoreError(f"S3 object {key} in {self.url} is over {max_body} bytes")
        return data

    def error(self, e: Exception, op: str) -> OsmoError:
        errors = _botocore_errors()
        if isinstance(e, errors.ClientError):
            code = _error_code(e)
            if code == "NoSuchBucket":
                return StoreError(
                    f"S3 bucket {self.bucket!r} does not exist",
                    hint="create it first, or check the s3:// URL and the endpoint",
                )
            if code in _AUTH:
                return StoreError(
                    f"S3 refused access to {self.url} ({code})",
                    hint="check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                    "or AWS_PROFILE) and the bucket's policy",
                )
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            return StoreError(f"S3 {op} on {self.url} failed: {code or 'error'} (HTTP {status})")
        if isinstance(e, errors.NoCredentialsError):
            return StoreError(
                "no AWS credentials found for S3",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            )
        if isinstance(e, errors.ConnectionError):
            return StoreError(
                f"cannot reach the S3 endpoint {_safe_endpoint(self.client.meta.endpoint_url)}",
                hint="check AWS_ENDPOINT_URL (or the remote's endpoint_url) and the network",
            )
        if isinstance(e, errors.ParamValidationError):
            return StoreError(
                f"S3 {op}: this botocore does not support the request (too old?)",
                hint="pip install -U 'osmo-store[s3]'",
            )
        return StoreError(f"S3 {op} on {self.url} failed: {type(e).__name__}")

    def list_keys(self, prefix: str, *, delimiter: str | None = None) -> Iterator[str]:
        """Every key under ``prefix`` (paginated); with a delimiter, not those below it."""
        kwargs: dict[str, Any] = {"Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            page = self.call("list_objects_v2", **kwargs)
            for item in page.get("Contents", ()):
                yield item["Key"]
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def get(self, key: str, max_body: int = MAX_SMALL_BODY) -> Any:
        """The GetObject response (body read, ``max_body`` bytes at most) or None if there
        is no such key."""
        return self.call("get_object", Key=key, none_on=_NOT_FOUND, max_body=max_body)

    def delete_keys(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = [{"Key": k} for k in keys[i : i + 1000]]
            response = self.call("delete_objects", Delete={"Objects": chunk, "Quiet": True})
            failed = response.get("Errors", [])
            if failed:
                code = failed[0].get("Code", "error")
                raise StoreError(f"S3 could not delete {len(failed)} keys in {self.url} ({code})")


# --- objects ------------------------------------------------------------------------------


class S3ObjectStore(ObjectStore):
    """Objects at ``<prefix>/objects/<id>``, each holding exactly the stored form.

    Every acknowledged PUT is durable, so ``flush`` has nothing to do. A PUT of an object
    that exists replaces it with the same content (possibly compressed differently), which
    also moves its LastModified: the S3 analogue of freshening."""

    max_object_size = MAX_REMOTE_OBJECT  # a bucket is always read from elsewhere

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        read_only: bool = False,
        workers: int = WORKERS,
        list_threshold: int = LIST_THRESHOLD,
    ) -> None:
        self.location = S3Location(client, bucket, prefix)
        self.read_only = read_only
        self.workers = workers
        self.list_threshold = list_threshold
        self._objects = f"{self.location.base}objects/"
        self._lock = threading.Lock()
        self._listing: set[ObjectId] | None = None

    def _key(self, oid: ObjectId) -> str:
        return self._objects + oid

    # --- primitives ------------------------------------------------------------------

    def _get_raw(self, oid: ObjectId) -> bytes:
        response = self.location.get(self._key(oid), max_stored_size(self.max_object_size))
        if response is None:
            raise ObjectNotFound(oid)
        return response["Body"]

    def _put_raw(self, oid: ObjectId, data: bytes) -> None:
        self.location.call("put_object", Key=self._key(oid), Body=data)
        with self._lock:
            if self._listing is not None:
                self._listing.add(oid)

    def _has(self, oid: ObjectId) -> bool:
        # A HEAD answers a missing bucket with a bare 404 too: that reads as "absent" here,
        # and the upload that follows reports the missing bucket.
        return self.location.call("head_object", Key=self._key(oid), none_on=_NOT_FOUND) is not None

    def iter_ids(self) -> Iterator[ObjectId]:
        return self._ids_with_prefix("")

    def _ids_with_prefix(self, prefix: str) -> Iterator[ObjectId]:
        for key in self.location.list_keys(self._objects + prefix):
            name = key[len(self._objects) :]
            if is_oid(name):  # anything else under objects/ is not ours
                yield ObjectId(name)

    def _delete(self, oid: ObjectId) -> None:
        self.location.call("delete_object", Key=self._key(oid))
        with self._lock:
            if self._listing is not None:
                self._listing.discard(oid)

    # --- batches (sync) --------------------------------------------------------------

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        wanted = [parse_oid(oid) for oid in oids]
        listing = self._cached_listing(len(wanted))
        if listing is None:
            unique = list(dict.fromkeys(wanted))
            present = dict(zip(unique, _parallel_map(self._has, unique, self.workers), strict=True))
        else:
            present = {oid: oid in listing for oid in wanted}
        return [oid for oid in wanted if not present[oid]]

    def _cached_listing(self, batch_size: int) -> set[ObjectId] | None:
        """The ids under objects/, listed once (1 request per 1000 objects) when a batch is
        large enough to be worth it, then kept up to date with this store's own puts and
        deletes. Others' writes after the listing are not seen (module docstring)."""
        with self._lock:
            if self._listing is None and batch_size >= self.list_threshold:
                self._listing = set(self.iter_ids())
            return self._listing

    def get_many_raw(self, oids: Iterable[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        """Parallel GETs, yielded in the order asked, with a bounded number in flight so a
        huge batch is not held in memory at once."""
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque[tuple[ObjectId, Future[bytes]]] = deque()
            try:
                for oid in oids:
                    oid = parse_oid(oid)
                    pending.append((oid, pool.submit(self._get_raw, oid)))
                    if len(pending) >= 2 * self.workers:
                        done, future = pending.popleft()
                        yield done, future.result()
                while pending:
                    done, future = pending.popleft()
                    yield done, future.result()
            finally:
                for _, future in pending:  # the consumer stopped early, or a GET failed
                    future.cancel()

    def put_many_raw(
        self, items: Iterable[tuple[ObjectId, bytes]], *, verified: bool = False
    ) -> int:
        """Verify every object first, then upload them in parallel: one bad object means
        nothing is uploaded. The uploads themselves are not atomic as a batch (S3 has no
        such thing); if one fails, others may already be stored, each complete."""
        self._check_writable()
        batch = [(parse_oid(oid), data) for oid, data in items]
        for oid, data in batch:
            decode_object(oid, data)
        self._upload(dict(batch))
        return len(batch)

    def _upload(self, objects: dict[ObjectId, bytes]) -> None:
        _parallel_map(lambda item: self._put_raw(*item), list(objects.items()), self.workers)

    @contextmanager
    def bulk(self) -> Iterator[StagedWriter]:
        """Writes staged (and verified) in memory, uploaded in parallel when the block exits
        cleanly; nothing is uploaded if it raises."""
        self._check_writable()
        writer = _ParallelStagedWriter(self)
        yield writer
        writer.finish()

    def put_many(self, objects: Iterable[tuple[ObjectType, bytes]]) -> list[ObjectId]:
        with self.bulk() as writer:
            return [writer.put(otype, content) for otype, content in objects]


class _ParallelStagedWriter(StagedWriter):
    store: S3ObjectStore

    def finish(self) -> None:
        # Each staged object was verified when it was staged (put_raw) or encoded here
        # (put), so this is put_many_raw without verifying everything a second time.
        self.store._upload(self._pending)
        self._pending.clear()


# --- refs ---------------------------------------------------------------------------------


def _is_aws_endpoint(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def make_s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client configured the usual AWS way (env vars, ~/.aws files), with the
    endpoint ``endpoint_url`` if given, else whatever boto3 resolves (it reads
    AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL itself)."""
    try:
        import boto3
        import botocore.session
        from botocore.config import Config
    except ImportError:
        raise StoreError(
            "S3 remotes need boto3, which is not installed", hint="pip install 'osmo-store[s3]'"
        ) from None
    core = botocore.session.get_session()
    session = boto3.session.Session(botocore_session=core)
    settings: dict[str, Any] = {"max_pool_connections": WORKERS, "connect_timeout": 10}
    if core.get_config_variable("max_attempts") is None:
        # The user's AWS_MAX_ATTEMPTS / max_attempts wins; otherwise a little more patience
        # than botocore's default of 3 for long syncs.
        settings["retries"] = {"mode": "standard", "total_max_attempts": DEFAULT_MAX_ATTEMPTS}
    config = Config(**settings)
    try:
        client = session.client("s3", endpoint_url=endpoint_url, config=config)
        if not _is_aws_endpoint(client.meta.endpoint_url):
            # S3-compatible servers (MinIO, Ceph, moto...) answer path-style requests;
            # virtual-host style would need DNS for <bucket>.<host>.
            path_style = config.merge(Config(s3={"addressing_style": "path"}))
            client = session.client("s3", endpoint_url=endpoint_url, config=path_style)
    except ValueError:  # botocore: "Invalid endpoint: <url>"
        shown = _safe_endpoint(endpoint_url) if endpoint_url else "from AWS_ENDPOINT_URL*"
        raise StoreError(
            f"invalid S3 endpoint {shown}", hint="give a URL such as http://host:9000"
        ) from None
    return client
