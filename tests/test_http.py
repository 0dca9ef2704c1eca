"""The HTTP backend against a real `osmo serve` app: waitress on 127.0.0.1 in a thread,
over a temporary store. The store and ref contracts run through it, then what only the
server promises: auth, verified uploads, limits, read-only and append-only modes, and many
clients at once."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from osmo_store import ObjectType, Repository, RunRecord
from osmo_store.errors import (
    AuthError,
    CorruptObject,
    InvalidObjectId,
    InvalidRefName,
    ObjectNotFound,
    OsmoError,
    RefConflict,
    RefNotFound,
    RemoteError,
    RemoteRefused,
    StoreError,
    UsageError,
)
from osmo_store.hashing import ObjectId
from osmo_store.http import client as http
from osmo_store.http import protocol as wire
from osmo_store.http.app import make_app
from osmo_store.http.client import HttpConnection, HttpObjectStore, HttpRefStore, open_http_remote
from osmo_store.http.protocol import encode_record
from osmo_store.http.serve import HttpServer
from osmo_store.maintenance.fsck import fsck
from osmo_store.objects import decompress_framed, encode_object, object_id
from osmo_store.tree import encode_leaf

pytest.register_assert_rewrite("osmo_store.testing.contract")
from osmo_store.testing.contract import CRAFTED_IDS, RefStoreContract, StoreContract  # noqa: E402

TOKEN = "tok-3f9a1c0d-never-in-output"
OCTETS = {"Content-Type": "application/octet-stream"}


class RunningServer:
    """``make_app`` over the store at ``path``, under waitress on a free port, serving in a
    thread; counts the requests it answers."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.path = path
        self.repo = Repository.open(path)
        self.token = options.get("token")
        self.requests: list[tuple[str, str]] = []
        app = make_app(self.repo, **{"token": None, **options})

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
            return app(environ, start_response)

        self.server = HttpServer(counting, "127.0.0.1", 0, threads=4, max_body=app.max_body)
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def count(self, path: str) -> int:
        return sum(1 for _, p in self.requests if p == path)

    def post(self, path: str, **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return requests.post(self.url + path, headers=headers, timeout=30, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return requests.get(self.url + path, headers=headers, timeout=30, **kw)

    def close(self) -> None:
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "server did not stop"
        self.repo.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start servers: ``serve(**make_app options, path=...)``; all stopped after the test."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(path: Path | None = None, **options: Any) -> RunningServer:
            nonlocal count
            count += 1
            server = RunningServer(path or tmp_path / f"store{count}", **options)
            stack.callback(server.close)
            return server

        yield start


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _blob(content: bytes) -> tuple[ObjectId, bytes]:
    return encode_object(ObjectType.BLOB, content)


# --- the contracts, over HTTP --------------------------------------------------------------


class TestHttpStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _serve(self, serve: Callable[..., RunningServer]) -> None:
        self._start = serve
        self._servers: dict[str, RunningServer] = {}

    def make_store(self) -> HttpObjectStore:
        server = self._start(token=TOKEN)
        objects, _ = open_http_remote(server.url, TOKEN)
        self._servers[server.url] = server
        return objects

    def make_read_only(self, store: HttpObjectStore) -> HttpObjectStore:  # type: ignore[override]
        # A second server over the same store, read-only: its clients learn so from /info.
        server = self._start(self._servers[store.connection.url].path, token=TOKEN, read_only=True)
        objects, _ = open_http_remote(server.url, TOKEN)
        return objects


class TestHttpRefs(RefStoreContract):
    @pytest.fixture(autouse=True)
    def _serve(self, serve: Callable[..., RunningServer]) -> None:
        self._start = serve

    def make_refs(self) -> HttpRefStore:
        server = self._start(token=TOKEN)
        # The server refuses refs to objects it lacks: store the contract's targets.
        for n in range(10):
            server.repo.objects.put(ObjectType.BLOB, b"ref target %d" % n)
        _, refs = open_http_remote(server.url, TOKEN)
        return refs

    # Expiring a reflog is server-side maintenance (gc), not offered over HTTP.
    test_expire_reflog_of_deleted_ref_can_drop_everything = None  # type: ignore[assignment]
    test_expire_reflog_of_absent_ref = None  # type: ignore[assignment]

    def test_expire_reflog(self) -> None:
        refs = self.make_refs()
        target = object_id(ObjectType.BLOB, b"ref target 1")
        refs.update("refs/r", target)
        with pytest.raises(StoreError, match="not supported over HTTP"):
            refs.expire_reflog("refs/r", 2**62)
        assert len(refs.reflog("refs/r")) == 1


# --- auth ----------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_refused_and_nothing_is_stored(
    serve: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(token=TOKEN)
    present = server.repo.objects.put(ObjectType.BLOB, b"already there")
    with pytest.raises(AuthError) as info:
        open_http_remote(server.url, None)
    assert "needs a token" in str(info.value) and "OSMO_TOKEN" in (info.value.hint or "")
    with pytest.raises(AuthError) as info:
        open_http_remote(server.url, "wrong-" + TOKEN)
    assert "refused the token" in str(info.value)

    oid, data = _blob(b"must not arrive")
    for token in (None, "wrong-" + TOKEN, TOKEN.upper()):
        connection = HttpConnection(server.url, token)
        objects, refs = HttpObjectStore(connection), HttpRefStore(connection)
        attempts: list[Callable[[], object]] = [
            lambda o=objects: o.put_raw(oid, data),
            lambda o=objects: o.put_many_raw([(oid, data)]),
            lambda o=objects: o.get(present),
            lambda o=objects: list(o.iter_ids()),
            lambda r=refs: r.update("refs/x", present),
            lambda r=refs: r.list(),
        ]
        for attempt in attempts:
            with pytest.raises(AuthError) as info:
                attempt()
            assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
        assert TOKEN not in repr(connection) + repr(objects) + repr(refs)
        connection.close()
    assert list(server.repo.objects.iter_ids()) == [present]
    assert server.repo.refs.list() == {}

    for header in (None, f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x", f"Token {TOKEN}"):
        answer = requests.get(
            server.url + "/v1/info", headers={"Authorization": header} if header else {}
        )
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["error"] == "unauthorized"
        assert TOKEN not in answer.text
    assert requests.get(server.url + "/v1/nowhere").status_code == 401  # before routing
    assert server.get("/v1/info").json()["server"] == "osmo"
    assert caplog.text and TOKEN not in caplog.text


def test_unreachable_server_and_bad_urls_fail_cleanly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(RemoteError) as info:
        open_http_remote(url, TOKEN)
    assert url in str(info.value) and TOKEN not in str(info.value)
    with pytest.raises(UsageError):
        open_http_remote(f"http://user:{TOKEN}@127.0.0.1:{port}", None)
    with pytest.raises(UsageError):
        open_http_remote("ftp://example.org", None)


# --- uploads are verified, whole or not at all ---------------------------------------------


def test_upload_whose_bytes_do_not_match_is_refused_whole(
    serve: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    good_id, good = _blob(b"good")
    claimed, _ = _blob(b"claimed")
    _, other = _blob(b"actual")
    bad_bodies = {
        "other object's bytes": encode_record(good_id, good) + encode_record(claimed, other),
        "not zstd": encode_record(good_id, good) + encode_record(claimed, b"junk"),
        "truncated object": (encode_record(good_id, good) + encode_record(claimed, other))[:-3],
    }
    for what, body in bad_bodies.items():
        answer = server.post("/v1/objects/put", data=body, headers=dict(OCTETS))
        assert answer.status_code == 400, what
        assert answer.json()["error"] == "bad_object" and answer.json()["id"] == claimed, what
    answer = server.post(
        "/v1/objects/put", data=encode_record(good_id, good) + b"\x01" * 20, headers=dict(OCTETS)
    )
    assert (answer.status_code, answer.json()["error"]) == (400, "bad_object")
    # A few bytes of zstd may declare gigabytes: refused before decompressing.
    monkeypatch.setattr("osmo_store.http.app.MAX_UPLOAD_OBJECT", 1000)
    zeros_id, zeros = _blob(b"\0" * 5000)
    answer = server.post("/v1/objects/put", data=encode_record(zeros_id, zeros), headers=OCTETS)
    assert answer.status_code == 400 and "declares" in answer.json()["message"]
    assert list(server.repo.objects.iter_ids()) == []
    assert _files(server.path / "objects") == set()  # not even a temp pack left behind

    objects, _ = open_http_remote(server.url, None)
    with pytest.raises(CorruptObject):
        objects.put_raw(claimed, other)  # verified here before anything is sent
    assert server.count("/v1/objects/put") == len(bad_bodies) + 2
    assert server.post("/v1/objects/put", data=encode_record(good_id, good), headers=OCTETS).ok
    assert list(server.repo.objects.iter_ids()) == [good_id]


def test_crafted_ids_and_ref_names_are_refused_and_touch_nothing(
    serve: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = serve()
    target = server.repo.objects.put(ObjectType.BLOB, b"target")
    before = _files(tmp_path)
    for crafted in CRAFTED_IDS:
        for path in ("/v1/objects/missing", "/v1/objects/get"):
            answer = server.post(path, json={"ids": [target, crafted]})
            assert (answer.status_code, answer.json()["error"]) == (400, "invalid_id"), crafted
        update = {"name": "refs/x", "new": crafted, "expected": "*"}
        answer = server.post("/v1/refs/update", json=update)
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_id"), crafted
    crafted_names = ["refs/../x", "/etc/passwd", "refs/../../escape", "../refs/x",
                     "refs/a/../../../b", "refs/x\x00y", "refs/", "x"]  # fmt: skip
    for name in crafted_names:
        for new in (target, None):
            answer = server.post(
                "/v1/refs/update", json={"name": name, "new": new, "expected": "*"}
            )
            assert (answer.status_code, answer.json()["error"]) == (400, "invalid_ref_name")
        for path in ("/v1/reflog", "/v1/refs"):
            answer = server.get(path, params={"name": name})
            assert (answer.status_code, answer.json()["error"]) == (400, "invalid_ref_name")
    assert _files(tmp_path) == before
    assert not (server.path / "x").exists() and not (tmp_path / "escape").exists()
    assert server.repo.refs.list() == {} and server.repo.refs.reflog_names() == []


def test_malformed_requests(serve: Callable[..., RunningServer]) -> None:
    server = serve()
    as_json = {"Content-Type": "application/json"}
    too_many = {"ids": ["0" * 64] * 50_001}
    cases = [
        (server.get("/v1/nowhere"), 404, "unknown_endpoint"),
        (server.get("/v1/objects/missing"), 405, "method_not_allowed"),
        (server.post("/v1/info"), 405, "method_not_allowed"),
        (server.post("/v1/objects/missing", data=b"{no", headers=as_json), 400, "bad_request"),
        (server.post("/v1/objects/missing", json=["a", "list"]), 400, "bad_request"),
        (server.post("/v1/objects/missing", json={"ids": "abc"}), 400, "bad_request"),
        (server.post("/v1/objects/missing", json=too_many), 400, "bad_request"),
        (server.post("/v1/objects/missing", data=b'{"ids": []}'), 415, "unsupported_media_type"),
        (server.post("/v1/objects/put", data=b"", headers=as_json), 415, "unsupported_media_type"),
        (server.post("/v1/refs/update", json={"name": "refs/x", "new": None}), 400, "bad_request"),
        (server.get("/v1/reflog"), 400, "bad_request"),
        (server.get("/v1/refs?name=refs/a&name=refs/b"), 400, "bad_request"),
    ]
    for answer, status, code in cases:
        assert (answer.status_code, answer.json()["error"]) == (status, code), answer.request.url
        assert answer.headers["Content-Type"].startswith("application/json")
    assert server.get("/v1/objects/missing").headers["Allow"] == "POST"


# --- size limits -----------------------------------------------------------------------------


def test_body_over_max_body_is_refused(serve: Callable[..., RunningServer]) -> None:
    limit = 64 * 1024
    server = serve(max_body=limit)
    big_id, big = _blob(random.Random(1).randbytes(limit + 100))  # incompressible
    body = encode_record(big_id, big)
    answer = server.post("/v1/objects/put", data=body, headers=dict(OCTETS))
    assert answer.status_code == 413
    assert answer.json() == {"error": "too_large", "message": answer.json()["message"],
                             "max_body": limit}  # fmt: skip
    chunked = (body[i : i + 4096] for i in range(0, len(body), 4096))  # no Content-Length
    answer = server.post("/v1/objects/put", data=chunked, headers=dict(OCTETS))
    assert (answer.status_code, answer.json()["error"]) == (413, "too_large")
    ids = json.dumps({"ids": [big_id] * 1500}).encode()  # ~100 KB
    for data in (ids, (ids[i : i + 4096] for i in range(0, len(ids), 4096))):
        answer = server.post(
            "/v1/objects/missing", data=data, headers={"Content-Type": "application/json"}
        )
        assert (answer.status_code, answer.json()["error"]) == (413, "too_large")
    assert list(server.repo.objects.iter_ids()) == []

    objects, _ = open_http_remote(server.url, None)
    assert objects.max_body == limit
    puts = server.count("/v1/objects/put")
    with pytest.raises(RemoteError, match="at most 65536 bytes"):
        objects.put_raw(big_id, big)
    assert server.count("/v1/objects/put") == puts  # refused here, nothing sent
    rng = random.Random(2)
    small = [_blob(rng.randbytes(10_000)) for _ in range(20)]  # ~200 KB in all
    assert objects.put_many_raw(small) == 20
    assert server.count("/v1/objects/put") - puts >= 4  # split to fit the server's limit
    assert set(server.repo.objects.iter_ids()) == {oid for oid, _ in small}


def test_body_limits_hold_under_any_wsgi_server(tmp_path: Path) -> None:
    """Straight WSGI, no waitress (which de-chunks bodies and gives them a length): a
    declared length over the limit is refused without touching the body, and a body
    without a length is counted as it is read."""

    class Untouchable(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            raise AssertionError("body was read")

    def call(app: Any, body: Any, **environ: Any) -> tuple[str, bytes]:
        seen: list[str] = []
        environ = {"REQUEST_METHOD": "POST", "wsgi.input": body, **environ}
        answer = b"".join(app(environ, lambda status, headers: seen.append(status)))
        return seen[0], answer

    with Repository.open(tmp_path / "s") as repo:
        app = make_app(repo, token=None, max_body=4096)
        put = {"PATH_INFO": "/v1/objects/put", "CONTENT_TYPE": "application/octet-stream"}
        status, answer = call(app, Untouchable(), CONTENT_LENGTH=str(10**9), **put)
        assert status.startswith("413") and b"too_large" in answer
        ids = json.dumps({"ids": ["0" * 64] * 100}).encode()  # 6.7 KB, no length given
        missing = {"PATH_INFO": "/v1/objects/missing", "CONTENT_TYPE": "application/json"}
        status, answer = call(app, io.BytesIO(ids), **missing, **{"wsgi.input_terminated": True})
        assert status.startswith("413") and b"too_large" in answer
        status, _ = call(app, io.BytesIO(ids[:3000] + b"]}"), **missing)  # nor an end marker
        assert status.startswith("411")
        assert list(repo.objects.iter_ids()) == []


# --- read-only and append-only servers -------------------------------------------------


def test_read_only_server_refuses_uploads_and_ref_updates(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(read_only=True)
    kept = server.repo.objects.put(ObjectType.BLOB, b"kept")
    server.repo.update_ref("refs/keep", kept)
    objects, refs = open_http_remote(server.url, None)
    assert objects.read_only
    assert objects.get(kept) == (ObjectType.BLOB, b"kept")
    assert refs.list() == {"refs/keep": kept}
    # A client that does not know (or ignores) that the server is read-only:
    connection = HttpConnection(server.url, None)
    objects, refs = HttpObjectStore(connection), HttpRefStore(connection)
    new_id, new = _blob(b"new")
    attempts = [
        lambda: objects.put_raw(new_id, new),
        lambda: objects.put_many_raw([(new_id, new)]),
        lambda: refs.update("refs/keep", kept),
        lambda: refs.update("refs/other", kept, expected=None),
        lambda: refs.delete("refs/keep"),
    ]
    for attempt in attempts:
        with pytest.raises(RemoteRefused) as info:
            attempt()
        assert info.value.code == "read_only" and isinstance(info.value, StoreError)
    assert list(server.repo.objects.iter_ids()) == [kept]
    assert server.repo.refs.list() == {"refs/keep": kept}
    assert len(server.repo.refs.reflog("refs/keep")) == 1


def test_append_only_server_allows_only_fast_forwards(serve: Callable[..., RunningServer]) -> None:
    server = serve(append_only=True)
    objects, refs = open_http_remote(server.url, None)
    tree = objects.put(ObjectType.TREE, encode_leaf(0, []))
    r1 = objects.put_run(RunRecord(tree, (), {"n": 1}))
    r2 = objects.put_run(RunRecord(tree, (r1,), {"n": 2}))
    r3 = objects.put_run(RunRecord(tree, (r2,), {"n": 3}))
    side = objects.put_run(RunRecord(tree, (r1,), {"n": "side"}))
    merge = objects.put_run(RunRecord(tree, (side, r3), {"n": "merge"}))
    unrelated = objects.put_run(RunRecord(tree, (), {"n": "other"}))
    blob1, blob2 = (objects.put(ObjectType.BLOB, c) for c in (b"one", b"two"))
    name = "refs/evals/a"

    refs.update(name, r1, expected=None)  # creating is allowed
    refs.update(name, r3, expected=r1)  # forward, over r2
    refs.update(name, r3)  # to itself
    for backwards in (r2, r1, side, unrelated, tree, blob1):
        with pytest.raises(RemoteRefused) as info:
            refs.update(name, backwards)
        assert info.value.code == "not_fast_forward"
    with pytest.raises(RemoteRefused):
        refs.delete(name)
    with pytest.raises(RefConflict) as conflict:  # compare-and-swap still applies
        refs.update(name, merge, expected=r1)
    assert conflict.value.actual == r3
    refs.update(name, merge, expected=r3)  # a merge whose second parent is r3
    refs.update("refs/tags/t", blob1)
    with pytest.raises(RemoteRefused):
        refs.update("refs/tags/t", blob2)  # non-run objects: only to themselves
    refs.update("refs/tags/t", blob1)
    server.post("/v1/refs/update", json={"name": name, "new": merge, "expected": merge,
                                         "log": False}).raise_for_status()  # fmt: skip

    assert server.repo.refs.list() == {name: merge, "refs/tags/t": blob1}
    log = [(e.old, e.new) for e in server.repo.refs.reflog(name)]
    assert log == [(None, r1), (r1, r3), (r3, r3), (r3, merge), (merge, merge)]  # all kept


# --- batches, streams, reflog text ----------------------------------------------------------


def test_batches_are_chunked_and_keep_order(
    serve: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "MISSING_CHUNK", 7)
    monkeypatch.setattr(http, "GET_CHUNK", 5)
    monkeypatch.setattr(http, "PUT_CHUNK_OBJECTS", 6)
    server = serve()
    objects, _ = open_http_remote(server.url, None)
    items = [_blob(b"item %d" % i) for i in range(20)]
    assert objects.put_many_raw(items) == 20
    assert server.count("/v1/objects/put") == 4
    absent = [object_id(ObjectType.BLOB, b"absent %d" % i) for i in range(3)]
    asked = [items[3][0], absent[2], *[oid for oid, _ in items], absent[0], absent[1]]
    assert objects.missing(asked) == [absent[2], absent[0], absent[1]]
    # 25 ids, 7 at a time: each chunk by id prefixes, then the ids whose prefix the
    # server has, in full
    assert server.count("/v1/objects/missing") == 8
    wanted = [oid for oid, _ in reversed(items)]
    assert list(objects.get_many_raw(wanted)) == list(reversed(items))
    assert server.count("/v1/objects/get") == 4
    with pytest.raises(ObjectNotFound) as info:
        list(objects.get_many_raw([items[0][0], absent[1]]))
    assert info.value.oid == absent[1]

    puts = server.count("/v1/objects/put")
    with objects.bulk() as writer:
        staged = [writer.put(ObjectType.BLOB, b"staged %d" % i) for i in range(5)]
        assert writer.get(staged[2]) == (ObjectType.BLOB, b"staged 2")
        assert server.count("/v1/objects/put") == puts  # nothing sent yet
    assert server.count("/v1/objects/put") == puts + 1  # one upload for the block
    assert objects.missing(staged) == []


def test_download_cut_short_is_an_error(
    serve: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    rng = random.Random(3)
    first, second = (server.repo.objects.put(ObjectType.BLOB, rng.randbytes(1_200_000))
                     for _ in range(2))  # fmt: skip
    objects, _ = open_http_remote(server.url, None)
    real = server.repo.objects.get_raw

    def vanishing(oid: ObjectId) -> bytes:
        if oid == second:  # gc removed it after the presence check
            raise ObjectNotFound(oid)
        return real(oid)

    def vanishing_framed(oids):
        for oid in oids:
            yield oid, decompress_framed(vanishing(oid), oid)

    monkeypatch.setattr(server.repo.objects, "get_raw", vanishing)
    monkeypatch.setattr(server.repo.objects, "get_many_framed", vanishing_framed)
    with pytest.raises(RemoteError):
        list(objects.get_many_raw([first, second]))


def test_reflog_text_from_clients_stays_one_line(serve: Callable[..., RunningServer]) -> None:
    server = serve()
    target = server.repo.objects.put(ObjectType.BLOB, b"t")
    _, refs = open_http_remote(server.url, None)
    forged = f"x\u2028{'0' * 64} {'f' * 64} 1 mallory\tforged\x85more\r\nend"
    refs.update("refs/r", target, who="eve\u2028x y", message=forged)
    (entry,) = server.repo.refs.reflog("refs/r")
    assert entry.new == target and entry.who == "eve_x_y"
    assert entry.message.startswith("x ") and entry.message.endswith("end")


# --- many clients at once ------------------------------------------------------------------


def test_concurrent_pushes_and_ref_updates(serve: Callable[..., RunningServer]) -> None:
    server = serve(token=TOKEN)
    threads, rounds, name = 16, 3, "refs/evals/shared"
    start = threading.Barrier(threads)
    runs: list[ObjectId] = []
    landed: dict[ObjectId, ObjectId | None] = {}  # run -> the value its swap expected
    pushed: dict[ObjectId, bytes] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        try:
            objects, refs = open_http_remote(server.url, TOKEN)
            start.wait()
            for r in range(rounds):
                contents = [b"shared %d" % k for k in range(5)]
                contents += [b"client %d round %d row %d" % (i, r, k) for k in range(20)]
                with objects.bulk() as writer:
                    ids = [writer.put(ObjectType.BLOB, c) for c in contents]
                    tree = writer.put(ObjectType.TREE, encode_leaf(0, []))
                run = objects.put_run(RunRecord(tree, (), {"client": i, "round": r}))
                with lock:
                    pushed.update(zip(ids, contents, strict=True))
                    runs.append(run)
                while True:  # compare-and-swap until it lands
                    current = refs.read(name)
                    try:
                        refs.update(name, run, expected=current, message=f"c{i} r{r}")
                        landed[run] = current
                        break
                    except RefConflict:
                        continue
            objects.close()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failures.append(e)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not failures, failures
    assert len(runs) == threads * rounds

    repo = server.repo
    assert repo.refs.read(name) in runs
    log = repo.refs.reflog(name)
    assert len(log) == threads * rounds  # every swap landed once ...
    assert [e.old for e in log] == [None] + [e.new for e in log[:-1]]  # ... none lost
    assert {e.new: e.old for e in log} == landed  # each moved from what it expected
    for oid, content in pushed.items():
        assert repo.objects.get(oid) == (ObjectType.BLOB, content)
    report = fsck(repo, full=True)
    assert report.ok, report.problems
    assert not [n for n in report.notes if "temp" in n], report.notes


def test_the_server_side_imports_nothing_from_the_client() -> None:
    """The wire protocol has one home (protocol.py): the server's modules, loaded in a fresh
    interpreter, do not pull in the client backend."""
    script = (
        "import json, sys\n"
        "import osmo_store.http.app, osmo_store.http.serve, osmo_store.http.auth\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('osmo_store.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert {"osmo_store.http.app", "osmo_store.http.serve", "osmo_store.http.protocol"} <= loaded
    assert not loaded & {"osmo_store.http.client", "osmo_store.http.connection"}


@pytest.mark.parametrize(
    "exc",
    [
        InvalidObjectId("xyz"),
        InvalidRefName("refs/a..b", "contains '..'"),
        ObjectNotFound("ab" * 32),
        RefNotFound("refs/gone"),
        RefConflict("refs/x", "cd" * 32, None),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_error_table_maps_an_exception_there_and_back(exc: OsmoError) -> None:
    """The server's answer for a library error, read by the client, is the same error."""
    answer = wire.error_for_exception(exc)
    body = json.loads(json.dumps(wire.error_body(answer)))
    back = wire.error_from_answer(
        wire.ErrorAnswer(answer.status, answer.code, answer.message, body, "http://h", False)
    )
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert vars(back) == vars(exc)
