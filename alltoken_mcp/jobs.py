"""Media job lifecycle: submit idempotently, poll under a lease, deliver files, cancel.

The rules this module exists to keep (design.md, "Behaviour that users rely on"):

* Never pay twice. A job row with its `Idempotency-Key` is on disk before the create request leaves.
  An unknown outcome (connection lost, 5xx after retries, a crash) is resolved by resending with the same
  key while AllToken still remembers it (adopting `duplicate_request`'s task id), and after that window by
  reconciling through the video list, or by saying truthfully that the submit was not repeated.
* Never lose a paid result. An image's bytes are delivered once: its `r2_url` fallbacks are recorded
  first, the files are written atomically, and only then is the job marked completed.
* One poller per job. Each server process runs `JobManager.run`, which leases due jobs in the shared
  store, so several processes never claim the same image. Waiters never poll upstream themselves: they
  watch the store, so many callers on one job cost one upstream poll per interval.
* Replicas share the work. On a PostgreSQL store every job change is published to the other replicas
  (`publish_job_change`, NOTIFY): a waiter on one replica wakes as soon as another finishes its job, and
  resource subscribers everywhere are told (`follow_other_processes`).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from alltoken_mcp import budget, destinations, files
from alltoken_mcp.client import DEFAULT_TIMEOUT, AllTokenClient, RetryPolicy
from alltoken_mcp.client.models import ImageDatum, ImageTask, VideoTask
from alltoken_mcp.errors import (
    AllTokenError,
    APIStatusError,
    ConflictError,
    DuplicateRequestError,
    GoneError,
    IdempotencyWindowClosedError,
    MalformedResponseError,
    MissingAPIKeyError,
    NotFoundError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
)
from alltoken_mcp.job_records import JobRecord, belongs_to, media_uri
from alltoken_mcp.settings import Settings, Upstream
from alltoken_mcp.spend import SpendLedger, media_cost
from alltoken_mcp.store import (
    Delivery,
    ImageSource,
    Job,
    JobChange,
    JobKind,
    JobStatus,
    MediaFile,
    MediaRole,
    Store,
    StoreError,
    StoreWriteError,
    UpstreamTaskTaken,
    new_job_id,
)

logger = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
"""How long a poll lease lasts; it is taken for one step (a poll and any delivery) and released after.
A dead process's lease is taken over at once when its pid can be checked (same host), otherwise when
it expires. A step that outlives it (a very slow download) may be repeated by another process; the
owner-guarded final update keeps exactly one result."""
IDLE_RECHECK_SECONDS = 2.0
"""With no job due, the poller re-reads the store this often (no upstream request) to notice jobs
created by other processes or leases freed by dead ones."""
IDEMPOTENCY_TRUST_SECONDS = 50.0
"""AllToken remembers an Idempotency-Key for about 60 s; resubmit with the stored key only inside this."""
DEFAULT_POLL_SECONDS = 2.0
MIN_POLL_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 60.0
STEP_BACKOFF = RetryPolicy(base_delay=1.0, max_delay=MAX_BACKOFF_SECONDS, max_retry_after=MAX_BACKOFF_SECONDS)
"""The wait after a failed step: the server's Retry-After, else the client's full-jitter backoff (jittered
so the jobs of one outage do not all retry in the same second when it ends)."""
MIN_STEP_BACKOFF_SECONDS = 1.0
MAX_TRANSIENT_STEPS = 50
"""Failed steps in a row (network, 5xx, 429) before a job is given up: about 22 minutes of backoff on
average (the jittered waits average half of the 60 s cap), long enough to ride out a gateway outage."""
MAX_REFUSED_STEPS = 3
"""Steps in a row that AllToken refused (4xx, an oversized answer) before a job is given up."""
MAX_PARALLEL_POLLS = 16
"""Steps (a poll, a submit) in flight at once. A job downloading its result does not count against it."""
MAX_PARALLEL_DOWNLOADS = 8
"""Result downloads at once; more wait for a slot. Separate from the poll slots, so slow downloads
(each bounded by `Settings.downloads`) never keep other jobs from being polled."""
WAIT_RECHECK_SECONDS = 0.5
PROGRESS_EVERY_SECONDS = 1.0
UPSTREAM_DEFAULT_DURATION = 5
"""What AllToken renders when a video request gives no duration (alltoken-api.md §5.1)."""
RIVAL_SPAN_SECONDS = 86400.0
"""Another never-confirmed video sent within this time of a job's is a rival for its listed task."""
MAX_RECONCILE_RIVALS = 1000
"""How many of our own most recent videos are looked at for a rival claim on a listed task."""
CLOCK_SKEW_SECONDS = 10.0
"""How far this machine's clock may be from AllToken's when matching a listed task's creation time."""
STORE_RETRY_SECONDS = 5.0
"""While the state database cannot be written (full disk, read-only file...), the poller retries this
often."""


class UnknownJobError(LookupError):
    def __init__(self, job_id: str, recent: Sequence[str]) -> None:
        hint = f"Recent job ids: {', '.join(recent)}." if recent else "No jobs are stored yet."
        super().__init__(
            f"No job {job_id!r} is stored on this machine. {hint} Use list_jobs to see them all."
        )
        self.job_id = job_id


class ForeignJobError(Exception):
    """The job belongs to another upstream (base URL or key): this server does not act on it."""

    def __init__(self, job: Job, here: Upstream) -> None:
        super().__init__(
            f"Job {job.job_id} was not cancelled: it belongs to {belongs_to(job, here)}. Run the server with "
            "that configuration to cancel it; a server configured for another AllToken never touches it."
        )


class SubmitRejected(Exception):
    """AllToken refused the create request; the job is recorded as failed. `cause` is the API error."""

    def __init__(self, record: JobRecord, cause: AllTokenError) -> None:
        super().__init__(str(cause))
        self.record = record
        self.cause = cause


Progress = Callable[[float, float, str], Awaitable[None]]
"""(elapsed seconds, total seconds, message) — how waits report progress."""

OnChange = Callable[[JobRecord], Awaitable[None]]


class _Retry(Exception):
    """Poll again after `delay` seconds; `note` is recorded on the job (for the user)."""

    def __init__(self, delay: float, note: str | None = None) -> None:
        super().__init__(note or "retry")
        self.delay = delay
        self.note = note


# --------------------------------------------------------------------------------- the manager


def _refused_cancel_note(job_id: str, status: str, exc: ConflictError) -> str:
    """A 409 on cancel: the video can no longer be stopped. Say what it costs and how to get it, so the
    caller collects it instead of cancelling again."""
    if status in ("queued", "processing"):
        outcome = f"the video is already rendering ({status}), so it will finish and be charged"
    elif status == "completed":
        outcome = "the video has already finished rendering and is charged"
    else:
        return f"AllToken refused to cancel: the task is already {status} ({exc})."
    return (
        f"AllToken refused to cancel: {outcome}. This server still saves it when it is done: collect it "
        f'with job_status(job_id="{job_id}"). ({exc})'
    )


class JobManager:
    def __init__(
        self,
        *,
        store: Store,
        client: AllTokenClient,
        settings: Settings,
        owner: str,
        on_change: OnChange | None = None,
        spend: SpendLedger | None = None,
        on_takeover: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._settings = settings
        self._spend = spend or SpendLedger(store=store, client=client, settings=settings)
        self.upstream = settings.upstream
        """The only upstream whose jobs this manager polls, waits on or cancels (see `Job.belongs_to`)."""
        self.owner = owner
        self._on_change = on_change
        self._on_takeover = on_takeover
        self._wake = anyio.Event()
        self._changed: dict[str, anyio.Event] = {}
        self._in_flight: set[str] = set()
        self._downloading: set[str] = set()  # a subset of _in_flight: holding or awaiting a download slot
        self._download_slots = anyio.CapacityLimiter(MAX_PARALLEL_DOWNLOADS)
        self._steps: dict[str, anyio.CancelScope] = {}  # the poller's step per job, for `cancel` to stop

    # -- queries ---------------------------------------------------------------------------------

    # `person` is who asks (`people.current_person`; None where no tokens are checked). Another person's
    # job is answered exactly as an unknown id is, so an id tells nobody whether it exists.

    async def get(self, job_id: str, person: str | None = None) -> Job:
        job = await self._store.get_job(job_id)
        if job is None or not job.visible_to(person):
            recent = [j.job_id for j in await self._store.list_jobs(limit=5, person=person)]
            raise UnknownJobError(job_id, recent)
        return job

    async def list_jobs(
        self, *, kind: str | None, status: str | None, limit: int, person: str | None = None
    ) -> list[Job]:
        return await self._store.list_jobs(kind=kind, status=status, limit=limit, person=person)

    async def media_file(self, job_id: str, index: int, person: str | None = None) -> MediaFile:
        job = await self.get(job_id, person)
        if not 0 <= index < len(job.files):
            raise LookupError(
                f"Job {job_id} has {len(job.files)} saved file(s) (indexes 0–{len(job.files) - 1})"
                if job.files
                else f"Job {job_id} has no saved files (status {job.status})."
            )
        return job.files[index]

    # -- submit ----------------------------------------------------------------------------------

    async def submit(
        self,
        kind: JobKind,
        body: dict[str, Any],
        delivery: Delivery | None = None,
        person: str | None = None,
    ) -> Job:
        """Record the job (with its idempotency key and where its files go), then send the create request.

        Returns the stored job: accepted (with `upstream_id`), or still unconfirmed when the outcome is
        unknown (the poller resolves it). Raises `SubmitRejected` when AllToken refused it.
        """
        now = time.time()
        job = Job(
            job_id=new_job_id(),
            kind=kind,
            status="queued",
            model=str(body["model"]),
            prompt=str(body.get("prompt", "")),
            request=body,
            idempotency_key=f"alltoken-mcp-{secrets.token_hex(16)}",
            submit_state="sent",
            submitted_at=now,
            created_at=now,
            updated_at=now,
            lease_owner=self.owner,
            lease_expires_at=now + LEASE_SECONDS,
            next_poll_at=now,
            upstream_url=self.upstream.base_url,
            upstream_key=self.upstream.key_fingerprint,
            delivery=delivery,
            person=person,
        )
        try:
            await self._store.insert_job(job)  # on disk (fsync) before a paid request can leave
        except StoreWriteError as exc:
            raise StoreWriteError(f"{exc} Nothing was sent to AllToken, so nothing was charged.") from exc
        self._in_flight.add(job.job_id)
        try:
            job = await self._send_create(job, first_send=True)
        except _Retry as retry:
            job = await self._reschedule(job, retry)
        except StoreWriteError as exc:
            raise StoreWriteError(
                f"{exc} The {kind} request of job {job.job_id} had already been sent to AllToken and may be "
                "charged; the job is kept, and once the database can be written again the server finishes "
                "it without sending the request twice (list_jobs shows it)."
            ) from exc
        finally:
            self._in_flight.discard(job.job_id)
            with suppress(StoreError):  # the lease expires by itself
                await self._store.release_lease(job.job_id, self.owner)
            self._wake.set()
        return job

    async def _send_create(self, job: Job, *, first_send: bool) -> Job:
        """Send (or resend) the create request with the job's key, never after the key is forgotten.

        `first_send`: no earlier attempt of this job may have reached AllToken, so `submitted_at` was set
        for this one; if it provably did not reach AllToken either, the window has not started and the
        job may be sent again at any time.
        """
        assert job.submitted_at is not None
        send_before = job.submitted_at + IDEMPOTENCY_TRUST_SECONDS
        try:
            if job.kind == "image":
                task: ImageTask | VideoTask = await self._client.create_image(
                    job.request, idempotency_key=job.idempotency_key, send_before=send_before
                )
            else:
                task = await self._client.create_video(
                    job.request, idempotency_key=job.idempotency_key, send_before=send_before
                )
        except DuplicateRequestError as exc:
            if not exc.task_id:
                raise _Retry(
                    DEFAULT_POLL_SECONDS, "AllToken reported a duplicate without its task id"
                ) from exc
            return await self._accept(job, exc.task_id, "queued", note="adopted the original task (same key)")
        except IdempotencyWindowClosedError:
            return await self._past_window(job)
        except (TransportError, ServerError, RateLimitError) as exc:
            # Unknown outcome: the request may have reached AllToken. Resend with the same key soon.
            if first_send and not exc.request_reached:
                # Nothing reached AllToken: no key is remembered, no window is running.
                await self._store.update_job(job.job_id, submitted_at=None)
            delay = _backoff(job.poll_failures, exc)
            if isinstance(exc, RateLimitError):
                note = f"AllToken is rate-limiting this key; the submit is retried in {delay:.0f} s: {exc}"
            else:
                note = f"submit outcome unknown, will retry: {exc}"
            raise _Retry(delay, note) from exc
        except (MissingAPIKeyError, APIStatusError) as exc:
            failed = await self._finish(
                job, "failed", error=(_error_code(exc), str(exc)), submit_state="rejected"
            )
            raise SubmitRejected(JobRecord.from_job(failed), exc) from exc
        return await self._accept(job, task.id, task.status, request_id=task.request_id)

    async def _accept(
        self,
        job: Job,
        upstream_id: str,
        upstream_status: str,
        note: str | None = None,
        request_id: str | None = None,
    ) -> Job:
        status: JobStatus = "processing" if upstream_status == "processing" else "queued"
        updated = await self._store.update_job(
            job.job_id,
            submit_state="accepted",
            upstream_id=upstream_id,
            request_id=request_id or job.request_id,
            upstream_status=upstream_status,
            status=status if job.active else job.status,
            next_poll_at=time.time() + DEFAULT_POLL_SECONDS / 4,
            poll_failures=0,
            note=note,
        )
        assert updated is not None
        await self._changed_to(job, updated)
        if updated.cancel_requested and updated.kind == "video":
            updated = await self._cancel_upstream(updated)
        return updated

    async def _resubmit(self, job: Job) -> Job:
        """A create whose outcome is unknown (crash, lost connection): resend or reconcile."""
        if job.submitted_at is not None and time.time() - job.submitted_at >= IDEMPOTENCY_TRUST_SECONDS:
            return await self._past_window(job)
        first_send = job.submitted_at is None
        if first_send:
            stamped = await self._store.update_job(job.job_id, submitted_at=time.time())
            assert stamped is not None
            job = stamped
        try:
            return await self._send_create(job, first_send=first_send)
        except SubmitRejected as rejected:
            return await self.get(rejected.record.job_id)

    async def _past_window(self, job: Job) -> Job:
        """The create may have reached AllToken and its key is forgotten: adopt the one task that can
        only be ours, or say the truth. Never send it again."""
        if job.kind == "image":
            found = "AllToken offers no way to look up an image task without its id. "
        else:
            candidates, rivals = await self._reconcile_candidates(job)
            if len(candidates) == 1 and not rivals:
                task = candidates[0]
                try:
                    return await self._accept(
                        job, task.id, task.status, note="recovered from AllToken's video list"
                    )
                except UpstreamTaskTaken:  # another job claimed it meanwhile: it was never only ours
                    rivals = ["another job"]
            if not candidates:
                found = "No matching video was found in AllToken's task list. "
            elif rivals:
                found = (
                    f"The one matching video in AllToken's task list ({candidates[0].id}) could equally be "
                    f"that of {', '.join(rivals[:3])}, whose create was not confirmed either, so it was "
                    "not adopted. "
                )
            else:
                found = (
                    f"{len(candidates)} videos in AllToken's task list match it equally well "
                    f"({', '.join(t.id for t in candidates[:5])}), so none was adopted. "
                )
        return await self._finish(
            job,
            "failed",
            error=(
                "submit_unconfirmed",
                "The create request may have reached AllToken and may have been charged, but no answer was "
                "received and AllToken's idempotency window (about 60 s) has passed, so it was not sent "
                "again: no second task was created. "
                + found
                + "Check your AllToken usage page; submit a new job if nothing was charged.",
            ),
        )

    async def _reconcile_candidates(self, job: Job) -> tuple[list[VideoTask], list[str]]:
        """The listed videos that could be this job's — same model and parameters, created inside the
        time our attempts could have been processed, not already another job's — and, when exactly one
        is, our other videos never confirmed (still trying, or given up) that could own it just as well
        (the listing cannot say which of them AllToken created it for)."""
        listing = await self._client.list_videos(limit=100)
        candidates = []
        for task in listing.items:
            created = _to_epoch(task.created_at)
            if created is None or not _in_submit_window(job, created) or not _same_request(job.request, task):
                continue
            if await self._store.find_job_by_upstream(task.id) is not None:
                continue  # another job already owns it
            candidates.append(task)
        if len(candidates) != 1:
            return candidates, []
        # Whatever became of them: a rival that already gave up (failed as unconfirmed) may still be the
        # one whose create AllToken processed.
        videos = await self._store.list_jobs(kind="video", status=None, limit=MAX_RECONCILE_RIVALS)
        rivals = [
            other.job_id
            for other in videos
            if other.job_id != job.job_id
            and other.upstream_id is None
            and other.submit_state != "rejected"
            and other.submitted_at is not None
            and _windows_overlap(job, other)
            and _same_request(other.request, candidates[0])
        ]
        return candidates, rivals

    # -- waiting ---------------------------------------------------------------------------------

    async def wait(
        self, job_id: str, seconds: float, progress: Progress | None = None, person: str | None = None
    ) -> Job:
        """Wait up to `seconds` (capped by ALLTOKEN_MAX_WAIT_SECONDS) for the job to finish."""
        job = await self.get(job_id, person)
        total = max(0.0, min(seconds, self._settings.max_wait_seconds, budget.remaining()))
        if total <= 0 or not job.active or not job.belongs_to(self.upstream):
            return job  # (another upstream's job does not move here: its record says so)
        self._wake.set()  # make sure the poller looks at it now
        started = time.monotonic()
        last_status, last_report = job.status, -math.inf
        # Taken before each re-read of the job, not after: a change that lands while the job is being
        # read sets this event, instead of going unheard until the next recheck.
        event = self._changed.setdefault(job_id, anyio.Event())
        while job.active:
            elapsed = time.monotonic() - started
            if elapsed >= total:
                break
            if progress is not None and (
                job.status != last_status or elapsed - last_report >= PROGRESS_EVERY_SECONDS
            ):
                last_status, last_report = job.status, elapsed
                await progress(
                    elapsed, total, f"{job.kind} job {job.job_id}: {job.status} after {elapsed:.0f} s"
                )
            with anyio.move_on_after(min(WAIT_RECHECK_SECONDS, total - elapsed, PROGRESS_EVERY_SECONDS)):
                await event.wait()
            event = self._changed.setdefault(job_id, anyio.Event())
            job = await self.get(job_id)
        if not job.active and self._changed.get(job_id) is event:
            del self._changed[job_id]  # a finished job changes no more: nothing would ever remove it
        if progress is not None:
            elapsed = time.monotonic() - started
            await progress(min(elapsed, total), total, f"{job.kind} job {job.job_id}: {job.status}")
        return job

    # -- cancel ----------------------------------------------------------------------------------

    async def cancel(self, job_id: str, person: str | None = None) -> Job:
        job = await self.get(job_id, person)
        if not job.belongs_to(self.upstream):
            raise ForeignJobError(job, self.upstream)
        if not job.active:
            return await self._note(job, f"Nothing to cancel: the job is already {job.status}.")
        if job.kind == "image":
            return await self._cancel_here(
                job,
                "AllToken cannot cancel image generation; the job was cancelled here and any late "
                "result will be discarded (it may still be charged).",
            )
        if job.upstream_status == "completed" or job.job_id in self._downloading:
            return await self._cancel_here(
                job,
                "The render had already finished (AllToken charges for it); its download was stopped here "
                "and nothing was saved. The video URL stays in this job's record until it expires.",
            )
        if job.upstream_id is None:
            marked = await self._store.update_job(
                job.job_id,
                cancel_requested=True,
                note="Cancel requested; it is sent as soon as AllToken confirms the task.",
            )
            assert marked is not None
            self._wake.set()
            return marked
        return await self._cancel_upstream(job)

    async def _cancel_here(self, job: Job, note: str) -> Job:
        """Cancel the job locally (AllToken has nothing left to cancel) and stop this process's step for
        it: a running download ends now and its unfinished file is removed; a late result is discarded."""
        cancelled = await self._finish(job, "cancelled", note=note, only_if_active=True)
        if cancelled.status != "cancelled":
            return await self._note(cancelled, f"Too late to cancel: the job is already {cancelled.status}.")
        step = self._steps.get(job.job_id)
        if step is not None:
            step.cancel()
        return cancelled

    async def _cancel_upstream(self, job: Job) -> Job:
        assert job.upstream_id is not None
        try:
            task = await self._client.cancel_video(job.upstream_id)
        except ConflictError as exc:
            # Already rendering or finished: report what it really is, and what happens now.
            current = await self._client.get_video(job.upstream_id)
            updated = await self._store.update_job(
                job.job_id,
                cancel_requested=False,
                upstream_status=current.status,
                note=_refused_cancel_note(job.job_id, current.status, exc),
            )
            assert updated is not None
            self._wake.set()
            return updated
        return await self._finish(
            job,
            "cancelled" if task.status == "cancelled" else job.status,
            note="Cancelled upstream by AllToken."
            if task.status == "cancelled"
            else f"upstream says {task.status}",
            upstream_status=task.status,
            cancel_requested=False,
        )

    # -- the poller ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Advance the active jobs of this upstream that this process can lease, forever (cancelled on
        shutdown). Jobs of another base URL or key are left alone: their tasks are not this key's to see.

        Each round reads when the next job is due (a read-only query); only when one is due does it
        take the write lock to lease jobs, so idle processes sharing the store never contend for it.
        """
        paused = False  # by a failing state database; logged once per outage
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.follow_other_processes)
                while True:
                    now = time.time()
                    free = MAX_PARALLEL_POLLS - len(self._in_flight - self._downloading)
                    try:
                        due = await self._store.next_due_at(
                            self.owner, upstream=self.upstream, now=now, exclude=self._in_flight
                        )
                        claimed = []
                        if due is not None and due <= now and free > 0:
                            claimed = await self._store.claim_due_jobs(
                                self.owner,
                                upstream=self.upstream,
                                now=now,
                                lease_seconds=LEASE_SECONDS,
                                limit=free,
                                exclude=self._in_flight,
                                on_takeover=self._took_over,
                            )
                    except StoreError as exc:
                        if not paused:
                            logger.warning(
                                "job poller paused, retrying every %g s: %s", STORE_RETRY_SECONDS, exc
                            )
                            paused = True
                        await anyio.sleep(STORE_RETRY_SECONDS)
                        continue
                    if paused:
                        logger.warning("job poller resumed: the state database works again")
                        paused = False
                    for job in claimed:
                        self._in_flight.add(job.job_id)
                        tg.start_soon(self._advance_guarded, job)
                    if claimed:
                        continue
                    if due is None or free <= 0:
                        # Nothing due anywhere, or every slot busy (a finishing job wakes us).
                        delay = IDLE_RECHECK_SECONDS
                    else:
                        delay = min(max(due - now, MIN_POLL_SECONDS), IDLE_RECHECK_SECONDS)
                    with anyio.move_on_after(delay):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._store.release_all_leases(self.owner)
                except StoreError as exc:  # they expire, and a dead owner's are taken over at once
                    logger.warning("job leases not released: %s", exc)

    def _took_over(self, job: Job) -> None:
        logger.info("job %s: took over the lease of %s", job.job_id, job.lease_owner)
        if self._on_takeover is not None:
            self._on_takeover()

    async def _advance_guarded(self, job: Job) -> None:
        step = self._steps[job.job_id] = anyio.CancelScope()
        try:
            with step:  # cancelled by `cancel` once the job is cancelled here: stops its download at once
                try:
                    await self._advance(job)
                except _Retry as retry:
                    await self._reschedule(job, retry)
                except StoreError:
                    raise
                except Exception:  # a poller must survive anything one job throws
                    logger.exception("job %s: unexpected error while polling", job.job_id)
                    await self._reschedule(
                        job, _Retry(_backoff(job.poll_failures + 2), "internal error; see the server log")
                    )
        except StoreError as exc:
            # The step's outcome could not be recorded; the stored job is as before and is tried again.
            # Kept in flight meanwhile, so this process does not retry it (and poll upstream) at once.
            logger.warning("job %s: %s", job.job_id, exc)
            await anyio.sleep(STORE_RETRY_SECONDS)
        finally:
            self._steps.pop(job.job_id, None)
            self._in_flight.discard(job.job_id)
            with suppress(StoreError):  # the lease expires by itself
                await self._store.release_lease(job.job_id, self.owner)
            self._wake.set()

    @asynccontextmanager
    async def _download_slot(self, job_id: str) -> AsyncIterator[None]:
        """Hold a download slot for the block. Meanwhile the job does not count against the poll slots
        (the poller is woken to use the one it frees), so slow downloads cannot starve polling."""
        self._downloading.add(job_id)
        self._wake.set()
        try:
            async with self._download_slots:
                yield
        finally:
            self._downloading.discard(job_id)

    async def _advance(self, job: Job) -> None:
        try:
            if job.submit_state != "accepted" or job.upstream_id is None:
                await self._resubmit(job)
            elif job.kind == "image":
                await self._poll_image(job)
            else:
                await self._poll_video(job)
        except files.OutputFileError as exc:
            raise _Retry(
                _backoff(job.poll_failures),
                f"could not save the result (will retry; nothing is lost yet): {exc}",
            ) from exc
        except MissingAPIKeyError as exc:
            # This process cannot act on the job; one that has the key will.
            raise _Retry(MAX_BACKOFF_SECONDS, str(exc)) from exc
        except (ResponseTooLargeError, MalformedResponseError) as exc:  # asking again will not change it
            await self._step_failed(job, exc, limit=MAX_REFUSED_STEPS)
        except (TransportError, ServerError, RateLimitError, ConflictError) as exc:
            await self._step_failed(job, exc, limit=MAX_TRANSIENT_STEPS)
        except APIStatusError as exc:  # a refusal that asking again will not change
            await self._step_failed(job, exc, limit=MAX_REFUSED_STEPS)

    async def _step_failed(self, job: Job, exc: AllTokenError, *, limit: int) -> None:
        """Retry a failed status check (or reconciliation) later, or give up after `limit` in a row."""
        failures = job.poll_failures + 1
        if failures < limit:
            raise _Retry(_backoff(job.poll_failures, exc), f"status check failed, retrying: {exc}") from exc
        task = f"AllToken task {job.upstream_id}" if job.upstream_id else "The task, if it was created,"
        await self._finish(
            job,
            "failed",
            error=(
                _error_code(exc),
                f"Gave up after {failures} failed attempts to check the job with AllToken; the last one: "
                f"{exc}. {task} may still finish upstream and be charged; check your AllToken dashboard.",
            ),
        )

    async def _reschedule(self, job: Job, retry: _Retry) -> Job:
        updated = await self._store.update_job(
            job.job_id,
            next_poll_at=time.time() + retry.delay,
            poll_failures=job.poll_failures + 1,
            note=retry.note or job.note,
        )
        return updated or job

    # -- images ----------------------------------------------------------------------------------

    async def _poll_image(self, job: Job) -> None:
        assert job.upstream_id is not None
        if job.sources:
            # A previous attempt got the result but could not save it: fetch from the kept URLs.
            await self._deliver_image(job, job.sources, streamed={})
            return
        try:
            # Each image's base64 is decoded straight into its file as the answer arrives; the files
            # are committed when the stack closes cleanly, after the recovery URLs are stored.
            async with AsyncExitStack() as stack:
                sink = _StreamedImages(
                    job,
                    stack,
                    # The extension is a guess; atomic_file corrects it from the bytes when it commits.
                    lambda index: self._target(job, index, "image", "png"),
                    self._settings.downloads.max_image_bytes,
                    lambda: self._remove_partials_for(job),
                )
                task = await self._client.get_image(job.upstream_id, b64_sink=sink)
                sources = _image_sources(task.data)
                if task.status == "completed" and any(source.url for source in sources):
                    kept = await self._store.update_job(
                        job.job_id,
                        owner=self.owner,
                        only_if_active=True,
                        sources=sources,
                        usage=task.usage,
                        status="processing",
                        upstream_status="completed",
                    )
                    if kept is None:
                        raise _LeaseLost  # someone else is delivering: discard our files
                    job = kept
            streamed = {i: w.saved for i, w in sink.writers.items()}
        except _LeaseLost:
            return
        except GoneError as exc:
            await self._finish(
                job,
                "failed",
                error=(
                    exc.code or "image_gone",
                    "AllToken had already delivered this image once and it was not saved here, and no "
                    f"recovery URL exists ({exc}). Nothing can recover it; generate it again.",
                ),
            )
            return
        except ConflictError as exc:  # another request is claiming the result right now
            raise _Retry(1.0, f"AllToken is handing the result to another request: {exc}") from exc
        except NotFoundError as exc:
            await self._forgotten_upstream(job, exc)
            return
        if task.status == "completed":
            await self._deliver_image(job, sources, streamed, usage=task.usage)
        elif task.status in ("failed", "cancelled"):
            await self._finish_upstream_terminal(job, task)
        else:
            await self._progressed(job, task)

    async def _deliver_image(
        self,
        job: Job,
        sources: Sequence[ImageSource],
        streamed: dict[int, files.SavedFile],
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Complete the job with every image: streamed ones are already saved, the rest are fetched
        from their kept URLs."""
        if not sources:
            await self._finish(
                job, "failed", error=("image_missing", "AllToken reported completion without any image.")
            )
            return
        if len(streamed) < len(sources):
            await self._remove_partials_for(job)  # a killed predecessor's half-written files
        saved: list[MediaFile] = []
        try:
            for index, source in enumerate(sources):
                if index in streamed:
                    result = streamed[index]
                elif source.url:
                    try:
                        async with self._download_slot(job.job_id):
                            result = await self._fetch(
                                job, source.url, index, job.prompt, "image", source.mime_type
                            )
                    except files.DownloadError as exc:
                        await self._download_failed(job, f"image {index}", exc, saved)
                        return
                else:
                    await self._finish(
                        job,
                        "failed",
                        error=(
                            "image_missing",
                            f"AllToken reported completion but sent no data for image {index}.",
                        ),
                    )
                    return
                saved.append(_media_file(job.job_id, index, result, "image"))
        except anyio.get_cancelled_exc_class():
            await self._discard(saved)  # cancelled half-way (job_cancel, shutdown): the late files go too
            raise
        await self._complete(job, saved, usage=usage or job.usage)

    # -- videos ----------------------------------------------------------------------------------

    async def _poll_video(self, job: Job) -> None:
        assert job.upstream_id is not None
        try:
            task = await self._client.get_video(job.upstream_id)
        except NotFoundError as exc:
            await self._forgotten_upstream(job, exc)
            return
        if job.cancel_requested and task.status == "queued":
            await self._cancel_upstream(job)
            return
        if task.status == "completed":
            await self._deliver_video(job, task)
        elif task.status in ("failed", "cancelled", "expired"):
            await self._finish_upstream_terminal(job, task)
        else:
            await self._progressed(job, task)

    async def _deliver_video(self, job: Job, task: VideoTask) -> None:
        if not task.video_url:
            await self._finish(
                job, "failed", error=("video_missing", "AllToken reported completion without a video URL.")
            )
            return
        expires = None if task.video_url_expires_at is None else str(task.video_url_expires_at)
        kept = await self._store.update_job(
            job.job_id,
            owner=self.owner,
            only_if_active=True,
            status="processing",  # rendered; downloading
            video_url=task.video_url,
            video_url_expires_at=expires,
            upstream_status="completed",
            usage=task.usage,
        )
        if kept is None:
            return
        await self._changed_to(job, kept)
        job = kept
        saved: list[MediaFile] = []
        note = None
        try:
            async with self._download_slot(job.job_id):
                await self._remove_partials_for(job)
                try:
                    video = await self._fetch(job, task.video_url, 0, job.prompt, "video")
                except files.DownloadError as exc:
                    await self._download_failed(job, "video", exc, saved)
                    return
                saved.append(_media_file(job.job_id, 0, video, "video"))
                if task.last_frame_url:
                    try:
                        frame = await self._fetch(
                            job, task.last_frame_url, 1, f"{job.prompt} last frame", "last_frame"
                        )
                        saved.append(_media_file(job.job_id, 1, frame, "last_frame"))
                    except files.DownloadError as exc:
                        # The video is what was paid for: deliver it, and say what is missing.
                        note = f"The video is saved, but its last frame could not be: {exc}"
        except anyio.get_cancelled_exc_class():
            await self._discard(saved)
            raise
        await self._complete(job, saved, usage=task.usage, note=note)

    async def _fetch(
        self, job: Job, url: str, index: int, stem: str, role: MediaRole, mime_type: str | None = None
    ) -> files.SavedFile:
        """Download one result file of `job` (one attempt, within `Settings.downloads`)."""
        limits = self._settings.downloads
        kinds: dict[MediaRole, tuple[int, str, files.MediaKind]] = {
            "image": (limits.max_image_bytes, "png", "image"),
            "video": (limits.max_video_bytes, "mp4", "video"),
            "last_frame": (limits.max_frame_bytes, "png", "image"),
        }
        cap, fallback_ext, expect = kinds[role]
        path, replace = self._target(job, index, role, files.extension_for(mime_type, fallback_ext))
        return await files.download(
            self._client,
            url,
            path,
            max_bytes=cap,
            expect=expect,
            limits=limits,
            mime_type=mime_type,
            replace=replace,
            tag=job.job_id,
        )

    def _target(self, job: Job, index: int, role: MediaRole, extension: str) -> tuple[Path, bool]:
        """Where file `index` of `job` goes (its stored delivery, else this server's output directory),
        and whether it may replace a file there."""
        count = job.request.get("n", 1)
        return destinations.result_path(
            job.delivery,
            self._settings.output_dir,
            job_id=job.job_id,
            prompt=job.prompt,
            count=count if isinstance(count, int) else 1,
            index=index,
            role=role,
            extension=extension,
        )

    async def _download_failed(
        self, job: Job, what: str, exc: files.DownloadError, saved: list[MediaFile]
    ) -> None:
        """A result download failed: try again later when it may pass (up to `max_attempts` in all),
        else fail the job saying what was paid for, why the file is missing and what to do. Files
        already saved stay recorded on the failed job."""
        limits = self._settings.downloads
        attempts = job.download_failures + 1
        if not exc.permanent and attempts < limits.max_attempts:
            delay = limits.retry_delay_seconds * 2 ** (attempts - 1)
            await self._store.update_job(
                job.job_id,
                owner=self.owner,
                only_if_active=True,
                download_failures=attempts,
                next_poll_at=time.time() + delay,
                note=f"Downloading the {what} failed (attempt {attempts} of {limits.max_attempts}); "
                f"trying again in {delay:g} s: {exc}",
            )
            return
        outcome = "Trying again cannot help." if exc.permanent else f"Gave up after {attempts} attempts."
        if job.kind == "video":
            until = f", valid until {job.video_url_expires_at}" if job.video_url_expires_at else ""
            message = (
                f"The render finished and AllToken charges for it, but the {what} could not be downloaded: "
                f"{exc} {outcome} Its URL is kept in this job's record (video_url{until}): fetch it yourself "
                f"only if you trust it, or ask AllToken support about task {job.upstream_id}. Submitting "
                "again starts (and charges) a new render."
            )
        else:
            kept = f" The {len(saved)} image(s) before it are saved." if saved else ""
            message = (
                f"The images were generated and AllToken charges for them, but {what} could not be "
                f"downloaded from its recovery URL: {exc} {outcome}{kept} Generate it again if you still "
                "need it."
            )
        failed = await self._finish(
            job, "failed", error=("download_failed", message), download_failures=attempts, files=saved
        )
        await self._record_cost(failed)  # rendered and charged, though not delivered

    async def _remove_partials_for(self, job: Job) -> None:
        # Safe: only the lease holder (us) writes this job's files.
        directory = destinations.delivery_dir(job.delivery, self._settings.output_dir)
        removed = await anyio.to_thread.run_sync(files.remove_partials, directory, job.job_id)
        if removed:
            logger.info("job %s: removed %d unfinished file(s) left by a stopped server", job.job_id, removed)

    # -- state changes ---------------------------------------------------------------------------

    async def _progressed(self, job: Job, task: ImageTask | VideoTask) -> None:
        status: JobStatus = "processing" if task.status == "processing" else "queued"
        updated = await self._store.update_job(
            job.job_id,
            owner=self.owner,
            only_if_active=True,
            status=status,
            upstream_status=task.status,
            next_poll_at=time.time() + _poll_interval(task),
            poll_failures=0,
        )
        if updated is not None:
            await self._changed_to(job, updated)

    async def _complete(
        self,
        job: Job,
        saved: list[MediaFile],
        usage: dict[str, Any] | None,
        note: str | None = None,
    ) -> None:
        done = await self._store.update_job(
            job.job_id,
            owner=self.owner,
            only_if_active=True,
            status="completed",
            upstream_status="completed",
            files=saved,
            usage=usage,
            error_code=None,
            error_message=None,
            note=note,
        )
        if done is None:
            # Cancelled locally (or taken over) while we were saving: the late result is discarded.
            await self._discard(saved)
            return
        await self._changed_to(job, done)
        await self._record_cost(done)

    async def _record_cost(self, job: Job) -> None:
        """Put what AllToken charged for a finished job on the ledger and the job (unknown when its billing
        record cannot be found or read). Best effort: nothing here changes the job's outcome."""
        try:
            cost = await media_cost(self._client, job)
            await self._spend.record_job(job, cost)
            if cost is not None:
                await self._store.update_job(job.job_id, cost_usd=str(cost))
        except Exception as exc:  # the job is done whatever happens here: say so and move on
            logger.warning("job %s: its cost was not recorded: %s", job.job_id, exc)

    @staticmethod
    async def _discard(saved: list[MediaFile]) -> None:
        # Shielded: a cancelled delivery must still remove the files it will never record.
        with anyio.CancelScope(shield=True):
            for entry in saved:
                await anyio.Path(entry.path).unlink(missing_ok=True)

    async def _forgotten_upstream(self, job: Job, exc: NotFoundError) -> None:
        await self._finish(
            job, "failed", error=(exc.code or "not_found", f"AllToken no longer knows this task: {exc}")
        )

    async def _finish_upstream_terminal(self, job: Job, task: ImageTask | VideoTask) -> None:
        status: JobStatus = "failed"
        if task.status in ("cancelled", "expired"):
            status = task.status  # type: ignore[assignment]
        error = None
        if task.status == "expired" and task.error is None:
            error = (
                "video_expired",
                "The render finished, but its download link expired before this server could fetch it "
                "(no alltoken-mcp process was running in time). The file cannot be recovered; start a new "
                "render.",
            )
        elif task.status != "cancelled" or task.error is not None:
            code = (task.error.code if task.error else None) or task.status
            message = (
                task.error.message if task.error else None
            ) or f"AllToken reports the task {task.status}."
            error = (code, message)
        await self._finish(job, status, error=error, upstream_status=task.status, usage=task.usage)

    async def _finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        error: tuple[str, str] | None = None,
        only_if_active: bool = True,
        **changes: Any,
    ) -> Job:
        if error is not None:
            changes["error_code"], changes["error_message"] = error
        updated = await self._store.update_job(
            job.job_id, only_if_active=only_if_active, status=status, **changes
        )
        if updated is None:  # it left the active states meanwhile: report what it is now
            return await self.get(job.job_id)
        await self._changed_to(job, updated)
        return updated

    async def _note(self, job: Job, note: str) -> Job:
        updated = await self._store.update_job(job.job_id, note=note)
        return updated or job

    async def _changed_to(self, before: Job, after: Job) -> None:
        event = self._changed.pop(after.job_id, None)
        if event is not None:
            event.set()
        if before.status == after.status and before.files == after.files:
            return  # (a note, a poll time: nothing a waiter or a subscriber elsewhere waits for)
        if self._on_change is not None:
            try:
                await self._on_change(JobRecord.from_job(after))
            except Exception:
                logger.exception("job %s: change notification failed", after.job_id)
        try:  # to the other processes sharing the store (a PostgreSQL store's replicas)
            await self._store.publish_job_change(after.job_id)
        except StoreError as exc:  # their waiters still see it when they next re-read the job
            logger.warning("job %s: change not published to other replicas: %s", after.job_id, exc)

    async def follow_other_processes(self) -> None:
        """Wake this process's waiters, and tell its resource subscribers, when another process sharing
        the store changes a job, until cancelled (`run` starts it). Returns at once on a store that
        cannot tell (SQLite): waiters there re-read the store every WAIT_RECHECK_SECONDS."""
        await self._store.follow_job_changes(self._heard)

    async def _heard(self, change: JobChange) -> None:
        event = self._changed.pop(change.job_id, None)
        if event is not None:
            event.set()
        if self._on_change is None:
            return
        try:
            job = await self._store.get_job(change.job_id)
            if job is not None:
                await self._on_change(JobRecord.from_job(job))
        except Exception:
            logger.exception("job %s: change notification failed", change.job_id)


# --------------------------------------------------------------------------------- helpers


def _media_file(job_id: str, index: int, saved: files.SavedFile, role: MediaRole) -> MediaFile:
    """What the job records about a file it saved (the job's `index`-th)."""
    return MediaFile(
        path=str(saved.path),
        uri=media_uri(job_id, index),
        mime_type=saved.mime_type,
        bytes=saved.bytes,
        sha256=saved.sha256,
        role=role,
    )


def _image_sources(data: Sequence[ImageDatum]) -> list[ImageSource]:
    """Where each image of a completed task can still be fetched from (None: nowhere but the b64)."""
    return [ImageSource(url=d.r2_url, mime_type=d.mime_type) for d in data]


def _poll_interval(task: ImageTask | VideoTask) -> float:
    """Follow the server's pace: the larger of next_poll_after_ms and Retry-After."""
    hints = [h for h in (task.next_poll_after_ms and task.next_poll_after_ms / 1000, task.retry_after) if h]
    return max(MIN_POLL_SECONDS, max(hints)) if hints else DEFAULT_POLL_SECONDS


def _backoff(failures: int, exc: AllTokenError | None = None) -> float:
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, (int, float)) and retry_after > 0:
        return STEP_BACKOFF.delay(failures + 1, float(retry_after))
    # Full jitter may draw next to nothing; a step that just failed waits at least a second.
    return max(MIN_STEP_BACKOFF_SECONDS, STEP_BACKOFF.delay(failures + 1))


def _error_code(exc: AllTokenError) -> str:
    if isinstance(exc, APIStatusError):
        return exc.code or f"http_{exc.status_code}"
    if isinstance(exc, MissingAPIKeyError):
        return "missing_api_key"
    return "error"


_ECHOED_PARAMETERS = (
    "prompt",
    "duration",
    "resolution",
    "ratio",
    "frames",
    "seed",
    "generate_audio",
    "input_has_video",
    "draft",
    "service_tier",
    "execution_expires_after",
    "safety_identifier",
)
"""Request fields a listed video task echoes back; `prompt` only if AllToken ever lists it."""


def _in_submit_window(job: Job, created: float) -> bool:
    """Whether a task created at `created` (Unix time) could come from one of the job's create attempts:
    none left before `submitted_at` or after the key window, and each is answered within the timeout."""
    assert job.submitted_at is not None
    low = job.submitted_at - CLOCK_SKEW_SECONDS
    high = job.submitted_at + IDEMPOTENCY_TRUST_SECONDS + DEFAULT_TIMEOUT + CLOCK_SKEW_SECONDS
    return low <= created <= high


def _windows_overlap(job: Job, other: Job) -> bool:
    """Whether another never-confirmed job could be the one a listed task belongs to: any sent within
    a day of this one. With honest clocks a rival's attempts overlap ours within a couple of minutes; a
    day also covers clocks that jumped — adopting another job's video is the worse mistake, so when in
    doubt the job fails truthfully instead."""
    assert job.submitted_at is not None
    assert other.submitted_at is not None
    return abs(job.submitted_at - other.submitted_at) <= RIVAL_SPAN_SECONDS


def _input_type(request: dict[str, Any]) -> str:
    roles = {item.get("role") for item in request.get("content") or () if isinstance(item, dict)}
    if "first_frame" in roles:
        return "image_first_last_frame" if "last_frame" in roles else "image_first_frame"
    return "text" if not roles else "multimodal"


def _same_request(request: dict[str, Any], task: VideoTask) -> bool:
    """Whether a listed task carries everything our create request asked for (where it says)."""
    if task.model != request.get("model"):
        return False
    listed = task.model_dump()
    for name in _ECHOED_PARAMETERS:
        wanted, echoed = request.get(name), listed.get(name)
        if name == "duration" and wanted in (None, 0):
            wanted = UPSTREAM_DEFAULT_DURATION
        if wanted is None or echoed is None:
            continue
        if name == "duration" and wanted == -1:
            continue  # "auto": the task shows what was chosen
        if wanted != echoed:
            return False
    return task.input_type is None or _input_type(request) in (task.input_type, "multimodal")


def _to_epoch(value: str | int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _LeaseLost(Exception):
    """Another server took the job while our delivery was in flight."""


class _StreamedImages:
    """`ImageSink` for one poll: each image's file is opened (atomic_file, entered on `stack`) when its
    first piece arrives, so polls of an unfinished task open nothing. `before_first_file` runs once,
    before the first file is opened (the manager clears a killed predecessor's leftovers there)."""

    def __init__(
        self,
        job: Job,
        stack: AsyncExitStack,
        target: Callable[[int], tuple[Path, bool]],
        max_bytes: int,
        before_first_file: Callable[[], Awaitable[None]],
    ) -> None:
        self._job, self._stack, self._target, self._max_bytes = job, stack, target, max_bytes
        self._before_first_file = before_first_file
        self.writers: dict[int, files.AtomicWriter] = {}

    async def write(self, index: int, data: bytes) -> None:
        writer = self.writers.get(index)
        if writer is None:
            wanted = self._job.request.get("n", 1)
            if index >= (wanted if isinstance(wanted, int) else 1):
                raise ResponseTooLargeError(
                    f"AllToken sent more than the {wanted} image(s) this job asked for."
                )
            if not self.writers:
                await self._before_first_file()
            path, replace = self._target(index)
            writer = await self._stack.enter_async_context(
                files.atomic_file(path, max_bytes=self._max_bytes, replace=replace, tag=self._job.job_id)
            )
            self.writers[index] = writer
        await writer.write(data)
