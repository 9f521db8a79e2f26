"""The store's rules that mutation testing (benchmarks/mutation.py store) found without a failing test:
one job per upstream task, updates of a finished job, the listing's limit and combined filters, when the
next job is due, whose job is whose, redaction at the store boundary, and conversations read back whole."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alltoken_mcp.redact import REDACTED, Redactor
from alltoken_mcp.settings import Upstream, key_fingerprint
from alltoken_mcp.store import Job, SqliteStore, Store, UpstreamTaskTaken, new_job_id, owner_is_dead
from tests.pgkit import Database
from tests.test_store import HERE, make_job

SECRET = "sk-live-store-guard-0123456789"


async def test_one_upstream_task_belongs_to_one_job(store: Store) -> None:
    first, second = make_job(upstream_id="vgen_shared"), make_job()
    await store.insert_job(first)
    await store.insert_job(second)
    with pytest.raises(
        UpstreamTaskTaken, match=r"^AllToken task vgen_shared already belongs to another job$"
    ):
        await store.update_job(second.job_id, upstream_id="vgen_shared")
    assert (await store.get_job(second.job_id)).upstream_id is None  # type: ignore[union-attr]
    assert (await store.find_job_by_upstream("vgen_shared")) == first


async def test_a_well_formed_id_that_is_not_stored_is_none(store: Store) -> None:
    assert await store.get_job(new_job_id()) is None
    assert await store.get_conversation("conv_0123456789abcdef") is None
    assert await store.find_job_by_upstream("vgen_nobody") is None


async def test_a_finished_job_is_updated_unless_only_active_ones_may_be(store: Store) -> None:
    job = make_job(status="completed")
    await store.insert_job(job)
    assert await store.update_job(job.job_id, only_if_active=True, status="cancelled") is None
    noted = await store.update_job(job.job_id, note="Nothing to cancel: the job is already completed.")
    assert noted is not None
    assert (noted.status, noted.note) == ("completed", "Nothing to cancel: the job is already completed.")
    assert noted.updated_at >= job.updated_at


async def test_the_listing_is_newest_first_twenty_by_default_and_filters_combine(store: Store) -> None:
    jobs = [make_job(created_at=float(i), kind="video" if i % 2 else "image") for i in range(25)]
    jobs[3] = make_job(created_at=3.0, kind="video", status="failed")
    for job in jobs:
        await store.insert_job(job)
    listed = await store.list_jobs()
    assert [j.job_id for j in listed] == [j.job_id for j in reversed(jobs)][:20]
    failed_videos = await store.list_jobs(kind="video", status="failed")
    assert [j.job_id for j in failed_videos] == [jobs[3].job_id]
    assert await store.list_jobs(kind="image", status="failed") == []


async def test_the_next_due_job_counts_live_leases_from_their_expiry(database: Database) -> None:
    """Each job's due time as `next_due_at` must see it: its own poll time, or a live other owner's
    lease expiry; the earliest of them wins, wherever it is in the table, and excluded jobs do not count."""
    store = await database.open()
    now = time.time()
    try:
        excluded = make_job(next_poll_at=now - 50)
        leased_live = make_job(next_poll_at=now - 40, lease_owner="alive", lease_expires_at=now + 30)
        leased_dead = make_job(next_poll_at=now + 20, lease_owner="dead", lease_expires_at=now + 300)
        expired = make_job(next_poll_at=now - 5, lease_owner="alive", lease_expires_at=now)  # ends now
        mine = make_job(next_poll_at=now + 15, lease_owner="me", lease_expires_at=now + 300)
        for job in (excluded, leased_live, leased_dead, expired, mine):
            await store.insert_job(job)

        async def due(*, exclude: set[str]) -> float | None:
            return await store.next_due_at(
                "me", upstream=HERE, now=now, exclude=exclude, is_dead=lambda owner: owner == "dead"
            )

        assert await due(exclude={excluded.job_id}) == now - 5  # `expired`: its lease no longer counts
        assert await due(exclude={excluded.job_id, expired.job_id}) == now + 15  # `mine`: my own lease
        rest = {excluded.job_id, expired.job_id, mine.job_id}
        assert await due(exclude=rest) == now + 20  # `leased_dead`: a dead owner's lease does not count
        assert await due(exclude=rest | {leased_dead.job_id}) == now + 30  # a live lease: its expiry
        assert await due(exclude=set()) == now - 50
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("job_upstream", "server", "belongs"),
    [
        ((HERE.base_url, HERE.key_fingerprint), HERE, True),
        (
            (HERE.base_url, HERE.key_fingerprint),
            Upstream(HERE.base_url, key_fingerprint("sk-other-key")),
            False,
        ),
        (
            (HERE.base_url, HERE.key_fingerprint),
            Upstream("http://elsewhere.example/v1", HERE.key_fingerprint),
            False,
        ),
        ((HERE.base_url, HERE.key_fingerprint), Upstream(HERE.base_url, None), False),
        ((None, None), HERE, True),  # recorded before upstreams were: a server with a key takes it
        ((None, None), Upstream(HERE.base_url, None), False),
    ],
)
def test_a_job_belongs_only_to_the_upstream_it_records(
    job_upstream: tuple[str | None, str | None], server: Upstream, belongs: bool
) -> None:
    url, key = job_upstream
    assert make_job(upstream_url=url, upstream_key=key).belongs_to(server) is belongs


async def test_upstream_texts_are_redacted_when_stored_and_requests_are_not(database: Database) -> None:
    store = await database.open(redactor=Redactor.for_secrets([("KEY", SECRET)]))
    try:
        job = make_job(error_message=f"echoed {SECRET}", prompt=f"a prompt with {SECRET}")
        await store.insert_job(job)
        stored = await store.get_job(job.job_id)
        assert stored is not None
        assert stored.error_message == f"echoed {REDACTED}"
        assert stored.prompt == f"a prompt with {SECRET}"  # re-sent byte-identical on a retry
        updated = await store.update_job(job.job_id, note=f"upstream said {SECRET}", error_code=SECRET)
        assert updated is not None
        assert (updated.note, updated.error_code) == (f"upstream said {REDACTED}", REDACTED)
        conversation = await store.save_turn(
            None,
            system=f"system {SECRET}",
            model="m",
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": f"it is {SECRET}"}],
        )
        saved = await store.get_conversation(conversation)
        assert saved is not None
        assert saved.system == f"system {REDACTED}"
        assert saved.messages[1] == {"role": "assistant", "content": f"it is {REDACTED}"}
        await store.cache_put("listing", {"note": SECRET})
        assert await store.cache_get("listing") == {"note": REDACTED}
    finally:
        await store.close()


async def test_a_conversation_reads_back_whole(store: Store) -> None:
    before = time.time()
    conversation_id = await store.save_turn(
        None, system="be brief", model="m1", messages=[{"role": "user", "content": "q1"}]
    )
    await store.save_turn(
        conversation_id,
        system=None,
        model=None,
        messages=[{"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}],
    )
    saved = await store.get_conversation(conversation_id)
    assert saved is not None
    assert (saved.conversation_id, saved.system, saved.model) == (conversation_id, "be brief", "m1")
    assert saved.messages == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert before <= saved.created_at <= saved.updated_at <= time.time()


async def test_a_database_in_a_folder_that_does_not_exist_yet_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "state.sqlite3"
    store = await SqliteStore.open(path)
    await store.close()
    assert path.is_file()


def test_checking_an_owner_leaves_a_live_process_running() -> None:
    """`owner_is_dead` probes with signal 0: a live owner is reported alive and keeps running."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert not owner_is_dead(f"{socket.gethostname()}:{child.pid}:abcd")
        assert child.poll() is None
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


async def test_a_lease_that_ends_now_is_free_to_take(database: Database) -> None:
    store = await database.open()
    now = time.time()
    try:
        job = make_job(lease_owner="alive", lease_expires_at=now)
        await store.insert_job(job)
        taken = await store.claim_due_jobs(
            "me", upstream=HERE, now=now, lease_seconds=30, limit=1, is_dead=lambda owner: False
        )
        assert [j.job_id for j in taken] == [job.job_id]
    finally:
        await store.close()


async def test_a_claim_takes_the_most_overdue_active_jobs_up_to_its_limit_leaving_out_the_excluded(
    store: Store,
) -> None:
    now = time.time()
    oldest, older, old = (make_job(next_poll_at=now - age) for age in (30, 20, 10))
    excluded = make_job(next_poll_at=now - 40)  # this process is already working on it
    finished = make_job(status="completed", next_poll_at=now - 50)
    for job in (old, excluded, finished, older, oldest):
        await store.insert_job(job)
    claimed = await store.claim_due_jobs(
        "me", upstream=HERE, now=now, lease_seconds=30, limit=2, exclude=[excluded.job_id]
    )
    assert [j.job_id for j in claimed] == [oldest.job_id, older.job_id]
    left = await store.get_job(old.job_id)
    assert left is not None
    assert left.lease_owner is None  # past the limit: not leased


async def test_taking_back_ones_own_expired_lease_is_not_a_takeover(store: Store) -> None:
    now = time.time()
    mine = make_job(lease_owner="me", lease_expires_at=now - 1)
    taken: list[Job] = []
    await store.insert_job(mine)
    claimed = await store.claim_due_jobs(
        "me", upstream=HERE, now=now, lease_seconds=30, limit=10, on_takeover=taken.append
    )
    assert [j.job_id for j in claimed] == [mine.job_id]
    assert taken == []
