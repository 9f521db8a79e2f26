"""`alltoken-mcp doctor`: checks the installation, the key, connectivity and the local state, one line each.

This is a terminal command, not the MCP server, so it writes its report to stdout. Every check runs even
when an earlier one fails (a bad state directory says nothing about the key), except that the key is only
tried once AllToken has been reached. The key itself is never printed, not even in part. The database is
opened read-only: the doctor must not migrate, repair or lock the file a running server is using.
"""

from __future__ import annotations

import importlib.metadata
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import anyio

from alltoken_mcp import __version__
from alltoken_mcp.settings import (
    API_KEY_VAR,
    DATABASE_URL_VAR,
    Settings,
    SettingsError,
    Upstream,
    default_home,
    expand_home,
    key_fingerprint,
    load_settings,
    missing_v1_hint,
)

MIN_PYTHON = (3, 10)
# The lower bounds pyproject.toml declares; an older copy on the path is the usual cause of odd failures.
REQUIRED_PACKAGES = {"mcp": (2, 3), "httpx2": (2, 10), "pydantic": (2, 7)}
NETWORK_TIMEOUT_SECONDS = 10.0
DEMO = "alltoken-mcp demo"
DATABASE_NAME = "state.sqlite3"
"""Only used when the settings cannot be loaded; otherwise `Settings.database_path` decides."""


@dataclass(frozen=True)
class Check:
    ok: bool
    label: str
    detail: str
    fix: str | None = None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_python() -> Check:
    version = ".".join(str(v) for v in sys.version_info[:3])
    if sys.version_info[:2] < MIN_PYTHON:
        return Check(
            False, "Python", f"{version} at {sys.executable}", "alltoken-mcp needs Python 3.10 or newer"
        )
    return Check(True, "Python", f"{version} at {sys.executable}")


def check_packages() -> Check:
    found = [f"alltoken-mcp {__version__}"]
    problems: list[str] = []
    for name, minimum in REQUIRED_PACKAGES.items():
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        found.append(f"{name} {version}")
        if _version_tuple(version) < minimum:
            problems.append(f"{name} {version} is older than {'.'.join(map(str, minimum))}")
        elif name == "mcp" and _version_tuple(version)[0] >= 3:
            problems.append(f"mcp {version} is a newer major version than alltoken-mcp supports (2.x)")
    if problems:
        return Check(
            False,
            "packages",
            "; ".join(problems),
            "reinstall: uvx --refresh alltoken-mcp (or pip install -U)",
        )
    return Check(True, "packages", ", ".join(found))


def check_key(settings: Settings) -> Check:
    problem = settings.key_problem
    if problem is None:
        # Nothing of the key is shown, not even its last characters; the fingerprint is a salted hash
        # (what job records use to tell keys apart).
        assert settings.api_key is not None
        return Check(
            True, "API key", f"{API_KEY_VAR} is set (fingerprint {key_fingerprint(settings.api_key)})"
        )
    return Check(
        False, "API key", problem.found, f"{problem.fix}; to try everything without a key first: {DEMO}"
    )


async def check_upstream(settings: Settings) -> list[Check]:
    """Reachability through the public health endpoint, then the key against /v1/models."""
    from alltoken_mcp.client import AllTokenClient, RetryPolicy
    from alltoken_mcp.errors import (
        AllTokenError,
        APIStatusError,
        AuthenticationError,
        NotFoundError,
        TransportError,
    )

    checks: list[Check] = []
    # One attempt: a diagnosis should be quick and say what happened, not retry it away.
    client = AllTokenClient(
        base_url=settings.base_url,
        api_key=settings.api_key,
        retry=RetryPolicy(max_attempts=1),
        timeout=NETWORK_TIMEOUT_SECONDS,
    )
    async with client:
        try:
            summary = await client.health_summary()
        except TransportError as exc:
            return [
                Check(
                    False,
                    "AllToken reachable",
                    f"no answer from {settings.origin}: {exc}",
                    "check ALLTOKEN_BASE_URL, your network and any HTTPS proxy settings",
                )
            ]
        except APIStatusError as exc:
            # An HTTP answer, even an error, proves the host is reachable.
            checks.append(Check(True, "AllToken reachable", f"{settings.origin} answered ({exc})"))
        except AllTokenError as exc:
            checks.append(Check(True, "AllToken reachable", f"{settings.origin} answered oddly: {exc}"))
        else:
            routes = (
                f"{summary.healthy_routes}/{summary.total_routes} routes healthy"
                if summary.total_routes is not None
                else "health summary received"
            )
            checks.append(Check(True, "AllToken reachable", f"{settings.origin} ({routes})"))

        if not settings.api_key:
            checks.append(
                Check(False, "key accepted", "not tried: no usable key", f"fix {API_KEY_VAR} first (above)")
            )
            return checks
        try:
            models = await client.list_models()
        except AuthenticationError as exc:
            checks.append(
                Check(
                    False,
                    "key accepted",
                    f"key rejected: {exc}",
                    f"copy the key again from https://alltoken.ai → Settings → API Keys into {API_KEY_VAR}",
                )
            )
        except AllTokenError as exc:
            # A 404 under a base URL without /v1 carries the hint (the client adds it): make it the fix.
            hint = missing_v1_hint(settings.base_url) if isinstance(exc, NotFoundError) else None
            checks.append(
                Check(
                    False,
                    "key accepted",
                    f"GET {settings.base_url}/models failed: {exc}",
                    hint or "try again later",
                )
            )
        else:
            checks.append(Check(True, "key accepted", f"{len(models)} models available"))
    return checks


def _probe_writable(path: Path) -> str | None:
    """Create the directory if needed (the server would) and write a file in it; the error, or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-probe-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_directory(label: str, variable: str, path: Path) -> Check:
    error = _probe_writable(path)
    if error is None:
        return Check(True, label, f"{path} is writable")
    return Check(
        False, label, f"{path} is not writable ({error})", f"set {variable} to a directory you can write"
    )


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
        yield connection


def check_database(path: Path, upstream: Upstream | None = None) -> list[Check]:
    """Integrity and schema version, then how many jobs are still in flight (and, given the configured
    `upstream`, how many of them belong to another one, which this configuration does not continue)."""
    from alltoken_mcp.store import ACTIVE_CONDITION, ACTIVE_STATUSES

    if not path.exists():
        return [
            Check(True, "database", f"{path} does not exist yet; it will be created on first use"),
            Check(True, "pending jobs", "none"),
        ]
    move_aside = f"stop the servers and move {path} aside (its jobs are lost); a new one is created"
    try:
        with _read_only(path) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            has_jobs = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
            ).fetchone()
            pending, elsewhere = 0, 0
            if has_jobs:
                query = f"SELECT count(*) FROM jobs WHERE {ACTIVE_CONDITION}"
                pending = db.execute(query, ACTIVE_STATUSES).fetchone()[0]
                columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
                if upstream is not None and "upstream_url" in columns:  # (schema 3 and later)
                    query += " AND upstream_url IS NOT NULL AND NOT (upstream_url = ? AND upstream_key IS ?)"
                    owned = (upstream.base_url, upstream.key_fingerprint)
                    elsewhere = db.execute(query, (*ACTIVE_STATUSES, *owned)).fetchone()[0]
    except sqlite3.Error as exc:
        return [Check(False, "database", f"{path} cannot be read: {exc}", move_aside)]
    if integrity != "ok":
        return [Check(False, "database", f"{path} failed the integrity check: {integrity}", move_aside)]
    return _store_checks(str(path), "intact", version, pending, elsewhere, setting="ALLTOKEN_MCP_HOME")


def _store_checks(
    location: str, health: str, version: int, pending: int, elsewhere: int, *, setting: str
) -> list[Check]:
    """The verdict on a store's schema version and its pending jobs, for either backend; `setting` is the
    variable that points at another store."""
    from alltoken_mcp.store import SCHEMA_VERSION

    if version > SCHEMA_VERSION:
        database = Check(
            False,
            "database",
            f"schema version {version} is newer than this alltoken-mcp understands ({SCHEMA_VERSION})",
            f"upgrade alltoken-mcp (uvx --refresh alltoken-mcp) or point {setting} elsewhere",
        )
    elif version < SCHEMA_VERSION:
        database = Check(
            True, "database", f"{location} is {health}; schema {version} is upgraded on next start"
        )
    else:
        database = Check(True, "database", f"{location} is {health} (schema version {version})")
    summary = f"{pending} queued or processing; a running server finishes them" if pending else "none"
    if elsewhere:
        summary += (
            f" ({elsewhere} of them belong{'s' if elsewhere == 1 else ''} to another base URL or API key: "
            "only a server configured for that one continues them; list_jobs shows where)"
        )
    jobs = Check(True, "pending jobs", summary)
    return [database, jobs]


def check_postgres(settings: Settings) -> list[Check]:
    """The team server's PostgreSQL store (ALLTOKEN_MCP_DATABASE_URL): reachable, its schema version and
    its pending jobs, read without migrating or locking anything. The password is never shown."""
    location = settings.database_location
    fix = f"check {DATABASE_URL_VAR} and that the PostgreSQL server is up and accepts this user"
    try:
        from alltoken_mcp.store.postgres import inspect
    except ImportError:
        install = "pip install 'alltoken-mcp[postgres]'"
        return [
            Check(
                False,
                "database",
                f"{DATABASE_URL_VAR} is set but the PostgreSQL driver is not installed",
                install,
            )
        ]
    from alltoken_mcp.store import StoreError

    assert settings.database_url is not None
    try:
        found = anyio.run(inspect, settings.database_url, settings.upstream)
    except StoreError as exc:
        return [Check(False, "database", str(exc), fix)]
    if found.version is None:
        return [
            Check(
                True, "database", f"{location} is reachable and empty; the first server creates the schema"
            ),
            Check(True, "pending jobs", "none"),
        ]
    return _store_checks(
        location, "reachable", found.version, found.pending, found.elsewhere, setting=DATABASE_URL_VAR
    )


def _resolve_dirs(env: Mapping[str, str], home: str | None) -> tuple[Path, Path]:
    """The state and output directories the server would use, found without requiring them to work."""

    def absolute(raw: str) -> Path:
        path = expand_home(raw) or Path(raw)  # an unknown ~user: judged (and refused) as the path it is
        return path if path.is_absolute() else Path.cwd() / path

    home_raw = home or env.get("ALLTOKEN_MCP_HOME", "").strip()
    state = absolute(home_raw) if home_raw else default_home(env)
    output_raw = env.get("ALLTOKEN_OUTPUT_DIR", "").strip()
    return state, absolute(output_raw) if output_raw else state / "media"


def safe_printer(stream: TextIO) -> Callable[[str], None]:
    """print() that degrades to `?` for characters the terminal's encoding lacks instead of crashing."""
    encoding = stream.encoding or "utf-8"

    def write(text: str) -> None:
        try:
            text.encode(encoding)
        except UnicodeEncodeError:
            text = text.encode(encoding, errors="replace").decode(encoding)
        except LookupError:
            pass
        print(text, file=stream, flush=True)  # stdout-ok: doctor and demo are CLI commands, not the server

    return write


def check_marks(stream: TextIO) -> tuple[str, str]:
    try:
        "✓✗".encode(stream.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "OK  ", "FAIL"
    return "✓", "✗"


def _format(check: Check, good: str, bad: str) -> str:
    line = f"{good if check.ok else bad} {check.label}: {check.detail}"
    if not check.ok and check.fix:
        line += f" — fix: {check.fix}"
    return line


def run_doctor(base_url: str | None = None, home: str | None = None, *, out: TextIO | None = None) -> int:
    """Run every check, print one line each, and return 0 only if all of them passed."""
    stream = out or sys.stdout
    write = safe_printer(stream)
    good, bad = check_marks(stream)
    checks: list[Check] = []

    def record(*new: Check) -> None:
        for check in new:
            checks.append(check)
            write(_format(check, good, bad))

    record(check_python(), check_packages())
    state_dir, output_dir = _resolve_dirs(os.environ, home)
    state_check = check_directory("state dir", "ALLTOKEN_MCP_HOME", state_dir)
    output_check = check_directory("output dir", "ALLTOKEN_OUTPUT_DIR", output_dir)
    record(state_check, output_check)

    with tempfile.TemporaryDirectory(prefix="alltoken-doctor-") as scratch:
        # The directories were judged above; a scratch home lets the remaining settings load anyway.
        try:
            settings: Settings | None = load_settings(
                home=str(state_dir) if state_check.ok else scratch,
                output_dir=None if output_check.ok else scratch,
                base_url=base_url,
            )
        except SettingsError as exc:
            record(Check(False, "configuration", str(exc), "fix the variable named above"))
            settings = None
        if settings is not None:
            record(Check(True, "configuration", f"base URL {settings.base_url}"))
            record(check_key(settings))
            record(*anyio.run(check_upstream, settings))
            if settings.database_url is not None:
                record(*check_postgres(settings))
            else:
                record(
                    *check_database(settings.with_overrides(home=state_dir).database_path, settings.upstream)
                )
        else:
            record(*check_database(state_dir / DATABASE_NAME))

    failed = sum(not check.ok for check in checks)
    write("All checks passed." if not failed else f"{failed} check{'s' if failed > 1 else ''} failed.")
    return 0 if not failed else 1
