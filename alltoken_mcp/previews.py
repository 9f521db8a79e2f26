"""Small inline previews of generated images, so a multimodal host can look at what it got.

A preview is the image scaled so its long side is at most 512 px, encoded as JPEG (WebP when the image has
real transparency, which JPEG would lose) at the best quality that keeps it under 50 KB. It is content
for the caller, never stored: the file itself is the result.

Pillow is imported on first use, not at start-up (cold start is measured and a host waits for it).
Decoding runs in worker threads, at most `parallel` at a time and each within `seconds`, so previews
never stall the event loop or take the threads the store and the transport need. Any failure is a
`PreviewError` (one line): the caller turns it into a warning; a preview never fails a job.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    from PIL import Image

MAX_SIDE = 512
MAX_BYTES = 50 * 1024
MAX_SOURCE_PIXELS = 50_000_000
"""Larger images are not decoded for a preview (a 3840x2160 render is 8.3 M pixels)."""
QUALITIES = (85, 75, 65, 55, 45, 35)
PREVIEW_PARALLEL = 2
PREVIEW_SECONDS = 20.0


class PreviewError(Exception):
    """No preview could be made; `str(exc)` says why in one line."""


@dataclass(frozen=True)
class Preview:
    data: bytes
    mime_type: str
    width: int
    height: int


def make_preview(source: bytes, *, max_side: int = MAX_SIDE, max_bytes: int = MAX_BYTES) -> Preview:
    """The preview of an encoded image (PNG, JPEG, WebP, GIF). Blocking: call it in a worker thread."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source)) as image:
            if image.width * image.height > MAX_SOURCE_PIXELS:
                raise PreviewError(f"the image is {image.width}x{image.height}, too large to preview")
            image.draft("RGB", (max_side, max_side))  # JPEG decodes at a reduced scale: much faster
            image.load()
            return _encode(_scaled(image, max_side), max_bytes)
    except PreviewError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PreviewError(f"the image could not be decoded ({exc})") from None


def _scaled(image: Image.Image, max_side: int) -> Image.Image:
    from PIL import Image

    alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    image = image.convert("RGBA" if alpha else "RGB")
    if alpha and image.getchannel("A").getextrema()[0] == 255:
        image = image.convert("RGB")  # an alpha channel that is opaque everywhere: JPEG is fine
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return image


def _encode(image: Image.Image, max_bytes: int) -> Preview:
    """The best quality that fits `max_bytes`; past the lowest, the image is halved until it fits."""
    fmt, mime = ("WEBP", "image/webp") if image.mode == "RGBA" else ("JPEG", "image/jpeg")
    while True:
        for quality in QUALITIES:
            out = io.BytesIO()
            image.save(out, fmt, quality=quality, optimize=fmt == "JPEG")
            if out.tell() <= max_bytes:
                return Preview(out.getvalue(), mime, image.width, image.height)
        if max(image.size) <= 32:
            raise PreviewError(f"no preview under {max_bytes} bytes could be made")
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)))


class Previewer:
    """Makes previews off the event loop: at most `parallel` at once, each within `seconds`. One per
    server (created with the tools), like the saved-file reader."""

    def __init__(self, parallel: int = PREVIEW_PARALLEL, seconds: float = PREVIEW_SECONDS) -> None:
        self._parallel = parallel
        self._seconds = seconds
        self._limiter: anyio.CapacityLimiter | None = None

    async def preview(self, source: bytes) -> Preview:
        if self._limiter is None:  # created on first use, inside the event loop
            self._limiter = anyio.CapacityLimiter(self._parallel)
        try:
            with anyio.fail_after(self._seconds):
                return await anyio.to_thread.run_sync(
                    make_preview, source, limiter=self._limiter, abandon_on_cancel=True
                )
        except TimeoutError:
            raise PreviewError(f"making the preview took longer than {self._seconds:g} s") from None
