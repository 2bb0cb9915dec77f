// Package store defines the persistence contract of docket. Every backend
// (sqlite, postgres) implements Store and must pass the conformance suite in
// package storetest; the engine and the API know nothing else about storage.
//
// Every method that changes a job does so in one atomic operation of the
// backend and returns the job as it now is, so that the caller can publish the
// change with its new version.
//
// Points of the contract the conformance suite pins down:
//   - the version grows with every visible change; a heartbeat only moves the
//     lease and leaves it as it is;
//   - sizes of stored data are measured by the store, not taken from Data.Size;
//   - an idempotency key is unique per owner across all queues, and a match on
//     it or on a unique digest wins over ErrQueueFull;
//   - Complete refuses artifact names that CheckName refuses (ErrName).
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/docket/docket/internal/job"
)

// Errors every backend returns (wrapped) for the same conditions.
var (
	// ErrNotFound: no such job (or artifact).
	ErrNotFound = errors.New("not found")
	// ErrLeaseLost: the caller no longer holds the job's lease: it was
	// canceled, deleted, rescued or claimed again.
	ErrLeaseLost = errors.New("lease lost")
	// ErrState: the job's state does not allow the operation.
	ErrState = job.ErrTransition
	// ErrQueueFull: admission refused, the queue has max_queued jobs waiting.
	ErrQueueFull = errors.New("queue full")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// Data is bytes to store: exactly one of Bytes or Path is used. A Path names
// a file the store takes over (it may rename it); the caller must not use the
// file after handing it over, whether the call succeeds or not.
type Data struct {
	job.Blob
	Bytes []byte
	Path  string
}

// ErrName is wrapped by CheckName's refusals.
var ErrName = errors.New("invalid artifact name")

// CheckName validates an artifact name: 1 to 255 characters of letters,
// digits, '.', '_' and '-', not starting with '.', so that a name can never
// escape the job's folder or hide a file.
func CheckName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("%w: length %d", ErrName, len(name))
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: %q starts with a dot", ErrName, name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("%w: %q has %q", ErrName, name, r)
		}
	}
	return nil
}

// NewJob is what Insert needs to create a job.
type NewJob struct {
	ID             string // optional; a UUIDv7 is made when empty
	Queue          string
	Owner          string
	Input          Data
	InputDigest    string // hex SHA-256 of the input bytes; required when Unique
	Unique         bool
	MaxAttempts    int
	Priority       int
	RunAt          time.Time // zero: now
	Timeout        time.Duration
	IdempotencyKey string
	Labels         map[string]string
	// MaxQueued, when > 0, refuses the insert with ErrQueueFull if the queue
	// already holds that many queued jobs.
	MaxQueued int
	// Webhook and WebhookEvents are kept with the job, so that whoever
	// sees its changes later, in this process or after a restart, knows
	// where to report them.
	Webhook       string
	WebhookEvents []string
}

// Job is the job an insert of nj makes, with an input of size bytes, at
// time at. Backends build it rather than read it back, as the insert path is
// hot; times are kept to the microsecond, as the backends store them.
func (nj NewJob) Job(size int64, at time.Time) *job.Job {
	at = at.Truncate(time.Microsecond).UTC()
	j := &job.Job{ID: nj.ID, Queue: nj.Queue, Owner: nj.Owner, State: job.Queued, InputDigest: nj.InputDigest,
		Unique: nj.Unique, MaxAttempts: nj.MaxAttempts, Priority: nj.Priority, RunAt: nj.RunAt.Truncate(time.Microsecond).UTC(),
		Timeout: nj.Timeout.Truncate(time.Microsecond), IdempotencyKey: nj.IdempotencyKey, CreatedAt: at,
		UpdatedAt: at, Version: 1, Input: job.Blob{Name: nj.Input.Name, ContentType: nj.Input.ContentType, Size: size}}
	if len(nj.Labels) > 0 {
		j.Labels = maps.Clone(nj.Labels)
	}
	if nj.Webhook != "" {
		j.Webhook = nj.Webhook
		j.WebhookEvents = slices.Clone(nj.WebhookEvents)
	}
	return j
}

// Delivery is one webhook call waiting to be made. It carries its own URL
// and body so that it can still be sent once the job is deleted or purged.
type Delivery struct {
	ID        string // set by AddDeliveries when empty
	JobID     string
	URL       string
	Event     string
	Body      []byte
	Attempt   int // failed attempts so far
	NextAt    time.Time
	CreatedAt time.Time
}

// Inserted is the outcome of one NewJob.
type Inserted struct {
	Job *job.Job
	// Existing is true when no job was created because the idempotency key
	// or the unique digest matched an existing job, which Job then is.
	Existing bool
	// Err is set when this one job was refused (ErrQueueFull); the others
	// of the batch are unaffected.
	Err error
}

// Claim asks for up to Limit runnable jobs of Queue.
type Claim struct {
	Queue  string
	Limit  int
	Worker string
	Lease  time.Duration
}

// Outcome is how a running job ends.
type Outcome struct {
	// Result, for a success; nil means no result body.
	Result *Data
	// Artifacts, for a success: named files to keep with the job.
	Artifacts []Data
	// Progress, if set, is stored with the final state (the last coalesced
	// report of the handler).
	Progress *job.Progress
	// Retention: finished jobs expire after it.
	Retention time.Duration
	// Known, if set, is the job as the caller last saw it (claimed, plus
	// its own progress updates). While it is still current the store can
	// write the new state without reading the job first; when it is not,
	// the store falls back to reading it, with the same outcome.
	Known *job.Job
}

// Failure is a failed attempt.
type Failure struct {
	Error     job.Error
	Retryable bool          // false: fail now whatever the attempts left
	Backoff   time.Duration // delay before the next attempt if any
	Progress  *job.Progress
	Retention time.Duration
}

// Filter selects jobs for List. Zero fields match everything.
type Filter struct {
	Owner  string
	Queue  string
	States []job.State
	Labels map[string]string // all must match
	// After is the cursor of the previous page (the last job's id); List
	// returns jobs older than it, newest first.
	After string
	Limit int // default 50, at most 1000
}

// Page is one page of List.
type Page struct {
	Jobs []*job.Job
	// Next is the cursor for the following page, empty on the last one.
	Next string
}

// QueueCount is the number of jobs of one queue in each state.
type QueueCount struct {
	Queue  string
	Counts map[job.State]int64
}

// Store is the persistence contract. Methods are safe for concurrent use.
type Store interface {
	// Insert creates jobs, atomically each. Results come in input order.
	Insert(ctx context.Context, jobs []NewJob) ([]Inserted, error)
	// Get returns a job; a queued one has Position set.
	Get(ctx context.Context, id string) (*job.Job, error)
	// List returns jobs newest first.
	List(ctx context.Context, f Filter) (Page, error)
	// Claim moves up to c.Limit runnable jobs of the queue to running, in
	// order of priority (higher first), run_at, then age, each under a new
	// lease token. No job is ever handed to two claimers.
	Claim(ctx context.Context, c Claim) ([]*job.Job, error)
	// Heartbeat extends the lease of a running job.
	Heartbeat(ctx context.Context, id, token string, lease time.Duration) (*job.Job, error)
	// Progress records progress of a running job held under token.
	Progress(ctx context.Context, id, token string, p job.Progress) (*job.Job, error)
	// Complete records success with result and artifacts. The data is
	// written before the state changes: a succeeded job always has its result.
	Complete(ctx context.Context, id, token string, o Outcome) (*job.Job, error)
	// Fail records a failed attempt (requeue with backoff, or failed).
	Fail(ctx context.Context, id, token string, f Failure) (*job.Job, error)
	// Release gives a running job held under token back to its queue,
	// runnable now, without counting the attempt (job.Release).
	Release(ctx context.Context, id, token string, e job.Error) (*job.Job, error)
	// Cancel ends a queued or running job; a running job's lease is revoked.
	Cancel(ctx context.Context, id string, retention time.Duration) (*job.Job, error)
	// Retry requeues a failed or canceled job with fresh attempts.
	Retry(ctx context.Context, id string) (*job.Job, error)
	// Delete removes a job in any state with its input, result and artifacts.
	// It returns the job as it was.
	Delete(ctx context.Context, id string) (*job.Job, error)
	// Rescue requeues (or fails, after the last attempt) running jobs whose
	// lease expired before now. backoff gives the delay for an attempt number.
	Rescue(ctx context.Context, now time.Time, backoff func(attempt int) time.Duration, retention func(queue string) time.Duration) ([]*job.Job, error)
	// Purge deletes up to limit finished jobs that expired before now, with
	// their data, and returns how many went.
	Purge(ctx context.Context, now time.Time, limit int) (int, error)
	// QueueCounts counts jobs per queue and state.
	QueueCounts(ctx context.Context) ([]QueueCount, error)
	// NextRunAt returns the earliest run_at of a queued job of the queue, or
	// the zero time when there is none.
	NextRunAt(ctx context.Context, queue string) (time.Time, error)

	// OpenInput reads a job's input.
	OpenInput(ctx context.Context, id string) (io.ReadCloser, error)
	// OpenResult reads a succeeded job's result.
	OpenResult(ctx context.Context, id string) (job.Blob, io.ReadCloser, error)
	// Artifacts lists a job's artifacts by name.
	Artifacts(ctx context.Context, id string) ([]job.Blob, error)
	// OpenArtifact reads one artifact.
	OpenArtifact(ctx context.Context, id, name string) (job.Blob, io.ReadCloser, error)

	// AddDeliveries stores webhook deliveries, due at their NextAt (zero:
	// now).
	AddDeliveries(ctx context.Context, ds []Delivery) error
	// DueDeliveries hands out up to limit deliveries due at now, oldest
	// first, and pushes their NextAt to now+lease, so that a delivery
	// whose sender died is handed out again after the lease rather than
	// lost, and one being sent is not handed to a second sender.
	DueDeliveries(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]Delivery, error)
	// DeliveryDone removes a delivery (sent, or given up on). Removing one
	// that is gone is not an error.
	DeliveryDone(ctx context.Context, id string) error
	// DeliveryRetry counts a failed attempt and makes the delivery due
	// again at next.
	DeliveryRetry(ctx context.Context, id string, next time.Time) error

	// Close releases the store; pending writes are finished first.
	Close() error
}

// Change announces that a job changed, as a store shared by several
// processes tells the others. It carries what a node needs to decide whether
// the change concerns it (a queue to wake, a watched job, a handler to stop);
// the job itself is read with Get when it does.
type Change struct {
	JobID   string
	Queue   string
	Owner   string
	Version int64
	State   job.State
	// Deleted is set when the job was removed (deleted or purged).
	Deleted bool
}

// Notice is one delivery of Watch.
type Notice struct {
	// Changes committed by other Store instances, in commit order.
	Changes []Change
	// Resync is set when notices may have been missed (the connection that
	// carries them was lost and is back). Changes then holds every job
	// changed since shortly before the loss, as the store now has it, so
	// that no final state is missed; deletions in between are not known.
	Resync bool
}

// Watcher is implemented by stores that many processes share (PostgreSQL).
// The SQLite store is used by one process and does not implement it.
type Watcher interface {
	// Watch calls fn with the changes other Store instances commit until
	// ctx is done, reconnecting as needed; it returns ctx's error. fn is
	// called from one goroutine, in order, and should not block for long.
	Watch(ctx context.Context, fn func(Notice)) error
}

// Leader is implemented by stores that many processes share, so that one
// of them at a time runs the store-wide chores (rescue, purge).
type Leader interface {
	// Lead reports whether this Store instance leads now, taking the lead
	// if nobody holds it. A leader keeps the lead until it closes or loses
	// its connection to the database.
	Lead(ctx context.Context) (bool, error)
}
