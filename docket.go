// Package docket runs slow work as durable asynchronous jobs: submit work,
// get a job id at once, watch its progress, and fetch its result later.
//
// Jobs are stored in an embedded SQLite database (one file in the data
// directory) and run on bounded per-queue worker pools, by Go handlers
// registered with Handle or by external commands declared in the Config.
//
//	d, _ := docket.Open(ctx, docket.Config{DataDir: "./data"})
//	d.Handle("thumbs", docket.HandlerFunc(func(ctx context.Context, j *docket.Job) error {
//		j.Progress(1, 2, "resizing")
//		j.SetResult("image/png", png)
//		return nil
//	}))
//	d.Start()
//	info, _ := d.Submit(ctx, "thumbs", input, docket.SubmitOptions{})
package docket

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/exec"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/postgres"
	"github.com/docket/docket/internal/store/sqlite"
)

// Config configures a Docket. The zero value is usable: SQLite in
// ./docket-data with no queues.
type Config struct {
	// DataDir holds the database, stored files and temporary files.
	DataDir string
	// Store is "sqlite" (the default, one file in DataDir) or a
	// postgres:// URL, for many processes on many machines sharing one
	// database. DataDir then only holds temporary files.
	Store string
	// SQLiteSync is "normal" (the default: a commit survives a crash of
	// the process) or "full" (it also survives a power loss, at the cost
	// of an fsync per commit).
	SQLiteSync string
	// Queues declared up front; Handle and AddQueue add more.
	Queues map[string]Queue
	// Logger receives operational logs (default slog.Default()).
	Logger *slog.Logger
	// Lease is how long a running job stays claimed without a heartbeat
	// before another worker may take it over (default 30s).
	Lease time.Duration
	// Poll is the safety-net interval at which queues look for jobs
	// inserted by other processes (default 1s); jobs submitted through this
	// Docket start at once.
	Poll time.Duration
	// ShutdownGrace bounds how long Close waits for running handlers
	// before canceling them (default 30s).
	ShutdownGrace time.Duration
}

// Queue configures one queue.
type Queue struct {
	// Concurrency is how many jobs of the queue this process runs at once.
	// 0 runs none here: the queue only stores jobs for other workers.
	Concurrency int
	// MaxQueued refuses submits (ErrQueueFull) when this many jobs wait;
	// 0 means no limit.
	MaxQueued int
	// Timeout bounds each attempt; 0 means none.
	Timeout time.Duration
	// MaxAttempts is the number of tries before a job fails (default 3).
	MaxAttempts int
	// Retention is how long finished jobs are kept (default 24h).
	Retention time.Duration
	// Command, if set, runs each job as this external program (see
	// package documentation of the command executor in the README);
	// "{input}" and "{output}" are replaced by the input file and the
	// artifact folder.
	Command []string
	// ResultType is the content type of a command's result; empty sniffs.
	ResultType string
	// Prefetch bounds the jobs claimed ahead of free workers, which is
	// done only for jobs quick enough to start within 20ms; 0 means six
	// times Concurrency, a negative value none.
	Prefetch int
}

// DefaultQueue is the queue Handle declares when none was configured.
var DefaultQueue = Queue{Concurrency: 1, MaxAttempts: 3, Retention: 24 * time.Hour}

// Handler runs jobs, like http.Handler serves requests. Returning nil
// succeeds the job; an error fails the attempt, which is retried with
// backoff while attempts remain (see Permanent). The context is canceled
// when the job is canceled, times out, or the server shuts down.
type Handler interface {
	Run(ctx context.Context, j *Job) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, j *Job) error

// Run calls f.
func (f HandlerFunc) Run(ctx context.Context, j *Job) error { return f(ctx, j) }

// Permanent marks err as not worth retrying: the job fails at once.
func Permanent(err error) error { return engine.Permanent(err) }

// Errors returned by Docket methods.
var (
	ErrNotFound     = store.ErrNotFound
	ErrQueueFull    = store.ErrQueueFull
	ErrState        = store.ErrState
	ErrUnknownQueue = engine.ErrUnknownQueue
)

// Docket is an open job server: a store and the engine running its queues.
type Docket struct {
	cfg     Config
	store   store.Store
	engine  *engine.Engine
	tmp     string
	mu      sync.Mutex
	queues  map[string]Queue
	started bool
}

// Open opens the store and declares the configured queues. Handlers are
// registered with Handle; nothing runs before Start.
func Open(ctx context.Context, cfg Config) (*Docket, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "./docket-data"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	var st store.Store
	switch cfg.Store {
	case "", "sqlite":
		s, err := sqlite.Open(ctx, sqlite.Options{Dir: cfg.DataDir, Sync: sqlite.Sync(cfg.SQLiteSync)})
		if err != nil {
			return nil, fmt.Errorf("docket: %w", err)
		}
		st = s
	default:
		if !strings.HasPrefix(cfg.Store, "postgres://") && !strings.HasPrefix(cfg.Store, "postgresql://") {
			return nil, fmt.Errorf("docket: store %q is not supported: use \"sqlite\" or a postgres:// URL", cfg.Store)
		}
		s, err := postgres.Open(ctx, postgres.Options{URL: cfg.Store})
		if err != nil {
			return nil, fmt.Errorf("docket: %w", err)
		}
		st = s
	}
	tmp := filepath.Join(cfg.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		st.Close()
		return nil, fmt.Errorf("docket: %w", err)
	}
	e, err := engine.New(engine.Options{Store: st, Logger: cfg.Logger, Lease: cfg.Lease, Poll: cfg.Poll, TempDir: tmp})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("docket: %w", err)
	}
	d := &Docket{cfg: cfg, store: st, engine: e, tmp: tmp, queues: map[string]Queue{}}
	for name, q := range cfg.Queues {
		if err := d.AddQueue(name, q); err != nil {
			st.Close()
			return nil, err
		}
	}
	return d, nil
}

// AddQueue declares (or redeclares, before Start) a queue. A queue with a
// Command runs it; others need a Handle to run jobs here.
func (d *Docket) AddQueue(name string, q Queue) error {
	if q.MaxAttempts == 0 {
		q.MaxAttempts = DefaultQueue.MaxAttempts
	}
	if q.Retention == 0 {
		q.Retention = DefaultQueue.Retention
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queues[name] = q
	var h engine.Handler
	if len(q.Command) > 0 {
		cmd := &exec.Command{Argv: q.Command, ResultType: q.ResultType, Dir: d.tmp}
		h = engine.HandlerFunc(func(ctx context.Context, t *engine.Task) error { return cmd.Run(ctx, t) })
	} else if old, ok := d.engine.Queue(name); ok {
		h = old.Handler
	}
	conc := q.Concurrency
	if h == nil {
		conc = 0 // nothing to run it with here yet
	}
	if err := d.engine.AddQueue(engine.Queue{Name: name, Concurrency: conc, MaxQueued: q.MaxQueued, Timeout: q.Timeout,
		MaxAttempts: q.MaxAttempts, Retention: q.Retention, Prefetch: q.Prefetch, Handler: h}); err != nil {
		return fmt.Errorf("docket: %w", err)
	}
	return nil
}

// Handle registers the handler of a queue, declaring the queue with
// DefaultQueue settings if it was not. Like http.Handle it panics on
// misuse: an empty name, a nil handler, or a call after Start.
func (d *Docket) Handle(queue string, h Handler) {
	if queue == "" || h == nil {
		panic("docket: Handle needs a queue name and a handler")
	}
	d.mu.Lock()
	q, ok := d.queues[queue]
	started := d.started
	d.mu.Unlock()
	if started {
		panic("docket: Handle after Start")
	}
	if !ok {
		q = DefaultQueue
	}
	if q.Concurrency == 0 {
		q.Concurrency = 1
	}
	err := d.engine.AddQueue(engine.Queue{Name: queue, Concurrency: q.Concurrency, MaxQueued: q.MaxQueued,
		Timeout: q.Timeout, MaxAttempts: max(q.MaxAttempts, 1), Retention: q.Retention, Prefetch: q.Prefetch,
		Handler: engine.HandlerFunc(func(ctx context.Context, t *engine.Task) error { return h.Run(ctx, &Job{t: t}) })})
	if err != nil {
		panic(err)
	}
	d.mu.Lock()
	d.queues[queue] = q
	d.mu.Unlock()
}

// Start begins running jobs.
func (d *Docket) Start() error {
	d.mu.Lock()
	d.started = true
	d.mu.Unlock()
	return d.engine.Start()
}

// Close shuts down gracefully: no new job is claimed, running handlers get
// until ctx is done (or ShutdownGrace) to finish, the rest are canceled and
// requeued, and the store is closed.
func (d *Docket) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ShutdownGrace)
	defer cancel()
	return errors.Join(d.engine.Stop(ctx), d.store.Close())
}

// Engine gives other docket packages (the HTTP API) the engine.
func (d *Docket) Engine() *engine.Engine { return d.engine }

// SubmitOptions are the optional settings of a job.
type SubmitOptions struct {
	ContentType    string // of the input; default application/octet-stream
	Filename       string // of the input, if it was a file
	Owner          string // tenant; jobs of other owners are not found by the API
	Priority       int    // higher first
	Delay          time.Duration
	RunAt          time.Time // not before; overrides Delay
	Timeout        time.Duration
	MaxAttempts    int
	IdempotencyKey string // a second submit with the same key (and owner) returns the first job
	Unique         bool   // a job with the same input in the queue, not failed or canceled, is returned instead
	Labels         map[string]string
}

// Submit creates a job with input as its input and returns it at once.
func (d *Docket) Submit(ctx context.Context, queue string, input []byte, o SubmitOptions) (*JobInfo, error) {
	ct := o.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	sum := sha256.Sum256(input)
	runAt := o.RunAt
	if runAt.IsZero() && o.Delay > 0 {
		runAt = time.Now().Add(o.Delay)
	}
	out, err := d.engine.Submit(ctx, []store.NewJob{{Queue: queue, Owner: o.Owner,
		Input:       store.Data{Blob: job.Blob{Name: o.Filename, ContentType: ct}, Bytes: input},
		InputDigest: hex.EncodeToString(sum[:]), Unique: o.Unique, MaxAttempts: o.MaxAttempts, Priority: o.Priority,
		RunAt: runAt, Timeout: o.Timeout, IdempotencyKey: o.IdempotencyKey, Labels: o.Labels}})
	if err != nil {
		return nil, fmt.Errorf("docket: submit: %w", err)
	}
	if out[0].Err != nil {
		return nil, fmt.Errorf("docket: submit: %w", out[0].Err)
	}
	return infoOf(out[0].Job), nil
}

// Get returns a job.
func (d *Docket) Get(ctx context.Context, id string) (*JobInfo, error) {
	j, err := d.store.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("docket: %w", err)
	}
	return infoOf(j), nil
}

// Wait blocks until the job has finished or ctx is done, and returns it.
func (d *Docket) Wait(ctx context.Context, id string) (*JobInfo, error) {
	j, err := d.engine.Wait(ctx, id)
	if err != nil {
		return infoOf(j), fmt.Errorf("docket: wait: %w", err)
	}
	return infoOf(j), nil
}

// Result opens a succeeded job's result and gives its content type.
func (d *Docket) Result(ctx context.Context, id string) (string, io.ReadCloser, error) {
	b, rc, err := d.store.OpenResult(ctx, id)
	if err != nil {
		return "", nil, fmt.Errorf("docket: result: %w", err)
	}
	return b.ContentType, rc, nil
}

// Artifacts lists a job's artifacts, by name.
func (d *Docket) Artifacts(ctx context.Context, id string) ([]Blob, error) {
	list, err := d.store.Artifacts(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("docket: artifacts: %w", err)
	}
	return list, nil
}

// Artifact opens one artifact of a job.
func (d *Docket) Artifact(ctx context.Context, id, name string) (string, io.ReadCloser, error) {
	b, rc, err := d.store.OpenArtifact(ctx, id, name)
	if err != nil {
		return "", nil, fmt.Errorf("docket: artifact: %w", err)
	}
	return b.ContentType, rc, nil
}

// Cancel cancels a queued or running job.
func (d *Docket) Cancel(ctx context.Context, id string) (*JobInfo, error) {
	j, err := d.engine.Cancel(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("docket: cancel: %w", err)
	}
	return infoOf(j), nil
}

// Retry requeues a failed or canceled job.
func (d *Docket) Retry(ctx context.Context, id string) (*JobInfo, error) {
	j, err := d.engine.Retry(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("docket: retry: %w", err)
	}
	return infoOf(j), nil
}

// Delete removes a job, its input, result and artifacts.
func (d *Docket) Delete(ctx context.Context, id string) error {
	if _, err := d.engine.Delete(ctx, id); err != nil {
		return fmt.Errorf("docket: delete: %w", err)
	}
	return nil
}
