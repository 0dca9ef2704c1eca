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
from ..objects import MAX_OBJECT_SIZE, ZSTD_LEVEL, decompress_framed

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

    One zstd context of each kind per pack, behind a lock (zstd contexts are not
    thread-safe): one per thread and pack held a copy of the dictionary each (an eval's
    16 workers reading a few packs took 10 MB more), and a small frame decompresses in
    microseconds, so readers of one pack hardly ever wait for each other."""

    def __init__(self, dictionary: bytes) -> None:
        self.dictionary = dictionary
        self._lock = threading.Lock()
        self._compressor: zstandard.ZstdCompressor | None = None
        self._decompressor: zstandard.ZstdDecompressor | None = None

    def _dict(self) -> zstandard.ZstdCompressionDict:
        return zstandard.ZstdCompressionDict(
            self.dictionary, dict_type=zstandard.DICT_TYPE_FULLDICT
        )

    def compress(self, framed: bytes) -> bytes:
        with self._lock:
            if self._compressor is None:
                kw = {}
                if self.dictionary:
                    # Digested once, not at every frame; no dictionary id in the frames
                    # (the pack names its one dictionary).
                    digested = self._dict()
                    digested.precompute_compress(level=ZSTD_LEVEL)
                    kw = {"dict_data": digested, "write_dict_id": False}
                self._compressor = zstandard.ZstdCompressor(
                    level=ZSTD_LEVEL, write_content_size=True, **kw
                )
            return self._compressor.compress(framed)

    def decompress(self, oid: str, data: bytes, where: str, limit: int = MAX_OBJECT_SIZE) -> bytes:
        """The framed form (not yet verified against ``oid``); CorruptObject if the frame
        (or the dictionary) is damaged, or it declares more than ``limit`` bytes."""
        if not self.dictionary:
            return decompress_framed(data, oid, where, limit=limit)  # the per-thread context
        with self._lock:
            if self._decompressor is None:
                try:
                    self._decompressor = zstandard.ZstdDecompressor(dict_data=self._dict())
                except zstandard.ZstdError as e:
                    raise CorruptObject(
                        oid, f"its pack's dictionary is damaged ({e})", where=where
                    ) from None
            return decompress_framed(data, oid, where, self._decompressor, limit)
