"""Deterministic media bytes: a tiny PNG encoder (zlib + struct) and a small MP4-shaped file.

Images are real, decodable PNGs of the requested size whose colours derive from the prompt. The simulator
only ever produces PNG, whatever `output_format` asked for, and says so honestly (`mime_type` image/png):
writing JPEG/WebP encoders is out of scope. Videos are not playable; they start with a valid `ftyp` box so
that type sniffing works, followed by an `mdat` box of deterministic bytes.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png(seed: str, width: int, height: int, *, pad_to: int | None = None) -> bytes:
    """An RGB PNG of horizontal colour bands derived from `seed`.

    `pad_to` inserts a private ancillary chunk (which decoders skip) so the file is about that many
    bytes: it lets large deliveries (e.g. a 20 MB base64 body) be benchmarked without a huge render.
    """
    digest = hashlib.sha256(seed.encode()).digest()
    bands = 8
    rows: list[bytes] = []
    for band in range(bands):
        r, g, b = digest[band * 3 : band * 3 + 3]
        row = b"\x00" + bytes((r, g, b)) * width  # filter byte 0 (None), then RGB pixels
        band_height = height // bands + (1 if band < height % bands else 0)
        rows.append(row * band_height)
    raw = b"".join(rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6))
    out = PNG_SIGNATURE + body
    end = _chunk(b"IEND", b"")
    if pad_to is not None and pad_to > len(out) + len(end) + 12:
        filler = (digest * (pad_to // len(digest) + 1))[: pad_to - len(out) - len(end) - 12]
        out += _chunk(b"siMp", filler)  # lowercase first letter: ancillary, safe to ignore
    return out + end


def mp4(seed: str, *, size: int = 4096) -> bytes:
    """A few KB that look like an MP4 to a sniffer: `ftyp` then a deterministic `mdat`."""
    ftyp_body = b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41"
    ftyp = struct.pack(">I", 8 + len(ftyp_body)) + b"ftyp" + ftyp_body
    digest = hashlib.sha256(seed.encode()).digest()
    payload = (digest * (size // len(digest) + 1))[: max(0, size - len(ftyp) - 8)]
    return ftyp + struct.pack(">I", 8 + len(payload)) + b"mdat" + payload
