"""What a hostile remote can make osmo allocate: an HTTP server's endless id line, and a
"zstd bomb" (a few KB of a valid frame declaring more than a remote object may hold) in a
directory remote or an S3 bucket. Each is refused in one line naming where it came from,
long before the bytes it declares are read, and the local store is left as it was."""

from __future__ import annotations

import json
import socket
import threading
import tracemalloc
from collections.abc import Callable
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import blake3
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from osmo_store import ObjectType, Repository
from osmo_store.backends.pack import PackWriter
from osmo_store.backends.s3 import S3ObjectStore
from osmo_store.cli.main import main
from osmo_store.errors import RecordTooLarge, RemoteError, StoreError
from osmo_store.hashing import ObjectId
from osmo_store.http import protocol as wire
from osmo_store.http.client import HttpObjectStore, HttpRefStore, open_http_remote
from osmo_store.maintenance.fsck import fsck
from osmo_store.objects import MAX_REMOTE_OBJECT, encode_object, frame_header
from osmo_store.sync.remotes import open_remote
from osmo_store.sync.transfer import push

from .s3server import aws_env_fixture, moto_server_fixture

moto = moto_server_fixture()
aws_env = aws_env_fixture()

#: what the hostile server sends at most before it gives up: the client must fail long before
_SERVER_CAP = 64 * 2**20
#: what a failing client may have made the server send: what it read, and what its
#: socket's receive buffer took meanwhile (seen: 0.1-4 MB)
_SENT_BOUND = 32 * 2**20


# --- an HTTP server's endless line ---------------------------------------------------------


#: route: (status, content type, the answer's start before its endless part)
_ENDLESS_ANSWERS = {
    wire.OBJECTS: (200, wire.ID_LIST_TYPE, b""),
    wire.REFS: (200, wire.JSON_TYPE, b'{"refs": {"refs/evals/x": "'),
    wire.REFLOGS: (500, wire.JSON_TYPE, b'{"error": "internal", "message": "'),
}


class _EndlessLineServer:
    """A real HTTP server on 127.0.0.1 that answers ``/v1/info`` as an osmo server does, and
    every other GET with an answer that never ends (stopping at ``_SERVER_CAP``): one id
    line for ``/v1/objects``, a JSON string for ``/v1/refs``, an error's JSON message for
    ``/v1/reflogs``."""

    def __init__(self) -> None:
        self.sent = 0
        self.done = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection does

            def do_GET(self) -> None:
                if self.path == wire.API_PREFIX + wire.INFO:
                    body = json.dumps({"server": wire.SERVER_NAME, "store_format": 1}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", wire.JSON_TYPE)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                route = self.path.removeprefix(wire.API_PREFIX).partition("?")[0]
                status, kind, head = _ENDLESS_ANSWERS[route]
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.end_headers()
                # A small send buffer: what is sent is what the client let in, near enough.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2**16)
                piece = b"ab" * 2**15
                try:
                    self.wfile.write(head)
                    while owner.sent < _SERVER_CAP:
                        self.wfile.write(piece)
                        owner.sent += len(piece)
                except OSError:
                    pass  # the client hung up: what the test wants
                finally:
                    owner.done.set()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_an_endless_id_line_is_refused_after_a_few_bytes() -> None:
    message = _endless(lambda objects, refs: list(objects.iter_ids()))
    assert "line" in message, message


@pytest.mark.parametrize("route", ["refs", "error"])
def test_an_endless_answer_is_refused_at_the_bound(
    monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """Any answer read whole (JSON, an error's body) is read to a bound, lowered here below
    what the server sends. (``raising=False``: the code before the bound had no such name;
    misspelt, the answer is read to the server's cap, and the test fails.)"""
    monkeypatch.setattr(wire, "MAX_ANSWER", 2**20, raising=False)
    if route == "refs":
        message = _endless(lambda objects, refs: refs.list())
    else:
        message = _endless(lambda objects, refs: refs.reflog_names())
    assert str(2**20) in message, message


def _endless(read: Callable[[HttpObjectStore, HttpRefStore], object]) -> str:
    """``read`` from an endless answer fails with a RemoteError of one line naming the
    server (returned), having made it send a few MB at most, and held less."""
    server = _EndlessLineServer()
    objects, refs = open_http_remote(server.url, None)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteError) as caught:
            read(objects, refs)
        peak = tracemalloc.get_traced_memory()[1]
        objects.close()  # the client's side of the connection goes: the server sees it
        assert server.done.wait(60), "the server never stopped sending"
    finally:
        tracemalloc.stop()
        server.close()
    message = str(caught.value)
    assert server.url in message and "\n" not in message, message
    assert server.sent < _SENT_BOUND, server.sent
    assert peak < 4 * 2**20, peak
    return message


# --- a zstd bomb in a directory remote or a bucket -------------------------------------------

#: content of the bomb: its framed form is one byte over the bound
_BOMB_CONTENT = MAX_REMOTE_OBJECT + 1 - len(frame_header(ObjectType.BLOB, 2**30))


@cache
def _bomb() -> tuple[ObjectId, bytes]:
    """A valid blob of zeros whose framed form is one byte more than a remote object may
    hold: (its id, its stored form, a few hundred KB). Made (and hashed) in pieces, so the
    test never holds the gigabyte it stands for."""
    header = frame_header(ObjectType.BLOB, _BOMB_CONTENT)
    hasher = blake3.blake3(header)
    stream = zstandard.ZstdCompressor(level=1).compressobj(size=len(header) + _BOMB_CONTENT)
    parts = [stream.compress(header)]
    piece = bytes(2**20)
    left = _BOMB_CONTENT
    while left:
        chunk = piece[: min(left, len(piece))]
        hasher.update(chunk)
        parts.append(stream.compress(chunk))
        left -= len(chunk)
    parts.append(stream.flush())
    stored = b"".join(parts)
    assert zstandard.frame_content_size(stored) == MAX_REMOTE_OBJECT + 1
    return ObjectId(hasher.hexdigest()), stored


_BOMB_REF = "refs/evals/" + "b" * 64


def _assert_refused_and_untouched(local: Path, where: str, capsys: pytest.CaptureFixture) -> str:
    """``osmo pull`` from ``where`` fails in one line (returned), storing nothing, with
    little memory."""
    capsys.readouterr()
    tracemalloc.start()
    try:
        code = main(["--store", str(local), "pull", where])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    first = err.strip().splitlines()[0]
    assert _bomb()[0] in first and str(MAX_REMOTE_OBJECT) in first, err
    assert where in first, err  # the remote it came from, not this store, is to blame
    assert peak < 64 * 2**20, peak
    with Repository.open(local) as repo:
        assert list(repo.objects.iter_ids()) == [] and repo.refs.list() == {}
        report = fsck(repo)
        assert report.ok, report.problems
    return first


@pytest.mark.parametrize("kept", ["loose", "packed"])
def test_a_zstd_bomb_in_a_directory_remote_is_refused(tmp_path: Path, capsys, kept: str) -> None:
    oid, stored = _bomb()
    with Repository.open(tmp_path / "remote") as remote:
        if kept == "loose":
            path = remote.objects.loose_path(oid)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(stored)
        else:
            # A version 1 pack holds stored forms as they are (version 2 would recompress).
            writer = PackWriter(remote.objects.pack_dir, version=1)
            writer.add(oid, stored)
            writer.finish()
            remote.objects.reload_packs()
        remote.refs.update(_BOMB_REF, oid, None)
    assert main(["init", str(tmp_path / "local")]) == 0
    first = _assert_refused_and_untouched(tmp_path / "local", str(tmp_path / "remote"), capsys)
    assert ("pack-" in first) == (kept == "packed"), first


def test_a_zstd_bomb_in_a_bucket_is_refused(moto, aws_env, tmp_path: Path, capsys) -> None:
    oid, stored = _bomb()
    bucket = moto.new_bucket()
    client = moto.client()
    client.put_object(Bucket=bucket, Key=f"evals/objects/{oid}", Body=stored)
    client.put_object(Bucket=bucket, Key=f"evals/{_BOMB_REF}", Body=f"{oid}\n".encode())
    local = tmp_path / "local"
    assert main(["init", str(local)]) == 0
    url = f"s3://{bucket}/evals"
    add = ["--store", str(local), "remote", "add", "lake", url, "--endpoint-url", moto.url]
    assert main(add) == 0
    _assert_refused_and_untouched(local, "lake", capsys)


def test_an_s3_object_body_past_the_bound_is_not_read(moto, aws_env) -> None:
    """A bucket (or an endpoint) can hold, or stream, any number of bytes under an object's
    key: no more are read than the longest stored form of an object within the bound. (The
    bound is lowered here so that the test's bucket holds megabytes, not gigabytes.)"""
    bucket = moto.new_bucket()
    store = S3ObjectStore(moto.client(), bucket, "p")
    store.max_object_size = 2**20
    oid, _ = encode_object(ObjectType.BLOB, b"asked for")
    store.location.client.put_object(Bucket=bucket, Key=f"p/objects/{oid}", Body=bytes(8 * 2**20))
    tracemalloc.start()
    try:
        with pytest.raises(StoreError) as caught:
            store.get(oid)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert f"p/objects/{oid}" in message and f"s3://{bucket}/p" in message, message
    assert "\n" not in message
    assert peak < 4 * 2**20, peak


@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
    end=st.booleans(),
)
def test_iter_lines_reads_lines_whatever_the_pieces(
    lines: list[bytes], cuts: list[int], end: bool
) -> None:
    """The lines are the same however the stream comes in pieces (a line split over two
    reads included); only a line past the bound fails."""
    data = b"\n".join(lines) + (b"\n" if end and lines else b"")
    sizes = iter(cuts * (len(data) + 1))
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        piece = data[pos : pos + min(n, next(sizes))]
        pos += len(piece)
        return piece

    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    longest = max((len(line) for line in expected), default=0)
    if longest <= 30:
        assert list(wire.iter_lines(read, 30)) == expected
    else:
        with pytest.raises(RecordTooLarge):
            list(wire.iter_lines(read, 30))


def test_a_push_refuses_an_object_no_reader_of_the_remote_could_fetch(tmp_path: Path) -> None:
    """The other way: an object over the bound a remote's readers hold it to is not pushed
    (it would be stored there for no one). The bound is lowered here to 1 MiB."""
    with Repository.open(tmp_path / "local") as repo:
        small = repo.objects.put(ObjectType.BLOB, b"fits")
        big = repo.objects.put(ObjectType.BLOB, bytes(3 * 2**20))
        repo.update_ref("refs/evals/" + "c" * 64, big)
        repo.update_ref("refs/evals/" + "d" * 64, small)
        remote = open_remote(repo, str(tmp_path / "remote"), create=True)
        remote.objects.max_object_size = 2**20
        try:
            with pytest.raises(RemoteError) as caught:
                push(repo, remote)
            assert remote.refs.list() == {}
            assert big not in set(remote.objects.iter_ids())
        finally:
            remote.close()
    message = str(caught.value)
    assert big in message and str(2**20) in message and "\n" not in message, message
