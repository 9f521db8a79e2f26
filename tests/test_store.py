"""The state database: schema and migrations, jobs and leases across connections, conversations, cache."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from alltoken_mcp.settings import Upstream, key_fingerprint
from alltoken_mcp.store import (
    _JOB_COLUMNS,
    _MIGRATIONS,
    SCHEMA_VERSION,
    Job,
    Store,
    StoreError,
    _to_column,
    new_job_id,
    owner_is_dead,
    process_owner,
)

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
    store = await Store.open(tmp_path / "state" / "db.sqlite3")
    await store.close()
    db = sqlite3.connect(tmp_path / "state" / "db.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await Store.open(path)
    job = make_job()
    await store.insert_job(job)
    await store.close()
    store = await Store.open(path)
    try:
        assert await store.get_job(job.job_id) == job
    finally:
        await store.close()


_ADDED_AFTER = {1: ("download_failures", "upstream_url", "upstream_key"), 2: ("upstream_url", "upstream_key")}
"""The job columns that later migrations added, by the schema version that lacks them."""


def _old_database(path: Path, job: Job, version: int) -> None:
    """A database as release schema `version` left it, holding `job`."""
    db = sqlite3.connect(path)
    for script in _MIGRATIONS[:version]:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
    columns = [c for c in _JOB_COLUMNS if c not in _ADDED_AFTER[version]]
    db.execute(
        f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [_to_column(c, getattr(job, c)) for c in columns],
    )
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


async def test_a_version_1_database_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    job = make_job(status="processing", poll_failures=3, upstream_url=None, upstream_key=None)
    await anyio.to_thread.run_sync(_old_database, path, job, 1)
    store = await Store.open(path)
    try:
        assert await store.get_job(job.job_id) == job
        updated = await store.update_job(job.job_id, download_failures=2)
        assert updated is not None
        assert updated.download_failures == 2
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    db.close()


async def test_a_version_2_job_belongs_to_no_upstream_until_a_server_with_a_key_leases_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    job = make_job(status="processing", upstream_url=None, upstream_key=None)
    await anyio.to_thread.run_sync(_old_database, path, job, 2)
    keyless = Upstream(HERE.base_url, None)
    store = await Store.open(path)
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


async def test_only_jobs_of_the_claiming_upstream_are_leased_or_waited_for(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
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
    finally:
        await store.close()


async def test_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this alltoken-mcp"):
        await Store.open(path)


async def test_corrupt_file_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"unusable.*move it aside"):
        await Store.open(path)


async def test_unopenable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the state database"):
        await Store.open(blocker / "db.sqlite3")


async def test_job_round_trip_update_and_listing(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        older = make_job(created_at=1.0, kind="video")
        newer = make_job(created_at=2.0)
        await store.insert_job(older)
        await store.insert_job(newer)
        updated = await store.update_job(
            older.job_id, status="completed", files=[{"path": "/x.mp4", "bytes": 3}], cancel_requested=True
        )
        assert updated is not None
        assert updated.status == "completed"
        assert updated.files == [{"path": "/x.mp4", "bytes": 3}]
        assert updated.cancel_requested is True
        assert updated.updated_at >= older.updated_at
        assert [j.job_id for j in await store.list_jobs()] == [newer.job_id, older.job_id]
        assert [j.job_id for j in await store.list_jobs(kind="video")] == [older.job_id]
        assert [j.job_id for j in await store.list_jobs(status="queued")] == [newer.job_id]
        assert [j.job_id for j in await store.list_jobs(limit=1)] == [newer.job_id]
        assert [j.job_id for j in await store.list_jobs() if j.active] == [newer.job_id]
        with pytest.raises(ValueError, match="unknown job fields"):
            await store.update_job(older.job_id, bogus=1)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "job_id", ["../../etc/passwd", "job_'; DROP TABLE jobs;--", "JOB_0123456789abcdef", ""]
)
async def test_malformed_job_ids_never_reach_sql(tmp_path: Path, job_id: str) -> None:
    """A row stored under the malformed id (by hand, or by a release without the check) is there to be
    found: only the id check keeps `get_job` from looking it up."""
    path = tmp_path / "db.sqlite3"
    store = await Store.open(path)
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
    store = await Store.open(path)
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


async def test_update_with_owner_fails_once_the_lease_is_lost(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        job = make_job()
        await store.insert_job(job)
        claimed = await store.claim_due_jobs("a", upstream=HERE, now=time.time(), lease_seconds=30, limit=10)
        assert [j.job_id for j in claimed] == [job.job_id]
        assert await store.update_job(job.job_id, owner="b", status="completed") is None
        assert (await store.get_job(job.job_id)).status == "queued"  # type: ignore[union-attr]
        assert await store.update_job(job.job_id, owner="a", status="processing") is not None
    finally:
        await store.close()


async def test_leases_are_exclusive_across_connections_until_they_expire(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    first, second = await Store.open(path), await Store.open(path)
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


async def test_a_dead_owners_lease_is_taken_over_at_once(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
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
    finally:
        await store.close()


def test_owner_is_dead_checks_real_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = process_owner()
    host, _pid, _ = me.split(":")
    assert not owner_is_dead(me)
    assert owner_is_dead(f"{host}:{child.pid}:abcd")
    assert not owner_is_dead(f"another-host:{child.pid}:abcd")  # cannot tell: wait for the lease to expire


async def test_next_due_skips_live_leases_and_idle_is_none(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
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
    finally:
        await store.close()


async def test_conversations_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await Store.open(path)
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
    store = await Store.open(path)
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


async def test_concurrent_turns_from_one_process_keep_every_message(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
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
    finally:
        await store.close()


async def test_cache_put_get_replace(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        assert await store.cache_get("k") is None
        await store.cache_put("k", {"a": [1, 2]})
        await store.cache_put("k", {"a": [3]})
        assert await store.cache_get("k") == {"a": [3]}
    finally:
        await store.close()


async def test_save_turn_creates_or_continues_a_conversation_in_one_step(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        first = await store.save_turn(
            None,
            system="be brief",
            model="m",
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        )
        same = await store.save_turn(
            first, system=None, model="m", messages=[{"role": "user", "content": "x"}]
        )
        assert same == first
        await store.save_turn(first, system="be kind", model="m", messages=[])
        conversation = await store.get_conversation(first)
        assert conversation is not None
        assert conversation.system == "be kind"
        assert [m["content"] for m in conversation.messages] == ["hi", "hello", "x"]
        empty = await store.save_turn(None, system=None, model=None, messages=[])
        assert empty != first
        assert (await store.get_conversation(empty)).messages == []  # type: ignore[union-attr]
    finally:
        await store.close()
