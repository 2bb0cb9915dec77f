-- Webhooks: the URL and events a job asked for live on the job; calls still
-- to be made live in deliveries, each with its own URL and body so that a
-- delivery outlives the job it reports on (a purge or delete does not take
-- it away). Times are Unix microseconds.

ALTER TABLE jobs ADD COLUMN webhook_url TEXT;
ALTER TABLE jobs ADD COLUMN webhook_events TEXT;

CREATE TABLE deliveries (
    id         TEXT PRIMARY KEY,
    job_id     TEXT    NOT NULL,
    url        TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    body       BLOB    NOT NULL,
    attempt    INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX deliveries_due ON deliveries (next_at, id);
