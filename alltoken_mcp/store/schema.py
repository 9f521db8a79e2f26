"""The schema, one version number for both backends, and each backend's migrations to it.

Version N of the SQLite script and of the PostgreSQL script make the same tables, columns and indexes in
each database's own dialect; a new version adds one entry to both tuples. SQLite records its version in
`PRAGMA user_version`, PostgreSQL in the one-row table `schema_version`.
"""

from __future__ import annotations

SCHEMA_VERSION = 7

SQLITE_MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, conversations, cache
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
        status TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt TEXT NOT NULL,
        request TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        submit_state TEXT NOT NULL,
        submitted_at REAL,
        upstream_id TEXT,
        upstream_status TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        next_poll_at REAL NOT NULL DEFAULT 0,
        poll_failures INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        files TEXT NOT NULL DEFAULT '[]',
        sources TEXT NOT NULL DEFAULT '[]',
        error_code TEXT,
        error_message TEXT,
        video_url TEXT,
        video_url_expires_at TEXT,
        usage TEXT,
        note TEXT
    );
    CREATE INDEX jobs_by_status ON jobs (status, next_poll_at);
    CREATE INDEX jobs_by_created ON jobs (created_at DESC);
    CREATE UNIQUE INDEX jobs_by_upstream ON jobs (upstream_id) WHERE upstream_id IS NOT NULL;
    CREATE TABLE conversations (
        conversation_id TEXT PRIMARY KEY,
        system TEXT,
        model TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE TABLE cache (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        stored_at REAL NOT NULL
    );
    """,
    # 2: failed attempts at downloading a finished job's files (bounded; see DownloadLimits.max_attempts)
    """
    ALTER TABLE jobs ADD COLUMN download_failures INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: the upstream each job belongs to (see `Job.upstream_url`); rows from before are NULL
    """
    ALTER TABLE jobs ADD COLUMN upstream_url TEXT;
    ALTER TABLE jobs ADD COLUMN upstream_key TEXT;
    """,
    # 4: `list_jobs` reads the newest `limit` rows straight off an index for every filter it takes (by
    # kind, by status, both, neither) instead of sorting every matching row; job_id breaks ties
    """
    DROP INDEX jobs_by_created;
    CREATE INDEX jobs_newest_first ON jobs (created_at DESC, job_id);
    CREATE INDEX jobs_by_kind_newest_first ON jobs (kind, created_at DESC, job_id);
    CREATE INDEX jobs_by_status_newest_first ON jobs (status, created_at DESC, job_id);
    CREATE INDEX jobs_by_kind_and_status_newest_first ON jobs (kind, status, created_at DESC, job_id);
    """,
    # 5: spend. A job keeps its create call's request id (what AllToken may file its charge under) and
    # its known cost; `charges` is the ledger of paid calls, in picodollars (exact sums), NULL = unknown
    """
    ALTER TABLE jobs ADD COLUMN request_id TEXT;
    ALTER TABLE jobs ADD COLUMN cost_usd TEXT;
    CREATE TABLE charges (
        charge_id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('chat', 'image', 'video')),
        model TEXT NOT NULL,
        cost_picodollars INTEGER,
        request_id TEXT,
        job_id TEXT UNIQUE,
        upstream_url TEXT NOT NULL,
        upstream_key TEXT
    );
    CREATE INDEX charges_by_upstream_and_time ON charges (upstream_url, upstream_key, at);
    """,
    # 6: where and how a job's files are delivered (`Delivery`, JSON), decided when the call was made;
    # NULL: the delivering server's output directory, with previews
    """
    ALTER TABLE jobs ADD COLUMN delivery TEXT;
    """,
    # 7: the person a job, a conversation and a charge belong to (`people`; a token's name on a team
    # server); NULL: made where no tokens are checked (stdio, loopback HTTP), everyone local's
    """
    ALTER TABLE jobs ADD COLUMN person TEXT;
    ALTER TABLE conversations ADD COLUMN person TEXT;
    ALTER TABLE charges ADD COLUMN person TEXT;
    CREATE INDEX jobs_by_person_newest_first ON jobs (person, created_at DESC, job_id);
    CREATE INDEX charges_by_person_and_time ON charges (person, at);
    """,
)
assert len(SQLITE_MIGRATIONS) == SCHEMA_VERSION

POSTGRES_MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, conversations, cache (times are Unix seconds, as in SQLite; JSON columns are text, so a
    # stored request is re-sent byte for byte)
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
        status TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt TEXT NOT NULL,
        request TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        submit_state TEXT NOT NULL,
        submitted_at DOUBLE PRECISION,
        upstream_id TEXT,
        upstream_status TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        next_poll_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        poll_failures INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        files TEXT NOT NULL DEFAULT '[]',
        sources TEXT NOT NULL DEFAULT '[]',
        error_code TEXT,
        error_message TEXT,
        video_url TEXT,
        video_url_expires_at TEXT,
        usage TEXT,
        note TEXT
    );
    CREATE INDEX jobs_by_status ON jobs (status, next_poll_at);
    CREATE INDEX jobs_by_created ON jobs (created_at DESC);
    CREATE UNIQUE INDEX jobs_by_upstream ON jobs (upstream_id) WHERE upstream_id IS NOT NULL;
    CREATE TABLE conversations (
        conversation_id TEXT PRIMARY KEY,
        system TEXT,
        model TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE TABLE cache (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        stored_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 2
    """
    ALTER TABLE jobs ADD COLUMN download_failures INTEGER NOT NULL DEFAULT 0;
    """,
    # 3
    """
    ALTER TABLE jobs ADD COLUMN upstream_url TEXT;
    ALTER TABLE jobs ADD COLUMN upstream_key TEXT;
    """,
    # 4
    """
    DROP INDEX jobs_by_created;
    CREATE INDEX jobs_newest_first ON jobs (created_at DESC, job_id);
    CREATE INDEX jobs_by_kind_newest_first ON jobs (kind, created_at DESC, job_id);
    CREATE INDEX jobs_by_status_newest_first ON jobs (status, created_at DESC, job_id);
    CREATE INDEX jobs_by_kind_and_status_newest_first ON jobs (kind, status, created_at DESC, job_id);
    """,
    # 5 (picodollars need 64 bits: a dollar is 10^12)
    """
    ALTER TABLE jobs ADD COLUMN request_id TEXT;
    ALTER TABLE jobs ADD COLUMN cost_usd TEXT;
    CREATE TABLE charges (
        charge_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('chat', 'image', 'video')),
        model TEXT NOT NULL,
        cost_picodollars BIGINT,
        request_id TEXT,
        job_id TEXT UNIQUE,
        upstream_url TEXT NOT NULL,
        upstream_key TEXT
    );
    CREATE INDEX charges_by_upstream_and_time ON charges (upstream_url, upstream_key, at);
    """,
    # 6
    """
    ALTER TABLE jobs ADD COLUMN delivery TEXT;
    """,
    # 7
    """
    ALTER TABLE jobs ADD COLUMN person TEXT;
    ALTER TABLE conversations ADD COLUMN person TEXT;
    ALTER TABLE charges ADD COLUMN person TEXT;
    CREATE INDEX jobs_by_person_newest_first ON jobs (person, created_at DESC, job_id);
    CREATE INDEX charges_by_person_and_time ON charges (person, at);
    """,
)
assert len(POSTGRES_MIGRATIONS) == SCHEMA_VERSION
