"""The header reader: type and pixel size of PNG, JPEG (frame header after metadata) and the three WebP
forms, from the bytes alone; anything else, or a header cut short, is refused with a reason."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from alltoken_mcp.imageinfo import ImageHeader, ImageHeaderError, read_image_header
from alltoken_mcp.simulator import media


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(width: int, height: int, *, frame: int = 0xC0, exif_bytes: int = 0) -> bytes:
    """SOI, JFIF, an EXIF segment of `exif_bytes`, a Huffman table (C4: not a frame), fill bytes, the
    frame header, then the scan."""
    parts = [b"\xff\xd8", _segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0")]
    if exif_bytes:
        parts.append(_segment(0xE1, b"Exif\0\0" + bytes(exif_bytes)))
    parts.append(_segment(0xC4, b"\x00" + bytes(16) + struct.pack(">HH", 9999, 9999)))
    parts.append(b"\xff\xff")  # fill bytes may precede any marker
    parts.append(_segment(frame, b"\x08" + struct.pack(">HH", height, width) + b"\x03" + bytes(9)))
    parts.append(_segment(0xDA, bytes(10)) + b"\x00" * 32 + b"\xff\xd9")
    return b"".join(parts)


def webp_lossy(width: int, height: int) -> bytes:
    frame = b"\x30\x01\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width | 0x4000, height)  # scale bits set
    chunk = b"VP8 " + struct.pack("<I", len(frame)) + frame
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    body = b"\x2f" + bits.to_bytes(4, "little") + bytes(8)
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


# The first 30 bytes of CPython's test image Lib/test/imghdrdata/python.webp (16x16, extended form).
WEBP_EXTENDED_16 = bytes.fromhex("52494646a801000057454250565038580a000000100000000f00000f0000")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (media.png("x", 640, 480), ImageHeader("image/png", 640, 480)),
        (jpeg(1536, 1024), ImageHeader("image/jpeg", 1536, 1024)),
        (jpeg(300, 200, frame=0xC2, exif_bytes=60_000), ImageHeader("image/jpeg", 300, 200)),
        (webp_lossy(1024, 768), ImageHeader("image/webp", 1024, 768)),
        (webp_lossless(16383, 1), ImageHeader("image/webp", 16383, 1)),
        (WEBP_EXTENDED_16, ImageHeader("image/webp", 16, 16)),
    ],
    ids=["png", "jpeg-baseline", "jpeg-progressive-after-exif", "webp-lossy", "webp-lossless", "webp-vp8x"],
)
def test_the_type_and_size_come_from_the_header(
    tmp_path: Path, content: bytes, expected: ImageHeader
) -> None:
    path = tmp_path / "picture.bin"  # the name says nothing; the bytes decide
    path.write_bytes(content)
    assert read_image_header(path) == expected


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"GIF89a" + bytes(40), "not a PNG, JPEG or WebP"),
        (b"<html>not an image</html>", "not a PNG, JPEG or WebP"),
        (b"", "not a PNG, JPEG or WebP"),
        (media.png("x", 8, 8)[:20], "IHDR"),
        (jpeg(10, 10)[:40], "SOF"),
        (b"\xff\xd8" + _segment(0xDA, bytes(4)), "SOF"),  # a scan before any frame header
        (webp_lossy(10, 10)[:27], "WebP header"),
        (b"RIFF\0\0\0\0WEBPVP8Q" + bytes(20), "WebP header"),
        (media.png("x", 8, 8)[:16] + struct.pack(">II", 0, 8) + bytes(8), "0x8 pixels"),
    ],
)
def test_other_or_broken_files_are_refused_with_a_reason(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(content)
    with pytest.raises(ImageHeaderError, match=says):
        read_image_header(path)
