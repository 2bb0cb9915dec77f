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

	mu     sync.Mutex
	active int
	paused bool
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

// loop claims as many jobs as there are free workers, starts them, and
// sleeps until a job may be runnable (an insert here, a delayed job coming
// due, the poll interval for other nodes' inserts) or a slot frees up.
func (r *runner) loop(ctx context.Context) {
	log := r.e.log.With("queue", r.q.Name)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		r.mu.Lock()
		free, paused := r.q.Concurrency-r.active, r.paused
		r.mu.Unlock()

		wait := r.e.opts.Poll
		full := false
		switch {
		case paused:
		case free <= 0:
			full = true
		default:
			jobs, err := r.e.store.Claim(ctx, store.Claim{Queue: r.q.Name, Limit: free, Worker: r.e.opts.Worker, Lease: r.e.opts.Lease})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Error("claim", "err", err)
				wait = time.Second
				break
			}
			for _, j := range jobs {
				r.start(j)
			}
			if len(jobs) == free {
				full = true
				break
			}
			if next, err := r.e.store.NextRunAt(ctx, r.q.Name); err == nil && !next.IsZero() {
				wait = min(wait, time.Until(next))
			}
			if wait <= 0 {
				continue
			}
		}
		if full {
			// Only a free slot (or the end) can change anything.
			select {
			case <-ctx.Done():
				return
			case <-r.freedC:
			}
			r.gather(ctx)
			continue
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-r.wakeC:
		case <-timer.C:
		}
	}
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
		free := r.q.Concurrency - r.active
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
