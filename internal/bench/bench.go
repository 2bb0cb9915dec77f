// Package bench measures the engine on a real store, SQLite or PostgreSQL:
// throughput of no-op jobs, end-to-end latency, and memory with many queued
// jobs. The `docket bench` command, the Go benchmarks and the side-by-side
// comparison with River (bench/compare) all run it.
package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/postgres"
	"github.com/docket/docket/internal/store/sqlite"
)

// Options are shared by the measurements.
type Options struct {
	// Store is "sqlite" (or empty) for the embedded store in Dir, or a
	// postgres:// URL. On PostgreSQL every measurement runs in a schema of
	// its own, created empty before it and dropped after it (see
	// NewSchema), so that runs never see each other's jobs and the
	// database is left as it was found; a search_path in the URL is
	// replaced.
	Store   string
	Dir     string      // data directory (a fresh temporary one is best); on PostgreSQL, where spooled files go
	Sync    sqlite.Sync // durability of SQLite commits
	Workers int         // queue concurrency
	Logger  *slog.Logger
}

// IsPostgres reports whether a store setting names a PostgreSQL server.
func IsPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

const queue = "bench"

func noop(context.Context, *engine.Task) error { return nil }

// env is one measurement's store and engine, and the schema they live in
// on PostgreSQL.
type env struct {
	st     store.Store
	e      *engine.Engine
	schema *Schema // nil on SQLite
}

func openStore(ctx context.Context, o Options) (store.Store, *Schema, error) {
	switch {
	case o.Store == "" || o.Store == "sqlite":
		st, err := sqlite.Open(ctx, sqlite.Options{Dir: o.Dir, Sync: o.Sync})
		return st, nil, err
	case IsPostgres(o.Store):
		sc, err := NewSchema(ctx, o.Store, "docket_bench")
		if err != nil {
			return nil, nil, err
		}
		st, err := postgres.Open(ctx, postgres.Options{URL: sc.URL, Log: o.Logger})
		if err != nil {
			return nil, nil, errors.Join(err, sc.Drop(context.WithoutCancel(ctx)))
		}
		return st, sc, nil
	default:
		return nil, nil, fmt.Errorf("bench: store %q: use \"sqlite\" or a postgres:// URL", o.Store)
	}
}

func setup(ctx context.Context, o Options, concurrency int, h engine.HandlerFunc) (*env, error) {
	st, sc, err := openStore(ctx, o)
	if err != nil {
		return nil, err
	}
	en := &env{st: st, schema: sc}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The engine's own defaults otherwise: what a server runs with.
	en.e, err = engine.New(engine.Options{Store: st, Logger: log, TempDir: o.Dir})
	if err == nil {
		err = en.e.AddQueue(engine.Queue{Name: queue, Concurrency: concurrency, MaxAttempts: 1, Handler: h})
	}
	if err != nil {
		return nil, errors.Join(err, en.close())
	}
	return en, nil
}

// close stops the engine, closes the store and drops the schema; it is
// deferred by every measurement, so it is bounded by a context of its own
// rather than the measurement's, which may be done.
func (en *env) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if en.e != nil {
		errs = append(errs, en.e.Stop(ctx))
	}
	errs = append(errs, en.st.Close())
	if en.schema != nil {
		errs = append(errs, en.schema.Drop(ctx))
	}
	return errors.Join(errs...)
}

// Schema is a PostgreSQL schema made for one run.
type Schema struct {
	Name string // prefix_<random>
	URL  string // the server's URL with search_path naming the schema
	base string
}

// NewSchema creates an empty schema named prefix_<random> on the server
// serverURL names and returns it with a URL whose search_path names it.
// The caller drops it with Drop.
func NewSchema(ctx context.Context, serverURL, prefix string) (*Schema, error) {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("bench: %q is not a postgres:// URL", Redact(serverURL))
	}
	sc := &Schema{Name: prefix + "_" + strings.ToLower(rand.Text()[:12]), base: serverURL}
	q := u.Query()
	q.Set("search_path", sc.Name)
	u.RawQuery = q.Encode()
	sc.URL = u.String()
	if err := sc.exec(ctx, "CREATE SCHEMA "+pgx.Identifier{sc.Name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("bench: create schema %s: %w", sc.Name, err)
	}
	return sc, nil
}

// Drop removes the schema and everything in it.
func (sc *Schema) Drop(ctx context.Context) error {
	if err := sc.exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{sc.Name}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("bench: drop schema %s: %w", sc.Name, err)
	}
	return nil
}

// exec runs one statement on a connection of its own, outside any pool
// being measured.
func (sc *Schema) exec(ctx context.Context, sql string) error {
	cfg, err := pgx.ParseConfig(sc.base)
	if err != nil {
		return err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// Redact hides the password of a URL, for printing it.
func Redact(conn string) string {
	if u, err := url.Parse(conn); err == nil {
		return u.Redacted()
	}
	return conn
}

// tally counts the bench queue's jobs that succeed, from the engine's
// events. The hub calls a subscription's filter on the publishing
// goroutine for every event, so counting there misses none, where a
// channel subscription drops its oldest events once its reader falls
// behind; and nothing is asked of the store while it is being measured.
type tally struct {
	sub    *engine.Subscription
	n      atomic.Int64
	target int64
	done   chan struct{}
}

func countSucceeded(e *engine.Engine, target int64) *tally {
	t := &tally{target: target, done: make(chan struct{})}
	t.sub = e.Hub().Subscribe(func(ev engine.Event) bool {
		if ev.Queue == queue && ev.State == job.Succeeded && !ev.Remote && t.n.Add(1) == target {
			close(t.done)
		}
		return false
	})
	return t
}

func (t *tally) close() { t.sub.Close() }

// wait returns once target jobs have succeeded, as the events tell and the
// store confirms.
func (t *tally) wait(ctx context.Context, st store.Store) error {
	select {
	case <-t.done:
	case <-ctx.Done():
		return fmt.Errorf("%d of %d jobs succeeded: %w", t.n.Load(), t.target, ctx.Err())
	}
	return waitSucceeded(ctx, st, t.target)
}

// waitSucceeded polls the queue counts until n jobs have succeeded.
func waitSucceeded(ctx context.Context, st store.Store, n int64) error {
	for {
		counts, err := st.QueueCounts(ctx)
		if err != nil {
			return err
		}
		for _, c := range counts {
			if c.Queue == queue && c.Counts[job.Succeeded] >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func batchOf(n int) []store.NewJob {
	b := make([]store.NewJob, n)
	for i := range b {
		b[i] = store.NewJob{Queue: queue, Input: store.Data{Blob: job.Blob{ContentType: "application/json"}, Bytes: []byte(`{}`)}}
	}
	return b
}

// DrainResult is the outcome of Drain.
type DrainResult struct {
	Jobs           int
	Insert, Drain  time.Duration
	InsertPerSec   float64
	DrainedPerSec  float64
	BatchSize      int
	WorkersRunning int
}

// Drain inserts jobs in batches with no worker running, then starts the
// workers and times until every job has succeeded.
func Drain(ctx context.Context, o Options, jobs, batch int) (_ DrainResult, err error) {
	en, err := setup(ctx, o, o.Workers, noop)
	if err != nil {
		return DrainResult{}, err
	}
	defer func() { err = errors.Join(err, en.close()) }()
	t0 := time.Now()
	for done := 0; done < jobs; done += batch {
		if _, err := en.st.Insert(ctx, batchOf(min(batch, jobs-done))); err != nil {
			return DrainResult{}, err
		}
	}
	ins := time.Since(t0)
	count := countSucceeded(en.e, int64(jobs))
	defer count.close()
	t1 := time.Now()
	if err := en.e.Start(); err != nil {
		return DrainResult{}, err
	}
	if err := count.wait(ctx, en.st); err != nil {
		return DrainResult{}, err
	}
	dr := time.Since(t1)
	return DrainResult{Jobs: jobs, Insert: ins, Drain: dr, InsertPerSec: float64(jobs) / ins.Seconds(),
		DrainedPerSec: float64(jobs) / dr.Seconds(), BatchSize: batch, WorkersRunning: o.Workers}, nil
}

// ConcurrentResult is the outcome of Concurrent.
type ConcurrentResult struct {
	Jobs, Inserters int
	Elapsed         time.Duration
	InsertPerSec    float64 // single inserts, each committed before it returned
	EndToEndPerSec  float64 // jobs inserted and completed
}

// Concurrent inserts jobs one by one from many goroutines while the workers
// run them, and times until all have succeeded.
func Concurrent(ctx context.Context, o Options, jobs, inserters int) (_ ConcurrentResult, err error) {
	en, err := setup(ctx, o, o.Workers, noop)
	if err != nil {
		return ConcurrentResult{}, err
	}
	defer func() { err = errors.Join(err, en.close()) }()
	count := countSucceeded(en.e, int64(jobs))
	defer count.close()
	if err := en.e.Start(); err != nil {
		return ConcurrentResult{}, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, inserters)
	t0 := time.Now()
	for range inserters {
		wg.Go(func() {
			for next.Add(1) <= int64(jobs) {
				out, err := en.e.Submit(ctx, batchOf(1))
				if err == nil {
					err = out[0].Err
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	ins := time.Since(t0)
	select {
	case err := <-errs:
		return ConcurrentResult{}, err
	default:
	}
	if err := count.wait(ctx, en.st); err != nil {
		return ConcurrentResult{}, err
	}
	el := time.Since(t0)
	return ConcurrentResult{Jobs: jobs, Inserters: inserters, Elapsed: el, InsertPerSec: float64(jobs) / ins.Seconds(),
		EndToEndPerSec: float64(jobs) / el.Seconds()}, nil
}

// LatencyResult holds percentiles of the two latencies.
type LatencyResult struct {
	Samples            int
	StartP50, StartP99 time.Duration // insert → handler start
	DoneP50, DoneP99   time.Duration // insert → completion event at a waiting subscriber
}

// LatencyGap is the pause before each latency sample, so that every job
// meets an idle system; LatencyWarmup samples are taken first and not
// counted. bench/compare gives River the same.
const (
	LatencyGap    = 2 * time.Millisecond
	LatencyWarmup = 10
)

// Latency submits jobs one at a time to an idle engine and measures how long
// until the handler starts and until a subscriber waiting on the job sees it
// succeed.
func Latency(ctx context.Context, o Options, samples int) (_ LatencyResult, err error) {
	started := make(chan time.Time, 1)
	en, err := setup(ctx, o, max(o.Workers, 1), func(context.Context, *engine.Task) error {
		started <- time.Now()
		return nil
	})
	if err != nil {
		return LatencyResult{}, err
	}
	defer func() { err = errors.Join(err, en.close()) }()
	if err := en.e.Start(); err != nil {
		return LatencyResult{}, err
	}
	sub := en.e.Hub().Subscribe(func(ev engine.Event) bool { return ev.State == job.Succeeded })
	defer sub.Close()
	var starts, dones []time.Duration
	for i := range samples + LatencyWarmup {
		time.Sleep(LatencyGap)
		t0 := time.Now()
		out, err := en.e.Submit(ctx, batchOf(1))
		if err != nil {
			return LatencyResult{}, err
		}
		var ts time.Time
		select {
		case ts = <-started:
		case <-ctx.Done():
			return LatencyResult{}, fmt.Errorf("sample %d: waiting for the handler: %w", i, ctx.Err())
		}
		var ev engine.Event
		for ev.JobID != out[0].Job.ID {
			select {
			case ev = <-sub.C():
			case <-ctx.Done():
				return LatencyResult{}, fmt.Errorf("sample %d: waiting for the completion event: %w", i, ctx.Err())
			}
		}
		if i < LatencyWarmup {
			continue
		}
		starts = append(starts, ts.Sub(t0))
		dones = append(dones, time.Since(t0))
	}
	slices.Sort(starts)
	slices.Sort(dones)
	return LatencyResult{Samples: samples, StartP50: Percentile(starts, 50), StartP99: Percentile(starts, 99),
		DoneP50: Percentile(dones, 50), DoneP99: Percentile(dones, 99)}, nil
}

// Percentile picks the p-th percentile of sorted durations: the sample at
// index len*p/100, so that p99 of 100 samples is the largest.
func Percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// MemoryResult is the outcome of Memory.
type MemoryResult struct {
	Queued              int
	RSSBefore, RSSAfter int64 // bytes, VmRSS
	PeakRSS             int64 // bytes, VmHWM over the whole process life
	Elapsed             time.Duration
}

// Memory inserts queued jobs into a queue whose workers are running but
// busy elsewhere (the queue is paused), touches the queue the way a server
// does (counts, a claim loop, a Get), and reports the process's RSS.
func Memory(ctx context.Context, o Options, queued, batch int) (_ MemoryResult, err error) {
	en, err := setup(ctx, o, o.Workers, noop)
	if err != nil {
		return MemoryResult{}, err
	}
	defer func() { err = errors.Join(err, en.close()) }()
	if err := en.e.Start(); err != nil {
		return MemoryResult{}, err
	}
	en.e.SetPaused(queue, true)
	runtime.GC()
	before := rss("VmRSS")
	t0 := time.Now()
	var last string
	for done := 0; done < queued; done += batch {
		out, err := en.e.Submit(ctx, batchOf(min(batch, queued-done)))
		if err != nil {
			return MemoryResult{}, err
		}
		last = out[len(out)-1].Job.ID
	}
	if _, err := en.st.QueueCounts(ctx); err != nil {
		return MemoryResult{}, err
	}
	if _, err := en.st.Get(ctx, last); err != nil {
		return MemoryResult{}, err
	}
	if _, err := en.st.List(ctx, store.Filter{Queue: queue, Limit: 100}); err != nil {
		return MemoryResult{}, err
	}
	return MemoryResult{Queued: queued, RSSBefore: before, RSSAfter: rss("VmRSS"), PeakRSS: rss("VmHWM"), Elapsed: time.Since(t0)}, nil
}

// rss reads a memory figure of this process from /proc (Linux), in bytes.
func rss(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// MiB formats bytes as MiB.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
