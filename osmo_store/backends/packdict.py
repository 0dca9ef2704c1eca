"""The shared compression context of a version 2 pack: one zstd dictionary per pack.

Each object stays its own zstd frame (so one object still reads with one small
decompression, in any order), but every frame of a pack is compressed with a dictionary
trained on that pack's first objects and stored once in its header. Eval records share
most of their structure (keys, config, prompts), which per-object frames each paid for
again: measured on bench records, a pack took 2.1x the bytes of one zstd stream of the same
records, and 1.04x with a 64 KiB dictionary (blocks of several objects per frame got 1.2x at
128 KiB blocks, and made every read decompress a whole block). Byte layout:
objects_spec.md section 5.
"""

from __future__ import annotations

import threading

import zstandard

from ..errors import CorruptObject
from ..objects import ZSTD_LEVEL, decompress_framed

# Framed bytes gathered before the dictionary is trained (the writer holds them until
# then). Training on 1 MiB took ~0.05 s and lost ~1.5% against 4 MiB.
DICT_SAMPLE_BYTES = 1 << 20
# Below this, a pack gets no dictionary: 64 KiB of dictionary would outweigh the saving.
DICT_MIN_BYTES = 256 << 10
DICT_MIN_OBJECTS = 16
DICT_SIZE = 64 << 10
# A reader's sanity bound on a stated dictionary length.
MAX_DICT_SIZE = 16 << 20


def train_dictionary(samples: list[bytes]) -> bytes:
    """A dictionary for these framed objects, or b"" when a pack this small (or this
    uniform: zstd cannot train on samples that are all alike) is better off without."""
    total = sum(map(len, samples))
    if total < DICT_MIN_BYTES or len(samples) < DICT_MIN_OBJECTS:
        return b""
    try:
        # Fixed k and d: zstd's parameter search took 3-10x as long for the same ratio.
        trained = zstandard.train_dictionary(
            min(DICT_SIZE, total // 8), samples, k=1024, d=8, level=ZSTD_LEVEL
        )
    except zstandard.ZstdError:
        return b""
    return trained.as_bytes()


class PackCodec:
    """Compress and decompress the frames of one pack (with its dictionary, if any).
    zstd contexts are not thread-safe: one of each per thread."""

    def __init__(self, dictionary: bytes) -> None:
        self.dictionary = dictionary
        self._local = threading.local()

    def _dict(self) -> zstandard.ZstdCompressionDict:
        return zstandard.ZstdCompressionDict(
            self.dictionary, dict_type=zstandard.DICT_TYPE_FULLDICT
        )

    def compress(self, framed: bytes) -> bytes:
        c = getattr(self._local, "c", None)
        if c is None:
            # No dictionary id in the frames: the pack names its one dictionary.
            kw = {"dict_data": self._dict(), "write_dict_id": False} if self.dictionary else {}
            c = self._local.c = zstandard.ZstdCompressor(
                level=ZSTD_LEVEL, write_content_size=True, **kw
            )
        return c.compress(framed)

    def decompress(self, oid: str, data: bytes, where: str) -> bytes:
        """The framed form (not yet verified against ``oid``); CorruptObject if the frame
        (or the dictionary) is damaged."""
        d = None
        if self.dictionary:
            d = getattr(self._local, "d", None)
            if d is None:
                try:
                    d = self._local.d = zstandard.ZstdDecompressor(dict_data=self._dict())
                except zstandard.ZstdError as e:
                    raise CorruptObject(
                        oid, f"its pack's dictionary is damaged ({e})", where=where
                    ) from None
        return decompress_framed(data, oid, where, d)
