package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// tol is the tolerance of every time comparison: backends may keep only
// microseconds, and "now" is bracketed by the test's own clock readings.
const tol = time.Millisecond

// longLease is the lease of claims that must not expire during a test.
const longLease = time.Hour

// retention is the retention of jobs finished by the helpers.
const retention = time.Hour

// opener opens a fresh, empty store for one (sub)test.
type opener func(t *testing.T) store.Store

// h opens a store and wraps it in a harness bound to t.
func (o opener) h(t *testing.T) *harness {
	t.Helper()
	s := o(t)
	if s == nil {
		t.Fatal("open returned a nil store")
	}
	return &harness{t: t, s: s, ctx: t.Context()}
}

// harness wraps a store with helpers that fail the test on any unexpected
// error, so that the tests read as the scenario they check.
type harness struct {
	t   *testing.T
	s   store.Store
	ctx context.Context
	seq atomic.Int64
}

// queue returns a queue name not used before in this store.
func (h *harness) queue() string {
	return "q" + strconv.FormatInt(h.seq.Add(1), 10)
}

// opt adjusts a NewJob built by newJob.
type opt func(*store.NewJob)

// newJob builds a NewJob for queue with the suite's defaults: owner "alice",
// three attempts, a small binary input with its digest and size filled in.
// Options apply in order; the input's size and digest are derived from its
// bytes afterwards unless the input is a Path.
func newJob(queue string, opts ...opt) store.NewJob {
	nj := store.NewJob{
		Queue:       queue,
		Owner:       "alice",
		MaxAttempts: 3,
		Input: store.Data{
			Blob:  job.Blob{ContentType: "application/octet-stream"},
			Bytes: []byte("input of " + queue),
		},
	}
	for _, o := range opts {
		o(&nj)
	}
	if nj.Input.Path == "" {
		nj.Input.Size = int64(len(nj.Input.Bytes))
		if nj.InputDigest == "" {
			nj.InputDigest = digest(nj.Input.Bytes)
		}
	}
	return nj
}

func withID(id string) opt            { return func(n *store.NewJob) { n.ID = id } }
func withQueue(q string) opt          { return func(n *store.NewJob) { n.Queue = q } }
func withOwner(o string) opt          { return func(n *store.NewJob) { n.Owner = o } }
func withPriority(p int) opt          { return func(n *store.NewJob) { n.Priority = p } }
func withRunAt(t time.Time) opt       { return func(n *store.NewJob) { n.RunAt = t } }
func withKey(k string) opt            { return func(n *store.NewJob) { n.IdempotencyKey = k } }
func withUnique() opt                 { return func(n *store.NewJob) { n.Unique = true } }
func withMaxAttempts(m int) opt       { return func(n *store.NewJob) { n.MaxAttempts = m } }
func withMaxQueued(m int) opt         { return func(n *store.NewJob) { n.MaxQueued = m } }
func withTimeout(d time.Duration) opt { return func(n *store.NewJob) { n.Timeout = d } }

// withInput sets the input bytes (size and digest follow).
func withInput(b []byte) opt {
	return func(n *store.NewJob) {
		n.Input.Bytes, n.Input.Path, n.InputDigest = b, "", ""
	}
}

// withLabels sets labels from key, value pairs.
func withLabels(kv ...string) opt {
	return func(n *store.NewJob) {
		n.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
	}
}

// digest is the hex SHA-256 of b.
func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// tempFile writes b to a new file in a temporary folder of the test and
// returns its path, for Data.Path.
func tempFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// insert inserts a batch; the call itself must succeed and answer one result
// per NewJob.
func (h *harness) insert(njs ...store.NewJob) []store.Inserted {
	h.t.Helper()
	res, err := h.s.Insert(h.ctx, njs)
	if err != nil {
		h.t.Fatalf("Insert: %v", err)
	}
	if len(res) != len(njs) {
		h.t.Fatalf("Insert of %d jobs returned %d results", len(njs), len(res))
	}
	return res
}

// add inserts a batch whose jobs must all be created.
func (h *harness) add(njs ...store.NewJob) []*job.Job {
	h.t.Helper()
	res := h.insert(njs...)
	jobs := make([]*job.Job, len(res))
	for i, r := range res {
		if r.Err != nil || r.Existing || r.Job == nil {
			h.t.Fatalf("Insert #%d: Err=%v Existing=%v Job=%v, want a new job", i, r.Err, r.Existing, r.Job)
		}
		jobs[i] = r.Job
	}
	return jobs
}

// addOne inserts one job, which must be created.
func (h *harness) addOne(nj store.NewJob) *job.Job {
	h.t.Helper()
	return h.add(nj)[0]
}

// get returns a job, which must exist.
func (h *harness) get(id string) *job.Job {
	h.t.Helper()
	j, err := h.s.Get(h.ctx, id)
	if err != nil {
		h.t.Fatalf("Get(%s): %v", id, err)
	}
	if j == nil || j.ID != id {
		h.t.Fatalf("Get(%s) returned %+v", id, j)
	}
	return j
}

// gone checks that a job and all its data are gone.
func (h *harness) gone(id string) {
	h.t.Helper()
	_, err := h.s.Get(h.ctx, id)
	wantErr(h.t, "Get of a removed job", err, store.ErrNotFound)
	rc, err := h.s.OpenInput(h.ctx, id)
	closeIf(rc)
	wantErr(h.t, "OpenInput of a removed job", err, store.ErrNotFound)
	_, rc, err = h.s.OpenResult(h.ctx, id)
	closeIf(rc)
	wantErr(h.t, "OpenResult of a removed job", err, store.ErrNotFound)
	_, rc, err = h.s.OpenArtifact(h.ctx, id, "a.txt")
	closeIf(rc)
	wantErr(h.t, "OpenArtifact of a removed job", err, store.ErrNotFound)
}

// claim claims up to limit jobs of queue as worker "w1".
func (h *harness) claim(queue string, limit int, lease time.Duration) []*job.Job {
	h.t.Helper()
	js, err := h.s.Claim(h.ctx, store.Claim{Queue: queue, Limit: limit, Worker: "w1", Lease: lease})
	if err != nil {
		h.t.Fatalf("Claim(%s, %d): %v", queue, limit, err)
	}
	return js
}

// claimID claims one job of queue, which must be id.
func (h *harness) claimID(queue, id string, lease time.Duration) *job.Job {
	h.t.Helper()
	js := h.claim(queue, 1, lease)
	if len(js) != 1 || js[0].ID != id {
		h.t.Fatalf("Claim(%s) = %v, want job %s", queue, ids(js), id)
	}
	return js[0]
}

// complete completes a running job; it must succeed.
func (h *harness) complete(j *job.Job, o store.Outcome) *job.Job {
	h.t.Helper()
	d, err := h.s.Complete(h.ctx, j.ID, j.LeaseToken, o)
	if err != nil {
		h.t.Fatalf("Complete(%s): %v", j.ID, err)
	}
	return d
}

// fail records a failure of a running job; it must be accepted.
func (h *harness) fail(j *job.Job, f store.Failure) *job.Job {
	h.t.Helper()
	d, err := h.s.Fail(h.ctx, j.ID, j.LeaseToken, f)
	if err != nil {
		h.t.Fatalf("Fail(%s): %v", j.ID, err)
	}
	return d
}

// cancel cancels a job; it must be accepted.
func (h *harness) cancel(id string) *job.Job {
	h.t.Helper()
	d, err := h.s.Cancel(h.ctx, id, retention)
	if err != nil {
		h.t.Fatalf("Cancel(%s): %v", id, err)
	}
	return d
}

// result is the result body of jobs the helpers complete.
var result = []byte(`{"ok":true}`)

// outcome is a success with a result and one artifact "a.txt".
func outcome() store.Outcome {
	return store.Outcome{
		Result: &store.Data{Blob: job.Blob{ContentType: "application/json", Size: int64(len(result))}, Bytes: result},
		Artifacts: []store.Data{
			{Blob: job.Blob{Name: "a.txt", ContentType: "text/plain", Size: 3}, Bytes: []byte("art")},
		},
		Retention: retention,
	}
}

// in creates a job and drives it to state s. Unless an option sets the
// queue, the job gets a queue of its own; with a shared queue the caller
// makes sure the claim picks this job (by priority or an empty queue).
// Running jobs hold a long lease; succeeded ones have the result and
// artifact of outcome(); failed ones failed for good at their first attempt.
func (h *harness) in(s job.State, opts ...opt) *job.Job {
	h.t.Helper()
	j := h.addOne(newJob(h.queue(), opts...))
	switch s {
	case job.Queued:
		return j
	case job.Canceled:
		return h.cancel(j.ID)
	}
	j = h.claimID(j.Queue, j.ID, longLease)
	switch s {
	case job.Running:
		return j
	case job.Succeeded:
		return h.complete(j, outcome())
	case job.Failed:
		return h.fail(j, store.Failure{Error: job.Error{Message: "boom", Code: job.CodeHandler}, Retention: retention})
	}
	h.t.Fatalf("in: unknown state %q", s)
	return nil
}

// expire waits until the lease of a running job has passed on the clock,
// then rescues it with a zero backoff so that it is at once claimable again.
func (h *harness) expire(j *job.Job) {
	h.t.Helper()
	waitUntil(j.LeaseExpiresAt.Add(tol))
	rescued, err := h.s.Rescue(h.ctx, time.Now(), func(int) time.Duration { return 0 }, func(string) time.Duration { return retention })
	if err != nil {
		h.t.Fatalf("Rescue: %v", err)
	}
	if !slices.Contains(ids(rescued), j.ID) {
		h.t.Fatalf("Rescue returned %v, want it to include %s", ids(rescued), j.ID)
	}
}

// waitUntil sleeps until the wall clock is past t. It waits for time to
// pass, never for another goroutine.
func waitUntil(t time.Time) {
	for d := time.Until(t); d > 0; d = time.Until(t) {
		time.Sleep(d)
	}
}

// ids lists the ids of jobs.
func ids(js []*job.Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}

// closeIf closes rc when it is not nil.
func closeIf(rc io.ReadCloser) {
	if rc != nil {
		rc.Close()
	}
}

// readAll reads and closes rc.
func readAll(t *testing.T, what string, rc io.ReadCloser, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("%s: read: %v", what, err)
	}
	return b
}

// wantBytes compares read bytes with the expected ones.
func wantBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes %.40q, want %d bytes %.40q", what, len(got), got, len(want), want)
	}
}

// wantErr checks that err wraps one of targets.
func wantErr(t *testing.T, what string, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if errors.Is(err, target) {
			return
		}
	}
	t.Errorf("%s: err = %v, want one of %v", what, err, targets)
}

// isUUIDv7 reports whether id is a canonical, lowercase UUID of version 7
// and RFC 9562 variant, as job.NewID makes them.
func isUUIDv7(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i, c := range id {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return id[14] == '7' && strings.ContainsRune("89ab", rune(id[19]))
}

// uuidTime is the millisecond timestamp of a UUIDv7.
func uuidTime(id string) time.Time {
	ms, err := strconv.ParseInt(strings.ReplaceAll(id[:13], "-", ""), 16, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// nearTime checks that got is want within tol; zero matches only zero.
func nearTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if got.IsZero() != want.IsZero() {
		t.Errorf("%s = %v, want %v", what, got, want)
		return
	}
	if d := got.Sub(want); d > tol || d < -tol {
		t.Errorf("%s = %v, want %v (off by %v)", what, got, want, d)
	}
}

// between checks lo-tol <= got <= hi+tol.
func between(t *testing.T, what string, got, lo, hi time.Time) {
	t.Helper()
	if got.IsZero() || got.Before(lo.Add(-tol)) || got.After(hi.Add(tol)) {
		t.Errorf("%s = %v, want between %v and %v", what, got, lo, hi)
	}
}

// zeroTime checks that a time is not set.
func zeroTime(t *testing.T, what string, got time.Time) {
	t.Helper()
	if !got.IsZero() {
		t.Errorf("%s = %v, want zero", what, got)
	}
}

// noLease checks that a job holds no lease.
func noLease(t *testing.T, j *job.Job) {
	t.Helper()
	if j.LeaseToken != "" || !j.LeaseExpiresAt.IsZero() || j.Worker != "" {
		t.Errorf("job %s: lease (%q, %v, worker %q), want none", j.ID, j.LeaseToken, j.LeaseExpiresAt, j.Worker)
	}
}

// sameJob checks that two records of a job agree on every stored field
// (times within tol); Position, derived by Get, is not compared.
func sameJob(t *testing.T, what string, got, want *job.Job) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
		return
	}
	var diffs []string
	add := func(field string, g, w any) {
		diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", field, g, w))
	}
	cmp := func(field string, g, w any) {
		if g != w {
			add(field, g, w)
		}
	}
	cmpTime := func(field string, g, w time.Time) {
		if g.IsZero() != w.IsZero() {
			add(field, g, w)
		} else if d := g.Sub(w); d > tol || d < -tol {
			add(field, g, w)
		}
	}
	cmp("ID", got.ID, want.ID)
	cmp("Queue", got.Queue, want.Queue)
	cmp("Owner", got.Owner, want.Owner)
	cmp("State", got.State, want.State)
	cmp("Input", got.Input, want.Input)
	cmp("InputDigest", got.InputDigest, want.InputDigest)
	cmp("Unique", got.Unique, want.Unique)
	cmp("Progress", got.Progress, want.Progress)
	if (got.Result == nil) != (want.Result == nil) || got.Result != nil && *got.Result != *want.Result {
		add("Result", fmtPtr(got.Result), fmtPtr(want.Result))
	}
	cmp("Artifacts", got.Artifacts, want.Artifacts)
	if (got.Error == nil) != (want.Error == nil) || got.Error != nil && *got.Error != *want.Error {
		add("Error", fmtPtr(got.Error), fmtPtr(want.Error))
	}
	cmp("Attempt", got.Attempt, want.Attempt)
	cmp("MaxAttempts", got.MaxAttempts, want.MaxAttempts)
	cmp("Priority", got.Priority, want.Priority)
	cmpTime("RunAt", got.RunAt, want.RunAt)
	cmp("Timeout", got.Timeout, want.Timeout)
	cmp("IdempotencyKey", got.IdempotencyKey, want.IdempotencyKey)
	if len(got.Labels) != 0 || len(want.Labels) != 0 {
		if !maps.Equal(got.Labels, want.Labels) {
			add("Labels", got.Labels, want.Labels)
		}
	}
	cmpTime("CreatedAt", got.CreatedAt, want.CreatedAt)
	cmpTime("StartedAt", got.StartedAt, want.StartedAt)
	cmpTime("FinishedAt", got.FinishedAt, want.FinishedAt)
	cmpTime("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	cmpTime("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	cmp("Version", got.Version, want.Version)
	cmp("LeaseToken", got.LeaseToken, want.LeaseToken)
	cmpTime("LeaseExpiresAt", got.LeaseExpiresAt, want.LeaseExpiresAt)
	cmp("Worker", got.Worker, want.Worker)
	cmp("Webhook", got.Webhook, want.Webhook)
	if !slices.Equal(got.WebhookEvents, want.WebhookEvents) {
		add("WebhookEvents", got.WebhookEvents, want.WebhookEvents)
	}
	if len(diffs) > 0 {
		t.Errorf("%s: job %s differs:\n\t%s", what, want.ID, strings.Join(diffs, "\n\t"))
	}
}

func fmtPtr[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprintf("%+v", *p)
}

// stored checks that Get returns the job as a changing call returned it.
func (h *harness) stored(what string, j *job.Job) *job.Job {
	h.t.Helper()
	g := h.get(j.ID)
	sameJob(h.t, what+" then Get", g, j)
	return g
}

// newer checks that a change bumped the version.
func newer(t *testing.T, what string, after, before *job.Job) {
	t.Helper()
	if after.Version <= before.Version {
		t.Errorf("%s: version %d, want more than %d", what, after.Version, before.Version)
	}
}

// input reads a job's input.
func (h *harness) input(id string) []byte {
	h.t.Helper()
	rc, err := h.s.OpenInput(h.ctx, id)
	return readAll(h.t, "OpenInput("+id+")", rc, err)
}

// result reads a job's result.
func (h *harness) result(id string) (job.Blob, []byte) {
	h.t.Helper()
	b, rc, err := h.s.OpenResult(h.ctx, id)
	return b, readAll(h.t, "OpenResult("+id+")", rc, err)
}

// artifact reads one artifact of a job.
func (h *harness) artifact(id, name string) (job.Blob, []byte) {
	h.t.Helper()
	b, rc, err := h.s.OpenArtifact(h.ctx, id, name)
	return b, readAll(h.t, "OpenArtifact("+id+", "+name+")", rc, err)
}

// list walks every page of f (with f.Limit per page) and returns the jobs
// in order. It checks the paging rules on the way: no page is longer than
// the limit, a short page is the last one, and Next is empty at the end.
func (h *harness) list(f store.Filter) []*job.Job {
	h.t.Helper()
	limit := f.Limit
	if limit == 0 {
		limit = 50
	}
	var all []*job.Job
	for page := 0; ; page++ {
		if page > 10000 {
			h.t.Fatalf("List(%+v): no end after %d pages", f, page)
		}
		p, err := h.s.List(h.ctx, f)
		if err != nil {
			h.t.Fatalf("List(%+v): %v", f, err)
		}
		if len(p.Jobs) > limit {
			h.t.Fatalf("List(%+v): page of %d jobs, limit %d", f, len(p.Jobs), limit)
		}
		all = append(all, p.Jobs...)
		if p.Next == "" {
			return all
		}
		if len(p.Jobs) < limit {
			h.t.Fatalf("List(%+v): short page of %d jobs with Next %q, want Next empty", f, len(p.Jobs), p.Next)
		}
		if p.Next == f.After {
			h.t.Fatalf("List(%+v): Next %q repeats the cursor", f, p.Next)
		}
		f.After = p.Next
	}
}

// countJobs counts the jobs List finds for f.
func countJobs(t *testing.T, h *harness, f store.Filter) int {
	t.Helper()
	return len(h.list(f))
}

// wantCounts checks QueueCounts against want: queues absent from want must
// be absent (or all zero), states absent from a queue's map count zero.
func wantCounts(t *testing.T, h *harness, want map[string]map[job.State]int64) {
	t.Helper()
	qc, err := h.s.QueueCounts(h.ctx)
	if err != nil {
		t.Fatalf("QueueCounts: %v", err)
	}
	got := map[string]map[job.State]int64{}
	for _, c := range qc {
		if _, dup := got[c.Queue]; dup {
			t.Errorf("QueueCounts lists queue %q twice", c.Queue)
		}
		m := map[job.State]int64{}
		for s, n := range c.Counts {
			if !s.Valid() {
				t.Errorf("QueueCounts: queue %q has unknown state %q", c.Queue, s)
			}
			if n != 0 {
				m[s] = n
			}
		}
		got[c.Queue] = m
	}
	for q := range got {
		if len(got[q]) == 0 {
			delete(got, q)
		}
	}
	for q, w := range want {
		for s, n := range w {
			if n == 0 {
				delete(w, s)
			}
		}
		if len(w) == 0 {
			delete(want, q)
		}
	}
	if len(got) != len(want) {
		t.Errorf("QueueCounts = %v, want %v", got, want)
		return
	}
	for q, w := range want {
		if !maps.Equal(got[q], w) {
			t.Errorf("QueueCounts = %v, want %v", got, want)
			return
		}
	}
}
