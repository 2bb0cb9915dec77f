// Package job defines docket's unit of work: the Job record, its states and
// the rules for moving between them. It does no I/O: stores apply these rules
// inside their own atomic operations, and tests check them as plain functions.
package job

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
)

// State is where a job is in its life.
type State string

// The five states. Queued includes delayed jobs (run_at in the future).
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Canceled  State = "canceled"
)

// States lists every state, in life order.
var States = []State{Queued, Running, Succeeded, Failed, Canceled}

// Valid reports whether s is one of the five states.
func (s State) Valid() bool {
	switch s {
	case Queued, Running, Succeeded, Failed, Canceled:
		return true
	}
	return false
}

// Terminal reports whether a job in state s is finished for good (until an
// explicit retry).
func (s State) Terminal() bool {
	return s == Succeeded || s == Failed || s == Canceled
}

// Progress is what a handler last reported. Total 0 means unknown.
type Progress struct {
	Current int64  `json:"current"`
	Total   int64  `json:"total"`
	Message string `json:"message,omitempty"`
}

// Percent derives a percentage from Current and Total; it is -1 when the total
// is unknown.
func (p Progress) Percent() float64 {
	if p.Total <= 0 {
		return -1
	}
	v := float64(p.Current) * 100 / float64(p.Total)
	return min(max(v, 0), 100)
}

// Error is the last failure of a job.
type Error struct {
	Message string `json:"message"`
	Code    string `json:"code,omitempty"`
}

// Error codes docket itself sets.
const (
	CodeHandler  = "handler_error"     // the handler or command reported failure
	CodeTimeout  = "deadline_exceeded" // the attempt ran past its timeout
	CodeLease    = "lease_expired"     // the worker holding the job vanished
	CodeShutdown = "shutdown"          // the node stopped while the job ran
	CodePaused   = "paused"            // claimed ahead, given back when its queue was paused
)

// Blob describes stored bytes: a job's input, its result or one artifact.
type Blob struct {
	Name        string `json:"name,omitempty"` // artifact name or input filename
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
}

// Job is one unit of work as the store keeps it.
type Job struct {
	ID             string
	Queue          string
	Owner          string
	State          State
	Input          Blob
	InputDigest    string // hex SHA-256 of the input bytes
	Unique         bool   // dedup by (queue, owner, InputDigest)
	Progress       Progress
	Result         *Blob // set once succeeded
	Artifacts      int   // number of artifacts stored
	Error          *Error
	Attempt        int
	MaxAttempts    int
	Priority       int
	RunAt          time.Time
	Timeout        time.Duration // per attempt; 0: the queue's
	IdempotencyKey string
	Labels         map[string]string
	Position       int64 // derived by Get for queued jobs; never stored

	// Webhook is the URL told of the job's changes, empty for none, and
	// WebhookEvents the events it asked for; both are fixed at submit.
	Webhook       string
	WebhookEvents []string

	CreatedAt  time.Time
	StartedAt  time.Time // zero until first claimed
	FinishedAt time.Time // zero until terminal
	UpdatedAt  time.Time
	ExpiresAt  time.Time // zero until terminal; purge after

	Version int64

	// Lease, set while running.
	LeaseToken     string
	LeaseExpiresAt time.Time
	Worker         string
}

// NewID returns a fresh time-sortable job id (UUIDv7).
func NewID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// ErrTransition is wrapped by every refused transition.
var ErrTransition = errors.New("illegal state transition")

func refuse(op string, from State) error {
	return fmt.Errorf("%w: cannot %s a %s job", ErrTransition, op, from)
}

// Action names what is asked of a job; CanDo tells whether a state allows it.
type Action string

// Actions on a job.
const (
	ActClaim    Action = "claim"    // queued → running
	ActProgress Action = "progress" // running → running
	ActComplete Action = "complete" // running → succeeded
	ActFail     Action = "fail"     // running → queued (retry) or failed
	ActRescue   Action = "rescue"   // running with expired lease → queued or failed
	ActRelease  Action = "release"  // running → queued, the attempt not counted
	ActCancel   Action = "cancel"   // queued/running → canceled
	ActRetry    Action = "retry"    // failed/canceled → queued
	ActDelete   Action = "delete"   // any → gone
)

// Actions lists every action.
var Actions = []Action{ActClaim, ActProgress, ActComplete, ActFail, ActRescue, ActRelease, ActCancel, ActRetry, ActDelete}

// From returns the states an action may start from. Stores use it to build
// the WHERE clause of their atomic updates, so the rules live only here.
func (a Action) From() []State {
	switch a {
	case ActClaim:
		return []State{Queued}
	case ActProgress, ActComplete, ActFail, ActRescue, ActRelease:
		return []State{Running}
	case ActCancel:
		return []State{Queued, Running}
	case ActRetry:
		return []State{Failed, Canceled}
	case ActDelete:
		return States
	}
	return nil
}

// CanDo reports whether action a is legal on a job in state s, and why not.
func CanDo(s State, a Action) error {
	for _, f := range a.From() {
		if f == s {
			return nil
		}
	}
	return refuse(string(a), s)
}

// The transitions below change the job they are given in place, and leave
// it as it was when they refuse: a Job is large, and copying it through
// every call of a completion took a worker goroutine's stack past its first
// size.

// Claim moves a queued, runnable job to running under a new lease.
func Claim(j *Job, now time.Time, worker, token string, lease time.Duration) error {
	if err := CanDo(j.State, ActClaim); err != nil {
		return err
	}
	if j.RunAt.After(now) {
		return fmt.Errorf("%w: job is delayed until %s", ErrTransition, j.RunAt.Format(time.RFC3339))
	}
	j.State = Running
	j.Attempt++
	j.Worker = worker
	j.LeaseToken = token
	j.LeaseExpiresAt = now.Add(lease)
	if j.StartedAt.IsZero() {
		j.StartedAt = now
	}
	touch(j, now)
	return nil
}

// Complete records success.
func Complete(j *Job, now time.Time, result *Blob, artifacts int, retention time.Duration) error {
	if err := CanDo(j.State, ActComplete); err != nil {
		return err
	}
	j.State = Succeeded
	j.Result = result
	j.Artifacts = artifacts
	j.Error = nil
	finish(j, now, retention)
	return nil
}

// Fail records a failed attempt: the job goes back to queued after a backoff
// while attempts remain, else to failed. retryable=false fails it at once.
func Fail(j *Job, now time.Time, e Error, retryable bool, backoff time.Duration, retention time.Duration) error {
	if err := CanDo(j.State, ActFail); err != nil {
		return err
	}
	failOrRequeue(j, now, e, retryable, backoff, retention)
	return nil
}

// Rescue handles a running job whose lease expired: its worker is gone.
func Rescue(j *Job, now time.Time, backoff time.Duration, retention time.Duration) error {
	if err := CanDo(j.State, ActRescue); err != nil {
		return err
	}
	if !j.LeaseExpiresAt.Before(now) {
		return fmt.Errorf("%w: lease still valid", ErrTransition)
	}
	failOrRequeue(j, now, Error{Message: "worker lost its lease", Code: CodeLease}, true, backoff, retention)
	return nil
}

func failOrRequeue(j *Job, now time.Time, e Error, retryable bool, backoff, retention time.Duration) {
	j.Error = &e
	j.LeaseToken, j.LeaseExpiresAt, j.Worker = "", time.Time{}, ""
	if retryable && j.Attempt < j.MaxAttempts {
		j.State = Queued
		j.RunAt = now.Add(backoff)
		touch(j, now)
		return
	}
	j.State = Failed
	finish(j, now, retention)
}

// Release gives a running job back to its queue, runnable at once, without
// counting the attempt: its worker stopped it on purpose (the node shuts
// down), the job did nothing wrong.
func Release(j *Job, now time.Time, e Error) error {
	if err := CanDo(j.State, ActRelease); err != nil {
		return err
	}
	j.Error = &e
	j.LeaseToken, j.LeaseExpiresAt, j.Worker = "", time.Time{}, ""
	j.State = Queued
	j.Attempt = max(j.Attempt-1, 0)
	j.RunAt = now
	touch(j, now)
	return nil
}

// Cancel ends a queued or running job.
func Cancel(j *Job, now time.Time, retention time.Duration) error {
	if err := CanDo(j.State, ActCancel); err != nil {
		return err
	}
	j.State = Canceled
	finish(j, now, retention)
	return nil
}

// Retry puts a failed or canceled job back in its queue with fresh attempts.
func Retry(j *Job, now time.Time) error {
	if err := CanDo(j.State, ActRetry); err != nil {
		return err
	}
	j.State = Queued
	j.Attempt = 0
	j.RunAt = now
	j.Error = nil
	j.Result = nil
	j.Artifacts = 0
	j.Progress = Progress{}
	j.FinishedAt, j.ExpiresAt = time.Time{}, time.Time{}
	touch(j, now)
	return nil
}

// SetProgress records progress of a running job.
func SetProgress(j *Job, now time.Time, p Progress) error {
	if err := CanDo(j.State, ActProgress); err != nil {
		return err
	}
	j.Progress = p
	touch(j, now)
	return nil
}

func finish(j *Job, now time.Time, retention time.Duration) {
	j.LeaseToken, j.LeaseExpiresAt, j.Worker = "", time.Time{}, ""
	j.FinishedAt = now
	j.ExpiresAt = now.Add(retention)
	touch(j, now)
}

func touch(j *Job, now time.Time) {
	j.UpdatedAt = now
	j.Version++
}

// Backoff returns the delay before retry number attempt (1-based): exponential
// from base, capped at max, with full jitter on the upper half so that many
// jobs failing together do not come back together.
func Backoff(attempt int, base, maxDelay time.Duration) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := base
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}
