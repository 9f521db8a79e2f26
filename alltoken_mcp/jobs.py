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
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from alltoken_mcp import files
from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.client.models import ImageDatum, ImageTask, VideoTask
from alltoken_mcp.errors import (
    AllTokenError,
    APIStatusError,
    AuthenticationError,
    ConflictError,
    DuplicateRequestError,
    GoneError,
    InsufficientBalanceError,
    MissingAPIKeyError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
)
from alltoken_mcp.job_records import JobRecord, MediaFile, media_uri
from alltoken_mcp.settings import Settings
from alltoken_mcp.store import (
    Job,
    JobKind,
    JobStatus,
    Store,
    StoreError,
    StoreWriteError,
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
MAX_PARALLEL_POLLS = 16
WAIT_RECHECK_SECONDS = 0.5
PROGRESS_EVERY_SECONDS = 1.0
MAX_IMAGE_BYTES = 200 * 1024 * 1024
MAX_VIDEO_BYTES = 2 * 1024 * 1024 * 1024
MAX_FRAME_BYTES = 50 * 1024 * 1024
STORE_RETRY_SECONDS = 5.0
"""While the state database cannot be written (full disk, read-only file...), the poller retries this
often."""
RECONCILE_WINDOW_SECONDS = (-10.0, 180.0)
"""A listed video created within this window around our first submit attempt may be ours."""


class UnknownJobError(LookupError):
    def __init__(self, job_id: str, recent: Sequence[str]) -> None:
        hint = f"Recent job ids: {', '.join(recent)}." if recent else "No jobs are stored yet."
        super().__init__(
            f"No job {job_id!r} is stored on this machine. {hint} Use list_jobs to see them all."
        )
        self.job_id = job_id


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


class JobManager:
    def __init__(
        self,
        *,
        store: Store,
        client: AllTokenClient,
        settings: Settings,
        owner: str,
        on_change: OnChange | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._settings = settings
        self.owner = owner
        self._on_change = on_change
        self._wake = anyio.Event()
        self._changed: dict[str, anyio.Event] = {}
        self._in_flight: set[str] = set()

    # -- queries ---------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        job = await self._store.get_job(job_id)
        if job is None:
            recent = [j.job_id for j in await self._store.list_jobs(limit=5)]
            raise UnknownJobError(job_id, recent)
        return job

    async def list_jobs(self, *, kind: str | None, status: str | None, limit: int) -> list[Job]:
        return await self._store.list_jobs(kind=kind, status=status, limit=limit)

    async def media_file(self, job_id: str, index: int) -> MediaFile:
        job = await self.get(job_id)
        if not 0 <= index < len(job.files):
            raise LookupError(
                f"Job {job_id} has {len(job.files)} saved file(s) (indexes 0–{len(job.files) - 1})"
                if job.files
                else f"Job {job_id} has no saved files (status {job.status})."
            )
        return MediaFile.model_validate(job.files[index])

    # -- submit ----------------------------------------------------------------------------------

    async def submit(self, kind: JobKind, body: dict[str, Any]) -> Job:
        """Record the job (with its idempotency key), then send the create request.

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
        )
        try:
            await self._store.insert_job(job)  # on disk (fsync) before a paid request can leave
        except StoreWriteError as exc:
            raise StoreWriteError(f"{exc} Nothing was sent to AllToken, so nothing was charged.") from exc
        self._in_flight.add(job.job_id)
        try:
            job = await self._send_create(job)
        except _Retry as retry:
            job = await self._reschedule(job, retry)
        finally:
            self._in_flight.discard(job.job_id)
            await self._store.release_lease(job.job_id, self.owner)
            self._wake.set()
        return job

    async def _send_create(self, job: Job) -> Job:
        try:
            if job.kind == "image":
                task: ImageTask | VideoTask = await self._client.create_image(
                    job.request, idempotency_key=job.idempotency_key
                )
            else:
                task = await self._client.create_video(job.request, idempotency_key=job.idempotency_key)
        except DuplicateRequestError as exc:
            if not exc.task_id:
                raise _Retry(
                    DEFAULT_POLL_SECONDS, "AllToken reported a duplicate without its task id"
                ) from exc
            return await self._accept(job, exc.task_id, "queued", note="adopted the original task (same key)")
        except (TransportError, ServerError, RateLimitError) as exc:
            # Unknown outcome: the request may have reached AllToken. Resend with the same key soon.
            raise _Retry(
                _backoff(job.poll_failures, exc), f"submit outcome unknown, will retry: {exc}"
            ) from exc
        except (MissingAPIKeyError, APIStatusError) as exc:
            failed = await self._finish(
                job, "failed", error=(_error_code(exc), str(exc)), submit_state="rejected"
            )
            raise SubmitRejected(JobRecord.from_job(failed), exc) from exc
        return await self._accept(job, task.id, task.status)

    async def _accept(self, job: Job, upstream_id: str, upstream_status: str, note: str | None = None) -> Job:
        status: JobStatus = "processing" if upstream_status == "processing" else "queued"
        updated = await self._store.update_job(
            job.job_id,
            submit_state="accepted",
            upstream_id=upstream_id,
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
        age = time.time() - (job.submitted_at or 0.0)
        if job.submitted_at is None or age < IDEMPOTENCY_TRUST_SECONDS:
            try:
                return await self._send_create(job)
            except SubmitRejected as rejected:
                return await self.get(rejected.record.job_id)
        if job.kind == "video":
            adopted = await self._reconcile_video(job)
            if adopted is not None:
                return adopted
        return await self._finish(
            job,
            "failed",
            error=(
                "submit_unconfirmed",
                "The create request may have reached AllToken, but no answer was received and the "
                "idempotency window (about 60 s) has passed, so it was not sent again to avoid paying twice. "
                + (
                    "No matching video was found in AllToken's task list. "
                    if job.kind == "video"
                    else "AllToken offers no way to look up an image task without its id. "
                )
                + "Check your AllToken usage page; submit a new job if nothing was charged.",
            ),
        )

    async def _reconcile_video(self, job: Job) -> Job | None:
        listing = await self._client.list_videos(limit=100)
        low, high = RECONCILE_WINDOW_SECONDS
        submitted = job.submitted_at or job.created_at
        candidates = []
        for task in listing.items:
            created = _to_epoch(task.created_at)
            if task.model != job.model or created is None:
                continue
            if not low <= created - submitted <= high:
                continue
            if await self._store.find_job_by_upstream(task.id) is not None:
                continue  # another job already owns it
            candidates.append((abs(created - submitted), task))
        if not candidates:
            return None
        _, task = min(candidates, key=lambda pair: pair[0])
        return await self._accept(job, task.id, task.status, note="recovered from AllToken's video list")

    # -- waiting ---------------------------------------------------------------------------------

    async def wait(self, job_id: str, seconds: float, progress: Progress | None = None) -> Job:
        """Wait up to `seconds` (capped by ALLTOKEN_MAX_WAIT_SECONDS) for the job to finish."""
        job = await self.get(job_id)
        total = max(0.0, min(seconds, self._settings.max_wait_seconds))
        if total <= 0 or not job.active:
            return job
        self._wake.set()  # make sure the poller looks at it now
        started = time.monotonic()
        last_status, last_report = job.status, -math.inf
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
            event = self._changed.setdefault(job_id, anyio.Event())
            with anyio.move_on_after(min(WAIT_RECHECK_SECONDS, total - elapsed, PROGRESS_EVERY_SECONDS)):
                await event.wait()
            job = await self.get(job_id)
        if progress is not None:
            elapsed = time.monotonic() - started
            await progress(min(elapsed, total), total, f"{job.kind} job {job.job_id}: {job.status}")
        return job

    # -- cancel ----------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if not job.active:
            return await self._note(job, f"Nothing to cancel: the job is already {job.status}.")
        if job.kind == "image":
            cancelled = await self._finish(
                job,
                "cancelled",
                note="AllToken cannot cancel image generation; the job was cancelled here and any late "
                "result will be discarded (it may still be charged).",
                only_if_active=True,
            )
            return (
                cancelled
                if cancelled.status == "cancelled"
                else await self._note(
                    cancelled, f"Too late to cancel: the job is already {cancelled.status}."
                )
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

    async def _cancel_upstream(self, job: Job) -> Job:
        assert job.upstream_id is not None
        try:
            task = await self._client.cancel_video(job.upstream_id)
        except ConflictError as exc:
            # Already finished (or not cancellable in its current state): report what it really is.
            current = await self._client.get_video(job.upstream_id)
            updated = await self._store.update_job(
                job.job_id,
                cancel_requested=False,
                upstream_status=current.status,
                note=f"AllToken refused to cancel (the task is {current.status}): {exc}",
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
        """Advance the active jobs this process can lease, forever (cancelled on shutdown).

        Each round reads when the next job is due (a read-only query); only when one is due does it
        take the write lock to lease jobs, so idle processes sharing the store never contend for it.
        """
        paused = False  # by a failing state database; logged once per outage
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    now = time.time()
                    free = MAX_PARALLEL_POLLS - len(self._in_flight)
                    try:
                        due = await self._store.next_due_at(self.owner, now=now, exclude=self._in_flight)
                        claimed = []
                        if due is not None and due <= now and free > 0:
                            claimed = await self._store.claim_due_jobs(
                                self.owner,
                                now=now,
                                lease_seconds=LEASE_SECONDS,
                                limit=free,
                                exclude=self._in_flight,
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

    async def _advance_guarded(self, job: Job) -> None:
        try:
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
            self._in_flight.discard(job.job_id)
            with suppress(StoreError):  # the lease expires by itself
                await self._store.release_lease(job.job_id, self.owner)
            self._wake.set()

    async def _advance(self, job: Job) -> None:
        if job.submit_state != "accepted" or job.upstream_id is None:
            await self._resubmit(job)
            return
        try:
            if job.kind == "image":
                await self._poll_image(job)
            else:
                await self._poll_video(job)
        except files.OutputFileError as exc:
            raise _Retry(
                _backoff(job.poll_failures),
                f"could not save the result (will retry; nothing is lost yet): {exc}",
            ) from exc
        except (TransportError, ServerError, RateLimitError) as exc:
            raise _Retry(_backoff(job.poll_failures, exc), f"poll failed, retrying: {exc}") from exc
        except (
            AuthenticationError,
            PermissionDeniedError,
            InsufficientBalanceError,
            MissingAPIKeyError,
        ) as exc:
            raise _Retry(MAX_BACKOFF_SECONDS, f"AllToken refused the status check: {exc}") from exc

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
                    job, stack, self._settings.output_dir, lambda: self._remove_partials_for(job)
                )
                task = await self._client.get_image(job.upstream_id, b64_sink=sink)
                sources = _image_sources(task.data)
                if task.status == "completed" and any(source["url"] for source in sources):
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
        sources: Sequence[dict[str, Any]],
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
        saved: list[dict[str, Any]] = []
        for index, source in enumerate(sources):
            if index in streamed:
                result = streamed[index]
            elif source.get("url"):
                ext = files.extension_for(source.get("mime_type"), "png")
                path = self._settings.output_dir / files.media_filename(job.prompt, job.job_id, index, ext)
                try:
                    result = await files.download(
                        self._client,
                        source["url"],
                        path,
                        max_bytes=MAX_IMAGE_BYTES,
                        mime_type=source.get("mime_type"),
                    )
                except files.DownloadError as exc:
                    raise _Retry(
                        _backoff(job.poll_failures), f"downloading image {index} failed: {exc}"
                    ) from exc
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
            saved.append(_file_entry(job.job_id, index, result, "image"))
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
            video_url=task.video_url,
            video_url_expires_at=expires,
            usage=task.usage,
        )
        if kept is None:
            return
        job = kept
        await self._remove_partials_for(job)
        wanted = [(task.video_url, "video", "mp4", MAX_VIDEO_BYTES)]
        if task.last_frame_url:
            wanted.append((task.last_frame_url, "last_frame", "png", MAX_FRAME_BYTES))
        saved: list[dict[str, Any]] = []
        for index, (url, role, fallback_ext, cap) in enumerate(wanted):
            stem = job.prompt if role == "video" else f"{job.prompt} last frame"
            path = self._settings.output_dir / files.media_filename(stem, job.job_id, index, fallback_ext)
            try:
                result = await files.download(self._client, url, path, max_bytes=cap)
            except files.DownloadError as exc:
                raise _Retry(_backoff(job.poll_failures), f"downloading the {role} failed: {exc}") from exc
            saved.append(_file_entry(job.job_id, index, result, role))
        await self._complete(job, saved, usage=task.usage)

    async def _remove_partials_for(self, job: Job) -> None:
        # Safe: only the lease holder (us) writes this job's files.
        removed = await anyio.to_thread.run_sync(files.remove_partials, self._settings.output_dir, job.job_id)
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

    async def _complete(self, job: Job, saved: list[dict[str, Any]], usage: dict[str, Any] | None) -> None:
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
            note=None,
        )
        if done is None:
            # Cancelled locally (or taken over) while we were saving: the late result is discarded.
            for entry in saved:
                await anyio.Path(entry["path"]).unlink(missing_ok=True)
            return
        await self._changed_to(job, done)

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
        if self._on_change is not None and (before.status != after.status or before.files != after.files):
            try:
                await self._on_change(JobRecord.from_job(after))
            except Exception:
                logger.exception("job %s: change notification failed", after.job_id)


# --------------------------------------------------------------------------------- helpers


def _file_entry(job_id: str, index: int, saved: files.SavedFile, role: str) -> dict[str, Any]:
    """The stored form of a saved file: the public `MediaFile` record, as JSON."""
    return MediaFile(
        path=str(saved.path),
        uri=media_uri(job_id, index),
        mime_type=saved.mime_type,
        bytes=saved.bytes,
        sha256=saved.sha256,
        role=role,
    ).model_dump()


def _image_sources(data: Sequence[ImageDatum]) -> list[dict[str, Any]]:
    """Where each image of a completed task can still be fetched from (None: nowhere but the b64)."""
    return [
        {"index": i, "url": d.r2_url, "mime_type": d.mime_type, "role": "image"} for i, d in enumerate(data)
    ]


def _poll_interval(task: ImageTask | VideoTask) -> float:
    """Follow the server's pace: the larger of next_poll_after_ms and Retry-After."""
    hints = [h for h in (task.next_poll_after_ms and task.next_poll_after_ms / 1000, task.retry_after) if h]
    return max(MIN_POLL_SECONDS, max(hints)) if hints else DEFAULT_POLL_SECONDS


def _backoff(failures: int, exc: AllTokenError | None = None) -> float:
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, (int, float)) and retry_after > 0:
        return min(float(retry_after), MAX_BACKOFF_SECONDS)
    return min(MAX_BACKOFF_SECONDS, float(2 ** min(failures, 6)))


def _error_code(exc: AllTokenError) -> str:
    if isinstance(exc, APIStatusError):
        return exc.code or f"http_{exc.status_code}"
    if isinstance(exc, MissingAPIKeyError):
        return "missing_api_key"
    return "error"


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
        output_dir: Path,
        before_first_file: Callable[[], Awaitable[None]],
    ) -> None:
        self._job, self._stack, self._output_dir = job, stack, output_dir
        self._before_first_file = before_first_file
        self.writers: dict[int, files.AtomicWriter] = {}

    async def write(self, index: int, data: bytes) -> None:
        writer = self.writers.get(index)
        if writer is None:
            if not self.writers:
                await self._before_first_file()
            # The extension is a guess; atomic_file corrects it from the bytes when it commits.
            path = self._output_dir / files.media_filename(self._job.prompt, self._job.job_id, index, "png")
            writer = await self._stack.enter_async_context(files.atomic_file(path, max_bytes=MAX_IMAGE_BYTES))
            self.writers[index] = writer
        await writer.write(data)
