package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// Bounds of a remote worker's lease. A shorter lease would have a worker
// spend its time on heartbeats; a longer one would leave the job of a
// vanished worker stranded for that long.
const (
	MinLease = time.Second
	MaxLease = 10 * time.Minute
)

// RemoteClaim is a remote worker's request for a job.
type RemoteClaim struct {
	Queue string
	// Worker names the worker in the job's lease, for operators.
	Worker string
	// Lease is how long the job stays the worker's without a heartbeat;
	// 0 means Options.Lease. It is clamped to [MinLease, MaxLease].
	Lease time.Duration
	// Wait is how long to wait for a runnable job; 0 means not at all.
	Wait time.Duration
}

// Lease is a remote worker's hold on a running job.
type Lease struct {
	// Job is the job as the store now has it.
	Job *job.Job
	// Token is what the worker presents with every call about the job.
	Token string
	// Duration is how far each heartbeat pushes ExpiresAt.
	Duration time.Duration
	// ExpiresAt is when the job goes back to its queue without a heartbeat.
	ExpiresAt time.Time
	// Deadline is when the attempt runs out of its timeout; zero for a job
	// without a timeout. No heartbeat extends the lease past it.
	Deadline time.Time
}

// Reasons a worker lost its hold on a job, as LeaseLostError.Reason.
const (
	LostCanceled = "canceled"          // the job was canceled
	LostDeleted  = "deleted"           // the job was deleted or purged (or never existed)
	LostExpired  = "expired"           // the lease ran out and the rescuer took the job back
	LostDeadline = "deadline_exceeded" // the attempt outlived its timeout
	LostFinished = "finished"          // the job is already succeeded or failed
)

// LeaseLostError tells a remote worker that it no longer holds a job, and
// why, so that it can stop working on it. It wraps store.ErrLeaseLost.
type LeaseLostError struct {
	JobID  string
	Reason string    // one of the Lost constants
	State  job.State // the job's state now; empty when it is gone
}

// Error says which job was lost and why.
func (e *LeaseLostError) Error() string {
	switch e.Reason {
	case LostDeleted:
		return fmt.Sprintf("job %s: lease lost: no such job (deleted or purged)", e.JobID)
	case LostDeadline:
		return fmt.Sprintf("job %s: lease lost: the attempt ran past its timeout", e.JobID)
	default:
		return fmt.Sprintf("job %s: lease lost (%s), the job is %s", e.JobID, e.Reason, e.State)
	}
}

// Unwrap makes errors.Is(err, store.ErrLeaseLost) hold.
func (e *LeaseLostError) Unwrap() error { return store.ErrLeaseLost }

// leaseToken is what a remote worker holds: the store's lease token plus
// the lease's duration and the attempt's deadline. Carrying the last two in
// the token lets any node sharing the store renew the lease with the same
// duration and enforce the same deadline, with nothing kept in memory. They
// are not signed: the store's part is what proves the hold, and a worker
// trusted with the job's result is trusted with its timing too.
type leaseToken struct {
	store    string
	lease    time.Duration
	deadline time.Time
}

func (t leaseToken) String() string {
	var d int64
	if !t.deadline.IsZero() {
		d = t.deadline.UnixMilli()
	}
	return t.store + "." + strconv.FormatInt(t.lease.Milliseconds(), 36) + "." + strconv.FormatInt(d, 36)
}

func parseLeaseToken(s string) (leaseToken, bool) {
	rest, d, ok1 := cutLast(s)
	st, l, ok2 := cutLast(rest)
	if !ok1 || !ok2 || st == "" {
		return leaseToken{}, false
	}
	lease, err1 := strconv.ParseInt(l, 36, 64)
	dl, err2 := strconv.ParseInt(d, 36, 64)
	if err1 != nil || err2 != nil || lease < 0 || dl < 0 {
		return leaseToken{}, false
	}
	t := leaseToken{store: st, lease: clampLease(time.Duration(lease) * time.Millisecond)}
	if dl > 0 {
		t.deadline = time.UnixMilli(dl)
	}
	return t, true
}

// cutLast splits s at its last dot: the store's token comes first and may
// hold dots of its own, the fields after it never do.
func cutLast(s string) (string, string, bool) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func clampLease(d time.Duration) time.Duration {
	return min(max(d, MinLease), MaxLease)
}

// lapse is what a renewal at now grants: the lease, cut short by the
// deadline.
func (t leaseToken) lapse(now time.Time) time.Duration {
	if t.deadline.IsZero() {
		return t.lease
	}
	return min(t.lease, t.deadline.Sub(now))
}

func (t leaseToken) hold(j *job.Job) *Lease {
	return &Lease{Job: j, Token: t.String(), Duration: t.lease, ExpiresAt: j.LeaseExpiresAt, Deadline: t.deadline}
}

// ClaimRemote hands one runnable job of c.Queue to a remote worker, waiting
// up to c.Wait for one to become runnable. It returns nil without error
// when none did, when ctx is done, or when the engine stops. Jobs of a
// paused queue are not handed out.
//
// Waiting claimers are woken by what makes a job runnable (an insert, a
// retry, a rescued lease, a resume), and by delayed jobs coming due; a
// store shared with other processes is also polled every Options.Poll.
// Each claim takes its job in one atomic store operation, so concurrent
// claimers never share a job.
func (e *Engine) ClaimRemote(ctx context.Context, c RemoteClaim) (*Lease, error) {
	r := e.runner(c.Queue)
	if r == nil {
		return nil, fmt.Errorf("engine: claim: %w: %q", ErrUnknownQueue, c.Queue)
	}
	if c.Lease == 0 {
		c.Lease = e.opts.Lease
	}
	c.Lease = clampLease(c.Lease)

	// On a queue no local worker serves, the runner's wake-up signal is
	// ours: one signal wakes one claimer, which passes it on when it got a
	// job, so that a batch of inserts wakes as many claimers as it needs
	// and no more. A queue that also runs here keeps its signal for its
	// own loop; claimers follow the queue's events instead.
	var wake <-chan struct{}
	var events <-chan Event
	if r.q.Concurrency == 0 {
		wake = r.wakeC
	} else {
		sub := e.hub.Subscribe(func(ev Event) bool { return ev.Queue == c.Queue && ev.State == job.Queued && !ev.Deleted })
		defer sub.Close()
		events = sub.C()
	}
	var giveUp <-chan time.Time
	if c.Wait > 0 {
		t := time.NewTimer(c.Wait)
		defer t.Stop()
		giveUp = t.C
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	woken := false
	for {
		if e.loops.Err() != nil {
			return nil, nil // stopped: claiming is over on this node
		}
		paused := e.Paused(c.Queue)
		if !paused {
			l, err := e.claimForRemote(ctx, r, c)
			if err != nil {
				if ctx.Err() != nil || e.loops.Err() != nil {
					return nil, nil
				}
				return nil, err
			}
			if l != nil {
				if woken && wake != nil {
					r.wake()
				}
				return l, nil
			}
		}
		if c.Wait <= 0 {
			return nil, nil
		}
		wait := e.opts.Poll
		if !paused {
			if next, err := e.store.NextRunAt(ctx, c.Queue); err == nil && !next.IsZero() {
				// Never a spin: a job due now that we did not get went to
				// another claimer, and the next look is a moment away.
				wait = max(min(wait, time.Until(next)), 10*time.Millisecond)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		woken = false
		select {
		case <-ctx.Done():
			return nil, nil
		case <-e.loops.Done():
			return nil, nil
		case <-giveUp:
			return nil, nil
		case <-wake:
			woken = true
		case <-events:
		case <-timer.C:
		}
	}
}

// claimForRemote claims at most one job for a remote worker. A claim whose
// caller left while the store answered is given back, without counting the
// attempt, rather than left to the rescuer.
func (e *Engine) claimForRemote(ctx context.Context, r *runner, c RemoteClaim) (*Lease, error) {
	start := time.Now()
	jobs, err := e.store.Claim(ctx, store.Claim{Queue: c.Queue, Limit: 1, Worker: c.Worker, Lease: c.Lease})
	if err != nil {
		return nil, fmt.Errorf("engine: claim %s: %w", c.Queue, err)
	}
	if len(jobs) == 0 {
		return nil, nil
	}
	j := jobs[0]
	t := leaseToken{store: j.LeaseToken, lease: c.Lease}
	timeout := j.Timeout
	if timeout == 0 {
		timeout = r.q.Timeout
	}
	if timeout > 0 {
		// At the precision the token carries, so that every node sees the
		// deadline the worker was told.
		t.deadline = start.Add(timeout).Truncate(time.Millisecond)
	}
	e.opts.Metrics.Started(j.Queue, j.UpdatedAt.Sub(j.RunAt))
	e.publish(j)
	wctx := context.WithoutCancel(ctx)
	if ctx.Err() != nil {
		e.releaseClaim(wctx, r, j, "the worker hung up before it received the job")
		return nil, nil
	}
	if !t.deadline.IsZero() && j.LeaseExpiresAt.After(t.deadline) {
		// A timeout shorter than the lease: the lease ends with it, so that
		// a silent worker's job is taken back when its time is up.
		hb, err := e.store.Heartbeat(wctx, j.ID, j.LeaseToken, time.Until(t.deadline))
		if err != nil {
			return nil, fmt.Errorf("engine: claim %s: %w", c.Queue, err)
		}
		j = hb
	}
	return t.hold(j), nil
}

func (e *Engine) releaseClaim(ctx context.Context, r *runner, j *job.Job, why string) {
	rel, err := e.store.Release(ctx, j.ID, j.LeaseToken, job.Error{Message: why, Code: job.CodeLease})
	if err != nil {
		e.log.Warn("release claimed job", "job", j.ID, "err", err)
		return
	}
	e.publish(rel)
	r.wake()
}

// RemoteJob returns the job a remote worker holds under token, or a
// *LeaseLostError when it does not hold it (any more). An attempt past its
// deadline is failed here, as a local handler's would be at its timeout.
func (e *Engine) RemoteJob(ctx context.Context, id, token string) (*job.Job, error) {
	j, _, err := e.remoteHeld(ctx, id, token)
	return j, err
}

// remoteHeld checks a remote worker's hold on a job.
func (e *Engine) remoteHeld(ctx context.Context, id, token string) (*job.Job, leaseToken, error) {
	t, ok := parseLeaseToken(token)
	if !ok {
		// Not a token this engine made: it cannot hold anything.
		return nil, t, e.remoteLost(ctx, id)
	}
	j, err := e.store.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, t, &LeaseLostError{JobID: id, Reason: LostDeleted}
	}
	if err != nil {
		return nil, t, fmt.Errorf("engine: job %s: %w", id, err)
	}
	if j.State != job.Running || j.LeaseToken != t.store {
		return nil, t, leaseLostOf(j)
	}
	if !t.deadline.IsZero() && !time.Now().Before(t.deadline) {
		return nil, t, e.remoteOverdue(ctx, j, t)
	}
	return j, t, nil
}

// remoteOverdue fails an attempt that outlived its timeout.
func (e *Engine) remoteOverdue(ctx context.Context, j *job.Job, t leaseToken) error {
	timeout := j.Timeout
	if timeout == 0 {
		if r := e.runner(j.Queue); r != nil {
			timeout = r.q.Timeout
		}
	}
	f := store.Failure{Retryable: true, Backoff: e.backoff(j.Attempt), Retention: e.retention(j.Queue),
		Error: job.Error{Message: fmt.Sprintf("deadline exceeded: the attempt ran longer than its timeout of %s", timeout), Code: job.CodeTimeout}}
	done, err := e.recordRemoteFailure(context.WithoutCancel(ctx), j, t, f)
	if err != nil {
		return err
	}
	return &LeaseLostError{JobID: j.ID, Reason: LostDeadline, State: done.State}
}

// remoteLost explains why a store refused a lease: it reads the job as it now is.
func (e *Engine) remoteLost(ctx context.Context, id string) error {
	j, err := e.store.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return &LeaseLostError{JobID: id, Reason: LostDeleted}
	}
	if err != nil {
		return fmt.Errorf("engine: job %s: %w", id, err)
	}
	return leaseLostOf(j)
}

func leaseLostOf(j *job.Job) *LeaseLostError {
	l := &LeaseLostError{JobID: j.ID, State: j.State, Reason: LostExpired}
	switch {
	case j.State == job.Canceled:
		l.Reason = LostCanceled
	case j.State == job.Failed && j.Error != nil && j.Error.Code == job.CodeTimeout:
		l.Reason = LostDeadline
	case j.State == job.Failed && j.Error != nil && j.Error.Code == job.CodeLease:
		l.Reason = LostExpired
	case j.State.Terminal():
		l.Reason = LostFinished
	}
	return l
}

// remoteRefused turns a store's lease refusal into a LeaseLostError.
func (e *Engine) remoteRefused(ctx context.Context, id string, err error) error {
	if errors.Is(err, store.ErrLeaseLost) || errors.Is(err, store.ErrNotFound) {
		return e.remoteLost(context.WithoutCancel(ctx), id)
	}
	return fmt.Errorf("engine: job %s: %w", id, err)
}

// HeartbeatRemote renews a remote worker's lease on a job for the lease's
// duration, never past the attempt's deadline.
func (e *Engine) HeartbeatRemote(ctx context.Context, id, token string) (*Lease, error) {
	j, t, err := e.remoteHeld(ctx, id, token)
	if err != nil {
		return nil, err
	}
	j, err = e.store.Heartbeat(ctx, j.ID, t.store, t.lapse(time.Now()))
	if err != nil {
		return nil, e.remoteRefused(ctx, id, err)
	}
	return t.hold(j), nil
}

// ProgressRemote records a remote worker's progress report and publishes
// it. Unlike a local handler's, every report is stored: a remote worker
// pays a round trip per report and is told to send few.
func (e *Engine) ProgressRemote(ctx context.Context, id, token string, p job.Progress) (*Lease, error) {
	_, t, err := e.remoteHeld(ctx, id, token)
	if err != nil {
		return nil, err
	}
	j, err := e.store.Progress(ctx, id, t.store, p)
	if err != nil {
		return nil, e.remoteRefused(ctx, id, err)
	}
	e.publish(j)
	return t.hold(j), nil
}

// CompleteRemote records a remote worker's success with its result (nil
// for none) and artifacts. Files named by their Data.Path are handed to the
// store; any still there after the call are the caller's to remove.
func (e *Engine) CompleteRemote(ctx context.Context, id, token string, result *store.Data, artifacts []store.Data) (*job.Job, error) {
	j, t, err := e.remoteHeld(ctx, id, token)
	if err != nil {
		return nil, err
	}
	// The outcome must be recorded even if the worker hangs up now: its
	// result is complete.
	wctx := context.WithoutCancel(ctx)
	done, err := e.store.Complete(wctx, id, t.store, store.Outcome{Result: result, Artifacts: artifacts,
		Retention: e.retention(j.Queue), Known: j})
	if err != nil {
		return nil, e.remoteRefused(wctx, id, err)
	}
	e.opts.Metrics.Changed(done)
	e.publish(done)
	return done, nil
}

// RemoteFailure is how a remote worker reports a failed attempt.
type RemoteFailure struct {
	Message string
	// Code classifies the failure; empty means job.CodeHandler.
	Code string
	// Retryable false fails the job at once, whatever attempts remain.
	Retryable bool
}

// FailRemote records a remote worker's failed attempt: the job is retried
// with backoff while attempts remain (and the failure is retryable), else
// it fails for good.
func (e *Engine) FailRemote(ctx context.Context, id, token string, f RemoteFailure) (*job.Job, error) {
	j, t, err := e.remoteHeld(ctx, id, token)
	if err != nil {
		return nil, err
	}
	if f.Code == "" {
		f.Code = job.CodeHandler
	}
	return e.recordRemoteFailure(context.WithoutCancel(ctx), j, t, store.Failure{Retryable: f.Retryable,
		Backoff: e.backoff(j.Attempt), Retention: e.retention(j.Queue), Error: job.Error{Message: f.Message, Code: f.Code}})
}

func (e *Engine) recordRemoteFailure(ctx context.Context, j *job.Job, t leaseToken, f store.Failure) (*job.Job, error) {
	done, err := e.store.Fail(ctx, j.ID, t.store, f)
	if err != nil {
		return nil, e.remoteRefused(ctx, j.ID, err)
	}
	e.opts.Metrics.Changed(done)
	e.publish(done)
	if done.State == job.Queued {
		if r := e.runner(done.Queue); r != nil {
			r.wake()
		}
	}
	return done, nil
}
