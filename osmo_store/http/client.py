"""The HTTP backend: an ObjectStore and a RefStore that talk to ``osmo serve``.

Wire protocol: docs/protocol.md; its routes, limits, record framing and error codes come
from ``protocol.py``. Objects travel as records; everything else is JSON. The server
verifies every upload; every download is verified on this side (by ``get``, or by the
caller of ``get_many_raw``), so a broken or hostile server can refuse work but never hand
us wrong bytes under a right id. The connection they share (its session, the token, the
server's errors) is ``connection.py``'s.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
import zstandard
from urllib3.exceptions import HTTPError as Urllib3Error

from ..backends.base import ObjectStore, StagedWriter
from ..errors import RecordStreamError, RecordTooLarge, RemoteError, StoreError
from ..hashing import ObjectId, blake3_hex, is_oid, parse_oid
from ..objects import (
    MAX_REMOTE_OBJECT,
    ObjectType,
    compress_framed,
    decompress_framed,
    stored_content_size,
)
from ..refs import ANY, ReflogEntry, RefStore, validate_ref_name
from . import protocol as wire
from .connection import HttpConnection, network_reason
from .protocol import (
    DEFAULT_MAX_BODY,
    encode_record,
    iter_records,
    iter_zstd_objects,
    iter_zstd_records,
    zstd_records,
)

# How the client splits batches: its own choice, within the protocol's MAX_BATCH_IDS.
MISSING_CHUNK = 10_000
GET_CHUNK = 10_000
PUT_CHUNK_OBJECTS = 20_000
PUT_CHUNK_BYTES = 32 * 2**20


def _server_oid(text: object, url: str) -> ObjectId:
    if not is_oid(text):
        raise RemoteError(f"the osmo server at {url} sent an invalid object id")
    return ObjectId(text)  # type: ignore[arg-type]


def _declared_size(stored: bytes) -> int:
    """What a stored form's frame says it decompresses to (0 if it is no zstd frame: its
    reader reports it as damaged)."""
    try:
        return stored_content_size(stored)
    except zstandard.ZstdError:
        return 0


def _chunks(items: Iterable[ObjectId], size: int) -> Iterator[list[ObjectId]]:
    chunk: list[ObjectId] = []
    for oid in items:
        chunk.append(parse_oid(oid))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- the object store ------------------------------------------------------------------


class HttpObjectStore(ObjectStore):
    """Objects of a remote store. ``read_only`` and ``max_body`` come from the server's
    ``/v1/info`` when opened through :func:`open_http_remote`."""

    supports_delete = False
    max_object_size = MAX_REMOTE_OBJECT

    def __init__(
        self,
        connection: HttpConnection,
        *,
        read_only: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        body_types: Collection[str] = (),
    ) -> None:
        self.connection = connection
        self.read_only = read_only
        self.max_body = max_body
        #: what the server takes beyond JSON and plain records (its ``/v1/info`` says):
        #: compressed uploads and raw id lists are sent only to a server that takes them
        self.zstd_uploads = wire.ZSTD_RECORDS_TYPE in body_types
        self.object_uploads = wire.ZSTD_OBJECTS_TYPE in body_types
        self.raw_ids = wire.ID_BYTES_TYPE in body_types
        self.id_prefixes = self.raw_ids and wire.ID_PREFIXES_TYPE in body_types

    def __repr__(self) -> str:
        return f"HttpObjectStore({self.connection.url!r})"

    # --- primitives ------------------------------------------------------------------

    def _get_raw(self, oid: ObjectId) -> bytes:
        records = self._fetch([oid])
        try:
            _, data, framed = next(records)
        finally:
            records.close()
        return compress_framed(data) if framed else data

    def _put_raw(self, oid: ObjectId, data: bytes) -> None:
        self._upload([(oid, data)])

    def _has(self, oid: ObjectId) -> bool:
        return not self._missing([oid])

    def iter_ids(self) -> Iterator[ObjectId]:
        url = self.connection.url
        response = self.connection.request("GET", wire.OBJECTS, stream=True)
        try:
            for line in wire.iter_lines(response.raw.read, wire.MAX_ID_LINE):
                if line:
                    yield _server_oid(line.decode("ascii", "replace").rstrip("\r"), url)
        except RecordTooLarge:
            raise RemoteError(
                f"the osmo server at {url} sent an object id line of more than "
                f"{wire.MAX_ID_LINE} bytes"
            ) from None
        except (requests.RequestException, Urllib3Error, OSError) as e:
            raise RemoteError(f"listing objects at {url} failed: {network_reason(e)}") from None
        finally:
            response.close()

    def _delete(self, oid: ObjectId) -> None:
        raise StoreError("deleting objects is not supported over HTTP")

    def close(self) -> None:
        self.connection.close()

    # --- batches -----------------------------------------------------------------------

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        out: list[ObjectId] = []
        for chunk in _chunks(oids, MISSING_CHUNK):
            out.extend(self._missing(chunk))
        return out

    def _missing(self, chunk: list[ObjectId]) -> list[ObjectId]:
        if self.id_prefixes:
            # Prefixes first: most ids a push asks about are new, and a prefix no object
            # has settles them in a quarter of the bytes. The rest are asked in full.
            flags = self._bitmap(self._prefixes(chunk), wire.ID_PREFIXES_TYPE, len(chunk))
            maybe = [oid for oid, absent in zip(chunk, flags, strict=True) if not absent]
            if maybe:
                full = self._bitmap(wire.encode_ids(maybe), wire.ID_BYTES_TYPE, len(maybe))
                present = {oid for oid, absent in zip(maybe, full, strict=True) if not absent}
                return [oid for oid in chunk if oid not in present]
            return chunk
        if self.raw_ids:
            flags = self._bitmap(wire.encode_ids(chunk), wire.ID_BYTES_TYPE, len(chunk))
            return [oid for oid, absent in zip(chunk, flags, strict=True) if absent]
        body = self.connection.post_json(wire.OBJECTS_MISSING, {"ids": chunk})
        answer = body.get("missing")
        if not isinstance(answer, list):
            raise RemoteError(f"the osmo server at {self.connection.url} sent no 'missing' list")
        absent = {oid for oid in answer if isinstance(oid, str)}
        # Only ids we asked about, in our order, whatever the server sends.
        return [oid for oid in chunk if oid in absent]

    @staticmethod
    def _prefixes(chunk: list[ObjectId]) -> bytes:
        return b"".join(bytes.fromhex(oid[: 2 * wire.ID_PREFIX_LEN]) for oid in chunk)

    def _bitmap(self, body: bytes, kind: str, n: int) -> list[bool]:
        """``missing``'s bitmap answer to ``n`` ids (or prefixes) sent as ``kind``."""
        response = self.connection.request(
            "POST", wire.OBJECTS_MISSING, data=body, content_type=kind
        )
        try:
            return wire.decode_bitmap(response.content, n)
        except ValueError as e:
            raise RemoteError(f"the osmo server at {self.connection.url}: {e}") from None

    def get_many_raw(self, oids: Iterable[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        for chunk in _chunks(oids, GET_CHUNK):
            for oid, data, framed in self._fetch(chunk):
                yield oid, compress_framed(data) if framed else data

    def get_many_framed(self, oids: Iterable[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        limit = self.max_object_size  # checked by ``_fetch`` already: a second guard
        for chunk in _chunks(oids, GET_CHUNK):
            for oid, data, framed in self._fetch(chunk):
                yield oid, data if framed else decompress_framed(data, oid, limit=limit)

    def _fetch(self, chunk: list[ObjectId]) -> Iterator[tuple[ObjectId, bytes, bool]]:
        """(id, bytes, whether framed) for each id asked, in order. One answer is read to
        at most ``MAX_FRAMED_DOWNLOAD`` bytes of objects, each refused at its declared size
        before it is decompressed: the objects past that bound are asked for again in
        another request, and one that alone passes it is refused."""
        while chunk:
            done = 0
            try:
                for item in self._fetch_answer(chunk):
                    yield item
                    done += 1
                return
            except RecordTooLarge:
                if not done:
                    raise RemoteError(
                        f"the osmo server at {self.connection.url} sent an object of more "
                        f"than {wire.MAX_FRAMED_DOWNLOAD} bytes (the most one answer holds)"
                    ) from None
                chunk = chunk[done:]

    def _fetch_answer(self, chunk: list[ObjectId]) -> Iterator[tuple[ObjectId, bytes, bool]]:
        """``_fetch`` of one request; RecordTooLarge once its objects pass the bound."""
        url = self.connection.url
        limit = wire.MAX_FRAMED_DOWNLOAD
        # A server answers in the first of these it knows (an older one: plain records).
        accept = f"{wire.ZSTD_OBJECTS_TYPE}, {wire.ZSTD_RECORDS_TYPE}, {wire.RECORDS_TYPE}"
        response = self._get_by_prefixes(chunk, accept) if self.id_prefixes else None
        if response is None and self.raw_ids:
            response = self.connection.request(
                "POST", wire.OBJECTS_GET, data=wire.encode_ids(chunk),
                content_type=wire.ID_BYTES_TYPE, accept=accept, stream=True,
            )  # fmt: skip
        elif response is None:
            response = self.connection.request(
                "POST", wire.OBJECTS_GET, json={"ids": chunk}, accept=accept, stream=True
            )
        try:
            kind = response.headers.get(wire.CONTENT_TYPE, "")
            if kind.startswith(wire.ZSTD_OBJECTS_TYPE):
                objects = iter_zstd_objects(response.raw.read, limit)
                yield from self._fetched_objects(chunk, objects)
                return
            framed = kind.startswith(wire.ZSTD_RECORDS_TYPE)
            read = response.raw.read
            records = iter_zstd_records(read, limit) if framed else iter_records(read, limit)
            declared = 0  # plain records: what their frames say they decompress to
            for want in chunk:
                got = next(records, None)
                if got is None:
                    raise RemoteError(f"the osmo server at {url} sent fewer objects than asked")
                if got[0] != want:
                    raise RemoteError(f"the osmo server at {url} sent {got[0]}, expected {want}")
                declared += 0 if framed else _declared_size(got[1])
                if declared > limit:
                    raise RecordTooLarge(f"objects declare more than {limit} bytes")
                yield want, got[1], framed
        except RecordStreamError as e:
            raise RemoteError(f"download from {url} was cut short: {e}") from None
        except (requests.RequestException, Urllib3Error, OSError) as e:
            raise RemoteError(f"download from {url} failed: {network_reason(e)}") from None
        finally:
            response.close()

    def _get_by_prefixes(self, chunk: list[ObjectId], accept: str) -> requests.Response | None:
        """``get`` by short prefixes (None: the server could not settle one: none, or
        several objects, have it). Safe because what comes back is checked against the
        full ids (``_fetched_objects``); asking again in full reports an absent object."""
        try:
            return self.connection.request(
                "POST", wire.OBJECTS_GET, data=self._prefixes(chunk),
                content_type=wire.ID_PREFIXES_TYPE, accept=accept, stream=True,
            )  # fmt: skip
        except RemoteError as e:
            if e.code != wire.NOT_FOUND.code:
                raise
            return None

    def _fetched_objects(
        self, chunk: list[ObjectId], objects: Iterator[bytes]
    ) -> Iterator[tuple[ObjectId, bytes, bool]]:
        """Id-less objects, in the order asked: each must hash to the id asked for in its
        place (the caller still verifies it parses)."""
        url = self.connection.url
        for want in chunk:
            framed = next(objects, None)
            if framed is None:
                raise RemoteError(f"the osmo server at {url} sent fewer objects than asked")
            if blake3_hex(framed) != want:
                raise RemoteError(f"the osmo server at {url} sent wrong content for {want}")
            yield want, framed, True
        if next(objects, None) is not None:
            raise RemoteError(f"the osmo server at {url} sent more objects than asked")

    def put_many_raw(
        self, items: Iterable[tuple[ObjectId, bytes]], *, verified: bool = False
    ) -> int:
        """Upload in requests of at most PUT_CHUNK_OBJECTS objects / PUT_CHUNK_BYTES bytes.
        The server verifies every object before storing any of a request (a bad one is a
        CorruptObject here, nothing stored), so checking them here too would only double
        the CPU of a push. Each request is all-or-nothing; the batch as a whole is not
        (objects of earlier requests stay, unreferenced, if a later one fails), which is
        harmless: nothing names them until a ref is moved."""
        self._check_writable()
        return self._upload(items)

    def put_many_framed(
        self, items: Iterable[tuple[ObjectId, bytes]], *, verified: bool = False
    ) -> int:
        """``put_many_raw`` of framed forms, sent as they are to a server that takes them."""
        self._check_writable()
        if self.object_uploads:
            return self._upload(items, framed=True)
        return self._upload((oid, compress_framed(framed)) for oid, framed in items)

    def put_many(self, objects: Iterable[tuple[ObjectType, bytes]]) -> list[ObjectId]:
        with self.bulk() as w:
            return [w.put(t, c) for t, c in objects]

    @contextmanager
    def bulk(self) -> Iterator[StagedWriter]:
        """Writes staged in memory and sent as one upload when the block exits cleanly."""
        self._check_writable()
        writer = _UploadingWriter(self)
        yield writer
        writer.finish()

    def _upload(self, items: Iterable[tuple[ObjectId, bytes]], framed: bool = False) -> int:
        """Stored forms (or with ``framed``, framed forms, for a server that takes them)
        in batches bounded by their size as given: compressed as one stream they are
        smaller still."""
        limit = min(PUT_CHUNK_BYTES, self.max_body)
        batch: list[tuple[ObjectId, bytes]] = []
        size = n = 0
        for oid, data in items:
            oid = parse_oid(oid)
            record_size = wire.RECORD_HEAD.size + len(data)
            if record_size > self.max_body:
                raise RemoteError(
                    f"object {oid} is {len(data)} bytes stored; the osmo server at "
                    f"{self.connection.url} accepts at most {self.max_body} bytes per upload"
                )
            if batch and (len(batch) >= PUT_CHUNK_OBJECTS or size + record_size > limit):
                self._send(batch, framed)
                batch, size = [], 0
            batch.append((oid, data))
            size += record_size
            n += 1
        if batch:
            self._send(batch, framed)
        return n

    def _send(self, batch: list[tuple[ObjectId, bytes]], framed: bool = False) -> None:
        if not framed and self.object_uploads:
            batch = [(oid, decompress_framed(data, oid)) for oid, data in batch]
            framed = True
        if framed:
            body = b"".join(wire.zstd_objects(f for _, f in batch))
            response = self.connection.request(
                "POST", wire.OBJECTS_PUT, data=body, content_type=wire.ZSTD_OBJECTS_TYPE
            )
            answer = self.connection.read_json(response)
            if answer.get("digest") != wire.ids_digest(oid for oid, _ in batch):
                # The server names each object by its hash: an object of ours that does
                # not hash to its id (damaged here) was stored under another id, unused.
                raise RemoteError(
                    f"the osmo server at {self.connection.url} did not store what was sent",
                    hint="an object sent may be damaged here: run osmo fsck",
                )
            return
        if self.zstd_uploads:
            body, kind = b"".join(zstd_records(batch)), wire.ZSTD_RECORDS_TYPE
        else:
            body = b"".join(encode_record(oid, data) for oid, data in batch)
            kind = wire.RECORDS_TYPE
        response = self.connection.request("POST", wire.OBJECTS_PUT, data=body, content_type=kind)
        stored = self.connection.read_json(response).get("stored")
        if stored != len(batch):
            # A server from before it checked that a compressed body ends with its frame's
            # end takes a body cut between two blocks for a smaller batch.
            raise RemoteError(
                f"the osmo server at {self.connection.url} stored {stored} of the "
                f"{len(batch)} objects sent: the upload was cut short"
            )


class _UploadingWriter(StagedWriter):
    """The base staged writer, finishing with one batched upload instead of a request per
    object. What it holds was encoded or verified on the way in."""

    store: HttpObjectStore

    def finish(self) -> None:
        self.store._upload(self._pending.items())
        self._pending.clear()


# --- the ref store ---------------------------------------------------------------------


class HttpRefStore(RefStore):
    """Refs of a remote store. Updates are compare-and-swap under the server's ref lock;
    the server also checks that the new target exists."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection

    def __repr__(self) -> str:
        return f"HttpRefStore({self.connection.url!r})"

    def close(self) -> None:
        self.connection.close()

    def read(self, name: str) -> ObjectId | None:
        body = self.connection.get_json(wire.REFS, {"name": validate_ref_name(name)})
        return self._refs(body).get(name)

    def list(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        return dict(
            sorted(self._refs(self.connection.get_json(wire.REFS, {"prefix": prefix})).items())
        )

    def _refs(self, body: dict[str, Any]) -> dict[str, ObjectId]:
        refs = body.get("refs")
        if not isinstance(refs, dict):
            raise RemoteError(f"the osmo server at {self.connection.url} sent no 'refs' object")
        return {str(k): _server_oid(v, self.connection.url) for k, v in refs.items()}

    def _swap(
        self, name: str, new: ObjectId | None, expected: object, entry: ReflogEntry | None
    ) -> None:
        self.connection.post_json(
            wire.REFS_UPDATE,
            {
                "name": name,
                "new": new,
                "expected": wire.EXPECT_ANY if expected is ANY else expected,
                "who": entry.who if entry else "",
                "message": entry.message if entry else "",
                "log": entry is not None,
            },
        )

    def reflog(self, name: str) -> list[ReflogEntry]:
        body = self.connection.get_json(wire.REFLOG, {"name": validate_ref_name(name)})
        entries = body.get("entries")
        if not isinstance(entries, list):
            raise RemoteError(f"the osmo server at {self.connection.url} sent no reflog")
        try:
            return [
                ReflogEntry(
                    _optional_oid(e["old"], self.connection.url),
                    _optional_oid(e["new"], self.connection.url),
                    int(e["time_ns"]),
                    str(e["who"]),
                    str(e["message"]),
                )
                for e in entries
            ]
        except (KeyError, TypeError, ValueError):
            raise RemoteError(
                f"the osmo server at {self.connection.url} sent a bad reflog"
            ) from None

    def reflog_names(self) -> list[str]:
        names = self.connection.get_json(wire.REFLOGS).get("names")
        if not isinstance(names, list):
            raise RemoteError(f"the osmo server at {self.connection.url} sent no reflog names")
        return sorted(str(n) for n in names)

    def expire_reflog(self, name: str, cutoff_ns: int) -> int:
        validate_ref_name(name)
        raise StoreError(
            "expiring reflogs is not supported over HTTP",
            hint="run `osmo cache gc` on the server's machine",
        )


def _optional_oid(value: object, url: str) -> ObjectId | None:
    return None if value is None else _server_oid(value, url)


def open_http_remote(url: str, token: str | None) -> tuple[HttpObjectStore, HttpRefStore]:
    """Connect to ``osmo serve`` at ``url`` (``http://host:port``; the API is under
    ``/v1``). Asks the server for its settings first, so a wrong URL, a missing token or a
    foreign server fail here, once, with a clear message."""
    connection = HttpConnection(url, token)
    try:
        info = connection.info()
    except BaseException:
        connection.close()
        raise
    max_body = info.get("max_body")
    takes = info.get(wire.BODY_TYPES)
    objects = HttpObjectStore(
        connection,
        read_only=bool(info.get("read_only")),
        max_body=max_body if isinstance(max_body, int) and max_body > 0 else DEFAULT_MAX_BODY,
        body_types=[t for t in takes if isinstance(t, str)] if isinstance(takes, list) else (),
    )
    return objects, HttpRefStore(connection)
