"""Hostile requests to a real `osmo serve` app (waitress on 127.0.0.1, issue 12): bad input
is a 4xx, never a 500, and nothing of it is stored. Then a Hypothesis fuzzer over every
endpoint (paths, query strings, headers, bodies) holding the server to that."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from osmo_store import ObjectType, Repository
from osmo_store.errors import CorruptObject
from osmo_store.hashing import ObjectId
from osmo_store.http import protocol as wire
from osmo_store.http.client import open_http_remote
from osmo_store.http.protocol import encode_record
from osmo_store.maintenance.fsck import fsck
from osmo_store.objects import decode_object, encode_object

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
