"""What the state store holds, independent of the database it is kept in: jobs (`Job`, `MediaFile`,
`ImageSource`), conversations, spend-ledger charges, the errors every backend raises, and the one
conversion between a job and its row.

A job row is converted here and nowhere else: `files` and `sources` become `MediaFile` and `ImageSource`
when a row is read (keys older releases wrote and nothing reads are ignored) and are validated before
one is written; `request` and `usage` stay AllToken's JSON objects (stored as JSON text in both backends,
so a resent request is byte-identical whichever database held it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from alltoken_mcp.settings import Upstream

JobKind = Literal["image", "video"]
JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled", "expired"]
SubmitState = Literal["pending", "sent", "accepted", "rejected"]
"""pending: the create request has not left yet; sent: it may have reached AllToken but no answer was
stored; accepted: `upstream_id` is known; rejected: AllToken refused it (nothing was created)."""

ACTIVE_STATUSES: tuple[JobStatus, ...] = ("queued", "processing")

JOB_ID_RE = re.compile(r"job_[0-9a-f]{16}")
CONVERSATION_ID_RE = re.compile(r"conv_[0-9a-f]{16}")


class StoreError(Exception):
    """The database, or a job stored in it, cannot be used (corrupt, from a newer release, not writable).
    One-line message."""


class StoreWriteError(StoreError):
    """A statement failed because of the machine, not the program: full disk, read-only or immutable file,
    file-size limit, I/O error, a lock held too long. The message names the database and what to free or
    fix; the statement's transaction was rolled back, so the database is as it was before the call."""


class UpstreamTaskTaken(StoreError):
    """Another job already records this upstream task (each task belongs to one job)."""

    def __init__(self, upstream_id: str) -> None:
        super().__init__(f"AllToken task {upstream_id} already belongs to another job")


def new_job_id() -> str:
    return f"job_{secrets.token_hex(8)}"


def is_job_id(value: str) -> bool:
    return JOB_ID_RE.fullmatch(value) is not None


def is_conversation_id(value: str) -> bool:
    return CONVERSATION_ID_RE.fullmatch(value) is not None


def process_owner() -> str:
    """A lease owner name for this process: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True when `owner` names a process on this host that no longer exists.

    Owners on other hosts (a shared network home) cannot be checked; their leases simply time out.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


MediaRole = Literal["image", "video", "last_frame"]


# A result file a job saved: stored in the row's `files` and shown as it is in the job record. (A comment,
# not a docstring: pydantic would publish a docstring in every tool's output schema.)
class MediaFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str = Field(description="absolute path of the saved file")
    uri: str = Field(description="alltoken://media/{job_id}/{index}: the file as an MCP resource")
    mime_type: str
    bytes: int
    sha256: str
    role: MediaRole


class ImageSource(BaseModel):
    """Where one image of a completed task can still be fetched once its base64 has been consumed: the
    task's `r2_url` (None when AllToken sent only the base64) and the type AllToken gave it."""

    # Rows written before schema 4 also carry `index` and `role` (nothing read them); they are ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str | None
    mime_type: str | None = None


# Where a job's files go and how they are handed over, resolved and checked when the tool call is made
# and stored with the job, so a later process (after a restart) delivers there without the caller's roots.
class Delivery(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    directory: str | None = None
    """Absolute, symlinks resolved; None: the delivering server's output directory."""
    name: str | None = None
    """The file name `save_to` asked for (its suffix follows the bytes); None: generated names."""
    overwrite: bool = False
    """Replace an existing file of that name (else a free `name-1.ext` is taken)."""
    preview: bool = True
    """Results shown to the caller carry a small inline preview of each image."""


@dataclass(frozen=True)
class Job:
    """One media job row; times are Unix seconds. `files` and `sources` are typed (parsed once, when the
    row is read); `request` and `usage` are AllToken's JSON as it is (the wire body is re-sent unchanged)."""

    job_id: str
    kind: JobKind
    status: JobStatus
    model: str
    prompt: str
    request: dict[str, Any]
    idempotency_key: str
    submit_state: SubmitState
    created_at: float
    updated_at: float

    submitted_at: float | None = None
    upstream_id: str | None = None
    upstream_status: str | None = None
    next_poll_at: float = 0.0
    poll_failures: int = 0
    download_failures: int = 0
    """Failed attempts at downloading the finished result (transient failures only; see jobs.py)."""
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    files: list[MediaFile] = field(default_factory=list)
    """The saved result files, in the order of their `alltoken://media/{job_id}/{index}` URIs."""
    sources: list[ImageSource] = field(default_factory=list)
    """An image job's recovery URLs, one per image, stored before its files are written (a video's URL
    is `video_url`)."""
    error_code: str | None = None
    error_message: str | None = None
    video_url: str | None = None
    video_url_expires_at: str | None = None
    usage: dict[str, Any] | None = None
    note: str | None = None
    upstream_url: str | None = None
    """The upstream the job belongs to (`Upstream.base_url`): only a server configured for it (and for
    `upstream_key`) polls, cancels or fails the job. NULL for a job recorded before upstreams were: the
    first server with a key to lease it adopts it."""
    upstream_key: str | None = None
    """`Upstream.key_fingerprint` of the key that created the job (never the key)."""
    request_id: str | None = None
    """The create call's `x-gateway-request-id`: one of the ids AllToken may file the job's charge under."""
    cost_usd: str | None = None
    """What AllToken charged for the job (a decimal string, from its billing record); None: not known."""
    delivery: Delivery | None = None
    """Where its files go (`save_to`, a client's root) and whether results preview them; None: defaults."""
    person: str | None = None
    """Who made it (`people.current_person`): only they see it. None: made where no tokens are checked."""

    def visible_to(self, person: str | None) -> bool:
        """Whether `person` may see this job: anyone where no tokens are checked (None), else its maker."""
        return person is None or self.person == person

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def belongs_to(self, upstream: Upstream) -> bool:
        """Whether a server for `upstream` may act on this job (as `OWN_CONDITION` says in SQL)."""
        if self.upstream_url is None:
            return upstream.key_fingerprint is not None
        return self.upstream_url == upstream.base_url and self.upstream_key == upstream.key_fingerprint


JOB_COLUMNS = tuple(f.name for f in fields(Job))
_TYPED_COLUMNS: dict[str, TypeAdapter[Any]] = {
    "files": TypeAdapter(list[MediaFile]),
    "sources": TypeAdapter(list[ImageSource]),
    "delivery": TypeAdapter(Delivery | None),
}
_JSON_COLUMNS = {"request", "usage"}
REDACTED_COLUMNS = ("error_code", "error_message", "note")


def job_from_row(row: Mapping[str, Any]) -> Job:
    values: dict[str, Any] = {}
    for name in JOB_COLUMNS:
        value = row[name]
        if name in _TYPED_COLUMNS and value is not None:
            try:
                value = _TYPED_COLUMNS[name].validate_json(value)
            except ValidationError as exc:
                raise StoreError(
                    f"job {row['job_id']}: its stored {name} cannot be read ({exc.errors()[0]['msg']})"
                ) from None
        elif name in _JSON_COLUMNS and value is not None:
            value = json.loads(value)
        elif name == "cancel_requested":
            value = bool(value)
        values[name] = value
    return Job(**values)


def to_column(name: str, value: Any) -> Any:
    """`value` of job field `name` as its column holds it. Typed columns are validated first, so a
    malformed entry fails here instead of being written."""
    adapter = _TYPED_COLUMNS.get(name)
    if adapter is not None and value is not None:
        return adapter.dump_json(adapter.validate_python(value)).decode()
    if name in _JSON_COLUMNS and value is not None:
        return json.dumps(value, ensure_ascii=False)
    if name == "cancel_requested":
        return int(bool(value))
    return value


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    system: str | None
    model: str | None
    messages: list[dict[str, str]]
    created_at: float
    updated_at: float
    person: str | None = None
    """Who started it; only they may read or continue it (see `Job.person`)."""

    def visible_to(self, person: str | None) -> bool:
        return person is None or self.person == person


ChargeKind = Literal["chat", "image", "video"]
PICODOLLARS = Decimal(10) ** 12
"""Charges are stored as whole picodollars: exact sums in SQL (the cost comment has 10 decimals)."""


@dataclass(frozen=True)
class Charge:
    """One paid call in the spend ledger. `cost_usd` None: it was paid for, but what it cost is not known."""

    kind: ChargeKind
    model: str
    cost_usd: Decimal | None
    at: float
    upstream: Upstream
    request_id: str | None = None
    job_id: str | None = None
    """A media job's charge is recorded once per job: recording it again replaces it."""
    person: str | None = None
    """Who made the call (`people`); None: made where no tokens are checked."""

    def row(self) -> tuple[Any, ...]:
        """The values of `CHARGE_COLUMNS`, as both backends insert them (the cost in whole picodollars)."""
        cost = None if self.cost_usd is None else int(self.cost_usd * PICODOLLARS)
        where = (self.upstream.base_url, self.upstream.key_fingerprint)
        return (self.at, self.kind, self.model, cost, self.request_id, self.job_id, *where, self.person)


CHARGE_COLUMNS = "at, kind, model, cost_picodollars, request_id, job_id, upstream_url, upstream_key, person"


@dataclass(frozen=True)
class StoreInspection:
    """What `alltoken-mcp doctor` reads from a store without opening it for work."""

    version: int | None
    """The schema version; None: no schema yet (the first server creates it)."""
    pending: int
    """Jobs still queued or processing."""
    elsewhere: int
    """Of those, how many belong to another base URL or API key than the one asked about."""


@dataclass(frozen=True)
class SpendTotal:
    """The ledger over a period: the sum of the known costs, and how many charges there were and how many
    of them have no known cost."""

    known_usd: Decimal
    charges: int
    unknown: int


def lease_available(job: Job, owner: str, now: float, is_dead: Callable[[str], bool]) -> bool:
    if job.lease_owner is None or job.lease_owner == owner:
        return True
    if job.lease_expires_at is not None and job.lease_expires_at <= now:
        return True
    return is_dead(job.lease_owner)
