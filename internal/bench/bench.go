// Package bench measures the engine on the real SQLite store: throughput of
// no-op jobs, end-to-end latency, and memory with many queued jobs. The
// `docket bench` command and the Go benchmarks both run it.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/sqlite"
)

// Options are shared by the measurements.
type Options struct {
	Dir     string      // data directory (a fresh temporary one is best)
	Sync    sqlite.Sync // durability of commits
	Workers int         // queue concurrency
	Logger  *slog.Logger
}

const queue = "bench"

func noop(context.Context, *engine.Task) error { return nil }

func setup(ctx context.Context, o Options, concurrency int, h engine.HandlerFunc) (*sqlite.Store, *engine.Engine, error) {
	st, err := sqlite.Open(ctx, sqlite.Options{Dir: o.Dir, Sync: o.Sync})
	if err != nil {
		return nil, nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e, err := engine.New(engine.Options{Store: st, Logger: log, TempDir: o.Dir})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	if err := e.AddQueue(engine.Queue{Name: queue, Concurrency: concurrency, MaxAttempts: 1, Handler: h}); err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, e, nil
}

func teardown(st *sqlite.Store, e *engine.Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.Stop(ctx)
	st.Close()
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
func Drain(ctx context.Context, o Options, jobs, batch int) (DrainResult, error) {
	st, e, err := setup(ctx, o, o.Workers, noop)
	if err != nil {
		return DrainResult{}, err
	}
	defer teardown(st, e)
	t0 := time.Now()
	for done := 0; done < jobs; done += batch {
		if _, err := st.Insert(ctx, batchOf(min(batch, jobs-done))); err != nil {
			return DrainResult{}, err
		}
	}
	ins := time.Since(t0)
	t1 := time.Now()
	if err := e.Start(); err != nil {
		return DrainResult{}, err
	}
	if err := waitSucceeded(ctx, st, int64(jobs)); err != nil {
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
func Concurrent(ctx context.Context, o Options, jobs, inserters int) (ConcurrentResult, error) {
	st, e, err := setup(ctx, o, o.Workers, noop)
	if err != nil {
		return ConcurrentResult{}, err
	}
	defer teardown(st, e)
	if err := e.Start(); err != nil {
		return ConcurrentResult{}, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, inserters)
	t0 := time.Now()
	for range inserters {
		wg.Go(func() {
			for next.Add(1) <= int64(jobs) {
				out, err := e.Submit(ctx, batchOf(1))
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
	if err := waitSucceeded(ctx, st, int64(jobs)); err != nil {
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

// Latency submits jobs one at a time to an idle engine and measures how long
// until the handler starts and until a subscriber waiting on the job sees it
// succeed.
func Latency(ctx context.Context, o Options, samples int) (LatencyResult, error) {
	started := make(chan time.Time, 1)
	st, e, err := setup(ctx, o, max(o.Workers, 1), func(context.Context, *engine.Task) error {
		started <- time.Now()
		return nil
	})
	if err != nil {
		return LatencyResult{}, err
	}
	defer teardown(st, e)
	if err := e.Start(); err != nil {
		return LatencyResult{}, err
	}
	sub := e.Hub().Subscribe(func(ev engine.Event) bool { return ev.State == job.Succeeded })
	defer sub.Close()
	var starts, dones []time.Duration
	for i := range samples + 10 {
		time.Sleep(2 * time.Millisecond) // idle between samples
		t0 := time.Now()
		out, err := e.Submit(ctx, batchOf(1))
		if err != nil {
			return LatencyResult{}, err
		}
		ts := <-started
		var ev engine.Event
		for ev.JobID != out[0].Job.ID {
			select {
			case ev = <-sub.C():
			case <-ctx.Done():
				return LatencyResult{}, ctx.Err()
			}
		}
		if i < 10 {
			continue // warm-up
		}
		starts = append(starts, ts.Sub(t0))
		dones = append(dones, time.Since(t0))
	}
	slices.Sort(starts)
	slices.Sort(dones)
	return LatencyResult{Samples: samples, StartP50: pct(starts, 50), StartP99: pct(starts, 99),
		DoneP50: pct(dones, 50), DoneP99: pct(dones, 99)}, nil
}

func pct(sorted []time.Duration, p int) time.Duration {
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
func Memory(ctx context.Context, o Options, queued, batch int) (MemoryResult, error) {
	st, e, err := setup(ctx, o, o.Workers, noop)
	if err != nil {
		return MemoryResult{}, err
	}
	defer teardown(st, e)
	if err := e.Start(); err != nil {
		return MemoryResult{}, err
	}
	e.SetPaused(queue, true)
	runtime.GC()
	before := rss("VmRSS")
	t0 := time.Now()
	var last string
	for done := 0; done < queued; done += batch {
		out, err := e.Submit(ctx, batchOf(min(batch, queued-done)))
		if err != nil {
			return MemoryResult{}, err
		}
		last = out[len(out)-1].Job.ID
	}
	if _, err := st.QueueCounts(ctx); err != nil {
		return MemoryResult{}, err
	}
	if _, err := st.Get(ctx, last); err != nil {
		return MemoryResult{}, err
	}
	if _, err := st.List(ctx, store.Filter{Queue: queue, Limit: 100}); err != nil {
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
