"""The images an edit or a variation starts from: found (a local file inside the allowed directories, or
an https URL downloaded under the download policy), checked, then uploaded for an `upload_id`.

AllToken's `/images/edits` and `/images/variations` take upload ids only (alltoken-api.md §4.3, §6), so a
URL is fetched here rather than refused: an agent often has only a URL (a web image, a result's
`r2_url`) and no way to save it itself. The download follows the same rules as results (`files.download`:
https and public hosts on every hop, bounded size and pace, image bytes only).

Everything AllToken would refuse is checked before anything is sent to it — not even a presign: the type
from the bytes (PNG, JPEG or WebP; a name can lie), at most 25 MB, and a mask with the image's pixel size
(from the headers, `imageinfo`). Uploading comes last; an upload that is never used costs nothing and
expires on its own (§6: unbound claims are deleted after 2 h), so a crash or a refusal after it is free.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio

from alltoken_mcp import files
from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.formats import byte_size
from alltoken_mcp.imageinfo import ImageHeader, ImageHeaderError, read_image_header
from alltoken_mcp.settings import DownloadLimits

MAX_INPUT_BYTES = 25 * 1024 * 1024
"""§4.3: a source or a mask is at most 25 MB (the presign answer's max_content_length for its purpose)."""
INPUT_MIME_TYPES = ("image/png", "image/jpeg", "image/webp")
InputName = Literal["image", "mask"]
UploadPurpose = Literal["image_edit_source", "image_edit_mask", "image_variation_source"]


class InputImageError(Exception):
    """An image or mask that cannot be used; `str(exc)` is one line saying which, why and what to do."""


@dataclass(frozen=True)
class InputImage:
    """A checked local file (the caller's, or a download of the URL it gave) and what presign needs."""

    name: InputName
    given: str
    path: Path
    header: ImageHeader
    size: int
    md5: str
    sha256: str


def is_url(raw: str) -> bool:
    """A URL to download rather than a local path (`file://` URIs are local)."""
    lowered = raw.strip().lower()
    return lowered.startswith("data:") or ("://" in lowered and not lowered.startswith("file://"))


@asynccontextmanager
async def scratch_dir() -> AsyncIterator[Path]:
    """A private temporary directory for downloads, removed afterwards whatever happens."""
    path = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="alltoken-input-")))
    try:
        yield path
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))


async def input_image(
    client: AllTokenClient,
    raw: str,
    name: InputName,
    *,
    allowed_dirs: Sequence[Path],
    scratch: Path,
    limits: DownloadLimits,
) -> InputImage:
    """`raw` (a local path or an https URL) as a checked `InputImage`; `InputImageError` otherwise.
    Nothing is sent to AllToken here."""
    if raw.strip()[:5].lower() == "data:":
        raise InputImageError(
            f"{name} is an inline data: URL, which AllToken does not take: save it to a file inside the "
            "allowed directories and pass its path, or pass an https URL."
        )
    try:
        if is_url(raw):
            saved = await files.download(
                client,
                raw.strip(),
                scratch / f"{name}.img",
                max_bytes=MAX_INPUT_BYTES,
                expect="image",
                limits=limits,
            )
            path = saved.path
        else:
            # The size is judged below, in exact bytes: near the limit a rounded size reads the same.
            path = await anyio.to_thread.run_sync(
                lambda: files.resolve_input_file(raw, allowed_dirs, max_bytes=sys.maxsize)
            )
            _check_size(name, path, (await anyio.Path(path).stat()).st_size)
        header = await anyio.to_thread.run_sync(read_image_header, path)
        size, md5, sha256 = await files.file_digests(path)
    except files.FileProblem as exc:
        raise InputImageError(f"{name}: {exc}") from exc
    except ImageHeaderError as exc:
        raise InputImageError(
            f"{name}: {raw.strip()[:200]} cannot be edited: {exc}. AllToken takes PNG, JPEG or WebP images; "
            "convert it first."
        ) from exc
    except OSError as exc:  # the file went away or became unreadable between the checks
        raise InputImageError(f"{name}: {raw.strip()[:200]} cannot be read: {exc.strerror or exc}.") from exc
    _check_size(name, path, size)  # again: it may have grown since
    return InputImage(name, raw, path, header, size, md5, sha256)


def _check_size(name: InputName, path: Path, size: int) -> None:
    if size > MAX_INPUT_BYTES:
        raise InputImageError(
            f"{name}: {path} is {size:,} bytes ({byte_size(size)}), over AllToken's limit of "
            f"{MAX_INPUT_BYTES:,} bytes ({byte_size(MAX_INPUT_BYTES)}) for edits and variations; pass a "
            "smaller file (or compress it first)."
        )


def check_mask(image: InputImage, mask: InputImage) -> None:
    """A mask must cover the image pixel for pixel."""
    if (mask.header.width, mask.header.height) != (image.header.width, image.header.height):
        raise InputImageError(
            f"mask is {mask.header.size} pixels but image is {image.header.size}: the mask must have the "
            "image's exact size (its transparent areas mark where to edit). Resize the mask and retry."
        )


async def upload(client: AllTokenClient, image: InputImage, purpose: UploadPurpose) -> str:
    """Presign and PUT the file; the `upload_id`. Raises the client's `AllTokenError`."""
    presigned = await client.presign_upload(
        purpose=purpose,
        content_type=image.header.mime_type,
        content_length=image.size,
        content_md5=image.md5,
        checksum_sha256=image.sha256,
    )
    await client.put_upload(presigned, image.path)
    return presigned.upload_id
