"""The store contract: what jobs.py, catalog/, spend.py and the tools may ask of the state database.

Two backends keep it: `SqliteStore` (the embedded default, one file shared by one user's processes) and
`PostgresStore` (a team server's replicas sharing one database). Callers hold a `Store` and never learn
which one it is; `open_store` (in the package) picks one from the settings.

What every backend promises:

* Every error is a `StoreError` with one line that names the database (a path, or a URL without its
  password) and says what to free or fix; a failure of the machine (full disk, unreachable server) is a
  `StoreWriteError`, after which the store is as it was before the call and the next call simply tries
  again.
* Texts that can carry secrets (a job's error and note, conversation turns, cache values) are redacted
  before they are written.
* A lease is exclusive: of the processes calling `claim_due_jobs` at once, one gets each job; a lease
  ends when it is released, when it expires, or at once when its owner is a dead process on this host
  (`owner_is_dead`; another host's processes cannot be checked, so there expiry is the rule).
* `update_job(owner=…)` and `update_job(only_if_active=True)` are atomic checks: exactly one of two racing
  writers wins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from alltoken_mcp.settings import Upstream
from alltoken_mcp.store.records import Charge, Conversation, Job, SpendTotal, owner_is_dead

READY_SECONDS = 2.0
"""How long `ready()` may take: a store that has not answered within it is not ready. Balancers probe every
few seconds and time out themselves; a probe left waiting on a locked database would also hold on to a
connection the tool calls need."""


@dataclass(frozen=True)
class JobChange:
    """Another process changed a job's status or files (published with `publish_job_change`)."""

    job_id: str


class Store(ABC):
    location: str
    """What messages name: the database file, or the database URL without its password."""

    # -- lifecycle -------------------------------------------------------------------------------

    @abstractmethod
    async def close(self) -> None:
        """Release the connection(s); failures are logged, not raised (there is nothing left to do)."""

    @abstractmethod
    async def ready(self) -> None:
        """A cheap check that the store can serve: reachable, and its schema is this release's. Raises
        `StoreError` (one line) when not, also when it has no answer within `READY_SECONDS` (a lock held
        elsewhere, every connection busy). For a load balancer's readiness probe."""

    @abstractmethod
    async def job_counts(self) -> dict[tuple[str, str], int]:
        """How many jobs there are of each (kind, status), for /metrics."""

    @abstractmethod
    async def due_count(self, now: float) -> int:
        """How many active jobs are due for a poll (or a resubmit) at `now`, leased or not."""

    # -- jobs ------------------------------------------------------------------------------------

    @abstractmethod
    async def insert_job(self, job: Job) -> None:
        """Durable before it returns: a job row and its idempotency key exist before a paid request leaves."""

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None:
        """None for an unknown id, and for a malformed one (not job_<16 hex>), which never reaches SQL."""

    @abstractmethod
    async def find_job_by_upstream(self, upstream_id: str) -> Job | None: ...

    @abstractmethod
    async def update_job(
        self, job_id: str, *, owner: str | None = None, only_if_active: bool = False, **changes: Any
    ) -> Job | None:
        """Apply `changes` (Job field names) and bump `updated_at`; return the new row.

        With `owner`, only while that owner holds the job's lease; with `only_if_active`, only while the
        job is queued or processing. None when the condition does not hold. Raises `UpstreamTaskTaken`
        when `upstream_id` is another job's, ValueError for an unknown field.
        """

    @abstractmethod
    async def list_jobs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 20,
        person: str | None = None,
    ) -> list[Job]:
        """At most `limit` jobs, newest first (ties: job_id), optionally only of one kind and/or status.
        With `person`, only that person's jobs (None: everyone's)."""

    @abstractmethod
    async def claim_due_jobs(
        self,
        owner: str,
        *,
        upstream: Upstream,
        now: float,
        lease_seconds: float,
        limit: int,
        exclude: Collection[str] = (),
        is_dead: Callable[[str], bool] = owner_is_dead,
        on_takeover: Callable[[Job], None] | None = None,
    ) -> list[Job]:
        """Lease up to `limit` active jobs of `upstream` that are due (`next_poll_at <= now`) and whose
        lease is free, expired, `owner`'s, or held by a dead process; `exclude` names jobs this process is
        already working on. A job from before upstreams were recorded is adopted by a server with a key.
        `on_takeover` is called with the job as it was for each lease taken from another owner (expired,
        or its process dead), inside the transaction: it must be quick and must not touch the store."""

    @abstractmethod
    async def next_due_at(
        self,
        owner: str,
        *,
        upstream: Upstream,
        now: float,
        exclude: Collection[str] = (),
        is_dead: Callable[[str], bool] = owner_is_dead,
    ) -> float | None:
        """When the earliest job this process could poll is due (a lease held elsewhere counts from its
        expiry); None when no job of `upstream` is active."""

    @abstractmethod
    async def release_lease(self, job_id: str, owner: str) -> None: ...

    @abstractmethod
    async def release_all_leases(self, owner: str) -> None: ...

    # -- job changes across processes ------------------------------------------------------------

    @abstractmethod
    async def publish_job_change(self, job_id: str) -> None:
        """Tell the other processes sharing the store that `job_id`'s status or files changed (best
        effort: a process that misses it still sees the change when it next re-reads the job)."""

    @abstractmethod
    async def follow_job_changes(self, deliver: Callable[[JobChange], Awaitable[None]]) -> None:
        """Call `deliver` for each change another process publishes, until cancelled. A backend that
        cannot hear other processes returns at once (they are then noticed by re-reading the store)."""

    # -- conversations ---------------------------------------------------------------------------

    @abstractmethod
    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    @abstractmethod
    async def save_turn(
        self,
        conversation_id: str | None,
        *,
        system: str | None,
        model: str | None,
        messages: Sequence[dict[str, str]],
        person: str | None = None,
    ) -> str:
        """Record one chat turn: create the conversation when `conversation_id` is None (as `person`'s),
        else replace its system prompt when `system` is given; then append `messages`. Returns the
        conversation id. Whether the caller may continue a conversation is checked before, by reading it."""

    # -- spend ledger ----------------------------------------------------------------------------

    @abstractmethod
    async def record_charge(self, charge: Charge) -> None:
        """Add a charge to the ledger; a job's charge replaces the one recorded for that job before."""

    @abstractmethod
    async def spend(self, upstream: Upstream, *, since: float, person: str | None = None) -> SpendTotal:
        """The charges of `upstream` at or after `since` (Unix time); with `person`, only theirs."""

    # -- cache -----------------------------------------------------------------------------------

    @abstractmethod
    async def cache_put(self, key: str, value: Any) -> None: ...

    @abstractmethod
    async def cache_get(self, key: str) -> Any: ...
