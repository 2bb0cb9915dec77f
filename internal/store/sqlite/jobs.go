package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// jobCols are the columns scanJob reads: everything but the inline data.
const jobCols = `id, queue, owner, state, priority, run_at, attempt, max_attempts, timeout_us,
	idempotency_key, input_digest, unique_digest, labels, input_type, input_name, input_size,
	progress_current, progress_total, progress_message, result_type, result_size, artifacts,
	error_message, error_code, created_at, started_at, finished_at, updated_at, expires_at,
	version, lease_token, lease_expires_at, worker, webhook_url, webhook_events`

type scanner interface{ Scan(dest ...any) error }

func scanJob(r scanner) (*job.Job, error) {
	var (
		j                                   job.Job
		state                               string
		runAt, timeout                      int64
		idem, unique, labels, resultType    sql.NullString
		errMsg, errCode, leaseToken, worker sql.NullString
		resultSize                          int64
		created, started, finished, updated int64
		expires, leaseExp                   int64
		hookURL, hookEvents                 sql.NullString
	)
	err := r.Scan(&j.ID, &j.Queue, &j.Owner, &state, &j.Priority, &runAt, &j.Attempt, &j.MaxAttempts, &timeout,
		&idem, &j.InputDigest, &unique, &labels, &j.Input.ContentType, &j.Input.Name, &j.Input.Size,
		&j.Progress.Current, &j.Progress.Total, &j.Progress.Message, &resultType, &resultSize, &j.Artifacts,
		&errMsg, &errCode, &created, &started, &finished, &updated, &expires,
		&j.Version, &leaseToken, &leaseExp, &worker, &hookURL, &hookEvents)
	if err != nil {
		return nil, err
	}
	j.State = job.State(state)
	j.RunAt = fromUS(runAt)
	j.Timeout = time.Duration(timeout) * time.Microsecond
	j.IdempotencyKey = idem.String
	j.Unique = unique.Valid
	if labels.Valid && labels.String != "" {
		if err := json.Unmarshal([]byte(labels.String), &j.Labels); err != nil {
			return nil, fmt.Errorf("job %s labels: %w", j.ID, err)
		}
	}
	if resultType.Valid {
		j.Result = &job.Blob{ContentType: resultType.String, Size: resultSize}
	}
	if errMsg.Valid {
		j.Error = &job.Error{Message: errMsg.String, Code: errCode.String}
	}
	j.CreatedAt, j.StartedAt, j.FinishedAt = fromUS(created), fromUS(started), fromUS(finished)
	j.UpdatedAt, j.ExpiresAt = fromUS(updated), fromUS(expires)
	j.LeaseToken, j.LeaseExpiresAt, j.Worker = leaseToken.String, fromUS(leaseExp), worker.String
	j.Webhook = hookURL.String
	if hookEvents.String != "" {
		j.WebhookEvents = strings.Split(hookEvents.String, ",")
	}
	return &j, nil
}

func us(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromUS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// load reads a job inside the write transaction.
func (w *wtx) load(id string) (*job.Job, error) {
	j, err := scanJob(w.queryRow("SELECT "+jobCols+" FROM jobs WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
	}
	return j, err
}

// loadLeased reads a running job and checks the caller's lease token.
func (w *wtx) loadLeased(id, token string) (*job.Job, error) {
	j, err := w.load(id)
	if err != nil {
		return nil, err
	}
	if j.State != job.Running || j.LeaseToken != token || token == "" {
		return nil, fmt.Errorf("job %s (%s): %w", id, j.State, store.ErrLeaseLost)
	}
	return j, nil
}

// save writes the mutable fields of j, as a transition function left them.
func (w *wtx) save(j *job.Job) error {
	_, err := w.saveWith(j, "", nil, "")
	return err
}

// saveWith is save that also sets extra columns ("col = ?, ..." and args)
// and has extra conditions ("AND ..."); it reports whether a row changed.
func (w *wtx) saveWith(j *job.Job, extra string, extraArgs []any, cond string, condArgs ...any) (bool, error) {
	var resultType any
	var resultSize int64
	if j.Result != nil {
		resultType, resultSize = j.Result.ContentType, j.Result.Size
	}
	var errMsg, errCode any
	if j.Error != nil {
		errMsg, errCode = j.Error.Message, j.Error.Code
	}
	if extra != "" {
		extra = ", " + extra
	}
	args := []any{string(j.State), us(j.RunAt), j.Attempt, j.Progress.Current, j.Progress.Total, j.Progress.Message,
		resultType, resultSize, j.Artifacts, errMsg, errCode, us(j.StartedAt), us(j.FinishedAt), us(j.UpdatedAt),
		us(j.ExpiresAt), j.Version, nullStr(j.LeaseToken), us(j.LeaseExpiresAt), nullStr(j.Worker)}
	args = append(append(append(args, extraArgs...), j.ID), condArgs...)
	res, err := w.exec(`UPDATE jobs SET state = ?, run_at = ?, attempt = ?,
		progress_current = ?, progress_total = ?, progress_message = ?, result_type = ?, result_size = ?,
		artifacts = ?, error_message = ?, error_code = ?, started_at = ?, finished_at = ?, updated_at = ?,
		expires_at = ?, version = ?, lease_token = ?, lease_expires_at = ?, worker = ?`+extra+`
		WHERE id = ? `+cond, args...)
	if err != nil {
		return false, fmt.Errorf("save job %s: %w", j.ID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Insert implements store.Store.
func (s *Store) Insert(ctx context.Context, jobs []store.NewJob) ([]store.Inserted, error) {
	now := time.Now()
	type prepared struct {
		nj    store.NewJob
		data  []byte
		path  string
		size  int64
		moved bool
	}
	ps := make([]prepared, len(jobs))
	cleanup := func(i int) {
		if ps[i].moved {
			os.RemoveAll(s.jobDir(ps[i].nj.ID))
		}
	}
	for i, nj := range jobs {
		if nj.Queue == "" {
			return nil, errors.New("sqlite: insert: empty queue name")
		}
		if nj.ID == "" {
			nj.ID = job.NewID()
		}
		if nj.MaxAttempts < 1 {
			nj.MaxAttempts = 1
		}
		if nj.RunAt.IsZero() {
			nj.RunAt = now
		}
		ps[i].nj = nj
		data, rel, size, err := s.place(nj.Input, s.jobDir(nj.ID), "input")
		if err != nil {
			for k := range i {
				cleanup(k)
			}
			return nil, fmt.Errorf("sqlite: insert: input of job %s: %w", nj.ID, err)
		}
		ps[i].data, ps[i].path, ps[i].size, ps[i].moved = data, rel, size, rel != ""
	}
	out := make([]store.Inserted, len(jobs))
	err := s.writeMulti(ctx, func(w *wtx) error {
		for i := range ps {
			nj := ps[i].nj
			out[i] = store.Inserted{}
			if nj.IdempotencyKey != "" {
				j, err := scanJob(w.queryRow("SELECT "+jobCols+" FROM jobs WHERE owner = ? AND idempotency_key = ?",
					nj.Owner, nj.IdempotencyKey))
				if err == nil {
					out[i] = store.Inserted{Job: j, Existing: true}
					continue
				} else if !errors.Is(err, sql.ErrNoRows) {
					return err
				}
			}
			if nj.Unique {
				j, err := scanJob(w.queryRow("SELECT "+jobCols+` FROM jobs
					WHERE queue = ? AND owner = ? AND unique_digest = ? AND state IN ('queued', 'running', 'succeeded')
					ORDER BY id LIMIT 1`, nj.Queue, nj.Owner, nj.InputDigest))
				if err == nil {
					out[i] = store.Inserted{Job: j, Existing: true}
					continue
				} else if !errors.Is(err, sql.ErrNoRows) {
					return err
				}
			}
			if nj.MaxQueued > 0 {
				var n int64
				err := w.queryRow("SELECT n FROM queue_counts WHERE queue = ? AND state = 'queued'", nj.Queue).Scan(&n)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				if n >= int64(nj.MaxQueued) {
					out[i].Err = fmt.Errorf("queue %s holds %d jobs: %w", nj.Queue, n, store.ErrQueueFull)
					continue
				}
			}
			var labels any
			if len(nj.Labels) > 0 {
				b, err := json.Marshal(nj.Labels)
				if err != nil {
					return err
				}
				labels = string(b)
			}
			var unique any
			if nj.Unique {
				unique = nj.InputDigest
			}
			var data, path any
			if ps[i].path != "" {
				path = ps[i].path
			} else {
				data = ps[i].data
				if data == nil {
					data = []byte{}
				}
			}
			_, err := w.exec(`INSERT INTO jobs (id, queue, owner, state, priority, run_at, attempt,
				max_attempts, timeout_us, idempotency_key, input_digest, unique_digest, labels, input_type, input_name,
				input_size, input_data, input_path, created_at, updated_at, version, webhook_url, webhook_events)
				VALUES (?, ?, ?, 'queued', ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`,
				nj.ID, nj.Queue, nj.Owner, nj.Priority, us(nj.RunAt), nj.MaxAttempts, nj.Timeout.Microseconds(),
				nullStr(nj.IdempotencyKey), nj.InputDigest, unique, labels, nj.Input.ContentType, nj.Input.Name,
				ps[i].size, data, path, us(now), us(now), nullStr(nj.Webhook), nullStr(strings.Join(nj.WebhookEvents, ",")))
			if err != nil {
				return fmt.Errorf("insert job %s: %w", nj.ID, err)
			}
			out[i].Job = nj.Job(ps[i].size, now)
			w.move(nj.Queue, "", job.Queued)
		}
		return nil
	}, nil)
	for i := range ps {
		if err != nil || out[i].Job == nil || out[i].Existing {
			cleanup(i)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: insert: %w", err)
	}
	return out, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (*job.Job, error) {
	j, err := scanJob(s.readRow(ctx, "SELECT "+jobCols+" FROM jobs WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get %s: %w", id, err)
	}
	if j.State == job.Queued {
		// Two index ranges: the jobs of higher priority that are due, and
		// those of the same priority before it in (run_at, id) order. The
		// cost is in the number of jobs ahead, not the queue's length.
		horizon := max(us(time.Now()), us(j.RunAt))
		err := s.readRow(ctx, `SELECT
			(SELECT count(*) FROM jobs WHERE queue = ? AND state = 'queued' AND priority > ? AND run_at <= ?) +
			(SELECT count(*) FROM jobs WHERE queue = ? AND state = 'queued' AND priority = ? AND (run_at, id) < (?, ?))`,
			j.Queue, j.Priority, horizon, j.Queue, j.Priority, us(j.RunAt), j.ID).Scan(&j.Position)
		if err != nil {
			return nil, fmt.Errorf("sqlite: position of %s: %w", id, err)
		}
	}
	return j, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, f store.Filter) (store.Page, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	var where []string
	var args []any
	if f.Owner != "" {
		where, args = append(where, "owner = ?"), append(args, f.Owner)
	}
	if f.Queue != "" {
		where, args = append(where, "queue = ?"), append(args, f.Queue)
	}
	if len(f.States) > 0 {
		marks := strings.Repeat("?, ", len(f.States))
		where = append(where, "state IN ("+marks[:len(marks)-2]+")")
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	for k, v := range f.Labels {
		where = append(where, "EXISTS (SELECT 1 FROM json_each(jobs.labels) WHERE json_each.key = ? AND json_each.value = ?)")
		args = append(args, k, v)
	}
	if f.After != "" {
		where, args = append(where, "id < ?"), append(args, f.After)
	}
	q := "SELECT " + jobCols + " FROM jobs"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := s.rdb.QueryContext(ctx, q, args...) // varies with the filter: not cached
	if err != nil {
		return store.Page{}, fmt.Errorf("sqlite: list: %w", err)
	}
	defer rows.Close()
	var page store.Page
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return store.Page{}, fmt.Errorf("sqlite: list: %w", err)
		}
		page.Jobs = append(page.Jobs, j)
	}
	if err := rows.Err(); err != nil {
		return store.Page{}, fmt.Errorf("sqlite: list: %w", err)
	}
	if len(page.Jobs) > limit {
		page.Jobs = page.Jobs[:limit]
		page.Next = page.Jobs[limit-1].ID
	}
	return page, nil
}

// Claim implements store.Store. It is job.Claim for a batch, as one
// statement: each row gets its own random lease token.
func (s *Store) Claim(ctx context.Context, c store.Claim) ([]*job.Job, error) {
	if c.Limit <= 0 {
		return nil, nil
	}
	var out []*job.Job
	err := s.write(ctx, func(w *wtx) error {
		out = out[:0]
		now := us(time.Now())
		// The limit is part of the statement's text: bound as a parameter it
		// makes SQLite re-prepare the statement on every run.
		rows, err := w.query(`UPDATE jobs SET state = 'running', attempt = attempt + 1, worker = ?,
			lease_token = lower(hex(randomblob(16))), lease_expires_at = ?,
			started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END, updated_at = ?, version = version + 1
			WHERE id IN (SELECT id FROM jobs WHERE queue = ? AND state = 'queued' AND run_at <= ?
				ORDER BY priority DESC, run_at, id LIMIT `+strconv.Itoa(c.Limit)+`)
			RETURNING `+jobCols, c.Worker, now+c.Lease.Microseconds(), now, now, c.Queue, now)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				return err
			}
			out = append(out, j)
			w.move(j.Queue, job.Queued, job.Running)
		}
		return rows.Err()
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim %s: %w", c.Queue, err)
	}
	// RETURNING gives no order; hand jobs out in claim order.
	slices.SortFunc(out, func(a, b *job.Job) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		if c := a.RunAt.Compare(b.RunAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, id, token string, lease time.Duration) (*job.Job, error) {
	var out *job.Job
	err := s.write(ctx, func(w *wtx) error {
		j, err := w.loadLeased(id, token)
		if err != nil {
			return err
		}
		j.LeaseExpiresAt = time.Now().Add(lease)
		if _, err := w.exec("UPDATE jobs SET lease_expires_at = ? WHERE id = ?", us(j.LeaseExpiresAt), id); err != nil {
			return err
		}
		out = j
		return nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: heartbeat: %w", err)
	}
	return out, nil
}

// update runs a transition on one job inside the writer and saves it.
func (s *Store) update(ctx context.Context, what, id, token string, leased bool, fn func(w *wtx, j *job.Job) (job.Job, error), after func()) (*job.Job, error) {
	var out *job.Job
	do := func(w *wtx) error {
		var j *job.Job
		var err error
		if leased {
			j, err = w.loadLeased(id, token)
		} else {
			j, err = w.load(id)
		}
		if err != nil {
			return err
		}
		next, err := fn(w, j)
		if err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		if err := w.save(&next); err != nil {
			return err
		}
		w.move(j.Queue, j.State, next.State)
		out = &next
		return nil
	}
	var err error
	if after != nil {
		// Only Retry has an after step, and it writes more than the job.
		err = s.writeMulti(ctx, do, after)
	} else {
		err = s.write(ctx, do, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", what, err)
	}
	return out, nil
}

// Progress implements store.Store.
func (s *Store) Progress(ctx context.Context, id, token string, p job.Progress) (*job.Job, error) {
	return s.update(ctx, "progress", id, token, true, func(_ *wtx, j *job.Job) (job.Job, error) {
		next := *j
		return next, job.SetProgress(&next, time.Now(), p)
	}, nil)
}

// Fail implements store.Store.
func (s *Store) Fail(ctx context.Context, id, token string, f store.Failure) (*job.Job, error) {
	return s.update(ctx, "fail", id, token, true, func(_ *wtx, j *job.Job) (job.Job, error) {
		if f.Progress != nil {
			j.Progress = *f.Progress
		}
		next := *j
		return next, job.Fail(&next, time.Now(), f.Error, f.Retryable, f.Backoff, f.Retention)
	}, nil)
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, id, token string, e job.Error) (*job.Job, error) {
	return s.update(ctx, "release", id, token, true, func(_ *wtx, j *job.Job) (job.Job, error) {
		next := *j
		return next, job.Release(&next, time.Now(), e)
	}, nil)
}

// Cancel implements store.Store.
func (s *Store) Cancel(ctx context.Context, id string, retention time.Duration) (*job.Job, error) {
	return s.update(ctx, "cancel", id, "", false, func(_ *wtx, j *job.Job) (job.Job, error) {
		next := *j
		return next, job.Cancel(&next, time.Now(), retention)
	}, nil)
}

// Retry implements store.Store.
func (s *Store) Retry(ctx context.Context, id string) (*job.Job, error) {
	var dead []string
	return s.update(ctx, "retry", id, "", false, func(w *wtx, j *job.Job) (job.Job, error) {
		next := *j
		err := job.Retry(&next, time.Now())
		if err != nil {
			return next, err
		}
		dead, err = w.dropOutputs(id)
		return next, err
	}, func() { s.removeOutputs(dead) })
}

// dropOutputs deletes the result and artifact rows of a job and returns the
// folders to remove once that is committed.
func (w *wtx) dropOutputs(id string) ([]string, error) {
	var dirs []string
	var resultPath sql.NullString
	if err := w.queryRow("SELECT result_path FROM jobs WHERE id = ?", id).Scan(&resultPath); err != nil {
		return nil, err
	}
	if resultPath.Valid {
		dirs = append(dirs, resultPath.String)
	}
	rows, err := w.query("SELECT path FROM artifacts WHERE job_id = ? AND path IS NOT NULL", id)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return nil, err
		}
		dirs = append(dirs, p)
	}
	rows.Close()
	if _, err := w.exec("UPDATE jobs SET result_data = NULL, result_path = NULL WHERE id = ?", id); err != nil {
		return nil, err
	}
	if _, err := w.exec("DELETE FROM artifacts WHERE job_id = ?", id); err != nil {
		return nil, err
	}
	return dirs, nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, id string) (*job.Job, error) {
	var out *job.Job
	err := s.writeMulti(ctx, func(w *wtx) error {
		j, err := w.load(id)
		if err != nil {
			return err
		}
		if err := w.deleteJob(id); err != nil {
			return err
		}
		w.move(j.Queue, j.State, "")
		out = j
		return nil
	}, func() { os.RemoveAll(s.jobDir(id)) })
	if err != nil {
		return nil, fmt.Errorf("sqlite: delete: %w", err)
	}
	return out, nil
}

func (w *wtx) deleteJob(id string) error {
	if _, err := w.exec("DELETE FROM artifacts WHERE job_id = ?", id); err != nil {
		return err
	}
	_, err := w.exec("DELETE FROM jobs WHERE id = ?", id)
	return err
}

// Rescue implements store.Store.
func (s *Store) Rescue(ctx context.Context, now time.Time, backoff func(int) time.Duration, retention func(string) time.Duration) ([]*job.Job, error) {
	var out []*job.Job
	err := s.writeMulti(ctx, func(w *wtx) error {
		out = out[:0]
		rows, err := w.query("SELECT "+jobCols+" FROM jobs WHERE state = 'running' AND lease_expires_at < ? LIMIT 1000", us(now))
		if err != nil {
			return err
		}
		var expired []*job.Job
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				rows.Close()
				return err
			}
			expired = append(expired, j)
		}
		rows.Close()
		for _, j := range expired {
			next := *j
			if err := job.Rescue(&next, now, backoff(j.Attempt), retention(j.Queue)); err != nil {
				return err
			}
			if err := w.save(&next); err != nil {
				return err
			}
			w.move(j.Queue, j.State, next.State)
			out = append(out, &next)
		}
		return nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: rescue: %w", err)
	}
	return out, nil
}

// Purge implements store.Store.
func (s *Store) Purge(ctx context.Context, now time.Time, limit int) (int, error) {
	var ids []string
	err := s.writeMulti(ctx, func(w *wtx) error {
		ids = ids[:0]
		rows, err := w.query(`SELECT id, queue, state FROM jobs WHERE expires_at > 0 AND expires_at < ?
			AND state IN ('succeeded', 'failed', 'canceled') LIMIT ?`, us(now), limit)
		if err != nil {
			return err
		}
		var gone []countKey
		for rows.Next() {
			var id, queue, state string
			if err := rows.Scan(&id, &queue, &state); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			gone = append(gone, countKey{queue, job.State(state)})
		}
		rows.Close()
		for i, id := range ids {
			if err := w.deleteJob(id); err != nil {
				return err
			}
			w.move(gone[i].queue, gone[i].state, "")
		}
		return nil
	}, func() {
		for _, id := range ids {
			os.RemoveAll(s.jobDir(id))
		}
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: purge: %w", err)
	}
	return len(ids), nil
}

// QueueCounts implements store.Store.
func (s *Store) QueueCounts(ctx context.Context) ([]store.QueueCount, error) {
	rows, err := s.read(ctx, "SELECT queue, state, n FROM queue_counts WHERE n > 0 ORDER BY queue")
	if err != nil {
		return nil, fmt.Errorf("sqlite: queue counts: %w", err)
	}
	defer rows.Close()
	var out []store.QueueCount
	for rows.Next() {
		var q, st string
		var n int64
		if err := rows.Scan(&q, &st, &n); err != nil {
			return nil, fmt.Errorf("sqlite: queue counts: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].Queue != q {
			out = append(out, store.QueueCount{Queue: q, Counts: map[job.State]int64{}})
		}
		out[len(out)-1].Counts[job.State(st)] = n
	}
	return out, rows.Err()
}

// NextRunAt implements store.Store.
func (s *Store) NextRunAt(ctx context.Context, queue string) (time.Time, error) {
	var v sql.NullInt64
	err := s.readRow(ctx, "SELECT min(run_at) FROM jobs WHERE queue = ? AND state = 'queued'", queue).Scan(&v)
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite: next run of %s: %w", queue, err)
	}
	return fromUS(v.Int64), nil
}

// OpenInput implements store.Store.
func (s *Store) OpenInput(ctx context.Context, id string) (io.ReadCloser, error) {
	var data []byte
	var path sql.NullString
	err := s.readRow(ctx, "SELECT input_data, input_path FROM jobs WHERE id = ?", id).Scan(&data, &path)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: input of %s: %w", id, err)
	}
	return s.openData(data, path)
}

func (s *Store) openData(data []byte, path sql.NullString) (io.ReadCloser, error) {
	if path.Valid {
		f, err := os.Open(s.abs(path.String))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("blob %s: %w", path.String, store.ErrNotFound)
		}
		return f, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}
