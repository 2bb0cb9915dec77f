package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/docket/docket/internal/store"
)

// runner is one queue's claim loop and worker pool on this node.
type runner struct {
	e *Engine
	q Queue

	wakeC  chan struct{} // a job may be runnable now
	freedC chan struct{} // a worker slot became free

	mu       sync.Mutex
	active   int // jobs running
	reserved int // slots held by claims in flight
	paused   bool
}

func newRunner(e *Engine, q Queue) *runner {
	return &runner{e: e, q: q, paused: q.Paused, wakeC: make(chan struct{}, 1), freedC: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (r *runner) wake() { signal(r.wakeC) }

// SetPaused pauses or resumes claiming for a queue on this node.
func (e *Engine) SetPaused(queue string, paused bool) error {
	r := e.runner(queue)
	if r == nil {
		return ErrUnknownQueue
	}
	r.mu.Lock()
	r.paused = paused
	r.mu.Unlock()
	r.wake()
	return nil
}

// Paused reports whether a queue is paused on this node.
func (e *Engine) Paused(queue string) bool {
	r := e.runner(queue)
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.paused
}

// maxClaims is how many claims of one queue may be in flight at once. A
// claim is a store round trip and a commit; with one at a time, a pool of
// quick jobs spends its time waiting for claims while the store sits idle
// between them. A second claim, made while the first is still being
// written, keeps both busy; SKIP LOCKED keeps the two from taking the same
// jobs.
const maxClaims = 2

// claimResult is what a claim in flight brought back.
type claimResult struct {
	asked int
	got   int
	err   error
}

// loop claims as many jobs as there are free workers, starts them, and
// sleeps until a job may be runnable (an insert here, a delayed job coming
// due, the poll interval for other nodes' inserts) or a slot frees up. A
// claim runs in its own goroutine, owned by the loop, so that a second one
// can start while the first is in flight (see maxClaims).
func (r *runner) loop(ctx context.Context) {
	log := r.e.log.With("queue", r.q.Name)
	results := make(chan claimResult, maxClaims)
	var claims sync.WaitGroup
	// The jobs of a claim in flight are started by it, before the loop
	// returns, so that the engine's shutdown waits for them.
	defer claims.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	inflight := 0
	// idle: the last claim found fewer due jobs than it asked for (or
	// failed); the loop claims again when woken or after wait.
	idle, wait := false, time.Duration(0)
	for {
		r.mu.Lock()
		free, paused := r.q.Concurrency-r.active-r.reserved, r.paused
		// A second claim must be worth its round trip: it waits for half
		// the pool, as gather does for the first.
		want := 1
		if inflight > 0 {
			want = max(1, r.q.Concurrency/2)
		}
		start := !paused && !idle && inflight < maxClaims && free >= want
		if start {
			r.reserved += free
		}
		r.mu.Unlock()
		if start {
			inflight++
			claims.Go(func() { results <- r.claim(ctx, free) })
			continue
		}

		var due <-chan time.Time
		if idle && inflight == 0 && !paused {
			timer.Reset(wait)
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case res := <-results:
			inflight--
			switch {
			case res.err != nil:
				if ctx.Err() != nil {
					return
				}
				log.Error("claim", "err", res.err)
				idle, wait = true, time.Second
			case res.got < res.asked:
				idle, wait = true, r.e.opts.Poll
				if next, err := r.e.store.NextRunAt(ctx, r.q.Name); err == nil && !next.IsZero() {
					wait = min(wait, time.Until(next))
				}
				if wait <= 0 {
					idle = false
				}
			default:
				idle = false
			}
		case <-r.freedC:
			if inflight == 0 && !idle {
				// A saturated pool: let more slots free up, so that
				// one claim fills many.
				r.gather(ctx)
			}
		case <-r.wakeC:
			idle = false
		case <-due:
			idle = false
		}
	}
}

// claim claims up to limit jobs, whose slots the loop reserved, and starts
// them.
func (r *runner) claim(ctx context.Context, limit int) claimResult {
	jobs, err := r.e.store.Claim(ctx, store.Claim{Queue: r.q.Name, Limit: limit, Worker: r.e.opts.Worker, Lease: r.e.opts.Lease})
	// Each job counts as active before its reservation is given back, so
	// that the pool is never over-claimed in between.
	for _, j := range jobs {
		r.start(j)
	}
	r.mu.Lock()
	r.reserved -= limit
	r.mu.Unlock()
	return claimResult{asked: limit, got: len(jobs), err: err}
}

// gather waits a moment, after a slot of a saturated pool freed, for more
// slots to free, so that one claim fills many: completions are committed in
// batches, and claiming one job per freed slot would cost a store round trip
// per job. The wait ends as soon as half the pool is free, and never lasts
// more than gatherWait, which is little next to a job's own run time.
func (r *runner) gather(ctx context.Context) {
	want := max(1, r.q.Concurrency/2)
	deadline := time.Now().Add(gatherWait)
	for {
		r.mu.Lock()
		free := r.q.Concurrency - r.active - r.reserved
		r.mu.Unlock()
		left := time.Until(deadline)
		if free >= want || left <= 0 {
			return
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.freedC:
			t.Stop()
		case <-t.C:
			return
		}
	}
}

const gatherWait = 500 * time.Microsecond

var (
	errCanceled  = errors.New("job canceled")
	errDeleted   = errors.New("job deleted")
	errLeaseLost = errors.New("lease lost")
	errTimeout   = errors.New("job timeout")
)
