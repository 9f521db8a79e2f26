"""A throwaway PostgreSQL server for the tests, and a fresh database per test.

The suite uses `ALLTOKEN_TEST_DATABASE_URL` when it is set (.ci/run starts a server and sets it; any
server whose user may CREATE DATABASE will do). Otherwise it starts its own from the PostgreSQL binaries
it finds (`initdb` and `pg_ctl` on PATH, else Debian's /usr/lib/postgresql/*/bin), in a temporary
directory on a free loopback port, as `nobody` when the tests run as root (postgres refuses root), and
stops it at the end of the session. Only when no binaries exist do the PostgreSQL tests skip, saying so.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from alltoken_mcp.redact import Redactor
from alltoken_mcp.settings import DATABASE_URL_VAR, load_settings
from alltoken_mcp.store import Store, open_store

TEST_URL_VAR = "ALLTOKEN_TEST_DATABASE_URL"
NO_SERVER = (
    f"no PostgreSQL for the tests: set {TEST_URL_VAR} to a server where they may create databases, or "
    "install PostgreSQL's server binaries (Debian: apt-get install postgresql); .ci/run does"
)


def server_binaries() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`, or None."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name or 0)
    )
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def throwaway_server(binaries: Path) -> Iterator[str]:
    """Start a server in a temporary directory and yield its superuser URL; stop and remove it after."""
    root = Path(tempfile.mkdtemp(prefix="alltoken-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres will not run as root
        shutil.chown(root, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        # fsync off: the tests kill servers, never the machine; the store's durability is PostgreSQL's.
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def admin_server() -> Iterator[str | None]:
    """A superuser URL: `ALLTOKEN_TEST_DATABASE_URL`'s server, else a throwaway one started from the
    binaries (stopped after the block); None where there is neither (`NO_SERVER` says what to do)."""
    given = os.environ.get(TEST_URL_VAR)
    if given:
        yield given
        return
    binaries = server_binaries()
    if binaries is None:
        yield None
        return
    with throwaway_server(binaries) as started:
        yield started


def create_database(admin_url: str) -> str:
    """A new, empty database on the server of `admin_url`; its URL."""
    import psycopg

    name = f"alltoken_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


@dataclass
class Database:
    """The state database of one test, on one backend: `url` is None for the SQLite file `path`."""

    backend: str
    path: Path
    url: str | None

    @property
    def home(self) -> Path:
        """The home directory whose servers use this database (the SQLite file lives there)."""
        return self.path.parent

    async def open(self, *, redactor: Redactor | None = None) -> Store:
        settings = load_settings({"ALLTOKEN_MCP_HOME": str(self.home)})
        return await open_store(settings.with_overrides(database_url=self.url), redactor=redactor)

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[Store]:
        """The store for a moment: to read or change what server processes wrote, through the store API
        as any server would (closed at once, so a SQLite file is left as the servers left it)."""
        store = await self.open()
        try:
            yield store
        finally:
            await store.close()

    def env(self) -> dict[str, str]:
        """What a server process needs in its environment to use this database."""
        return {} if self.url is None else {DATABASE_URL_VAR: self.url}
