"""The embedded backend: one SQLite file (WAL) shared by every server process of one user.

Every call runs in a worker thread (`anyio.to_thread.run_sync`) on the store's one connection (a server
opens one store), guarded by a lock; several processes share the file through SQLite's own locking
(`BEGIN IMMEDIATE` for the read-modify-write steps, a busy timeout for contention).

The schema is versioned with `PRAGMA user_version` and the ordered migrations in `schema.py`; a database
written by a newer release is refused rather than guessed at. A job or conversation id a caller looks up
(`get_job`, `get_conversation`) is checked against its strict pattern first: a malformed one is simply
not found.

Failures of the machine (full disk, read-only or immutable file, file-size limit, I/O error, a lock held
too long) are mapped in one place (`_machine_fault`, `_explain`) to a `StoreWriteError` whose one line
says what failed, where, and what to free or fix. The statement's transaction is rolled back, the
connection stays usable, and the next call simply tries again, so the server recovers when the disk does.

Secrets are redacted at this boundary (see `redact.py`) in the free-text columns that can carry what an
upstream said or a model wrote (a job's error and note, conversation turns, cached listings) before they
are written. A job's prompt and request are stored as given: they are re-sent byte-identical when a
submit is retried.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from alltoken_mcp.redact import Redactor
from alltoken_mcp.settings import Upstream
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
    StoreWriteError,
    UpstreamTaskTaken,
    is_conversation_id,
    is_job_id,
    job_from_row,
    lease_available,
    owner_is_dead,
    to_column,
)
from alltoken_mcp.store.schema import SCHEMA_VERSION, SQLITE_MIGRATIONS

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 30
HOME_VAR = "ALLTOKEN_MCP_HOME"

ACTIVE_CONDITION = f"status IN ({', '.join('?' for _ in ACTIVE_STATUSES)})"
"""SQL condition for an active job; bind ACTIVE_STATUSES to it (also used by `doctor`)."""
OWN_CONDITION = "((upstream_url = ? AND upstream_key IS ?) OR (upstream_url IS NULL AND ? IS NOT NULL))"
"""SQL condition for a job a server may act on; bind `_own_params(upstream)`. A job from before upstreams
were recorded (NULL) is taken by a server with a key, which records itself on the job when it leases it;
a server without a key takes none of them (it could only fail them)."""


def _own_params(upstream: Upstream) -> tuple[str, str | None, str | None]:
    return (upstream.base_url, upstream.key_fingerprint, upstream.key_fingerprint)


T = TypeVar("T")


def list_jobs_query(
    *, kind: str | None, status: str | None, limit: int, person: str | None = None
) -> tuple[str, list[Any]]:
    """The SQL `Store.list_jobs` runs, and its parameters. Each combination of filters has an index that
    yields its rows already in order (schema 4), so the first `limit` are read and nothing is sorted; a
    person's jobs come off their own index (schema 7), the other filters applied on the way."""
    where: list[str] = []
    params: list[Any] = []
    if person is not None:
        where.append("person = ?")
        params.append(person)
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    sql = "SELECT * FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY created_at DESC, job_id LIMIT ?", [*params, limit]


class SqliteStore(Store):
    """The `Store` contract over one SQLite connection. Open with `await SqliteStore.open(path)`."""

    def __init__(self, connection: sqlite3.Connection, path: Path, redactor: Redactor | None = None) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None
        self._redactor = redactor or Redactor()
        self.path = path
        self.location = str(path)
        self._queued_turns: list[_Turn] = []
        self._writing_turns = False

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, *, redactor: Redactor | None = None) -> SqliteStore:
        store = await anyio.to_thread.run_sync(cls._open_sync, path)
        store._redactor = redactor or Redactor()
        # Store calls run one at a time anyway (one connection); a limiter of their own keeps queued
        # calls from parking threads of anyio's shared pool, which the stdio transport also uses.
        store._limiter = anyio.CapacityLimiter(1)
        return store

    @classmethod
    def _open_sync(cls, path: Path) -> SqliteStore:
        return cls(_connect(path), path)

    async def close(self) -> None:
        try:
            await self._run(lambda: self._db.close())
        except StoreError as exc:  # at shutdown there is nothing left to do about it but say so
            logger.warning("closing the state database: %s", exc)

    async def ready(self) -> None:
        def read_version() -> int:
            with self._lock:
                return int(self._db.execute("PRAGMA user_version").fetchone()[0])

        # Not `_run`: a store call waiting on another process's write lock holds the connection for up to
        # the busy timeout (30 s). The probe stops waiting at READY_SECONDS; the abandoned read finishes
        # harmlessly once the connection is free.
        version: int | None = None
        with anyio.move_on_after(READY_SECONDS):
            try:
                version = await anyio.to_thread.run_sync(
                    read_version, abandon_on_cancel=True, limiter=self._limiter
                )
            except sqlite3.Error as exc:  # a closed or broken connection: the probe says so in one line
                raise StoreError(f"the state database {self.path} cannot be read: {exc}") from None
        if version is None:
            raise StoreError(
                f"the state database {self.path} did not answer within {READY_SECONDS:g} s (another "
                "process holds its write lock, or a long write is under way)"
            )
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"the state database {self.path} has schema version {version}, not {SCHEMA_VERSION}: "
                "another alltoken-mcp release changed it; run one release per database"
            )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                for attempt in (1, 2):
                    try:
                        return fn(*args)
                    except sqlite3.Error as exc:
                        fault = _machine_fault(exc, self.path)
                        if fault is None:
                            raise
                        self._roll_back()
                        # SQLite opens a file it cannot write read-only, and that connection stays so
                        # after the file is fixed: retry once on a fresh connection.
                        if fault == "read-only" and attempt == 1 and self._reconnect():
                            continue
                        raise StoreWriteError(_explain(fault, exc, self.path)) from exc
                raise AssertionError("unreachable")

        return await anyio.to_thread.run_sync(locked, limiter=self._limiter)

    def _roll_back(self) -> None:
        """End a transaction a failed statement left open. Caller holds the lock."""
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _reconnect(self) -> bool:
        """Replace the connection with a fresh one; False (keeping the old one) when none can be had."""
        try:
            fresh = _connect(self.path)
        except StoreError:
            return False
        with suppress(sqlite3.Error):
            self._db.close()
        self._db = fresh
        return True

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        """One statement on the current connection (looked up when it runs: `_reconnect` may replace it)."""
        self._db.execute(sql, params)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` inside BEGIN IMMEDIATE … COMMIT (rolled back on error). Caller holds the lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self._db)
            self._db.execute("COMMIT")  # can fail too (a full disk): then roll back as well
        except BaseException:
            self._roll_back()
            raise
        return result

    # -- jobs ------------------------------------------------------------------------------------

    async def insert_job(self, job: Job) -> None:
        columns = ", ".join(JOB_COLUMNS)
        marks = ", ".join("?" for _ in JOB_COLUMNS)
        values = [to_column(name, self._clean(name, getattr(job, name))) for name in JOB_COLUMNS]
        await self._run(self._execute, f"INSERT INTO jobs ({columns}) VALUES ({marks})", values)

    async def get_job(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        row = await self._run(
            lambda: self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        )
        return None if row is None else job_from_row(row)

    async def find_job_by_upstream(self, upstream_id: str) -> Job | None:
        row = await self._run(
            lambda: self._db.execute("SELECT * FROM jobs WHERE upstream_id = ?", (upstream_id,)).fetchone()
        )
        return None if row is None else job_from_row(row)

    async def update_job(
        self, job_id: str, *, owner: str | None = None, only_if_active: bool = False, **changes: Any
    ) -> Job | None:
        """Apply `changes` (Job field names) and bump `updated_at`; return the new row.

        With `owner`, the update happens only while that owner holds the job's lease (a poller that lost
        its lease to another process must not write results). With `only_if_active`, only while the job
        is queued or processing (a local cancel and a completing poll race; exactly one of them wins).
        None is returned when the condition does not hold.
        """
        unknown = set(changes) - set(JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        changes.setdefault("updated_at", time.time())

        def apply(db: sqlite3.Connection) -> Job | None:
            assignments = ", ".join(f"{name} = ?" for name in changes)
            values = [to_column(name, self._clean(name, value)) for name, value in changes.items()]
            where = "job_id = ?"
            params: list[Any] = [*values, job_id]
            if owner is not None:
                where += " AND lease_owner = ?"
                params.append(owner)
            if only_if_active:
                where += f" AND {ACTIVE_CONDITION}"
                params.extend(ACTIVE_STATUSES)
            try:
                cursor = db.execute(f"UPDATE jobs SET {assignments} WHERE {where}", params)
            except sqlite3.IntegrityError as exc:
                if "upstream_id" in str(exc):
                    raise UpstreamTaskTaken(str(changes.get("upstream_id"))) from exc
                raise
            if cursor.rowcount == 0:
                return None
            return job_from_row(db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone())

        return await self._run(self._transaction, apply)

    def _clean(self, column: str, value: Any) -> Any:
        if column in REDACTED_COLUMNS and isinstance(value, str):
            return self._redactor.redact(value)
        return value

    async def list_jobs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 20,
        person: str | None = None,
    ) -> list[Job]:
        """At most `limit` jobs, newest first, optionally only of one kind and/or status."""
        sql, params = list_jobs_query(kind=kind, status=status, limit=limit, person=person)
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
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
        """Lease up to `limit` active jobs of `upstream` that are due and not held by another live process.

        `exclude` names jobs this process is already working on. Jobs of other upstreams are never leased:
        this process's key and base URL would not find their tasks. `on_takeover` is called with the job
        as it was for each lease taken from another owner (expired, or its process is dead), inside the
        transaction (in a worker thread): it must be quick and must not touch the store.
        """

        def claim(db: sqlite3.Connection) -> list[Job]:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE {ACTIVE_CONDITION} AND {OWN_CONDITION} AND next_poll_at <= ? "
                "ORDER BY next_poll_at",
                (*ACTIVE_STATUSES, *_own_params(upstream), now),
            ).fetchall()
            claimed: list[Job] = []
            for row in rows:
                job = job_from_row(row)
                if job.job_id in exclude or not lease_available(job, owner, now, is_dead):
                    continue
                # A job from before upstreams were recorded becomes this upstream's (see OWN_CONDITION).
                adopted = replace(
                    job,
                    upstream_url=job.upstream_url or upstream.base_url,
                    upstream_key=job.upstream_key if job.upstream_url else upstream.key_fingerprint,
                    lease_owner=owner,
                    lease_expires_at=now + lease_seconds,
                )
                db.execute(
                    "UPDATE jobs SET lease_owner = ?, lease_expires_at = ?, upstream_url = ?, "
                    "upstream_key = ? WHERE job_id = ?",
                    (owner, now + lease_seconds, adopted.upstream_url, adopted.upstream_key, job.job_id),
                )
                claimed.append(adopted)
                if on_takeover is not None and job.lease_owner not in (None, owner):
                    on_takeover(job)
                if len(claimed) >= limit:
                    break
            return claimed

        return await self._run(self._transaction, claim)

    async def next_due_at(
        self,
        owner: str,
        *,
        upstream: Upstream,
        now: float,
        exclude: Collection[str] = (),
        is_dead: Callable[[str], bool] = owner_is_dead,
    ) -> float | None:
        """When the earliest job this process could poll is due (a lease held elsewhere counts from
        its expiry); None when no job of `upstream` is active. `exclude` as in `claim_due_jobs`."""
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT job_id, next_poll_at, lease_owner, lease_expires_at FROM jobs "
                f"WHERE {ACTIVE_CONDITION} AND {OWN_CONDITION}",
                (*ACTIVE_STATUSES, *_own_params(upstream)),
            ).fetchall()
        )
        earliest: float | None = None
        for job_id, next_poll_at, lease_owner, lease_expires_at in rows:
            if job_id in exclude:
                continue
            due = float(next_poll_at)
            if (
                lease_owner not in (None, owner)
                and (lease_expires_at or 0) > now
                and not is_dead(lease_owner)
            ):
                due = max(due, float(lease_expires_at))
            earliest = due if earliest is None else min(earliest, due)
        return earliest

    async def release_lease(self, job_id: str, owner: str) -> None:
        await self._run(
            self._execute,
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE job_id = ? AND lease_owner = ?",
            (job_id, owner),
        )

    async def release_all_leases(self, owner: str) -> None:
        await self._run(
            self._execute,
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?",
            (owner,),
        )

    # -- job changes across processes: none; processes sharing the file re-read it (see jobs.py) ------

    async def publish_job_change(self, job_id: str) -> None:
        return None

    async def follow_job_changes(self, deliver: Callable[[JobChange], Awaitable[None]]) -> None:
        return None

    # -- conversations ---------------------------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        if not is_conversation_id(conversation_id):
            return None

        def read() -> Conversation | None:
            head = self._db.execute(
                "SELECT * FROM conversations WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            if head is None:
                return None
            rows = self._db.execute(
                "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
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

        return await self._run(read)

    async def save_turn(
        self,
        conversation_id: str | None,
        *,
        system: str | None,
        model: str | None,
        messages: Sequence[dict[str, str]],
        person: str | None = None,
    ) -> str:
        """Record one chat turn: create the conversation when `conversation_id` is None, else replace its
        system prompt when `system` is given; then append `messages`. Returns the conversation id.

        Turns are committed in groups: the call that finds no write under way writes its turn and every
        turn queued while that write ran, each group in one transaction (one fsync, one worker-thread
        hop), each turn in a savepoint of its own so that a turn that fails fails alone. A burst of 64
        chats ending together would otherwise queue 64 commits one behind another. A turn is written
        once it is taken into a group; a caller cancelled before that leaves nothing written.

        Every text is redacted first: an answer that echoes a secret is stored (and later re-sent as
        history) with `[redacted]` in its place, which is also what the caller was shown."""
        redact = self._redactor.redact
        turn = _Turn(
            conversation_id,
            None if system is None else redact(system),
            model,
            [{**m, "content": redact(m["content"])} for m in messages],
            person,
        )
        self._queued_turns.append(turn)
        if not self._writing_turns:
            await self._write_queued_turns()
        try:
            await turn.done.wait()
        except anyio.get_cancelled_exc_class():
            if turn in self._queued_turns:
                self._queued_turns.remove(turn)
            else:  # being written: the write finishes first, as a single write would
                with anyio.CancelScope(shield=True):
                    await turn.done.wait()
            raise
        if turn.error is not None:
            raise turn.error
        assert turn.saved_as is not None
        return turn.saved_as

    async def _write_queued_turns(self) -> None:
        self._writing_turns = True
        try:
            # Shielded: the group holds other calls' turns, which must be written even if this one's
            # caller is cancelled meanwhile.
            with anyio.CancelScope(shield=True):
                while self._queued_turns:
                    group, self._queued_turns = self._queued_turns, []
                    try:
                        await self._run(self._transaction, functools.partial(self._save_turns, turns=group))
                    except BaseException as exc:
                        for turn in group:
                            turn.saved_as, turn.error = None, exc
                        if not isinstance(exc, Exception):
                            raise
                    finally:
                        for turn in group:
                            turn.done.set()
        finally:
            self._writing_turns = False
            for turn in self._queued_turns:  # left only when the writer itself was stopped
                turn.error = StoreError("the conversation store stopped before this turn was written")
                turn.done.set()
            self._queued_turns = []

    def _save_turns(self, db: sqlite3.Connection, *, turns: Sequence[_Turn]) -> None:
        """Write `turns` inside the caller's transaction, each in a savepoint. A fault of the machine (a
        full disk…) fails the whole group; anything else fails its own turn only."""
        for turn in turns:
            turn.saved_as, turn.error = None, None
            db.execute("SAVEPOINT turn")
            try:
                turn.saved_as = _save_turn(db, turn)
            except sqlite3.Error as exc:
                if _machine_fault(exc, self.path) is not None:
                    raise
                db.execute("ROLLBACK TO turn")
                turn.error = exc
            db.execute("RELEASE turn")

    # -- spend ledger ----------------------------------------------------------------------------

    async def record_charge(self, charge: Charge) -> None:
        """Add a charge to the ledger; a job's charge replaces the one recorded for that job before."""
        await self._run(
            self._execute,
            f"INSERT INTO charges ({CHARGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET "
            "cost_picodollars = excluded.cost_picodollars, request_id = excluded.request_id",
            charge.row(),
        )

    async def spend(self, upstream: Upstream, *, since: float, person: str | None = None) -> SpendTotal:
        """The charges of `upstream` at or after `since` (Unix time); with `person`, only theirs."""
        sql = (
            "SELECT coalesce(sum(cost_picodollars), 0), count(*), count(*) - count(cost_picodollars) "
            "FROM charges WHERE upstream_url = ? AND upstream_key IS ? AND at >= ?"
        )
        params: list[Any] = [upstream.base_url, upstream.key_fingerprint, since]
        if person is not None:
            sql += " AND person = ?"
            params.append(person)
        row = await self._run(lambda: self._db.execute(sql, params).fetchone())
        return SpendTotal(known_usd=Decimal(row[0]) / PICODOLLARS, charges=row[1], unknown=row[2])

    # -- operations (the HTTP server's /readyz and /metrics) ---------------------------------------

    async def job_counts(self) -> dict[tuple[str, str], int]:
        """How many jobs there are of each (kind, status)."""
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT kind, status, count(*) FROM jobs GROUP BY kind, status"
            ).fetchall()
        )
        return {(kind, status): count for kind, status, count in rows}

    async def due_count(self, now: float) -> int:
        """How many active jobs are due for a poll (or a resubmit) at `now`, leased or not."""
        row = await self._run(
            lambda: self._db.execute(
                f"SELECT count(*) FROM jobs WHERE {ACTIVE_CONDITION} AND next_poll_at <= ?",
                (*ACTIVE_STATUSES, now),
            ).fetchone()
        )
        return int(row[0])

    # -- cache -----------------------------------------------------------------------------------

    async def cache_put(self, key: str, value: Any) -> None:
        await self._run(
            self._execute,
            "INSERT OR REPLACE INTO cache (key, value, stored_at) VALUES (?, ?, ?)",
            (key, json.dumps(self._redactor.scrub(value), ensure_ascii=False), time.time()),
        )

    async def cache_get(self, key: str) -> Any:
        row = await self._run(
            lambda: self._db.execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else json.loads(row[0])


@dataclass(eq=False)
class _Turn:
    """One `save_turn` call, waiting for the group write that takes it."""

    conversation_id: str | None
    system: str | None
    model: str | None
    messages: list[dict[str, str]]
    person: str | None
    done: anyio.Event = field(default_factory=anyio.Event)
    saved_as: str | None = None
    error: BaseException | None = None


def _save_turn(db: sqlite3.Connection, turn: _Turn) -> str:
    now = time.time()
    if turn.conversation_id is None:
        conversation_id = f"conv_{secrets.token_hex(8)}"
        db.execute(
            "INSERT INTO conversations (conversation_id, system, model, created_at, updated_at, person) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (conversation_id, turn.system, turn.model, now, now, turn.person),
        )
    else:
        conversation_id = turn.conversation_id
        if turn.system is not None:
            db.execute(
                "UPDATE conversations SET system = ? WHERE conversation_id = ?",
                (turn.system, conversation_id),
            )
    if turn.messages:
        _append(db, conversation_id, turn.messages)
    return conversation_id


def _append(db: sqlite3.Connection, conversation_id: str, messages: Sequence[dict[str, str]]) -> None:
    last = db.execute(
        "SELECT coalesce(max(seq), 0) FROM messages WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()[0]
    db.executemany(
        "INSERT INTO messages (conversation_id, seq, role, content) VALUES (?, ?, ?, ?)",
        [(conversation_id, last + i, m["role"], m["content"]) for i, m in enumerate(messages, 1)],
    )
    db.execute(
        "UPDATE conversations SET updated_at = ? WHERE conversation_id = ?", (time.time(), conversation_id)
    )


def _connect(path: Path) -> sqlite3.Connection:
    """A configured connection to an up-to-date database at `path`; StoreError when that cannot be had.

    Processes that start together race to switch a new file to WAL; SQLite answers the loser "database
    is locked" at once, without waiting on its busy timeout, so that is retried here (blocking: this
    runs in a worker thread) for up to the busy timeout.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot open the state database {path}: {exc}") from None
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = 0.01
    while True:
        try:
            return _configured_connection(path)
        except sqlite3.Error as exc:
            fault = _machine_fault(exc, path)
            if fault == "locked" and time.monotonic() + pause < deadline:
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            if fault is not None and fault != "damaged":
                raise StoreWriteError(_explain(fault, exc, path)) from None
            raise StoreError(
                f"the state database {path} is unusable ({exc}); move it aside and restart "
                "(jobs and conversations in it will be forgotten)"
            ) from None


def _configured_connection(path: Path) -> sqlite3.Connection:
    """Open, configure and migrate; the connection is closed again if any step fails."""
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a job row (and its idempotency key) must be on disk before the paid request leaves.
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        _migrate(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


# -- failures of the machine -------------------------------------------------------------------------

Fault = Literal["disk full", "file-size limit", "read-only", "i/o error", "locked", "cannot open", "damaged"]

# SQLite's primary result codes (the low byte of an extended code) for the failures of the machine.
_FAULT_BY_CODE: dict[int, Fault] = {
    5: "locked",  # SQLITE_BUSY
    8: "read-only",  # SQLITE_READONLY
    10: "i/o error",  # SQLITE_IOERR
    11: "damaged",  # SQLITE_CORRUPT
    13: "disk full",  # SQLITE_FULL
    14: "cannot open",  # SQLITE_CANTOPEN
    26: "damaged",  # SQLITE_NOTADB
}
# Python 3.10 does not expose the code; SQLite's fixed English messages identify it instead.
_FAULT_BY_MESSAGE: tuple[tuple[str, Fault], ...] = (
    ("database or disk is full", "disk full"),
    ("readonly database", "read-only"),
    ("disk i/o error", "i/o error"),
    ("database is locked", "locked"),
    ("unable to open database file", "cannot open"),
    ("malformed", "damaged"),
    ("file is not a database", "damaged"),
)
LOW_SPACE_BYTES = 1024 * 1024
"""With less free space than this, a failed write is put down to a full disk."""


def _machine_fault(exc: sqlite3.Error, path: Path) -> Fault | None:
    """What about the machine made `exc` happen; None when it is not the machine (a constraint
    violation or a misuse is the program's business and keeps its own exception)."""
    if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        fault = _FAULT_BY_CODE.get(code & 0xFF)
    else:
        text = str(exc).lower()
        fault = next((found for phrase, found in _FAULT_BY_MESSAGE if phrase in text), None)
    if fault in ("disk full", "i/o error"):
        # SQLite says "full" for any short write and "I/O error" for EFBIG as for EIO: look at the
        # machine to tell a full disk, a file-size limit (ulimit -f) and a failing device apart.
        if _free_bytes(path.parent) < LOW_SPACE_BYTES:
            return "disk full"
        if _near_file_size_limit(path):
            return "file-size limit"
    return fault


def _explain(fault: Fault, exc: sqlite3.Error, path: Path) -> str:
    """One line: what failed, where, and what to free or fix."""
    folder = path.parent
    if fault == "disk full":
        free = _free_bytes(folder) / (1024 * 1024)
        return (
            f"Cannot write the state database {path}: the disk is full ({free:.1f} MiB free). Free disk "
            f"space on the volume holding {folder} (or point {HOME_VAR} at a volume with room), then retry."
        )
    if fault == "file-size limit":
        return (
            f"Cannot write the state database {path}: a write went past this process's file-size limit "
            f"({_file_size_limit()} bytes). Raise the file-size limit (ulimit -f unlimited where the host "
            "starts alltoken-mcp), then retry."
        )
    if fault == "read-only":
        return (
            f"Cannot write the state database {path}: it is read-only. Make {path}, its -wal and -shm files "
            f"and {folder} writable for this user (check the permissions, a read-only mount, or an "
            "immutable flag: chattr -i), then retry."
        )
    if fault == "i/o error":
        return (
            f"Cannot read or write the state database {path}: the disk reported an I/O error. Check the "
            f"volume holding {folder} (free space, quotas, device errors in dmesg), then retry."
        )
    if fault == "locked":
        return (
            f"The state database {path} stayed locked by another process for over {BUSY_TIMEOUT_SECONDS} s. "
            f"Retry; if it persists, stop any stuck alltoken-mcp process that uses the same {HOME_VAR}."
        )
    if fault == "cannot open":
        return (
            f"Cannot open the state database {path} or its -wal/-shm files. Make sure {folder} exists and is "
            "writable for this user, then retry."
        )
    return (  # damaged
        f"The state database {path} is damaged ({exc}); move it aside and restart "
        "(jobs and conversations in it will be forgotten)."
    )


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return LOW_SPACE_BYTES  # unknown: do not claim the disk is full


def _file_size_limit() -> int | None:
    """This process's soft RLIMIT_FSIZE in bytes, or None when unlimited (or on Windows)."""
    if sys.platform == "win32":
        return None
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _near_file_size_limit(path: Path) -> bool:
    """Whether the database or its WAL has grown to within a few pages of the file-size limit."""
    limit = _file_size_limit()
    if limit is None:
        return False
    sizes = []
    for name in (path.name, f"{path.name}-wal"):
        with suppress(OSError):
            sizes.append((path.parent / name).stat().st_size)
    return max(sizes, default=0) + 64 * 1024 >= limit


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION; concurrent openers serialise on BEGIN IMMEDIATE."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the state database {path} has schema version {version}, newer than this alltoken-mcp "
                f"understands ({SCHEMA_VERSION}); upgrade alltoken-mcp or point ALLTOKEN_MCP_HOME elsewhere"
            )
        for number, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
            for statement in _statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _statements(script: str) -> Iterable[str]:
    # executescript() would COMMIT our transaction; the migration scripts hold no literal semicolons.
    return (part.strip() for part in script.split(";") if part.strip())
