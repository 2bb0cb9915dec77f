-- Jobs, their artifacts, and per-queue state counts so that admission control
-- and queue statistics never count rows. The store keeps the counts in the
-- same transaction as the changes, adding up each transaction's moves into
-- one update per (queue, state) rather than one per job.
-- Times are Unix microseconds; 0 means unset.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    queue            TEXT    NOT NULL,
    owner            TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_us       INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    input_digest     TEXT    NOT NULL DEFAULT '',
    unique_digest    TEXT,
    labels           TEXT,
    input_type       TEXT    NOT NULL DEFAULT '',
    input_name       TEXT    NOT NULL DEFAULT '',
    input_size       INTEGER NOT NULL DEFAULT 0,
    input_data       BLOB,
    input_path       TEXT,
    progress_current INTEGER NOT NULL DEFAULT 0,
    progress_total   INTEGER NOT NULL DEFAULT 0,
    progress_message TEXT    NOT NULL DEFAULT '',
    result_type      TEXT,
    result_size      INTEGER NOT NULL DEFAULT 0,
    result_data      BLOB,
    result_path      TEXT,
    artifacts        INTEGER NOT NULL DEFAULT 0,
    error_message    TEXT,
    error_code       TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER NOT NULL DEFAULT 0,
    finished_at      INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL DEFAULT 0,
    version          INTEGER NOT NULL,
    lease_token      TEXT,
    lease_expires_at INTEGER NOT NULL DEFAULT 0,
    worker           TEXT
);

-- Claim order, and the position of a queued job, read this index in order.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_expires ON jobs (expires_at) WHERE expires_at > 0;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_unique ON jobs (queue, owner, unique_digest) WHERE unique_digest IS NOT NULL;
CREATE INDEX jobs_owner ON jobs (owner, id);
CREATE INDEX jobs_queue ON jobs (queue, id);

CREATE TABLE artifacts (
    job_id       TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    data         BLOB,
    path         TEXT,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;

CREATE TABLE queue_counts (
    queue TEXT    NOT NULL,
    state TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
