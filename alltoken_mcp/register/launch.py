"""How this copy of alltoken-mcp is running, so that a host can start the very same install.

The package need not be on any index: whatever install runs `register` is what the host gets. A virtual
environment, `pipx install` or `uv tool install` keeps a stable `alltoken-mcp` script beside its Python,
so that absolute path is registered. `uvx` runs from uv's cache, which uv may clean or replace at any
time, so the host is given `uvx` itself with the same source (`uvx --from <source> alltoken-mcp`),
read from the install's PEP 610 `direct_url.json`; only when that cannot be done is the cached path
registered, with a warning.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

DISTRIBUTION = "alltoken-mcp"
SCRIPT = "alltoken-mcp"
_UV_CACHE_BUCKET = re.compile(r"(archive|environments|builds)-v\d+")

Which = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Launch:
    command: str
    args: tuple[str, ...]
    origin: str
    """One phrase for the output: what kind of install the host will start."""
    warning: str | None = None

    def shown(self) -> str:
        return shlex.join([self.command, *self.args])


@dataclass(frozen=True)
class Source:
    """Where the running package came from: a package index, a URL or path (`uvx --from` takes it), or
    nobody knows (no installed metadata, or metadata that cannot be read)."""

    kind: Literal["index", "url", "unknown"]
    spec: str | None = None


def current_launch() -> Launch:
    return detect_launch(
        executable=sys.executable,
        prefix=sys.prefix,
        source=install_source(),
        env=os.environ,
        which=shutil.which,
    )


def detect_launch(
    *, executable: str, prefix: str, source: Source, env: Mapping[str, str], which: Which
) -> Launch:
    python = Path(os.path.abspath(executable))  # not resolved: a venv's python is a symlink out of it
    script = _script_beside(python)
    fixed = (
        Launch(str(script), (), f"the alltoken-mcp script of {python.parent.parent}")
        if script is not None
        else Launch(str(python), ("-m", "alltoken_mcp"), f"the Python at {python}")
    )
    prefix_path = Path(os.path.abspath(prefix))
    if _in_uv_cache(prefix_path, env):
        uvx = _uvx(env, which)
        if uvx is not None and source.kind != "unknown":
            args = ("--from", source.spec, SCRIPT) if source.kind == "url" and source.spec else (SCRIPT,)
            return Launch(uvx, args, "uvx, which fetches and caches the package when the host starts it")
        why = "uvx is not on PATH" if uvx is None else "where this package came from is not recorded"
        return _cached(fixed, f"it runs from uv's cache ({prefix_path}), and {why}", "uv tool install")
    if "pipx" in prefix_path.parts and ".cache" in prefix_path.parts:
        return _cached(fixed, f"it runs from pipx's cache ({prefix_path}) for `pipx run`", "pipx install")
    return fixed


def _cached(launch: Launch, why: str, install: str) -> Launch:
    warning = (
        f"registered {launch.shown()}, but {why}: that copy disappears when the cache is cleaned. "
        f"For a lasting setup, `{install}` the package and run register again."
    )
    return Launch(launch.command, launch.args, launch.origin, warning)


def _script_beside(python: Path) -> Path | None:
    names = (f"{SCRIPT}.exe", SCRIPT) if os.name == "nt" else (SCRIPT,)
    for name in names:
        candidate = python.parent / name
        if candidate.is_file():
            return candidate
    return None


def _in_uv_cache(prefix: Path, env: Mapping[str, str]) -> bool:
    cache = env.get("UV_CACHE_DIR")
    if cache and prefix.is_relative_to(Path(os.path.abspath(cache))):
        return True
    return "uv" in prefix.parts and any(_UV_CACHE_BUCKET.fullmatch(part) for part in prefix.parts)


def _uvx(env: Mapping[str, str], which: Which) -> str | None:
    uv = env.get("UV")  # uv tells the commands it runs where it is
    if uv:
        sibling = Path(uv).with_name("uvx.exe" if uv.lower().endswith(".exe") else "uvx")
        if sibling.is_file():
            return str(sibling)
    found = which("uvx")
    return os.path.abspath(found) if found else None


def install_source() -> Source:
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return Source("unknown")
    return source_from_direct_url(distribution.read_text("direct_url.json"))


def source_from_direct_url(raw: str | None) -> Source:
    """PEP 610: no direct_url.json means installed from an index; otherwise the URL, VCS or directory."""
    if raw is None:
        return Source("index")
    try:
        data = json.loads(raw)
        url = data["url"]
    except (ValueError, KeyError, TypeError):
        return Source("unknown")
    if not isinstance(url, str) or not url:
        return Source("unknown")
    vcs = data.get("vcs_info")
    if isinstance(vcs, dict):
        revision = vcs.get("requested_revision")
        spec = f"{vcs.get('vcs', 'git')}+{url}"
        return Source("url", f"{spec}@{revision}" if revision else spec)
    if url.startswith("file:") and "dir_info" in data:
        return Source("url", url2pathname(urlsplit(url).path))
    return Source("url", url)
