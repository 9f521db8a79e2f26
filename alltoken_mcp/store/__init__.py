"""The state store: media jobs (with their idempotency keys and poll leases), chat conversations, the
spend ledger and small caches, behind one contract (`Store`, contract.py) with two backends: the
embedded SQLite file (sqlite.py, the default) and a shared PostgreSQL database for a team server's
replicas (postgres.py, selected by ALLTOKEN_MCP_DATABASE_URL; its driver is imported only then).
"""

from __future__ import annotations

from alltoken_mcp.redact import Redactor
from alltoken_mcp.settings import Settings
from alltoken_mcp.store.contract import READY_SECONDS, JobChange, Store
from alltoken_mcp.store.records import (
    ACTIVE_STATUSES,
    JOB_COLUMNS,
    PICODOLLARS,
    Charge,
    ChargeKind,
    Conversation,
    Delivery,
    ImageSource,
    Job,
    JobKind,
    JobStatus,
    MediaFile,
    MediaRole,
    SpendTotal,
    StoreError,
    StoreWriteError,
    SubmitState,
    UpstreamTaskTaken,
    is_conversation_id,
    is_job_id,
    new_job_id,
    owner_is_dead,
    process_owner,
    to_column,
)
from alltoken_mcp.store.schema import SCHEMA_VERSION
from alltoken_mcp.store.sqlite import ACTIVE_CONDITION, SqliteStore, list_jobs_query

__all__ = [
    "ACTIVE_CONDITION",
    "ACTIVE_STATUSES",
    "JOB_COLUMNS",
    "PICODOLLARS",
    "READY_SECONDS",
    "SCHEMA_VERSION",
    "Charge",
    "ChargeKind",
    "Conversation",
    "Delivery",
    "ImageSource",
    "Job",
    "JobChange",
    "JobKind",
    "JobStatus",
    "MediaFile",
    "MediaRole",
    "SpendTotal",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreWriteError",
    "SubmitState",
    "UpstreamTaskTaken",
    "is_conversation_id",
    "is_job_id",
    "list_jobs_query",
    "new_job_id",
    "open_store",
    "owner_is_dead",
    "process_owner",
    "to_column",
]


async def open_store(settings: Settings, *, redactor: Redactor | None = None) -> Store:
    """The store the settings name: PostgreSQL at `settings.database_url`, else the SQLite file in the
    home directory. Raises `StoreError` (one line) when it cannot be opened."""
    if settings.database_url is not None:
        from alltoken_mcp.store.postgres import PostgresStore  # the driver loads only for a team server

        return await PostgresStore.open(settings.database_url, redactor=redactor)
    return await SqliteStore.open(settings.database_path, redactor=redactor)
