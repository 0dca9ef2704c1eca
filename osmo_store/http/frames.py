"""Where the zstd frames of a stream end, found without decompressing anything.

zstd's stream reader takes a stream that stops inside a frame for a shorter one: it hands
out what it could decompress and then reports the end, as it does at a frame's true end. A
batch cut at a block boundary then reads as a smaller batch, every record whole. The
sender always ends its stream with a frame's last block (and its checksum, if the frame
has one): that end is the batch's end record. :class:`FrameTracker` follows the frame
layout (RFC 8878, section 3.1) of the bytes it passes on, so that a reader can check, once
the stream is over, that it stopped at the end of a frame.
"""

from __future__ import annotations

from collections.abc import Callable

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: a skippable frame's magic is 0x184D2A5? (little-endian): its last three bytes
_SKIPPABLE_MAGIC_TAIL = b"\x2a\x4d\x18"
_DICT_ID_SIZES = (0, 1, 2, 4)
_CONTENT_SIZE_SIZES = (0, 2, 4, 8)
_RLE_BLOCK = 1
_RESERVED_BLOCK = 3


class FrameTracker:
    """A read function (``read(n) -> bytes``, ``b""`` at the end) that passes its source's
    bytes on unchanged and follows their frame layout; ``at_frame_end`` says whether the
    bytes so far end exactly after a whole zstd frame. Bytes that are not zstd frames are
    left to the decompressor to refuse (they never count as a frame's end)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._source = read
        self._frames = 0  # complete zstd frames passed on
        self._head = bytearray()  # the bytes of the header being read
        self._want = len(_ZSTD_MAGIC)  # how long that header is
        self._step: Callable[[bytes], None] | None = self._magic  # None: not zstd
        self._skip = 0  # bytes of a block's (or a skippable frame's) content still to pass
        self._checksum = 0  # bytes of checksum after the current frame's last block

    @property
    def at_frame_end(self) -> bool:
        return self._frames > 0 and self._step == self._magic and not self._head and not self._skip

    def read(self, n: int) -> bytes:
        data = self._source(n)
        self._follow(memoryview(data))
        return data

    def _follow(self, data: memoryview) -> None:
        i = 0
        while i < len(data) and self._step is not None:
            if self._skip:
                k = min(self._skip, len(data) - i)
                self._skip -= k
                i += k
                continue
            k = min(self._want - len(self._head), len(data) - i)
            self._head += data[i : i + k]
            i += k
            if len(self._head) == self._want:
                head = bytes(self._head)
                self._head.clear()
                self._step(head)

    def _expect(self, size: int, step: Callable[[bytes], None]) -> None:
        self._want, self._step = size, step

    def _magic(self, head: bytes) -> None:
        if head == _ZSTD_MAGIC:
            self._expect(1, self._descriptor)
        elif head[1:] == _SKIPPABLE_MAGIC_TAIL and head[0] & 0xF0 == 0x50:
            self._expect(4, self._skippable_size)
        else:
            self._step = None

    def _skippable_size(self, head: bytes) -> None:
        self._skip = int.from_bytes(head, "little")
        self._expect(len(_ZSTD_MAGIC), self._magic)

    def _descriptor(self, head: bytes) -> None:
        descriptor = head[0]
        single_segment = bool(descriptor & 0x20)
        self._checksum = 4 if descriptor & 0x04 else 0
        content_size = _CONTENT_SIZE_SIZES[descriptor >> 6] or int(single_segment)
        rest = (not single_segment) + _DICT_ID_SIZES[descriptor & 0x03] + content_size
        if rest:
            self._expect(rest, self._header_rest)
        else:
            self._expect(3, self._block_header)

    def _header_rest(self, head: bytes) -> None:
        self._expect(3, self._block_header)

    def _block_header(self, head: bytes) -> None:
        header = int.from_bytes(head, "little")
        kind = (header >> 1) & 0x03
        if kind == _RESERVED_BLOCK:
            self._step = None
            return
        self._skip = 1 if kind == _RLE_BLOCK else header >> 3
        if not header & 0x01:
            self._expect(3, self._block_header)
        elif self._checksum:
            self._expect(self._checksum, self._frame_end)
        else:
            self._frame_end(b"")

    def _frame_end(self, head: bytes) -> None:
        self._frames += 1
        self._expect(len(_ZSTD_MAGIC), self._magic)
