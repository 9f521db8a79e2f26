"""The PostgreSQL backend's own behaviour: one-line errors that name the database without its password
and say what to fix, the schema version it shares with SQLite, and a newer schema refused."""

from __future__ import annotations

import socket

import psycopg
import pytest

from alltoken_mcp.store import SCHEMA_VERSION, StoreError
from alltoken_mcp.store.postgres import PostgresStore, _explain
from alltoken_mcp.store.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def open_refused(url: str) -> str:
    with pytest.raises(StoreError) as caught:
        await PostgresStore.open(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "hunter2" not in message
    return message


async def test_an_unreachable_server_is_one_line_naming_the_url_without_its_password() -> None:
    port = _closed_port()
    message = await open_refused(f"postgresql://alltoken:hunter2-pw@127.0.0.1:{port}/alltoken")
    assert message.startswith(
        f"Cannot reach the PostgreSQL database postgresql://alltoken:***@127.0.0.1:{port}/"
    )
    assert "Start the server, or fix the host and port in ALLTOKEN_MCP_DATABASE_URL" in message


async def test_a_missing_database_says_to_create_it(postgres_admin_url: str) -> None:
    url = postgres_admin_url.rpartition("/")[0] + "/no_such_db?password=hunter2-pw"
    message = await open_refused(url)
    assert "The database named in" in message
    assert "password=***" in message
    assert "Create it (createdb NAME" in message


async def test_an_unknown_user_is_a_refused_login(postgres_admin_url: str) -> None:
    rest = postgres_admin_url.partition("://")[2].partition("@")[2]
    message = await open_refused(f"postgresql://nobody_here:hunter2-pw@{rest}")
    assert message.startswith("PostgreSQL refused the login to postgresql://nobody_here:***@")
    assert "Fix the user and password in ALLTOKEN_MCP_DATABASE_URL" in message


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (psycopg.errors.DiskFull("could not extend file"), "the server's disk is full"),
        (psycopg.errors.TooManyConnections("too many clients"), "Raise its max_connections"),
        (psycopg.errors.ReadOnlySqlTransaction("read-only transaction"), "not a standby"),
        (psycopg.errors.InsufficientPrivilege("permission denied for table jobs"), "lacks a privilege"),
        (psycopg.errors.AdminShutdown("terminating connection"), "Cannot reach the PostgreSQL database"),
    ],
)
def test_each_failure_of_the_server_has_its_fix(error: psycopg.Error, says: str) -> None:
    message = _explain(error, "postgresql://u:***@db/x")
    assert message is not None
    assert says in message
    assert "postgresql://u:***@db/x" in message


def test_the_programs_own_errors_are_not_put_down_to_the_server() -> None:
    assert _explain(psycopg.errors.UniqueViolation("duplicate key"), "x") is None
    assert _explain(psycopg.errors.UndefinedTable("no such table"), "x") is None


def test_both_backends_migrate_to_the_same_schema_version() -> None:
    assert len(SQLITE_MIGRATIONS) == len(POSTGRES_MIGRATIONS) == SCHEMA_VERSION


async def test_a_database_of_a_newer_release_is_refused_and_ready_says_so(postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    try:
        await store.ready()
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, not {SCHEMA_VERSION}"):
            await store.ready()
    finally:
        await store.close()
    message = await open_refused(postgres_url)
    assert "newer than this alltoken-mcp understands" in message
    assert "point ALLTOKEN_MCP_DATABASE_URL at another database" in message


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    import anyio

    stores: list[PostgresStore] = []

    async def start() -> None:
        stores.append(await PostgresStore.open(postgres_url))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)
    for store in stores:
        await store.ready()
        await store.close()
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


async def test_a_call_waiting_for_a_free_connection_can_be_cancelled_and_the_pool_is_left_whole(
    postgres_url: str,
) -> None:
    """A tool call whose time budget ends while every pooled connection is busy must end then, not when
    the pool's own 30 s wait does; the connections it did not get are untouched."""
    import anyio

    from alltoken_mcp.store.postgres import POOL_MAX_SIZE

    store = await PostgresStore.open(postgres_url)
    try:
        pool = store._pool
        held = [await pool.getconn() for _ in range(POOL_MAX_SIZE)]
        with anyio.fail_after(5):
            with anyio.move_on_after(0.2) as waited:
                await store.get_job("job_00000000000000aa")
        assert waited.cancelled_caught
        for connection in held:
            await pool.putconn(connection)
        with anyio.fail_after(5):
            assert await store.get_job("job_00000000000000aa") is None
        assert pool.get_stats()["pool_size"] <= POOL_MAX_SIZE
    finally:
        await store.close()
