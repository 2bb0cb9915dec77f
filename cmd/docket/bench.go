package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

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
	storeURL := fs.String("store", "sqlite", `"sqlite", or a postgres:// URL: each measurement then runs in a new schema docket_bench_<random>, dropped after it`)
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *storeURL != "sqlite" && !bench.IsPostgres(*storeURL) {
		return fmt.Errorf("bench: store %q: use \"sqlite\" or a postgres:// URL", *storeURL)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("bench: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			if cerr := f.Close(); cerr != nil {
				fmt.Fprintln(stderr, "bench: cpu profile:", cerr)
			}
		}()
	}
	durability := "sync=" + *sync
	if bench.IsPostgres(*storeURL) {
		durability = "postgres"
		fmt.Fprintf(stdout, "store: PostgreSQL at %s, a new schema for each measurement\n", bench.Redact(*storeURL))
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
		return bench.Options{Store: *storeURL, Dir: d, Sync: sqlite.Sync(*sync), Workers: *workers}, cleanup, nil
	}
	// Each measurement runs on a fresh data directory (or schema) of its own.
	measurements := []struct {
		name string
		run  func(bench.Options) error
	}{
		{"drain", func(o bench.Options) error {
			r, err := bench.Drain(ctx, o, *jobs, *batch)
			if err == nil {
				fmt.Fprintf(stdout, "drain: inserted %d jobs in batches of %d: %.0f jobs/s\n", r.Jobs, r.BatchSize, r.InsertPerSec)
				fmt.Fprintf(stdout, "drain: %d no-op jobs with %d workers: %.0f jobs/s\n", r.Jobs, r.WorkersRunning, r.DrainedPerSec)
			}
			return err
		}},
		{"concurrent", func(o bench.Options) error {
			r, err := bench.Concurrent(ctx, o, *jobs, *inserters)
			if err == nil {
				fmt.Fprintf(stdout, "concurrent: %d single inserts from %d goroutines (%s): %.0f jobs/s inserted\n", r.Jobs, r.Inserters, durability, r.InsertPerSec)
				fmt.Fprintf(stdout, "concurrent: inserted and completed with %d workers: %.0f jobs/s end to end\n", *workers, r.EndToEndPerSec)
			}
			return err
		}},
		{"latency", func(o bench.Options) error {
			r, err := bench.Latency(ctx, o, *samples)
			if err == nil {
				fmt.Fprintf(stdout, "latency: insert -> handler start: p50 %v, p99 %v (%d samples)\n", r.StartP50, r.StartP99, r.Samples)
				fmt.Fprintf(stdout, "latency: insert -> completion event: p50 %v, p99 %v\n", r.DoneP50, r.DoneP99)
			}
			return err
		}},
		{"memory", func(o bench.Options) error {
			r, err := bench.Memory(ctx, o, *queued, *batch)
			if err == nil {
				fmt.Fprintf(stdout, "memory: %d queued jobs inserted in %v (%.0f jobs/s): RSS %s before, %s after, peak %s\n",
					r.Queued, r.Elapsed.Round(time.Millisecond), float64(r.Queued)/r.Elapsed.Seconds(),
					bench.MiB(r.RSSBefore), bench.MiB(r.RSSAfter), bench.MiB(r.PeakRSS))
			}
			return err
		}},
	}
	ran := false
	for _, m := range measurements {
		if *mode != "all" && *mode != m.name {
			continue
		}
		ran = true
		o, done, err := fresh()
		if err != nil {
			return err
		}
		err = m.run(o)
		done()
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	if !ran {
		return fmt.Errorf("unknown mode %q", *mode)
	}
	return nil
}
