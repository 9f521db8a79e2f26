"""Every registration file in `manifests/` is parsed the way its host parses it, names only settings the
server reads, and starts the real server: the command, arguments and environment each manifest gives
(after the host's own `${…}` expansion) are spawned over stdio and must complete `initialize` and
`tools/list`. `uvx alltoken-mcp` is replaced by this environment's `alltoken-mcp` script — the same
console script `uvx` would install — and the test points the server at a dead URL and a temporary home.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from alltoken_mcp import __version__
from alltoken_mcp.settings import DEFAULT_MAX_WAIT_SECONDS, load_settings
from alltoken_mcp.simulator import SIM_API_KEY
from tests.rawstdio import ENTRY_POINT

if sys.version_info >= (3, 11):
    import tomllib
else:  # the `test` extra installs tomli, the same parser, on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
DEAD_BASE_URL = "http://127.0.0.1:9/v1"
PACKAGE = "alltoken-mcp"

EXPECTED_TOOLS = {
    "alltoken_chat",
    "alltoken_image",
    "alltoken_video",
    "job_status",
    "job_cancel",
    "list_jobs",
    "list_models",
    "route_health",
}

HTTP_ONLY_SETTINGS = {
    "ALLTOKEN_MCP_TOKEN",
    "ALLTOKEN_MCP_TOKENS_FILE",
    "ALLTOKEN_MCP_INTROSPECTION_URL",
    "ALLTOKEN_MCP_MEDIA_SECRET",
    "ALLTOKEN_MCP_PUBLIC_URL",
    "ALLTOKEN_MCP_DATABASE_URL",
}
"""Settings of a shared server over `serve --http` (the bearer token clients must send, the media URL
secret and public base URL, the team's PostgreSQL store). Every manifest here starts one user's server over
stdio, where they mean nothing (or, for the store, are a team deployment's business), so they are not
offered there."""

USER_SHELL = {"ALLTOKEN_API_KEY": SIM_API_KEY}
"""The variables the user exported before starting a host that expands `${…}` references."""


@dataclass(frozen=True)
class Launch:
    """How a host would start the server: the command line and the environment it adds."""

    command: str
    args: list[str]
    env: dict[str, str]


def settings_variables() -> set[str]:
    """Every environment variable `load_settings` looks at, recorded from a real call."""
    seen: set[str] = set()

    class RecordingEnv(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            seen.add(key)
            return super().get(key, default)

    with tempfile.TemporaryDirectory() as home:
        load_settings(env=RecordingEnv(ALLTOKEN_MCP_HOME=home))
    return {name for name in seen if name.startswith("ALLTOKEN_")}


def expand_claude_code(value: str, shell: Mapping[str, str]) -> str:
    """Claude Code expands `${VAR}` and `${VAR:-default}` in .mcp.json."""

    def one(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        return shell.get(name, default)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?)\}", one, value)


def expand_cursor(value: str, shell: Mapping[str, str]) -> str:
    """Cursor expands `${env:NAME}` in mcp.json."""
    return re.sub(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: shell.get(m.group(1), ""), value)


def fill_in_placeholder(value: str) -> str:
    """Hosts that expand nothing ship a placeholder the user replaces with the key."""
    assert value == "paste-your-alltoken-key-here", value
    return SIM_API_KEY


def launch_for_test(launch: Launch, home: Path) -> StdioServerParameters:
    """Swap `uvx alltoken-mcp` for the installed script; keep every other argument and variable."""
    assert launch.command == "uvx"
    assert launch.args[0] == PACKAGE
    env = {**launch.env, "ALLTOKEN_BASE_URL": DEAD_BASE_URL, "ALLTOKEN_MCP_HOME": str(home)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return StdioServerParameters(command=ENTRY_POINT, args=launch.args[1:], env=env, cwd=str(home))


async def listed_tools(launch: Launch, home: Path, mode: str) -> set[str]:
    with tempfile.TemporaryFile("w+") as errlog, anyio.fail_after(30):
        try:
            transport = stdio_client(launch_for_test(launch, home), errlog=errlog)
            async with Client(transport, mode=mode) as client:  # type: ignore[arg-type]
                return {tool.name for tool in (await client.list_tools()).tools}
        except BaseException:
            errlog.seek(0)
            sys.stderr.write(f"server stderr:\n{errlog.read()}\n")
            raise


def json_server_entry(name: str) -> dict[str, Any]:
    document = json.loads((MANIFESTS / name).read_text())
    assert list(document["mcpServers"]) == ["alltoken"]
    entry: dict[str, Any] = document["mcpServers"]["alltoken"]
    return entry


def check_env_names(env: Mapping[str, str]) -> None:
    assert "ALLTOKEN_API_KEY" in env
    assert set(env) <= settings_variables(), set(env) - settings_variables()


async def test_claude_code_mcp_json_starts_the_server_with_the_expanded_key(tmp_path: Path) -> None:
    entry = json_server_entry("claude-code.mcp.json")
    assert entry["type"] == "stdio"
    check_env_names(entry["env"])
    # A committed .mcp.json must reference the key, never contain it.
    assert entry["env"]["ALLTOKEN_API_KEY"] == "${ALLTOKEN_API_KEY}"
    env = {k: expand_claude_code(v, USER_SHELL) for k, v in entry["env"].items()}
    assert env["ALLTOKEN_API_KEY"] == SIM_API_KEY
    # Claude Code 2.1.x speaks the stateless 2026 era.
    tools = await listed_tools(Launch(entry["command"], entry["args"], env), tmp_path, mode="auto")
    assert tools >= EXPECTED_TOOLS


async def test_cursor_mcp_json_starts_the_server_with_the_expanded_key(tmp_path: Path) -> None:
    entry = json_server_entry("cursor.json")
    check_env_names(entry["env"])
    assert entry["env"]["ALLTOKEN_API_KEY"] == "${env:ALLTOKEN_API_KEY}"
    env = {k: expand_cursor(v, USER_SHELL) for k, v in entry["env"].items()}
    assert env["ALLTOKEN_API_KEY"] == SIM_API_KEY
    tools = await listed_tools(Launch(entry["command"], entry["args"], env), tmp_path, mode="legacy")
    assert tools >= EXPECTED_TOOLS


async def test_claude_desktop_config_starts_the_server_once_the_key_is_pasted(tmp_path: Path) -> None:
    entry = json_server_entry("claude-desktop.json")
    check_env_names(entry["env"])
    env = {k: fill_in_placeholder(v) if k == "ALLTOKEN_API_KEY" else v for k, v in entry["env"].items()}
    tools = await listed_tools(Launch(entry["command"], entry["args"], env), tmp_path, mode="legacy")
    assert tools >= EXPECTED_TOOLS


def codex_entry() -> dict[str, Any]:
    document = tomllib.loads((MANIFESTS / "codex-config.toml").read_text())
    assert list(document["mcp_servers"]) == ["alltoken"]
    entry: dict[str, Any] = document["mcp_servers"]["alltoken"]
    return entry


def test_codex_timeouts_leave_room_for_the_longest_tool_call() -> None:
    entry = codex_entry()
    max_wait = float(entry["env"].get("ALLTOKEN_MAX_WAIT_SECONDS", DEFAULT_MAX_WAIT_SECONDS))
    # Codex's defaults are 10 s to start and 60 s per call; both are raised on purpose.
    assert entry["startup_timeout_sec"] > 10
    # The longest call waits max_wait, then may still download the file it was waiting for.
    assert entry["tool_timeout_sec"] >= max_wait + 60
    assert isinstance(entry["startup_timeout_sec"], int)
    assert isinstance(entry["tool_timeout_sec"], int)


async def test_codex_config_block_starts_the_server(tmp_path: Path) -> None:
    entry = codex_entry()
    check_env_names(entry["env"])
    assert all(isinstance(v, str) for v in entry["env"].values()), "Codex env values must be strings"
    env = {k: fill_in_placeholder(v) if k == "ALLTOKEN_API_KEY" else v for k, v in entry["env"].items()}
    # The Codex CLI starts MCP servers with the 2025-06-18 handshake.
    tools = await listed_tools(Launch(entry["command"], entry["args"], env), tmp_path, mode="legacy")
    assert tools >= EXPECTED_TOOLS


@pytest.fixture
def fake_claude(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in `claude` executable on PATH that records the argv it was given (NUL-separated)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "claude-argv"
    script = bin_dir / "claude"
    script.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > '{record}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir, record


def run_add_script(fake_claude: tuple[Path, Path], *args: str, key: str | None) -> list[str]:
    bin_dir, record = fake_claude
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    if key is not None:
        env["ALLTOKEN_API_KEY"] = key
    subprocess.run(["sh", str(MANIFESTS / "claude-code-add.sh"), *args], env=env, check=True, timeout=10)
    return record.read_bytes().decode().split("\0")[:-1]


def parse_claude_mcp_add(argv: list[str]) -> tuple[str, str, Launch]:
    """`claude mcp add NAME [--scope S] [-e K=V]... -- COMMAND ARGS...` → (name, scope, launch)."""
    assert argv[:2] == ["mcp", "add"], argv
    name, options = argv[2], argv[3 : argv.index("--")]
    command, *args = argv[argv.index("--") + 1 :]
    scope, env = "local", {}
    while options:
        flag, value, *options = options
        if flag in ("-s", "--scope"):
            scope = value
        elif flag in ("-e", "--env"):
            key, _, val = value.partition("=")
            env[key] = val
        else:
            raise AssertionError(f"unexpected option {flag}")
    return name, scope, Launch(command, args, env)


async def test_claude_mcp_add_for_the_user_stores_the_key_and_starts_the_server(
    tmp_path: Path, fake_claude: tuple[Path, Path]
) -> None:
    argv = run_add_script(fake_claude, key=SIM_API_KEY)
    # The name must precede -e: Claude Code's -e is variadic and would take the name as a variable.
    assert argv.index("alltoken") < argv.index("-e")
    name, scope, launch = parse_claude_mcp_add(argv)
    assert (name, scope) == ("alltoken", "user")
    check_env_names(launch.env)
    assert launch.env["ALLTOKEN_API_KEY"] == SIM_API_KEY
    assert await listed_tools(launch, tmp_path, mode="auto") >= EXPECTED_TOOLS


def test_claude_mcp_add_for_a_project_stores_a_reference_not_the_key(fake_claude: tuple[Path, Path]) -> None:
    argv = run_add_script(fake_claude, "project", key=SIM_API_KEY)
    _, scope, launch = parse_claude_mcp_add(argv)
    assert scope == "project"
    assert launch.env == {"ALLTOKEN_API_KEY": "${ALLTOKEN_API_KEY}"}
    assert SIM_API_KEY not in "".join(argv)


def test_claude_mcp_add_without_a_key_refuses_and_registers_nothing(fake_claude: tuple[Path, Path]) -> None:
    bin_dir, record = fake_claude
    result = subprocess.run(
        ["sh", str(MANIFESTS / "claude-code-add.sh")],
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode != 0
    assert "ALLTOKEN_API_KEY" in result.stderr
    assert not record.exists()


def registry_package() -> tuple[dict[str, Any], dict[str, Any]]:
    document = json.loads((MANIFESTS / "server.json").read_text())
    [package] = document["packages"]
    return document, package


def test_registry_server_json_describes_this_release_on_pypi() -> None:
    document, package = registry_package()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert document["$schema"].startswith("https://static.modelcontextprotocol.io/schemas/")
    # Registry rules: one slash, reverse-DNS namespace, a description of at most 100 characters.
    assert re.fullmatch(r"io\.github\.[A-Za-z0-9-]+/[A-Za-z0-9._-]+", document["name"])
    assert 0 < len(document["description"]) <= 100
    assert document["version"] == package["version"] == __version__
    assert package["registryType"] == "pypi"
    assert package["identifier"] == pyproject["name"] == PACKAGE
    # `uvx alltoken-mcp` runs the console script named like the package.
    assert PACKAGE in pyproject["scripts"]
    assert package["transport"] == {"type": "stdio"}


def test_registry_server_json_declares_the_key_secret_and_only_real_settings() -> None:
    _, package = registry_package()
    variables = {v["name"]: v for v in package["environmentVariables"]}
    assert set(variables) <= settings_variables()
    key = variables["ALLTOKEN_API_KEY"]
    assert key["isSecret"] is True
    assert key["isRequired"] is True
    assert [name for name, v in variables.items() if v.get("isSecret")] == ["ALLTOKEN_API_KEY"]
    assert all(v["description"] for v in variables.values())


def test_registry_server_json_declares_every_setting_the_stdio_server_reads() -> None:
    _, package = registry_package()
    declared = [v["name"] for v in package["environmentVariables"]]
    assert len(declared) == len(set(declared)), declared
    # A registry client builds its configuration form from this list: a setting missing here cannot be set.
    assert set(declared) == settings_variables() - HTTP_ONLY_SETTINGS


def test_registry_server_json_defaults_are_the_servers_own(tmp_path: Path) -> None:
    _, package = registry_package()
    defaults = load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path)})
    actual = {
        "ALLTOKEN_BASE_URL": defaults.base_url,
        "ALLTOKEN_MAX_WAIT_SECONDS": f"{defaults.max_wait_seconds:g}",
        "ALLTOKEN_DEFAULT_CHAT_MODEL": defaults.default_chat_model,
        "ALLTOKEN_DEFAULT_IMAGE_MODEL": defaults.default_image_model,
        "ALLTOKEN_DEFAULT_VIDEO_MODEL": defaults.default_video_model,
        "ALLTOKEN_CONFIRM": defaults.confirm,
        "ALLTOKEN_PREVIEWS": "on" if defaults.previews else "off",
    }
    declared = {v["name"]: v["default"] for v in package["environmentVariables"] if "default" in v}
    assert declared == actual


def test_registry_server_json_names_the_repository_the_package_metadata_names() -> None:
    document, _ = registry_package()
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert document["repository"]["url"] == urls["Repository"]
    assert document["repository"]["source"] == "github"
    # The registry name is io.github.<owner>/...: the owner must be the repository's.
    owner = document["name"].removeprefix("io.github.").split("/")[0]
    assert urls["Repository"].startswith(f"https://github.com/{owner}/")


async def test_registry_server_json_package_starts_the_server(tmp_path: Path) -> None:
    _, package = registry_package()
    env = {v["name"]: SIM_API_KEY for v in package["environmentVariables"] if v["isRequired"]}
    launch = Launch(package["runtimeHint"], [package["identifier"]], env)
    assert await listed_tools(launch, tmp_path, mode="legacy") >= EXPECTED_TOOLS
