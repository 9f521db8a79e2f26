"""The state database: schema and migrations, jobs and leases across connections, conversations, cache."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError

from alltoken_mcp.job_records import JobRecord
from alltoken_mcp.settings import Upstream, key_fingerprint
from alltoken_mcp.store import (
    JOB_COLUMNS,
    SCHEMA_VERSION,
    Charge,
    Delivery,
    ImageSource,
    Job,
    MediaFile,
    SpendTotal,
    SqliteStore,
    Store,
    StoreError,
    list_jobs_query,
    new_job_id,
    owner_is_dead,
    process_owner,
    to_column,
)
from alltoken_mcp.store.schema import SQLITE_MIGRATIONS
from tests.pgkit import Database

HERE = Upstream("http://127.0.0.1:9/v1", key_fingerprint("sk-test-key-here"))
"""The upstream of the jobs `make_job` builds and of the claims below."""


def make_job(**changes: object) -> Job:
    now = time.time()
    values: dict[str, object] = dict(
        job_id=new_job_id(),
        kind="image",
        status="queued",
        model="gpt-image-2",
        prompt="a fox",
        request={"model": "gpt-image-2", "prompt": "a fox"},
        idempotency_key="key-1",
        submit_state="pending",
        created_at=now,
        updated_at=now,
        upstream_url=HERE.base_url,
        upstream_key=HERE.key_fingerprint,
    )
    values.update(changes)
    return Job(**values)  # type: ignore[arg-type]


async def test_new_database_gets_current_schema_and_wal(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state" / "db.sqlite3")
    await store.close()
    db = sqlite3.connect(tmp_path / "state" / "db.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await SqliteStore.open(path)
    job = make_job()
    await store.insert_job(job)
    await store.close()
    store = await SqliteStore.open(path)
    try:
        assert await store.get_job(job.job_id) == job
    finally:
        await store.close()


_SPEND_COLUMNS = ("request_id", "cost_usd")
_ADDED_AFTER = {
    1: ("download_failures", "upstream_url", "upstream_key", *_SPEND_COLUMNS, "delivery", "person"),
    2: ("upstream_url", "upstream_key", *_SPEND_COLUMNS, "delivery", "person"),
    3: (*_SPEND_COLUMNS, "delivery", "person"),
    4: (*_SPEND_COLUMNS, "delivery", "person"),
    5: ("delivery", "person"),
    6: ("person",),
}
"""The job columns that later migrations added, by the schema version that lacks them."""


def _old_database(path: Path, job: Job, version: int) -> None:
    """A database as release schema `version` left it, holding `job`."""
    db = sqlite3.connect(path)
    for script in SQLITE_MIGRATIONS[:version]:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
    columns = [c for c in JOB_COLUMNS if c not in _ADDED_AFTER[version]]
    db.execute(
        f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [to_column(c, getattr(job, c)) for c in columns],
    )
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


async def test_a_version_1_database_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    job = make_job(status="processing", poll_failures=3, upstream_url=None, upstream_key=None)
    await anyio.to_thread.run_sync(_old_database, path, job, 1)
    store = await SqliteStore.open(path)
    try:
        assert await store.get_job(job.job_id) == job
        updated = await store.update_job(job.job_id, download_failures=2)
        assert updated is not None
        assert updated.download_failures == 2
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
    db.close()


V3_FILES = (
    '[{"path": "/out/fox_job_0123456789abcdef_0.png", "uri": "alltoken://media/job_0123456789abcdef/0", '
    '"mime_type": "image/png", "bytes": 3, "sha256": "abababababababababababababababababababababababab'
    'abababababababab", "role": "image"}]'
)
V3_SOURCES = (
    '[{"index": 0, "url": "https://r2.example/0.png?X-Amz-Signature=1", "mime_type": "image/png", "role": '
    '"image"}, {"index": 1, "url": null, "mime_type": null, "role": "image"}]'
)
"""The `files` and `sources` of an image job exactly as schema-3 releases wrote them (json.dumps of dicts;
`sources` with the `index` and `role` nothing read)."""


async def test_a_version_3_database_written_by_the_last_release_opens_and_reads_its_files_and_sources(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    job = make_job(job_id="job_0123456789abcdef", status="processing")
    await anyio.to_thread.run_sync(_old_database, path, job, 3)
    db = sqlite3.connect(path)
    db.execute("UPDATE jobs SET files = ?, sources = ? WHERE job_id = ?", (V3_FILES, V3_SOURCES, job.job_id))
    db.commit()
    db.close()
    store = await SqliteStore.open(path)
    try:
        read = await store.get_job(job.job_id)
        assert read is not None
        assert read.files == [
            MediaFile(
                path="/out/fox_job_0123456789abcdef_0.png",
                uri="alltoken://media/job_0123456789abcdef/0",
                mime_type="image/png",
                bytes=3,
                sha256="ab" * 32,
                role="image",
            )
        ]
        assert read.sources == [
            ImageSource(url="https://r2.example/0.png?X-Amz-Signature=1", mime_type="image/png"),
            ImageSource(url=None, mime_type=None),
        ]
        # The record an agent sees has the same files, key for key, as the last release showed.
        assert JobRecord.from_job(read).model_dump(mode="json")["files"] == json.loads(V3_FILES)
        assert await store.update_job(job.job_id, sources=read.sources) is not None
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    rewritten = json.loads(db.execute("SELECT sources FROM jobs").fetchone()[0])
    db.close()
    assert rewritten == [
        {"url": "https://r2.example/0.png?X-Amz-Signature=1", "mime_type": "image/png"},
        {"url": None, "mime_type": None},
    ]


async def test_a_job_whose_stored_files_cannot_be_read_is_a_one_line_store_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await SqliteStore.open(path)
    try:
        job = make_job()
        await store.insert_job(job)
        db = sqlite3.connect(path)
        db.execute("UPDATE jobs SET files = ? WHERE job_id = ?", ('[{"path": "/x.png"}]', job.job_id))
        db.commit()
        db.close()
        with pytest.raises(
            StoreError, match=rf"^job {job.job_id}: its stored files cannot be read \("
        ) as caught:
            await store.get_job(job.job_id)
        assert "\n" not in str(caught.value)
    finally:
        await store.close()


async def test_a_malformed_file_entry_is_refused_before_it_is_written(store: Store) -> None:
    job = make_job()
    await store.insert_job(job)
    with pytest.raises(ValidationError):
        await store.update_job(job.job_id, status="completed", files=[{"path": "/x.png", "bytes": 3}])
    assert await store.get_job(job.job_id) == job


async def test_a_version_2_job_belongs_to_no_upstream_until_a_server_with_a_key_leases_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    job = make_job(status="processing", upstream_url=None, upstream_key=None)
    await anyio.to_thread.run_sync(_old_database, path, job, 2)
    keyless = Upstream(HERE.base_url, None)
    store = await SqliteStore.open(path)
    try:
        assert await store.get_job(job.job_id) == job
        now = time.time()
        # A server without a key could only fail it: it neither waits for it nor takes it.
        assert await store.next_due_at("keyless", upstream=keyless, now=now) is None
        assert (
            await store.claim_due_jobs("keyless", upstream=keyless, now=now, lease_seconds=30, limit=5) == []
        )
        [claimed] = await store.claim_due_jobs("me", upstream=HERE, now=now, lease_seconds=30, limit=5)
        assert (claimed.upstream_url, claimed.upstream_key) == (HERE.base_url, HERE.key_fingerprint)
        assert await store.get_job(job.job_id) == claimed
        await store.release_lease(job.job_id, "me")
        # Adopted: from now on it is that upstream's, and another key no longer sees it.
        other_key = Upstream(HERE.base_url, key_fingerprint("sk-another-account-key"))
        assert await store.claim_due_jobs("b", upstream=other_key, now=now, lease_seconds=30, limit=5) == []
    finally:
        await store.close()


async def test_only_jobs_of_the_claiming_upstream_are_leased_or_waited_for(store: Store) -> None:
    now = time.time()
    mine = make_job(next_poll_at=now + 1)
    other_url = make_job(upstream_url="http://127.0.0.1:8/v1", next_poll_at=now)
    other_key = make_job(upstream_key=key_fingerprint("sk-another-account-key"), next_poll_at=now)
    for job in (mine, other_url, other_key):
        await store.insert_job(job)
    assert await store.next_due_at("me", upstream=HERE, now=now) == pytest.approx(now + 1)
    assert await store.claim_due_jobs("me", upstream=HERE, now=now, lease_seconds=30, limit=5) == []
    claimed = await store.claim_due_jobs("me", upstream=HERE, now=now + 1, lease_seconds=30, limit=5)
    assert [j.job_id for j in claimed] == [mine.job_id]
    for job in (other_url, other_key):
        stored = await store.get_job(job.job_id)
        assert stored == job  # not leased, not adopted
        there = Upstream(job.upstream_url, job.upstream_key)  # type: ignore[arg-type]
        assert [
            j.job_id
            for j in await store.claim_due_jobs("x", upstream=there, now=now, lease_seconds=30, limit=5)
        ] == [job.job_id]


async def test_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this alltoken-mcp"):
        await SqliteStore.open(path)


async def test_corrupt_file_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"unusable.*move it aside"):
        await SqliteStore.open(path)


async def test_unopenable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the state database"):
        await SqliteStore.open(blocker / "db.sqlite3")


async def test_job_round_trip_update_and_listing(store: Store) -> None:
    older = make_job(created_at=1.0, kind="video")
    newer = make_job(created_at=2.0)
    await store.insert_job(older)
    await store.insert_job(newer)
    saved = MediaFile(
        path="/x.mp4",
        uri="alltoken://media/x/0",
        mime_type="video/mp4",
        bytes=3,
        sha256="ab",
        role="video",
    )
    updated = await store.update_job(older.job_id, status="completed", files=[saved], cancel_requested=True)
    assert updated is not None
    assert updated.status == "completed"
    assert updated.files == [saved]
    assert updated.cancel_requested is True
    assert updated.updated_at >= older.updated_at
    assert [j.job_id for j in await store.list_jobs()] == [newer.job_id, older.job_id]
    assert [j.job_id for j in await store.list_jobs(kind="video")] == [older.job_id]
    assert [j.job_id for j in await store.list_jobs(status="queued")] == [newer.job_id]
    assert [j.job_id for j in await store.list_jobs(limit=1)] == [newer.job_id]
    assert [j.job_id for j in await store.list_jobs() if j.active] == [newer.job_id]
    with pytest.raises(ValueError, match="unknown job fields"):
        await store.update_job(older.job_id, bogus=1)


@pytest.mark.parametrize(
    ("kind", "status", "search"),
    [
        (None, None, None),
        (None, "failed", "status=?"),
        ("video", None, "kind=?"),
        ("video", "failed", "kind=? AND status=?"),
    ],
)
async def test_listing_jobs_reads_the_newest_rows_off_an_index_without_sorting(
    tmp_path: Path, kind: str | None, status: str | None, search: str | None
) -> None:
    path = tmp_path / "db.sqlite3"
    await (await SqliteStore.open(path)).close()
    sql, params = list_jobs_query(kind=kind, status=status, limit=20)
    db = sqlite3.connect(path)
    plan = [step for *_, step in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    db.close()
    # A temp B-tree sorts every matching row before the first is returned: 73 ms at 100k jobs.
    assert not any("TEMP B-TREE" in step for step in plan), plan
    if search is None:
        assert plan == ["SCAN jobs USING INDEX jobs_newest_first"], plan
    else:  # every filter is a range of one index, not a test on each row of a scan
        (step,) = plan
        assert step.startswith("SEARCH jobs USING INDEX"), plan
        assert step.endswith(f"({search})"), plan


@pytest.mark.parametrize(
    "job_id", ["../../etc/passwd", "job_'; DROP TABLE jobs;--", "JOB_0123456789abcdef", ""]
)
async def test_malformed_job_ids_never_reach_sql(tmp_path: Path, job_id: str) -> None:
    """A row stored under the malformed id (by hand, or by a release without the check) is there to be
    found: only the id check keeps `get_job` from looking it up."""
    path = tmp_path / "db.sqlite3"
    store = await SqliteStore.open(path)
    try:
        job = make_job()
        await store.insert_job(job)
        await anyio.to_thread.run_sync(_copy_row, path, "jobs", "job_id", job.job_id, job_id)
        assert len(await store.list_jobs()) == 2
        assert await store.get_job(job_id) is None
        assert await store.get_job(job.job_id) == job
    finally:
        await store.close()


@pytest.mark.parametrize("conversation_id", ["conv_../../x", "CONV_0123456789abcdef", "conv_0123", ""])
async def test_malformed_conversation_ids_never_reach_sql(tmp_path: Path, conversation_id: str) -> None:
    path = tmp_path / "db.sqlite3"
    store = await SqliteStore.open(path)
    try:
        kept = await store.save_turn(
            None, system="s", model="m", messages=[{"role": "user", "content": "hi"}]
        )
        await anyio.to_thread.run_sync(
            _copy_row, path, "conversations", "conversation_id", kept, conversation_id
        )
        assert await store.get_conversation(conversation_id) is None
        assert (await store.get_conversation(kept)) is not None
    finally:
        await store.close()


def _copy_row(path: Path, table: str, key: str, source: str, copy: str) -> None:
    """Store a copy of row `source` of `table` under the id `copy`, whatever the table's columns."""
    db = sqlite3.connect(path)
    try:
        db.execute(f"CREATE TEMP TABLE copied AS SELECT * FROM {table} WHERE {key} = ?", (source,))
        db.execute(f"UPDATE copied SET {key} = ?", (copy,))
        if table == "jobs":
            db.execute("UPDATE copied SET upstream_id = NULL")  # upstream ids are unique
        db.execute(f"INSERT INTO {table} SELECT * FROM copied")
        db.commit()
    finally:
        db.close()


async def test_update_with_owner_fails_once_the_lease_is_lost(store: Store) -> None:
    job = make_job()
    await store.insert_job(job)
    claimed = await store.claim_due_jobs("a", upstream=HERE, now=time.time(), lease_seconds=30, limit=10)
    assert [j.job_id for j in claimed] == [job.job_id]
    assert await store.update_job(job.job_id, owner="b", status="completed") is None
    assert (await store.get_job(job.job_id)).status == "queued"  # type: ignore[union-attr]
    assert await store.update_job(job.job_id, owner="a", status="processing") is not None


async def test_leases_are_exclusive_across_connections_until_they_expire(database: Database) -> None:
    first, second = await database.open(), await database.open()
    try:
        jobs = [make_job() for _ in range(6)]
        for job in jobs:
            await first.insert_job(job)
        now = time.time()
        alive = lambda owner: False  # noqa: E731 - both owners are live in this test
        mine = await first.claim_due_jobs(
            "one", upstream=HERE, now=now, lease_seconds=30, limit=4, is_dead=alive
        )
        theirs = await second.claim_due_jobs(
            "two", upstream=HERE, now=now, lease_seconds=30, limit=10, is_dead=alive
        )
        assert len(mine) == 4
        assert len(theirs) == 2
        assert not {j.job_id for j in mine} & {j.job_id for j in theirs}
        assert (
            await second.claim_due_jobs(
                "two", upstream=HERE, now=now, lease_seconds=30, limit=10, is_dead=alive
            )
            == theirs
        )
        # "one" leases expire: "two" takes them over.
        later = await second.claim_due_jobs(
            "two", upstream=HERE, now=now + 31, lease_seconds=30, limit=10, is_dead=alive
        )
        assert {j.job_id for j in later} == {j.job_id for j in jobs}
    finally:
        await first.close()
        await second.close()


async def test_replicas_claiming_at_the_same_moment_never_lease_one_job_twice(database: Database) -> None:
    # Six connections claim two jobs at a time, all at once, until none is left: each job goes to exactly
    # one of them (PostgreSQL: the claim's row locks and SKIP LOCKED; SQLite: its one writer at a time).
    stores = [await database.open() for _ in range(6)]
    try:
        jobs = [make_job() for _ in range(60)]
        for job in jobs:
            await stores[0].insert_job(job)
        now = time.time()
        owners: dict[str, list[str]] = {job.job_id: [] for job in jobs}

        async def claim_until_none_left(owner: str, store: Store) -> None:
            mine: list[str] = []
            while claimed := await store.claim_due_jobs(
                owner,
                upstream=HERE,
                now=now,
                lease_seconds=30,
                limit=2,
                exclude=mine,
                is_dead=lambda _: False,
            ):
                for job in claimed:
                    owners[job.job_id].append(owner)
                    mine.append(job.job_id)

        async with anyio.create_task_group() as tg:
            for index, store in enumerate(stores):
                tg.start_soon(claim_until_none_left, f"replica-{index}", store)
    finally:
        for store in stores:
            await store.close()
    assert {job_id: len(leased_by) for job_id, leased_by in owners.items() if len(leased_by) != 1} == {}


async def test_a_dead_owners_lease_is_taken_over_at_once(store: Store) -> None:
    job = make_job()
    await store.insert_job(job)
    now = time.time()
    await store.claim_due_jobs(
        "ghost", upstream=HERE, now=now, lease_seconds=300, limit=1, is_dead=lambda o: False
    )
    assert (
        await store.claim_due_jobs(
            "me", upstream=HERE, now=now, lease_seconds=30, limit=1, is_dead=lambda o: False
        )
        == []
    )
    taken = await store.claim_due_jobs(
        "me", upstream=HERE, now=now, lease_seconds=30, limit=1, is_dead=lambda o: o == "ghost"
    )
    assert [j.lease_owner for j in taken] == ["me"]


def test_owner_is_dead_checks_real_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = process_owner()
    host, _pid, _ = me.split(":")
    assert not owner_is_dead(me)
    assert owner_is_dead(f"{host}:{child.pid}:abcd")
    assert not owner_is_dead(f"another-host:{child.pid}:abcd")  # cannot tell: wait for the lease to expire


async def test_next_due_skips_live_leases_and_idle_is_none(store: Store) -> None:
    assert await store.next_due_at("me", upstream=HERE, now=time.time()) is None
    now = time.time()
    job = make_job(next_poll_at=now + 5)
    await store.insert_job(job)
    assert await store.next_due_at("me", upstream=HERE, now=now) == pytest.approx(now + 5)
    await store.claim_due_jobs(
        "other", upstream=HERE, now=now + 5, lease_seconds=60, limit=1, is_dead=lambda o: False
    )
    due = await store.next_due_at("me", upstream=HERE, now=now, is_dead=lambda o: False)
    assert due == pytest.approx(now + 65)
    await store.update_job(job.job_id, status="completed")
    assert await store.next_due_at("me", upstream=HERE, now=now) is None


async def test_conversations_survive_reopen(database: Database) -> None:
    store = await database.open()
    conversation_id = await store.save_turn(
        None, system="be brief", model="m", messages=[{"role": "user", "content": "hi"}]
    )
    await store.save_turn(
        conversation_id,
        system="be verbose",
        model="m",
        messages=[{"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}],
    )
    await store.close()
    store = await database.open()
    try:
        conversation = await store.get_conversation(conversation_id)
        assert conversation is not None
        assert conversation.system == "be verbose"
        assert conversation.model == "m"
        assert [m["content"] for m in conversation.messages] == ["hi", "hello", "again"]
        assert await store.get_conversation("conv_0000000000000000") is None
        assert await store.get_conversation("../x") is None
    finally:
        await store.close()


async def test_concurrent_turns_from_one_process_keep_every_message(store: Store) -> None:
    conversation_id = await store.save_turn(None, system=None, model=None, messages=[])

    async def turn(i: int) -> None:
        await store.save_turn(
            conversation_id, system=None, model=None, messages=[{"role": "user", "content": str(i)}]
        )

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(turn, i)
    conversation = await store.get_conversation(conversation_id)
    assert conversation is not None
    assert sorted(int(m["content"]) for m in conversation.messages) == list(range(20))


async def test_turns_written_together_each_keep_their_own_conversation_and_messages(store: Store) -> None:
    saved: dict[int, str] = {}

    async def turn(i: int) -> None:
        saved[i] = await store.save_turn(
            None, system=f"s{i}", model="m", messages=[{"role": "user", "content": f"q{i}"}]
        )

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(turn, i)
    assert len(set(saved.values())) == 30
    for i, conversation_id in saved.items():
        conversation = await store.get_conversation(conversation_id)
        assert conversation is not None
        assert (conversation.system, [m["content"] for m in conversation.messages]) == (
            f"s{i}",
            [f"q{i}"],
        )


async def test_a_turn_that_cannot_be_saved_fails_alone_and_the_turns_written_with_it_are_kept(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        outcomes: dict[str, object] = {}

        async def turn(name: str, conversation_id: str | None) -> None:
            try:
                outcomes[name] = await store.save_turn(
                    conversation_id, system=None, model="m", messages=[{"role": "user", "content": name}]
                )
            except sqlite3.IntegrityError as exc:
                outcomes[name] = exc

        # The first call writes alone; the next two queue behind it and are written as one group.
        async with anyio.create_task_group() as tg:
            tg.start_soon(turn, "first", None)
            tg.start_soon(turn, "orphan", "conv_0000000000000000")  # no such conversation
            tg.start_soon(turn, "sibling", None)
        assert isinstance(outcomes["orphan"], sqlite3.IntegrityError)
        for name in ("first", "sibling"):
            conversation_id = outcomes[name]
            assert isinstance(conversation_id, str)
            conversation = await store.get_conversation(conversation_id)
            assert conversation is not None
            assert [m["content"] for m in conversation.messages] == [name]
    finally:
        await store.close()


async def test_a_turn_cancelled_before_its_write_started_is_not_written(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        cancelled = anyio.CancelScope()

        async def new_conversation() -> None:
            await store.save_turn(None, system=None, model="m", messages=[])

        async def waiting_turn() -> None:
            with cancelled:
                await new_conversation()

        store._lock.acquire()  # the first write waits for the connection, so the second one queues
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(new_conversation)
                tg.start_soon(waiting_turn)
                await anyio.wait_all_tasks_blocked()
                cancelled.cancel()
                await anyio.wait_all_tasks_blocked()
                store._lock.release()
        finally:
            if store._lock.locked():
                store._lock.release()
        assert cancelled.cancelled_caught
        count = await store._run(
            lambda: store._db.execute("SELECT count(*) FROM conversations").fetchone()[0]
        )
        assert count == 1
    finally:
        await store.close()


async def test_turns_queued_behind_a_cancelled_call_are_still_written(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        cancelled = anyio.CancelScope()
        saved: list[str] = []

        async def first_turn() -> None:
            with cancelled:
                saved.append(await store.save_turn(None, system=None, model="m", messages=[]))

        async def queued_turn() -> None:
            saved.append(await store.save_turn(None, system=None, model="m", messages=[]))

        store._lock.acquire()  # the first call's write waits for the connection; the second queues
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(first_turn)
                tg.start_soon(queued_turn)
                await anyio.wait_all_tasks_blocked()
                cancelled.cancel()
                store._lock.release()
        finally:
            if store._lock.locked():
                store._lock.release()
        assert cancelled.cancelled_caught  # the first call was cancelled after its turn was written
        assert len(saved) == 1
        assert await store.get_conversation(saved[0]) is not None
        db = sqlite3.connect(tmp_path / "db.sqlite3")
        try:
            assert db.execute("SELECT count(*) FROM conversations").fetchone()[0] == 2
        finally:
            db.close()
    finally:
        await store.close()


async def test_cache_put_get_replace(store: Store) -> None:
    assert await store.cache_get("k") is None
    await store.cache_put("k", {"a": [1, 2]})
    await store.cache_put("k", {"a": [3]})
    assert await store.cache_get("k") == {"a": [3]}


async def test_save_turn_creates_or_continues_a_conversation_in_one_step(store: Store) -> None:
    first = await store.save_turn(
        None,
        system="be brief",
        model="m",
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    )
    same = await store.save_turn(first, system=None, model="m", messages=[{"role": "user", "content": "x"}])
    assert same == first
    await store.save_turn(first, system="be kind", model="m", messages=[])
    conversation = await store.get_conversation(first)
    assert conversation is not None
    assert conversation.system == "be kind"
    assert [m["content"] for m in conversation.messages] == ["hi", "hello", "x"]
    empty = await store.save_turn(None, system=None, model=None, messages=[])
    assert empty != first
    assert (await store.get_conversation(empty)).messages == []  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ spend ledger


async def test_a_version_4_database_gains_the_ledger_and_its_jobs_read_with_no_known_cost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    job = make_job(status="completed")
    await anyio.to_thread.run_sync(_old_database, path, job, 4)
    store = await SqliteStore.open(path)
    try:
        assert await store.get_job(job.job_id) == job
        assert (job.request_id, job.cost_usd) == (None, None)
        await store.record_charge(Charge("image", "gpt-image-2", Decimal("0.04"), time.time(), HERE))
        assert (await store.spend(HERE, since=0)).known_usd == Decimal("0.04")
    finally:
        await store.close()


async def test_the_ledger_sums_known_costs_exactly_and_counts_the_unknown_ones(store: Store) -> None:
    now = time.time()
    other = Upstream(HERE.base_url, key_fingerprint("sk-another-key-0000"))
    for cost in ("0.0000188000", "0.1", "0.2"):  # 0.1 + 0.2 is not 0.3 in floating point
        await store.record_charge(Charge("chat", "m", Decimal(cost), now, HERE, request_id="r"))
    await store.record_charge(Charge("video", "v", None, now, HERE, job_id="job_1"))
    await store.record_charge(Charge("chat", "m", Decimal(7), now - 86400, HERE))  # before `since`
    await store.record_charge(Charge("chat", "m", Decimal(9), now, other))  # another key's
    today = await store.spend(HERE, since=now - 60)
    assert today == SpendTotal(known_usd=Decimal("0.3000188"), charges=4, unknown=1)
    assert (await store.spend(HERE, since=0)).known_usd == Decimal("7.3000188")
    assert (await store.spend(other, since=0)).known_usd == Decimal(9)


async def test_a_jobs_charge_is_recorded_once_and_a_later_known_cost_replaces_the_unknown_one(
    store: Store,
) -> None:
    await store.record_charge(Charge("image", "m", None, time.time(), HERE, job_id="job_1"))
    await store.record_charge(Charge("image", "m", Decimal("0.05"), time.time(), HERE, job_id="job_1"))
    assert await store.spend(HERE, since=0) == SpendTotal(Decimal("0.05"), charges=1, unknown=0)


async def test_a_jobs_delivery_is_stored_as_given_and_absent_is_null(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        where = Delivery(directory="/home/me/project/clips", name="sea.mp4", overwrite=True, preview=False)
        placed = make_job(delivery=where)
        plain = make_job()
        bare = make_job()
        await store.insert_job(placed)
        await store.insert_job(plain)
        await store.insert_job(bare)
        assert (await store.get_job(placed.job_id)) == placed
        assert (await store.get_job(plain.job_id)) == plain
        moved = await store.update_job(plain.job_id, delivery=Delivery(preview=False))
        assert moved is not None
        assert moved.delivery == Delivery(preview=False)
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    rows = dict(db.execute("SELECT job_id, delivery FROM jobs").fetchall())
    db.close()
    assert rows[placed.job_id] is not None
    assert '"name":"sea.mp4"' in rows[placed.job_id]
    assert rows[bare.job_id] is None  # SQL NULL, not the JSON text "null"
