"""What `register` and `unregister` do, and what they print.

Both first read the host's config and look up the entry named `--name`; a config that cannot be parsed
is refused in one line and never touched. `register` then finds the same entry (nothing to do), a
different one (replaced only with --force) or none. The change goes through the host's own command when
it has one on PATH (Claude Code: `claude mcp add-json` / `claude mcp remove`); otherwise it is spliced
into the file in place and written atomically with a backup. Codex's file is always edited here, because
`codex mcp add` can set neither the per-call timeout nor `env_vars`; when `codex` is on PATH, Codex must
then read the entry back (`codex mcp get --json`), or the old file is put back.

A CLI command, never the MCP server: it reports on stdout (the prints marked stdout-ok).

--dry-run prints the change (the host command, or a diff of the file) and writes nothing. The key is never
printed: where it would appear it is shown as <your AllToken key>.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alltoken_mcp.register import jsonedit, tomledit
from alltoken_mcp.register.configfile import (
    ConfigError,
    ConfigFile,
    file_mode,
    read_config,
    restore,
    save_backup,
    write_config,
)
from alltoken_mcp.register.hosts import HOSTS, Host, Location, Places, Scope, Server
from alltoken_mcp.register.launch import current_launch
from alltoken_mcp.settings import API_KEY_VAR

EXIT_REFUSED = 1
EXIT_USAGE = 2
CLI_TIMEOUT_SECONDS = 60
KEY_SHOWN = "<your AllToken key>"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SETTINGS = (
    "ALLTOKEN_BASE_URL",
    "ALLTOKEN_MCP_HOME",
    "ALLTOKEN_OUTPUT_DIR",
    "ALLTOKEN_INPUT_DIRS",
    "ALLTOKEN_MAX_WAIT_SECONDS",
    "ALLTOKEN_DEFAULT_CHAT_MODEL",
    "ALLTOKEN_DEFAULT_IMAGE_MODEL",
    "ALLTOKEN_DEFAULT_VIDEO_MODEL",
    "ALLTOKEN_MCP_TOKEN",
    "ALLTOKEN_MCP_TOKENS_FILE",
    "ALLTOKEN_MCP_INTROSPECTION_URL",
    "ALLTOKEN_DAILY_BUDGET_USD",
    "ALLTOKEN_CONFIRM",
    "ALLTOKEN_PREVIEWS",
    "ALLTOKEN_MCP_DATABASE_URL",
    "ALLTOKEN_MCP_MEDIA_SECRET",
    "ALLTOKEN_MCP_PUBLIC_URL",
)
"""Every setting the server reads besides the key (a test compares this with what `load_settings` reads)."""


class UsageError(Exception):
    """The command line asks for something impossible; one line says what to do instead."""


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "register":
            _register(args)
        else:
            _unregister(args)
    except UsageError as exc:
        print(f"alltoken-mcp {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"alltoken-mcp {args.command}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


@dataclass(frozen=True)
class Target:
    """One host's servers object in one config file, and the entry named `name` in it."""

    host: Host
    scope: Scope
    location: Location
    name: str
    config: ConfigFile
    existing: Any
    places: Places

    @property
    def where(self) -> str:
        return f"{self.host.title} ({self.scope} scope) in {self.location.path}"


def _target(args: argparse.Namespace) -> Target:
    host = HOSTS[args.target]
    scope: Scope = args.scope or host.scopes[0]
    if scope not in host.scopes:
        raise UsageError(f"{host.title} has no {scope} scope (it has: {', '.join(host.scopes)})")
    if not NAME_PATTERN.fullmatch(args.name):
        raise UsageError(f"--name {args.name!r}: use 1-64 letters, digits, '-' or '_'")
    places = Places.current()
    location = host.location(scope, places)
    config = read_config(location.path)
    existing = _lookup(location, config, args.name)
    return Target(host, scope, location, args.name, config, existing, places)


def _lookup(location: Location, config: ConfigFile, name: str) -> Any:
    text, where = config.text or "", str(location.path)
    if location.format == "toml":
        return tomledit.lookup(tomledit.load(text, where), name, where)
    return jsonedit.lookup(jsonedit.load(text, where), location.keys, name, where)


def _edited(target: Target, entry: dict[str, Any] | None) -> str:
    """The config's text with our entry set to `entry`, or removed when it is None."""
    text, where, name = target.config.text or "", str(target.location.path), target.name
    if target.location.format == "toml":
        if entry is None:
            return tomledit.without_table(text, name, where)
        return tomledit.with_table(text, name, entry, where)
    if entry is None:
        return jsonedit.without_member(text, target.location.keys, name, where)
    return jsonedit.with_member(text, target.location.keys, name, entry, where)


# --- register -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPlan:
    key: str | None
    from_env: bool
    note: str


def _register(args: argparse.Namespace) -> None:
    settings = _settings(args.env)
    target = _target(args)
    host = target.host
    key = _key_plan(args, target)
    launch = current_launch()
    args_for_server = (*launch.args, "--simulate") if args.register_simulate else launch.args
    server = Server(target.name, launch.command, args_for_server, settings, key.key, key.from_env)
    desired = host.entry(server)
    if launch.warning:
        _warn(launch.warning)

    if target.existing is not None:
        if host.normalised(target.existing) == host.normalised(desired):
            unchanged = f'"{target.name}" is already registered with {target.where} as asked'
            print(f"{unchanged}; nothing changed.")  # stdout-ok
            return
        if not args.force:
            raise ConfigError(
                f'{target.location.path} already has a different "{target.name}" server '
                f"({_difference(host, target.existing, desired)}); add --force to replace it, or choose "
                "another --name"
            )

    cli = shutil.which(host.cli) if host.cli else None
    if cli is not None:
        steps = []
        if target.existing is not None:
            steps.append([cli, "mcp", "remove", target.name, "--scope", target.scope])
        steps.append([cli, "mcp", "add-json", target.name, json.dumps(desired), "--scope", target.scope])
        how = _through_cli(target, steps, desired, key.key, dry_run=args.dry_run)
    else:
        how = _through_file(target, desired, key.key, dry_run=args.dry_run)
    if how is None:
        return

    print(f'Registered "{target.name}" with {target.where}.')  # stdout-ok
    print(f"  how:    {how}")  # stdout-ok
    print(f"  starts: {shlex.join([server.command, *server.args])}  ({launch.origin})")  # stdout-ok
    secret = ""
    if key.key is not None:
        mode = file_mode(target.location.path)
        readers = "only you can read it" if mode is not None and not mode & 0o077 else "see the warning below"
        secret = f"; that file now holds a secret (mode {mode:o}: {readers})" if mode is not None else ""
    print(f"  key:    {key.note}{secret}")  # stdout-ok
    print(f"  check:  {host.check}")  # stdout-ok
    if key.key is not None:
        _warn_about_secret(target)


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not ENV_NAME_PATTERN.fullmatch(name):
            raise UsageError(f"--env {name!r}: expected NAME=VALUE")  # the value may be a secret
        if name == API_KEY_VAR:
            raise UsageError("give the key with --api-key or --key-from-env, not --env")
        if name.startswith("ALLTOKEN_") and name not in SETTINGS:
            close = difflib.get_close_matches(name, SETTINGS, n=1)
            guess = f"did you mean {close[0]}? " if close else ""
            raise UsageError(
                f"--env {name}: alltoken-mcp has no such setting; {guess}(settings: {', '.join(SETTINGS)})"
            )
        if name in settings:
            raise UsageError(f"--env {name} is given twice")
        settings[name] = value
    return settings


def _key_plan(args: argparse.Namespace, target: Target) -> KeyPlan:
    host = target.host
    if args.register_simulate:
        return KeyPlan(None, False, "none needed: the server runs against its built-in simulator")
    if args.key_from_env:
        if not host.can_reference_key:
            raise UsageError(
                f"{host.title} expands no variables, so the key cannot be referenced; pass --api-key KEY or "
                f"export {API_KEY_VAR}"
            )
        return KeyPlan(None, True, _reference_note(host))
    if args.api_key is not None:
        _check_key(args.api_key, "--api-key")
        return KeyPlan(args.api_key, False, f"from --api-key, written into {target.location.path}")
    if target.scope == "project" and host.can_reference_key:
        shared = " (a project's config is usually committed; --api-key writes the key itself)"
        return KeyPlan(None, True, _reference_note(host) + shared)
    value = target.places.env.get(API_KEY_VAR)
    if value is not None:
        _check_key(value, f"{API_KEY_VAR} in this shell")
        where = target.location.path
        return KeyPlan(value, False, f"from {API_KEY_VAR} in this shell, written into {where}")
    reference = ""
    if host.can_reference_key:
        reference = f", --key-from-env to have {host.title} pass it from its environment"
    raise UsageError(
        f"no AllToken key to register: pass --api-key KEY or export {API_KEY_VAR}{reference}, "
        "or use --simulate to try it without a key"
    )


def _reference_note(host: Host) -> str:
    spelling = host.key_reference or f'env_vars = ["{API_KEY_VAR}"]'
    return (
        f"not written: the config holds {spelling}, which {host.title} fills in from its own environment; "
        f"export {API_KEY_VAR} before starting it"
    )


def _check_key(value: str, origin: str) -> None:
    if not value.strip():
        problem = "it is empty"
    elif value != value.strip() or value[0] in "\"'" or value[-1] in "\"'":
        problem = "it has surrounding spaces or quotes"
    elif "${" in value or value.startswith("$"):
        problem = "it is an unexpanded variable reference; use --key-from-env for that"
    elif any(char.isspace() for char in value):
        problem = "it contains whitespace"
    elif value.lower().startswith("paste-"):
        problem = "it is the placeholder from the example config"
    else:
        return
    raise UsageError(f"{origin} does not look like an AllToken key ({problem})")


# --- unregister ---------------------------------------------------------------------------------------


def _unregister(args: argparse.Namespace) -> None:
    target = _target(args)
    if target.existing is None:
        print(f'No "{target.name}" server in {target.location.path}; nothing changed.')  # stdout-ok
        return
    if not args.force and not _runs_alltoken(target.existing):
        raise ConfigError(
            f'the "{target.name}" server in {target.location.path} does not run alltoken-mcp '
            f"({_summary(target.existing)}); add --force to remove it anyway"
        )
    cli = shutil.which(target.host.cli) if target.host.cli else None
    if cli is not None:
        steps = [[cli, "mcp", "remove", target.name, "--scope", target.scope]]
        how = _through_cli(target, steps, None, None, dry_run=args.dry_run)
    else:
        how = _through_file(target, None, None, dry_run=args.dry_run)
    if how is not None:
        print(f'Removed "{target.name}" from {target.where}; nothing else changed.')  # stdout-ok
        print(f"  how:   {how}")  # stdout-ok
        print(f"  check: {target.host.check}")  # stdout-ok


def _difference(host: Host, existing: Any, desired: dict[str, Any]) -> str:
    """What differs between two entries, by field name only: values may be secrets."""
    old, new = host.normalised(existing), host.normalised(desired)
    if not isinstance(old, dict):
        return "not a server entry"
    fields = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    return f"{_summary(existing)}; differs in {', '.join(fields)}"


def _runs_alltoken(entry: Any) -> bool:
    return isinstance(entry, dict) and "alltoken" in _summary(entry).lower()


def _summary(entry: Any) -> str:
    if isinstance(entry, dict):
        command, args = entry.get("command"), entry.get("args")
        if isinstance(command, str):
            words = [command, *(str(a) for a in args)] if isinstance(args, list) else [command]
            return shlex.join(words)
        if isinstance(entry.get("url"), str):
            return f"url {entry['url']}"
    return json.dumps(entry, ensure_ascii=False)[:100]


# --- the two ways of changing a config ----------------------------------------------------------------


def _through_cli(
    target: Target, steps: list[list[str]], desired: dict[str, Any] | None, key: str | None, *, dry_run: bool
) -> str | None:
    """Run the host's own commands, then read the file to confirm they did what was asked."""
    shown = " && ".join(_masked(_shown_command(step), key) for step in steps)
    if dry_run:
        print(f"Dry run: nothing changed. Would run: {shown}")  # stdout-ok
        return None
    backup = save_backup(target.config)
    for step in steps:
        _run_host_command(step, target.places.cwd, key)
    after = _lookup(target.location, read_config(target.location.path), target.name)
    if target.host.normalised(after) != target.host.normalised(desired):
        raise ConfigError(
            f"`{shown}` reported success, but {target.location.path} does not show that change; check with "
            f"{target.host.check}"
        )
    return f"ran `{shown}`" + _backup_note(backup)


def _through_file(
    target: Target, desired: dict[str, Any] | None, key: str | None, *, dry_run: bool
) -> str | None:
    new_text = _edited(target, desired)
    path = target.location.path
    if dry_run:
        old_text = target.config.text or ""
        new_file = " (a new file)" if target.config.text is None else ""
        print(f"Dry run: nothing written. The change to {path}{new_file}:")  # stdout-ok
        diff = difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            str(path),
            f"{path} (after)",
        )
        sys.stdout.write(_masked("".join(line if line.endswith("\n") else line + "\n" for line in diff), key))
        return None
    backup = write_config(target.config, new_text)
    confirmed = _codex_reads_it_back(target, desired, key, backup) if target.location.format == "toml" else ""
    return f"{'wrote' if target.config.text is not None else 'created'} {path}{confirmed}" + _backup_note(
        backup
    )


def _codex_reads_it_back(
    target: Target, desired: dict[str, Any] | None, key: str | None, backup: Path | None
) -> str:
    """Codex's own parser is the judge: if it does not see what was written, put the old file back."""
    codex = shutil.which("codex")
    if codex is None:
        return ""
    step = [codex, "mcp", "get", target.name, "--json"] if desired else [codex, "mcp", "list", "--json"]
    done = _run(step, target.places.cwd, key)
    seen = _parsed_json(done.stdout) if done.returncode == 0 else None
    if desired is not None:
        transport = seen.get("transport") if isinstance(seen, dict) else None
        ok = isinstance(transport, dict) and transport.get("command") == desired["command"]
    else:
        ok = isinstance(seen, list) and all(
            isinstance(s, dict) and s.get("name") != target.name for s in seen
        )
    if ok:
        return f" (and `{_shown_command(step)}` reads it back)"
    restore(target.config)
    if backup is not None:
        backup.unlink(missing_ok=True)
    detail = _last_line(done) or "its answer did not show the change"
    shown = _shown_command(step)
    raise ConfigError(
        _masked(
            f"Codex does not read the new {target.location.path} as intended (`{shown}`: {detail}); "
            "the file is back as it was",
            key,
        )
    )


def _run_host_command(step: list[str], cwd: Path, key: str | None) -> None:
    done = _run(step, cwd, key)
    if done.returncode != 0:
        detail = _last_line(done) or f"exit status {done.returncode}"
        raise ConfigError(_masked(f"`{_shown_command(step)}` failed: {detail}", key))


def _run(step: list[str], cwd: Path, key: str | None) -> subprocess.CompletedProcess[str]:
    """Run a host's command; its failures to start or finish are one line, with the key masked."""
    try:
        return subprocess.run(
            step,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        shown = _masked(_shown_command(step), key)
        raise ConfigError(f"`{shown}` did not finish within {CLI_TIMEOUT_SECONDS} s") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot run `{_masked(_shown_command(step), key)}`: {exc.strerror or exc}"
        ) from None


def _parsed_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    for stream in (done.stderr, done.stdout):
        lines = [line.strip() for line in stream.splitlines() if line.strip()]
        # Codex prints WARNING lines about its environment before any real error.
        lines = [line for line in lines if not line.startswith("WARNING:")] or lines
        if lines:
            return lines[-1]
    return ""


def _shown_command(step: list[str]) -> str:
    return shlex.join([Path(step[0]).name, *step[1:]])


def _masked(text: str, key: str | None) -> str:
    if not key:
        return text
    for spelling in {key, json.dumps(key)[1:-1], json.dumps(json.dumps(key)[1:-1])[1:-1]}:
        text = text.replace(spelling, KEY_SHOWN)
    return text


def _backup_note(backup: Path | None) -> str:
    return f"; the old file is saved as {backup}" if backup is not None else ""


def _warn_about_secret(target: Target) -> None:
    path = target.location.path
    mode = file_mode(path)
    if mode is not None and mode & 0o077:
        _warn(f"{path} holds your AllToken key and other users can read it (mode {mode:o}): chmod 600 {path}")
    if target.scope == "project":
        _warn(
            f"{path} is usually committed to version control, and it now holds your key; "
            "--key-from-env writes a reference instead"
        )


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
