"""What tools and resources show about a media job: `JobRecord` and its parts, built from a store row.

Kept apart from the job manager so the public shape (part of the product contract in design.md) reads
in one place.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field

from alltoken_mcp.formats import utc_iso
from alltoken_mcp.settings import Upstream
from alltoken_mcp.store import Job, JobKind, JobStatus, MediaFile

R = TypeVar("R", bound="JobRecord")


class JobErrorInfo(BaseModel):
    code: str
    message: str


class JobRecord(BaseModel):
    """What tools and resources show about a job."""

    job_id: str
    kind: JobKind
    status: JobStatus
    model: str
    prompt: str
    created_at: str
    updated_at: str
    upstream_id: str | None = Field(default=None, description="AllToken's task id")
    upstream_status: str | None = None
    files: list[MediaFile] = Field(default_factory=list)
    error: JobErrorInfo | None = None
    video_url: str | None = Field(default=None, description="remote video URL (expires); the file is saved")
    video_url_expires_at: str | None = None
    usage: dict[str, Any] | None = None
    cost_usd: str | None = Field(default=None, description="USD billed; null: not known")
    note: str | None = Field(default=None, description="the latest notable event, e.g. a cancel outcome")
    cancel_requested: bool = False
    upstream: str | None = Field(default=None, description="the AllToken base URL the job belongs to")
    foreign: bool = Field(
        default=False,
        description="true: the job belongs to another base URL or API key; this server leaves it as it is",
    )

    @classmethod
    def from_job(cls: type[R], job: Job, here: Upstream | None = None) -> R:
        """The record of `job`; with `here` (the server's upstream), a job of another upstream is marked
        `foreign` and its note says where it belongs."""
        foreign = here is not None and not job.belongs_to(here)
        note = elsewhere_note(job, here) if here is not None and foreign else job.note
        error = None
        if job.error_code or job.error_message:
            error = JobErrorInfo(code=job.error_code or "error", message=job.error_message or "")
        return cls(
            job_id=job.job_id,
            kind=job.kind,
            status=job.status,
            model=job.model,
            prompt=job.prompt,
            created_at=utc_iso(job.created_at),
            updated_at=utc_iso(job.updated_at),
            upstream_id=job.upstream_id,
            upstream_status=job.upstream_status,
            files=job.files,  # the stored MediaFile objects themselves (pydantic does not revalidate them)
            error=error,
            video_url=job.video_url,
            video_url_expires_at=job.video_url_expires_at,
            usage=job.usage,
            cost_usd=job.cost_usd,
            note=note,
            cancel_requested=job.cancel_requested,
            upstream=job.upstream_url,
            foreign=foreign,
        )


def belongs_to(job: Job, here: Upstream) -> str:
    """Where a job of another upstream belongs, in words: its base URL, and its key where that differs."""
    if job.upstream_url is None:
        return (
            "the first server with an API key to poll it (it was started before jobs recorded their upstream)"
        )
    where = job.upstream_url
    if where != here.base_url:
        return where
    key = f"the API key with fingerprint {job.upstream_key}" if job.upstream_key else "no API key"
    if here.key_fingerprint is None:
        return f"{where} with {key} (this server has no usable key)"
    return f"{where} with {key} (this server's key is {here.key_fingerprint})"


def elsewhere_note(job: Job, here: Upstream) -> str:
    return (
        f"This job belongs to {belongs_to(job, here)}; run the server with that configuration to continue "
        "it. This server does not poll, cancel or fail it."
    )


def media_uri(job_id: str, index: int) -> str:
    return f"alltoken://media/{job_id}/{index}"
