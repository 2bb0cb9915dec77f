// Command river measures River (github.com/riverqueue/river) on PostgreSQL
// the same way `docket bench` measures docket on SQLite, so that the two can
// be compared side by side: insert → handler start and insert → completion
// event latency on an idle client, and no-op drain throughput.
//
// It lives in its own module so that docket itself does not depend on River
// or pgx.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// schema holds River's tables. It is dropped and migrated afresh for every
// measurement, like the fresh data directory docket's benchmark uses.
const schema = "docket_river_bench"

// fetchCooldown overrides River's minimum time between two fetches of a
// queue. River's default (100 ms) caps a queue at MaxWorkers jobs per 100 ms,
// so this is the one setting worth varying when reading the drain figure.
var fetchCooldown time.Duration

// noopArgs is the no-op job both measurements run.
type noopArgs struct{}

func (noopArgs) Kind() string { return "noop" }

func main() {
	mode := flag.String("mode", "all", "latency, drain or all")
	samples := flag.Int("samples", 300, "latency samples (after 10 warm-up ones)")
	jobs := flag.Int("jobs", 100_000, "jobs for drain")
	dsn := flag.String("dsn", "postgres://postgres@127.0.0.1:5432/test", "PostgreSQL connection string")
	flag.DurationVar(&fetchCooldown, "fetch-cooldown", 0, "River's FetchCooldown (0: River's default, 100ms)")
	flag.Parse()

	// Bound the whole run, so that it always exits by itself.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := run(ctx, *mode, *dsn, *samples, *jobs); err != nil {
		fmt.Fprintln(os.Stderr, "river bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mode, dsn string, samples, jobs int) error {
	ran := false
	if mode == "all" || mode == "drain" {
		ran = true
		if err := drain(ctx, dsn, jobs, 1000, 100); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
	}
	if mode == "all" || mode == "latency" {
		ran = true
		if err := latency(ctx, dsn, samples); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	if !ran {
		return fmt.Errorf("unknown mode %q", mode)
	}
	return nil
}

// setup connects, recreates the schema and runs River's migrations into it.
// The pool is larger than pgx's default (4 on a small machine) because River
// holds one connection for LISTEN and its producer, completer and
// maintenance services use others concurrently.
func setup(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	id := pgx.Identifier{schema}.Sanitize()
	if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+id+" CASCADE; CREATE SCHEMA "+id); err != nil {
		pool.Close()
		return nil, err
	}
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema})
	if err == nil {
		_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return pool, nil
}

// teardown stops the client and drops the schema, leaving the database as
// it was found.
func teardown(pool *pgxpool.Pool, client *river.Client[pgx.Tx]) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if client != nil {
		client.Stop(ctx)
	}
	pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	pool.Close()
}

// newClient builds a client with River's defaults (notably its batched
// completer and, unless -fetch-cooldown is set, its 100 ms fetch cooldown)
// and one queue of the given size.
func newClient(pool *pgxpool.Pool, workers int, work func(context.Context, *river.Job[noopArgs]) error) (*river.Client[pgx.Tx], error) {
	w := river.NewWorkers()
	river.AddWorker(w, river.WorkFunc(work))
	return river.NewClient(riverpgxv5.New(pool), &river.Config{
		Schema:        schema,
		FetchCooldown: fetchCooldown,
		Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers:       w,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

// drain inserts jobs in batches with no client working, then starts a client
// and times until every job is completed. Completions are counted from the
// event stream (with a buffer large enough that none is dropped) rather than
// by polling the table, so that measuring adds no load to the database.
func drain(ctx context.Context, dsn string, jobs, batch, workers int) error {
	pool, err := setup(ctx, dsn)
	if err != nil {
		return err
	}
	client, err := newClient(pool, workers, func(context.Context, *river.Job[noopArgs]) error { return nil })
	if err != nil {
		pool.Close()
		return err
	}
	defer teardown(pool, client)

	// InsertManyFast uses COPY FROM: River's quickest way to insert in bulk.
	params := make([]river.InsertManyParams, batch)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{}}
	}
	t0 := time.Now()
	for done := 0; done < jobs; done += batch {
		if _, err := client.InsertManyFast(ctx, params[:min(batch, jobs-done)]); err != nil {
			return err
		}
	}
	ins := time.Since(t0)

	events, unsubscribe := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: jobs, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	defer unsubscribe()
	t1 := time.Now()
	if err := client.Start(ctx); err != nil {
		return err
	}
	for n := 0; n < jobs; n++ {
		select {
		case <-events:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d completed: %w", n, jobs, ctx.Err())
		}
	}
	dr := time.Since(t1)

	// Cross-check the events against the table.
	var completed int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "river_job"}.Sanitize()+
		" WHERE state = 'completed'").Scan(&completed); err != nil {
		return err
	}
	if completed != jobs {
		return fmt.Errorf("%d completion events but %d completed rows", jobs, completed)
	}
	fmt.Printf("drain: inserted %d jobs in batches of %d: %.0f jobs/s\n", jobs, batch, float64(jobs)/ins.Seconds())
	fmt.Printf("drain: %d no-op jobs with %d workers: %.0f jobs/s\n", jobs, workers, float64(jobs)/dr.Seconds())
	return nil
}

// latency inserts jobs one at a time into an idle client and measures how
// long until the worker starts and until a subscriber sees the job
// completed. River reports completions only once its batch completer has
// written them, so the second figure includes that batching delay.
func latency(ctx context.Context, dsn string, samples int) error {
	pool, err := setup(ctx, dsn)
	if err != nil {
		return err
	}
	started := make(chan time.Time, 1)
	client, err := newClient(pool, 10, func(context.Context, *river.Job[noopArgs]) error {
		started <- time.Now()
		return nil
	})
	if err != nil {
		pool.Close()
		return err
	}
	defer teardown(pool, client)
	events, unsubscribe := client.Subscribe(river.EventKindJobCompleted)
	defer unsubscribe()
	if err := client.Start(ctx); err != nil {
		return err
	}

	var starts, dones []time.Duration
	for i := range samples + 10 {
		time.Sleep(2 * time.Millisecond) // idle between samples, as docket's benchmark does
		t0 := time.Now()
		res, err := client.Insert(ctx, noopArgs{}, nil)
		if err != nil {
			return err
		}
		var ts time.Time
		select {
		case ts = <-started:
		case <-ctx.Done():
			return fmt.Errorf("sample %d: waiting for the handler: %w", i, ctx.Err())
		}
		for done := false; !done; {
			select {
			case ev, ok := <-events:
				if !ok {
					return errors.New("event stream closed")
				}
				done = ev.Job.ID == res.Job.ID
			case <-ctx.Done():
				return fmt.Errorf("sample %d: waiting for the completion event: %w", i, ctx.Err())
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
	fmt.Printf("latency: insert -> handler start: p50 %v, p99 %v (%d samples)\n", pct(starts, 50), pct(starts, 99), samples)
	fmt.Printf("latency: insert -> completion event: p50 %v, p99 %v\n", pct(dones, 50), pct(dones, 99))
	return nil
}

// pct picks a percentile exactly as docket's benchmark does.
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}
