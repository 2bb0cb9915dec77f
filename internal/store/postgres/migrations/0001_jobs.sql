-- Jobs and everything kept with them. Every table lives in the schema the
-- connection's search_path names, so that several docket installations (or
-- test runs) can share one database.
--
-- Ids and names are compared byte by byte (COLLATE "C"): job ids are UUIDv7
-- strings whose byte order is their age order, and artifacts list in the
-- same order whatever the database's locale.

CREATE TABLE jobs (
    id               text COLLATE "C" PRIMARY KEY,
    queue            text COLLATE "C" NOT NULL,
    owner            text COLLATE "C" NOT NULL DEFAULT '',
    state            text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    priority         integer     NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    timeout_us       bigint      NOT NULL DEFAULT 0,
    idempotency_key  text,
    input_digest     text        NOT NULL DEFAULT '',
    -- The input digest again, only when the job asked to be unique.
    unique_digest    text,
    labels           jsonb,
    input_type       text        NOT NULL DEFAULT '',
    input_name       text        NOT NULL DEFAULT '',
    input_size       bigint      NOT NULL DEFAULT 0,
    -- Small data is kept in the row (*_data); larger data is a blob of
    -- blob_chunks named by *_blob.
    input_data       bytea,
    input_blob       text,
    progress_current bigint      NOT NULL DEFAULT 0,
    progress_total   bigint      NOT NULL DEFAULT 0,
    progress_message text        NOT NULL DEFAULT '',
    result_type      text,
    result_size      bigint      NOT NULL DEFAULT 0,
    result_data      bytea,
    result_blob      text,
    artifacts        integer     NOT NULL DEFAULT 0,
    error_message    text,
    error_code       text,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL,
    expires_at       timestamptz,
    version          bigint      NOT NULL,
    lease_token      text,
    lease_expires_at timestamptz,
    worker           text,
    webhook_url      text,
    webhook_events   text
);

-- Claims read this index in order, and the position of a queued job counts
-- the entries ahead of it.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
-- Rescue looks for expired leases among the (few) running jobs.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
-- Purge: only finished jobs expire.
CREATE INDEX jobs_expires ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_unique ON jobs (queue, owner, unique_digest) WHERE unique_digest IS NOT NULL;
-- List, newest first, of one owner's jobs.
CREATE INDEX jobs_owner ON jobs (owner, id);
-- The changes a watcher missed while it was disconnected.
CREATE INDEX jobs_updated ON jobs (updated_at);

CREATE TABLE artifacts (
    job_id       text COLLATE "C" NOT NULL,
    name         text COLLATE "C" NOT NULL,
    content_type text   NOT NULL,
    size         bigint NOT NULL,
    data         bytea,
    blob         text,
    PRIMARY KEY (job_id, name)
);

-- Data too large for a row, in chunks of about a megabyte, so that it is
-- written and read back a chunk at a time and never held whole in memory.
-- A blob's name is unique within its job; chunks are keyed by job so that
-- removing a job removes all its data with one index range, including
-- chunks that a failed write left behind.
CREATE TABLE blob_chunks (
    job_id text COLLATE "C" NOT NULL,
    blob   text COLLATE "C" NOT NULL,
    seq    integer NOT NULL,
    data   bytea   NOT NULL,
    PRIMARY KEY (job_id, blob, seq)
);

-- Job counts per queue and state, kept by the statements that move jobs
-- (see docket_changed) so that admission control and queue statistics
-- never count rows. Each connection adds to its own slot, so that
-- concurrent transactions do not queue up on one row; a count is the sum
-- of its slots.
CREATE TABLE queue_counts (
    queue text COLLATE "C" NOT NULL,
    state text    NOT NULL,
    slot  integer NOT NULL,
    n     bigint  NOT NULL,
    PRIMARY KEY (queue, state, slot)
);

-- Webhook calls still to be made. A delivery carries its own URL and body,
-- so that it outlives the job it reports on.
CREATE TABLE deliveries (
    id         text COLLATE "C" PRIMARY KEY,
    job_id     text        NOT NULL,
    url        text        NOT NULL,
    event      text        NOT NULL,
    body       bytea       NOT NULL,
    attempt    integer     NOT NULL DEFAULT 0,
    next_at    timestamptz NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE INDEX deliveries_due ON deliveries (next_at, id);

-- One job's change, as a statement that made it reports it to
-- docket_changed: was is NULL for a new job, state is NULL for a removed one.
CREATE TYPE docket_change AS (
    id      text,
    queue   text,
    owner   text,
    version bigint,
    was     text,
    state   text
);

-- The NOTIFY channel of this schema: stores in other schemas of the same
-- database never hear each other.
CREATE FUNCTION docket_channel() RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN 'docket_' || md5(current_schema());
END
$$;

-- The entries of a notification payload for some changes, in order (see
-- docket_changed). An entry is at most 2000 bytes: past that its queue and
-- owner are left empty, and a job whose id alone is that long is left out.
-- (PL/pgSQL rather than SQL, here and below, as a session keeps its plans.)
CREATE FUNCTION docket_entries(changes docket_change[]) RETURNS TABLE (ord bigint, entry text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- Each OFFSET 0 keeps a subquery as it is, so that an entry is built
    -- once however often it is referred to.
    RETURN QUERY
    SELECT h.ord, h.entry FROM (
        SELECT g.ord, CASE
            WHEN octet_length(g.entry) <= 2000 THEN g.entry
            ELSE '[' || to_json(g.id)::text || ',"","",' || g.version
                || ',' || to_json(coalesce(g.state, g.was))::text
                || CASE WHEN g.state IS NULL THEN ',true]' ELSE ']' END
            END AS entry
        FROM (
            SELECT c.*, '[' || to_json(c.id)::text || ',' || to_json(c.queue)::text
                || ',' || to_json(c.owner)::text || ',' || c.version
                || ',' || to_json(coalesce(c.state, c.was))::text
                || CASE WHEN c.state IS NULL THEN ',true]' ELSE ']' END AS entry
            FROM unnest(changes) WITH ORDINALITY AS c(id, queue, owner, version, was, state, ord)
            OFFSET 0
        ) g
        OFFSET 0
    ) h
    WHERE octet_length(h.entry) <= 2000;
END
$$;

-- docket_changed is called once by every statement that changes jobs. It
-- moves the queue counts and tells the other stores: one notification for
-- the whole statement, split only where a payload would pass PostgreSQL's
-- limit of 8000 bytes. A payload is JSON:
--   {"o": origin, "c": [[id, queue, owner, version, state], ...]}
-- where origin is the docket.origin setting of the connection (each store
-- sets its own, so that it can skip its own changes) and a removed job's
-- entry ends with true (see docket_entries). The origin is cut at 32
-- characters, so that the head stays under 200 bytes.
CREATE FUNCTION docket_changed(changes docket_change[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    channel text := docket_channel();
    head    text := '{"o":' || to_json(left(coalesce(current_setting('docket.origin', true), ''), 32))::text || ',"c":[';
    payload text;
BEGIN
    IF coalesce(cardinality(changes), 0) = 0 THEN
        RETURN;
    END IF;

    -- Rows are locked in (queue, state) order, the same in every
    -- transaction, so that two of them never wait for each other.
    INSERT INTO queue_counts AS c (queue, state, slot, n)
    SELECT m.queue, m.state, pg_backend_pid() % 16, sum(m.n)
    FROM (
        SELECT ch.queue, ch.was AS state, -1 AS n FROM unnest(changes) ch WHERE ch.was IS NOT NULL
        UNION ALL
        SELECT ch.queue, ch.state, 1 FROM unnest(changes) ch WHERE ch.state IS NOT NULL
    ) m
    GROUP BY m.queue, m.state
    HAVING sum(m.n) <> 0
    ORDER BY m.queue, m.state
    ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n + excluded.n;

    -- A statement of a few jobs most likely fits one payload (an entry is
    -- some 70 bytes). Larger ones are cut by the entries' running length:
    -- a payload gathers the entries that end within one stretch of 5600
    -- bytes, so it holds less than 5600 bytes plus one entry, with the
    -- head, under the limit.
    IF cardinality(changes) <= 100 THEN
        SELECT string_agg(e.entry, ',' ORDER BY e.ord) INTO payload FROM docket_entries(changes) e;
        IF payload IS NULL THEN
            RETURN;
        END IF;
        IF octet_length(payload) <= 7700 THEN
            PERFORM pg_notify(channel, head || payload || ']}');
            RETURN;
        END IF;
    END IF;
    FOR payload IN
        SELECT head || string_agg(p.entry, ',' ORDER BY p.ord) || ']}'
        FROM (
            SELECT e.entry, e.ord, (sum(octet_length(e.entry) + 1) OVER (ORDER BY e.ord)) / 5600 AS part
            FROM docket_entries(changes) e
        ) p
        GROUP BY p.part
        ORDER BY p.part
    LOOP
        PERFORM pg_notify(channel, payload);
    END LOOP;
END
$$;

-- docket_insert inserts a batch of new jobs, given as parallel arrays, and
-- returns a row for each job it did not insert: with the id of the job its
-- idempotency key or unique digest matched, or with a NULL id when the
-- queue was full. Jobs are taken in order, as if inserted one at a time:
-- a later job of the batch sees the earlier ones.
--
-- Jobs that ask for none of those checks are inserted with one statement.
-- Otherwise the checks run under transaction-level advisory locks, taken in
-- one order, on what they read (an owner's key, a queue's digest, a queue's
-- depth), so that two batches cannot both miss the same key or both take the
-- last place in a queue.
CREATE FUNCTION docket_insert(
    new_ids text[], new_queues text[], new_owners text[], new_priorities integer[],
    new_run_ats timestamptz[], new_max_attempts integer[], new_timeouts bigint[],
    new_keys text[], new_digests text[], new_uniques boolean[], new_labels text[],
    new_input_types text[], new_input_names text[], new_input_sizes bigint[],
    new_input_datas bytea[], new_input_blobs text[], new_max_queued integer[],
    new_hook_urls text[], new_hook_events text[], at timestamptz)
RETURNS TABLE (idx integer, matched text)
LANGUAGE plpgsql AS $$
DECLARE
    n        integer := coalesce(cardinality(new_ids), 0);
    space    integer := hashtext(current_schema());
    lock_key integer;
    hit      text;
    -- Queued jobs per queue: as counted before this call (looked up when
    -- first needed), and as added by it so far.
    counted  jsonb := '{}';
    adds     jsonb := '{}';
    depth    bigint;
    added    integer[] := '{}';
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;

    IF NOT EXISTS (
        SELECT 1 FROM unnest(new_keys, new_uniques, new_max_queued) AS s(k, u, m)
        WHERE k IS NOT NULL OR u OR m > 0
    ) THEN
        INSERT INTO jobs (id, queue, owner, state, priority, run_at, max_attempts, timeout_us,
            input_digest, labels, input_type, input_name, input_size, input_data, input_blob,
            created_at, updated_at, version, webhook_url, webhook_events)
        SELECT j.id, j.queue, j.owner, 'queued', j.priority, j.run_at, j.max_attempts, j.timeout_us,
            j.digest, j.labels::jsonb, j.input_type, j.input_name, j.input_size, j.input_data, j.input_blob,
            at, at, 1, j.hook_url, j.hook_events
        FROM unnest(new_ids, new_queues, new_owners, new_priorities, new_run_ats, new_max_attempts,
            new_timeouts, new_digests, new_labels, new_input_types, new_input_names, new_input_sizes,
            new_input_datas, new_input_blobs, new_hook_urls, new_hook_events)
            AS j(id, queue, owner, priority, run_at, max_attempts, timeout_us, digest, labels,
                 input_type, input_name, input_size, input_data, input_blob, hook_url, hook_events);
        PERFORM docket_changed(array_agg(ROW(j.id, j.queue, j.owner, 1, NULL, 'queued')::docket_change))
        FROM unnest(new_ids, new_queues, new_owners) AS j(id, queue, owner);
        RETURN;
    END IF;

    FOR lock_key IN
        SELECT DISTINCT k FROM (
            SELECT hashtext('key' || chr(1) || o || chr(1) || key) FROM unnest(new_owners, new_keys) AS s(o, key)
            WHERE key IS NOT NULL
            UNION ALL
            SELECT hashtext('unique' || chr(1) || q || chr(1) || o || chr(1) || d)
            FROM unnest(new_queues, new_owners, new_digests, new_uniques) AS s(q, o, d, u) WHERE u
            UNION ALL
            SELECT hashtext('depth' || chr(1) || q) FROM unnest(new_queues, new_max_queued) AS s(q, m) WHERE m > 0
        ) AS s(k)
        ORDER BY k
    LOOP
        PERFORM pg_advisory_xact_lock(space, lock_key);
    END LOOP;

    FOR i IN 1..n LOOP
        IF new_keys[i] IS NOT NULL THEN
            SELECT id INTO hit FROM jobs WHERE owner = new_owners[i] AND idempotency_key = new_keys[i];
            IF hit IS NOT NULL THEN
                idx := i; matched := hit;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        IF new_uniques[i] THEN
            SELECT id INTO hit FROM jobs
            WHERE queue = new_queues[i] AND owner = new_owners[i] AND unique_digest = new_digests[i]
                AND state IN ('queued', 'running', 'succeeded')
            ORDER BY id LIMIT 1;
            IF hit IS NOT NULL THEN
                idx := i; matched := hit;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        IF new_max_queued[i] > 0 THEN
            IF NOT counted ? new_queues[i] THEN
                SELECT coalesce(sum(c.n), 0) INTO depth FROM queue_counts c
                WHERE c.queue = new_queues[i] AND c.state = 'queued';
                counted := counted || jsonb_build_object(new_queues[i], depth);
            END IF;
            depth := (counted ->> new_queues[i])::bigint + coalesce((adds ->> new_queues[i])::bigint, 0);
            IF depth >= new_max_queued[i] THEN
                idx := i; matched := NULL;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        INSERT INTO jobs (id, queue, owner, state, priority, run_at, max_attempts, timeout_us,
            idempotency_key, input_digest, unique_digest, labels, input_type, input_name, input_size,
            input_data, input_blob, created_at, updated_at, version, webhook_url, webhook_events)
        VALUES (new_ids[i], new_queues[i], new_owners[i], 'queued', new_priorities[i], new_run_ats[i],
            new_max_attempts[i], new_timeouts[i], new_keys[i], new_digests[i],
            CASE WHEN new_uniques[i] THEN new_digests[i] END, new_labels[i]::jsonb, new_input_types[i],
            new_input_names[i], new_input_sizes[i], new_input_datas[i], new_input_blobs[i], at, at, 1,
            new_hook_urls[i], new_hook_events[i]);
        added := added || i;
        adds := adds || jsonb_build_object(new_queues[i], coalesce((adds ->> new_queues[i])::bigint, 0) + 1);
    END LOOP;

    PERFORM docket_changed(array_agg(ROW(new_ids[a.i], new_queues[a.i], new_owners[a.i], 1, NULL, 'queued')::docket_change))
    FROM unnest(added) AS a(i);
END
$$;
