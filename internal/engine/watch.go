package engine

import (
	"context"
	"errors"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// watch follows the changes other processes make to a shared store, so that
// this node acts on them as on its own: a queue wakes at once for a job
// inserted elsewhere, a handler stops when its job is canceled or deleted
// elsewhere, and the watchers connected here see every change.
func (e *Engine) watch(ctx context.Context, w store.Watcher) {
	defer e.background.Done()
	err := w.Watch(ctx, func(n store.Notice) { e.noticed(ctx, n) })
	if err != nil && ctx.Err() == nil {
		e.log.Error("watching the store's changes stopped; other nodes' changes are now seen at the poll interval", "err", err)
	}
}

// noticed acts on one notice of changes made by other processes.
func (e *Engine) noticed(ctx context.Context, n store.Notice) {
	if n.Resync {
		// Inserts may have been missed: every queue looks again.
		e.mu.Lock()
		for _, r := range e.queues {
			r.wake()
		}
		e.mu.Unlock()
	}
	woken := map[string]bool{}
	var read []store.Change
	for _, c := range n.Changes {
		if c.State == job.Queued && !c.Deleted && !woken[c.Queue] {
			woken[c.Queue] = true
			if r := e.runner(c.Queue); r != nil {
				r.wake()
			}
		}
		e.stopLost(c)
		probe := Event{JobID: c.JobID, Queue: c.Queue, Owner: c.Owner, Version: c.Version, State: c.State, Deleted: c.Deleted, Remote: true}
		if !e.hub.wants(probe) {
			continue
		}
		if c.Deleted {
			probe.Job = &job.Job{ID: c.JobID, Queue: c.Queue, Owner: c.Owner, Version: c.Version, State: c.State}
			e.hub.Publish(probe)
			continue
		}
		read = append(read, c)
	}
	for _, c := range read {
		j, err := e.store.Get(ctx, c.JobID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Deleted since: its deletion is announced on its own.
			continue
		case err != nil:
			if ctx.Err() == nil {
				e.log.Warn("read a job changed elsewhere", "job", c.JobID, "err", err)
			}
			continue
		}
		ev := EventOf(j)
		ev.Remote = true
		e.hub.Publish(ev)
	}
}

// stopLost stops the handler running here for a job that another process
// changed after this node claimed it: only the lease holder writes to a
// running job, so any newer change by someone else means the job was
// canceled, deleted or taken back. An older change, delivered late, says
// nothing about the current attempt. A job canceled or deleted elsewhere
// while it waits here, claimed ahead, leaves the buffer; only those two
// kinds of change are looked up there, so that the changes a busy cluster
// makes all the time cost no search.
func (e *Engine) stopLost(c store.Change) {
	v, ok := e.running.Load(c.JobID)
	if !ok {
		if c.Deleted || c.State == job.Canceled {
			// A change too large for a notification comes without its
			// queue: every buffer is looked at then.
			if r := e.runner(c.Queue); r != nil {
				r.unbuffer(c.JobID, c.Version)
			} else if c.Queue == "" {
				e.unbuffer(c.JobID, c.Version)
			}
		}
		return
	}
	t := v.(*Task)
	if c.Version <= t.job.Version {
		return
	}
	switch {
	case c.Deleted:
		t.cancel(errDeleted)
	case c.State == job.Canceled:
		t.cancel(errCanceled)
	default:
		t.cancel(errLeaseLost)
	}
}

// wants reports whether a subscriber would receive e: a watcher of its job,
// or a filter that accepts it. Filters are asked before the job is read.
func (h *Hub) wants(e Event) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(h.byJob[e.JobID]) > 0 {
		return true
	}
	for s := range h.all {
		if s.filter == nil || s.filter(e) {
			return true
		}
	}
	return false
}

// leads reports whether this node should run the store-wide chores: always
// on a store of one process, and on a shared store only while it holds the
// lead, so that nodes do not rescue or purge the same jobs at once.
func (e *Engine) leads(ctx context.Context) bool {
	l, ok := e.store.(store.Leader)
	if !ok {
		return true
	}
	lead, err := l.Lead(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("leader election", "err", err)
		}
		return false
	}
	return lead
}
