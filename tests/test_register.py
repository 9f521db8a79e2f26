"""`alltoken-mcp register HOST` / `unregister HOST`, run as a person runs them: the real command in a
subprocess, with a temporary HOME, project directory and PATH. Each host's written config is then read
the way that host reads it and the server is started exactly as it says (command, arguments, environment
after the host's own `${…}` expansion) through `initialize` and `tools/list`.

Host CLIs are replaced by small recording stand-ins (`claude`, `codex` on the temporary PATH) that do what
the real ones do to the file; the real CLIs are tried too when they are installed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from alltoken_mcp.register.command import SETTINGS
from alltoken_mcp.settings import API_KEY_VAR, DEFAULT_MAX_WAIT_SECONDS
from alltoken_mcp.simulator import SIM_API_KEY
from tests.test_manifests import (
    DEAD_BASE_URL,
    EXPECTED_TOOLS,
    USER_SHELL,
    expand_claude_code,
    expand_cursor,
    settings_variables,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SCRIPT = str(Path(sys.executable).parent / "alltoken-mcp")
KEY = SIM_API_KEY


@dataclass
class Machine:
    """A temporary HOME, a project directory (a git repository) and the only PATH the command sees."""

    root: Path
    home: Path = field(init=False)
    project: Path = field(init=False)
    bin: Path = field(init=False)
    state: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home, self.project, self.bin, self.state = (
            self.root / name for name in ("home", "project", "bin", "state")
        )
        for directory in (self.home, self.project / ".git", self.bin, self.state):
            directory.mkdir(parents=True)

    def env(self, key: str | None = KEY, **extra: str) -> dict[str, str]:
        env = {"HOME": str(self.home), "PATH": str(self.bin), "APPDATA": str(self.home / "AppData"), **extra}
        if key is not None:
            env[API_KEY_VAR] = key
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def run(self, *args: str, key: str | None = KEY, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SCRIPT, *args],
            env=self.env(key, **extra),
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def register(
        self, host: str, *args: str, key: str | None = KEY, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Register with settings that keep the spawned server off the network and out of the real home."""
        test_settings = [
            "--env",
            f"ALLTOKEN_BASE_URL={DEAD_BASE_URL}",
            "--env",
            f"ALLTOKEN_MCP_HOME={self.state}",
        ]
        done = self.run("register", host, *test_settings, *args, key=key, **extra)
        assert KEY not in done.stdout + done.stderr, "the key must never be printed"
        return done

    def backups(self, config: Path) -> list[Path]:
        return sorted(config.parent.glob(config.name + ".bak-*"))

    def add_executable(self, name: str, source: str) -> Path:
        path = self.bin / name
        path.write_text(f"#!{sys.executable}\n{source}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def desktop_config(machine: Machine) -> Path:
    if sys.platform == "darwin":
        return machine.home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    if sys.platform == "win32":
        return machine.home / "AppData" / "Claude" / "claude_desktop_config.json"
    return machine.home / ".config" / "Claude" / "claude_desktop_config.json"


async def tools_listed(
    command: str, args: list[str], env: Mapping[str, str], cwd: Path, mode: str
) -> set[str]:
    """Start the server as a host does (its minimal default environment plus the config's `env`)."""
    env = dict(env)
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    params = StdioServerParameters(command=command, args=args, env=env, cwd=str(cwd))
    with tempfile.TemporaryFile("w+") as errlog, anyio.fail_after(30):
        try:
            async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:  # type: ignore[arg-type]
                return {tool.name for tool in (await client.list_tools()).tools}
        except BaseException:
            errlog.seek(0)
            sys.stderr.write(f"server stderr:\n{errlog.read()}\n")
            raise


async def json_entry_starts(
    entry: dict[str, Any], machine: Machine, expand: Any = None, mode: str = "legacy"
) -> None:
    env = {k: expand(v, USER_SHELL) if expand else v for k, v in entry.get("env", {}).items()}
    assert await tools_listed(entry["command"], entry["args"], env, machine.project, mode) >= EXPECTED_TOOLS


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --- each host: the written config starts the server --------------------------------------------------


async def test_claude_code_user_registration_keeps_the_rest_of_claude_json_and_starts_the_server(
    machine: Machine,
) -> None:
    config = machine.home / ".claude.json"
    original = {
        "numStartups": 12,
        "projects": {"/some/repo": {"allowedTools": [], "mcpServers": {}}},
        "mcpServers": {"other": {"type": "stdio", "command": "npx", "args": ["-y", "other"], "env": {}}},
        "userID": "abc",
    }
    config.write_text(json.dumps(original, indent=2))
    config.chmod(0o600)
    done = machine.register("claude-code")
    assert done.returncode == 0, done.stderr
    document = json.loads(config.read_text())
    entry = document["mcpServers"].pop("alltoken")
    assert document == original
    assert entry["type"] == "stdio"
    assert entry["command"] == SCRIPT  # the install that ran `register`, by absolute path
    assert entry["env"][API_KEY_VAR] == KEY
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    [backup] = machine.backups(config)
    assert json.loads(backup.read_text()) == original
    assert str(config) in done.stdout
    assert "claude mcp list" in done.stdout
    assert "holds a secret" in done.stdout
    # Claude Code 2.1.x speaks the stateless 2026 era.
    await json_entry_starts(entry, machine, expand_claude_code, mode="auto")


async def test_claude_code_project_registration_references_the_key_and_starts_once_claude_code_expands_it(
    machine: Machine,
) -> None:
    done = machine.register("claude-code", "--scope", "project")
    assert done.returncode == 0, done.stderr
    config = machine.project / ".mcp.json"
    text = config.read_text()
    assert KEY not in text  # a committed file gets the reference, even though the key was in the shell
    entry = json.loads(text)["mcpServers"]["alltoken"]
    assert entry["env"][API_KEY_VAR] == "${ALLTOKEN_API_KEY}"
    assert "export ALLTOKEN_API_KEY" in done.stdout
    await json_entry_starts(entry, machine, expand_claude_code, mode="auto")


def test_claude_code_local_registration_goes_under_the_repository_in_claude_json(machine: Machine) -> None:
    subdirectory = machine.project / "src"
    subdirectory.mkdir()
    done = subprocess.run(
        [SCRIPT, "register", "claude-code", "--scope", "local"],
        env=machine.env(),
        cwd=subdirectory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((machine.home / ".claude.json").read_text())
    assert list(document) == ["projects"]
    assert document["projects"][str(machine.project)]["mcpServers"]["alltoken"]["command"] == SCRIPT


CODEX_ORIGINAL = '''# my Codex settings
model = "o3"   # the usual

notes = """
[mcp_servers.alltoken]
command = "this is text in a string, not a table"
"""

[mcp_servers.other]
command = "npx"
args = ["-y", "other"]
# a note about other

[profiles.fast]
model = "gpt-5"
'''


async def test_codex_registration_appends_its_table_and_leaves_every_other_byte(machine: Machine) -> None:
    config = machine.home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(CODEX_ORIGINAL)
    done = machine.register("codex")
    assert done.returncode == 0, done.stderr
    text = config.read_text()
    assert text.startswith(CODEX_ORIGINAL)
    document = tomllib.loads(text)
    entry = document["mcp_servers"].pop("alltoken")
    assert document == tomllib.loads(CODEX_ORIGINAL)
    assert entry["command"] == SCRIPT
    assert entry["env"][API_KEY_VAR] == KEY
    assert all(isinstance(value, str) for value in entry["env"].values()), "Codex env values must be strings"
    assert entry["startup_timeout_sec"] > 10  # Codex's default
    assert entry["tool_timeout_sec"] >= DEFAULT_MAX_WAIT_SECONDS + 60
    assert "codex mcp list" in done.stdout
    # The Codex CLI starts MCP servers with the 2025-06-18 handshake.
    assert (
        await tools_listed(entry["command"], entry["args"], entry["env"], machine.project, "legacy")
        >= EXPECTED_TOOLS
    )


async def test_codex_key_from_env_forwards_the_variable_by_name_and_never_writes_the_key(
    machine: Machine,
) -> None:
    done = machine.register("codex", "--key-from-env", "--env", "ALLTOKEN_MAX_WAIT_SECONDS=100")
    assert done.returncode == 0, done.stderr
    config = machine.home / ".codex" / "config.toml"
    text = config.read_text()
    assert KEY not in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # a file we create is private either way
    entry = tomllib.loads(text)["mcp_servers"]["alltoken"]
    assert entry["env_vars"] == [API_KEY_VAR]
    assert API_KEY_VAR not in entry["env"]
    assert entry["tool_timeout_sec"] >= 100 + 60  # follows the wait it was given
    # Codex copies each variable named in env_vars from its own environment.
    env = {**entry["env"], **{name: USER_SHELL[name] for name in entry["env_vars"]}}
    assert (
        await tools_listed(entry["command"], entry["args"], env, machine.project, "legacy") >= EXPECTED_TOOLS
    )


async def test_cursor_project_registration_uses_cursors_env_syntax_and_starts_the_server(
    machine: Machine,
) -> None:
    done = machine.register("cursor", "--scope", "project")
    assert done.returncode == 0, done.stderr
    entry = json.loads((machine.project / ".cursor" / "mcp.json").read_text())["mcpServers"]["alltoken"]
    assert entry["env"][API_KEY_VAR] == "${env:ALLTOKEN_API_KEY}"
    await json_entry_starts(entry, machine, expand_cursor)
    user = machine.register("cursor")
    assert user.returncode == 0, user.stderr
    user_entry = json.loads((machine.home / ".cursor" / "mcp.json").read_text())["mcpServers"]["alltoken"]
    assert user_entry["env"][API_KEY_VAR] == KEY


async def test_claude_desktop_registration_lands_in_the_platform_config_and_starts_the_server(
    machine: Machine,
) -> None:
    refused = machine.register("claude-desktop", "--key-from-env")
    assert refused.returncode == 2
    assert "expands no variables" in one_line(refused.stderr)
    assert not desktop_config(machine).exists()
    done = machine.register("claude-desktop")
    assert done.returncode == 0, done.stderr
    entry = json.loads(desktop_config(machine).read_text())["mcpServers"]["alltoken"]
    assert "type" not in entry
    assert "quit Claude Desktop" in done.stdout
    await json_entry_starts(entry, machine)


async def test_vscode_project_registration_writes_servers_and_starts_the_server(machine: Machine) -> None:
    done = machine.register("vscode", "--scope", "project")
    assert done.returncode == 0, done.stderr
    document = json.loads((machine.project / ".vscode" / "mcp.json").read_text())
    assert list(document) == ["servers"]
    entry = document["servers"]["alltoken"]
    assert entry["env"][API_KEY_VAR] == "${env:ALLTOKEN_API_KEY}"
    await json_entry_starts(entry, machine, expand_cursor)  # VS Code spells it like Cursor


async def test_simulate_registers_a_server_that_needs_no_key(machine: Machine) -> None:
    done = machine.register("cursor", "--simulate", key=None)
    assert done.returncode == 0, done.stderr
    entry = json.loads((machine.home / ".cursor" / "mcp.json").read_text())["mcpServers"]["alltoken"]
    assert entry["args"] == ["--simulate"]
    assert API_KEY_VAR not in entry["env"]
    await json_entry_starts(entry, machine)


# --- idempotence, conflicts, unregister ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "relative"),
    [("claude-code", ".claude.json"), ("codex", ".codex/config.toml"), ("cursor", ".cursor/mcp.json")],
)
def test_a_second_identical_run_changes_nothing(machine: Machine, host: str, relative: str) -> None:
    assert machine.register(host).returncode == 0
    config = machine.home / relative
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    again = machine.register(host)
    assert again.returncode == 0, again.stderr
    assert "already registered" in again.stdout
    assert "nothing changed" in again.stdout
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before
    assert machine.backups(config) == []


HAND_WRITTEN = """{
    "mcpServers": {
        "other": { "command": "npx", "args": ["-y", "other"] },
        "alltoken": { "command": "uvx", "args": ["alltoken-mcp"], "env": { "ALLTOKEN_API_KEY": "old" } },
        "last": { "command": "x" }
    },
    "theme": "dark"
}
"""


def test_a_different_entry_under_the_name_is_replaced_only_with_force(machine: Machine) -> None:
    config = machine.home / ".cursor" / "mcp.json"
    config.parent.mkdir()
    config.write_text(HAND_WRITTEN)
    refused = machine.register("cursor")
    assert refused.returncode == 1
    line = one_line(refused.stderr)
    assert "--force" in line
    assert "uvx alltoken-mcp" in line
    assert "differs in args, command, env" in line
    assert config.read_text() == HAND_WRITTEN
    assert machine.backups(config) == []
    replaced = machine.register("cursor", "--force")
    assert replaced.returncode == 0, replaced.stderr
    text = config.read_text()
    # Only the value of "alltoken" changed: the lines before and after it are as they were.
    assert text.startswith(HAND_WRITTEN[: HAND_WRITTEN.index('"alltoken": {') + len('"alltoken": ')])
    assert text.endswith(HAND_WRITTEN[HAND_WRITTEN.index(',\n        "last"') :])
    assert json.loads(text)["mcpServers"]["alltoken"]["command"] == SCRIPT
    [backup] = machine.backups(config)
    assert backup.read_text() == HAND_WRITTEN


def test_unregister_removes_only_our_entry_and_gives_back_the_original_bytes(machine: Machine) -> None:
    config = machine.home / ".cursor" / "mcp.json"
    config.parent.mkdir()
    original = HAND_WRITTEN.replace("alltoken", "another")
    config.write_text(original)
    assert machine.register("cursor").returncode == 0
    removed = machine.run("unregister", "cursor")
    assert removed.returncode == 0, removed.stderr
    assert config.read_text() == original
    assert "Removed" in removed.stdout
    again = machine.run("unregister", "cursor")
    assert again.returncode == 0
    assert "nothing changed" in again.stdout
    assert config.read_text() == original


def test_unregister_takes_codex_back_to_the_original_bytes(machine: Machine) -> None:
    config = machine.home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(CODEX_ORIGINAL)
    assert machine.register("codex", "--key-from-env").returncode == 0
    removed = machine.run("unregister", "codex")
    assert removed.returncode == 0, removed.stderr
    assert config.read_text() == CODEX_ORIGINAL


def test_unregister_refuses_an_entry_that_does_not_run_alltoken_mcp_unless_forced(machine: Machine) -> None:
    config = machine.project / ".mcp.json"
    original = '{"mcpServers": {"alltoken": {"command": "node", "args": ["someone-else.js"]}}}'
    config.write_text(original)
    refused = machine.run("unregister", "claude-code", "--scope", "project")
    assert refused.returncode == 1
    assert "does not run alltoken-mcp" in one_line(refused.stderr)
    assert config.read_text() == original
    forced = machine.run("unregister", "claude-code", "--scope", "project", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(config.read_text()) == {"mcpServers": {}}


# --- dry run, refusals --------------------------------------------------------------------------------


def test_dry_run_shows_the_change_and_writes_nothing(machine: Machine) -> None:
    new = machine.register("cursor", "--dry-run")
    assert new.returncode == 0, new.stderr
    assert not (machine.home / ".cursor").exists()
    assert "(a new file)" in new.stdout
    assert f'+      "command": "{SCRIPT}",' in new.stdout
    assert '"ALLTOKEN_API_KEY": "<your AllToken key>"' in new.stdout
    config = machine.home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(CODEX_ORIGINAL)
    changed = machine.register("codex", "--dry-run")
    assert changed.returncode == 0, changed.stderr
    assert "+[mcp_servers.alltoken]" in changed.stdout
    assert config.read_text() == CODEX_ORIGINAL
    assert machine.backups(config) == []


@pytest.mark.parametrize(
    ("relative", "content", "expected"),
    [
        (".claude.json", b'{"mcpServers": {"x": 1,}}', "is not valid JSON (line 1, column 24"),
        (".claude.json", b'{"mcpServers": {}, "mcpServers": {}}', 'has the key "mcpServers" twice'),
        (".claude.json", b'{"mcpServers": ["not", "an object"]}', '"mcpServers" is not a JSON object'),
        (".claude.json", b'{"a": "\xff"}', "is not UTF-8 text"),
        (".codex/config.toml", b'[mcp_servers.other\ncommand = "x"\n', "is not valid TOML"),
        (
            ".codex/config.toml",
            b'[mcp_servers]\nalltoken = { command = "x" }\n',
            "inline table or with dotted keys",
        ),
    ],
)
def test_a_config_that_cannot_be_edited_safely_is_refused_in_one_line_and_left_alone(
    machine: Machine, relative: str, content: bytes, expected: str
) -> None:
    config = machine.home / relative
    config.parent.mkdir(exist_ok=True)
    config.write_bytes(content)
    host = "codex" if relative.endswith(".toml") else "claude-code"
    for command in (["register", host, "--force"], ["unregister", host, "--force"]):
        done = machine.run(*command)
        assert done.returncode == 1, done.stdout
        line = one_line(done.stderr)
        assert str(config) in line
        assert expected in line
        assert done.stdout == "" or "nothing changed" not in done.stdout
    assert config.read_bytes() == content
    assert machine.backups(config) == []


def test_without_a_key_register_says_how_to_give_one_and_writes_nothing(machine: Machine) -> None:
    done = machine.register("claude-code", key=None)
    assert done.returncode == 2
    line = one_line(done.stderr)
    for way in ("--api-key", "export ALLTOKEN_API_KEY", "--key-from-env", "--simulate"):
        assert way in line
    assert not (machine.home / ".claude.json").exists()
    placeholder = machine.register("claude-code", key="${ALLTOKEN_API_KEY}")
    assert placeholder.returncode == 2
    assert "unexpanded variable reference" in one_line(placeholder.stderr)


def test_a_misspelt_setting_is_refused_with_the_closest_name(machine: Machine) -> None:
    done = machine.register("codex", "--env", "ALLTOKEN_MAX_WAIT_SECOND=30")
    assert done.returncode == 2
    assert "did you mean ALLTOKEN_MAX_WAIT_SECONDS?" in one_line(done.stderr)
    assert not (machine.home / ".codex").exists()


def test_the_settings_register_accepts_are_exactly_those_the_server_reads() -> None:
    assert set(SETTINGS) == settings_variables() - {API_KEY_VAR}


def test_a_symlinked_config_stays_a_symlink_and_its_target_is_updated(machine: Machine) -> None:
    dotfiles = machine.root / "dotfiles" / "cursor-mcp.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text('{\n  "mcpServers": {}\n}\n')
    link = machine.home / ".cursor" / "mcp.json"
    link.parent.mkdir()
    link.symlink_to(dotfiles)
    assert machine.register("cursor").returncode == 0
    assert link.is_symlink()
    assert "alltoken" in json.loads(dotfiles.read_text())["mcpServers"]


# --- the hosts' own CLIs ------------------------------------------------------------------------------

FAKE_CLAUDE = """
import json, os, sys
from pathlib import Path
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_FAIL"):
    sys.exit("MCP server alltoken already exists in user config")
_, verb, name, *rest = sys.argv[1:]
scope = rest[rest.index("--scope") + 1]
path = Path(".mcp.json") if scope == "project" else Path.home() / ".claude.json"
document = json.loads(path.read_text()) if path.exists() else {}
servers = document.setdefault("mcpServers", {})
if verb == "add-json":
    servers[name] = json.loads(rest[0])
else:
    del servers[name]
path.write_text(json.dumps(document, indent=2))
"""

FAKE_CODEX = """
import json, os, sys
from pathlib import Path
try:
    import tomllib
except ImportError:  # Python 3.10: the test extra installs tomli there
    import tomli as tomllib
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_FAIL"):
    sys.exit("Error: failed to load configuration")
servers = tomllib.loads((Path.home() / ".codex" / "config.toml").read_text()).get("mcp_servers", {})
if sys.argv[2] == "get":
    entry = servers[sys.argv[3]]
    print(json.dumps({"name": sys.argv[3], "transport": {"type": "stdio", "command": entry["command"]}}))
else:
    print(json.dumps([{"name": name} for name in servers]))
"""


def recorded(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def test_claude_on_path_is_used_to_add_and_remove_and_what_it_stored_starts_the_server(
    machine: Machine,
) -> None:
    machine.add_executable("claude", FAKE_CLAUDE)
    log = machine.root / "claude.log"
    done = machine.register("claude-code", FAKE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    [argv] = recorded(log)
    assert argv[:3] == ["mcp", "add-json", "alltoken"]
    assert argv[4:] == ["--scope", "user"]
    assert "ran `claude mcp add-json alltoken" in done.stdout
    assert "<your AllToken key>" in done.stdout
    entry = json.loads((machine.home / ".claude.json").read_text())["mcpServers"]["alltoken"]
    assert entry == json.loads(argv[3])
    await json_entry_starts(entry, machine, expand_claude_code, mode="auto")

    replaced = machine.register(
        "claude-code", "--force", "--env", "ALLTOKEN_MAX_WAIT_SECONDS=30", FAKE_LOG=str(log)
    )
    assert replaced.returncode == 0, replaced.stderr
    assert [argv[:2] + argv[2:3] for argv in recorded(log)[1:]] == [
        ["mcp", "remove", "alltoken"],
        ["mcp", "add-json", "alltoken"],
    ]
    removed = machine.run("unregister", "claude-code", FAKE_LOG=str(log))
    assert removed.returncode == 0, removed.stderr
    assert recorded(log)[-1] == ["mcp", "remove", "alltoken", "--scope", "user"]


def test_a_failing_claude_cli_is_reported_in_one_line(machine: Machine) -> None:
    machine.add_executable("claude", FAKE_CLAUDE)
    log = machine.root / "claude.log"
    done = machine.register("claude-code", FAKE_LOG=str(log), FAKE_FAIL="1")
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "`claude mcp add-json alltoken" in line
    assert line.endswith("failed: MCP server alltoken already exists in user config")
    assert KEY not in line


def test_dry_run_does_not_run_the_host_cli(machine: Machine) -> None:
    machine.add_executable("claude", FAKE_CLAUDE)
    log = machine.root / "claude.log"
    done = machine.register("claude-code", "--dry-run", FAKE_LOG=str(log))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Dry run: nothing changed. Would run: claude mcp add-json alltoken")
    assert not log.exists()


def test_codex_on_path_must_read_the_entry_back_or_the_old_file_returns(machine: Machine) -> None:
    machine.add_executable("codex", FAKE_CODEX)
    log = machine.root / "codex.log"
    config = machine.home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(CODEX_ORIGINAL)
    rejected = machine.register("codex", FAKE_LOG=str(log), FAKE_FAIL="1")
    assert rejected.returncode == 1
    line = one_line(rejected.stderr)
    assert "Codex does not read the new" in line
    assert "failed to load configuration" in line
    assert "the file is back as it was" in line
    assert config.read_text() == CODEX_ORIGINAL
    assert machine.backups(config) == []
    accepted = machine.register("codex", FAKE_LOG=str(log))
    assert accepted.returncode == 0, accepted.stderr
    assert "`codex mcp get alltoken --json` reads it back" in accepted.stdout
    assert recorded(log)[-1] == ["mcp", "get", "alltoken", "--json"]
    assert machine.run("unregister", "codex", FAKE_LOG=str(log)).returncode == 0
    assert recorded(log)[-1] == ["mcp", "list", "--json"]
    assert config.read_text() == CODEX_ORIGINAL


REAL_CLAUDE = shutil.which("claude")


def link_with_node(machine: Machine, name: str, real: str) -> None:
    """Put a real npm-installed CLI on the test PATH, with the node its launcher runs on."""
    (machine.bin / name).symlink_to(real)
    node = shutil.which("node")
    if node is not None:
        (machine.bin / "node").symlink_to(node)


REAL_CODEX = shutil.which("codex")


@pytest.mark.host_cli
async def test_the_real_claude_cli_stores_an_entry_that_starts_the_server(machine: Machine) -> None:
    assert REAL_CLAUDE is not None, "Claude Code is not on PATH (.ci/run installs it with npm)"
    link_with_node(machine, "claude", REAL_CLAUDE)
    done = machine.register("claude-code", "--scope", "project")
    assert done.returncode == 0, done.stderr
    assert "ran `claude mcp add-json alltoken" in done.stdout
    entry = json.loads((machine.project / ".mcp.json").read_text())["mcpServers"]["alltoken"]
    await json_entry_starts(entry, machine, expand_claude_code, mode="auto")
    again = machine.register("claude-code", "--scope", "project")
    assert "nothing changed" in again.stdout
    assert machine.run("unregister", "claude-code", "--scope", "project").returncode == 0
    assert json.loads((machine.project / ".mcp.json").read_text())["mcpServers"] == {}


@pytest.mark.host_cli
async def test_the_real_codex_reads_back_an_entry_that_starts_the_server(machine: Machine) -> None:
    assert REAL_CODEX is not None, "Codex is not on PATH (.ci/run installs it with npm)"
    link_with_node(machine, "codex", REAL_CODEX)
    config = machine.home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(CODEX_ORIGINAL)
    done = machine.register("codex", "--key-from-env")
    assert done.returncode == 0, done.stderr
    assert "reads it back" in done.stdout
    # What Codex itself says it will start:
    with anyio.fail_after(60):
        shown = await anyio.run_process([REAL_CODEX, "mcp", "get", "alltoken", "--json"], env=machine.env())
    transport = json.loads(shown.stdout)["transport"]
    env = {**(transport["env"] or {}), **{name: USER_SHELL[name] for name in transport["env_vars"]}}
    tools = await tools_listed(transport["command"], transport["args"], env, machine.project, "legacy")
    assert tools >= EXPECTED_TOOLS
    assert machine.run("unregister", "codex").returncode == 0
    assert config.read_text() == CODEX_ORIGINAL
