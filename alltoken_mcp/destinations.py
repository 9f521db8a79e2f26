"""Where a media job's files go: `save_to` checked against the allowed places, and the names used.

A caller may name a file or a directory (`save_to`). It is accepted only inside the client's roots (MCP
`roots/list`, where the client offers it), the allowed input directories (ALLTOKEN_INPUT_DIRS, default
the directory the host started the server in) or the output directory: symlinks are resolved first and
`..` is refused, so neither can lead out. An existing file is never replaced unless the caller says
`overwrite`. All of it is decided when the tool call is made — before anything is paid for — and stored
with the job as a `Delivery`, so a server that delivers the job later (after a restart, in another
process, without that caller's roots) writes exactly there.

Names: `save_to` ending in a path separator, naming an existing directory, or whose last part has no
extension is a directory, and the files get generated names in it. Otherwise it is a file name; its
extension follows the bytes (`fox.jpg` holding PNG is saved as `fox.png`; an unknown extension gets the
right one appended); `n` > 1 images are `fox-1.png`, `fox-2.png`, …; a video's last frame is
`clip-last-frame.png` beside `clip.mp4`.

When ALLTOKEN_OUTPUT_DIR is not set and the client declares roots, files without `save_to` go to
`<first root>/alltoken-media/` instead of the server's own output directory.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from alltoken_mcp import files
from alltoken_mcp.settings import Settings, expand_home
from alltoken_mcp.store import Delivery, JobKind, MediaRole

ROOT_MEDIA_DIR = "alltoken-media"
"""The folder inside the client's first root that holds new files when ALLTOKEN_OUTPUT_DIR is not set."""

_SUFFIXES: dict[JobKind, frozenset[str]] = {
    "image": frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"}),
    "video": frozenset({".mp4", ".mov"}),
}
_SHOWN = 120


class DestinationError(files.FileProblem):
    """`save_to` cannot be used (outside the allowed places, an existing file, unwritable). One line."""


def root_dirs(uris: Iterable[str]) -> tuple[Path, ...]:
    """The local directories among a client's root URIs (`file://` on this host), symlinks resolved."""
    dirs: list[Path] = []
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            continue
        path = Path(unquote(parts.path))
        if path.is_absolute() and "\x00" not in str(path):
            dirs.append(path.resolve())
    return tuple(dirs)


@dataclass(frozen=True)
class Places:
    """Where files may be written for one call, and where they go by default."""

    roots: tuple[Path, ...]
    input_dirs: tuple[Path, ...]
    server_output_dir: Path
    """The server's output directory (ALLTOKEN_OUTPUT_DIR or its default)."""
    output_dir: Path
    """This call's default output directory: the server's, or `<first root>/alltoken-media`."""

    @classmethod
    def for_call(cls, settings: Settings, roots: Sequence[Path]) -> Places:
        output_dir = settings.output_dir
        if roots and not settings.output_dir_configured:
            output_dir = roots[0] / ROOT_MEDIA_DIR
        return cls(tuple(roots), settings.input_dirs, settings.output_dir, output_dir)

    def allowed(self) -> list[Path]:
        return [*self.roots, *self.input_dirs, self.server_output_dir.resolve()]

    def describe(self) -> str:
        parts = []
        if self.roots:
            parts.append(f"the client's roots ({', '.join(map(str, self.roots))})")
        parts.append(f"the input directories ({', '.join(map(str, self.input_dirs))}; ALLTOKEN_INPUT_DIRS)")
        parts.append(f"the output directory ({self.server_output_dir})")
        return "inside " + ", ".join(parts[:-1]) + " or " + parts[-1]


def plan_delivery(
    save_to: str | None,
    *,
    kind: JobKind,
    count: int,
    extension: str,
    overwrite: bool,
    preview: bool,
    places: Places,
) -> tuple[Delivery | None, list[str]]:
    """The checked `Delivery` for a call (None: the server's defaults) and warnings. Blocking (it probes
    the disk): run it in a worker thread. Raises `DestinationError` with one line naming the allowed
    places."""
    if save_to is None:
        warnings: list[str] = []
        directory: Path | None = None
        if places.output_dir != places.server_output_dir:
            try:
                _probe(places.output_dir, "the client's first root")
                directory = places.output_dir.resolve()
            except DestinationError as exc:
                warnings.append(f"{exc} The files go to {places.server_output_dir} instead.")
        if directory is None and preview:
            return None, warnings
        return Delivery(directory=None if directory is None else str(directory), preview=preview), warnings
    directory, name = _target(save_to, kind=kind, extension=extension, places=places)
    if name is not None and not overwrite:
        for index in range(count):
            taken = directory / _numbered(name, index, count)
            if os.path.lexists(taken):
                raise DestinationError(
                    f"save_to: {_shown(taken)} already exists; pass overwrite=true to replace it, or "
                    "another name."
                )
    _probe(directory, "save_to")
    return Delivery(directory=str(directory), name=name, overwrite=overwrite, preview=preview), []


def result_path(
    delivery: Delivery | None,
    output_dir: Path,
    *,
    job_id: str,
    prompt: str,
    count: int,
    index: int,
    role: MediaRole,
    extension: str,
) -> tuple[Path, bool]:
    """Where result file `index` of a job goes, and whether it may replace an existing file there.
    `output_dir` is the delivering server's (used when the delivery names no directory)."""
    directory = Path(delivery.directory) if delivery and delivery.directory else output_dir
    if delivery is None or delivery.name is None:
        stem = f"{prompt} last frame" if role == "last_frame" else prompt
        return directory / files.media_filename(stem, job_id, index, extension), False
    if role == "last_frame":
        name = f"{Path(delivery.name).stem}-last-frame.{extension}"
    else:
        name = _numbered(delivery.name, index, count)
    return directory / name, delivery.overwrite


def delivery_dir(delivery: Delivery | None, output_dir: Path) -> Path:
    return Path(delivery.directory) if delivery and delivery.directory else output_dir


# ------------------------------------------------------------------------------------------ helpers


def _target(save_to: str, *, kind: JobKind, extension: str, places: Places) -> tuple[Path, str | None]:
    """(directory, file name or None) for `save_to`, symlinks resolved, inside an allowed place."""
    text = save_to.strip()
    if not text or "\x00" in text:
        raise DestinationError("save_to is empty or contains a NUL byte; pass a file or directory path.")
    if text.lower().startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise DestinationError(f"save_to: {_shown(text)} names another host; pass a local path.")
        text = unquote(parts.path)
    as_dir = text.endswith(("/", os.sep))
    given = expand_home(text)
    if given is None:
        raise DestinationError(
            f"save_to: {_shown(text)} starts with a home directory that does not exist here."
        )
    if ".." in given.parts:
        raise DestinationError(f"save_to: {_shown(text)} contains '..'; pass a path without '..'.")
    base = (places.roots or places.input_dirs or (places.output_dir,))[0]
    try:
        resolved = (given if given.is_absolute() else base / given).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops, over-long names
        raise DestinationError(f"save_to: {_shown(text)} cannot be resolved: {exc}.") from None
    if not any(resolved.is_relative_to(place) for place in places.allowed()):
        shown = _shown(text) + (f" (which resolves to {_shown(resolved)})" if str(resolved) != text else "")
        raise DestinationError(
            f"save_to: {shown} is outside the allowed places; use a path {places.describe()}."
        )
    if as_dir or resolved.is_dir() or not resolved.suffix:
        if resolved.exists() and not resolved.is_dir():
            raise DestinationError(f"save_to: {_shown(resolved)} is a file, not a directory.")
        return resolved, None
    name = resolved.name
    if resolved.suffix.lower() not in _SUFFIXES[kind]:
        name = f"{name}.{extension}"
    if len(name) > files.NAME_MAX:
        raise DestinationError(
            f"save_to: the file name is over {files.NAME_MAX} characters; pass a shorter one."
        )
    return resolved.parent, name


def _numbered(name: str, index: int, count: int) -> str:
    """`name` for image `index` of `count`: itself for one image, `stem-1.ext`, `stem-2.ext`… for more."""
    if count <= 1:
        return name
    path = Path(name)
    return f"{path.stem}-{index + 1}{path.suffix}"


def _probe(directory: Path, what: str) -> None:
    """Create `directory` if needed and prove a file can be created there (then remove it)."""
    probe = directory / f".alltoken-probe-{secrets.token_hex(4)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DestinationError(f"{what}: cannot write to {_shown(directory)} ({reason}).") from None


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
