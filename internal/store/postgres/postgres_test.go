package postgres

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/postgres/pgtest"
	"github.com/docket/docket/internal/store/storetest"
)

// open opens a store on url, closed when the test ends.
func open(t testing.TB, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{URL: url})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, pgtest.URL(t))
	})
}

// watcher collects the notices of a Watch running for the test.
type watcher struct {
	t       *testing.T
	notices chan store.Notice
	done    chan error
}

func watch(t *testing.T, s *Store) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{t: t, notices: make(chan store.Notice, 1000), done: make(chan error, 1)}
	go func() { w.done <- s.Watch(ctx, func(n store.Notice) { w.notices <- n }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-w.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v, want context.Canceled", err)
		}
	})
	return w
}

// next waits for the next notice.
func (w *watcher) next(what string) store.Notice {
	w.t.Helper()
	select {
	case n := <-w.notices:
		return n
	case <-time.After(10 * time.Second):
		w.t.Fatalf("%s: no notice within 10s", what)
		return store.Notice{}
	}
}

// until reads notices until one holds a change of job id with the given
// version, and returns it with the notice.
func (w *watcher) until(what, id string, version int64) (store.Change, store.Notice) {
	w.t.Helper()
	for {
		n := w.next(what)
		for _, c := range n.Changes {
			if c.JobID == id && c.Version == version {
				return c, n
			}
		}
	}
}

// quiet checks that no notice arrives for a moment.
func (w *watcher) quiet(what string) {
	w.t.Helper()
	select {
	case n := <-w.notices:
		w.t.Errorf("%s: unexpected notice %+v", what, n)
	case <-time.After(300 * time.Millisecond):
	}
}

func newJob(queue string) store.NewJob {
	return store.NewJob{Queue: queue, Owner: "alice", MaxAttempts: 1,
		Input: store.Data{Blob: job.Blob{ContentType: "text/plain"}, Bytes: []byte("in")}}
}

func insert(t *testing.T, s *Store, njs ...store.NewJob) []*job.Job {
	t.Helper()
	res, err := s.Insert(t.Context(), njs)
	if err != nil {
		t.Fatalf("Insert: %v", err)
	}
	out := make([]*job.Job, len(res))
	for i, r := range res {
		if r.Err != nil || r.Job == nil {
			t.Fatalf("Insert #%d: %v", i, r.Err)
		}
		out[i] = r.Job
	}
	return out
}

func TestWatch(t *testing.T) {
	url := pgtest.URL(t)
	a, b := open(t, url), open(t, url)
	// b checks its quiet connection often, so that the check runs here.
	b.listenPing = 50 * time.Millisecond
	wa, wb := watch(t, a), watch(t, b)
	ctx := t.Context()

	// Watch subscribes asynchronously: repeat a first change until it is
	// heard, then every later one must be.
	var first *job.Job
	for first == nil {
		j := insert(t, a, newJob("warmup"))[0]
		select {
		case n := <-wb.notices:
			if slices.ContainsFunc(n.Changes, func(c store.Change) bool { return c.JobID == j.ID }) {
				first = j
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
	// a's own watcher must have been subscribed too before going on.
	for {
		j := insert(t, b, newJob("warmup"))[0]
		select {
		case n := <-wa.notices:
			if slices.ContainsFunc(n.Changes, func(c store.Change) bool { return c.JobID == j.ID }) {
				goto ready
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
ready:
	drain := func(w *watcher) {
		for {
			select {
			case <-w.notices:
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	drain(wa)
	drain(wb)

	j := insert(t, a, newJob("q"))[0]
	c, n := wb.until("insert by a", j.ID, 1)
	if n.Resync || c.Queue != "q" || c.Owner != "alice" || c.State != job.Queued || c.Deleted {
		t.Errorf("insert: change %+v (resync %v)", c, n.Resync)
	}
	claimed, err := a.Claim(ctx, store.Claim{Queue: "q", Limit: 1, Worker: "w", Lease: time.Minute})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("Claim: %v %v", claimed, err)
	}
	if c, _ := wb.until("claim by a", j.ID, 2); c.State != job.Running {
		t.Errorf("claim: change %+v", c)
	}
	done, err := a.Complete(ctx, j.ID, claimed[0].LeaseToken, store.Outcome{Retention: time.Hour, Known: claimed[0]})
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if c, _ := wb.until("complete by a", j.ID, done.Version); c.State != job.Succeeded {
		t.Errorf("complete: change %+v", c)
	}
	if _, err := a.Delete(ctx, j.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if c, _ := wb.until("delete by a", j.ID, done.Version); !c.Deleted || c.State != job.Succeeded {
		t.Errorf("delete: change %+v", c)
	}
	// None of that reached a's own watcher: its next notice is b's change.
	k := insert(t, b, newJob("r"))[0]
	n = wa.next("insert by b")
	if len(n.Changes) != 1 || n.Changes[0].JobID != k.ID {
		t.Errorf("a's watcher got %+v first, want only b's insert of %s", n, k.ID)
	}
	wb.quiet("b's own insert")

	// A large batch is split into several notifications, none lost.
	njs := make([]store.NewJob, 1000)
	for i := range njs {
		njs[i] = newJob("bulk")
	}
	want := map[string]bool{}
	for _, j := range insert(t, a, njs...) {
		want[j.ID] = true
	}
	notices := 0
	for len(want) > 0 {
		n := wb.next(fmt.Sprintf("bulk insert, %d changes left", len(want)))
		notices++
		for _, c := range n.Changes {
			if c.Queue != "bulk" || c.State != job.Queued {
				t.Fatalf("bulk change %+v", c)
			}
			delete(want, c.JobID)
		}
	}
	if notices < 2 {
		t.Errorf("1000 changes came in %d notice(s); want them split", notices)
	}

	// Names too long for a payload: the change still comes, without them.
	long := strings.Repeat("q", 9000)
	j = insert(t, a, newJob(long))[0]
	if c, _ := wb.until("insert with a long queue name", j.ID, 1); c.Queue != "" || c.Owner != "" || c.State != job.Queued {
		t.Errorf("long names: change %+v, want queue and owner left out", c)
	}
	// One such job in a batch: the others keep their names.
	mixed := make([]store.NewJob, 50)
	for i := range mixed {
		mixed[i] = newJob("mixed")
	}
	mixed[20] = newJob(long)
	want = map[string]bool{}
	var longID string
	for i, j := range insert(t, a, mixed...) {
		want[j.ID] = true
		if i == 20 {
			longID = j.ID
		}
	}
	for len(want) > 0 {
		n := wb.next(fmt.Sprintf("mixed batch, %d changes left", len(want)))
		for _, c := range n.Changes {
			wantQueue := "mixed"
			if c.JobID == longID {
				wantQueue = ""
			}
			if c.Queue != wantQueue || c.State != job.Queued {
				t.Fatalf("mixed batch change %+v, want queue %q", c, wantQueue)
			}
			delete(want, c.JobID)
		}
	}

	// After a quiet while, during which b checked its connection, changes
	// still come.
	time.Sleep(300 * time.Millisecond)
	k = insert(t, a, newJob("later"))[0]
	wb.until("insert after a quiet while", k.ID, 1)
}

// TestWatchResync kills the LISTEN connection of a watcher, changes a job
// while it is away, and expects that change in the resync notice that
// follows the reconnection.
func TestWatchResync(t *testing.T) {
	url := pgtest.URL(t)
	a, b := open(t, url), open(t, url)
	ctx := t.Context()
	j := insert(t, a, newJob("q"))[0]

	var away atomic.Pointer[job.Job]
	b.watchLost = func() {
		c, err := a.Cancel(ctx, j.ID, time.Hour)
		if err != nil {
			t.Errorf("Cancel while the watcher is away: %v", err)
			return
		}
		away.Store(c)
	}
	wb := watch(t, b)
	// Wait until b listens: a's changes then reach it.
	for subscribed := false; !subscribed; {
		k := insert(t, a, newJob("warmup"))[0]
		select {
		case n := <-wb.notices:
			subscribed = slices.ContainsFunc(n.Changes, func(c store.Change) bool { return c.JobID == k.ID })
		case <-time.After(200 * time.Millisecond):
		}
	}

	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var killed int
	err = admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'docket-listen' AND query LIKE 'LISTEN %' AND strpos(query, $1) > 0`, b.channel).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("killing the LISTEN connection: %d killed, %v", killed, err)
	}
	for {
		n := wb.next("resync")
		if !n.Resync {
			continue
		}
		c := away.Load()
		if c == nil {
			t.Fatal("resync before the change made while away")
		}
		i := slices.IndexFunc(n.Changes, func(ch store.Change) bool { return ch.JobID == j.ID })
		if i < 0 {
			t.Fatalf("resync %+v misses job %s, changed while the watcher was away", n.Changes, j.ID)
		}
		if got := n.Changes[i]; got.Version != c.Version || got.State != job.Canceled || got.Queue != "q" {
			t.Errorf("resync change %+v, want version %d canceled", got, c.Version)
		}
		break
	}
	// The watcher listens again.
	k := insert(t, a, newJob("after"))[0]
	wb.until("insert after the resync", k.ID, 1)
}

func TestLead(t *testing.T) {
	url := pgtest.URL(t)
	a, b := open(t, url), open(t, url)
	ctx := t.Context()
	lead := func(s *Store, want bool, what string) {
		t.Helper()
		got, err := s.Lead(ctx)
		if err != nil || got != want {
			t.Fatalf("%s: Lead = %v, %v; want %v", what, got, err, want)
		}
	}
	eventually := func(s *Store, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ok, err := s.Lead(ctx)
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no lead after 10s (last: %v, %v)", what, ok, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	lead(a, true, "first")
	lead(b, false, "second")
	lead(a, true, "first again")
	lead(b, false, "second again")

	// Another schema has a lead of its own.
	c := open(t, pgtest.URL(t))
	lead(c, true, "other schema")

	// The leader's connection dies: the lead is free for the other.
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	a.leadMu.Lock()
	pid := a.leadConn.PgConn().PID()
	a.leadMu.Unlock()
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	eventually(b, "after the leader's connection died")
	lead(a, false, "old leader, reconnected")

	// The leader closes: the lead passes back.
	b.Close()
	eventually(a, "after the leader closed")
	if _, err := b.Lead(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Lead of a closed store: %v, want ErrClosed", err)
	}
}

func TestMigrateConcurrently(t *testing.T) {
	url := pgtest.URL(t)
	const n = 6
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(context.Background(), Options{URL: url})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	files, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var applied, distinct int
	err = stores[0].pool.QueryRow(t.Context(), "SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&applied, &distinct)
	if err != nil {
		t.Fatal(err)
	}
	if applied != len(files) || distinct != len(files) {
		t.Errorf("schema_migrations holds %d rows (%d versions), want %d", applied, distinct, len(files))
	}
	// Every store works on the one schema.
	for i, s := range stores {
		insert(t, s, newJob(fmt.Sprint("q", i)))
	}
	counts, err := stores[n-1].QueueCounts(t.Context())
	if err != nil || len(counts) != n {
		t.Errorf("QueueCounts = %v, %v; want %d queues", counts, err, n)
	}
}

// The schema named by the URL's search_path is made when it is missing, by
// nodes starting together too.
func TestMigrateCreatesSchema(t *testing.T) {
	base := pgtest.URL(t) // a fresh schema, dropped at cleanup; not used
	name := "docket_made_" + strings.ToLower(rand.Text()[:8])
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(context.Background(), Options{URL: u.String()})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	admin := open(t, base)
	t.Cleanup(func() { admin.pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+name+" CASCADE") })
	for _, err := range errs {
		if err != nil {
			t.Fatalf("Open with a missing schema: %v", err)
		}
	}
	var tables int
	if err := admin.pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'jobs'", name).Scan(&tables); err != nil || tables != 1 {
		t.Fatalf("jobs tables in %s: %d, %v", name, tables, err)
	}
}

// A schema migrated by a newer docket is refused, not written to.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	if _, err := s.pool.Exec(t.Context(), "INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_future.sql')"); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(context.Background(), Options{URL: url})
	if err == nil {
		s2.Close()
		t.Fatal("Open accepted a schema newer than its migrations")
	}
	if !strings.Contains(err.Error(), "newer than this docket knows") {
		t.Fatalf("Open: %v", err)
	}
}

// TestLargeResultMemory stores and reads back a 100 MiB result and checks
// that the heap never grows by anything like its size: the data must
// stream through in chunks both ways.
func TestLargeResultMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB result: skipped in short mode")
	}
	const size = 100 << 20
	s := open(t, pgtest.URL(t))
	ctx := t.Context()
	j := insert(t, s, newJob("big"))[0]
	claimed, err := s.Claim(ctx, store.Claim{Queue: "big", Limit: 1, Worker: "w", Lease: time.Hour})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("Claim: %v %v", claimed, err)
	}
	path := filepath.Join(t.TempDir(), "result")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	bw := bufio.NewWriter(io.MultiWriter(f, sum))
	if _, err := io.CopyN(bw, &pattern{}, size); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(bw.Flush(), f.Close()); err != nil {
		t.Fatal(err)
	}
	want := sum.Sum(nil)

	peak := heapPeak(t)
	d, err := s.Complete(ctx, j.ID, claimed[0].LeaseToken, store.Outcome{
		Result: &store.Data{Blob: job.Blob{ContentType: "application/octet-stream"}, Path: path}, Retention: time.Hour})
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if d.Result == nil || d.Result.Size != size {
		t.Fatalf("Result = %+v, want %d bytes", d.Result, size)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the result file handed over is still there: %v", err)
	}
	_, rc, err := s.OpenResult(ctx, j.ID)
	if err != nil {
		t.Fatalf("OpenResult: %v", err)
	}
	sum.Reset()
	n, err := io.Copy(sum, rc)
	rc.Close()
	if err != nil || n != size || string(sum.Sum(nil)) != string(want) {
		t.Fatalf("read back %d bytes (%v), sha256 match %v", n, err, string(sum.Sum(nil)) == string(want))
	}
	if grew := peak(); grew > 40<<20 {
		t.Errorf("heap in use grew by %d MiB while a %d MiB result went through", grew>>20, size>>20)
	} else {
		t.Logf("heap in use grew by at most %.1f MiB", float64(grew)/(1<<20))
	}
}

// heapPeak samples HeapInuse until the returned function is called, which
// gives the largest growth seen over the starting value.
func heapPeak(t *testing.T) func() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var top atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > base && ms.HeapInuse-base > top.Load() {
					top.Store(ms.HeapInuse - base)
				}
			}
		}
	}()
	var once sync.Once
	finish := func() uint64 {
		once.Do(func() { close(stop); <-done })
		return top.Load()
	}
	t.Cleanup(func() { finish() })
	return finish
}

// pattern is an endless stream of bytes that do not compress.
type pattern struct{ x uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.x = p.x*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.x >> 56)
	}
	return len(b), nil
}

// TestBatchedCalls runs many completions, progress reports and heartbeats
// at once, so that they share statements, and checks each one's outcome,
// including calls for the same job in one batch and refused ones.
func TestBatchedCalls(t *testing.T) {
	s := open(t, pgtest.URL(t))
	ctx := t.Context()
	const n = 200
	njs := make([]store.NewJob, n)
	for i := range njs {
		njs[i] = newJob("q")
	}
	insert(t, s, njs...)
	claimed, err := s.Claim(ctx, store.Claim{Queue: "q", Limit: n, Worker: "w", Lease: time.Hour})
	if err != nil || len(claimed) != n {
		t.Fatalf("Claim: %d jobs, %v", len(claimed), err)
	}
	var wg sync.WaitGroup
	for i, j := range claimed {
		wg.Go(func() {
			for k := range 3 {
				p := job.Progress{Current: int64(k + 1), Total: 3}
				got, err := s.Progress(ctx, j.ID, j.LeaseToken, p)
				if err != nil || got.Progress != p {
					t.Errorf("Progress: %+v, %v", got, err)
					return
				}
			}
			if _, err := s.Heartbeat(ctx, j.ID, j.LeaseToken, 2*time.Hour); err != nil {
				t.Errorf("Heartbeat: %v", err)
			}
			if _, err := s.Progress(ctx, j.ID, "not-the-token", job.Progress{}); !errors.Is(err, store.ErrLeaseLost) {
				t.Errorf("Progress with a wrong token: %v", err)
			}
			known := j
			if i%2 == 0 {
				known = nil // half of them without, so read first
			}
			d, err := s.Complete(ctx, j.ID, j.LeaseToken, store.Outcome{Retention: time.Hour, Known: known})
			if err != nil || d.State != job.Succeeded || d.Progress.Current != 3 {
				t.Errorf("Complete: %+v, %v", d, err)
			}
		})
	}
	wg.Wait()
	counts, err := s.QueueCounts(ctx)
	if err != nil || len(counts) != 1 || counts[0].Counts[job.Succeeded] != n || counts[0].Counts[job.Running] != 0 {
		t.Errorf("QueueCounts = %+v, %v", counts, err)
	}
}

// TestChunks stores inputs, results and artifacts in chunks (the limits
// are made tiny) and checks they read back, and that no chunk outlives
// what it belongs to: a job matched by its idempotency key, a completion
// refused, a deleted or purged job.
func TestChunks(t *testing.T) {
	s, err := Open(t.Context(), Options{URL: pgtest.URL(t), InlineMax: 8, ChunkSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	chunks := func(id string) int {
		t.Helper()
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM blob_chunks WHERE job_id = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	read := func(what string, rc io.ReadCloser, err error) []byte {
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
	file := func(b []byte) string {
		p := filepath.Join(t.TempDir(), "data")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	data := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i)
		}
		return b
	}

	input := data(100, 1) // 7 chunks
	nj := newJob("q")
	nj.Input.Bytes, nj.IdempotencyKey = input, "k"
	j := insert(t, s, nj)[0]
	if j.Input.Size != 100 || chunks(j.ID) != 7 {
		t.Fatalf("input: size %d, %d chunks; want 100, 7", j.Input.Size, chunks(j.ID))
	}
	rc, err := s.OpenInput(ctx, j.ID)
	if got := read("OpenInput", rc, err); !slices.Equal(got, input) {
		t.Errorf("input read back: %d bytes, want %d", len(got), len(input))
	}
	again := newJob("q")
	again.ID, again.IdempotencyKey = job.NewID(), "k"
	again.Input.Bytes, again.Input.Path = nil, file(data(50, 2))
	res, err := s.Insert(ctx, []store.NewJob{again})
	if err != nil || !res[0].Existing || res[0].Job.ID != j.ID {
		t.Fatalf("repeated key: %+v, %v", res, err)
	}
	if n := chunks(again.ID); n != 0 {
		t.Errorf("the input of a job not inserted left %d chunks", n)
	}
	if _, err := os.Stat(again.Input.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("input file handed over still exists: %v", err)
	}

	claimed, err := s.Claim(ctx, store.Claim{Queue: "q", Limit: 1, Worker: "w", Lease: time.Hour})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("Claim: %v, %v", claimed, err)
	}
	c := claimed[0]
	// A completion under a lost lease writes its data, then takes it back.
	_, err = s.Complete(ctx, c.ID, "stale", store.Outcome{Retention: time.Hour,
		Result: &store.Data{Blob: job.Blob{ContentType: "x/y"}, Bytes: data(40, 3)}})
	if !errors.Is(err, store.ErrLeaseLost) || chunks(c.ID) != 7 {
		t.Fatalf("stale Complete: %v, %d chunks; want ErrLeaseLost, 7", err, chunks(c.ID))
	}
	result, art1, art2 := data(50, 4), data(30, 5), data(20, 6)
	d, err := s.Complete(ctx, c.ID, c.LeaseToken, store.Outcome{Retention: time.Hour, Known: c,
		Result: &store.Data{Blob: job.Blob{ContentType: "x/y"}, Path: file(result)},
		Artifacts: []store.Data{
			{Blob: job.Blob{Name: "one", ContentType: "a/b"}, Bytes: art1},
			{Blob: job.Blob{Name: "two", ContentType: "a/b"}, Path: file(art2)},
			{Blob: job.Blob{Name: "tiny", ContentType: "a/b"}, Bytes: []byte("abc")},
		}})
	if err != nil || d.Result.Size != 50 || d.Artifacts != 3 {
		t.Fatalf("Complete: %+v, %v", d, err)
	}
	if n := chunks(c.ID); n != 7+4+2+2 {
		t.Errorf("%d chunks, want %d", n, 7+4+2+2)
	}
	_, rc, err = s.OpenResult(ctx, c.ID)
	if got := read("OpenResult", rc, err); !slices.Equal(got, result) {
		t.Errorf("result read back: %d bytes", len(got))
	}
	for name, want := range map[string][]byte{"one": art1, "two": art2, "tiny": []byte("abc")} {
		b, rc, err := s.OpenArtifact(ctx, c.ID, name)
		if got := read("OpenArtifact "+name, rc, err); !slices.Equal(got, want) || b.Size != int64(len(want)) {
			t.Errorf("artifact %s: %d bytes (size %d), want %d", name, len(got), b.Size, len(want))
		}
	}

	// A reader whose job goes away fails rather than ending early.
	_, rc, err = s.OpenResult(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reading a deleted result: %v, want ErrNotFound", err)
	}
	rc.Close()
	if n := chunks(c.ID); n != 0 {
		t.Errorf("Delete left %d chunks", n)
	}

	// Purge takes the chunks with the job.
	p := newJob("p")
	p.Input.Bytes = data(40, 7)
	pj := insert(t, s, p)[0]
	if _, err := s.Cancel(ctx, pj.ID, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Purge(ctx, time.Now().Add(time.Second), 10); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if n := chunks(pj.ID); n != 0 {
		t.Errorf("Purge left %d chunks", n)
	}
}

// TestBatchAlone checks that a call whose data the database refuses fails
// alone, not with the calls batched with it.
func TestBatchAlone(t *testing.T) {
	s := open(t, pgtest.URL(t))
	ctx := t.Context()
	js := insert(t, s, newJob("q"), newJob("q"))
	claimed, err := s.Claim(ctx, store.Claim{Queue: "q", Limit: 2, Worker: "w", Lease: time.Hour})
	if err != nil || len(claimed) != 2 {
		t.Fatalf("Claim: %v, %v", claimed, err)
	}
	good := &progressCall{id: claimed[0].ID, token: claimed[0].LeaseToken, p: job.Progress{Current: 1, Message: "fine"}, done: make(chan struct{})}
	bad := &progressCall{id: claimed[1].ID, token: claimed[1].LeaseToken, p: job.Progress{Current: 1, Message: "\xff\xfe"}, done: make(chan struct{})}
	s.runProgress(ctx, []*progressCall{good, bad})
	if good.err != nil || good.job == nil || good.job.Progress.Message != "fine" {
		t.Errorf("good progress: %+v, %v", good.job, good.err)
	}
	if bad.err == nil {
		t.Errorf("progress with a message that is not UTF-8 was accepted")
	}
	// Through Progress, such text is made storable rather than refused.
	if got, err := s.Progress(ctx, claimed[1].ID, claimed[1].LeaseToken, job.Progress{Message: "a\xffb\x00c"}); err != nil || got.Progress.Message != "a\uFFFDb\uFFFDc" {
		t.Errorf("Progress with invalid text: %+v, %v", got, err)
	}
	if got, err := s.Fail(ctx, claimed[1].ID, claimed[1].LeaseToken, store.Failure{Error: job.Error{Message: "exit\xc3"}}); err != nil || got.Error.Message != "exit\uFFFD" {
		t.Errorf("Fail with invalid text: %+v, %v", got, err)
	}

	dup := newJob("q")
	dup.ID = js[0].ID
	fine := newJob("q")
	fine.ID = job.NewID()
	calls := []*insertCall{
		{rows: []newRow{{nj: fine, input: stored{size: 2, data: []byte("in")}}}, done: make(chan struct{})},
		{rows: []newRow{{nj: dup, input: stored{size: 2, data: []byte("in")}}}, done: make(chan struct{})},
	}
	s.runInserts(ctx, calls)
	if calls[0].err != nil || len(calls[0].out) != 1 || calls[0].out[0].Job == nil {
		t.Errorf("insert batched with a bad one: %+v, %v", calls[0].out, calls[0].err)
	}
	if calls[1].err == nil {
		t.Errorf("insert of an id in use was accepted")
	}
	if _, err := s.Get(ctx, fine.ID); err != nil {
		t.Errorf("Get of the good insert: %v", err)
	}
}
