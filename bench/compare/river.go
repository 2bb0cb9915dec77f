package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/docket/docket/internal/bench"
)

// riverSettings are the knobs River is run with.
type riverSettings struct {
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration
	MaxWorkers        int
	PoolConns         int32
}

func (s riverSettings) String() string {
	return fmt.Sprintf("FetchCooldown %v, FetchPollInterval %v, MaxWorkers %d, pgxpool MaxConns %d",
		s.FetchCooldown, s.FetchPollInterval, s.MaxWorkers, s.PoolConns)
}

// noopArgs is River's no-op job; its arguments encode as {}, the input
// docket's no-op jobs carry.
type noopArgs struct{}

// Kind names the job kind.
func (noopArgs) Kind() string { return "noop" }

// riverEnv is one measurement's schema, pool and client.
type riverEnv struct {
	schema *bench.Schema
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
}

// newRiver creates a schema of its own, migrates River into it and builds
// a client (not started) with one queue running work.
func newRiver(ctx context.Context, serverURL string, s riverSettings, log *slog.Logger,
	work func(context.Context, *river.Job[noopArgs]) error) (_ *riverEnv, err error) {
	sc, err := bench.NewSchema(ctx, serverURL, "docket_river_bench")
	if err != nil {
		return nil, err
	}
	env := &riverEnv{schema: sc}
	defer func() {
		if err != nil {
			err = errors.Join(err, env.close())
		}
	}()
	cfg, err := pgxpool.ParseConfig(sc.URL)
	if err != nil {
		return nil, fmt.Errorf("river: %w", err)
	}
	// River holds one connection for LISTEN; its producer, completer,
	// maintenance services and the inserting goroutines share the rest.
	cfg.MaxConns = s.PoolConns
	if env.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("river: connect: %w", err)
	}
	m, err := rivermigrate.New(riverpgxv5.New(env.pool), &rivermigrate.Config{Schema: sc.Name})
	if err == nil {
		_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("river: migrate: %w", err)
	}
	w := river.NewWorkers()
	river.AddWorker(w, river.WorkFunc(work))
	env.client, err = river.NewClient(riverpgxv5.New(env.pool), &river.Config{
		Schema:            sc.Name,
		FetchCooldown:     s.FetchCooldown,
		FetchPollInterval: s.FetchPollInterval,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: s.MaxWorkers}},
		Workers:           w,
		Logger:            log,
	})
	if err != nil {
		return nil, fmt.Errorf("river: client: %w", err)
	}
	return env, nil
}

// close stops the client, closes the pool and drops the schema, within a
// bound of its own: the measurement's context may be done.
func (env *riverEnv) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if env.client != nil {
		errs = append(errs, env.client.Stop(ctx))
	}
	if env.pool != nil {
		env.pool.Close()
	}
	errs = append(errs, env.schema.Drop(ctx))
	return errors.Join(errs...)
}

// completions subscribes to River's completion events with a buffer of
// one per job, so that none is dropped, and returns a function waiting for
// n of them.
func (env *riverEnv) completions(n int) (wait func(context.Context) error, unsubscribe func()) {
	events, unsubscribe := env.client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: n, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	return func(ctx context.Context) error {
		for i := range n {
			select {
			case _, ok := <-events:
				if !ok {
					return fmt.Errorf("river: event stream closed after %d of %d completions", i, n)
				}
			case <-ctx.Done():
				return fmt.Errorf("river: %d of %d completed: %w", i, n, ctx.Err())
			}
		}
		return nil
	}, unsubscribe
}

// completedRows counts River's completed rows, to check the events.
func (env *riverEnv) completedRows(ctx context.Context) (int, error) {
	var n int
	err := env.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{env.schema.Name, "river_job"}.Sanitize()+
		" WHERE state = 'completed'").Scan(&n)
	return n, err
}

func noopWork(context.Context, *river.Job[noopArgs]) error { return nil }

// riverDrain is bench.Drain on River: jobs inserted in batches (with
// InsertManyFast, COPY FROM: River's quickest bulk insert) while no client
// works, then a client started and timed until every job is completed.
func riverDrain(ctx context.Context, serverURL string, s riverSettings, log *slog.Logger, jobs, batch int) (_ bench.DrainResult, err error) {
	env, err := newRiver(ctx, serverURL, s, log, noopWork)
	if err != nil {
		return bench.DrainResult{}, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	params := make([]river.InsertManyParams, batch)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{}}
	}
	t0 := time.Now()
	for done := 0; done < jobs; done += batch {
		if _, err := env.client.InsertManyFast(ctx, params[:min(batch, jobs-done)]); err != nil {
			return bench.DrainResult{}, fmt.Errorf("river: insert: %w", err)
		}
	}
	ins := time.Since(t0)
	wait, unsubscribe := env.completions(jobs)
	defer unsubscribe()
	t1 := time.Now()
	if err := env.client.Start(ctx); err != nil {
		return bench.DrainResult{}, fmt.Errorf("river: start: %w", err)
	}
	if err := wait(ctx); err != nil {
		return bench.DrainResult{}, err
	}
	dr := time.Since(t1)
	if n, err := env.completedRows(ctx); err != nil || n != jobs {
		return bench.DrainResult{}, fmt.Errorf("river: %d completion events but %d completed rows (%v)", jobs, n, err)
	}
	return bench.DrainResult{Jobs: jobs, Insert: ins, Drain: dr, InsertPerSec: float64(jobs) / ins.Seconds(),
		DrainedPerSec: float64(jobs) / dr.Seconds(), BatchSize: batch, WorkersRunning: s.MaxWorkers}, nil
}

// riverConcurrent is bench.Concurrent on River: single inserts from many
// goroutines (client.Insert, each committed before it returns) while the
// client works, timed until all are completed.
func riverConcurrent(ctx context.Context, serverURL string, s riverSettings, log *slog.Logger, jobs, inserters int) (_ bench.ConcurrentResult, err error) {
	env, err := newRiver(ctx, serverURL, s, log, noopWork)
	if err != nil {
		return bench.ConcurrentResult{}, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	wait, unsubscribe := env.completions(jobs)
	defer unsubscribe()
	if err := env.client.Start(ctx); err != nil {
		return bench.ConcurrentResult{}, fmt.Errorf("river: start: %w", err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, inserters)
	t0 := time.Now()
	for range inserters {
		wg.Go(func() {
			for next.Add(1) <= int64(jobs) {
				if _, err := env.client.Insert(ctx, noopArgs{}, nil); err != nil {
					errs <- fmt.Errorf("river: insert: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	ins := time.Since(t0)
	select {
	case err := <-errs:
		return bench.ConcurrentResult{}, err
	default:
	}
	if err := wait(ctx); err != nil {
		return bench.ConcurrentResult{}, err
	}
	el := time.Since(t0)
	if n, err := env.completedRows(ctx); err != nil || n != jobs {
		return bench.ConcurrentResult{}, fmt.Errorf("river: %d completion events but %d completed rows (%v)", jobs, n, err)
	}
	return bench.ConcurrentResult{Jobs: jobs, Inserters: inserters, Elapsed: el, InsertPerSec: float64(jobs) / ins.Seconds(),
		EndToEndPerSec: float64(jobs) / el.Seconds()}, nil
}

// riverLatency is bench.Latency on River: one job at a time into an idle
// client, timed to the start of its worker and to its completion event at
// a Subscribe(EventKindJobCompleted) subscriber.
func riverLatency(ctx context.Context, serverURL string, s riverSettings, log *slog.Logger, samples int) (_ bench.LatencyResult, err error) {
	started := make(chan time.Time, 1)
	env, err := newRiver(ctx, serverURL, s, log, func(context.Context, *river.Job[noopArgs]) error {
		started <- time.Now()
		return nil
	})
	if err != nil {
		return bench.LatencyResult{}, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	events, unsubscribe := env.client.Subscribe(river.EventKindJobCompleted)
	defer unsubscribe()
	if err := env.client.Start(ctx); err != nil {
		return bench.LatencyResult{}, fmt.Errorf("river: start: %w", err)
	}
	var starts, dones []time.Duration
	for i := range samples + bench.LatencyWarmup {
		time.Sleep(bench.LatencyGap)
		t0 := time.Now()
		res, err := env.client.Insert(ctx, noopArgs{}, nil)
		if err != nil {
			return bench.LatencyResult{}, fmt.Errorf("river: insert: %w", err)
		}
		var ts time.Time
		select {
		case ts = <-started:
		case <-ctx.Done():
			return bench.LatencyResult{}, fmt.Errorf("river: sample %d: waiting for the worker: %w", i, ctx.Err())
		}
		for done := false; !done; {
			select {
			case ev, ok := <-events:
				if !ok {
					return bench.LatencyResult{}, errors.New("river: event stream closed")
				}
				done = ev.Job.ID == res.Job.ID
			case <-ctx.Done():
				return bench.LatencyResult{}, fmt.Errorf("river: sample %d: waiting for the completion event: %w", i, ctx.Err())
			}
		}
		if i < bench.LatencyWarmup {
			continue
		}
		starts = append(starts, ts.Sub(t0))
		dones = append(dones, time.Since(t0))
	}
	slices.Sort(starts)
	slices.Sort(dones)
	return bench.LatencyResult{Samples: samples, StartP50: bench.Percentile(starts, 50), StartP99: bench.Percentile(starts, 99),
		DoneP50: bench.Percentile(dones, 50), DoneP99: bench.Percentile(dones, 99)}, nil
}
