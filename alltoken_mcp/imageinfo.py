"""The type and pixel size of a PNG, JPEG or WebP file, read from its header alone.

Image edits are checked before anything is paid for: the type must be one AllToken takes and a mask must
have the image's dimensions. Both are in the first bytes of the file (a JPEG's frame header may follow
its metadata segments, which are skipped by their lengths), so no image library is needed and nothing
is decoded. Imports nothing of the product.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_JPEG_SEGMENTS = 512
"""Metadata segments walked before a JPEG's frame header; real files have a handful."""

# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


class ImageHeaderError(ValueError):
    """The file is not a PNG, JPEG or WebP whose header can be read; `str(exc)` says why."""


@dataclass(frozen=True)
class ImageHeader:
    mime_type: str  # image/png | image/jpeg | image/webp
    width: int
    height: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def read_image_header(path: Path) -> ImageHeader:
    """The type and dimensions of the image at `path`; `ImageHeaderError` when the bytes are not a PNG,
    JPEG or WebP, or its header is cut short or malformed. Blocking: run it in a worker thread."""
    with path.open("rb") as handle:
        return image_header(handle)


def image_header(handle: BinaryIO) -> ImageHeader:
    """`read_image_header` on an open binary file positioned at its start."""
    head = handle.read(30)
    if head.startswith(PNG_SIGNATURE):
        return _png(head)
    if head.startswith(b"\xff\xd8\xff"):
        handle.seek(2)
        return _jpeg(handle)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    raise ImageHeaderError("it is not a PNG, JPEG or WebP image")


def _checked(mime_type: str, width: int, height: int) -> ImageHeader:
    if width < 1 or height < 1:
        raise ImageHeaderError(f"its header says {width}x{height} pixels")
    return ImageHeader(mime_type, width, height)


def _png(head: bytes) -> ImageHeader:
    # Signature, then the IHDR chunk first: length (13), "IHDR", width, height (big-endian).
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ImageHeaderError("its PNG header (IHDR) is missing or cut short")
    width, height = struct.unpack(">II", head[16:24])
    return _checked("image/png", width, height)


def _jpeg(handle: BinaryIO) -> ImageHeader:
    for _ in range(MAX_JPEG_SEGMENTS):
        marker = handle.read(2)
        while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes before a marker
            marker = b"\xff" + handle.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            break
        kind = marker[1]
        if kind in _JPEG_STANDALONE:
            continue
        if kind in (0xD9, 0xDA):  # end of image, start of scan: no frame header came first
            break
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            break
        (length,) = struct.unpack(">H", length_bytes)
        if length < 2:
            break
        if kind in _JPEG_FRAMES:
            frame = handle.read(5)  # precision, height, width
            if len(frame) < 5:
                break
            height, width = struct.unpack(">HH", frame[1:5])
            return _checked("image/jpeg", width, height)
        handle.seek(length - 2, 1)
    raise ImageHeaderError("its JPEG frame header (SOF) is missing or cut short")


def _webp(head: bytes) -> ImageHeader:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        # Lossy: a key frame's start code, then 14-bit width and height (2 scale bits above each).
        width, height = struct.unpack("<HH", head[26:30])
        return _checked("image/webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        # Lossless: signature 0x2f, then width-1 and height-1 in 14 bits each, little-endian.
        bits = int.from_bytes(head[21:25], "little")
        return _checked("image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(head) >= 30:
        # Extended: canvas width-1 and height-1 in 24 bits each, after 4 flag and 3 reserved bytes.
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return _checked("image/webp", width, height)
    raise ImageHeaderError("its WebP header (VP8, VP8L or VP8X) is missing or cut short")
