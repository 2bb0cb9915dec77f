package engine

import (
	"sync"

	"github.com/docket/docket/internal/job"
)

// Event is one change of a job, published after the store committed it.
type Event struct {
	JobID   string
	Queue   string
	Owner   string
	Version int64
	State   job.State
	// Progress as stored with this version.
	Progress job.Progress
	// Deleted is set when the job was removed; Job is then its last state.
	Deleted bool
	// Job is the job as of this event. Subscribers must not modify it.
	Job *job.Job
	// Remote is set when another process sharing the store made the
	// change: it is published here for the watchers of this process, and
	// what the maker of a change does about it (webhook deliveries) is
	// not to be done again.
	Remote bool
}

// EventOf builds the event announcing j.
func EventOf(j *job.Job) Event {
	return Event{JobID: j.ID, Queue: j.Queue, Owner: j.Owner, Version: j.Version, State: j.State, Progress: j.Progress, Job: j}
}

// Hub fans events out to subscribers in this process. Publishing never
// blocks: a subscriber that falls behind loses its oldest undelivered events,
// never the newest, so it always ends up seeing a job's latest state.
//
// Changes are published by whoever made them, after the store committed
// them, so two publishers may race: a job's insert event can be published
// just after the event of its claim. A subscription to one job never goes
// back in version (a stale event is dropped); a subscription to many jobs
// may, and its reader compares versions.
type Hub struct {
	mu    sync.RWMutex
	byJob map[string]map[*Subscription]struct{}
	all   map[*Subscription]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{byJob: map[string]map[*Subscription]struct{}{}, all: map[*Subscription]struct{}{}}
}

// Subscription receives events on C until Close.
type Subscription struct {
	c      chan Event
	fn     func(Event) // instead of c, for SubscribeJobFunc
	mu     sync.Mutex  // serialises the drop-oldest-then-send of publishers
	hub    *Hub
	jobID  string
	last   int64 // with jobID: the last version delivered
	filter func(Event) bool
	once   sync.Once
}

// C delivers the events. It is nil for a subscription of SubscribeJobFunc.
func (s *Subscription) C() <-chan Event { return s.c }

// Close stops delivery. It does not close C. Once Close returns, the
// function of a SubscribeJobFunc subscription is not called again.
func (s *Subscription) Close() {
	s.once.Do(func() {
		h := s.hub
		h.mu.Lock()
		defer h.mu.Unlock()
		if s.jobID == "" {
			delete(h.all, s)
			return
		}
		subs := h.byJob[s.jobID]
		delete(subs, s)
		if len(subs) == 0 {
			delete(h.byJob, s.jobID)
		}
	})
}

func (s *Subscription) deliver(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobID != "" {
		if e.Version <= s.last && !e.Deleted {
			return
		}
		s.last = e.Version
	}
	if s.fn != nil {
		s.fn(e)
		return
	}
	for {
		select {
		case s.c <- e:
			return
		default:
		}
		select {
		case <-s.c: // drop the oldest to make room
		default:
		}
	}
}

const subBuffer = 64

// jobSubBuffer is small: a subscription to one job drops stale versions
// and always keeps the latest, so a long buffer would only cost memory per
// watcher (thousands of them may be open).
const jobSubBuffer = 4

// SubscribeJob receives the events of one job.
func (h *Hub) SubscribeJob(id string) *Subscription {
	return h.addJob(&Subscription{c: make(chan Event, jobSubBuffer), hub: h, jobID: id})
}

// SubscribeJobFunc calls fn with the events of one job, in increasing
// version, one call at a time, on the publisher's goroutine: for a server
// watching thousands of jobs, which would otherwise need a goroutine and a
// channel per job. fn must return at once, without blocking or calling
// into the hub; it is usually a note that the job changed, for a goroutine
// of the subscriber's to act on.
func (h *Hub) SubscribeJobFunc(id string, fn func(Event)) *Subscription {
	return h.addJob(&Subscription{fn: fn, hub: h, jobID: id})
}

func (h *Hub) addJob(s *Subscription) *Subscription {
	id := s.jobID
	h.mu.Lock()
	subs := h.byJob[id]
	if subs == nil {
		subs = map[*Subscription]struct{}{}
		h.byJob[id] = subs
	}
	subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Subscribe receives every event for which filter (if not nil) is true.
// filter may also be asked about an event whose Job is nil, to decide
// whether a change made by another process is worth reading from the store.
func (h *Hub) Subscribe(filter func(Event) bool) *Subscription {
	s := &Subscription{c: make(chan Event, subBuffer), hub: h, filter: filter}
	h.mu.Lock()
	h.all[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Subscribers reports how many subscriptions are open, for tests and
// monitoring: a subscription left open is a watcher that never ends.
func (h *Hub) Subscribers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := len(h.all)
	for _, subs := range h.byJob {
		n += len(subs)
	}
	return n
}

// Publish delivers e to the matching subscribers.
func (h *Hub) Publish(e Event) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.byJob[e.JobID] {
		s.deliver(e)
	}
	for s := range h.all {
		if s.filter == nil || s.filter(e) {
			s.deliver(e)
		}
	}
}
