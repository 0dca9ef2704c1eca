"""The S3 backend against a real moto server: the store and ref contracts, plus what only
S3 has (layout, conditional-write CAS under concurrency, batch paths, URLs, opening a remote
and its errors)."""

from __future__ import annotations

import itertools
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from osmo_store.backends.s3 import (
    DEFAULT_MAX_ATTEMPTS,
    WORKERS,
    S3ObjectStore,
    make_s3_client,
    parse_s3_url,
)
from osmo_store.backends.s3refs import S3RefStore, open_s3_remote
from osmo_store.errors import (
    CorruptObject,
    CorruptRef,
    InvalidRefName,
    ObjectNotFound,
    OsmoError,
    RefConflict,
    StoreError,
    UsageError,
)
from osmo_store.hashing import ObjectId
from osmo_store.objects import ObjectType, encode_object, object_id
from osmo_store.refs import ANY

from .s3server import DUMMY_CREDENTIALS, MotoServer, aws_env_fixture, moto_server_fixture

pytest.register_assert_rewrite("osmo_store.testing.contract")
from osmo_store.testing.contract import RefStoreContract, StoreContract  # noqa: E402

moto = moto_server_fixture()
aws_env = aws_env_fixture()


@pytest.fixture(scope="module")
def s3_client(moto: MotoServer) -> Any:
    return moto.client(max_pool_connections=WORKERS)


class _OnMoto:
    """Each test gets a new bucket; each store made in it a new prefix."""

    @pytest.fixture(autouse=True)
    def _bucket(self, moto: MotoServer, s3_client: Any) -> None:
        self.client = s3_client
        self.bucket = moto.new_bucket()
        self.made = 0

    def _prefix(self) -> str:
        self.made += 1
        return f"team/store-{self.made}"


class TestS3Store(_OnMoto, StoreContract):
    def make_store(self) -> S3ObjectStore:
        return S3ObjectStore(self.client, self.bucket, self._prefix())

    def make_read_only(self, store: S3ObjectStore) -> S3ObjectStore:  # type: ignore[override]
        return S3ObjectStore(self.client, self.bucket, store.location.prefix, read_only=True)


class TestS3Refs(_OnMoto, RefStoreContract):
    def make_refs(self) -> S3RefStore:
        return S3RefStore(self.client, self.bucket, self._prefix())


# --- helpers ------------------------------------------------------------------------------


def _oid(n: int) -> ObjectId:
    return object_id(ObjectType.BLOB, b"s3 target %d" % n)


class RequestLog:
    """Counts the S3 operations a client sends (by botocore event, before sending)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3", self._seen)

    def _seen(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1

    def reset(self) -> None:
        self.calls.clear()


def _keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def _run_threads(n: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` in ``n`` threads released together; re-raise the first failure."""
    barrier = threading.Barrier(n)
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return moto.new_bucket()


@pytest.fixture
def client(moto: MotoServer) -> Any:
    """A client of its own, so a test can count and hook its requests."""
    return moto.client(max_pool_connections=WORKERS)


# --- layout -------------------------------------------------------------------------------


def test_layout_under_the_prefix(client: Any, bucket: str) -> None:
    store = S3ObjectStore(client, bucket, "/team/evals/")
    refs = S3RefStore(client, bucket, "team/evals")
    oid = store.put(ObjectType.BLOB, b"hello\n")
    refs.update("refs/evals/x", oid, message="first")
    raw = client.get_object(Bucket=bucket, Key=f"team/evals/objects/{oid}")["Body"].read()
    assert raw == encode_object(ObjectType.BLOB, b"hello\n")[1] == store.get_raw(oid)
    ref = client.get_object(Bucket=bucket, Key="team/evals/refs/evals/x")["Body"].read()
    assert ref == f"{oid}\n".encode()
    (log_key,) = _keys(client, bucket, "team/evals/logs/")
    assert re.fullmatch(r"team/evals/logs/refs/evals/x/\d{20}-[0-9a-f]{16}", log_key)
    line = client.get_object(Bucket=bucket, Key=log_key)["Body"].read()
    (entry,) = refs.reflog("refs/evals/x")
    assert line == entry.to_line()
    assert int(log_key.rsplit("/", 1)[1][:20]) == entry.time_ns
    assert (entry.old, entry.new, entry.message) == (None, oid, "first")


def test_bucket_root_and_prefix_stay_apart(client: Any, bucket: str) -> None:
    root, nested = S3ObjectStore(client, bucket), S3ObjectStore(client, bucket, "sub")
    root_refs, nested_refs = S3RefStore(client, bucket, ""), S3RefStore(client, bucket, "sub")
    a = root.put(ObjectType.BLOB, b"at the root")
    b = nested.put(ObjectType.BLOB, b"under sub/")
    root_refs.update("refs/r", a)
    nested_refs.update("refs/n", b)
    assert list(root.iter_ids()) == [a] and list(nested.iter_ids()) == [b]
    assert root.missing([a, b]) == [b] and nested.missing([a, b]) == [a]
    assert root_refs.list() == {"refs/r": a} and nested_refs.list() == {"refs/n": b}
    assert root_refs.reflog_names() == ["refs/r"] and nested_refs.reflog_names() == ["refs/n"]
    assert f"objects/{a}" in _keys(client, bucket) and f"sub/objects/{b}" in _keys(client, bucket)


def test_foreign_keys_are_ignored(client: Any, bucket: str) -> None:
    store, refs = S3ObjectStore(client, bucket, "p"), S3RefStore(client, bucket, "p")
    oid = store.put(ObjectType.BLOB, b"ours")
    for key in ("p/objects/README", "p/objects/" + "A" * 64, "p/refs/bad name", "p/logs/x"):
        client.put_object(Bucket=bucket, Key=key, Body=b"not ours")
    assert list(store.iter_ids()) == [oid]
    assert refs.list() == {} and refs.reflog_names() == []


def test_damaged_ref_is_reported_not_listed(client: Any, bucket: str) -> None:
    refs = S3RefStore(client, bucket, "p")
    refs.update("refs/good", _oid(1))
    client.put_object(Bucket=bucket, Key="p/refs/broken", Body=b"not an id \xff\n")
    with pytest.raises(CorruptRef, match="refs/broken"):
        refs.read("refs/broken")  # never taken for absent
    assert refs.list() == {"refs/good": _oid(1)}
    assert refs.damaged() == ["refs/broken"]
    with pytest.raises(CorruptRef):
        refs.update("refs/broken", _oid(2), expected=None)  # a swap cannot compare
    refs.update("refs/broken", _oid(2))  # an unconditional update repairs it
    assert refs.read("refs/broken") == _oid(2) and refs.damaged() == []


def test_name_too_long_for_an_s3_key_is_refused_cleanly(client: Any, bucket: str) -> None:
    refs = S3RefStore(client, bucket, "p" * 300)
    name = "refs/" + "/".join(["n" * 200] * 4)  # a valid ref name of 808 bytes
    with pytest.raises(InvalidRefName):
        refs.update(name, _oid(1))
    with pytest.raises(InvalidRefName):
        refs.read(name)
    assert _keys(client, bucket) == []
    assert S3RefStore(client, bucket, "p").read(name) is None  # fits under a short prefix


# --- compare-and-swap under concurrency -------------------------------------------------


def test_concurrent_create_has_exactly_one_winner(client: Any, bucket: str) -> None:
    refs = S3RefStore(client, bucket, "p")
    won: list[int] = []
    lost: list[RefConflict] = []

    def create(i: int) -> None:
        try:
            refs.update("refs/race", _oid(i), expected=None, message=f"by {i}")
            won.append(i)
        except RefConflict as e:
            lost.append(e)

    _run_threads(8, create)
    assert len(won) == 1 and len(lost) == 7
    winner = _oid(won[0])
    assert refs.read("refs/race") == winner
    assert all((e.expected, e.actual) == (None, winner) for e in lost)
    assert [(e.old, e.new, e.message) for e in refs.reflog("refs/race")] == [
        (None, winner, f"by {won[0]}")
    ]


def test_concurrent_updates_lose_nothing(client: Any, bucket: str) -> None:
    """8 threads each move the ref 4 times by read-then-CAS, retrying on conflict: every
    success is in the reflog once, as one unbroken chain of old -> new."""
    refs = S3RefStore(client, bucket, "p")
    refs.update("refs/counter", _oid(0), expected=None)
    conflicts = Counter[int]()

    def bump(i: int) -> None:
        for k in range(4):
            mine = _oid(100 + 10 * i + k)
            while True:
                current = refs.read("refs/counter")
                try:
                    refs.update("refs/counter", mine, expected=current)
                    break
                except RefConflict as e:
                    assert e.expected == current and e.actual != current
                    conflicts[i] += 1

    _run_threads(8, bump)
    log = refs.reflog("refs/counter")
    assert len(log) == 1 + 32
    assert all(later.old == earlier.new for earlier, later in itertools.pairwise(log))
    assert {e.new for e in log[1:]} == {_oid(100 + 10 * i + k) for i in range(8) for k in range(4)}
    assert refs.read("refs/counter") == log[-1].new
    assert [e.time_ns for e in log] == sorted({e.time_ns for e in log})
    assert sum(conflicts.values()) > 0, "the threads never raced: the test proved nothing"


def test_concurrent_unconditional_updates_all_land(client: Any, bucket: str) -> None:
    refs = S3RefStore(client, bucket, "p")
    refs.update("refs/any", _oid(0))
    _run_threads(8, lambda i: refs.update("refs/any", _oid(1 + i), expected=ANY))
    log = refs.reflog("refs/any")
    assert len(log) == 9
    assert all(later.old == earlier.new for earlier, later in itertools.pairwise(log))
    assert {e.new for e in log[1:]} == {_oid(1 + i) for i in range(8)}
    assert refs.read("refs/any") == log[-1].new


def test_concurrent_delete_and_update_one_wins(client: Any, bucket: str) -> None:
    refs = S3RefStore(client, bucket, "p")
    refs.update("refs/contested", _oid(0))
    won: list[int] = []

    def act(i: int) -> None:
        try:
            if i % 2:
                refs.delete("refs/contested", expected=_oid(0))
            else:
                refs.update("refs/contested", _oid(1 + i), expected=_oid(0))
            won.append(i)
        except RefConflict:
            pass

    _run_threads(8, act)
    assert len(won) == 1
    (last,) = refs.reflog("refs/contested")[1:]
    expected_value = None if won[0] % 2 else _oid(1 + won[0])
    assert last.new == expected_value == refs.read("refs/contested")


def test_write_that_landed_before_a_retry_counts_as_success(
    client: Any, bucket: str, moto: MotoServer
) -> None:
    """botocore retries a PUT whose response was lost; the retry then fails its own
    condition. Simulated: the first PUT of the ref goes out on a second client just before
    the real one, which gets 412."""
    refs = S3RefStore(client, bucket, "p")
    other = moto.client()
    sent: list[str] = []

    def send_twice(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == "p/refs/retried" and not sent:
            sent.append(params["Key"])
            other.put_object(**params)

    client.meta.events.register("provide-client-params.s3.PutObject", send_twice)
    refs.update("refs/retried", _oid(1), expected=None)
    assert sent and refs.read("refs/retried") == _oid(1)
    assert [(e.old, e.new) for e in refs.reflog("refs/retried")] == [(None, _oid(1))]


def test_reflog_times_increase_despite_a_clock_going_back(
    client: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = S3RefStore(client, bucket, "p")
    refs.update("refs/r", _oid(1))
    first = refs.reflog("refs/r")[0].time_ns
    monkeypatch.setattr("osmo_store.refs.time", SimpleNamespace(time_ns=lambda: 1_000))
    refs.update("refs/r", _oid(2))
    refs.delete("refs/r")
    assert [e.time_ns for e in refs.reflog("refs/r")] == [first, first + 1, first + 2]
    assert [e.new for e in refs.reflog("refs/r")] == [_oid(1), _oid(2), None]


# --- batch operations ---------------------------------------------------------------------


def _blobs(n: int, tag: bytes = b"") -> list[tuple[ObjectId, bytes]]:
    return [encode_object(ObjectType.BLOB, b"batch %s %d" % (tag, i)) for i in range(n)]


def test_put_many_raw_with_one_bad_object_uploads_nothing(client: Any, bucket: str) -> None:
    store = S3ObjectStore(client, bucket, "p")
    requests = RequestLog(client)
    good = _blobs(20)
    _, other = encode_object(ObjectType.BLOB, b"something else")
    bad = [*good[:10], (good[10][0], other), *good[11:]]
    with pytest.raises(CorruptObject):
        store.put_many_raw(bad)
    assert requests.calls["PutObject"] == 0
    assert list(store.iter_ids()) == []
    assert store.put_many_raw([*good, good[0]]) == 21
    assert requests.calls["PutObject"] == 20  # the repeat is uploaded once
    assert sorted(store.iter_ids()) == sorted(oid for oid, _ in good)


def test_bulk_uploads_at_exit(client: Any, bucket: str) -> None:
    store = S3ObjectStore(client, bucket, "p")
    requests = RequestLog(client)
    with store.bulk() as writer:
        ids = [writer.put(ObjectType.BLOB, b"bulk %d" % i) for i in range(30)]
        assert requests.calls["PutObject"] == 0
    assert requests.calls["PutObject"] == 30
    assert store.missing(ids) == []


def test_missing_small_batch_asks_per_object(client: Any, bucket: str) -> None:
    store = S3ObjectStore(client, bucket, "p", list_threshold=50)
    present = [oid for oid, _ in _blobs(5)]
    store.put_many_raw(_blobs(5))
    absent = [_oid(i) for i in range(5)]
    requests = RequestLog(client)
    query = [absent[0], present[0], absent[1], present[1], absent[0], *present[2:], *absent[2:]]
    assert store.missing(query) == [absent[0], absent[1], absent[0], *absent[2:]]
    assert requests.calls == {"HeadObject": 10}


def test_missing_large_batch_lists_once(client: Any, bucket: str) -> None:
    store = S3ObjectStore(client, bucket, "p", list_threshold=50)
    store.put_many_raw(_blobs(40))
    # Pages of 7 keys, so the listing has to follow continuation tokens.
    client.meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: params.update(MaxKeys=7)
    )
    requests = RequestLog(client)
    present = [oid for oid, _ in _blobs(40)]
    absent = [_oid(i) for i in range(40)]
    query = [oid for pair in zip(absent, present, strict=True) for oid in pair] + absent[:10]
    assert store.missing(query) == absent + absent[:10]
    assert requests.calls == {"ListObjectsV2": 6}  # 40 keys, 7 a page
    # The listing is kept, and follows this store's own puts and deletes.
    requests.reset()
    added = store.put(ObjectType.BLOB, b"added later")
    store.delete(present[3])
    assert store.missing([added, present[3], *present[4:]]) == [present[3]]
    assert requests.calls == {"PutObject": 1, "DeleteObject": 1}


def test_get_many_raw_keeps_request_order(client: Any, bucket: str) -> None:
    store = S3ObjectStore(client, bucket, "p")
    blobs = _blobs(60)
    store.put_many_raw(blobs)
    want = [oid for oid, _ in reversed(blobs)] + [blobs[0][0]]
    got = list(store.get_many_raw(want))
    assert [oid for oid, _ in got] == want
    assert all(store.get_raw(oid) == data for oid, data in got)
    absent = _oid(0)
    stream = store.get_many_raw([blobs[1][0], absent, blobs[2][0]])
    assert next(stream) == blobs[1]
    with pytest.raises(ObjectNotFound):
        next(stream)


# --- URLs and opening a remote ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/evals", ("bucket", "evals")),
        ("s3://my.bucket-1/team/evals/", ("my.bucket-1", "team/evals")),
        ("S3://bucket//a//b/", ("bucket", "a/b")),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    "url", ["", "bucket/prefix", "s3:/bucket", "s3://", "s3:///prefix", "http://b/p",
            "s3://b", "s3://bu cket/p", "s3://bucket?x=1"]
)  # fmt: skip
def test_parse_s3_url_rejects(url: str) -> None:
    with pytest.raises(UsageError):
        parse_s3_url(url)


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_open_s3_remote_takes_the_endpoint_from_the_environment(
    aws_env: Any, monkeypatch: pytest.MonkeyPatch, moto: MotoServer, bucket: str, variable: str
) -> None:
    monkeypatch.setenv(variable, moto.url)
    objects, refs = open_s3_remote(f"s3://{bucket}/from/env")
    oid = objects.put(ObjectType.BLOB, b"via the environment")
    refs.update("refs/evals/x", oid)
    keys = _keys(moto.client(), bucket)
    assert f"from/env/objects/{oid}" in keys and "from/env/refs/evals/x" in keys


def test_open_s3_remote_endpoint_argument_wins(
    aws_env: Any, monkeypatch: pytest.MonkeyPatch, moto: MotoServer, bucket: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    objects, _ = open_s3_remote(f"s3://{bucket}", endpoint_url=moto.url)
    oid = objects.put(ObjectType.BLOB, b"explicit endpoint")
    assert _keys(moto.client(), bucket) == [f"objects/{oid}"]


def _assert_one_line(error: OsmoError) -> None:
    text = f"{error}\n{error.hint or ''}"
    assert "\n" not in str(error) and str(error)
    assert DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in text
    assert error.hint


def test_missing_bucket_is_a_one_line_error(aws_env: Any, moto: MotoServer) -> None:
    with pytest.raises(StoreError) as info:
        open_s3_remote("s3://no-such-bucket-here/p", endpoint_url=moto.url)
    _assert_one_line(info.value)
    assert "no-such-bucket-here" in str(info.value)


def test_missing_credentials_is_a_one_line_error(
    aws_env: Any, monkeypatch: pytest.MonkeyPatch, moto: MotoServer, bucket: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError) as info:
        open_s3_remote(f"s3://{bucket}", endpoint_url=moto.url)
    _assert_one_line(info.value)
    assert "credentials" in str(info.value)


def test_denied_access_is_a_one_line_error(client: Any, bucket: str) -> None:
    """moto accepts any credentials, so the denial is injected as S3 would send it."""

    def deny(**_: Any) -> tuple[Any, dict[str, Any]]:
        error = {"Code": "InvalidAccessKeyId", "Message": "The AWS Access Key Id you provided"}
        meta = {"HTTPStatusCode": 403}
        return SimpleNamespace(status_code=403), {"Error": error, "ResponseMetadata": meta}

    client.meta.events.register("before-call.s3.ListObjectsV2", deny)
    with pytest.raises(StoreError) as info:
        list(S3ObjectStore(client, bucket, "p").iter_ids())
    _assert_one_line(info.value)
    assert "InvalidAccessKeyId" in str(info.value)


def test_unreachable_endpoint_is_a_one_line_error(
    aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StoreError) as info:
        open_s3_remote("s3://bucket/p", endpoint_url="http://user:pw@127.0.0.1:9")
    _assert_one_line(info.value)
    assert "http://127.0.0.1:9" in str(info.value) and "pw" not in str(info.value)


def test_client_configuration(aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = make_s3_client("http://minio.internal:9000")
    assert custom.meta.endpoint_url == "http://minio.internal:9000"
    assert custom.meta.config.s3["addressing_style"] == "path"
    assert custom.meta.config.max_pool_connections == WORKERS
    assert custom.meta.config.retries["total_max_attempts"] == DEFAULT_MAX_ATTEMPTS
    aws = make_s3_client()
    assert aws.meta.endpoint_url.endswith(".amazonaws.com")
    assert (aws.meta.config.s3 or {}).get("addressing_style") != "path"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # the user's setting wins over ours
    assert make_s3_client().meta.config.retries["total_max_attempts"] == 2


def test_missing_boto3_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    with pytest.raises(StoreError) as info:
        open_s3_remote("s3://bucket/p")
    assert "osmo-store[s3]" in (info.value.hint or "")


def test_reflogs_of_a_ref_and_of_refs_below_its_name_stay_apart(client: Any, bucket: str) -> None:
    refs = S3RefStore(client, bucket, "p")
    refs.update("refs/a", _oid(1))
    refs.delete("refs/a")
    refs.update("refs/a/b", _oid(2))  # the name is free again, as a folder
    assert [e.new for e in refs.reflog("refs/a")] == [_oid(1), None]
    assert [e.new for e in refs.reflog("refs/a/b")] == [_oid(2)]
    assert refs.reflog_names() == ["refs/a", "refs/a/b"]
    assert refs.expire_reflog("refs/a", 2**62) == 2
    assert refs.reflog("refs/a") == [] and len(refs.reflog("refs/a/b")) == 1
