package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/sqlite"
)

func openStore(t testing.TB, dir string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// start builds and starts an engine on st with the given queues; it is
// stopped at cleanup.
func start(t testing.TB, st store.Store, opts engine.Options, queues ...engine.Queue) *engine.Engine {
	t.Helper()
	opts.Store = st
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	if opts.BackoffBase == 0 {
		opts.BackoffBase, opts.BackoffMax = time.Millisecond, 5*time.Millisecond
	}
	e, err := engine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if err := e.AddQueue(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Stop(ctx)
	})
	return e
}

func submit(t testing.TB, e *engine.Engine, nj store.NewJob) *job.Job {
	t.Helper()
	out, err := e.Submit(context.Background(), []store.NewJob{nj})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Err != nil {
		t.Fatal(out[0].Err)
	}
	return out[0].Job
}

func wait(t testing.TB, e *engine.Engine, id string) *job.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j, err := e.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait %s: %v (last %+v)", id, err, j)
	}
	return j
}

func readResult(t testing.TB, st store.Store, id string) string {
	t.Helper()
	_, rc, err := st.OpenResult(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

func TestRunsJobsWithResultAndArtifacts(t *testing.T) {
	st := openStore(t, t.TempDir())
	e := start(t, st, engine.Options{}, engine.Queue{Name: "upper", Concurrency: 4, MaxAttempts: 1,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			rc, err := tk.OpenInput(ctx)
			if err != nil {
				return err
			}
			defer rc.Close()
			b, _ := io.ReadAll(rc)
			tk.Progress(1, 2, "half")
			if err := tk.AddArtifact("copy.txt", "text/plain", strings.NewReader(string(b))); err != nil {
				return err
			}
			tk.SetResult("text/plain", []byte(strings.ToUpper(string(b))))
			return nil
		})})
	var ids []string
	for i := range 20 {
		ids = append(ids, submit(t, e, store.NewJob{Queue: "upper", Input: store.Data{Bytes: fmt.Appendf(nil, "job %d", i)}}).ID)
	}
	for i, id := range ids {
		j := wait(t, e, id)
		if j.State != job.Succeeded || j.Attempt != 1 || j.Artifacts != 1 {
			t.Fatalf("job %d: %+v", i, j)
		}
		if got := readResult(t, st, id); got != fmt.Sprintf("JOB %d", i) {
			t.Fatalf("result %q", got)
		}
		if j.Progress != (job.Progress{Current: 1, Total: 2, Message: "half"}) {
			t.Fatalf("progress %+v", j.Progress)
		}
	}
}

func TestUnknownQueueRefused(t *testing.T) {
	e := start(t, openStore(t, t.TempDir()), engine.Options{})
	_, err := e.Submit(context.Background(), []store.NewJob{{Queue: "nope"}})
	if !errors.Is(err, engine.ErrUnknownQueue) {
		t.Fatalf("got %v", err)
	}
}

// The pool's bound holds with slow jobs and with quick ones, whose slots
// free while claims are in flight.
func TestConcurrencyIsBounded(t *testing.T) {
	for _, c := range []struct {
		name        string
		concurrency int
		jobs        int
		work        time.Duration
	}{
		{"slow", 3, 15, 20 * time.Millisecond},
		{"quick", 8, 400, 0},
		{"mixed", 20, 600, 200 * time.Microsecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cur, peak atomic.Int32
			e := start(t, openStore(t, t.TempDir()), engine.Options{}, engine.Queue{Name: "q", Concurrency: c.concurrency, MaxAttempts: 1,
				Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
					n := cur.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					time.Sleep(c.work)
					cur.Add(-1)
					return nil
				})})
			jobs := make([]store.NewJob, c.jobs)
			for i := range jobs {
				jobs[i] = store.NewJob{Queue: "q"}
			}
			ins, err := e.Submit(context.Background(), jobs)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range ins {
				wait(t, e, in.Job.ID)
			}
			if p := peak.Load(); p > int32(c.concurrency) || c.work >= 10*time.Millisecond && p < int32(c.concurrency) {
				t.Fatalf("peak concurrency %d, want %d", p, c.concurrency)
			}
		})
	}
}

// With the poll interval at an hour, only the insert's wake-up can start
// the job.
func TestInsertWakesQueue(t *testing.T) {
	started := make(chan struct{}, 10)
	e := start(t, openStore(t, t.TempDir()), engine.Options{Poll: time.Hour}, engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 1,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error { started <- struct{}{}; return nil })})
	for range 3 {
		time.Sleep(20 * time.Millisecond) // the loop is idle again
		submit(t, e, store.NewJob{Queue: "q"})
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("job did not start without polling")
		}
	}
}

func TestDelayedJobRunsWhenDue(t *testing.T) {
	var ranAt atomic.Int64
	e := start(t, openStore(t, t.TempDir()), engine.Options{Poll: time.Hour}, engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 1,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error { ranAt.Store(time.Now().UnixNano()); return nil })})
	due := time.Now().Add(150 * time.Millisecond)
	j := submit(t, e, store.NewJob{Queue: "q", RunAt: due})
	wait(t, e, j.ID)
	if got := time.Unix(0, ranAt.Load()); got.Before(due) {
		t.Fatalf("ran at %v, before due %v", got, due)
	}
}

func TestRetryWithBackoffThenSuccess(t *testing.T) {
	e := start(t, openStore(t, t.TempDir()), engine.Options{}, engine.Queue{Name: "q", Concurrency: 2, MaxAttempts: 3,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			if tk.Attempt() < 3 {
				return fmt.Errorf("attempt %d fails", tk.Attempt())
			}
			return nil
		})})
	j := wait(t, e, submit(t, e, store.NewJob{Queue: "q"}).ID)
	if j.State != job.Succeeded || j.Attempt != 3 {
		t.Fatalf("%+v", j)
	}
}

func TestFailures(t *testing.T) {
	cases := []struct {
		name     string
		max      int
		timeout  time.Duration
		handler  engine.HandlerFunc
		attempts int
		code     string
		msg      string
	}{
		{"exhausted", 2, 0, func(ctx context.Context, tk *engine.Task) error { return errors.New("boom") }, 2, job.CodeHandler, "boom"},
		{"permanent", 5, 0, func(ctx context.Context, tk *engine.Task) error { return engine.Permanent(errors.New("bad input")) }, 1, job.CodeHandler, "bad input"},
		{"panic", 1, 0, func(ctx context.Context, tk *engine.Task) error { panic("oops") }, 1, job.CodeHandler, "handler panic: oops"},
		{"timeout", 2, 30 * time.Millisecond, func(ctx context.Context, tk *engine.Task) error {
			<-ctx.Done()
			return ctx.Err()
		}, 2, job.CodeTimeout, "deadline exceeded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, openStore(t, t.TempDir()), engine.Options{}, engine.Queue{Name: "q", Concurrency: 1,
				MaxAttempts: c.max, Timeout: c.timeout, Handler: c.handler})
			j := wait(t, e, submit(t, e, store.NewJob{Queue: "q"}).ID)
			if j.State != job.Failed || j.Attempt != c.attempts || j.Error == nil || j.Error.Code != c.code ||
				!strings.Contains(j.Error.Message, c.msg) {
				t.Fatalf("%+v error %+v", j, j.Error)
			}
		})
	}
}

func TestCancelRunningJobCancelsHandler(t *testing.T) {
	started := make(chan struct{})
	cause := make(chan error, 1)
	e := start(t, openStore(t, t.TempDir()), engine.Options{}, engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 3,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			close(started)
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return ctx.Err()
		})})
	j := submit(t, e, store.NewJob{Queue: "q"})
	<-started
	if _, err := e.Cancel(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-cause:
		if err == nil || !strings.Contains(err.Error(), "canceled") {
			t.Fatalf("cause %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler context not canceled")
	}
	got := wait(t, e, j.ID)
	if got.State != job.Canceled || got.Attempt != 1 {
		t.Fatalf("%+v", got)
	}
	// The handler's late return must not change the canceled job.
	time.Sleep(50 * time.Millisecond)
	again, _ := e.Store().Get(context.Background(), j.ID)
	if again.State != job.Canceled || again.Version != got.Version {
		t.Fatalf("changed after cancel: %+v", again)
	}
}

// A handler may report progress at any rate; the store sees a few writes a
// second, and the last report is stored with the final state.
func TestProgressIsCoalesced(t *testing.T) {
	st := &countingStore{Store: openStore(t, t.TempDir())}
	const reports = 200_000
	e := start(t, st, engine.Options{ProgressEvery: 50 * time.Millisecond}, engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 1,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			for i := range int64(reports) {
				tk.Progress(i+1, reports, "step")
			}
			return nil
		})})
	start := time.Now()
	j := wait(t, e, submit(t, e, store.NewJob{Queue: "q"}).ID)
	elapsed := time.Since(start)
	if j.Progress.Current != reports || j.Progress.Total != reports {
		t.Fatalf("final progress %+v", j.Progress)
	}
	// One write per ProgressEvery at most, plus the first one.
	if n, max := st.progress.Load(), int64(elapsed/(50*time.Millisecond))+2; n > max {
		t.Fatalf("%d progress writes in %v, want at most %d", n, elapsed, max)
	}
}

type countingStore struct {
	store.Store
	progress atomic.Int64
}

func (c *countingStore) Progress(ctx context.Context, id, token string, p job.Progress) (*job.Job, error) {
	c.progress.Add(1)
	return c.Store.Progress(ctx, id, token, p)
}

// Every event is published after its change is stored, so a subscriber
// reading the store on the event sees at least that version; and a
// subscription to one job sees its versions in order.
func TestEventsFollowStoredState(t *testing.T) {
	st := openStore(t, t.TempDir())
	e := start(t, st, engine.Options{ProgressEvery: time.Millisecond}, engine.Queue{Name: "q", Concurrency: 2, MaxAttempts: 1,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			for i := range 5 {
				tk.Progress(int64(i), 5, "")
				time.Sleep(2 * time.Millisecond)
			}
			return nil
		})})
	sub := e.Hub().Subscribe(nil)
	defer sub.Close()
	const n = 10
	for range n {
		submit(t, e, store.NewJob{Queue: "q"})
	}
	done := 0
	last := map[string]int64{}
	timeout := time.After(20 * time.Second)
	for done < n {
		select {
		case ev := <-sub.C():
			if ev.Version == last[ev.JobID] {
				t.Fatalf("version %d published twice", ev.Version)
			}
			last[ev.JobID] = max(last[ev.JobID], ev.Version)
			j, err := st.Get(context.Background(), ev.JobID)
			if err != nil || j.Version < ev.Version {
				t.Fatalf("event v%d before store (%v, %+v)", ev.Version, err, j)
			}
			if ev.State.Terminal() {
				done++
			}
		case <-timeout:
			t.Fatal("timeout")
		}
	}
}

// A job whose worker died (lease expired) is rescued and run again, with
// the lost attempt counted.
func TestRescueExpiredLease(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	if _, err := st.Insert(ctx, []store.NewJob{{Queue: "q", MaxAttempts: 3}}); err != nil {
		t.Fatal(err)
	}
	// A worker that vanishes right after claiming.
	claimed, err := st.Claim(ctx, store.Claim{Queue: "q", Limit: 1, Worker: "dead", Lease: time.Millisecond})
	if err != nil || len(claimed) != 1 {
		t.Fatal(claimed, err)
	}
	e := start(t, st, engine.Options{Lease: 90 * time.Millisecond, Poll: 10 * time.Millisecond}, engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 3,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error { return nil })})
	j := wait(t, e, claimed[0].ID)
	if j.State != job.Succeeded || j.Attempt != 2 {
		t.Fatalf("%+v", j)
	}
}

// A lease is renewed while the handler runs, however long it takes.
func TestLeaseRenewedWhileRunning(t *testing.T) {
	st := openStore(t, t.TempDir())
	e := start(t, st, engine.Options{Lease: 60 * time.Millisecond}, engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 1,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			select {
			case <-time.After(400 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		})})
	j := wait(t, e, submit(t, e, store.NewJob{Queue: "q"}).ID)
	if j.State != job.Succeeded || j.Attempt != 1 {
		t.Fatalf("%+v %+v", j, j.Error)
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Run("waits for running handlers", func(t *testing.T) {
		st := openStore(t, t.TempDir())
		started := make(chan struct{})
		e, _ := engine.New(engine.Options{Store: st, TempDir: t.TempDir()})
		e.AddQueue(engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 1, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			close(started)
			time.Sleep(100 * time.Millisecond)
			return nil
		})})
		e.Start()
		j := submit(t, e, store.NewJob{Queue: "q"})
		second := submit(t, e, store.NewJob{Queue: "q"})
		<-started
		if err := e.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, _ := st.Get(context.Background(), j.ID)
		if got.State != job.Succeeded {
			t.Fatalf("%+v", got)
		}
		// No new claim after Stop began.
		if got, _ := st.Get(context.Background(), second.ID); got.State != job.Queued {
			t.Fatalf("second job claimed during shutdown: %s", got.State)
		}
	})
	t.Run("bounded: interrupts stragglers and requeues them", func(t *testing.T) {
		st := openStore(t, t.TempDir())
		started := make(chan struct{})
		e, _ := engine.New(engine.Options{Store: st, TempDir: t.TempDir()})
		e.AddQueue(engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 3, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})})
		e.Start()
		j := submit(t, e, store.NewJob{Queue: "q"})
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := e.Stop(ctx); err == nil {
			t.Fatal("Stop reported a clean shutdown")
		}
		got, _ := st.Get(context.Background(), j.ID)
		if got.State != job.Queued || got.Error == nil || got.Error.Code != job.CodeShutdown {
			t.Fatalf("%+v", got)
		}
	})
}

func TestRetentionPurge(t *testing.T) {
	st := openStore(t, t.TempDir())
	e := start(t, st, engine.Options{PurgeEvery: 10 * time.Millisecond}, engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 1,
		Retention: 300 * time.Millisecond, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error { return nil })})
	j := wait(t, e, submit(t, e, store.NewJob{Queue: "q"}).ID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := st.Get(context.Background(), j.ID)
		if errors.Is(err, store.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not purged: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Eight engines, each with its own store on one SQLite file, run 10,000
// jobs: each exactly once.
func TestEightEnginesShareOneFile(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	dir := t.TempDir()
	const jobs = 10_000
	var runs sync.Map
	var total atomic.Int64
	handler := engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
		c, _ := runs.LoadOrStore(tk.ID(), new(atomic.Int32))
		c.(*atomic.Int32).Add(1)
		total.Add(1)
		return nil
	})
	var engines []*engine.Engine
	for i := range 8 {
		st := openStore(t, dir)
		engines = append(engines, start(t, st, engine.Options{Worker: fmt.Sprintf("node%d", i), Poll: 5 * time.Millisecond},
			engine.Queue{Name: "q", Concurrency: 8, MaxAttempts: 1, Handler: handler}))
	}
	var ids []string
	for b := 0; b < jobs; b += 500 {
		batch := make([]store.NewJob, 500)
		for i := range batch {
			batch[i] = store.NewJob{Queue: "q"}
		}
		out, err := engines[b/500%8].Submit(context.Background(), batch)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range out {
			ids = append(ids, in.Job.ID)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for total.Load() < jobs && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st := engines[0].Store()
	for _, id := range ids {
		j := wait(t, engines[0], id)
		if j.State != job.Succeeded || j.Attempt != 1 {
			t.Fatalf("%+v", j)
		}
		c, ok := runs.Load(id)
		if !ok || c.(*atomic.Int32).Load() != 1 {
			t.Fatalf("job %s ran %v times", id, c)
		}
	}
	if n := total.Load(); n != jobs {
		t.Fatalf("%d runs for %d jobs", n, jobs)
	}
	counts, _ := st.QueueCounts(context.Background())
	if len(counts) != 1 || counts[0].Counts[job.Succeeded] != jobs {
		t.Fatalf("counts %+v", counts)
	}
}

// An attempt still winding down after a cancel must not hide the next
// attempt of the same job from a later cancel.
func TestCancelReachesRetriedAttempt(t *testing.T) {
	ended := make(chan int, 2)
	running := make(chan int, 2)
	e := start(t, openStore(t, t.TempDir()), engine.Options{}, engine.Queue{Name: "q", Concurrency: 2, MaxAttempts: 3,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			running <- tk.Attempt()
			<-ctx.Done()
			if tk.Attempt() == 1 {
				time.Sleep(300 * time.Millisecond) // slow to let go
			}
			ended <- tk.Attempt()
			return ctx.Err()
		})})
	j := submit(t, e, store.NewJob{Queue: "q"})
	<-running
	if _, err := e.Cancel(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Retry(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	<-running         // the new attempt runs while the first is winding down
	if <-ended != 1 { // the first attempt is gone now
		t.Fatal("attempts ended out of order")
	}
	if _, err := e.Cancel(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not reach the second attempt")
	}
}

func TestJobSubscriptionIsOrdered(t *testing.T) {
	h := engine.NewHub()
	sub := h.SubscribeJob("a")
	defer sub.Close()
	for _, v := range []int64{2, 1, 3, 3, 5, 4} {
		h.Publish(engine.Event{JobID: "a", Version: v})
	}
	h.Publish(engine.Event{JobID: "b", Version: 9})
	var got []int64
	for len(sub.C()) > 0 {
		got = append(got, (<-sub.C()).Version)
	}
	if fmt.Sprint(got) != "[2 3 5]" {
		t.Fatalf("delivered %v, want [2 3 5]", got)
	}
}

// A job canceled by another process sharing the store stops here at the
// next lease renewal, for every job running at once.
func TestLeaseLossStopsHandlers(t *testing.T) {
	st := openStore(t, t.TempDir())
	const n = 20
	stopped := make(chan string, n)
	e := start(t, st, engine.Options{Lease: 400 * time.Millisecond}, engine.Queue{Name: "q", Concurrency: n, MaxAttempts: 1,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			<-ctx.Done()
			stopped <- tk.ID()
			return context.Cause(ctx)
		})})
	var ids []string
	for range n {
		ids = append(ids, submit(t, e, store.NewJob{Queue: "q"}).ID)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		awaitState(t, st, id, job.Running, deadline)
		// Straight through the store, as another node would: this engine
		// is not told.
		if _, err := st.Cancel(context.Background(), id, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < n {
		select {
		case id := <-stopped:
			seen[id] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d handlers stopped after their jobs were canceled elsewhere", len(seen), n)
		}
	}
	for _, id := range ids {
		if j, _ := st.Get(context.Background(), id); j.State != job.Canceled {
			t.Fatalf("job %s: %s, want canceled", id, j.State)
		}
	}
}

// prefetched starts an engine with one worker on a queue of quick jobs,
// blocks its worker with a job that waits for gate, and submits five more,
// which the engine claims ahead: they are running in the store, their
// handlers not started.
func prefetched(t *testing.T, opts engine.Options) (st store.Store, e *engine.Engine, ahead []string, started *atomic.Int32, gate chan struct{}) {
	return prefetchedOn(t, openStore(t, t.TempDir()), opts)
}

// prefetchedOn is prefetched on a given store.
func prefetchedOn(t *testing.T, st store.Store, opts engine.Options) (_ store.Store, e *engine.Engine, ahead []string, started *atomic.Int32, gate chan struct{}) {
	gate, blocked := make(chan struct{}), make(chan struct{})
	started = new(atomic.Int32)
	e = start(t, st, opts, engine.Queue{Name: "q", Concurrency: 1, MaxAttempts: 3,
		Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			started.Add(1)
			if tk.Job().Labels["kind"] == "block" {
				close(blocked)
				select {
				case <-gate:
				case <-ctx.Done():
				}
			}
			return nil
		})})
	wait(t, e, submit(t, e, store.NewJob{Queue: "q"}).ID) // the runner learns the jobs are quick
	submit(t, e, store.NewJob{Queue: "q", Labels: map[string]string{"kind": "block"}})
	<-blocked
	for range 5 {
		ahead = append(ahead, submit(t, e, store.NewJob{Queue: "q"}).ID)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ahead {
		awaitState(t, st, id, job.Running, deadline) // claimed ahead
	}
	if n := started.Load(); n != 2 {
		t.Fatalf("%d handlers started, want 2: the buffered jobs must wait for the busy worker", n)
	}
	return st, e, ahead, started, gate
}

// Jobs claimed ahead go back to their queue, their attempt not spent,
// when the queue is paused, and run once it is resumed.
func TestPrefetchReleasedOnPause(t *testing.T) {
	st, e, ahead, started, gate := prefetched(t, engine.Options{})
	if err := e.SetPaused("q", true); err != nil {
		t.Fatal(err)
	}
	for _, id := range ahead {
		j, err := st.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.Queued || j.Attempt != 0 || j.Error == nil || j.Error.Code != job.CodePaused {
			t.Errorf("job %s after pause: %s, attempt %d, error %+v; want queued, attempt 0, paused", id, j.State, j.Attempt, j.Error)
		}
	}
	close(gate)
	time.Sleep(50 * time.Millisecond)
	if n := started.Load(); n != 2 {
		t.Fatalf("%d handlers started while paused, want 2", n)
	}
	if err := e.SetPaused("q", false); err != nil {
		t.Fatal(err)
	}
	for _, id := range ahead {
		if j := wait(t, e, id); j.State != job.Succeeded || j.Attempt != 1 {
			t.Errorf("job %s: %s after %d attempts, want succeeded after 1", id, j.State, j.Attempt)
		}
	}
}

// Quick jobs are claimed ahead of free workers; those still waiting when
// the engine stops go back to their queue without spending an attempt.
func TestPrefetchReleasedAtShutdown(t *testing.T) {
	st, e, ahead, started, _ := prefetched(t, engine.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	e.Stop(ctx)
	for _, id := range ahead {
		j, err := st.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.Queued || j.Attempt != 0 || j.Error == nil || j.Error.Code != job.CodeShutdown {
			t.Errorf("job %s after shutdown: %s, attempt %d, error %+v; want queued, attempt 0, shutdown", id, j.State, j.Attempt, j.Error)
		}
	}
	if n := started.Load(); n != 2 {
		t.Fatalf("%d handlers started, want 2", n)
	}
}

// awaitState polls the store until job id is in state want, failing the
// test at deadline.
func awaitState(t testing.TB, st store.Store, id string, want job.State, deadline time.Time) {
	t.Helper()
	for {
		j, err := st.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s, want %s", id, j.State, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A job claimed ahead and canceled through this node never starts.
func TestPrefetchCanceled(t *testing.T) {
	_, e, ahead, started, gate := prefetched(t, engine.Options{})
	if _, err := e.Cancel(context.Background(), ahead[0]); err != nil {
		t.Fatal(err)
	}
	close(gate)
	for _, id := range ahead[1:] {
		if j := wait(t, e, id); j.State != job.Succeeded {
			t.Errorf("job %s: %s, want succeeded", id, j.State)
		}
	}
	if j := wait(t, e, ahead[0]); j.State != job.Canceled {
		t.Errorf("canceled job: %s", j.State)
	}
	if n := started.Load(); n != 2+4 {
		t.Fatalf("%d handlers started, want 6: the canceled job must not run", n)
	}
}

// notifying is a store whose watcher hears what the test tells it, as a
// node hears the changes other nodes make to a shared store.
type notifying struct {
	store.Store
	watchers chan func(store.Notice)
}

func (s notifying) Watch(ctx context.Context, fn func(store.Notice)) error {
	s.watchers <- fn
	<-ctx.Done()
	return ctx.Err()
}

// A job claimed ahead and canceled through another node leaves the buffer
// when the change is heard, and never starts, also when the change comes
// without its queue (too large for a notification); a late notice of an
// older change of another job claimed ahead leaves that one be.
func TestPrefetchCanceledElsewhere(t *testing.T) {
	ns := notifying{Store: openStore(t, t.TempDir()), watchers: make(chan func(store.Notice), 1)}
	_, e, ahead, started, gate := prefetchedOn(t, ns, engine.Options{})
	notify := <-ns.watchers
	ctx := context.Background()
	canceled, err := ns.Store.Cancel(ctx, ahead[0], time.Hour) // as another node would
	if err != nil {
		t.Fatal(err)
	}
	nameless, err := ns.Store.Cancel(ctx, ahead[2], time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ns.Store.Get(ctx, ahead[1])
	if err != nil {
		t.Fatal(err)
	}
	notify(store.Notice{Changes: []store.Change{
		{JobID: canceled.ID, Queue: canceled.Queue, Version: canceled.Version, State: job.Canceled},
		{JobID: nameless.ID, Version: nameless.Version, State: job.Canceled},
		{JobID: other.ID, Queue: other.Queue, Version: other.Version - 1, State: job.Canceled},
	}})
	close(gate)
	for _, id := range []string{ahead[1], ahead[3], ahead[4]} {
		if j := wait(t, e, id); j.State != job.Succeeded {
			t.Errorf("job %s: %s, want succeeded", id, j.State)
		}
	}
	if n := started.Load(); n != 2+3 {
		t.Fatalf("%d handlers started, want 5: the jobs canceled elsewhere must not run", n)
	}
}

// A job held ahead longer than a third of its lease has its lease renewed
// before it starts; one that is no longer this node's (canceled through
// another node) does not start.
func TestPrefetchHeldLong(t *testing.T) {
	st, e, ahead, started, gate := prefetched(t, engine.Options{Lease: time.Second})
	if _, err := st.Cancel(context.Background(), ahead[0], time.Hour); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // past a third of the lease
	close(gate)
	for _, id := range ahead[1:] {
		if j := wait(t, e, id); j.State != job.Succeeded || j.Attempt != 1 {
			t.Errorf("job %s: %s after %d attempts, want succeeded after 1", id, j.State, j.Attempt)
		}
	}
	if n := started.Load(); n != 2+4 {
		t.Fatalf("%d handlers started, want 6: the job canceled elsewhere must not run", n)
	}
}
