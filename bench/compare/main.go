// Command compare measures docket and River (github.com/riverqueue/river)
// side by side on the same PostgreSQL server, in one process and one run:
//
//   - drain: N no-op jobs inserted in batches while nobody works, then the
//     workers started and timed until all are complete;
//   - concurrent: goroutines inserting single jobs in a loop while the
//     workers run them, timed until all are complete (inserted/s and
//     completed/s, end to end);
//   - latency: one job at a time into an idle system, insert → handler
//     start and insert → completion seen by a waiter.
//
// The systems alternate (docket, River, then River, docket in the next
// round, and so on), so that whatever else the machine does hits both
// alike, and the median of the rounds is reported per system. Every
// measurement runs in a schema of its own, dropped after it. docket's
// measurements are those of `docket bench` (internal/bench); River's mirror
// them step for step.
//
// It is a module of its own so that docket does not depend on River; it
// may import docket's internal packages because its path lies under
// docket's module path.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/docket/docket/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	url                 string
	rounds              int
	systems, workloads  []string
	jobs, batch         int
	concJobs, inserters int
	workers, samples    int
	river               riverSettings
	polls               []time.Duration // FetchPollInterval candidates
	tuneJobs            int
	checkpoint          bool
	timeout             time.Duration
	cpuprofile          string
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL server (each measurement creates and drops a schema of its own there)")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds; each runs every workload on every system, the systems in turn")
	systems := fs.String("systems", "docket,river", "systems to measure")
	workloads := fs.String("workloads", "drain,concurrent,latency", "workloads to run")
	fs.IntVar(&c.jobs, "jobs", 50_000, "drain: jobs inserted before the workers start")
	fs.IntVar(&c.batch, "batch", 1000, "drain: insert batch size")
	fs.IntVar(&c.concJobs, "concurrent-jobs", 50_000, "concurrent: jobs inserted one at a time while the workers run")
	fs.IntVar(&c.inserters, "inserters", 50, "concurrent: inserting goroutines")
	fs.IntVar(&c.workers, "workers", 100, "workers of both systems (docket queue concurrency, River MaxWorkers)")
	fs.IntVar(&c.samples, "samples", 200, "latency: samples per round, after warm-up ones")
	fs.DurationVar(&c.river.FetchCooldown, "river-fetch-cooldown", time.Millisecond, "River's FetchCooldown (River's default is 100ms, its minimum 1ms)")
	polls := fs.String("river-poll", "1ms,10ms,50ms,1s", "River's FetchPollInterval; with several, each is tried on short drain and concurrent runs first and the best is used")
	pool := fs.Int("river-pool", 20, "River's pgxpool MaxConns (docket's store pool is 20 by default)")
	fs.IntVar(&c.tuneJobs, "tune-jobs", 20_000, "jobs of each try of a FetchPollInterval candidate")
	fs.BoolVar(&c.checkpoint, "checkpoint", true, "CHECKPOINT before every measurement, so that none pays for the previous one's dirty pages (needs superuser or pg_checkpoint)")
	fs.DurationVar(&c.timeout, "timeout", 45*time.Minute, "bound on the whole run")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the run to this file (with -systems docket, docket's alone)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.river.MaxWorkers = c.workers
	c.river.PoolConns = int32(*pool)
	c.systems = strings.Split(*systems, ",")
	c.workloads = strings.Split(*workloads, ",")
	for _, s := range c.systems {
		if s != "docket" && s != "river" {
			return c, fmt.Errorf("unknown system %q", s)
		}
	}
	for _, w := range c.workloads {
		if w != "drain" && w != "concurrent" && w != "latency" {
			return c, fmt.Errorf("unknown workload %q", w)
		}
	}
	for p := range strings.SplitSeq(*polls, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return c, fmt.Errorf("-river-poll: %w", err)
		}
		c.polls = append(c.polls, d)
	}
	if c.rounds < 1 || c.jobs < 1 || c.batch < 1 || c.concJobs < 1 || c.inserters < 1 || c.workers < 1 || c.samples < 1 || *pool < 2 {
		return c, errors.New("-rounds, -jobs, -batch, -concurrent-jobs, -inserters, -workers and -samples must be at least 1, -river-pool at least 2")
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if c.cpuprofile != "" {
		f, err := os.Create(c.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				fmt.Fprintln(stderr, "compare: cpu profile:", err)
			}
		}()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := &measurer{c: c, log: log, out: stdout}

	version, err := serverVersion(ctx, c.url)
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", bench.Redact(c.url), err)
	}
	fmt.Fprintf(stdout, "docket and River on PostgreSQL: %s, %s, GOMAXPROCS %d, load average %s\n",
		time.Now().UTC().Format(time.RFC3339), runtime.Version(), runtime.GOMAXPROCS(0), loadavg())
	fmt.Fprintf(stdout, "server: %s (%s)\n", bench.Redact(c.url), version)
	fmt.Fprintf(stdout, "workloads: drain %d jobs (batches of %d); concurrent %d jobs from %d goroutines; latency %d samples (+%d warm-up, %v apart); %d workers; %d rounds\n",
		c.jobs, c.batch, c.concJobs, c.inserters, c.samples, bench.LatencyWarmup, bench.LatencyGap, c.workers, c.rounds)
	fmt.Fprintf(stdout, "docket: engine.Options and postgres.Options at their defaults (only Store and Logger set); queue concurrency %d, MaxAttempts 1\n", c.workers)

	if slices.Contains(c.systems, "river") {
		if err := m.tune(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "river: v0.51.1, riverpgxv5; %v; other settings at River's defaults\n", m.c.river)
	}
	fmt.Fprintln(stdout)

	res := results{}
	for r := range c.rounds {
		order := slices.Clone(c.systems)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, w := range c.workloads {
			for _, s := range order {
				vals, err := m.measure(ctx, fmt.Sprintf("round %d", r+1), s, w, m.c.river)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", r+1, w, s, err)
				}
				res.add(s, vals)
			}
		}
	}
	fmt.Fprintln(stdout)
	res.table(stdout, c)
	fmt.Fprintf(stdout, "\nload average at the end: %s\n", loadavg())
	return nil
}

// measurer runs one measurement at a time and reports it as it ends.
type measurer struct {
	c       config
	log     *slog.Logger
	out     io.Writer
	noCheck bool // CHECKPOINT refused: not tried again
}

// measure runs one workload on one system and returns its figures.
func (m *measurer) measure(ctx context.Context, label, system, workload string, rs riverSettings) (map[string]float64, error) {
	m.settle(ctx)
	c := m.c
	o := bench.Options{Store: c.url, Workers: c.workers, Logger: m.log}
	u := startUsage()
	var vals map[string]float64
	var line string
	switch workload {
	case "drain":
		var r bench.DrainResult
		var err error
		if system == "docket" {
			r, err = bench.Drain(ctx, o, c.jobs, c.batch)
		} else {
			r, err = riverDrain(ctx, c.url, rs, m.log, c.jobs, c.batch)
		}
		if err != nil {
			return nil, err
		}
		vals = map[string]float64{"insert": r.InsertPerSec, "drain": r.DrainedPerSec}
		line = fmt.Sprintf("inserted %.0f jobs/s, drained %.0f jobs/s (%v)", r.InsertPerSec, r.DrainedPerSec, r.Drain.Round(time.Millisecond))
	case "concurrent":
		var r bench.ConcurrentResult
		var err error
		if system == "docket" {
			r, err = bench.Concurrent(ctx, o, c.concJobs, c.inserters)
		} else {
			r, err = riverConcurrent(ctx, c.url, rs, m.log, c.concJobs, c.inserters)
		}
		if err != nil {
			return nil, err
		}
		vals = map[string]float64{"inserted": r.InsertPerSec, "completed": r.EndToEndPerSec}
		line = fmt.Sprintf("inserted %.0f jobs/s, completed %.0f jobs/s end to end (%v)", r.InsertPerSec, r.EndToEndPerSec, r.Elapsed.Round(time.Millisecond))
	case "latency":
		var r bench.LatencyResult
		var err error
		if system == "docket" {
			r, err = bench.Latency(ctx, o, c.samples)
		} else {
			r, err = riverLatency(ctx, c.url, rs, m.log, c.samples)
		}
		if err != nil {
			return nil, err
		}
		vals = map[string]float64{"start50": ms(r.StartP50), "start99": ms(r.StartP99), "done50": ms(r.DoneP50), "done99": ms(r.DoneP99)}
		line = fmt.Sprintf("insert → start p50 %v p99 %v; insert → completion seen p50 %v p99 %v",
			r.StartP50.Round(time.Microsecond), r.StartP99.Round(time.Microsecond), r.DoneP50.Round(time.Microsecond), r.DoneP99.Round(time.Microsecond))
	}
	fmt.Fprintf(m.out, "%s %-10s %-6s %s [%s]\n", label, workload, system, line, u.end())
	return vals, nil
}

// settle leaves each measurement the same start: no garbage of the
// previous one left to collect in this process, no dirty pages of it left
// for the server to write.
func (m *measurer) settle(ctx context.Context) {
	runtime.GC()
	if !m.c.checkpoint || m.noCheck {
		return
	}
	if err := execOn(ctx, m.c.url, "CHECKPOINT"); err != nil {
		fmt.Fprintf(m.out, "note: CHECKPOINT refused (%v); measurements go on without it\n", err)
		m.noCheck = true
	}
}

// tune tries each FetchPollInterval candidate on a short drain and a
// short concurrent run, and keeps the one with the best geometric mean of
// the two throughputs: River is measured at its best.
func (m *measurer) tune(ctx context.Context) error {
	if len(m.c.polls) == 1 {
		m.c.river.FetchPollInterval = m.c.polls[0]
		return nil
	}
	fmt.Fprintf(m.out, "river: trying FetchPollInterval %v (drain and concurrent, %d jobs each)\n", m.c.polls, m.c.tuneJobs)
	short := *m
	short.c.jobs, short.c.concJobs = m.c.tuneJobs, m.c.tuneJobs
	best, bestScore := time.Duration(0), -1.0
	for _, p := range m.c.polls {
		if p < m.c.river.FetchCooldown {
			fmt.Fprintf(m.out, "river: FetchPollInterval %v skipped: River refuses one below FetchCooldown (%v)\n", p, m.c.river.FetchCooldown)
			continue
		}
		rs := m.c.river
		rs.FetchPollInterval = p
		d, err := short.measure(ctx, "tune "+p.String(), "river", "drain", rs)
		if err != nil {
			return fmt.Errorf("tune FetchPollInterval %v: %w", p, err)
		}
		cc, err := short.measure(ctx, "tune "+p.String(), "river", "concurrent", rs)
		if err != nil {
			return fmt.Errorf("tune FetchPollInterval %v: %w", p, err)
		}
		if score := math.Sqrt(d["drain"] * cc["completed"]); score > bestScore {
			best, bestScore = p, score
		}
	}
	if bestScore < 0 {
		return errors.New("no FetchPollInterval candidate to try")
	}
	m.c.river.FetchPollInterval = best
	fmt.Fprintf(m.out, "river: FetchPollInterval %v did best (geometric mean of drain and concurrent end-to-end jobs/s: %.0f)\n", best, bestScore)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// usage measures the CPU this process and the whole machine use during a
// measurement, to tell a run that other work disturbed.
type usage struct {
	wall       time.Time
	self       time.Duration
	busy, all  uint64
	statFailed bool
}

func startUsage() usage {
	u := usage{wall: time.Now(), self: selfCPU()}
	u.busy, u.all, u.statFailed = machineCPU()
	return u
}

func (u usage) end() string {
	wall := time.Since(u.wall)
	self := selfCPU() - u.self
	s := fmt.Sprintf("this process %.0f%% of a core", 100*self.Seconds()/wall.Seconds())
	busy, all, failed := machineCPU()
	if !u.statFailed && !failed && all > u.all {
		s += fmt.Sprintf(", machine %.0f%% of %d cores busy", float64(runtime.NumCPU())*100*float64(busy-u.busy)/float64(all-u.all), runtime.NumCPU())
	}
	return s
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU reads the busy and total jiffies of all CPUs from /proc/stat.
func machineCPU() (busy, all uint64, failed bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, true
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, true
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		all += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, all, false
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// execOn runs one statement on a connection of its own.
func execOn(ctx context.Context, url, sql string) error {
	conn, err := connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

func serverVersion(ctx context.Context, url string) (string, error) {
	conn, err := connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var v string
	err = conn.QueryRow(ctx, "SHOW server_version").Scan(&v)
	return "PostgreSQL " + v, err
}

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	return pgx.ConnectConfig(ctx, cfg)
}
