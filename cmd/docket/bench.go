package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/docket/docket/internal/bench"
	"github.com/docket/docket/internal/store/sqlite"
)

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "all", "drain, concurrent, latency, memory or all")
	jobs := fs.Int("jobs", 100_000, "jobs for drain and concurrent")
	batch := fs.Int("batch", 1000, "insert batch size for drain and memory")
	workers := fs.Int("workers", 100, "queue concurrency")
	inserters := fs.Int("inserters", 50, "goroutines inserting one job at a time (concurrent)")
	samples := fs.Int("samples", 1000, "latency samples")
	queued := fs.Int("queued", 1_000_000, "queued jobs for memory")
	sync := fs.String("sqlite-sync", "normal", `"normal" or "full"`)
	dir := fs.String("dir", "", "data directory (default: a new temporary one, removed after)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fresh := func() (bench.Options, func(), error) {
		d := *dir
		cleanup := func() {}
		if d == "" {
			t, err := os.MkdirTemp("", "docket-bench-")
			if err != nil {
				return bench.Options{}, nil, err
			}
			d, cleanup = t, func() { os.RemoveAll(t) }
		}
		return bench.Options{Dir: d, Sync: sqlite.Sync(*sync), Workers: *workers}, cleanup, nil
	}
	all := *mode == "all"
	ran := false
	if all || *mode == "drain" {
		ran = true
		o, done, err := fresh()
		if err != nil {
			return err
		}
		r, err := bench.Drain(ctx, o, *jobs, *batch)
		done()
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		fmt.Fprintf(stdout, "drain: inserted %d jobs in batches of %d: %.0f jobs/s\n", r.Jobs, r.BatchSize, r.InsertPerSec)
		fmt.Fprintf(stdout, "drain: %d no-op jobs with %d workers: %.0f jobs/s\n", r.Jobs, r.WorkersRunning, r.DrainedPerSec)
	}
	if all || *mode == "concurrent" {
		ran = true
		o, done, err := fresh()
		if err != nil {
			return err
		}
		r, err := bench.Concurrent(ctx, o, *jobs, *inserters)
		done()
		if err != nil {
			return fmt.Errorf("concurrent: %w", err)
		}
		fmt.Fprintf(stdout, "concurrent: %d single inserts from %d goroutines (sync=%s): %.0f jobs/s inserted\n", r.Jobs, r.Inserters, *sync, r.InsertPerSec)
		fmt.Fprintf(stdout, "concurrent: inserted and completed with %d workers: %.0f jobs/s end to end\n", *workers, r.EndToEndPerSec)
	}
	if all || *mode == "latency" {
		ran = true
		o, done, err := fresh()
		if err != nil {
			return err
		}
		r, err := bench.Latency(ctx, o, *samples)
		done()
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		fmt.Fprintf(stdout, "latency: insert -> handler start: p50 %v, p99 %v (%d samples)\n", r.StartP50, r.StartP99, r.Samples)
		fmt.Fprintf(stdout, "latency: insert -> completion event: p50 %v, p99 %v\n", r.DoneP50, r.DoneP99)
	}
	if all || *mode == "memory" {
		ran = true
		o, done, err := fresh()
		if err != nil {
			return err
		}
		r, err := bench.Memory(ctx, o, *queued, *batch)
		done()
		if err != nil {
			return fmt.Errorf("memory: %w", err)
		}
		fmt.Fprintf(stdout, "memory: %d queued jobs inserted in %v (%.0f jobs/s): RSS %s before, %s after, peak %s\n",
			r.Queued, r.Elapsed.Round(1e6), float64(r.Queued)/r.Elapsed.Seconds(), bench.MiB(r.RSSBefore), bench.MiB(r.RSSAfter), bench.MiB(r.PeakRSS))
	}
	if !ran {
		return fmt.Errorf("unknown mode %q", *mode)
	}
	return nil
}
