-- The store's statements, one per "-- name:" block. "@job_columns" stands
-- for the job columns scanJob reads, in its order; "x.@job_columns" is the
-- same list qualified by the table alias x.
--
-- Every statement that changes jobs reports the change with one call of
-- docket_changed (see the migrations), which moves the queue counts and
-- notifies the other stores; it is referenced by the final SELECT so that
-- it runs whenever a job changed.
--
-- Statements on a batch of jobs given as arrays select the rows with
-- "id = ANY ($1)" besides the join on the arrays, so that the rows are
-- found through the primary key whatever the planner thinks of the join.

-- name: load
SELECT @job_columns FROM jobs WHERE id = $1;

-- name: load_many
SELECT @job_columns FROM jobs WHERE id = ANY($1);

-- name: get
-- A queued job's position: the due jobs of higher priority, then those of
-- its own priority ahead of it in claim order. Both are ranges of the claim
-- index, so the cost is the number of jobs ahead, not the queue's length.
SELECT j.@job_columns,
    CASE WHEN j.state = 'queued' THEN
        (SELECT count(*) FROM jobs a
            WHERE a.queue = j.queue AND a.state = 'queued'
                AND a.priority > j.priority AND a.run_at <= greatest($2, j.run_at))
      + (SELECT count(*) FROM jobs a
            WHERE a.queue = j.queue AND a.state = 'queued'
                AND a.priority = j.priority AND (a.run_at, a.id) < (j.run_at, j.id))
    ELSE 0 END
FROM jobs j
WHERE j.id = $1;

-- name: insert
SELECT idx, matched FROM docket_insert($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
    $11, $12, $13, $14, $15, $16, $17, $18, $19, $20);

-- name: claim
-- The jobs are picked in claim order and locked, skipping those another
-- claim holds, then moved to running with a lease token each. They are
-- updated by their row's address (ctid = ANY, a TID scan): the row lock
-- keeps a picked row where it is until the statement ends, and finding it
-- again through the primary key cost a third of the claim. (As a join, the
-- planner may read the whole table to hash it once the claim is large.)
--
-- A claim commits without waiting for its WAL to reach the disk
-- (synchronous_commit off for this transaction alone): a claim lost with
-- a crash of the server leaves its jobs queued, to be claimed again, which
-- a lapsed lease would do anyway, and the completion that follows is
-- durable and flushes the claim with it. It saves a disk flush on the way
-- from insert to start, and leaves the flushes to the statements that
-- need them.
WITH async AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), picked AS MATERIALIZED (
    SELECT ctid FROM jobs
    WHERE queue = $1 AND state = 'queued' AND run_at <= $2
    ORDER BY priority DESC, run_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j SET
        state = 'running',
        attempt = j.attempt + 1,
        worker = $4,
        lease_token = gen_random_uuid()::text,
        lease_expires_at = $5,
        started_at = coalesce(j.started_at, $2),
        updated_at = $2,
        version = j.version + 1
    WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM picked))
    RETURNING j.@job_columns
), changed AS (
    SELECT docket_changed(array_agg(ROW(id, queue, owner, version, 'queued', state)::docket_change))
    FROM claimed
)
SELECT @job_columns FROM claimed, changed, async;

-- name: heartbeat
-- A heartbeat only moves leases: no version, no notice.
UPDATE jobs j SET lease_expires_at = b.lease_expires_at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS b(job_id, token, lease_expires_at)
WHERE j.id = ANY ($1) AND j.id = b.job_id AND j.state = 'running' AND j.lease_token = b.token
RETURNING j.@job_columns;

-- name: progress
WITH reported AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
        AS p(job_id, token, current, total, message)
), saved AS (
    UPDATE jobs j SET
        progress_current = p.current,
        progress_total = p.total,
        progress_message = p.message,
        updated_at = $6,
        version = j.version + 1
    FROM reported p
    WHERE j.id = ANY ($1) AND j.id = p.job_id AND j.state = 'running' AND j.lease_token = p.token
    RETURNING j.@job_columns
), changed AS (
    SELECT docket_changed(array_agg(ROW(id, queue, owner, version, state, state)::docket_change))
    FROM saved
)
SELECT @job_columns FROM saved, changed;

-- name: save
-- Writes jobs as a transition of package job left them, each only if it is
-- still as the transition found it: same version, state and lease token
-- (the version alone would trust a caller's view of the job), and, when
-- was_lease is set (a rescue), a lease that still expires when it did, as a
-- heartbeat moves the lease without a new version. A completion also brings
-- its result and its artifacts, which are added only for the jobs saved.
WITH next AS (
    SELECT * FROM unnest(
        $1::text[], $2::bigint[], $3::timestamptz[], $4::text[], $32::text[],
        $5::text[], $6::timestamptz[], $7::integer[],
        $8::bigint[], $9::bigint[], $10::text[],
        $11::text[], $12::bigint[], $13::bytea[], $14::text[], $15::integer[],
        $16::text[], $17::text[],
        $18::timestamptz[], $19::timestamptz[], $20::timestamptz[], $21::timestamptz[],
        $22::bigint[], $23::text[], $24::timestamptz[], $25::text[])
    AS n(job_id, was_version, was_lease, was_state, was_token,
        state, run_at, attempt,
        progress_current, progress_total, progress_message,
        result_type, result_size, result_data, result_blob, artifacts,
        error_message, error_code,
        started_at, finished_at, updated_at, expires_at,
        version, lease_token, lease_expires_at, worker)
), saved AS (
    UPDATE jobs j SET
        state = n.state,
        run_at = n.run_at,
        attempt = n.attempt,
        progress_current = n.progress_current,
        progress_total = n.progress_total,
        progress_message = n.progress_message,
        result_type = n.result_type,
        result_size = n.result_size,
        result_data = n.result_data,
        result_blob = n.result_blob,
        artifacts = n.artifacts,
        error_message = n.error_message,
        error_code = n.error_code,
        started_at = n.started_at,
        finished_at = n.finished_at,
        updated_at = n.updated_at,
        expires_at = n.expires_at,
        version = n.version,
        lease_token = n.lease_token,
        lease_expires_at = n.lease_expires_at,
        worker = n.worker
    FROM next n
    WHERE j.id = ANY ($1) AND j.id = n.job_id AND j.version = n.was_version AND j.state = n.was_state
        AND j.lease_token IS NOT DISTINCT FROM n.was_token
        AND (n.was_lease IS NULL OR j.lease_expires_at = n.was_lease)
    RETURNING j.id, j.queue, j.owner, j.version, n.was_state, j.state
), added AS (
    INSERT INTO artifacts (job_id, name, content_type, size, data, blob)
    SELECT a.job_id, a.name, a.content_type, a.size, a.data, a.blob
    FROM unnest($26::text[], $27::text[], $28::text[], $29::bigint[], $30::bytea[], $31::text[])
        AS a(job_id, name, content_type, size, data, blob)
    WHERE a.job_id IN (SELECT id FROM saved)
    ON CONFLICT (job_id, name) DO UPDATE SET
        content_type = excluded.content_type, size = excluded.size, data = excluded.data, blob = excluded.blob
), changed AS (
    SELECT docket_changed(array_agg(ROW(id, queue, owner, version, was_state, state)::docket_change))
    FROM saved
)
SELECT id FROM saved, changed;

-- name: delete
WITH gone AS (
    DELETE FROM jobs WHERE id = $1 RETURNING @job_columns
), artifacts_gone AS (
    DELETE FROM artifacts WHERE job_id = $1
), chunks_gone AS (
    DELETE FROM blob_chunks WHERE job_id = $1
), changed AS (
    SELECT docket_changed(array_agg(ROW(id, queue, owner, version, state, NULL)::docket_change))
    FROM gone
)
SELECT @job_columns FROM gone, changed;

-- name: expired
SELECT @job_columns FROM jobs
WHERE state = 'running' AND lease_expires_at < $1
ORDER BY lease_expires_at
LIMIT 1000;

-- name: purge
WITH picked AS MATERIALIZED (
    SELECT id FROM jobs
    WHERE expires_at < $1 AND state IN ('succeeded', 'failed', 'canceled')
    ORDER BY expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM jobs j USING picked WHERE j.id = picked.id
    RETURNING j.id, j.queue, j.owner, j.version, j.state
), artifacts_gone AS (
    DELETE FROM artifacts WHERE job_id IN (SELECT id FROM gone)
), chunks_gone AS (
    DELETE FROM blob_chunks WHERE job_id IN (SELECT id FROM gone)
), changed AS (
    SELECT docket_changed(array_agg(ROW(id, queue, owner, version, state, NULL)::docket_change))
    FROM gone
)
SELECT count(*) FROM gone, changed;

-- name: list
-- The conditions are added by List as the filter asks: "AND owner = $n",
-- "AND queue = $n", "AND state = ANY($n)", "AND labels @> $n",
-- "AND id < $n" (the cursor).
SELECT @job_columns FROM jobs WHERE true;

-- name: queue_counts
SELECT queue, state, sum(n)::bigint FROM queue_counts
GROUP BY queue, state
HAVING sum(n) <> 0
ORDER BY queue, state;

-- name: next_run_at
-- The claim index orders a queue's jobs by priority, then run_at, so the
-- earliest run_at is the first entry of one of its priorities: the query
-- descends the index once per priority instead of reading every job.
WITH RECURSIVE level AS (
    (SELECT priority, run_at FROM jobs
        WHERE queue = $1 AND state = 'queued'
        ORDER BY priority DESC, run_at
        LIMIT 1)
    UNION ALL
    SELECT next.priority, next.run_at
    FROM level, LATERAL (
        SELECT priority, run_at FROM jobs
        WHERE queue = $1 AND state = 'queued' AND priority < level.priority
        ORDER BY priority DESC, run_at
        LIMIT 1
    ) next
)
SELECT min(run_at) FROM level;

-- name: changed_since
SELECT id, queue, owner, version, state FROM jobs
WHERE updated_at >= $1
ORDER BY updated_at, id;

-- name: input
SELECT input_size, input_data, input_blob FROM jobs WHERE id = $1;

-- name: result
SELECT state, result_type, result_size, result_data, result_blob FROM jobs WHERE id = $1;

-- name: artifacts
-- A job without artifacts still gives one row, with a NULL name, so that
-- an unknown job (no row) is told apart.
SELECT a.name, a.content_type, a.size
FROM jobs j LEFT JOIN artifacts a ON a.job_id = j.id
WHERE j.id = $1
ORDER BY a.name;

-- name: artifact
SELECT content_type, size, data, blob FROM artifacts WHERE job_id = $1 AND name = $2;

-- name: chunk
SELECT data FROM blob_chunks WHERE job_id = $1 AND blob = $2 AND seq = $3;

-- name: drop_blobs
DELETE FROM blob_chunks c
USING unnest($1::text[], $2::text[]) AS b(job_id, blob)
WHERE c.job_id = b.job_id AND c.blob = b.blob;

-- name: add_deliveries
INSERT INTO deliveries (id, job_id, url, event, body, attempt, next_at, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[],
    $6::integer[], $7::timestamptz[], $8::timestamptz[]);

-- name: due_deliveries
WITH due AS MATERIALIZED (
    SELECT id FROM deliveries
    WHERE next_at <= $1
    ORDER BY next_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d SET next_at = $3
FROM due
WHERE d.id = due.id
RETURNING d.id, d.job_id, d.url, d.event, d.body, d.attempt, d.created_at;

-- name: delivery_done
DELETE FROM deliveries WHERE id = $1;

-- name: delivery_retry
UPDATE deliveries SET attempt = attempt + 1, next_at = $2 WHERE id = $1;
