"""What tools and resources show about a media job, built from a store row: the full `JobRecord` (the
`alltoken://jobs…` resources), the `JobAnswer` a tool returns about one job, and the `JobSummary` of
each job `list_jobs` returns.

Answers land in the calling model's context, so they are short: a `JobAnswer` echoes the start of the
prompt (and its length), not the whole of it, and leaves out what is empty and the bookkeeping a model
cannot act on (the upstream status, token usage, the base URL); the resource keeps everything. Kept apart
from the job manager so the public shapes (part of the product contract in design.md) read in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from alltoken_mcp.formats import utc_iso
from alltoken_mcp.settings import Upstream
from alltoken_mcp.store import Job, JobKind, JobStatus, MediaFile

R = TypeVar("R", bound="JobRecord")

ANSWER_PROMPT_CHARS = 120
"""How much of its prompt a job answer echoes: enough to recognise the job."""
SUMMARY_PROMPT_CHARS = 32
"""How much of its prompt a `list_jobs` entry echoes: 200 entries must stay inside 40 KB."""


def prompt_start(prompt: str, limit: int) -> str:
    """`prompt` if it has at most `limit` characters, else its first ones and "…" (at most `limit` in all)."""
    return prompt if len(prompt) <= limit else prompt[: limit - 1].rstrip() + "…"


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


class JobAnswer(BaseModel):
    """What a tool answers about one job: the record, with the start of its prompt (see `dump`)."""

    job_id: str
    kind: JobKind
    status: JobStatus
    model: str
    prompt: str = Field(description=f"its first {ANSWER_PROMPT_CHARS} characters at most")
    prompt_chars: int
    created_at: str
    updated_at: str
    upstream_id: str | None = None
    files: list[MediaFile] = Field(default_factory=list)
    error: JobErrorInfo | None = None
    video_url: str | None = None
    video_url_expires_at: str | None = None
    cost_usd: str | None = None
    note: str | None = None
    foreign: bool = False
    warnings: list[str] = Field(default_factory=list)
    download_urls: list[str] | None = Field(
        default=None, description="over HTTP: a signed URL per file (expires; job_status renews it)"
    )

    @classmethod
    def from_record(
        cls, record: JobRecord, warnings: Sequence[str] = (), download_urls: Sequence[str] | None = None
    ) -> JobAnswer:
        return cls(
            **record.model_dump(include=_ANSWER_FIELDS),
            files=record.files,
            error=record.error,
            prompt=prompt_start(record.prompt, ANSWER_PROMPT_CHARS),
            prompt_chars=len(record.prompt),
            warnings=list(warnings),
            download_urls=list(download_urls) if download_urls else None,
        )

    def dump(self) -> dict[str, Any]:
        """The answer as JSON data. design.md's record fields are always there (null when not known yet);
        the rest only when they say something: a note, `foreign: true`, and a video's URL."""
        data = self.model_dump(mode="json")
        if self.note is None:
            del data["note"]
        if not self.foreign:
            del data["foreign"]
        if self.kind == "image":
            del data["video_url"], data["video_url_expires_at"]
        if self.download_urls is None:
            del data["download_urls"]
        return data


_ANSWER_FIELDS = set(JobAnswer.model_fields) - {
    "files",
    "error",
    "prompt",
    "prompt_chars",
    "warnings",
    "download_urls",
}


class JobSummary(BaseModel):
    """One job in a `list_jobs` answer; `job_status` has the rest."""

    job_id: str
    kind: JobKind
    status: JobStatus
    model: str
    created_at: str
    prompt: str
    files: int = Field(description="how many files are saved")
    foreign: bool = False

    @classmethod
    def from_record(cls, record: JobRecord) -> JobSummary:
        return cls(
            job_id=record.job_id,
            kind=record.kind,
            status=record.status,
            model=record.model,
            created_at=record.created_at,
            prompt=prompt_start(record.prompt, SUMMARY_PROMPT_CHARS),
            files=len(record.files),
            foreign=record.foreign,
        )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"foreign"} if not self.foreign else None)


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
