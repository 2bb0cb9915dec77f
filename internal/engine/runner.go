package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// runner is one queue's claim loop and worker pool on this node.
type runner struct {
	e *Engine
	q Queue

	wakeC  chan struct{} // a job may be runnable now
	freedC chan struct{} // a worker slot became free

	mu       sync.Mutex
	active   int        // jobs running
	reserved int        // slots held by claims in flight
	buffer   []*job.Job // claimed ahead, waiting for a worker (see prefetch)
	closed   bool       // the loop has ended: buffered jobs no longer start
	paused   bool
	// runAvg is a moving average of the handlers' run time, once sampled.
	runAvg  time.Duration
	sampled bool
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
	var held []*job.Job
	if paused {
		// Jobs claimed ahead have not started: a paused queue starts
		// none, so they go back.
		held, r.buffer = r.buffer, nil
	}
	r.mu.Unlock()
	r.giveBack(held, job.Error{Message: "claimed ahead and given back when its queue was paused", Code: job.CodePaused})
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
	// returns, so that the engine's shutdown waits for them; the jobs
	// claimed ahead and not started go back to the queue.
	defer func() {
		claims.Wait()
		r.release()
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	inflight := 0
	// idle: the last claim found fewer due jobs than it asked for (or
	// failed); the loop claims again when woken or after wait.
	idle, wait := false, time.Duration(0)
	for {
		r.mu.Lock()
		room := r.q.Concurrency + r.prefetch()
		free, paused := room-r.active-len(r.buffer)-r.reserved, r.paused
		// A second claim must be worth its round trip: it waits for half
		// the room, as gather does for the first.
		want := 1
		if inflight > 0 {
			want = max(1, room/2)
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

// claim claims up to limit jobs, whose room the loop reserved, and starts
// as many as there are free workers; the others wait in the buffer.
func (r *runner) claim(ctx context.Context, limit int) claimResult {
	jobs, err := r.e.store.Claim(ctx, store.Claim{Queue: r.q.Name, Limit: limit, Worker: r.e.opts.Worker, Lease: r.e.opts.Lease})
	// The jobs take their room before the reservation is given back, so
	// that the pool is never over-claimed in between.
	r.mu.Lock()
	if r.paused {
		// Paused while the claim was in flight: its jobs go back
		// unstarted.
		r.reserved -= limit
		r.mu.Unlock()
		r.giveBack(jobs, job.Error{Message: "claimed while its queue was being paused, given back", Code: job.CodePaused})
		return claimResult{asked: limit, got: len(jobs), err: err}
	}
	n := 0
	for _, j := range jobs {
		if r.active < r.q.Concurrency && len(r.buffer) == 0 {
			r.active++
			jobs[n] = j
			n++
		} else {
			r.buffer = append(r.buffer, j)
		}
	}
	r.reserved -= limit
	r.mu.Unlock()
	for _, j := range jobs[:n] {
		r.start(j)
	}
	return claimResult{asked: limit, got: len(jobs), err: err}
}

// Prefetch. A claim is a store round trip and a commit whatever its size,
// so a pool of quick jobs that claims only for its free workers spends
// more on claims than on jobs. A runner therefore claims ahead: jobs beyond
// its free workers wait in its buffer, already running as far as the store
// is concerned (leased to this node), and start as workers free up. It
// claims only as many ahead as its workers are expected to start within
// prefetchWait, judged by the handlers' average run time, so that quick
// jobs are claimed in large batches while slow ones, which other nodes
// could start sooner, are not held here: with 100 workers, a queue of
// one-second jobs holds two ahead, one of one-minute jobs none.
// Queue.Prefetch bounds the number; by default a runner holds at most
// prefetchPools times its concurrency ahead, the most that still paid on
// PostgreSQL (docs/BENCHMARKS.md: batches of no-op jobs drained 15% faster
// at six pools than at three, no faster at ten).
const (
	prefetchWait  = 20 * time.Millisecond
	prefetchPools = 6
)

// prefetch is how many jobs may wait in the buffer; r.mu is held.
func (r *runner) prefetch() int {
	limit := r.q.Prefetch
	if limit == 0 {
		limit = prefetchPools * r.q.Concurrency
	}
	if limit < 0 || !r.sampled {
		return 0
	}
	n := int64(r.q.Concurrency) * int64(prefetchWait) / int64(max(r.runAvg, time.Microsecond))
	return int(min(n, int64(limit)))
}

// ran records a handler's run time in the moving average.
func (r *runner) ran(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.sampled {
		r.runAvg, r.sampled = d, true
		return
	}
	r.runAvg += (d - r.runAvg) / 8
}

// next takes a job's worker slot back once its handler has returned: it
// goes to the next buffered job, if any, which is returned to be started.
func (r *runner) next() *job.Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer signal(r.freedC)
	if len(r.buffer) > 0 && !r.closed {
		j := r.buffer[0]
		r.buffer[0] = nil
		r.buffer = r.buffer[1:]
		return j
	}
	r.active--
	return nil
}

// release puts the buffered jobs back in their queue once the loop has
// ended, without spending an attempt: they never started.
func (r *runner) release() {
	r.mu.Lock()
	r.closed = true
	jobs := r.buffer
	r.buffer = nil
	r.mu.Unlock()
	r.giveBack(jobs, job.Error{Message: "claimed ahead and not started before shutdown", Code: job.CodeShutdown})
}

// unbuffer drops job id from the buffer, if it waits there at a version
// below newer (0: at any version), and reports whether it did. The job is
// no longer this node's to run: canceled or deleted.
func (r *runner) unbuffer(id string, newer int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, j := range r.buffer {
		if j.ID == id {
			if newer > 0 && j.Version >= newer {
				return false
			}
			r.buffer = append(r.buffer[:i], r.buffer[i+1:]...)
			return true
		}
	}
	return false
}

// giveBack releases jobs claimed ahead, which never started, to their queue.
func (r *runner) giveBack(jobs []*job.Job, why job.Error) {
	ctx := context.WithoutCancel(r.e.loops)
	for _, j := range jobs {
		rj, err := r.e.store.Release(ctx, j.ID, j.LeaseToken, why)
		if err != nil {
			if !errors.Is(err, store.ErrLeaseLost) && !errors.Is(err, store.ErrNotFound) {
				r.e.log.Error("release unstarted job", "job", j.ID, "err", err)
			}
			continue
		}
		r.e.publish(rj)
	}
}

// gather waits a moment, after a slot of a saturated pool freed, for more
// slots to free, so that one claim fills many: completions are committed in
// batches, and claiming one job per freed slot would cost a store round trip
// per job. The wait ends as soon as half the pool is free, and never lasts
// more than gatherWait, which is little next to a job's own run time.
func (r *runner) gather(ctx context.Context) {
	deadline := time.Now().Add(gatherWait)
	for {
		r.mu.Lock()
		room := r.q.Concurrency + r.prefetch()
		free, want := room-r.active-len(r.buffer)-r.reserved, max(1, room/2)
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
