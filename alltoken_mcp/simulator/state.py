"""The simulator's in-process state: tasks, uploads, idempotency keys, faults, counters and the clock.

Task progress is computed from timestamps on every read (created + scaled durations), never from
background sleeps, so there is nothing to cancel and a test can move time forward with `advance()`.
Everything runs on uvicorn's single event loop; mutations that must be atomic happen without an `await`
in between, which is what makes them atomic.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alltoken_mcp.simulator.config import Range, SimConfig


def pick(seed: str, bounds: Range) -> float:
    """A deterministic value within `bounds` derived from `seed`."""
    low, high = bounds
    fraction = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") / 0xFFFFFFFF
    return low + (high - low) * fraction


@dataclass
class Timeline:
    """When a task leaves the queue and when it finishes, in state-clock seconds."""

    created: float
    started: float
    finished: float

    def phase(self, now: float) -> Literal["queued", "processing", "done"]:
        if now < self.started:
            return "queued"
        return "processing" if now < self.finished else "done"


@dataclass
class ImageTask:
    id: str
    owner: str
    model: str
    prompt: str
    n: int
    size: str
    quality: str
    output_format: str
    background: str
    timeline: Timeline
    fail: bool
    delivered: bool = False
    claiming: bool = False
    images: list[bytes] | None = None


@dataclass
class VideoTask:
    id: str
    owner: str
    model: str
    prompt: str
    body: dict[str, Any]
    duration: int
    resolution: str
    ratio: str
    input_type: str
    timeline: Timeline
    fail: bool
    uploads: list[str] = field(default_factory=list)
    cancelled_at: float | None = None


@dataclass
class Upload:
    id: str
    owner: str
    purpose: str
    content_type: str
    content_length: int
    content_md5: str
    checksum_sha256: str
    token: str
    url_expires: float
    claim_expires: float
    received_sha256: str | None = None
    claimed_by: str | None = None


@dataclass
class Charge:
    """What one paid request cost, filed under the id a billing lookup finds it by (see billing.py)."""

    filed_under: str
    number: int  # the ledger entry's id; a refund takes the next number
    owner: str
    category: Literal["chat", "image", "video"]
    model: str
    cost: Decimal
    tokens: int
    created: float  # Unix time
    task_id: str | None = None


class Fault(BaseModel):
    """An injected failure for requests whose path (concrete or route template) and method match.

    `latency_ms` is real time (not scaled). `count: null` matches until the faults are cleared.
    `hold_ms` (real time) processes the request normally and then holds its response: before anything is
    sent (`hold_at="before_response"`), or after the headers and the first part of the body
    (`hold_at="mid_body"`: `after_chunks` parts of a streamed body, else half of it). It recreates "the
    server did the work but the client never heard back" and "killed mid-download" for crash tests.
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    method: str | None = None
    status: int | None = Field(default=None, ge=100, le=599)
    code: str | None = None
    message: str | None = None
    count: int | None = Field(default=1, ge=1)
    retry_after: int | None = Field(default=None, ge=0)
    drop: Literal["before_body", "mid_stream"] | None = None
    after_chunks: int = Field(default=0, ge=0)
    latency_ms: float | None = Field(default=None, ge=0)
    hold_ms: float | None = Field(default=None, ge=0)
    hold_at: Literal["before_response", "mid_body"] = "before_response"

    @model_validator(mode="after")
    def _one_effect(self) -> Fault:
        if self.status is None and self.drop is None and self.latency_ms is None and self.hold_ms is None:
            raise ValueError("a fault needs at least one of status, drop, latency_ms or hold_ms")
        if self.status is not None and self.drop is not None:
            raise ValueError("status and drop are exclusive: a dropped request is processed normally")
        if self.hold_ms is not None and (self.status is not None or self.drop is not None):
            raise ValueError("hold_ms holds a normally processed response; it excludes status and drop")
        if self.hold_ms is None and "hold_at" in self.model_fields_set:
            raise ValueError("hold_at needs hold_ms")
        return self

    def matches(self, method: str, path: str, template: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path in (path, template)


class SimState:
    """All mutable simulator state. Tests may read it directly or change it through the methods."""

    def __init__(self, config: SimConfig) -> None:
        self._initial = config
        self.config = config
        self._offset = 0.0
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        self.reset()

    def reset(self) -> None:
        """Back to a fresh simulator: initial config, no tasks, no faults, zero counters."""
        self.config = self._initial
        self.images: dict[str, ImageTask] = {}
        self.videos: dict[str, VideoTask] = {}
        self.uploads: dict[str, Upload] = {}
        self.idempotency: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.faults: list[Fault] = []
        self.requests: Counter[str] = Counter()
        self.tasks_created: Counter[str] = Counter({"images": 0, "videos": 0, "uploads": 0})
        self.b64_deliveries = 0
        self.foreign_authorization = 0
        self.charges: dict[str, Charge] = {}

    # -- clock ---------------------------------------------------------------------------------------

    def now(self) -> float:
        """Monotonic seconds, shifted by `advance()`."""
        return time.monotonic() + self._offset

    def wall(self, at: float | None = None) -> float:
        """Unix time for a state-clock instant (now by default)."""
        return self._wall0 + ((self.now() if at is None else at) - self._mono0)

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward by real seconds (expiry tests need not wait)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds

    def advance_to(self, instant: float) -> None:
        """Move the clock to `instant` (a `now()` value) unless it is already past it."""
        self.advance(max(0.0, instant - self.now()))

    def timeline(self, seed: str, render: Range) -> Timeline:
        now = self.now()
        total = self.config.scaled(pick(seed, render))
        return Timeline(now, now + total * self.config.queue_fraction, now + total)

    # -- config --------------------------------------------------------------------------------------

    def update_config(self, **changes: Any) -> SimConfig:
        self.config = self.config.updated(changes)
        return self.config

    # -- idempotency -----------------------------------------------------------------------------------

    def remembered(self, owner: str, family: str, key: str) -> str | None:
        hit = self.idempotency.get((owner, family, key))
        if hit is None:
            return None
        task_id, at = hit
        if self.now() - at > self.config.idempotency_window_s:
            del self.idempotency[(owner, family, key)]
            return None
        return task_id

    def remember(self, owner: str, family: str, key: str, task_id: str) -> None:
        self.idempotency[(owner, family, key)] = (task_id, self.now())

    def forget_idempotency(self) -> None:
        self.idempotency.clear()

    # -- billing ---------------------------------------------------------------------------------------

    def charge(
        self,
        owner: str,
        category: Literal["chat", "image", "video"],
        model: str,
        cost: Decimal,
        *,
        request_id: str,
        tokens: int = 0,
        task_id: str | None = None,
    ) -> Charge:
        """Bill one paid request; a media charge is filed under the id `media_billed_under` names."""
        by_task = task_id is not None and self.config.media_billed_under == "task_id"
        charge = Charge(
            filed_under=task_id if by_task and task_id is not None else request_id,
            number=2 * len(self.charges) + 1,
            owner=owner,
            category=category,
            model=model,
            cost=cost,
            tokens=tokens,
            created=self.wall(),
            task_id=task_id,
        )
        self.charges[charge.filed_under] = charge
        return charge

    # -- faults ----------------------------------------------------------------------------------------

    def add_fault(self, fault: Fault | None = None, **fields: Any) -> Fault:
        """Add a fault: `add_fault(Fault(...))` or `add_fault(path=..., status=...)`."""
        fault = fault if fault is not None else Fault.model_validate(fields)
        self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str, template: str) -> Fault | None:
        """The first matching fault, consuming one use of it."""
        for fault in self.faults:
            if fault.matches(method, path, template):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                return fault.model_copy()
        return None

    # -- counters --------------------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "tasks": dict(self.tasks_created),
            "b64_deliveries": self.b64_deliveries,
            "foreign_authorization": self.foreign_authorization,
        }
