"""The server's side of id-less batches (docs/protocol.md): reading an upload whose objects
are named by the hashes of their framed forms (so none can lie about its id), and the ids
a ``get`` by id prefixes names."""

from __future__ import annotations

from collections.abc import Callable

from ..backends.base import ObjectStore
from ..errors import HttpError, RecordStreamError, RecordTooLarge
from ..hashing import ObjectId, blake3_hex
from ..objects import unframe
from . import protocol as wire


def receive_objects(
    read: Callable[[int], bytes], budget: int, too_large: Callable[[int], HttpError]
) -> list[tuple[ObjectId, bytes]]:
    """(id, framed form) of every object of the upload, each parsed; nothing is stored
    here, so a bad object anywhere (400 bad_object) or a body decompressing past
    ``budget`` (``too_large``) refuses the whole upload."""
    received: list[tuple[ObjectId, bytes]] = []
    try:
        for framed in wire.iter_zstd_objects(read, budget):
            if len(received) >= wire.MAX_BATCH_IDS:
                message = f"at most {wire.MAX_BATCH_IDS} objects per upload"
                raise wire.error(wire.BAD_REQUEST, message)
            oid = ObjectId(blake3_hex(framed))
            try:
                unframe(framed)  # a known type and a true size
            except ValueError as e:
                raise wire.error(wire.BAD_OBJECT, f"object {oid}: {e}", id=oid) from None
            received.append((oid, framed))
    except RecordTooLarge:
        raise too_large(budget) from None
    except RecordStreamError as e:
        raise wire.error(wire.BAD_OBJECT, f"truncated upload: {e}", id=None) from None
    return received


def resolve_prefixes(objects: ObjectStore, prefixes: list[bytes]) -> list[ObjectId]:
    """The one stored id each prefix names, else 404 ``not_found`` with ``id`` null (the
    client then asks in full). The client checks each object sent against the id it means."""
    ids = []
    for prefix, oid in zip(prefixes, objects.resolve_raw_prefixes(prefixes), strict=True):
        if oid is None:
            message = f"no single object has the id prefix {prefix.hex()}"
            raise wire.error(wire.NOT_FOUND, message, id=None)
        ids.append(oid)
    return ids
