// Package engine runs jobs: per-queue worker pools that claim from the
// store, leases kept alive by heartbeats, retries with backoff, a rescuer
// for jobs whose worker died, retention purges, progress coalescing, and
// the in-process event hub every change is published on.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/metrics"
	"github.com/docket/docket/internal/store"
)

// Handler runs one job. Returning nil succeeds it; an error fails the
// attempt (retried while attempts remain, unless wrapped with Permanent).
type Handler interface {
	Run(ctx context.Context, t *Task) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, t *Task) error

// Run calls f.
func (f HandlerFunc) Run(ctx context.Context, t *Task) error { return f(ctx, t) }

// Queue is a queue's settings on this node.
type Queue struct {
	Name string
	// Concurrency is the number of jobs this node runs at once; 0 means
	// none (the queue is served by remote workers).
	Concurrency int
	MaxQueued   int
	Timeout     time.Duration // per attempt; 0: none
	MaxAttempts int
	Retention   time.Duration
	Handler     Handler
	Paused      bool
	// Prefetch bounds the jobs claimed ahead of free workers, which the
	// engine does only for jobs quick enough that they are expected to
	// start within 20ms (see the runner); 0 means six times Concurrency,
	// a negative value none.
	Prefetch int
}

// Options configure an Engine. Zero values take the documented defaults.
type Options struct {
	Store  store.Store
	Hub    *Hub // default: a new hub
	Logger *slog.Logger
	// Worker names this node in leases (default: host name and pid).
	Worker string
	// Lease is how long a claimed job stays ours without a heartbeat
	// (default 30s); heartbeats come every Lease/3.
	Lease time.Duration
	// Poll is the safety-net claim interval, for jobs inserted by other
	// processes; inserts through this engine wake the queue at once
	// (default 1s).
	Poll time.Duration
	// RescueEvery is how often expired leases are looked for (default
	// Lease/2).
	RescueEvery time.Duration
	// PurgeEvery is how often expired finished jobs are purged (default 1m).
	PurgeEvery time.Duration
	// ProgressEvery is the least time between two stored progress reports
	// of one job (default 250ms); reports in between are coalesced.
	ProgressEvery time.Duration
	// BackoffBase and BackoffMax bound the retry delay (default 1s, 10m).
	BackoffBase, BackoffMax time.Duration
	// TempDir receives spooled artifacts; it should be on the store's file
	// system so that handing files over is a rename (default os.TempDir).
	TempDir string
	// Metrics receives the jobs' counts and timings; nil keeps none.
	Metrics *metrics.Metrics
}

func (o *Options) defaults() {
	if o.Hub == nil {
		o.Hub = NewHub()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Worker == "" {
		host, _ := os.Hostname()
		o.Worker = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.RescueEvery <= 0 {
		o.RescueEvery = o.Lease / 2
	}
	if o.PurgeEvery <= 0 {
		o.PurgeEvery = time.Minute
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 250 * time.Millisecond
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 10 * time.Minute
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
}

// Engine runs the queues of one node.
type Engine struct {
	opts  Options
	store store.Store
	hub   *Hub
	log   *slog.Logger

	mu      sync.Mutex
	queues  map[string]*runner
	started bool

	// loops is canceled to stop claiming; work is canceled to interrupt
	// running handlers once the shutdown grace period is over.
	loops      context.Context
	stopLoops  context.CancelFunc
	work       context.Context
	stopWork   context.CancelFunc
	loopsWG    sync.WaitGroup
	jobsWG     sync.WaitGroup
	stopOnce   sync.Once
	running    sync.Map // job id → *Task
	background sync.WaitGroup
}

// ErrUnknownQueue is returned for a queue that was never declared.
var ErrUnknownQueue = errors.New("unknown queue")

// New returns an engine; declare queues with AddQueue, then Start it.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, errors.New("engine: no store")
	}
	opts.defaults()
	e := &Engine{opts: opts, store: opts.Store, hub: opts.Hub, log: opts.Logger, queues: map[string]*runner{}}
	e.loops, e.stopLoops = context.WithCancel(context.Background())
	e.work, e.stopWork = context.WithCancel(context.Background())
	return e, nil
}

// Hub returns the engine's event hub.
func (e *Engine) Hub() *Hub { return e.hub }

// Store returns the engine's store.
func (e *Engine) Store() store.Store { return e.store }

// AddQueue declares a queue, or replaces its settings before Start.
func (e *Engine) AddQueue(q Queue) error {
	if q.Name == "" {
		return errors.New("engine: queue without a name")
	}
	if q.Concurrency < 0 || q.MaxQueued < 0 || q.Timeout < 0 || q.Retention < 0 {
		return fmt.Errorf("engine: queue %s: negative setting", q.Name)
	}
	if q.MaxAttempts < 1 {
		q.MaxAttempts = 1
	}
	if q.Retention == 0 {
		q.Retention = 24 * time.Hour
	}
	if q.Concurrency > 0 && q.Handler == nil {
		return fmt.Errorf("engine: queue %s: concurrency %d but no handler", q.Name, q.Concurrency)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		if _, ok := e.queues[q.Name]; ok {
			return fmt.Errorf("engine: queue %s: already running", q.Name)
		}
	}
	r := newRunner(e, q)
	e.queues[q.Name] = r
	if e.started {
		e.startRunner(r)
	}
	return nil
}

// Queue returns a queue's settings.
func (e *Engine) Queue(name string) (Queue, bool) {
	r := e.runner(name)
	if r == nil {
		return Queue{}, false
	}
	return r.q, true
}

// Queues lists the declared queue names.
func (e *Engine) Queues() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.queues))
	for n := range e.queues {
		out = append(out, n)
	}
	return out
}

func (e *Engine) runner(name string) *runner {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.queues[name]
}

// Start launches the claim loops, the rescuer and the purger.
func (e *Engine) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("engine: already started")
	}
	e.started = true
	for _, r := range e.queues {
		e.startRunner(r)
	}
	e.background.Add(3)
	// Leases are renewed until the last handler has finished, which may
	// be after the claim loops stopped.
	go e.heartbeats(e.work)
	go e.every(e.opts.RescueEvery, e.rescue)
	if w, ok := e.store.(store.Watcher); ok {
		e.background.Add(1)
		go e.watch(e.loops, w)
	}
	go e.every(e.opts.PurgeEvery, e.purge)
	return nil
}

func (e *Engine) startRunner(r *runner) {
	if r.q.Concurrency == 0 {
		return
	}
	e.loopsWG.Add(1)
	go func() {
		defer e.loopsWG.Done()
		r.loop(e.loops)
	}()
}

// Stop shuts the engine down gracefully: it stops claiming, waits for the
// running handlers until ctx is done, then cancels the ones still running
// and waits for them to record their outcome. The store is left open.
func (e *Engine) Stop(ctx context.Context) error {
	var err error
	e.stopOnce.Do(func() {
		e.stopLoops()
		e.loopsWG.Wait()
		done := make(chan struct{})
		go func() {
			e.jobsWG.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("engine: shutdown: handlers still running, canceled: %w", ctx.Err())
			e.stopWork()
			select {
			case <-done:
			case <-time.After(hardStop):
				// A handler ignores its context; leave it rather than hang.
				// Its job's lease runs out and the rescuer takes it back.
				err = fmt.Errorf("engine: shutdown: handlers ignored cancellation for %s: %w", hardStop, ctx.Err())
			}
		}
		e.stopWork()
		e.background.Wait()
	})
	return err
}

// hardStop bounds the wait for canceled handlers at shutdown.
const hardStop = 10 * time.Second

// every runs fn now and then every d until the engine stops: a restarted
// node rescues the jobs its previous life left behind at once.
func (e *Engine) every(d time.Duration, fn func(context.Context)) {
	defer e.background.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	fn(e.loops)
	for {
		select {
		case <-e.loops.Done():
			return
		case <-t.C:
			fn(e.loops)
		}
	}
}

func (e *Engine) backoff(attempt int) time.Duration {
	return job.Backoff(attempt, e.opts.BackoffBase, e.opts.BackoffMax)
}

func (e *Engine) retention(queue string) time.Duration {
	if r := e.runner(queue); r != nil {
		return r.q.Retention
	}
	return 24 * time.Hour
}

// SetMetrics makes the engine report to m; call it before Start.
func (e *Engine) SetMetrics(m *metrics.Metrics) { e.opts.Metrics = m }

// traceID is the trace id of the job's "traceparent" label (the W3C trace
// context of the request that submitted it), for its log lines.
func traceID(j *job.Job) string {
	if tp := j.Labels["traceparent"]; len(tp) == 55 {
		return tp[3:35]
	}
	return ""
}

// Traceparent is the W3C trace context the job's submitter sent, or "":
// handlers pass it on to the services they call.
func (t *Task) Traceparent() string { return t.job.Labels["traceparent"] }

func (e *Engine) publish(j *job.Job) {
	e.hub.Publish(EventOf(j))
}

func (e *Engine) rescue(ctx context.Context) {
	if !e.leads(ctx) {
		return
	}
	jobs, err := e.store.Rescue(ctx, time.Now(), e.backoff, e.retention)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("rescue expired leases", "err", err)
		}
		return
	}
	for _, j := range jobs {
		e.log.Warn("job lease expired", "job", j.ID, "queue", j.Queue, "attempt", j.Attempt, "state", j.State, "trace_id", traceID(j))
		e.opts.Metrics.Rescued(j.Queue)
		e.opts.Metrics.Changed(j)
		e.publish(j)
		if r := e.runner(j.Queue); r != nil {
			r.wake()
		}
	}
}

func (e *Engine) purge(ctx context.Context) {
	if !e.leads(ctx) {
		return
	}
	for {
		n, err := e.store.Purge(ctx, time.Now(), 1000)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("purge expired jobs", "err", err)
			}
			return
		}
		if n > 0 {
			e.log.Debug("purged expired jobs", "count", n)
		}
		if n < 1000 {
			return
		}
	}
}

// Submit inserts jobs, filling in their queue's defaults, and wakes the
// queues. A job for an undeclared queue is refused with ErrUnknownQueue.
func (e *Engine) Submit(ctx context.Context, jobs []store.NewJob) ([]store.Inserted, error) {
	for i := range jobs {
		r := e.runner(jobs[i].Queue)
		if r == nil {
			return nil, fmt.Errorf("engine: submit: %w: %q", ErrUnknownQueue, jobs[i].Queue)
		}
		if jobs[i].MaxAttempts <= 0 {
			jobs[i].MaxAttempts = r.q.MaxAttempts
		}
		if jobs[i].MaxQueued == 0 {
			jobs[i].MaxQueued = r.q.MaxQueued
		}
	}
	out, err := e.store.Insert(ctx, jobs)
	if err != nil {
		return nil, err
	}
	woken := map[string]bool{}
	for _, in := range out {
		if in.Job == nil || in.Existing {
			continue
		}
		e.opts.Metrics.Submitted(in.Job.Queue)
		e.publish(in.Job)
		if !woken[in.Job.Queue] {
			woken[in.Job.Queue] = true
			e.runner(in.Job.Queue).wake()
		}
	}
	return out, nil
}

// Cancel cancels a job; a running one here has its handler's context
// canceled at once (other nodes notice at their next heartbeat).
func (e *Engine) Cancel(ctx context.Context, id string) (*job.Job, error) {
	j, err := e.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	j, err = e.store.Cancel(ctx, id, e.retention(j.Queue))
	if err != nil {
		return nil, err
	}
	e.interrupt(id, errCanceled)
	e.opts.Metrics.Changed(j)
	e.publish(j)
	return j, nil
}

// Retry requeues a failed or canceled job.
func (e *Engine) Retry(ctx context.Context, id string) (*job.Job, error) {
	j, err := e.store.Retry(ctx, id)
	if err != nil {
		return nil, err
	}
	e.publish(j)
	if r := e.runner(j.Queue); r != nil {
		r.wake()
	}
	return j, nil
}

// Delete removes a job and its data; a running one here is interrupted.
func (e *Engine) Delete(ctx context.Context, id string) (*job.Job, error) {
	j, err := e.store.Delete(ctx, id)
	if err != nil {
		return nil, err
	}
	e.interrupt(id, errDeleted)
	ev := EventOf(j)
	ev.Deleted = true
	e.hub.Publish(ev)
	return j, nil
}

func (e *Engine) interrupt(id string, cause error) {
	if t, ok := e.running.Load(id); ok {
		t.(*Task).cancel(cause)
		return
	}
	e.unbuffer(id, 0)
}

// unbuffer drops a job claimed ahead and not started from whichever
// runner's buffer holds it at a version below newer (0: any): it was
// canceled or deleted, through this node or another (see stopLost).
func (e *Engine) unbuffer(id string, newer int64) {
	e.mu.Lock()
	runners := make([]*runner, 0, len(e.queues))
	for _, r := range e.queues {
		runners = append(runners, r)
	}
	e.mu.Unlock()
	for _, r := range runners {
		if r.unbuffer(id, newer) {
			return
		}
	}
}

// Wait blocks until the job is finished (or deleted) or ctx is done, and
// returns it as last seen.
func (e *Engine) Wait(ctx context.Context, id string) (*job.Job, error) {
	sub := e.hub.SubscribeJob(id)
	defer sub.Close()
	j, err := e.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	// Events come from this process only; another process sharing the
	// store may finish the job, so the store is read again now and then.
	recheck := time.NewTicker(e.opts.Poll)
	defer recheck.Stop()
	for !j.State.Terminal() {
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-recheck.C:
			cur, err := e.store.Get(ctx, id)
			if err != nil {
				return j, err
			}
			if cur.Version > j.Version {
				j = cur
			}
		case ev := <-sub.C():
			if ev.Deleted {
				return ev.Job, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
			}
			if ev.Version > j.Version {
				j = ev.Job
			}
		}
	}
	return j, nil
}
