"""The small parts of the team server, each on its own: the store's readiness and job counts, lease
takeovers reported by a claim, the signing of media URLs, the route templates metrics label by, the
streaming reader of saved files, and the two settings."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from contextlib import ExitStack, closing
from pathlib import Path

import anyio
import anyio.abc
import psycopg
import pytest

from alltoken_mcp import files
from alltoken_mcp.media_urls import LINK_SECONDS, MediaLinks, MediaTarget
from alltoken_mcp.metrics import route_template
from alltoken_mcp.settings import SettingsError, load_settings
from alltoken_mcp.store import READY_SECONDS, SCHEMA_VERSION, Job, SqliteStore, Store, StoreError
from tests.pgkit import Database
from tests.test_store import HERE, make_job

SECRET = b"s" * 32


async def test_a_fresh_store_is_ready_and_one_with_another_schema_is_not(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = await SqliteStore.open(path)
    try:
        await store.ready()
        with closing(sqlite3.connect(path)) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            db.commit()
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, not {SCHEMA_VERSION}"):
            await store.ready()
    finally:
        await store.close()


async def test_a_closed_store_is_not_ready(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.sqlite3")
    await store.close()
    with pytest.raises(StoreError) as caught:
        await store.ready()
    assert "\n" not in str(caught.value)


async def hold_elsewhere(
    database: Database, release: anyio.Event, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Another process keeps the database busy until `release` (at most READY_SECONDS + 5 s, so that a
    probe that waits for the lock instead of giving up fails the test rather than hanging it): SQLite's
    write lock, or a lock on PostgreSQL's schema_version table (what a long migration or an
    administrator's session would hold)."""
    with ExitStack() as held:
        if database.url is None:
            sqlite = held.enter_context(closing(sqlite3.connect(database.path, isolation_level=None)))
            sqlite.execute("BEGIN IMMEDIATE")
        else:
            postgres = held.enter_context(psycopg.connect(database.url))
            postgres.execute("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE")
        task_status.started()
        with anyio.move_on_after(READY_SECONDS + 5):
            await release.wait()


async def test_a_store_with_no_answer_in_time_is_not_ready_and_is_again_once_free(database: Database) -> None:
    """The probe's bound holds although store calls are not cancellable (a SQLite call runs in a thread,
    a PostgreSQL transaction is shielded): a probe stuck behind a lock would hang the balancer's checks
    and, on PostgreSQL, hold a pooled connection for as long as the lock lasts."""
    store = await database.open()
    job = make_job()
    release = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(hold_elsewhere, database, release)
            # On SQLite a write now waits on the lock, holding the store's one connection.
            tg.start_soon(store.insert_job, job)
            await anyio.wait_all_tasks_blocked()
            started = time.monotonic()
            try:
                with pytest.raises(StoreError) as refused:
                    await store.ready()
            finally:
                took = time.monotonic() - started
                release.set()
        with anyio.fail_after(10):
            await store.ready()
        written = await store.get_job(job.job_id)
    finally:
        await store.close()
    assert took < READY_SECONDS + 1.5
    assert "\n" not in str(refused.value)
    assert written is not None  # the write the probe gave up waiting for went through


async def test_job_counts_and_due_jobs_come_from_the_rows(store: Store) -> None:
    now = time.time()
    await store.insert_job(make_job(status="queued", next_poll_at=now - 1))
    await store.insert_job(make_job(status="processing", next_poll_at=now + 60))
    await store.insert_job(make_job(kind="video", status="processing", next_poll_at=now - 5))
    await store.insert_job(make_job(status="completed", next_poll_at=now - 5))
    assert await store.job_counts() == {
        ("image", "queued"): 1,
        ("image", "processing"): 1,
        ("image", "completed"): 1,
        ("video", "processing"): 1,
    }
    assert await store.due_count(now) == 2  # the completed one and the one due in a minute are not


async def test_a_claim_reports_each_lease_it_takes_from_another_owner(store: Store) -> None:
    now = time.time()
    late = make_job(lease_owner="elsewhere:1:late", lease_expires_at=now - 1)
    free = make_job()
    held = make_job(lease_owner="elsewhere:1:live", lease_expires_at=now + 60)
    taken: list[Job] = []
    for job in (late, free, held):
        await store.insert_job(job)
    claimed = await store.claim_due_jobs(
        "me:1:x",
        upstream=HERE,
        now=now,
        lease_seconds=60,
        limit=10,
        is_dead=lambda owner: False,
        on_takeover=taken.append,
    )
    assert {job.job_id for job in claimed} == {late.job_id, free.job_id}
    assert [(job.job_id, job.lease_owner) for job in taken] == [(late.job_id, "elsewhere:1:late")]


def test_a_signed_url_names_its_file_until_it_expires() -> None:
    links = MediaLinks("https://mcp.example.com", SECRET)
    url = links.url("job_0123456789abcdef", 2, now=1_000_000)
    path, _, query = url.removeprefix("https://mcp.example.com").partition("?")
    params = dict(part.split("=") for part in query.split("&"))
    assert path == "/media/job_0123456789abcdef/2"
    assert params["exp"] == str(1_000_000 + LINK_SECONDS)
    assert len(params["sig"]) == 22
    assert links.check(path, params["exp"], params["sig"], now=1_000_000) == MediaTarget(
        "job_0123456789abcdef", 2
    )
    assert links.check(path, params["exp"], params["sig"], now=1_000_000 + LINK_SECONDS) is not None
    assert links.check(path, params["exp"], params["sig"], now=1_000_001 + LINK_SECONDS) is None


def test_a_url_is_refused_when_anything_in_it_was_changed() -> None:
    links = MediaLinks("https://mcp.example.com", SECRET)
    url = links.url("job_0123456789abcdef", 0, now=1_000_000)
    path, _, query = url.removeprefix("https://mcp.example.com").partition("?")
    params = dict(part.split("=") for part in query.split("&"))
    exp, sig = params["exp"], params["sig"]
    later = str(int(exp) + 3600)
    other_sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert links.check(path, exp, sig, now=1_000_000) is not None
    assert links.check("/media/job_0123456789abcdef/1", exp, sig, now=1_000_000) is None  # another file
    assert links.check("/media/job_fedcba9876543210/0", exp, sig, now=1_000_000) is None  # another job
    assert links.check(path, later, sig, now=1_000_000) is None  # a longer life
    assert links.check(path, exp, other_sig, now=1_000_000) is None
    assert links.check(path, exp, None, now=1_000_000) is None
    assert links.check(path, "-1", sig, now=1_000_000) is None
    assert links.check(path, exp, "é" * 22, now=1_000_000) is None
    assert links.check("/media/../state.sqlite3", exp, sig, now=1_000_000) is None
    # Nonsense where a number belongs is refused too, never an exception (a 500 for the client).
    assert links.check(path, None, sig, now=1_000_000) is None
    assert links.check(path, "soon", sig, now=1_000_000) is None
    assert links.check(path, "9" * 5000, sig, now=1_000_000) is None  # past int()'s digit limit
    assert MediaLinks("https://mcp.example.com", b"t" * 32).check(path, exp, sig, now=1_000_000) is None


def test_without_a_secret_each_process_signs_with_its_own() -> None:
    one = MediaLinks.create("http://127.0.0.1:8000/", None)
    two = MediaLinks.create("http://127.0.0.1:8000", None)
    assert one.public_url == "http://127.0.0.1:8000"
    assert one.secret != two.secret
    assert len(one.secret) == 32
    assert MediaLinks.create("http://x", SECRET).secret == SECRET


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/images/generations/async", "/v1/images/generations/async"),
        ("/v1/images/generations/igen_0123abcd", "/v1/images/generations/{id}"),
        ("/v1/videos/vid_42/cancel", "/v1/videos/{id}/cancel"),
        ("/v1/billing/transactions/req-9f8e", "/v1/billing/transactions/{id}"),
        ("/api-account/health/routes", "/api-account/health/routes"),
        ("/v1/something-new/xyz", "/v1/{id}/{id}"),
    ],
)
def test_metrics_label_upstream_requests_by_route_never_by_id(path: str, template: str) -> None:
    assert route_template(path) == template


async def test_the_streamed_saved_file_is_the_recorded_one_in_pieces(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # a little over 2 MiB: three reads
    path = tmp_path / "a.png"
    path.write_bytes(data)
    pieces = [
        piece
        async for piece in files.SavedFileReader().stream(
            path, size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
    ]
    assert len(pieces) == 3
    assert max(len(p) for p in pieces) == files.READ_CHUNK
    assert b"".join(pieces) == data


async def test_a_saved_file_changed_in_place_is_cut_off_before_its_last_piece(tmp_path: Path) -> None:
    data = b"x" * (files.READ_CHUNK + 10)
    path = tmp_path / "a.png"
    path.write_bytes(b"y" + data[1:])  # same size, other bytes
    received: list[bytes] = []

    async def read_all() -> None:
        async for piece in files.SavedFileReader().stream(
            path, size=len(data), sha256=hashlib.sha256(data).hexdigest()
        ):
            received.append(piece)

    with pytest.raises(files.SavedFileError, match="SHA-256 mismatch"):
        await read_all()
    assert sum(map(len, received)) == files.READ_CHUNK  # the last piece was held back


async def test_a_symlink_in_place_of_the_saved_file_is_refused_before_any_piece(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"x" * 10)
    path = tmp_path / "a.png"
    path.symlink_to(secret)
    with pytest.raises(files.SavedFileError, match="symbolic link"):
        async for _ in files.SavedFileReader().stream(path, size=10, sha256="0" * 64):
            pass


def test_the_media_secret_must_be_long_and_one_word(tmp_path: Path) -> None:
    env = {"ALLTOKEN_MCP_HOME": str(tmp_path)}
    padded = " " + "k" * 32 + "\n"
    assert load_settings({**env, "ALLTOKEN_MCP_MEDIA_SECRET": padded}).media_secret == b"k" * 32
    assert load_settings(env).media_secret is None
    with pytest.raises(SettingsError, match=r"ALLTOKEN_MCP_MEDIA_SECRET is 31 characters; use at least 32"):
        load_settings({**env, "ALLTOKEN_MCP_MEDIA_SECRET": "k" * 31})
    with pytest.raises(SettingsError, match=r"ALLTOKEN_MCP_MEDIA_SECRET must be one word") as refused:
        load_settings({**env, "ALLTOKEN_MCP_MEDIA_SECRET": "k" * 20 + " " + "k" * 20})
    assert "kkkk" not in str(refused.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mcp.example.com", "is not an http(s) URL; expected e.g. https://mcp.example.com"),
        ("https://mcp.example.com/?x=1", "must not carry a query or fragment"),
        ("https://mcp.example.com:0", "has an invalid port"),
        ("https://mcp example.com", "contains whitespace"),
    ],
)
def test_a_bad_public_url_is_refused_in_one_line(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"ALLTOKEN_MCP_PUBLIC_URL={value!r}")) as refused:
        load_settings({"ALLTOKEN_MCP_HOME": str(tmp_path), "ALLTOKEN_MCP_PUBLIC_URL": value})
    assert message in str(refused.value)


def test_the_public_url_loses_its_trailing_slash(tmp_path: Path) -> None:
    env = {"ALLTOKEN_MCP_HOME": str(tmp_path), "ALLTOKEN_MCP_PUBLIC_URL": "https://mcp.example.com/team/"}
    assert load_settings(env).public_url == "https://mcp.example.com/team"
    assert load_settings({"ALLTOKEN_MCP_HOME": str(tmp_path)}).public_url is None
