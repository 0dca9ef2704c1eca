"""Sync moves no more bytes than the stored packs (issue 15): push and pull through a real
server on 127.0.0.1 that counts the bytes on the wire, and the negotiation that keeps an
older server or client working."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from osmo_store import ObjectType, Repository, RunRecord, TreeEntry, write_tree
from osmo_store.errors import ObjectNotFound
from osmo_store.hashing import ObjectId, blake3_hex
from osmo_store.http import protocol as wire
from osmo_store.http.app import make_app
from osmo_store.http.client import HttpConnection, HttpObjectStore
from osmo_store.http.serve import HttpServer
from osmo_store.maintenance.fsck import fsck
from osmo_store.sync.remotes import open_remote
from osmo_store.sync.transfer import pull, push

REF = "refs/evals/" + "cd" * 32


class CountingServer:
    """``make_app`` under waitress in a thread, counting request and answer body bytes.
    ``old``: behaves as a server from before compressed batches (ignores ``Accept``, does
    not list upload types, refuses their content type)."""

    def __init__(self, path: Path, *, old: bool = False) -> None:
        self.repo = Repository.open(path)
        self.sent = self.received = 0
        self.lock = threading.Lock()
        app = make_app(self.repo, token=None)

        def counting(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
            if old:
                environ.pop("HTTP_ACCEPT", None)
                if environ.get("CONTENT_TYPE") not in (wire.JSON_TYPE, wire.RECORDS_TYPE):
                    environ["CONTENT_TYPE"] = "application/x-unknown"
            body = environ["wsgi.input"]
            read = body.read

            def counted_read(*args: Any) -> bytes:
                data = read(*args)
                with self.lock:
                    self.received += len(data)
                return data

            body.read = counted_read  # type: ignore[method-assign]
            if old and environ["PATH_INFO"] == "/v1/info":
                yield old_info(environ, start_response)
                return
            for chunk in app(environ, start_response):
                with self.lock:
                    self.sent += len(chunk)
                yield chunk

        def old_info(environ: dict[str, Any], start_response: Any) -> bytes:
            answer: list[Any] = []
            info = json.loads(b"".join(app(environ, lambda *a: answer.extend(a[:2]))))
            del info[wire.BODY_TYPES]
            body = json.dumps(info).encode()
            status, headers = answer
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            start_response(status, [*headers, ("Content-Length", str(len(body)))])
            return body

        self.server = HttpServer(counting, "127.0.0.1", 0, threads=2, max_body=app.max_body)
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.stop()
        self.thread.join(10)
        self.repo.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[CountingServer] = []

    def start(name: str, **kw: Any) -> CountingServer:
        servers.append(CountingServer(tmp_path / name, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def eval_like_store(path: Path, n: int) -> int:
    """A store of ``n`` sample-like records under one ref, packed as an eval leaves it;
    returns its pack bytes."""
    with Repository.open(path) as repo:
        with repo.objects.bulk() as w:
            blobs = []
            for i in range(n):
                record = {
                    "messages": [
                        {"role": "user", "content": f"What is {i} + {i * 7 % 13}?"},
                        {"role": "assistant", "content": str(i + i * 7 % 13)},
                    ],
                    "rollout_id": blake3_hex(b"rollout %d" % i),
                    "scores": {"exact_match": float(i % 3 == 0)},
                    "status": "ok",
                    "usage": {"prompt_tokens": 20 + i % 5, "completion_tokens": 1 + i % 3},
                }
                blobs.append(w.put(ObjectType.BLOB, json.dumps(record, sort_keys=True).encode()))
            entries = [TreeEntry(f"row{i}.0", ObjectType.BLOB, b) for i, b in enumerate(blobs)]
            tree = write_tree(w, entries)
            run = w.put(ObjectType.RUN, RunRecord(tree, (), {"status": "completed"}).to_content())
        repo.update_ref(REF, run)
        return pack_bytes(path)


def pack_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "objects" / "pack").glob("*.pack"))


def test_push_and_pull_move_no_more_than_the_stored_packs(tmp_path, serve) -> None:
    stored = eval_like_store(tmp_path / "origin", 3000)
    server = serve("remote")
    with Repository.open(tmp_path / "origin") as repo:
        report = push(repo, open_remote(repo, server.url))
    assert report.transfer.objects > 3000
    pushed = server.received + server.sent  # the ids asked about count too
    assert pushed <= stored, f"push sent {pushed} bytes for {stored} bytes of packs"
    before = server.received + server.sent
    with Repository.open(tmp_path / "clone") as repo:
        pull(repo, open_remote(repo, server.url))
        assert repo.refs.read(REF) is not None
        assert not fsck(repo).problems
    pulled = server.received + server.sent - before
    assert pulled <= stored, f"pull took {pulled} bytes for {stored} bytes of packs"


def test_an_old_server_gets_plain_records_both_ways(tmp_path, serve) -> None:
    eval_like_store(tmp_path / "origin", 300)
    server = serve("remote", old=True)
    with Repository.open(tmp_path / "origin") as repo:
        push(repo, open_remote(repo, server.url))
    with Repository.open(tmp_path / "clone") as repo:
        pull(repo, open_remote(repo, server.url))
        assert repo.refs.read(REF) is not None and not fsck(repo).problems


def test_an_old_client_gets_plain_records(tmp_path, serve) -> None:
    """A client that neither asks for nor sends the compressed form: what it sends is
    stored, and what it is sent is plain records."""
    eval_like_store(tmp_path / "origin", 50)
    server = serve("remote")
    old = HttpObjectStore(HttpConnection(server.url, None))  # JSON and plain records only
    with Repository.open(tmp_path / "origin") as repo:
        ids = list(repo.objects.iter_ids())
        old.put_many_raw(repo.objects.get_many_raw(ids))
    assert not server.repo.objects.missing(ids)
    response = old.connection.request("POST", wire.OBJECTS_GET, json={"ids": ids[:3]})
    assert response.headers[wire.CONTENT_TYPE] == wire.RECORDS_TYPE
    got = list(wire.iter_records(io.BytesIO(response.content).read))
    assert [oid for oid, _ in got] == ids[:3]
    old.close()


def test_a_bad_compressed_upload_is_refused_clearly(tmp_path, serve, monkeypatch) -> None:
    import requests
    import zstandard

    from osmo_store.http import app
    from osmo_store.objects import ObjectType, encode_object

    monkeypatch.setattr(app, "MAX_FRAMED_UPLOAD", 2**20)  # the server's bound, made small
    server = serve("remote")
    url = server.url + wire.API_PREFIX + wire.OBJECTS_PUT
    headers = {wire.CONTENT_TYPE: wire.ZSTD_RECORDS_TYPE}
    oid, stored = encode_object(ObjectType.BLOB, b"real content")
    framed = zstandard.ZstdDecompressor().decompress(stored)
    bodies = {
        "not zstd": b"garbage, not a zstd stream at all",
        "wrong content": b"".join(wire.zstd_records([(oid, stored)]))[:-4] + b"\0\0\0\0",
        "cut short": zstandard.ZstdCompressor().compress(wire.encode_record(oid, framed)[:-3]),
        "lies about its id": zstandard.ZstdCompressor().compress(
            wire.encode_record(ObjectId("ab" * 32), framed)
        ),
    }
    for what, body in bodies.items():
        answer = requests.post(url, data=body, headers=headers, timeout=30)
        assert answer.status_code == 400, (what, answer.text)
        assert answer.json()["error"] == "bad_object", what
    # A few KB that decompress past the limit: refused as too large, not held in memory.
    bomb = zstandard.ZstdCompressor(level=19).compress(wire.encode_record(oid, b"\0" * (2 * 2**20)))
    answer = requests.post(url, data=bomb, headers=headers, timeout=120)
    assert answer.status_code == 413, answer.text
    assert server.repo.objects.missing([oid]) == [oid]


def test_a_bad_id_less_upload_is_refused_and_nothing_stored(tmp_path, serve, monkeypatch) -> None:
    """An upload of id-less objects names each by its hash; a body that is not such a
    stream, is cut short, or holds something that is not an object is refused whole."""
    import requests
    import zstandard

    from osmo_store.http import app
    from osmo_store.objects import ObjectType, frame_object

    monkeypatch.setattr(app, "MAX_FRAMED_UPLOAD", 2**20)
    server = serve("remote")
    url = server.url + wire.API_PREFIX + wire.OBJECTS_PUT
    headers = {wire.CONTENT_TYPE: wire.ZSTD_OBJECTS_TYPE}
    oid, framed = frame_object(ObjectType.BLOB, b"real content")
    good = wire.OBJECT_HEAD.pack(len(framed)) + framed
    z = zstandard.ZstdCompressor().compress
    bodies = {
        "not zstd": b"garbage, not a zstd stream at all",
        "cut short": z(good + good[:-3]),
        "not an object": z(good + wire.OBJECT_HEAD.pack(9) + b"blob 5\0ab"),
        "length cut": z(good + b"\0\0"),
    }
    for what, body in bodies.items():
        answer = requests.post(url, data=body, headers=headers, timeout=30)
        assert answer.status_code == 400, (what, answer.text)
        assert answer.json()["error"] == "bad_object", what
    bomb = zstandard.ZstdCompressor(level=19).compress(
        good + wire.OBJECT_HEAD.pack(2 * 2**20) + b"\0" * (2 * 2**20)
    )
    answer = requests.post(url, data=bomb, headers=headers, timeout=120)
    assert answer.status_code == 413, answer.text
    assert server.repo.objects.missing([oid]) == [oid]
    answer = requests.post(url, data=z(good), headers=headers, timeout=30)
    assert answer.json()["digest"] == wire.ids_digest([oid])
    assert not server.repo.objects.missing([oid])


def test_a_server_sending_other_content_is_caught(tmp_path, serve, monkeypatch) -> None:
    """Downloads carry no ids: each object must hash to the id asked for in its place."""
    from osmo_store.errors import RemoteError
    from osmo_store.http import app

    eval_like_store(tmp_path / "remote", 20)
    server = serve("remote")
    real = wire.zstd_objects
    monkeypatch.setattr(app.wire, "zstd_objects", lambda forms: real(reversed(list(forms))))
    with Repository.open(tmp_path / "clone") as repo:
        with pytest.raises(RemoteError, match="wrong content"):
            pull(repo, open_remote(repo, server.url))
        assert not list(repo.objects.iter_ids())


def test_a_client_from_before_id_less_batches_still_syncs(tmp_path, serve) -> None:
    """A client that sends and asks for compressed records (with ids) only."""
    eval_like_store(tmp_path / "origin", 50)
    server = serve("remote")
    types = [wire.ZSTD_RECORDS_TYPE, wire.ID_BYTES_TYPE]
    older = HttpObjectStore(HttpConnection(server.url, None), body_types=types)
    assert not older.object_uploads
    with Repository.open(tmp_path / "origin") as repo:
        ids = list(repo.objects.iter_ids())
        older.put_many_raw(repo.objects.get_many_raw(ids))
    assert not server.repo.objects.missing(ids)
    accept = f"{wire.ZSTD_RECORDS_TYPE}, {wire.RECORDS_TYPE}"
    response = older.connection.request(
        "POST", wire.OBJECTS_GET, json={"ids": ids[:3]}, accept=accept
    )
    assert response.headers[wire.CONTENT_TYPE] == wire.ZSTD_RECORDS_TYPE
    got = list(wire.iter_zstd_records(io.BytesIO(response.content).read))
    assert [oid for oid, _ in got] == ids[:3]
    older.close()


def test_a_prefix_some_object_has_is_asked_again_in_full(tmp_path, serve, monkeypatch) -> None:
    """With 1-byte prefixes nearly every id's prefix is taken on the remote: the full-id
    question must then tell apart what it has from what it lacks, sending exactly that."""
    monkeypatch.setattr(wire, "ID_PREFIX_LEN", 1)
    eval_like_store(tmp_path / "origin", 600)
    server = serve("remote")
    with Repository.open(tmp_path / "origin") as repo:
        ids = list(repo.objects.iter_ids())
        blobs = [oid for oid in ids if repo.objects.get(oid)[0] is ObjectType.BLOB]
        half = blobs[::2]  # leaves: the remote holds their (empty) closure
        server.repo.objects.put_many_raw(repo.objects.get_many_raw(half))
        report = push(repo, open_remote(repo, server.url))
    assert report.transfer.objects == len(ids) - len(half)
    assert not server.repo.objects.missing(ids)
    assert not fsck(server.repo).problems
    # A get by 1-byte prefixes: most name several objects there, so it is asked in full.
    with Repository.open(tmp_path / "clone") as repo:
        pull(repo, open_remote(repo, server.url))
        assert not repo.objects.missing(ids) and not fsck(repo).problems
    remote = HttpObjectStore(HttpConnection(server.url, None), body_types=[
        wire.ZSTD_OBJECTS_TYPE, wire.ID_BYTES_TYPE, wire.ID_PREFIXES_TYPE])  # fmt: skip
    absent = ObjectId("ab" * 32)
    with pytest.raises(ObjectNotFound) as caught:
        list(remote.get_many_framed([ids[0], absent]))
    assert caught.value.oid == absent
    remote.close()


def test_absent_prefixes_of_loose_and_packed_objects(repo: Repository) -> None:
    from osmo_store.hashing import oid_to_raw

    loose = repo.objects.put(ObjectType.BLOB, b"loose one")
    with repo.objects.bulk() as w:
        packed = w.put(ObjectType.BLOB, b"packed one")
    raws = [oid_to_raw(loose)[:8], oid_to_raw(packed)[:8], oid_to_raw(packed)[:3]]
    other = bytes([raws[1][0]]) + bytes(b ^ 0xFF for b in raws[1][1:])
    assert repo.objects.absent_prefixes([*raws, other]) == [False, False, False, True]
    assert repo.objects.resolve_raw_prefixes([raws[0], raws[1], other]) == [loose, packed, None]
    by_first: dict[int, ObjectId] = {}
    i = 0
    while True:  # two objects whose ids share a first byte: that byte names neither
        oid = repo.objects.put(ObjectType.BLOB, b"blob %d" % i)
        if oid_to_raw(oid)[0] in by_first:
            break
        by_first[oid_to_raw(oid)[0]] = oid
        i += 1
    assert repo.objects.resolve_raw_prefixes([oid_to_raw(oid)[:1]]) == [None]


def test_a_damaged_object_pushed_is_not_stored_under_its_id(tmp_path, serve) -> None:
    """An object of ours that does not hash to its id: the server names it by its hash,
    the digest of what it stored differs from what we meant, and the push fails."""
    from osmo_store.errors import RemoteError
    from osmo_store.objects import frame_object

    server = serve("remote")
    with Repository.open(tmp_path / "origin") as repo:
        claimed, _ = frame_object(ObjectType.BLOB, b"what the tree names")
        _, other = frame_object(ObjectType.BLOB, b"something else")
        with repo.objects.bulk() as w:
            w._writer.add_framed(claimed, other)  # damage, as a bad disk would
            tree = write_tree(w, [TreeEntry("row0.0", ObjectType.BLOB, claimed)])
            run = w.put(ObjectType.RUN, RunRecord(tree, (), {}).to_content())
        repo.update_ref(REF, run)
        with pytest.raises(RemoteError, match="did not store what was sent"):
            push(repo, open_remote(repo, server.url))
    assert server.repo.objects.missing([claimed]) == [claimed]
    assert server.repo.refs.read(REF) is None


def test_a_directory_remote_gets_no_more_pack_bytes_than_ours(tmp_path) -> None:
    """Pushed to a directory, the objects land in as few packs as they came in batches:
    each small pack would pay a dictionary of its own."""
    stored = eval_like_store(tmp_path / "origin", 5000)
    with Repository.open(tmp_path / "origin") as repo:
        push(repo, open_remote(repo, str(tmp_path / "dir"), create=True))
    received = pack_bytes(tmp_path / "dir")
    assert received <= stored, f"the directory got {received} bytes for {stored} of packs"
