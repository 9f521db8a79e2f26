"""Generated media and local input files: names, atomic writes, bounded downloads, allowed directories.

Every byte of a paid result goes to disk through `atomic_file`: a hidden temp file in the destination
directory, fsync, a no-clobber rename, fsync of the directory. A crash or an error leaves either the
complete file under its final name or nothing (not even the temp). Blocking file I/O runs in worker
threads so a 20 MB image never stalls the event loop.

Saved files are served back (the `alltoken://media/...` resource) by `SavedFileReader` only as the regular
file that was recorded: no symlink is followed, a FIFO or device cannot block the open, and size and
SHA-256 must match the record. Those reads have their own small thread limit and a deadline, so slow or
hung files cannot take the worker threads the rest of the server needs.

    FileProblem                 str(exc) is one actionable line for the calling model
    ├── InputFileError          a local input path is missing, outside the allowed dirs, too big, ...
    ├── OutputFileError         the output dir cannot be written (errno cause kept as __cause__)
    ├── DownloadError           refused URL, non-2xx, size cap, wrong kind of bytes, too slow, broken
    │                           off; `permanent` says whether trying again can help
    └── SavedFileError          a saved file cannot be served as recorded (changed, unreadable, slow)
        └── SavedFileMissing    ... because it is gone
"""

from __future__ import annotations

import base64
import builtins
import errno
import hashlib
import mimetypes
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import httpx2

from alltoken_mcp import urlpolicy
from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.errors import APIStatusError, TransportError
from alltoken_mcp.formats import byte_size
from alltoken_mcp.settings import DownloadLimits, expand_home

T = TypeVar("T")

OUTPUT_DIR_VAR = "ALLTOKEN_OUTPUT_DIR"
INPUT_DIRS_VAR = "ALLTOKEN_INPUT_DIRS"

SAVED_READ_PARALLEL = 4
"""At most this many saved-file reads hold a worker thread at once (anyio's shared pool has 40)."""
SAVED_READ_SECONDS = 60.0
"""A saved-file read (waiting for a slot included) that takes longer is abandoned with an error."""
# Small writes (httpx2 hands out ~64 KiB pieces) are batched up to this size per worker-thread hop.
WRITE_BATCH = 1024 * 1024
READ_CHUNK = 1024 * 1024
MAX_COLLISION_SUFFIX = 9999
SLUG_MAX = 40
# Leaves room for the ".<name>.<random>.partial" temp name within the usual 255-byte limit.
NAME_MAX = 200

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}
_MIME_BY_SUFFIX = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
}
# MP4 and QuickTime are both ISO base media files; a sniffer cannot reliably tell them apart.
_ISO_BMFF = frozenset({"video/mp4", "video/quicktime"})

MediaKind = Literal["image", "video"]
"""What a downloaded file must be; its first bytes are checked before it is committed."""
_KIND_TYPES: dict[str, frozenset[str]] = {
    "image": frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"}),
    "video": _ISO_BMFF,
}
_KIND_NAMES = {"image": "an image (PNG, JPEG, WebP or GIF)", "video": "a video (MP4 or MOV)"}
SNIFF_BYTES = 12
"""Bytes `sniff_mime` needs to recognise every supported type (WebP's RIFF header is the longest)."""
DEFAULT_DOWNLOAD_LIMITS = DownloadLimits()


class FileProblem(Exception):
    """A file could not be read, written or downloaded. `str(exc)` says what to do about it."""


class InputFileError(FileProblem):
    """A local input path is unusable (missing, not a regular file, not allowed, too large, unreadable)."""


class OutputFileError(FileProblem):
    """The output directory cannot take the file. The OSError is kept as `__cause__`."""


class DownloadError(FileProblem):
    """A result file could not be downloaded within its limits (size, time, kind) from an allowed URL.

    `permanent` is True when trying the same URL again cannot help (a refused URL or redirect, a 4xx
    other than 408/429, over the size cap, bytes that are not the claimed type) and False when it may
    (connection lost, 5xx, 408/429, too slow).
    """

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class SavedFileError(FileProblem):
    """A saved media file cannot be served as recorded: replaced, modified, unreadable or too slow."""


class SavedFileMissing(SavedFileError):
    """A saved media file no longer exists under its recorded path."""


@dataclass(frozen=True)
class SavedFile:
    path: Path  # absolute, the final name actually used
    bytes: int
    sha256: str  # lowercase hex
    mime_type: str


# ---------------------------------------------------------------------------------------------- names


def _slug(text: str, limit: int) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    slug = ""
    for word in re.findall(r"[a-z0-9]+", ascii_text):
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > limit:
            if not slug:  # one very long word: cut it rather than return nothing
                slug = word[:limit]
            break
        slug = candidate
    return slug


def media_filename(prompt: str, job_id: str, index: int, extension: str) -> str:
    """`<prompt-slug>_<job_id>_<index>.<ext>`, e.g. "red-fox-in-snow_job_ab12cd_0.png".

    Always includes the index so a job's names are stable whatever its file count. Only [a-z0-9-_.]
    characters: no separators, no leading dot, nothing Windows reserves.
    """
    slug = _slug(prompt, SLUG_MAX) or "media"
    job = re.sub(r"[^A-Za-z0-9_-]+", "-", job_id).strip("-_")[:64] or "job"
    ext = re.sub(r"[^a-z0-9]", "", extension.lower().lstrip("."))[:10] or "bin"
    name = f"{slug}_{job}_{max(0, int(index))}.{ext}"
    return name[-NAME_MAX:] if len(name) > NAME_MAX else name


def _mime_base(mime_type: str | None) -> str | None:
    if not mime_type:
        return None
    base = mime_type.split(";", 1)[0].strip().lower()
    return base or None


def extension_for(mime_type: str | None, fallback: str) -> str:
    """File extension (no dot) for a media type; `fallback` when unknown."""
    return _EXTENSIONS.get(_mime_base(mime_type) or "", fallback)


def sniff_mime(head: bytes) -> str | None:
    """The media type the first bytes announce (PNG, JPEG, GIF, WEBP, MP4/MOV), else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    return None


def _compatible(a: str, b: str) -> bool:
    return a == b or (a in _ISO_BMFF and b in _ISO_BMFF)


def _settle_type(path: Path, declared: str | None, sniffed: str | None) -> tuple[Path, str]:
    """The final path and media type: the bytes win over a declared type that contradicts them.

    A known media suffix that contradicts the sniffed content is corrected (an API that labels a JPEG
    as PNG must not produce `x.png` holding JPEG bytes); other suffixes are left alone.
    """
    declared = _mime_base(declared)
    suffix = path.suffix.lower().lstrip(".")
    by_suffix = _MIME_BY_SUFFIX.get(suffix)
    if sniffed is None:
        mime = declared or by_suffix or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return path, mime
    mime = declared if declared is not None and _compatible(declared, sniffed) else sniffed
    if by_suffix is not None and not _compatible(by_suffix, sniffed):
        path = path.with_suffix("." + _EXTENSIONS[sniffed])
    return path, mime


# ---------------------------------------------------------------------------------------------- errors


def _output_error(exc: OSError, directory: Path) -> OutputFileError:
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = f"{exc.strerror or exc}{f' ({code})' if code else ''}"
    fix = f"set {OUTPUT_DIR_VAR} to a writable directory"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        reason = f"a path component is a file, not a directory ({code})"
    elif exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = f"free disk space there, or set {OUTPUT_DIR_VAR} to a volume with room"
    elif exc.errno == errno.EFBIG:
        fix = f"raise the file-size limit, or set {OUTPUT_DIR_VAR} to a filesystem that allows large files"
    error = OutputFileError(f"Cannot write media to {directory}: {reason}. To fix it, {fix}.")
    error.__cause__ = exc
    return error


def _where(url: str) -> str:
    """Host + path for messages: presigned query strings carry signatures and stay out."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}{parts.path}"
    except ValueError:  # an unparseable port or IPv6 literal
        return "the result URL"


# ---------------------------------------------------------------------------------------------- writer


def _absolute(path: Path) -> Path:
    """Absolute without resolving symlinks: the caller's directory layout is kept as given."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself. Not every platform can open a directory (Windows): then skip."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself is already synced
    finally:
        os.close(fd)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _candidates(path: Path) -> Iterator[Path]:
    yield path
    for n in range(1, MAX_COLLISION_SUFFIX + 1):
        yield path.with_name(f"{path.stem}-{n}{path.suffix}")


def _place(temp: Path, final: Path, size: int, sha256: str, *, replace: bool = False) -> Path:
    """Give the finished temp file its final name without ever replacing a different file, unless
    `replace` (the caller asked to overwrite `final`: one atomic rename).

    Tries `final`, then `final-1`, `final-2`...; a candidate already holding exactly these bytes is
    reused (a re-delivery after a crash) and the temp dropped. Hard links make the claim atomic
    across processes; filesystems without them fall back to check-then-replace.
    """
    if replace:
        os.replace(temp, final)
        return final
    for candidate in _candidates(final):
        try:
            existing = candidate.stat()
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if (
                stat.S_ISREG(existing.st_mode)
                and existing.st_size == size
                and _sha256_of(candidate) == sha256
            ):
                temp.unlink()
                return candidate
            continue
        try:
            os.link(temp, candidate)
        except FileExistsError:
            continue  # another writer claimed it between our stat and link; look at it again later
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.replace(temp, candidate)
            return candidate
        temp.unlink()
        return candidate
    raise FileExistsError(errno.EEXIST, f"{MAX_COLLISION_SUFFIX} files named like {final.name} already exist")


class AtomicWriter:
    """Accepts chunks for one file; created by `atomic_file`. Not safe for concurrent `write` calls."""

    def __init__(
        self, final: Path, *, max_bytes: int | None, mime_type: str | None, replace: bool, tag: str
    ) -> None:
        self._final = final
        self._replace = replace
        self._tag = tag
        self._max_bytes = max_bytes
        self._mime_type = mime_type
        self._temp: Path | None = None
        self._fd: int | None = None
        self._hash = hashlib.sha256()
        self._pending: list[builtins.bytes] = []
        self._pending_size = 0
        self._bytes = 0
        self._head = b""
        self._saved: SavedFile | None = None

    @property
    def bytes(self) -> int:
        """Bytes accepted so far (written or batched)."""
        return self._bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes accepted so far."""
        digest = self._hash.copy()
        for piece in self._pending:
            digest.update(piece)
        return digest.hexdigest()

    @property
    def head(self) -> builtins.bytes:
        """The first bytes accepted (up to 32): enough to tell the file's type."""
        return self._head

    @property
    def saved(self) -> SavedFile:
        """The committed file; available once the `async with atomic_file(...)` block has exited."""
        if self._saved is None:
            raise RuntimeError("the file is committed only when the atomic_file block exits cleanly")
        return self._saved

    async def write(self, chunk: builtins.bytes) -> None:
        if not chunk:
            return
        if self._fd is None:
            raise RuntimeError("write() after the atomic_file block has ended")
        if self._max_bytes is not None and self._bytes + len(chunk) > self._max_bytes:
            limit = byte_size(self._max_bytes)
            raise FileProblem(
                f"{self._final.name} would exceed its size limit of {limit}; nothing was saved."
            )
        if len(self._head) < 32:
            self._head += bytes(chunk[: 32 - len(self._head)])
        self._bytes += len(chunk)
        self._pending.append(bytes(chunk))
        self._pending_size += len(chunk)
        if self._pending_size >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        pieces = self._pending
        self._pending, self._pending_size = [], 0
        fd = self._fd
        assert fd is not None
        digest = self._hash

        def write_pieces() -> None:
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            digest.update(data)
            _write_all(fd, data)

        await self._io(write_pieces)

    async def _io(self, work: Callable[[], None]) -> None:
        try:
            await anyio.to_thread.run_sync(work)
        except OSError as exc:
            raise _output_error(exc, self._final.parent) from exc

    async def _open(self) -> None:
        directory = self._final.parent
        # ".<final>.<tag>.<random>.partial": hidden, and visibly unfinished to anyone listing the directory;
        # the tag (a job id) lets `remove_partials` find a dead writer's temp whatever the final name is.
        tag = f"{self._tag}." if self._tag else ""
        temp = directory / f".{self._final.name[:NAME_MAX]}.{tag}{secrets.token_hex(4)}.partial"

        def create() -> int:
            directory.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temp, flags, 0o666)

        try:
            self._fd = await anyio.to_thread.run_sync(create)
        except OSError as exc:
            raise _output_error(exc, directory) from exc
        self._temp = temp

    async def _commit(self) -> SavedFile:
        await self._flush()
        fd, temp = self._fd, self._temp
        assert fd is not None
        assert temp is not None
        size, sha256 = self._bytes, self._hash.hexdigest()
        final, mime = _settle_type(self._final, self._mime_type, sniff_mime(self._head))

        def finish() -> Path:
            os.fsync(fd)
            os.close(fd)
            self._fd = None
            placed = _place(temp, final, size, sha256, replace=self._replace)
            self._temp = None
            _fsync_dir(final.parent)
            return placed

        try:
            placed = await anyio.to_thread.run_sync(finish)
        except OSError as exc:
            raise _output_error(exc, final.parent) from exc
        return SavedFile(path=placed, bytes=size, sha256=sha256, mime_type=mime)

    async def _discard(self) -> None:
        fd, temp = self._fd, self._temp
        self._fd = self._temp = None
        self._pending = []

        def discard() -> None:
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
            if temp is not None:
                with suppress(FileNotFoundError):
                    temp.unlink()

        # Shielded: a cancelled delivery must still remove its temp file.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(discard)


@asynccontextmanager
async def atomic_file(
    path: Path,
    *,
    max_bytes: int | None = None,
    mime_type: str | None = None,
    replace: bool = False,
    tag: str = "",
) -> AsyncIterator[AtomicWriter]:
    """Write a file all-or-nothing: `async with atomic_file(p) as w: await w.write(b)`; then `w.saved`.

    Creates missing parent directories. On a clean exit the data is fsynced and renamed into place;
    an existing different file is never replaced (`name-1.ext`, `name-2.ext`... instead) and an existing
    identical one is kept and returned — unless `replace`, which renames over the file (the caller's
    `overwrite`). `tag` goes into the temp file's name (see `remove_partials`). On an exception the temp
    file is removed and the exception re-raised; OSErrors from the writer's own I/O arrive as
    `OutputFileError`.
    """
    writer = AtomicWriter(_absolute(path), max_bytes=max_bytes, mime_type=mime_type, replace=replace, tag=tag)
    await writer._open()
    try:
        yield writer
        writer._saved = await writer._commit()
    except BaseException:
        await writer._discard()
        raise


# ---------------------------------------------------------------------------------------------- savers


def remove_partials(directory: Path, marker: str) -> int:
    """Delete temp files left in `directory` by a writer that died (kill -9) whose name contains `marker`
    (a job id: in the final name, or as the writer's `tag`). Only the job's lease holder may call it: a
    live writer's temp would go too."""
    removed = 0
    try:
        candidates = list(directory.glob(".*.partial"))
    except OSError:
        return 0
    for temp in candidates:
        if marker in temp.name:
            with suppress(FileNotFoundError):
                temp.unlink()
                removed += 1
    return removed


async def write_bytes(path: Path, data: bytes, *, mime_type: str | None = None) -> SavedFile:
    """Save `data` atomically (see `atomic_file`)."""
    async with atomic_file(path, mime_type=mime_type) as writer:
        await writer.write(data)
    return writer.saved


async def download(
    client: AllTokenClient,
    url: str,
    path: Path,
    *,
    max_bytes: int,
    expect: MediaKind,
    limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
    mime_type: str | None = None,
    replace: bool = False,
    tag: str = "",
) -> SavedFile:
    """Stream `url` to `path` atomically: one attempt, bounded in size, time and kind of content.
    `replace` and `tag` are `atomic_file`'s.

    Refused before anything is written: a URL `urlpolicy` forbids (on any redirect hop), a declared
    Content-Length over `max_bytes`. Abandoned mid-way: more than `max_bytes` streamed, bytes that are not
    `expect` (PNG/JPEG/WebP/GIF for "image", MP4/MOV for "video"), or a window of `limits.window_seconds`
    (the first one starts with the request) in which less than `limits.min_bytes_per_second` × window
    arrived; so an attempt ends within window + max_bytes / min rate seconds. No Authorization header is
    sent (the client's `download`). Any failure (or cancellation) leaves nothing
    behind and raises `DownloadError` saying whether trying again can help (`OutputFileError` when the
    disk is the problem).
    """
    where = _where(url)
    declared: int | None = None
    streaming: httpx2.Response | None = None
    window_bytes = 0
    quota = limits.min_bytes_per_second * limits.window_seconds
    try:
        with anyio.CancelScope(deadline=anyio.current_time() + limits.window_seconds) as pace:
            async with client.download(url) as response:
                streaming = response
                declared = _content_length(response)
                if declared is not None and declared > max_bytes:
                    raise DownloadError(
                        f"{where} is {byte_size(declared)}, over the {byte_size(max_bytes)} limit for this "
                        "file; nothing was saved.",
                        permanent=True,
                    )
                content_type = _mime_base(response.headers.get("content-type"))
                header_type = content_type if content_type in _EXTENSIONS else None
                async with atomic_file(
                    path, max_bytes=max_bytes, mime_type=mime_type or header_type, replace=replace, tag=tag
                ) as writer:
                    checked = False
                    async for chunk in response.aiter_bytes():
                        if writer.bytes + len(chunk) > max_bytes:
                            raise DownloadError(
                                f"{where} sent more than the {byte_size(max_bytes)} limit for this file; "
                                "nothing was saved.",
                                permanent=True,
                            )
                        await writer.write(chunk)
                        if not checked and writer.bytes >= SNIFF_BYTES:
                            _check_kind(writer.head, expect, where, content_type)
                            checked = True
                        window_bytes += len(chunk)
                        if window_bytes >= quota:
                            window_bytes = 0
                            pace.deadline = anyio.current_time() + limits.window_seconds
                    # httpx2 normally raises on a short Content-Length body itself; this is the backstop.
                    received = response.num_bytes_downloaded
                    if declared is not None and received < declared:
                        raise DownloadError(
                            f"{where} ended after {received} of {declared} bytes; nothing was saved.",
                            permanent=False,
                        )
                    if not checked:
                        _check_kind(writer.head, expect, where, content_type)
    except APIStatusError as exc:
        hint = " (the URL may have expired)" if exc.status_code in (403, 404, 410) else ""
        raise DownloadError(
            f"Downloading {where} failed with HTTP {exc.status_code}{hint}.",
            permanent=not _retryable_status(exc.status_code),
        ) from exc
    except TransportError as exc:
        raise DownloadError(f"Downloading {where} failed: {exc}", permanent=False) from exc
    except httpx2.HTTPError as exc:
        # Mid-body failures after the status line: connection reset, truncated body, decoding errors.
        detail = str(exc) or type(exc).__name__
        received = streaming.num_bytes_downloaded if streaming is not None else 0
        expected = f" of {declared}" if declared is not None else ""
        raise DownloadError(
            f"Downloading {where} broke off ({detail}) after {received}{expected} bytes; nothing was saved.",
            permanent=False,
        ) from exc
    except urlpolicy.RefusedURL as exc:
        raise DownloadError(f"Download {exc}; nothing was saved.", permanent=True) from exc
    if pace.cancelled_caught:
        received = streaming.num_bytes_downloaded if streaming is not None else 0
        raise DownloadError(
            f"Downloading {where} was abandoned: it sent {window_bytes} bytes in "
            f"{limits.window_seconds:g} s, below the minimum rate of "
            f"{byte_size(limits.min_bytes_per_second)}/s ({received} bytes in all); nothing was saved.",
            permanent=False,
        )
    return writer.saved


def _retryable_status(status: int) -> bool:
    """Whether a download answered with `status` may succeed later (timeouts, rate limits, server errors)."""
    return status in (408, 425, 429) or status >= 500


def _check_kind(head: bytes, expect: MediaKind, where: str, content_type: str | None) -> None:
    sniffed = sniff_mime(head)
    if sniffed in _KIND_TYPES[expect]:
        return
    what = f"{sniffed} bytes" if sniffed else "bytes of no known media type"
    raise DownloadError(
        f"{where} sent {what} (Content-Type {content_type or 'none'}) instead of {_KIND_NAMES[expect]}; "
        "nothing was saved.",
        permanent=True,
    )


def _content_length(response: httpx2.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or response.headers.get("content-encoding", "identity") != "identity":
        return None  # a compressed body's length says nothing about what lands on disk
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


# ---------------------------------------------------------------------------------------------- inputs


MAX_SHOWN_PATH = 200


def _shown(path: str | Path) -> str:
    """A caller-given path for a one-line message: quoted and escaped (a newline or control character
    in it must not break the line) and, past MAX_SHOWN_PATH characters, shortened in the middle."""
    text = repr(str(path))
    if len(text) > MAX_SHOWN_PATH:
        keep = (MAX_SHOWN_PATH - 1) // 2
        text = f"{text[:keep]}…{text[-keep:]}"
    return text


def _allowed_text(allowed: Sequence[Path]) -> str:
    dirs = ", ".join(str(d) for d in allowed) or "(none)"
    return (
        f"Allowed directories: {dirs}. To allow another, add it to {INPUT_DIRS_VAR} "
        f"(separated by {os.pathsep!r}) in the MCP server's environment, or copy the file into one of them."
    )


def resolve_input_file(raw: str, allowed_dirs: Sequence[Path], *, max_bytes: int) -> Path:
    """The real path of a readable regular file inside one of `allowed_dirs`, at most `max_bytes` long.

    Accepts `~`, absolute paths, `file://` URIs, and relative paths (looked up in each allowed
    directory in turn). Symlinks are followed before the check, so a link cannot escape.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InputFileError("The input file path is empty; pass the absolute path of a local file.")
    if "\x00" in raw:
        raise InputFileError("The input file path contains a NUL byte; pass a plain file path.")
    text = raw.strip()
    if text.lower().startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise InputFileError(f"{_shown(raw)} names a file on another host; pass a local path.")
        text = unquote(parts.path)
    allowed = [Path(d).expanduser().resolve() for d in allowed_dirs]
    given = expand_home(text)
    if given is None:
        raise InputFileError(f"{_shown(raw)} starts with a home directory that does not exist here.")
    if ".." in given.parts:
        raise InputFileError(f"{_shown(raw)} contains '..'; pass the file's absolute path without '..'.")
    if given.is_absolute():
        candidates = [given]
    else:
        candidates = [d / given for d in allowed]
        candidates = [c for c in candidates if os.path.lexists(c)] or candidates[:1]
    if not candidates:
        raise InputFileError(
            f"{_shown(raw)} is a relative path and no input directory is allowed. {_allowed_text(allowed)}"
        )
    try:
        resolved = candidates[0].resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops, over-long names
        raise InputFileError(f"{_shown(raw)} cannot be resolved: {exc}.") from None
    if not any(resolved.is_relative_to(d) for d in allowed):
        shown = _shown(raw) + (f" (which resolves to {_shown(resolved)})" if str(resolved) != text else "")
        raise InputFileError(f"{shown} is outside the allowed input directories. {_allowed_text(allowed)}")
    try:
        info = resolved.stat()
    except FileNotFoundError:
        where = "" if given.is_absolute() else " (relative paths are looked up in the allowed directories)"
        raise InputFileError(f"{_shown(resolved)} does not exist{where}. Check the path.") from None
    except OSError as exc:
        raise InputFileError(f"{_shown(resolved)} cannot be read: {exc.strerror or exc}.") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(f"{_shown(resolved)} is a directory; pass the path of a file inside it.")
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(
            f"{_shown(resolved)} is not a regular file (a device, pipe or socket); pass an image file."
        )
    if info.st_size > max_bytes:
        raise InputFileError(
            f"{_shown(resolved)} is {byte_size(info.st_size)}, over the {byte_size(max_bytes)} limit; "
            "pass a smaller file (or compress it first)."
        )
    try:
        with open(resolved, "rb"):
            pass
    except OSError as exc:
        raise InputFileError(
            f"{_shown(resolved)} cannot be read: {exc.strerror or exc}. Check its permissions."
        ) from None
    return resolved


async def file_digests(path: Path) -> tuple[int, str, str]:
    """(size, base64 MD5, hex SHA-256) of a file, as presigned uploads need them; read off the loop."""

    def digest() -> tuple[int, str, str]:
        md5 = hashlib.md5(usedforsecurity=False)
        sha256 = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                size += len(chunk)
                md5.update(chunk)
                sha256.update(chunk)
        return size, base64.b64encode(md5.digest()).decode("ascii"), sha256.hexdigest()

    try:
        return await anyio.to_thread.run_sync(digest)
    except OSError as exc:
        raise InputFileError(f"{path} cannot be read: {exc.strerror or exc}.") from exc


# ---------------------------------------------------------------------------------------------- saved files


class SavedFileReader:
    """Reads saved media files back, at most `parallel` at a time and each within `seconds`.

    One per server: the limiter keeps slow reads off the threads the store and the transport use.
    """

    def __init__(self, parallel: int = SAVED_READ_PARALLEL, seconds: float = SAVED_READ_SECONDS) -> None:
        self._parallel = parallel
        self._seconds = seconds
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created on first use, inside the event loop
            self._limiter = anyio.CapacityLimiter(self._parallel)
        return self._limiter

    async def read(self, path: str | Path, *, size: int, sha256: str) -> bytes:
        """The bytes of `path` if it is still the regular file recorded with `size` and `sha256`.

        Raises `SavedFileMissing` when it is gone, `SavedFileError` when it changed, cannot be read, or
        the read does not finish in time (a hung filesystem: the thread is abandoned, not waited for).
        """
        try:
            with anyio.fail_after(self._seconds):
                return await anyio.to_thread.run_sync(
                    _read_recorded_file,
                    Path(path),
                    size,
                    sha256,
                    limiter=self.limiter,
                    abandon_on_cancel=True,
                )
        except TimeoutError:
            raise SavedFileError(
                f"Reading the saved file {path} took longer than {self._seconds:g} s; the disk or network "
                "filesystem holding it may be hung. Read the file from its path instead, or retry later."
            ) from None

    async def stream(self, path: str | Path, *, size: int, sha256: str) -> AsyncGenerator[bytes, None]:
        """The bytes of `path` in chunks, never all in memory, under the same rules as `read`.

        The file is opened and judged (regular, not a link, the recorded size) before the first chunk,
        so those refusals come before anything is sent. The content is hashed as it goes and the last
        chunk is held back until the SHA-256 matches: a file edited in place is cut off short of its
        end (`SavedFileError`), never delivered whole. Each read has the reader's deadline.
        """
        fd = await self._in_thread(_open_recorded_file, Path(path), size)
        try:
            digest = hashlib.sha256()
            remaining = size + 1  # one byte more tells a file that grew meanwhile
            held = b""
            while remaining > 0:
                piece = await self._in_thread(_read_hashed, fd, min(remaining, READ_CHUNK), digest)
                if not piece:
                    break
                remaining -= len(piece)
                if held:
                    yield held
                held = piece
            if remaining != 1:
                raise _changed(Path(path), "its size changed while it was being read")
            if digest.hexdigest() != sha256:
                raise _changed(Path(path), "its content differs from what was saved (SHA-256 mismatch)")
            if held:
                yield held
        finally:
            os.close(fd)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            with anyio.fail_after(self._seconds):
                return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter, abandon_on_cancel=True)
        except TimeoutError:
            raise SavedFileError(
                f"Reading the saved file took longer than {self._seconds:g} s; the disk or network "
                "filesystem holding it may be hung."
            ) from None
        except OSError as exc:
            raise SavedFileError(f"The saved file cannot be read: {exc.strerror or exc}.") from None


def _read_hashed(fd: int, limit: int, digest: Any) -> bytes:
    piece = os.read(fd, limit)
    digest.update(piece)
    return piece


def _read_recorded_file(path: Path, size: int, sha256: str) -> bytes:
    """Blocking core of `SavedFileReader.read`."""
    fd = _open_recorded_file(path, size)
    try:
        data = _read_at_most(fd, size + 1)  # one byte more tells a file that grew meanwhile
    except OSError as exc:
        raise _unreadable(path, exc) from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise _changed(path, "its size changed while it was being read")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _changed(path, "its content differs from what was saved (SHA-256 mismatch)")
    return data


def _open_recorded_file(path: Path, size: int) -> int:
    """A descriptor of `path` if it is a regular file of the recorded `size`. Opened without following a
    symlink and without blocking (a FIFO put in the file's place would otherwise block the open until a
    writer appears); the opened file itself is judged, so a swap between the check and the open cannot
    slip through."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        raise _missing(path) from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if not stat.S_ISREG(before.st_mode):  # never even open a link, FIFO or device
        raise _changed(path, _kind(before.st_mode))
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_NOCTTY", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_BINARY", 0)
    )
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise _missing(path) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink (EMLINK on FreeBSD)
            raise _changed(path, "it is now a symbolic link") from None
        raise _unreadable(path, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _changed(path, _kind(info.st_mode))
        if info.st_size != size:
            raise _changed(path, f"it is {info.st_size} bytes, not the {size} recorded")
    except OSError as exc:
        os.close(fd)
        raise _unreadable(path, exc) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_at_most(fd: int, limit: int) -> bytes:
    pieces: list[bytes] = []
    remaining = limit
    while remaining > 0:
        piece = os.read(fd, min(remaining, READ_CHUNK))
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return b"".join(pieces)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "it is now a symbolic link"
    if stat.S_ISFIFO(mode):
        return "it is now a named pipe (FIFO)"
    if stat.S_ISDIR(mode):
        return "it is now a directory"
    return "it is no longer a regular file"


def _changed(path: Path, why: str) -> SavedFileError:
    return SavedFileError(
        f"The saved file {path} changed on disk since it was saved ({why}); it is not served. Check what "
        "modifies the output directory; generate the media again if you need it."
    )


def _missing(path: Path) -> SavedFileMissing:
    return SavedFileMissing(
        f"The saved file {path} no longer exists (deleted or moved since it was saved); generate the media "
        "again if you need it."
    )


def _unreadable(path: Path, exc: OSError) -> SavedFileError:
    return SavedFileError(
        f"The saved file {path} cannot be read: {exc.strerror or exc}. Check its permissions."
    )
