"""The PostgreSQL backend's own behaviour: one-line errors that name the database without its password
and say what to fix, the schema version it shares with SQLite, and a newer schema refused."""

from __future__ import annotations

import socket
import time

import anyio
import psycopg
import pytest

from alltoken_mcp.store import SCHEMA_VERSION, JobChange, StoreError, postgres
from alltoken_mcp.store.postgres import PostgresStore, _explain
from alltoken_mcp.store.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from tests.test_store import HERE, make_job


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


async def test_a_claim_skips_the_rows_another_replica_is_claiming_instead_of_waiting(
    postgres_url: str,
) -> None:
    """SKIP LOCKED: while another replica's claim holds a due job's row, this claim takes the other due
    jobs and returns at once. FOR UPDATE alone would also never hand out one job twice, but every
    replica would queue behind every other's claim."""
    store = await PostgresStore.open(postgres_url)
    busy, free = make_job(next_poll_at=1.0), make_job(next_poll_at=2.0)
    finished = anyio.Event()
    claimed: list[str] = []

    async def claim() -> None:
        jobs = await store.claim_due_jobs(
            "me:1:x", upstream=HERE, now=time.time(), lease_seconds=60, limit=10, is_dead=lambda _: False
        )
        claimed.extend(job.job_id for job in jobs)
        finished.set()

    try:
        for job in (busy, free):
            await store.insert_job(job)
        with psycopg.connect(postgres_url) as elsewhere:  # a replica mid-claim: its transaction is open
            elsewhere.execute("SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (busy.job_id,))
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim)
                with anyio.move_on_after(5):  # a claim that waits for the lock is freed after 5 s
                    await finished.wait()
                returned_while_locked = finished.is_set()
                elsewhere.rollback()
    finally:
        await store.close()
    assert returned_while_locked
    assert claimed == [free.job_id]


async def test_a_store_hears_the_others_job_changes_not_its_own_and_again_after_losing_its_listener(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(postgres, "LISTEN_RETRY_SECONDS", 0.05)
    listener, publisher = await PostgresStore.open(postgres_url), await PostgresStore.open(postgres_url)
    heard: list[str] = []
    arrived = anyio.Event()

    async def deliver(change: JobChange) -> None:
        nonlocal arrived
        heard.append(change.job_id)
        arrived.set()

    async def listening() -> bool:
        with psycopg.connect(postgres_url, autocommit=True) as db:
            return bool(
                db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = %s", (f"LISTEN {postgres.CHANNEL}",)
                ).fetchone()[0]  # type: ignore[index]
            )

    async def until_listening() -> None:
        while not await listening():  # noqa: ASYNC110 (another connection: no event to wait on)
            await anyio.sleep(0.02)

    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.follow_job_changes, deliver)
                await until_listening()
                await listener.publish_job_change("job_00000000000000aa")  # its own: not delivered
                with psycopg.connect(postgres_url, autocommit=True) as db:  # not ours: ignored, and on
                    db.execute("SELECT pg_notify(%s, %s)", (postgres.CHANNEL, "not json"))
                await publisher.publish_job_change("job_00000000000000bb")
                await arrived.wait()
                arrived = anyio.Event()
                # The listening connection is lost (a failover, an administrator, a network cut).
                with psycopg.connect(postgres_url, autocommit=True) as db:
                    db.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
                        (f"LISTEN {postgres.CHANNEL}",),
                    )
                while await listening():  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                await until_listening()
                await publisher.publish_job_change("job_00000000000000cc")
                await arrived.wait()
                tg.cancel_scope.cancel()
    finally:
        await listener.close()
        await publisher.close()
    assert heard == ["job_00000000000000bb", "job_00000000000000cc"]


async def test_a_metrics_scrape_behind_a_lock_on_the_jobs_fails_in_time_instead_of_waiting(
    postgres_url: str,
) -> None:
    """What a migration's ALTER TABLE does to readers: /metrics' reads give up within READY_SECONDS
    (and answer 503) rather than each holding a pooled connection until the lock is gone. The lock is
    let go after READY_SECONDS + 5 s at most, so a read that waits for it fails the test, not hangs it."""
    import time

    import anyio

    from alltoken_mcp.store.contract import READY_SECONDS

    store = await PostgresStore.open(postgres_url)
    try:
        locker = await psycopg.AsyncConnection.connect(postgres_url)
        async with locker:
            await locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            unlock_at = time.monotonic() + READY_SECONDS + 5
            for read in (store.job_counts, lambda: store.due_count(time.time())):
                started = time.monotonic()
                async with anyio.create_task_group() as tg:

                    async def unlock_late() -> None:
                        await anyio.sleep_until(unlock_at)  # a bound, not a wait the test relies on
                        await locker.rollback()

                    tg.start_soon(unlock_late)
                    with pytest.raises(StoreError) as refused:
                        await read()
                    tg.cancel_scope.cancel()
                assert time.monotonic() - started < READY_SECONDS + 1.5
                assert "\n" not in str(refused.value)
            await locker.rollback()
        assert await store.job_counts() == {}  # the lock gone, the same read answers
    finally:
        await store.close()
