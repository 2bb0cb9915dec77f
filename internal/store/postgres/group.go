package postgres

import (
	"context"
)

// Group commit. PostgreSQL serializes the commits of transactions that
// NOTIFY, WAL flush included, and every change here notifies, so a store
// that wrote each completion or insert in a transaction of its own would
// spend its time queueing for the commit. Calls of one kind are handed to a
// group instead: its worker takes every call waiting, up to a batch, and
// runs them as one statement on arrays, so that one commit serves many
// callers while each caller still returns only once its change is
// committed. One worker per group is enough, as commits take turns anyway,
// and it batches best: the calls that arrive while a batch is written make
// the next one.

const (
	// maxBatch bounds a batch of single-job calls.
	maxBatch = 512
	// maxInsertBatch bounds the jobs of a batch of inserts; a larger Insert
	// runs alone.
	maxInsertBatch = 1000
	// groupWorkers is the number of batches of one kind in flight.
	groupWorkers = 1
)

// group batches calls of one kind.
type group[C any] struct {
	s     *Store
	calls chan C
	quit  chan struct{}
	max   int
	// size weighs a call (inserts count jobs); nil counts one per call.
	size func(C) int
	// run executes a batch and finishes every call of it.
	run func(ctx context.Context, batch []C)
}

func newGroup[C any](s *Store, max int, size func(C) int, run func(context.Context, []C)) *group[C] {
	g := &group[C]{s: s, calls: make(chan C, 4*max), quit: make(chan struct{}), max: max, size: size, run: run}
	for range groupWorkers {
		s.workers.Go(g.work)
	}
	return g
}

// do hands a call to the group and waits until it is finished. Once handed
// over the call runs even if ctx ends, and do waits for it, so that a
// caller is never told of a failure for a change that was committed.
func (g *group[C]) do(ctx context.Context, c C, done <-chan struct{}) error {
	g.s.closeMu.RLock()
	if g.s.closed {
		g.s.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case g.calls <- c:
	case <-ctx.Done():
		g.s.closeMu.RUnlock()
		return ctx.Err()
	}
	g.s.closeMu.RUnlock()
	<-done
	return nil
}

// stop makes the workers finish the calls handed over, then return. No call
// is handed over once the store is marked closed.
func (g *group[C]) stop() { close(g.quit) }

// work runs batches until the group stops.
func (g *group[C]) work() {
	batch := make([]C, 0, g.max)
	for {
		var first C
		select {
		case first = <-g.calls:
		case <-g.quit:
			for {
				batch = batch[:0]
				g.gather(&batch, 0)
				if len(batch) == 0 {
					return
				}
				g.run(g.s.base, batch)
			}
		}
		batch = append(batch[:0], first)
		g.gather(&batch, g.weight(first))
		g.run(g.s.base, batch)
	}
}

// gather adds the calls waiting to batch, whose weight is n so far, up to
// the group's maximum.
func (g *group[C]) gather(batch *[]C, n int) {
	for n < g.max {
		select {
		case c := <-g.calls:
			*batch = append(*batch, c)
			n += g.weight(c)
		default:
			return
		}
	}
}

func (g *group[C]) weight(c C) int {
	if g.size == nil {
		return 1
	}
	return g.size(c)
}
