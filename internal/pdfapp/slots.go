package pdfapp

import (
	"container/heap"
	"context"
	"sync"
)

// cpuSlots is the pool of CPU slots that every page task of the app draws
// from: one pdftoppm or tesseract process per slot. Sizing it to the cores
// lets a document alone use all of them while several documents together
// never run more processes than there are cores, whatever the queues'
// concurrency: both programs are CPU bound, and oversubscribing only adds
// switching and cache misses.
//
// Waiters are served by priority rather than in arrival order, so that the
// documents that started first (or have the higher job priority) finish
// first, instead of all running slowly side by side: the throughput is the
// same, and every job but the last completes sooner.
type cpuSlots struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiters slotQueue
}

func newCPUSlots(n int) *cpuSlots { return &cpuSlots{free: max(n, 1)} }

// turn orders the waiters: lower first.
type turn struct {
	jobPriority int    // higher first
	ticket      uint64 // the document's start order
}

func (a turn) before(b turn) bool {
	if a.jobPriority != b.jobPriority {
		return a.jobPriority > b.jobPriority
	}
	return a.ticket < b.ticket
}

type slotWaiter struct {
	p       turn
	seq     uint64 // arrival order among equal priorities
	ready   chan struct{}
	granted bool
	index   int // in the heap; -1 once removed
}

// acquire blocks until a slot is granted to the caller, or ctx ends.
func (s *cpuSlots) acquire(ctx context.Context, p turn) error {
	s.mu.Lock()
	if s.free > 0 && len(s.waiters) == 0 {
		s.free--
		s.mu.Unlock()
		return nil
	}
	s.seq++
	w := &slotWaiter{p: p, seq: s.seq, ready: make(chan struct{})}
	heap.Push(&s.waiters, w)
	s.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		if w.granted {
			// Granted while giving up: pass it on.
			s.mu.Unlock()
			s.release()
			return ctx.Err()
		}
		heap.Remove(&s.waiters, w.index)
		s.mu.Unlock()
		return ctx.Err()
	}
}

// release gives a slot back: to the first waiter, if any.
func (s *cpuSlots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiters) == 0 {
		s.free++
		return
	}
	w := heap.Pop(&s.waiters).(*slotWaiter)
	w.granted = true
	close(w.ready)
}

// keep is release for a holder with more work to do: it keeps its slot
// unless a waiter comes before p, who gets it. It reports whether the
// caller still holds the slot. Releasing and acquiring again would hand
// the slot to any waiter, even one that comes after the holder, which
// would then hold it for a whole piece of work.
func (s *cpuSlots) keep(p turn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiters) == 0 || !s.waiters[0].p.before(p) {
		return true
	}
	w := heap.Pop(&s.waiters).(*slotWaiter)
	w.granted = true
	close(w.ready)
	return false
}

type slotQueue []*slotWaiter

func (h slotQueue) Len() int { return len(h) }
func (h slotQueue) Less(i, j int) bool {
	if h[i].p != h[j].p {
		return h[i].p.before(h[j].p)
	}
	return h[i].seq < h[j].seq
}
func (h slotQueue) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *slotQueue) Push(x any) {
	w := x.(*slotWaiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *slotQueue) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}
