"""Layer 1: object ids and canonical encodings. Nothing here knows about storage."""

from __future__ import annotations

import json
import re
from typing import Any, NewType

import blake3

from .errors import InvalidObjectId

ObjectId = NewType("ObjectId", str)

OID_HEX_LEN = 64
OID_RAW_LEN = 32
MIN_PREFIX_LEN = 4
ZERO_ID = ObjectId("0" * OID_HEX_LEN)

_OID_RE = re.compile(r"[0-9a-f]{64}\Z")
_PREFIX_RE = re.compile(r"[0-9a-f]{4,64}\Z")


def is_oid(text: object) -> bool:
    return isinstance(text, str) and _OID_RE.match(text) is not None


def parse_oid(text: str) -> ObjectId:
    """Validate a full id at a boundary. This is also what blocks path traversal: a string
    that passes cannot contain ``/``, ``.`` or anything but 64 lowercase hex digits."""
    if not is_oid(text):
        raise InvalidObjectId(text)
    return ObjectId(text)


def is_oid_prefix(text: str) -> bool:
    return _PREFIX_RE.match(text) is not None


def oid_to_raw(oid: ObjectId) -> bytes:
    return bytes.fromhex(oid)


def oid_from_raw(raw: bytes) -> ObjectId:
    if len(raw) != OID_RAW_LEN:
        raise InvalidObjectId(raw.hex())
    return ObjectId(raw.hex())


def blake3_hex(*parts: bytes) -> str:
    h = blake3.blake3()
    for p in parts:
        h.update(p)
    return h.hexdigest()


# One encoder, built once: json.dumps with these options builds a new one per call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding used for anything that is hashed: UTF-8, keys sorted, no
    insignificant whitespace, no NaN/Infinity. Equal values give equal bytes."""
    return _CANONICAL.encode(value).encode("utf-8")
