"""The team backend: one PostgreSQL database shared by every replica of a team server.

Driver: psycopg 3 (async) with psycopg_pool, imported only when ALLTOKEN_MCP_DATABASE_URL is set (this
module is imported lazily by `open_store`). Each call takes a pooled connection for one transaction.

Sharing work: `claim_due_jobs` leases due jobs with `SELECT … FOR UPDATE SKIP LOCKED`, so replicas
claiming at once each get different jobs and never wait on each other. A lease ends when released, when
it expires, or when `is_dead` says its owner is gone (checkable only for processes on this host; a dead
replica elsewhere is taken over when its leases expire). Job changes are published with
`pg_notify` on the channel `CHANNEL` and heard by every other replica on a dedicated LISTEN connection
(`follow_job_changes`), so a waiter on one replica wakes as soon as another finishes its job.

Failures reach callers as one-line `StoreError`s naming the URL without its password and the fix
(`_explain`): server unreachable, login refused, database missing, disk full, out of connections, a
read-only server, a connection lost mid-call. The transaction of a failed call is rolled back; the pool
replaces broken connections, so the next call simply tries again. The pool checks each connection as it
hands it out: after a database restart or failover, which ends every connection, calls get fresh ones
instead of failing, one per pooled connection, as "cannot reach" a server that is back up.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import anyio
import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from alltoken_mcp.redact import Redactor
from alltoken_mcp.settings import DATABASE_URL_VAR, Upstream, shown_url
from alltoken_mcp.store.contract import READY_SECONDS, JobChange, Store
from alltoken_mcp.store.records import (
    ACTIVE_STATUSES,
    CHARGE_COLUMNS,
    JOB_COLUMNS,
    PICODOLLARS,
    REDACTED_COLUMNS,
    Charge,
    Conversation,
    Job,
    SpendTotal,
    StoreError,
    StoreInspection,
    StoreWriteError,
    UpstreamTaskTaken,
    is_conversation_id,
    is_job_id,
    job_from_row,
    owner_is_dead,
    to_column,
)
from alltoken_mcp.store.schema import POSTGRES_MIGRATIONS, SCHEMA_VERSION

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[dict[str, Any]]

CHANNEL = "alltoken_mcp_jobs"
CONNECT_TIMEOUT_SECONDS = 10
"""How long opening a connection may take before the server counts as unreachable."""
POOL_MAX_SIZE = 8
"""Connections per replica: store calls are short; the poller's steps and tool calls share them."""
POOL_WAIT_SECONDS = 30.0
"""How long a call waits for a pooled connection before it fails as unreachable."""
MIGRATION_LOCK = 0x616C6C746F6B656E  # "alltoken": replicas starting together migrate one at a time
LISTEN_RETRY_SECONDS = 2.0

ACTIVE = "status = ANY(%(active)s)"
OWN = (
    "((upstream_url = %(url)s AND upstream_key IS NOT DISTINCT FROM %(key)s) "
    "OR (upstream_url IS NULL AND %(key)s::text IS NOT NULL))"
)
"""The job is this upstream's (as `OWN_CONDITION` in sqlite.py and `Job.belongs_to`)."""


def _own(upstream: Upstream) -> dict[str, Any]:
    return {"active": list(ACTIVE_STATUSES), "url": upstream.base_url, "key": upstream.key_fingerprint}


class PostgresStore(Store):
    """The `Store` contract over a pool of connections to one PostgreSQL database. Open with
    `await PostgresStore.open(url)`."""

    def __init__(self, pool: AsyncConnectionPool[Connection], url: str, redactor: Redactor | None) -> None:
        self._pool = pool
        self._url = url
        self._redactor = redactor or Redactor()
        self.location = shown_url(url)
        self._instance = secrets.token_hex(8)
        """Names this store's notifications, so it does not hear its own."""

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str, *, redactor: Redactor | None = None) -> PostgresStore:
        """Connect, bring the schema up to date, and open the pool. StoreError (one line) when the
        server cannot be reached or used."""
        with _mapped_errors(url):
            connection = await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
            async with connection:
                await _migrate(connection, url)
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            open=False,
            timeout=POOL_WAIT_SECONDS,
            check=AsyncConnectionPool.check_connection,  # one empty round trip per call (see above)
            # autocommit: a single statement is one round trip (not BEGIN, it, COMMIT); several that
            # must hold together run in `_transaction`.
            kwargs={"row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT_SECONDS, "autocommit": True},
            name="alltoken-mcp",
        )
        with _mapped_errors(url):
            try:
                await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
            except PoolTimeout:
                await pool.close()
                raise
        return cls(pool, url, redactor)

    async def close(self) -> None:
        try:
            await self._pool.close()
        except Exception as exc:  # at shutdown there is nothing left to do about it but say so
            logger.warning("closing the state database: %s", exc)

    async def ready(self) -> None:
        # Bounded by the server and the pool, not by cancelling: a started call is shielded (see
        # `_connection`), so a probe stuck behind a lock would otherwise wait it out.
        rows = await self._probe("SELECT version FROM schema_version", {})
        version = rows[0]["version"] if rows else None
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"the state database {self.location} has schema version {version}, not {SCHEMA_VERSION}: "
                "another alltoken-mcp release changed it; run one release per database"
            )

    @asynccontextmanager
    async def _connection(self, *, wait: float | None = None) -> AsyncIterator[Connection]:
        """One pooled connection (autocommit) for one store call; database failures become one-line
        StoreErrors. `wait`: how long to wait for a free connection (default `POOL_WAIT_SECONDS`).

        Waiting for a free connection can be cancelled (a tool call's time budget ends while the pool
        is busy); once it has one, the call is shielded from cancellation, as a SQLite call in its
        worker thread is: a call that has started finishes (its statements are short), so a cancelled
        caller never leaves a connection half-used, neither returned to the pool nor closed."""
        with _mapped_errors(self._url):
            connection = await self._pool.getconn(timeout=wait)
        try:
            with anyio.CancelScope(shield=True), _mapped_errors(self._url):
                yield connection
        finally:
            with anyio.CancelScope(shield=True):
                await self._pool.putconn(connection)

    @asynccontextmanager
    async def _transaction(self, *, wait: float | None = None) -> AsyncIterator[Connection]:
        """`_connection` with its statements in one transaction: committed when the block ends, rolled
        back when it raises."""
        async with self._connection(wait=wait) as connection, connection.transaction():
            yield connection

    async def _fetchone(self, sql: str, params: Any) -> dict[str, Any] | None:
        """One statement, on its own (atomic as any single statement is)."""
        async with self._connection() as db:
            return await (await db.execute(sql, params)).fetchone()

    async def _fetchall(self, sql: str, params: Any) -> list[dict[str, Any]]:
        async with self._connection() as db:
            return await (await db.execute(sql, params)).fetchall()

    def _clean(self, column: str, value: Any) -> Any:
        if column in REDACTED_COLUMNS and isinstance(value, str):
            return self._redactor.redact(value)
        return value

    # -- jobs ------------------------------------------------------------------------------------

    async def insert_job(self, job: Job) -> None:
        values = {name: to_column(name, self._clean(name, getattr(job, name))) for name in JOB_COLUMNS}
        columns = ", ".join(JOB_COLUMNS)
        marks = ", ".join(f"%({name})s" for name in JOB_COLUMNS)
        async with self._transaction() as db:  # committed (and so durable) before this returns
            await db.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", values)

    async def get_job(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        row = await self._fetchone("SELECT * FROM jobs WHERE job_id = %s", (job_id,))
        return None if row is None else job_from_row(row)

    async def find_job_by_upstream(self, upstream_id: str) -> Job | None:
        row = await self._fetchone("SELECT * FROM jobs WHERE upstream_id = %s", (upstream_id,))
        return None if row is None else job_from_row(row)

    async def update_job(
        self, job_id: str, *, owner: str | None = None, only_if_active: bool = False, **changes: Any
    ) -> Job | None:
        unknown = set(changes) - set(JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        changes.setdefault("updated_at", time.time())
        params: dict[str, Any] = {
            f"v_{name}": to_column(name, self._clean(name, value)) for name, value in changes.items()
        }
        assignments = ", ".join(f"{name} = %(v_{name})s" for name in changes)
        where = "job_id = %(job_id)s"
        params["job_id"] = job_id
        if owner is not None:
            where += " AND lease_owner = %(owner)s"
            params["owner"] = owner
        if only_if_active:
            where += f" AND {ACTIVE}"
            params["active"] = list(ACTIVE_STATUSES)
        try:
            row = await self._fetchone(f"UPDATE jobs SET {assignments} WHERE {where} RETURNING *", params)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "jobs_by_upstream":
                raise UpstreamTaskTaken(str(changes.get("upstream_id"))) from exc
            raise
        return None if row is None else job_from_row(row)

    async def list_jobs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 20,
        person: str | None = None,
    ) -> list[Job]:
        where = [
            condition
            for condition, value in (
                ("person = %(person)s", person),
                ("kind = %(kind)s", kind),
                ("status = %(status)s", status),
            )
            if value is not None
        ]
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._fetchall(
            sql + " ORDER BY created_at DESC, job_id LIMIT %(limit)s",
            {"kind": kind, "status": status, "limit": limit, "person": person},
        )
        return [job_from_row(row) for row in rows]

    async def claim_due_jobs(
        self,
        owner: str,
        *,
        upstream: Upstream,
        now: float,
        lease_seconds: float,
        limit: int,
        exclude: Collection[str] = (),
        is_dead: Callable[[str], bool] = owner_is_dead,
        on_takeover: Callable[[Job], None] | None = None,
    ) -> list[Job]:
        params = {
            **_own(upstream),
            "owner": owner,
            "now": now,
            "expires": now + lease_seconds,
            "exclude": list(exclude),
            "limit": limit,
        }
        async with self._transaction() as db:
            # The owners holding live leases on due jobs (one row per process): those found dead lose them.
            holders = await (
                await db.execute(
                    f"SELECT DISTINCT lease_owner FROM jobs WHERE {ACTIVE} AND {OWN} "
                    "AND next_poll_at <= %(now)s AND lease_owner <> %(owner)s AND lease_expires_at > %(now)s",
                    params,
                )
            ).fetchall()
            params["dead"] = [row["lease_owner"] for row in holders if is_dead(row["lease_owner"])]
            # SKIP LOCKED: rows another replica is claiming right now are skipped, not waited for; once it
            # commits they carry its live lease, which the condition refuses.
            rows = await (
                await db.execute(
                    # `picked` keeps each row's previous lease holder, for `on_takeover`.
                    "WITH picked AS ("
                    f"SELECT job_id, lease_owner AS previous_owner FROM jobs WHERE {ACTIVE} AND {OWN} "
                    "AND next_poll_at <= %(now)s "
                    "AND NOT job_id = ANY(%(exclude)s) AND (lease_owner IS NULL OR lease_owner = %(owner)s "
                    "OR lease_expires_at <= %(now)s OR lease_owner = ANY(%(dead)s)) "
                    "ORDER BY next_poll_at, created_at, job_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                    "UPDATE jobs SET lease_owner = %(owner)s, lease_expires_at = %(expires)s, "
                    # A job from before upstreams were recorded becomes this upstream's (see OWN).
                    "upstream_key = CASE WHEN upstream_url IS NULL THEN %(key)s ELSE upstream_key END, "
                    "upstream_url = coalesce(upstream_url, %(url)s) "
                    "FROM picked WHERE jobs.job_id = picked.job_id "
                    "RETURNING jobs.*, picked.previous_owner",
                    params,
                )
            ).fetchall()
            claimed = [(job_from_row(row), row["previous_owner"]) for row in rows]
            if on_takeover is not None:
                for job, previous in claimed:
                    if previous not in (None, owner):
                        on_takeover(replace(job, lease_owner=previous))
        # Most overdue first; ties oldest first, as SQLite's row order gives them.
        return sorted(
            (job for job, _ in claimed),
            key=lambda job: (job.next_poll_at, job.created_at, job.job_id),
        )

    async def job_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._probe("SELECT kind, status, count(*) AS n FROM jobs GROUP BY kind, status", {})
        return {(row["kind"], row["status"]): int(row["n"]) for row in rows}

    async def due_count(self, now: float) -> int:
        rows = await self._probe(
            f"SELECT count(*) AS n FROM jobs WHERE {ACTIVE} AND next_poll_at <= %(now)s",
            {"active": list(ACTIVE_STATUSES), "now": now},
        )
        return int(rows[0]["n"])

    async def _probe(self, sql: str, params: Any) -> list[dict[str, Any]]:
        """A read for an operator's probe (/readyz, /metrics), bounded by the server and the pool to
        `READY_SECONDS`: a scrape behind a lock (a migration's ALTER TABLE) fails instead of piling up
        on pooled connections."""
        async with self._transaction(wait=READY_SECONDS) as db:
            await db.execute(f"SET LOCAL statement_timeout = {round(READY_SECONDS * 1000)}")
            return await (await db.execute(sql, params)).fetchall()

    async def next_due_at(
        self,
        owner: str,
        *,
        upstream: Upstream,
        now: float,
        exclude: Collection[str] = (),
        is_dead: Callable[[str], bool] = owner_is_dead,
    ) -> float | None:
        # One row per lease holder (and held or not), however many jobs are active.
        rows = await self._fetchall(
            "SELECT lease_owner, coalesce(lease_expires_at > %(now)s, false) AS held, "
            "min(next_poll_at) AS due, min(greatest(next_poll_at, lease_expires_at)) AS due_after_lease "
            f"FROM jobs WHERE {ACTIVE} AND {OWN} AND NOT job_id = ANY(%(exclude)s) GROUP BY 1, 2",
            {**_own(upstream), "now": now, "exclude": list(exclude)},
        )
        earliest: float | None = None
        for row in rows:
            holder = row["lease_owner"]
            held_elsewhere = holder not in (None, owner) and row["held"] and not is_dead(holder)
            due = float(row["due_after_lease"] if held_elsewhere else row["due"])
            earliest = due if earliest is None else min(earliest, due)
        return earliest

    async def release_lease(self, job_id: str, owner: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE job_id = %s AND lease_owner = %s",
                (job_id, owner),
            )

    async def release_all_leases(self, owner: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = %s", (owner,)
            )

    # -- job changes across replicas: NOTIFY / LISTEN --------------------------------------------

    async def publish_job_change(self, job_id: str) -> None:
        payload = json.dumps({"job": job_id, "from": self._instance})
        async with self._transaction() as db:  # delivered to the listeners when it commits
            await db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    async def follow_job_changes(self, deliver: Callable[[JobChange], Awaitable[None]]) -> None:
        """Listen on a connection of its own (outside the pool) until cancelled; when it breaks, say so
        once and listen again. Changes published while no connection listened are not replayed:
        waiters re-read the store in any case (jobs.py), so they are only later, not lost."""
        broken = False
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
                try:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    if broken:
                        logger.warning("hearing other replicas' job changes again")
                        broken = False
                    async for notice in connection.notifies():
                        change = self._heard(notice.payload)
                        if change is not None:
                            await deliver(change)
                finally:
                    with anyio.CancelScope(shield=True):  # closed also when cancelled (at shutdown)
                        await connection.close()
            except psycopg.Error as exc:
                if not broken:
                    logger.warning(
                        "not hearing other replicas' job changes (%s); retrying every %g s",
                        _first_line(exc),
                        LISTEN_RETRY_SECONDS,
                    )
                    broken = True
            await anyio.sleep(LISTEN_RETRY_SECONDS)

    def _heard(self, payload: str) -> JobChange | None:
        try:
            message = json.loads(payload)
            if message["from"] == self._instance:
                return None
            return JobChange(job_id=str(message["job"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed job change notice on %s: %.100r", CHANNEL, payload)
            return None

    # -- conversations ---------------------------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        if not is_conversation_id(conversation_id):
            return None
        async with self._transaction() as db:
            head = await (
                await db.execute("SELECT * FROM conversations WHERE conversation_id = %s", (conversation_id,))
            ).fetchone()
            if head is None:
                return None
            rows = await (
                await db.execute(
                    "SELECT role, content FROM messages WHERE conversation_id = %s ORDER BY seq",
                    (conversation_id,),
                )
            ).fetchall()
        return Conversation(
            conversation_id=conversation_id,
            system=head["system"],
            model=head["model"],
            messages=[{"role": r["role"], "content": r["content"]} for r in rows],
            created_at=head["created_at"],
            updated_at=head["updated_at"],
            person=head["person"],
        )

    async def save_turn(
        self,
        conversation_id: str | None,
        *,
        system: str | None,
        model: str | None,
        messages: Sequence[dict[str, str]],
        person: str | None = None,
    ) -> str:
        """As the contract says; one transaction per turn (the pool runs turns side by side, so there is
        no queue of commits to group). Every text is redacted first."""
        redact = self._redactor.redact
        now = time.time()
        async with self._transaction() as db:
            if conversation_id is None:
                conversation_id = f"conv_{secrets.token_hex(8)}"
                await db.execute(
                    "INSERT INTO conversations"
                    " (conversation_id, system, model, created_at, updated_at, person)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (conversation_id, None if system is None else redact(system), model, now, now, person),
                )
            else:
                # Locks the conversation: turns of one conversation from two replicas append in turn.
                await db.execute(
                    "UPDATE conversations SET system = coalesce(%s, system) WHERE conversation_id = %s",
                    (None if system is None else redact(system), conversation_id),
                )
            if messages:
                last = await (
                    await db.execute(
                        "SELECT coalesce(max(seq), 0) AS last FROM messages WHERE conversation_id = %s",
                        (conversation_id,),
                    )
                ).fetchone()
                assert last is not None
                async with db.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO messages (conversation_id, seq, role, content) VALUES (%s, %s, %s, %s)",
                        [
                            (conversation_id, last["last"] + i, m["role"], redact(m["content"]))
                            for i, m in enumerate(messages, 1)
                        ],
                    )
                await db.execute(
                    "UPDATE conversations SET updated_at = %s WHERE conversation_id = %s",
                    (time.time(), conversation_id),
                )
        return conversation_id

    # -- spend ledger ----------------------------------------------------------------------------

    async def record_charge(self, charge: Charge) -> None:
        async with self._transaction() as db:
            await db.execute(
                f"INSERT INTO charges ({CHARGE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (job_id) DO UPDATE SET "
                "cost_picodollars = excluded.cost_picodollars, request_id = excluded.request_id",
                charge.row(),
            )

    async def spend(self, upstream: Upstream, *, since: float, person: str | None = None) -> SpendTotal:
        row = await self._fetchone(
            "SELECT coalesce(sum(cost_picodollars), 0) AS known, count(*) AS charges, "
            "count(*) - count(cost_picodollars) AS unknown FROM charges "
            "WHERE upstream_url = %s AND upstream_key IS NOT DISTINCT FROM %s AND at >= %s"
            + (" AND person = %s" if person is not None else ""),
            (upstream.base_url, upstream.key_fingerprint, since, *([person] if person is not None else [])),
        )
        assert row is not None
        return SpendTotal(
            known_usd=Decimal(row["known"]) / PICODOLLARS, charges=row["charges"], unknown=row["unknown"]
        )

    # -- cache -----------------------------------------------------------------------------------

    async def cache_put(self, key: str, value: Any) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO cache (key, value, stored_at) VALUES (%s, %s, %s) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value, stored_at = excluded.stored_at",
                (key, json.dumps(self._redactor.scrub(value), ensure_ascii=False), time.time()),
            )

    async def cache_get(self, key: str) -> Any:
        row = await self._fetchone("SELECT value FROM cache WHERE key = %s", (key,))
        return None if row is None else json.loads(row["value"])


async def inspect(url: str, upstream: Upstream | None) -> StoreInspection:
    """The schema version and the active jobs, read in a read-only transaction that neither migrates nor
    waits on a lock (for the doctor, while servers use the database). StoreError (one line) when the
    server cannot be reached or used."""
    with _mapped_errors(url):
        connection = await psycopg.AsyncConnection.connect(
            url, connect_timeout=CONNECT_TIMEOUT_SECONDS, options="-c default_transaction_read_only=on"
        )
        async with connection, connection.transaction():
            found = await (await connection.execute("SELECT to_regclass('schema_version')")).fetchone()
            if found is None or found[0] is None:
                return StoreInspection(version=None, pending=0, elsewhere=0)
            row = await (await connection.execute("SELECT version FROM schema_version")).fetchone()
            version = None if row is None else int(row[0])
            if not version:
                return StoreInspection(version=version, pending=0, elsewhere=0)
            params = _own(upstream) if upstream is not None else {"active": list(ACTIVE_STATUSES)}
            elsewhere = (
                f"count(*) FILTER (WHERE upstream_url IS NOT NULL AND NOT {OWN})"
                if upstream is not None
                else "0"
            )
            counts = await connection.execute(
                f"SELECT count(*), {elsewhere} FROM jobs WHERE {ACTIVE}", params
            )
            pending, other = await counts.fetchone() or (0, 0)
            return StoreInspection(version=version, pending=int(pending), elsewhere=int(other))


async def _migrate(db: psycopg.AsyncConnection[Any], url: str) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction; replicas starting together wait on an
    advisory lock, and the second finds the work done."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = await (await db.execute("SELECT version FROM schema_version")).fetchone()
        if row is None:
            await db.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the state database {shown_url(url)} has schema version {version}, newer than this "
                f"alltoken-mcp understands ({SCHEMA_VERSION}); upgrade alltoken-mcp or point "
                f"{DATABASE_URL_VAR} at another database"
            )
        for number, script in enumerate(POSTGRES_MIGRATIONS[version:], start=version + 1):
            await db.execute(script.encode())  # bytes: run as written (several statements, no parameters)
            await db.execute("UPDATE schema_version SET version = %s", (number,))


# -- failures ----------------------------------------------------------------------------------------


class _mapped_errors:
    """Turns psycopg's errors that are about the server or the machine into one-line StoreErrors that
    name the database (without its password) and the fix. The program's own errors (a constraint, bad
    SQL) keep their exception."""

    def __init__(self, url: str) -> None:
        self._url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, StoreError):
            return
        message = _explain(exc, shown_url(self._url))
        if message is not None:
            raise StoreWriteError(message) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _explain(exc: BaseException, where: str) -> str | None:
    """One line for a failure of the server or the machine; None for anything else."""
    if isinstance(exc, PoolTimeout):
        return (
            f"Cannot reach the PostgreSQL database {where}: no connection could be had in time "
            f"({_first_line(exc)}). Check that the server is up and accepts connections "
            "(max_connections), then retry."
        )
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate or ""
    # libpq says "connection to server at …, port … failed: FATAL:  <reason>": the reason is what matters.
    detail = " ".join(_first_line(exc).rpartition("FATAL:")[2].split())
    lower = detail.lower()
    # A failed connection carries no SQLSTATE, only libpq's (English) text.
    login_refused = ("password authentication failed", "no pg_hba.conf", "role ", "authentication failed")
    if state in ("28P01", "28000") or any(phrase in lower for phrase in login_refused):
        return (
            f"PostgreSQL refused the login to {where} ({detail}). Fix the user and password in "
            f"{DATABASE_URL_VAR} (or the server's pg_hba.conf), then retry."
        )
    if state == "3D000" or ("database" in lower and "does not exist" in lower):
        return (
            f"The database named in {where} does not exist ({detail}). Create it (createdb NAME, or CREATE "
            f"DATABASE NAME as a superuser) or fix the name in {DATABASE_URL_VAR}, then retry."
        )
    if state == "53100":
        return (
            f"Cannot write the PostgreSQL database {where}: the server's disk is full ({detail}). Free space "
            "on the database server's data volume, then retry."
        )
    if state in ("53300", "53200", "53000"):
        return (
            f"The PostgreSQL server of {where} is out of resources ({detail}). Raise its max_connections or "
            "memory, or run fewer replicas (each keeps up to "
            f"{POOL_MAX_SIZE + 1} connections), then retry."
        )
    if state == "25006":
        return (
            f"The PostgreSQL server of {where} is read-only ({detail}): point {DATABASE_URL_VAR} at the "
            "primary, not a standby, then retry."
        )
    if state == "42501":
        return (
            f"The database user of {where} lacks a privilege ({detail}). Grant it ownership of the database "
            "(ALTER DATABASE NAME OWNER TO USER) or the rights on its tables, then retry."
        )
    if isinstance(exc, psycopg.OperationalError) or state.startswith(("08", "57")):
        return (
            f"Cannot reach the PostgreSQL database {where} ({detail}). Start the server, or fix the host "
            f"and port in {DATABASE_URL_VAR}, then retry."
        )
    return None
