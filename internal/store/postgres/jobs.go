package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// scanJob reads the columns of jobColumns, then extra.
func scanJob(row pgx.Row, extra ...any) (*job.Job, error) {
	var sc jobScanner
	return sc.scan(row, extra...)
}

// jobScanner holds what a row of jobColumns is scanned into. Scan takes
// its destinations as interfaces, so each escapes to the heap: one scanner
// per query, rather than a set of variables per row, saves some twenty
// allocations per job a claim returns.
type jobScanner struct {
	j                                    job.Job
	state                                string
	timeoutUS                            int64
	labels                               []byte
	idem, unique, resultType             pgtype.Text
	errMsg, errCode, leaseToken, worker  pgtype.Text
	hookURL, hookEvents                  pgtype.Text
	resultSize                           int64
	started, finished, expires, leaseExp pgtype.Timestamptz
	dest                                 []any
}

func (sc *jobScanner) scan(row pgx.Row, extra ...any) (*job.Job, error) {
	if sc.dest == nil {
		j := &sc.j
		sc.dest = []any{&j.ID, &j.Queue, &j.Owner, &sc.state, &j.Priority, &j.RunAt, &j.Attempt, &j.MaxAttempts,
			&sc.timeoutUS, &sc.idem, &j.InputDigest, &sc.unique, &sc.labels, &j.Input.ContentType, &j.Input.Name,
			&j.Input.Size, &j.Progress.Current, &j.Progress.Total, &j.Progress.Message, &sc.resultType, &sc.resultSize,
			&j.Artifacts, &sc.errMsg, &sc.errCode, &j.CreatedAt, &sc.started, &sc.finished, &j.UpdatedAt,
			&sc.expires, &j.Version, &sc.leaseToken, &sc.leaseExp, &sc.worker, &sc.hookURL, &sc.hookEvents}
	}
	dest := sc.dest
	if len(extra) > 0 {
		dest = append(dest[:len(dest):len(dest)], extra...)
	}
	// Every destination is written by Scan, NULL or not, so nothing of the
	// previous row remains.
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	j := new(job.Job)
	*j = sc.j
	j.State = job.State(sc.state)
	j.RunAt = j.RunAt.UTC()
	j.Timeout = time.Duration(sc.timeoutUS) * time.Microsecond
	j.IdempotencyKey = sc.idem.String
	j.Unique = sc.unique.Valid
	if len(sc.labels) > 0 {
		if err := json.Unmarshal(sc.labels, &j.Labels); err != nil {
			return nil, fmt.Errorf("job %s labels: %w", j.ID, err)
		}
	}
	if sc.resultType.Valid {
		j.Result = &job.Blob{ContentType: sc.resultType.String, Size: sc.resultSize}
	}
	if sc.errMsg.Valid {
		j.Error = &job.Error{Message: sc.errMsg.String, Code: sc.errCode.String}
	}
	j.CreatedAt, j.UpdatedAt = j.CreatedAt.UTC(), j.UpdatedAt.UTC()
	j.StartedAt, j.FinishedAt, j.ExpiresAt = fromTZ(sc.started), fromTZ(sc.finished), fromTZ(sc.expires)
	j.LeaseToken, j.LeaseExpiresAt, j.Worker = sc.leaseToken.String, fromTZ(sc.leaseExp), sc.worker.String
	j.Webhook = sc.hookURL.String
	if sc.hookEvents.String != "" {
		j.WebhookEvents = strings.Split(sc.hookEvents.String, ",")
	}
	return j, nil
}

func fromTZ(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// storable makes free text fit a text column: PostgreSQL refuses invalid
// UTF-8 and NUL bytes, which a handler's progress message or a command's
// cut-off stderr may well hold, and a refused failure would leave the job
// running until its lease ran out.
func storable(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// tz is a nullable timestamptz: the zero time is NULL.
func tz(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

// text is a nullable text: the empty string is NULL.
func text(s string) pgtype.Text {
	return pgtype.Text{String: s, Valid: s != ""}
}

// scanJobs collects the jobs of a query; it takes Query's results as they
// come.
func scanJobs(rows pgx.Rows, err error) ([]*job.Job, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*job.Job
	var sc jobScanner
	for rows.Next() {
		j, err := sc.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// wrap adds the operation to err, and tells a closed store apart from a
// failing one.
func (s *Store) wrap(what string, err error) error {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrLeaseLost) || errors.Is(err, store.ErrState) {
		return fmt.Errorf("postgres: %s: %w", what, err)
	}
	s.closeMu.RLock()
	closed := s.closed
	s.closeMu.RUnlock()
	if closed && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("postgres: %s: %w (%w)", what, ErrClosed, err)
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}

// load reads a job.
func (s *Store) load(ctx context.Context, id string) (*job.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, s.sql("load"), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
	}
	return j, err
}

// loadLeased reads a running job and checks the caller's lease token.
func (s *Store) loadLeased(ctx context.Context, id, token string) (*job.Job, error) {
	j, err := s.load(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := leased(j, token); err != nil {
		return nil, err
	}
	return j, nil
}

func leased(j *job.Job, token string) error {
	if j.State != job.Running || j.LeaseToken != token || token == "" {
		return fmt.Errorf("job %s (%s): %w", j.ID, j.State, store.ErrLeaseLost)
	}
	return nil
}

// lost explains why a statement under a lease token changed nothing.
func (s *Store) lost(ctx context.Context, id, token string) error {
	_, err := s.loadLeased(ctx, id, token)
	if err == nil {
		// A token once lost is never handed out again, so the job cannot
		// be held under it now; whatever happened, the caller lost it.
		return fmt.Errorf("job %s: %w", id, store.ErrLeaseLost)
	}
	return err
}

// newRow is a job ready to insert, its input stored.
type newRow struct {
	nj    store.NewJob
	input stored
}

// insertCall is an Insert handed to the insert group.
type insertCall struct {
	rows []newRow
	out  []store.Inserted
	err  error
	done chan struct{}
}

// Insert implements store.Store. Inputs too large for the row are stored
// first; the jobs are then inserted together with those of concurrent
// Insert calls, in one statement.
func (s *Store) Insert(ctx context.Context, jobs []store.NewJob) ([]store.Inserted, error) {
	if len(jobs) == 0 {
		return []store.Inserted{}, nil
	}
	rows := make([]newRow, len(jobs))
	var blobs []blobName
	for i, nj := range jobs {
		if nj.Queue == "" {
			s.dropBlobs(blobs)
			discard(jobs[i:])
			return nil, errors.New("postgres: insert: empty queue name")
		}
		if nj.ID == "" {
			nj.ID = job.NewID()
		}
		if nj.MaxAttempts < 1 {
			nj.MaxAttempts = 1
		}
		nj.Input.Name, nj.Input.ContentType = storable(nj.Input.Name), storable(nj.Input.ContentType)
		in, err := s.put(ctx, nj.ID, nj.Input, "i")
		if err != nil {
			s.dropBlobs(blobs)
			discard(jobs[i+1:])
			return nil, s.wrap("insert: input of job "+nj.ID, err)
		}
		if in.blob != "" {
			blobs = append(blobs, blobName{nj.ID, in.blob})
		}
		rows[i] = newRow{nj: nj, input: in}
	}
	var out []store.Inserted
	var err error
	if len(rows) > maxInsertBatch {
		out, err = s.insertRows(ctx, rows)
	} else {
		c := &insertCall{rows: rows, done: make(chan struct{})}
		if err = s.inserts.do(ctx, c, c.done); err == nil {
			out, err = c.out, c.err
		}
	}
	if err != nil {
		s.dropBlobs(blobs)
		return nil, s.wrap("insert", err)
	}
	if len(blobs) > 0 {
		// The inputs of jobs not inserted (matched, or refused) go.
		var unused []blobName
		for i, r := range rows {
			if r.input.blob != "" && (out[i].Job == nil || out[i].Existing) {
				unused = append(unused, blobName{r.nj.ID, r.input.blob})
			}
		}
		s.dropBlobs(unused)
	}
	return out, nil
}

// runInserts inserts the jobs of several Insert calls with one statement.
func (s *Store) runInserts(ctx context.Context, calls []*insertCall) {
	alone(calls, func(calls []*insertCall) error {
		var rows []newRow
		for _, c := range calls {
			rows = append(rows, c.rows...)
		}
		out, err := s.insertRows(ctx, rows)
		for _, c := range calls {
			if err == nil {
				c.out, out = out[:len(c.rows):len(c.rows)], out[len(c.rows):]
			}
			c.err = err
		}
		return err
	})
	for _, c := range calls {
		close(c.done)
	}
}

// insertRows inserts a batch with docket_insert and reads back the jobs
// that an idempotency key or a unique digest matched.
func (s *Store) insertRows(ctx context.Context, rows []newRow) ([]store.Inserted, error) {
	at := now()
	n := len(rows)
	var (
		ids, queues, owners, digests, types, names = make(refs[string], n), make(refs[string], n), make(refs[string], n), make(refs[string], n), make(refs[string], n), make(refs[string], n)
		keys, labels, blobs, hookURLs, hookEvents  = make(refs[pgtype.Text], n), make(refs[pgtype.Text], n), make(refs[pgtype.Text], n), make(refs[pgtype.Text], n), make(refs[pgtype.Text], n)
		priorities, maxAttempts, maxQueued         = make(refs[int32], n), make(refs[int32], n), make(refs[int32], n)
		runAts                                     = make(refs[time.Time], n)
		timeouts, sizes                            = make(refs[int64], n), make(refs[int64], n)
		uniques                                    = make(refs[bool], n)
		datas                                      = make(refs[[]byte], n)
	)
	for i := range rows {
		nj := &rows[i].nj
		if nj.RunAt.IsZero() {
			nj.RunAt = at
		}
		ids[i], queues[i], owners[i], digests[i] = nj.ID, nj.Queue, nj.Owner, nj.InputDigest
		types[i], names[i] = nj.Input.ContentType, nj.Input.Name
		keys[i], blobs[i] = text(nj.IdempotencyKey), text(rows[i].input.blob)
		if len(nj.Labels) > 0 {
			b, err := json.Marshal(nj.Labels)
			if err != nil {
				return nil, fmt.Errorf("labels of job %s: %w", nj.ID, err)
			}
			labels[i] = pgtype.Text{String: string(b), Valid: true}
		}
		if nj.Webhook != "" {
			hookURLs[i] = text(nj.Webhook)
			hookEvents[i] = text(strings.Join(nj.WebhookEvents, ","))
		}
		priorities[i], maxAttempts[i], maxQueued[i] = int32(nj.Priority), int32(nj.MaxAttempts), int32(max(nj.MaxQueued, 0))
		runAts[i] = nj.RunAt
		timeouts[i], sizes[i] = nj.Timeout.Microseconds(), rows[i].input.size
		uniques[i] = nj.Unique
		datas[i] = rows[i].input.data
	}
	res, err := s.pool.Query(ctx, s.sql("insert"), ids, queues, owners, priorities, runAts, maxAttempts, timeouts,
		keys, digests, uniques, labels, types, names, sizes, datas, blobs, maxQueued, hookURLs, hookEvents, at)
	if err != nil {
		return nil, err
	}
	out := make([]store.Inserted, n)
	matched := map[int]string{}
	var idx int32
	var match pgtype.Text
	_, err = pgx.ForEachRow(res, []any{&idx, &match}, func() error {
		i := int(idx) - 1
		if i < 0 || i >= n {
			return fmt.Errorf("docket_insert returned index %d of %d", idx, n)
		}
		if match.Valid {
			matched[i] = match.String
		} else {
			nj := rows[i].nj
			out[i].Err = fmt.Errorf("queue %s holds its limit of %d queued jobs: %w", nj.Queue, nj.MaxQueued, store.ErrQueueFull)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var found map[string]*job.Job
	if len(matched) > 0 {
		want := slices.Collect(maps.Values(matched))
		js, err := scanJobs(s.pool.Query(ctx, s.sql("load_many"), want))
		if err != nil {
			return nil, fmt.Errorf("existing jobs: %w", err)
		}
		found = map[string]*job.Job{}
		for _, j := range js {
			found[j.ID] = j
		}
	}
	for i := range rows {
		if out[i].Err != nil {
			continue
		}
		if id, ok := matched[i]; ok {
			j := found[id]
			if j == nil {
				// Deleted between the insert and this read.
				out[i].Err = fmt.Errorf("job %s matched by job %s: %w", id, rows[i].nj.ID, store.ErrNotFound)
				continue
			}
			out[i] = store.Inserted{Job: j, Existing: true}
			continue
		}
		out[i].Job = rows[i].nj.Job(rows[i].input.size, at)
	}
	return out, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (*job.Job, error) {
	var pos int64
	j, err := scanJob(s.pool.QueryRow(ctx, s.sql("get"), id, now()), &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, s.wrap("get", fmt.Errorf("job %s: %w", id, store.ErrNotFound))
	}
	if err != nil {
		return nil, s.wrap("get "+id, err)
	}
	j.Position = pos
	return j, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, f store.Filter) (store.Page, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	var q strings.Builder
	q.WriteString(s.sql("list"))
	var args []any
	cond := func(c string, v any) {
		args = append(args, v)
		q.WriteString(" AND " + c + "$" + strconv.Itoa(len(args)))
	}
	if f.Owner != "" {
		// Spelled out so that a generic plan, which cannot know the
		// owner, still matches jobs_owner (see migration 0003).
		q.WriteString(" AND owner <> ''")
		cond("owner = ", f.Owner)
	}
	if f.Queue != "" {
		cond("queue = ", f.Queue)
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		cond("state = ANY(", states)
		q.WriteString(")")
	}
	if len(f.Labels) > 0 {
		b, err := json.Marshal(f.Labels)
		if err != nil {
			return store.Page{}, fmt.Errorf("postgres: list: labels: %w", err)
		}
		cond("labels @> ", string(b))
		q.WriteString("::jsonb")
	}
	if f.After != "" {
		cond("id < ", f.After)
	}
	args = append(args, limit+1)
	q.WriteString(" ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args)))
	js, err := scanJobs(s.pool.Query(ctx, q.String(), args...))
	if err != nil {
		return store.Page{}, s.wrap("list", err)
	}
	page := store.Page{Jobs: js}
	if len(js) > limit {
		page.Jobs = js[:limit]
		page.Next = js[limit-1].ID
	}
	return page, nil
}

// Claim implements store.Store: job.Claim for a batch, as one statement.
func (s *Store) Claim(ctx context.Context, c store.Claim) ([]*job.Job, error) {
	if c.Limit <= 0 {
		return nil, nil
	}
	at := now()
	js, err := scanJobs(s.pool.Query(ctx, s.sql("claim"), c.Queue, at, c.Limit, c.Worker, at.Add(c.Lease)))
	if err != nil {
		return nil, s.wrap("claim "+c.Queue, err)
	}
	// RETURNING gives no order; hand jobs out in claim order.
	slices.SortFunc(js, func(a, b *job.Job) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		if c := a.RunAt.Compare(b.RunAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return js, nil
}

// heartbeatCall is a Heartbeat handed to its group.
type heartbeatCall struct {
	id, token string
	expires   time.Time
	job       *job.Job // nil: the lease was not held
	err       error
	done      chan struct{}
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, id, token string, lease time.Duration) (*job.Job, error) {
	c := &heartbeatCall{id: id, token: token, expires: now().Add(lease), done: make(chan struct{})}
	err := s.heartbeats.do(ctx, c, c.done)
	if err == nil {
		err = c.err
	}
	if err == nil && c.job == nil {
		err = s.lost(ctx, id, token)
	}
	if err != nil {
		return nil, s.wrap("heartbeat", err)
	}
	return c.job, nil
}

func (s *Store) runHeartbeats(ctx context.Context, calls []*heartbeatCall) {
	for round := range rounds(calls, func(c *heartbeatCall) string { return c.id }) {
		alone(round, func(round []*heartbeatCall) error {
			ids, tokens, expires := make([]string, len(round)), make([]string, len(round)), make([]time.Time, len(round))
			for i, c := range round {
				ids[i], tokens[i], expires[i] = c.id, c.token, c.expires
			}
			js, err := scanJobs(s.pool.Query(ctx, s.sql("heartbeat"), ids, tokens, expires))
			byID := index(js)
			for _, c := range round {
				c.job, c.err = byID[c.id], err
			}
			return err
		})
		for _, c := range round {
			close(c.done)
		}
	}
}

// progressCall is a Progress handed to its group.
type progressCall struct {
	id, token string
	p         job.Progress
	job       *job.Job
	err       error
	done      chan struct{}
}

// Progress implements store.Store.
func (s *Store) Progress(ctx context.Context, id, token string, p job.Progress) (*job.Job, error) {
	p.Message = storable(p.Message)
	c := &progressCall{id: id, token: token, p: p, done: make(chan struct{})}
	err := s.progresses.do(ctx, c, c.done)
	if err == nil {
		err = c.err
	}
	if err == nil && c.job == nil {
		err = s.lost(ctx, id, token)
	}
	if err != nil {
		return nil, s.wrap("progress", err)
	}
	return c.job, nil
}

func (s *Store) runProgress(ctx context.Context, calls []*progressCall) {
	for round := range rounds(calls, func(c *progressCall) string { return c.id }) {
		alone(round, func(round []*progressCall) error {
			n := len(round)
			ids, tokens, currents, totals, messages := make([]string, n), make([]string, n), make([]int64, n), make([]int64, n), make([]string, n)
			for i, c := range round {
				ids[i], tokens[i], currents[i], totals[i], messages[i] = c.id, c.token, c.p.Current, c.p.Total, c.p.Message
			}
			js, err := scanJobs(s.pool.Query(ctx, s.sql("progress"), ids, tokens, currents, totals, messages, now()))
			byID := index(js)
			for _, c := range round {
				c.job, c.err = byID[c.id], err
			}
			return err
		})
		for _, c := range round {
			close(c.done)
		}
	}
}

// alone runs a batch with fn and, if its statement fails as a whole, runs
// each call of it again on its own: one call's bad data (text that is not
// UTF-8, an id given twice) must not fail the calls batched with it. fn
// records each call's outcome.
func alone[C any](batch []C, fn func([]C) error) {
	if err := fn(batch); err == nil || len(batch) == 1 {
		return
	}
	for _, c := range batch {
		fn([]C{c})
	}
}

// rounds splits a batch so that no job appears twice in one statement: an
// UPDATE changes a row once however many input rows match it.
func rounds[C any](calls []C, key func(C) string) func(yield func([]C) bool) {
	return func(yield func([]C) bool) {
		for len(calls) > 0 {
			seen := make(map[string]bool, len(calls))
			var now, later []C
			for _, c := range calls {
				if k := key(c); seen[k] {
					later = append(later, c)
				} else {
					seen[k] = true
					now = append(now, c)
				}
			}
			if !yield(now) {
				return
			}
			calls = later
		}
	}
}

func index(js []*job.Job) map[string]*job.Job {
	m := make(map[string]*job.Job, len(js))
	for _, j := range js {
		m[j.ID] = j
	}
	return m
}

// transition applies a transition of package job to a job and saves it,
// reading the job again if it changed in between.
func (s *Store) transition(ctx context.Context, what, id, token string, needLease bool, fn func(j *job.Job, at time.Time) error) (*job.Job, error) {
	for range maxTries {
		var cur *job.Job
		var err error
		if needLease {
			cur, err = s.loadLeased(ctx, id, token)
		} else {
			cur, err = s.load(ctx, id)
		}
		if err != nil {
			return nil, s.wrap(what, err)
		}
		c := &saveCall{next: *cur, was: cur}
		if err := fn(&c.next, now()); err != nil {
			return nil, s.wrap(what, fmt.Errorf("job %s: %w", id, err))
		}
		ok, err := s.save(ctx, c)
		if err != nil {
			return nil, s.wrap(what, err)
		}
		if ok {
			return &c.next, nil
		}
	}
	return nil, s.wrap(what, fmt.Errorf("job %s changed under %d attempts in a row", id, maxTries))
}

// maxTries bounds how often a transition reads a job again because it
// changed before it could be saved. A job changes a few times a second at
// most; running out means something is wrong, not busy.
const maxTries = 50

// Fail implements store.Store.
func (s *Store) Fail(ctx context.Context, id, token string, f store.Failure) (*job.Job, error) {
	return s.transition(ctx, "fail", id, token, true, func(j *job.Job, at time.Time) error {
		if f.Progress != nil {
			j.Progress = *f.Progress
			j.Progress.Message = storable(j.Progress.Message)
		}
		e := job.Error{Message: storable(f.Error.Message), Code: storable(f.Error.Code)}
		return job.Fail(j, at, e, f.Retryable, f.Backoff.Truncate(time.Microsecond), f.Retention.Truncate(time.Microsecond))
	})
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, id, token string, e job.Error) (*job.Job, error) {
	return s.transition(ctx, "release", id, token, true, func(j *job.Job, at time.Time) error {
		return job.Release(j, at, job.Error{Message: storable(e.Message), Code: storable(e.Code)})
	})
}

// Cancel implements store.Store.
func (s *Store) Cancel(ctx context.Context, id string, retention time.Duration) (*job.Job, error) {
	return s.transition(ctx, "cancel", id, "", false, func(j *job.Job, at time.Time) error {
		return job.Cancel(j, at, retention.Truncate(time.Microsecond))
	})
}

// Retry implements store.Store. Only a failed or canceled job is retried,
// and neither has a result or artifacts to drop.
func (s *Store) Retry(ctx context.Context, id string) (*job.Job, error) {
	return s.transition(ctx, "retry", id, "", false, func(j *job.Job, at time.Time) error {
		return job.Retry(j, at)
	})
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, id string) (*job.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, s.sql("delete"), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, s.wrap("delete", fmt.Errorf("job %s: %w", id, store.ErrNotFound))
	}
	if err != nil {
		return nil, s.wrap("delete "+id, err)
	}
	return j, nil
}

// Rescue implements store.Store. The expired jobs are read, moved on by
// job.Rescue, and saved in one statement each only if neither changed nor
// had its lease renewed since the read.
func (s *Store) Rescue(ctx context.Context, at time.Time, backoff func(int) time.Duration, retention func(string) time.Duration) ([]*job.Job, error) {
	at = at.Truncate(time.Microsecond)
	expired, err := scanJobs(s.pool.Query(ctx, s.sql("expired"), at))
	if err != nil {
		return nil, s.wrap("rescue", err)
	}
	calls := make([]*saveCall, 0, len(expired))
	for _, j := range expired {
		c := &saveCall{next: *j, was: j, checkLease: true, done: make(chan struct{})}
		if err := job.Rescue(&c.next, at, backoff(j.Attempt).Truncate(time.Microsecond), retention(j.Queue).Truncate(time.Microsecond)); err != nil {
			return nil, s.wrap("rescue", err)
		}
		calls = append(calls, c)
	}
	if len(calls) == 0 {
		return nil, nil
	}
	s.runSaves(ctx, calls)
	var out []*job.Job
	for _, c := range calls {
		if c.err != nil {
			return nil, s.wrap("rescue", c.err)
		}
		if c.saved {
			out = append(out, &c.next)
		}
	}
	return out, nil
}

// Purge implements store.Store.
func (s *Store) Purge(ctx context.Context, at time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int
	if err := s.pool.QueryRow(ctx, s.sql("purge"), at, limit).Scan(&n); err != nil {
		return 0, s.wrap("purge", err)
	}
	return n, nil
}

// QueueCounts implements store.Store.
func (s *Store) QueueCounts(ctx context.Context) ([]store.QueueCount, error) {
	rows, err := s.pool.Query(ctx, s.sql("queue_counts"))
	if err != nil {
		return nil, s.wrap("queue counts", err)
	}
	var out []store.QueueCount
	var q, st string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&q, &st, &n}, func() error {
		if len(out) == 0 || out[len(out)-1].Queue != q {
			out = append(out, store.QueueCount{Queue: q, Counts: map[job.State]int64{}})
		}
		out[len(out)-1].Counts[job.State(st)] = n
		return nil
	})
	if err != nil {
		return nil, s.wrap("queue counts", err)
	}
	return out, nil
}

// NextRunAt implements store.Store.
func (s *Store) NextRunAt(ctx context.Context, queue string) (time.Time, error) {
	var at pgtype.Timestamptz
	if err := s.pool.QueryRow(ctx, s.sql("next_run_at"), queue).Scan(&at); err != nil {
		return time.Time{}, s.wrap("next run of "+queue, err)
	}
	return fromTZ(at), nil
}
