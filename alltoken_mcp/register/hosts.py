"""Where each host keeps its MCP servers, how it spells an entry, and how a person checks the result.

| host           | scopes (default first)  | file                                                   |
|----------------|-------------------------|--------------------------------------------------------|
| claude-code    | user, project, local    | ~/.claude.json; ./.mcp.json; ~/.claude.json per project |
| codex          | user                    | ~/.codex/config.toml ([mcp_servers.NAME])               |
| cursor         | user, project           | ~/.cursor/mcp.json; ./.cursor/mcp.json                  |
| claude-desktop | user                    | claude_desktop_config.json in the OS's app config dir   |
| vscode         | user, project           | Code/User/mcp.json; ./.vscode/mcp.json ("servers")      |

Claude Code honours CLAUDE_CONFIG_DIR and Codex CODEX_HOME, as the hosts themselves do.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alltoken_mcp.settings import API_KEY_VAR, DEFAULT_MAX_WAIT_SECONDS

Scope = Literal["user", "project", "local"]
MAX_WAIT_VAR = "ALLTOKEN_MAX_WAIT_SECONDS"
CODEX_STARTUP_TIMEOUT_SEC = 20
"""Codex's default is 10 s; uvx downloads the package on the first start."""
CODEX_TOOL_TIMEOUT_MARGIN_SEC = 75
"""Codex's per-call limit must cover the longest wait plus the download that may follow it."""


@dataclass(frozen=True)
class Places:
    """The parts of the machine that decide where configs live."""

    home: Path
    cwd: Path
    env: Mapping[str, str]
    platform: str

    @classmethod
    def current(cls) -> Places:
        return cls(Path.home(), Path.cwd(), os.environ, sys.platform)

    def app_config_dir(self) -> Path:
        """Where desktop apps keep their settings on this OS."""
        if self.platform == "darwin":
            return self.home / "Library" / "Application Support"
        if self.platform == "win32":
            appdata = self.env.get("APPDATA")
            return Path(appdata) if appdata else self.home / "AppData" / "Roaming"
        xdg = self.env.get("XDG_CONFIG_HOME")
        return Path(xdg) if xdg and os.path.isabs(xdg) else self.home / ".config"

    def project_root(self) -> Path:
        """The repository the working directory is in (Claude Code keys local servers by it), else itself."""
        for directory in (self.cwd, *self.cwd.parents):
            if (directory / ".git").exists():
                return directory
        return self.cwd


@dataclass(frozen=True)
class Location:
    path: Path
    keys: tuple[str, ...]
    """Where the servers object sits in a JSON document; Codex's TOML always uses `mcp_servers`."""
    format: Literal["json", "toml"] = "json"


@dataclass(frozen=True)
class Server:
    """What to register, whatever the host."""

    name: str
    command: str
    args: tuple[str, ...]
    settings: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    """The key to write into the config, if any."""
    key_from_env: bool = False
    """Reference ALLTOKEN_API_KEY in the host's own environment instead of writing it."""


@dataclass(frozen=True)
class Host:
    id: str
    title: str
    scopes: tuple[Scope, ...]
    key_reference: str | None
    """How the host spells "ALLTOKEN_API_KEY from my environment" in an env value (None: it cannot)."""
    check: str
    """Where a person sees the host's servers."""
    typed: bool = True
    """Whether entries carry `"type": "stdio"`."""
    cli: str | None = None
    """The host's own command for adding servers, used when it is on PATH."""

    @property
    def can_reference_key(self) -> bool:
        return self.key_reference is not None

    def location(self, scope: Scope, places: Places) -> Location:
        raise NotImplementedError

    def entry(self, server: Server) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "stdio"} if self.typed else {}
        entry["command"] = server.command
        entry["args"] = list(server.args)
        if server.key_from_env:
            assert self.key_reference is not None
        env = self.env(server)
        if env:
            entry["env"] = env
        return entry

    def env(self, server: Server) -> dict[str, str]:
        """The entry's `env`: the settings, with the key first — written, or referenced where this host
        spells a reference (one that forwards variables by name does so outside `env`)."""
        if server.key is not None:
            return {API_KEY_VAR: server.key, **server.settings}
        if server.key_from_env and self.key_reference is not None:
            return {API_KEY_VAR: self.key_reference, **server.settings}
        return dict(server.settings)

    def normalised(self, entry: Any) -> Any:
        """An entry with the host's defaults filled in, so that equal meanings compare equal."""
        if not isinstance(entry, dict):
            return entry
        defaults: dict[str, Any] = {"args": [], "env": {}}
        if self.typed:
            defaults["type"] = "stdio"
        return {**defaults, **entry}


class ClaudeCode(Host):
    def location(self, scope: Scope, places: Places) -> Location:
        if scope == "project":
            return Location(places.cwd / ".mcp.json", ("mcpServers",))
        config_dir = places.env.get("CLAUDE_CONFIG_DIR")
        path = (Path(config_dir) if config_dir else places.home) / ".claude.json"
        if scope == "local":
            return Location(path, ("projects", str(places.project_root()), "mcpServers"))
        return Location(path, ("mcpServers",))


class Codex(Host):
    @property
    def can_reference_key(self) -> bool:
        return True  # by name, in `env_vars`

    def location(self, scope: Scope, places: Places) -> Location:
        codex_home = places.env.get("CODEX_HOME")
        directory = Path(codex_home) if codex_home else places.home / ".codex"
        return Location(directory / "config.toml", (), "toml")

    def entry(self, server: Server) -> dict[str, Any]:
        entry: dict[str, Any] = {"command": server.command, "args": list(server.args)}
        if server.key_from_env:
            entry["env_vars"] = [API_KEY_VAR]
        entry["startup_timeout_sec"] = CODEX_STARTUP_TIMEOUT_SEC
        entry["tool_timeout_sec"] = codex_tool_timeout(server.settings.get(MAX_WAIT_VAR))
        env = self.env(server)
        if env:
            entry["env"] = env
        return entry

    def normalised(self, entry: Any) -> Any:
        if not isinstance(entry, dict):
            return entry
        return {"args": [], "env": {}, "env_vars": [], **entry}


def codex_tool_timeout(max_wait: str | None) -> int:
    try:
        wait = float(max_wait) if max_wait is not None else DEFAULT_MAX_WAIT_SECONDS
    except ValueError:
        wait = DEFAULT_MAX_WAIT_SECONDS  # the server refuses it at start-up with its own message
    if not math.isfinite(wait) or wait < 0:
        wait = DEFAULT_MAX_WAIT_SECONDS
    return math.ceil(wait) + CODEX_TOOL_TIMEOUT_MARGIN_SEC


class Cursor(Host):
    def location(self, scope: Scope, places: Places) -> Location:
        base = places.cwd if scope == "project" else places.home
        return Location(base / ".cursor" / "mcp.json", ("mcpServers",))


class ClaudeDesktop(Host):
    def location(self, scope: Scope, places: Places) -> Location:
        return Location(places.app_config_dir() / "Claude" / "claude_desktop_config.json", ("mcpServers",))


class VSCode(Host):
    def location(self, scope: Scope, places: Places) -> Location:
        if scope == "project":
            return Location(places.cwd / ".vscode" / "mcp.json", ("servers",))
        return Location(places.app_config_dir() / "Code" / "User" / "mcp.json", ("servers",))


HOSTS: dict[str, Host] = {
    host.id: host
    for host in (
        ClaudeCode(
            "claude-code",
            "Claude Code",
            ("user", "project", "local"),
            key_reference="${" + API_KEY_VAR + "}",
            check="`claude mcp list` (or /mcp inside a session)",
            cli="claude",
        ),
        Codex(
            "codex",
            "Codex",
            ("user",),
            key_reference=None,  # Codex forwards variables by name: env_vars
            check="`codex mcp list`; new Codex sessions start the server",
        ),
        Cursor(
            "cursor",
            "Cursor",
            ("user", "project"),
            key_reference="${env:" + API_KEY_VAR + "}",
            check="Cursor Settings > MCP (restart Cursor if it is open)",
        ),
        ClaudeDesktop(
            "claude-desktop",
            "Claude Desktop",
            ("user",),
            key_reference=None,  # it expands no variables
            check="quit Claude Desktop completely and start it again (it reads the file only at start)",
            typed=False,
        ),
        VSCode(
            "vscode",
            "VS Code",
            ("user", "project"),
            key_reference="${env:" + API_KEY_VAR + "}",
            check="`MCP: List Servers` in the Command Palette",
        ),
    )
}
HOST_IDS = tuple(HOSTS)
