"""Hostile requests to a real `osmo serve` app (waitress on 127.0.0.1, issue 12): bad input
is a 4xx, never a 500, and nothing of it is stored. Then a Hypothesis fuzzer over every
endpoint (paths, query strings, headers, bodies) holding the server to that."""

from __future__ import annotations

import http.client
import io
import json
import random
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from osmo_store import ObjectType, Repository
from osmo_store.errors import CorruptObject
from osmo_store.hashing import ObjectId
from osmo_store.http import protocol as wire
from osmo_store.http.app import make_app
from osmo_store.http.client import open_http_remote
from osmo_store.http.protocol import encode_record
from osmo_store.http.serve import HttpServer
from osmo_store.maintenance.fsck import fsck
from osmo_store.objects import (
    compress_framed,
    decode_object,
    decompress_framed,
    encode_object,
    frame_object,
)

from .fuzzing import fuzz_settings
from .test_http import OCTETS, RunningServer


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[], RunningServer]]:
    servers: list[RunningServer] = []

    def start() -> RunningServer:
        servers.append(RunningServer(tmp_path / f"store{len(servers)}"))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# --- F-1: a ref name with a lone surrogate ------------------------------------------------


def _raw(server: RunningServer, method: str, target: str, body: bytes = b"", **headers: str):
    """One request exactly as given (requests would refuse to send some of these)."""
    host, port = urllib.parse.urlsplit(server.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key.replace("_", "-"), value.encode("latin-1"))
        if (body or method == "POST") and "Content_Length" not in headers:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["refs/\ud800", "refs/a\udcff", "refs/\udfff/x"])
def test_ref_name_with_a_lone_surrogate_is_a_400(
    serve: Callable[[], RunningServer], name: str
) -> None:
    server = serve()
    target = server.repo.objects.put(ObjectType.BLOB, b"target")
    # JSON can carry a lone surrogate (as a \\u escape); the name must be refused, not crash.
    body = json.dumps({"name": name, "new": target, "expected": "*"}).encode()
    status, answer = _raw(server, "POST", "/v1/refs/update", body, Content_Type="application/json")
    assert status == 400, answer
    assert json.loads(answer)["error"] == "invalid_ref_name"
    # In a query string: percent-encoded bytes that are no UTF-8 (a surrogate's encoding).
    for path in ("/v1/refs", "/v1/reflog"):
        status, answer = _raw(server, "GET", f"{path}?name=refs/%ED%A0%80")
        assert status == 400, answer
    assert server.repo.refs.list() == {} and server.repo.refs.reflog_names() == []


# --- F-2: bytes after an object's zstd frame ------------------------------------------------


@pytest.mark.parametrize("tail", [b"\x00", b"trailing junk", None])
def test_upload_with_bytes_after_its_frame_is_refused(
    serve: Callable[[], RunningServer], tail: bytes | None
) -> None:
    server = serve()
    oid, data = encode_object(ObjectType.BLOB, b"an answer that was paid for")
    # None: a second, complete frame (the same object again) after the first.
    extra = data if tail is None else tail
    answer = server.post(
        "/v1/objects/put", data=encode_record(oid, data + extra), headers=dict(OCTETS)
    )
    assert answer.status_code == 400, answer.text
    assert (answer.json()["error"], answer.json()["id"]) == ("bad_object", oid)
    assert list(server.repo.objects.iter_ids()) == []
    # The client refuses to send it too, and a local reader refuses such a stored object.
    objects, _ = open_http_remote(server.url, None)
    with pytest.raises(CorruptObject):
        objects.put_raw(oid, data + extra)
    with pytest.raises(CorruptObject, match=oid):
        decode_object(oid, data + extra)


def test_a_stored_object_with_bytes_after_its_frame_is_corrupt(repo: Repository) -> None:
    oid = repo.objects.put(ObjectType.BLOB, b"stored, then appended to")
    path = repo.objects.loose_path(oid)
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(CorruptObject, match=oid):
        repo.objects.get(oid)
    assert any(oid in p for p in fsck(repo).problems)


# --- a compressed upload cut short (found in review after issue 12) --------------------------


def _compressed_upload(kind: str) -> tuple[list[ObjectId], bytes, dict[str, bytes]]:
    """40 objects of 20 KB that do not compress, as one upload of ``kind``, and that body cut
    short: where a block ends (so the records in it are whole) but without the frame's end,
    and at a few places inside it."""
    rng = random.Random(12)
    forms = [frame_object(ObjectType.BLOB, rng.randbytes(20_000)) for _ in range(40)]
    if kind == wire.ZSTD_RECORDS_TYPE:
        parts = [wire.encode_record(oid, framed) for oid, framed in forms]
        whole = b"".join(wire.zstd_records((o, compress_framed(f)) for o, f in forms))
    else:
        parts = [wire.OBJECT_HEAD.pack(len(framed)) + framed for _, framed in forms]
        whole = b"".join(wire.zstd_objects(f for _, f in forms))
    stream = zstandard.ZstdCompressor(level=3).compressobj()
    at_a_block = b"".join(stream.compress(part) for part in parts[:20])
    at_a_block += stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    bodies = {"without its end": at_a_block, "last bytes missing": whole[:-3]}
    bodies.update({f"cut at {k}/8": whole[: len(whole) * k // 8] for k in range(1, 8)})
    return [oid for oid, _ in forms], whole, bodies


@pytest.mark.parametrize("kind", [wire.ZSTD_RECORDS_TYPE, wire.ZSTD_OBJECTS_TYPE])
def test_a_compressed_upload_cut_short_is_refused(
    serve: Callable[[], RunningServer], kind: str
) -> None:
    """zstd's stream reader takes a stream that ends inside its frame for a shorter one:
    such a body was stored as a smaller batch. The end of the body must be a frame's end."""
    server = serve()
    ids, whole, bodies = _compressed_upload(kind)
    for what, body in bodies.items():
        answer = server.post("/v1/objects/put", data=body, headers={"Content-Type": kind})
        assert answer.status_code == 400, (what, answer.text[:200])
        assert answer.json()["error"] == "bad_object", what
        assert answer.json()["id"] in (None, *ids), what  # the record cut, if one is
        assert "\n" not in answer.json()["message"]
        assert server.repo.objects.missing(ids) == ids, what
    assert list(server.repo.objects.iter_ids()) == [] and fsck(server.repo).ok
    answer = server.post("/v1/objects/put", data=whole, headers={"Content-Type": kind})
    assert answer.status_code == 200 and answer.json()["stored"] == len(ids), answer.text
    assert server.repo.objects.missing(ids) == []


@fuzz_settings(examples=40)
@given(
    sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=4),
    checksum=st.booleans(),
    cut=st.floats(0, 1, exclude_max=True),
    chunk=st.sampled_from([13, 4096, 1 << 20]),
)
def test_any_compressed_batch_cut_short_is_refused(
    sizes: list[int], checksum: bool, cut: float, chunk: int
) -> None:
    """Whatever the records and wherever the cut, a batch that is not whole is refused (a
    RecordStreamError) and the whole one reads back; frames with and without a checksum."""
    from osmo_store.errors import RecordStreamError

    rng = random.Random(sum(sizes))
    forms = [frame_object(ObjectType.BLOB, rng.randbytes(n // 2) + bytes(n // 2)) for n in sizes]
    stream = zstandard.ZstdCompressor(write_checksum=checksum).compressobj()
    body = b"".join(stream.compress(wire.OBJECT_HEAD.pack(len(f)) + f) for _, f in forms)
    body += stream.flush()

    def reads(data: bytes) -> Callable[[int], bytes]:
        source = io.BytesIO(data)
        return lambda n: source.read(min(n, chunk))

    assert list(wire.iter_zstd_objects(reads(body))) == [f for _, f in forms]
    with pytest.raises(RecordStreamError):
        list(wire.iter_zstd_objects(reads(body[: int(len(body) * cut)])))


def test_a_client_whose_upload_is_cut_says_so(
    serve: Callable[[], RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push whose compressed body loses its end (here: the first half of its records,
    whole, then nothing) fails with one line naming the server, which keeps nothing."""
    from osmo_store.errors import RemoteError
    from osmo_store.http import client

    def first_half(items: list[tuple[ObjectId, bytes]]) -> list[bytes]:
        stream = zstandard.ZstdCompressor().compressobj()
        records = [wire.encode_record(o, decompress_framed(d, o)) for o, d in items]
        body = [stream.compress(record) for record in records[: len(records) // 2]]
        return [*body, stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)]

    server = serve()
    rng = random.Random(5)
    objects = [encode_object(ObjectType.BLOB, rng.randbytes(20_000)) for _ in range(40)]
    monkeypatch.setattr(client, "zstd_records", first_half)
    older = client.HttpObjectStore(
        client.HttpConnection(server.url, None), body_types=[wire.ZSTD_RECORDS_TYPE]
    )
    with pytest.raises(RemoteError) as caught:
        older.put_many_raw(objects)
    assert server.url in str(caught.value) and "\n" not in str(caught.value)
    assert list(server.repo.objects.iter_ids()) == []
    older.close()


def test_a_server_that_stores_fewer_than_sent_is_caught(
    serve: Callable[[], RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server from before the check above answers a cut batch with a smaller
    ``stored``: the client compares it with what it sent."""
    from osmo_store.errors import RemoteError
    from osmo_store.http import app, client

    server = serve()
    objects = [encode_object(ObjectType.BLOB, b"object %d" % i) for i in range(10)]
    real = app.iter_zstd_records
    monkeypatch.setattr(app, "iter_zstd_records", lambda read, budget: list(real(read, budget))[:7])
    older = client.HttpObjectStore(
        client.HttpConnection(server.url, None), body_types=[wire.ZSTD_RECORDS_TYPE]
    )
    with pytest.raises(RemoteError, match="stored 7 of the 10 objects sent"):
        older.put_many_raw(objects)
    older.close()


# --- a hostile server's answer that decompresses to gigabytes (found in review) -------------


class HostileServer:
    """A real osmo server on 127.0.0.1 whose ``get`` answers are ``answer``: a content type
    and the body's pieces, whatever was asked."""

    def __init__(self, path: Path, answer: tuple[str, Callable[[], Iterator[bytes]]]) -> None:
        self.repo = Repository.open(path)
        real = make_app(self.repo, token=None)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ["PATH_INFO"] != wire.API_PREFIX + wire.OBJECTS_GET:
                return real(environ, start_response)
            environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", answer[0])])
            return answer[1]()

        self.server = HttpServer(app, "127.0.0.1", 0, threads=2)
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.stop()
        self.thread.join(10)
        self.repo.close()


_BOMB_MIB = 64


def _bomb(head: bytes) -> Callable[[], Iterator[bytes]]:
    """A header declaring an object of 4 GiB, then 64 MiB of zeros: a few KB on the wire."""

    def pieces() -> Iterator[bytes]:
        stream = zstandard.ZstdCompressor(level=3).compressobj()
        yield stream.compress(head)
        for _ in range(_BOMB_MIB):
            yield stream.compress(bytes(2**20))
        yield stream.flush()

    return pieces


def _forged_frame(declared: int) -> bytes:
    """A zstd frame whose header declares ``declared`` bytes of content (4-byte field) and
    that holds 16 (one raw block)."""
    descriptor, window = bytes([0x80]), bytes([0x00])
    block = (16 << 3 | 1).to_bytes(3, "little")  # last block, raw, 16 bytes
    return (
        b"\x28\xb5\x2f\xfd"
        + descriptor
        + window
        + declared.to_bytes(4, "little")
        + block
        + bytes(16)
    )


@pytest.mark.parametrize("how", ["id-less", "compressed records", "records"])
def test_a_server_cannot_make_the_client_decompress_gigabytes(tmp_path: Path, how: str) -> None:
    """The client decompresses no more than the bound the server puts on an upload (1 GiB
    per object and per answer) before it checks what it got: a few KB from a hostile server
    that declare an object of 4 GiB are refused at the declaration, in one line naming it."""
    import tracemalloc

    from osmo_store.errors import RemoteError

    oid, _ = encode_object(ObjectType.BLOB, b"asked for")
    if how == "id-less":
        answer = (wire.ZSTD_OBJECTS_TYPE, _bomb(wire.OBJECT_HEAD.pack(2**32 - 1)))
    elif how == "compressed records":
        head = wire.RECORD_HEAD.pack(bytes.fromhex(oid), 2**32 - 1)
        answer = (wire.ZSTD_RECORDS_TYPE, _bomb(head))
    else:
        answer = (wire.RECORDS_TYPE, lambda: iter([encode_record(oid, _forged_frame(3 * 2**30))]))
    server = HostileServer(tmp_path / "hostile", answer)
    objects, _ = open_http_remote(server.url, None)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteError) as caught:
            list(objects.get_many_framed([oid]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        objects.close()
        server.close()
    message = str(caught.value)
    assert server.url in message and "\n" not in message
    assert "more than" in message, message
    assert peak < _BOMB_MIB * 2**20 // 4, peak


def test_a_server_cannot_make_the_client_inflate_an_answer(tmp_path: Path) -> None:
    """HTTP's own compression, which the client never asks for (its bodies are zstd
    already): an answer in ``Content-Encoding: gzip`` (here 64 MiB of JSON whitespace in
    64 KB) is refused before a byte of it is inflated."""
    import gzip
    import tracemalloc

    from osmo_store.errors import RemoteError

    info = b" " * (_BOMB_MIB * 2**20) + json.dumps({"server": "osmo", "store_format": 1}).encode()
    body = gzip.compress(info, compresslevel=9)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        headers = [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]
        start_response("200 OK", [*headers, ("Content-Length", str(len(body)))])
        return [body]

    server = HttpServer(app, "127.0.0.1", 0, threads=1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    tracemalloc.start()
    try:
        with pytest.raises(RemoteError) as caught:
            open_http_remote(server.url, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        server.stop()
        thread.join(10)
    assert server.url in str(caught.value) and "gzip" in str(caught.value)
    assert peak < _BOMB_MIB * 2**20 // 4, peak


def test_a_big_answer_is_fetched_in_parts(
    serve: Callable[[], RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound is on one answer, not on what a client may fetch: objects past it are asked
    for again, in another request."""
    server = serve()
    rng = random.Random(3)
    ids = [server.repo.objects.put(ObjectType.BLOB, rng.randbytes(30_000)) for _ in range(40)]
    monkeypatch.setattr(wire, "MAX_FRAMED_DOWNLOAD", 200_000)
    objects, _ = open_http_remote(server.url, None)
    got = [oid for oid, framed in objects.get_many_framed(ids)]
    objects.close()
    assert got == ids
    assert server.count(wire.API_PREFIX + wire.OBJECTS_GET) >= 40 * 30_000 // 200_000


# --- fuzzing every endpoint -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for every example (a server per example would be most of the run)."""
    server = RunningServer(tmp_path_factory.mktemp("fuzz") / "store", max_body=1 << 20)
    ids = [server.repo.objects.put(ObjectType.BLOB, b"seed %d" % i) for i in range(3)]
    server.repo.update_ref("refs/evals/seed", ids[0])
    yield server
    assert fsck(server.repo).ok  # whatever was sent, the store is sound
    server.close()


_ROUTES = [wire.API_PREFIX + p for p in (wire.INFO, wire.REFS, wire.REFLOG, wire.REFLOGS,
           wire.OBJECTS, wire.OBJECTS_MISSING, wire.OBJECTS_GET, wire.OBJECTS_PUT,
           wire.REFS_UPDATE)]  # fmt: skip
_text = st.text(st.characters(codec="utf-8"), max_size=20) | st.text(max_size=20).map(
    lambda t: t.encode("utf-8", "surrogatepass").decode("latin-1")
)
_oids = st.binary(min_size=32, max_size=32).map(lambda b: ObjectId(b.hex()))
_ref_names = st.sampled_from(["refs/evals/seed", "refs/x", "refs/a/b"]) | _text.map(
    lambda t: "refs/" + t
)
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _text | _oids
_json_values = st.recursive(
    _json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner)
)
_json_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "ids": st.lists(_oids | _json_scalars, max_size=4) | _json_values,
            "name": _ref_names | _json_values,
            "new": _oids | st.none() | _json_values,
            "expected": st.sampled_from(["*", None]) | _oids | _json_values,
            "who": _text | _json_values,
            "message": _text | _json_values,
            "log": st.booleans() | _json_values,
        },
    )
    | _json_values
)


@st.composite
def _records(draw: st.DrawFn) -> bytes:
    """An upload: records of real objects, damaged ones, or raw bytes."""
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        oid, data = encode_object(ObjectType.BLOB, draw(st.binary(max_size=64)))
        how = draw(st.sampled_from(["sound", "other id", "cut", "tail", "flip", "length"]))
        if how == "other id":
            oid = draw(_oids)
        elif how == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif how == "tail":
            data += draw(st.binary(min_size=1, max_size=8))
        elif how == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
        record = encode_record(oid, data)
        if how == "length":
            record = record[:32] + draw(st.binary(min_size=4, max_size=4)) + record[36:]
        parts.append(record)
    return b"".join(parts) + draw(st.binary(max_size=8) | st.just(b""))


_bodies = (
    _json_bodies.map(lambda v: json.dumps(v).encode())
    | _records()
    | st.binary(max_size=64)
    | st.just(b"")
)
# Header values http.client sends as given: latin-1, no line breaks.
_header = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30
)
_content_types = _header | st.sampled_from(
    ["application/json", "application/octet-stream", "text/plain", "", "application/json; x"]
)


def _quote(text: str) -> str:
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"))


def _query(draw: st.DrawFn) -> str:
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(["name", "prefix", "x"]) | _text, _ref_names | _text),
            max_size=3,
        )
    )
    raw = draw(st.binary(max_size=6))  # bytes that may be no UTF-8 at all
    parts = [f"{_quote(k)}={_quote(v)}" for k, v in pairs]
    if raw:
        parts.append("name=" + urllib.parse.quote(raw))
    return "&".join(parts)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    method = draw(st.sampled_from(["GET", "POST", "POST", "PUT", "DELETE", "HEAD"]))
    path = draw(st.sampled_from(_ROUTES) | _text.map(lambda t: "/v1/" + t))
    target = urllib.parse.quote(path.encode("utf-8", "surrogatepass"), safe="/")
    query = _query(draw)
    if query:
        target += "?" + query
    headers = {}
    content_type = draw(_content_types)
    if content_type:
        headers["Content-Type"] = content_type
    if draw(st.booleans()):
        headers["Authorization"] = draw(
            st.sampled_from(["Bearer x", "Basic a", "Bearer"]) | _header
        )
    if draw(st.integers(0, 4)) == 0:
        # Never more than the body holds: the server would wait for the rest.
        headers["Content_Length"] = draw(st.sampled_from(["-1", "abc", "1e3", "0x1", " 0", "0"]))
    if draw(st.integers(0, 4)) == 0:
        headers[draw(st.sampled_from(["Transfer-Encoding", "Expect", "X-Any", "Host"]))] = draw(
            _header
        )
    return method, target, headers, draw(_bodies) if method != "GET" else b""


@fuzz_settings(examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=_requests())
@example(request=("POST", "/v1/refs/update", {"Content-Type": "application/json"},
                  b'{"name": "refs/\\ud800", "new": null, "expected": "*"}'))  # fmt: skip
@example(request=("POST", "/v1/objects/put", {"Content-Type": "application/octet-stream"},
                  encode_record(*encode_object(ObjectType.BLOB, b"x")) + b"\x00"))  # fmt: skip
def test_fuzz_every_endpoint(
    fuzz_server: RunningServer, request: tuple[str, str, dict[str, str], bytes]
) -> None:
    method, target, headers, body = request
    status, answer = _raw(fuzz_server, method, target, body, **headers)
    if status == 501 and "Transfer-Encoding" in headers:
        # waitress's answer to a transfer coding it does not know, as RFC 9112 (6.1) asks,
        # before the app sees the request: nothing failed.
        return
    assert status < 500, (status, answer[:300])
    if method != "HEAD" and status != 200 and answer.startswith(b"{"):
        assert "error" in json.loads(answer)  # the app's JSON error
    # (A request waitress refuses before the app sees it, such as a bad Content-Length, gets
    # waitress's own plain-text 400: a 4xx all the same.)


def test_the_fuzzer_can_fail(fuzz_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above sees a 500 when a handler crashes (a fuzzer that cannot fail proves
    nothing)."""
    monkeypatch.setattr(fuzz_server.repo.refs, "reflog_names", lambda: 1 / 0)
    status, _ = _raw(fuzz_server, "GET", "/v1/reflogs")
    assert status == 500
