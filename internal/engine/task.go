package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// Task is a running job as its handler sees it. Its methods are safe for
// concurrent use by the handler's goroutines.
type Task struct {
	r       *runner
	job     *job.Job // as claimed; never modified
	timeout time.Duration
	ctx     context.Context
	cancel  context.CancelCauseFunc

	mu        sync.Mutex
	known     *job.Job      // latest stored version of the job we wrote
	pending   *job.Progress // latest report not yet stored
	flushing  bool          // a flush is scheduled or running
	lastFlush time.Time
	flushed   chan struct{} // closed when no flush is scheduled or running
	timer     *time.Timer   // the scheduled flush, if it has not started
	closed    bool
	result    *store.Data
	artifacts []store.Data
	temps     []string
}

// Permanent wraps err so that the job fails at once, without retry.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

// ID returns the job's id.
func (t *Task) ID() string { return t.job.ID }

// Queue returns the job's queue.
func (t *Task) Queue() string { return t.job.Queue }

// Attempt returns the attempt number, from 1.
func (t *Task) Attempt() int { return t.job.Attempt }

// Job returns the job as it was claimed. It must not be modified.
func (t *Task) Job() *job.Job { return t.job }

// InputName is the input's original file name, if it had one.
func (t *Task) InputName() string { return t.job.Input.Name }

// OpenInput reads the job's input.
func (t *Task) OpenInput(ctx context.Context) (io.ReadCloser, error) {
	return t.r.e.store.OpenInput(ctx, t.job.ID)
}

// Progress reports progress. Calls are cheap: at most one report per
// ProgressEvery reaches the store and the hub, the latest one wins, and the
// last is always stored with the job's final state.
func (t *Task) Progress(current, total int64, message string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.pending = &job.Progress{Current: current, Total: total, Message: message}
	if t.flushing {
		return
	}
	t.flushing = true
	t.flushed = make(chan struct{})
	delay := time.Until(t.lastFlush.Add(t.r.e.opts.ProgressEvery))
	if delay <= 0 {
		go t.flush()
		return
	}
	t.timer = time.AfterFunc(delay, t.flush)
}

func (t *Task) flush() {
	t.mu.Lock()
	t.timer = nil
	p := t.pending
	t.pending = nil
	t.mu.Unlock()
	if p != nil {
		// The report must be stored even if the attempt is ending now.
		j, err := t.r.e.store.Progress(context.WithoutCancel(t.ctx), t.job.ID, t.job.LeaseToken, *p)
		switch {
		case err == nil:
			t.mu.Lock()
			t.known = j
			t.mu.Unlock()
			t.r.e.publish(j)
		case errors.Is(err, store.ErrLeaseLost), errors.Is(err, store.ErrNotFound):
			t.cancel(errLeaseLost)
		case t.ctx.Err() == nil:
			t.r.e.log.Warn("store progress", "job", t.job.ID, "trace_id", traceID(t.job), "err", err)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastFlush = time.Now()
	if t.pending != nil && !t.closed {
		t.timer = time.AfterFunc(t.r.e.opts.ProgressEvery, t.flush)
		return
	}
	t.flushing = false
	close(t.flushed)
}

// closeProgress stops reporting, waits for a flush in flight, and returns
// the report not stored yet, if any.
func (t *Task) closeProgress() *job.Progress {
	t.mu.Lock()
	t.closed = true
	if t.flushing && t.timer != nil && t.timer.Stop() {
		// The scheduled flush will not run: its report goes with the
		// final state instead, without waiting for the timer.
		t.timer = nil
		t.flushing = false
		close(t.flushed)
	}
	flushing, flushed := t.flushing, t.flushed
	t.mu.Unlock()
	if flushing {
		<-flushed
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending
	t.pending = nil
	return p
}

// SetResult sets the result to b.
func (t *Task) SetResult(contentType string, b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.result = &store.Data{Blob: job.Blob{ContentType: contentType, Size: int64(len(b))}, Bytes: b}
}

// SetResultFile sets the result to the file at path, which the task takes
// over: it is moved away at once, so the caller may remove its folder.
func (t *Task) SetResultFile(contentType, path string) error {
	path, size, err := t.adopt(path)
	if err != nil {
		return fmt.Errorf("result file: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.result = &store.Data{Blob: job.Blob{ContentType: contentType, Size: size}, Path: path}
	return nil
}

// adopt moves a file handed over by the handler into the engine's temporary
// folder (a rename on the same file system) and tracks it for removal.
func (t *Task) adopt(path string) (string, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", 0, err
	}
	if !st.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.CreateTemp(t.r.e.opts.TempDir, "file-*")
	if err != nil {
		return "", 0, err
	}
	dst := f.Name()
	f.Close()
	if err := os.Rename(path, dst); err != nil {
		if err := copyFile(dst, path); err != nil {
			os.Remove(dst)
			return "", 0, err
		}
		os.Remove(path)
	}
	t.mu.Lock()
	t.temps = append(t.temps, dst)
	t.mu.Unlock()
	return dst, st.Size(), nil
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// AddArtifact stores an artifact read from r, spooled to a file so that it
// is never held whole in memory.
func (t *Task) AddArtifact(name, contentType string, r io.Reader) error {
	if err := store.CheckName(name); err != nil {
		return err
	}
	f, err := os.CreateTemp(t.r.e.opts.TempDir, "artifact-*")
	if err != nil {
		return fmt.Errorf("artifact %s: %w", name, err)
	}
	_, err = io.Copy(f, r)
	if err = errors.Join(err, f.Close()); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("artifact %s: %w", name, err)
	}
	t.mu.Lock()
	t.temps = append(t.temps, f.Name())
	t.mu.Unlock()
	return t.addArtifact(name, contentType, f.Name())
}

// AddArtifactFile stores the file at path as an artifact; the task takes
// the file over and moves it away at once.
func (t *Task) AddArtifactFile(name, contentType, path string) error {
	if err := store.CheckName(name); err != nil {
		return err
	}
	path, _, err := t.adopt(path)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", name, err)
	}
	return t.addArtifact(name, contentType, path)
}

func (t *Task) addArtifact(name, contentType, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, a := range t.artifacts {
		if a.Name == name {
			t.artifacts = append(t.artifacts[:i], t.artifacts[i+1:]...)
			break
		}
	}
	t.artifacts = append(t.artifacts, store.Data{Blob: job.Blob{Name: name, ContentType: contentType, Size: st.Size()}, Path: path})
	return nil
}

// start runs a claimed job, whose worker slot is taken, on a goroutine of
// its own, owned by the engine's jobs wait group. (Keeping goroutines
// between jobs was measured slower: the collector shrinks the stacks of
// idle ones, which then grow again with the next job.)
func (r *runner) start(j *job.Job) {
	r.e.jobsWG.Add(1)
	r.e.opts.Metrics.Started(j.Queue, j.UpdatedAt.Sub(j.RunAt))
	r.e.publish(j)
	go r.runJob(j)
}

// runJob runs one job; its slot goes to the next buffered job, if any, as
// soon as the handler has returned.
func (r *runner) runJob(j *job.Job) {
	defer r.e.jobsWG.Done()
	var once sync.Once
	free := func() {
		once.Do(func() {
			if next := r.next(); next != nil {
				r.start(next)
			}
		})
	}
	defer free()
	r.run(j, free)
}

// run runs a claimed job and records its outcome. free gives its worker
// slot back as soon as the handler has returned: the outcome is still
// written before the job's event is published, but the next claim need not
// wait for that write, which would bind a pool's throughput to the store's
// round trips rather than to its handlers (the shutdown still waits for
// the write).
func (r *runner) run(j *job.Job, free func()) {
	e := r.e
	ctx, cancel := context.WithCancelCause(e.work)
	defer cancel(nil)
	timeout := j.Timeout
	if timeout == 0 {
		timeout = r.q.Timeout
	}
	if timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, timeout, errTimeout)
		defer stop()
	}
	if claimed := time.Since(j.UpdatedAt); claimed > e.opts.Lease/3 {
		// Held in the buffer longer than a heartbeat period (the jobs
		// ahead ran long): renew the lease before starting, or leave the
		// job if it is no longer ours.
		if _, err := e.store.Heartbeat(ctx, j.ID, j.LeaseToken, e.opts.Lease); err != nil {
			e.log.Warn("buffered job not started", "job", j.ID, "waited", claimed, "err", err)
			return
		}
	}
	t := &Task{r: r, job: j, ctx: ctx, cancel: cancel, timeout: timeout, known: j}
	e.running.Store(j.ID, t)
	// A newer attempt of the same job may have replaced this one already.
	defer e.running.CompareAndDelete(j.ID, t)

	began := time.Now()
	err := t.call()
	ran := time.Since(began)
	r.ran(ran)

	final := t.closeProgress()
	free()
	r.finish(t, err, final, ran)
}

func (t *Task) call() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panic: %v\n%s", p, debug.Stack())
		}
	}()
	return t.r.q.Handler.Run(t.ctx, t)
}

// heartbeats renews the leases of the jobs running here, every Lease/3,
// until ctx ends. One loop serves every running job: a goroutine and a
// ticker per job would cost memory in proportion to the jobs running, which
// may be tens of thousands of mostly idle ones.
func (e *Engine) heartbeats(ctx context.Context) {
	defer e.background.Done()
	tick := time.NewTicker(e.opts.Lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var tasks []*Task
		e.running.Range(func(_, v any) bool {
			tasks = append(tasks, v.(*Task))
			return true
		})
		// A few at once: the store batches concurrent writes, and one slow
		// round trip must not delay the others' renewal.
		work := make(chan *Task)
		var wg sync.WaitGroup
		for range min(len(tasks), heartbeatParallel) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for t := range work {
					t.heartbeat()
				}
			}()
		}
		for _, t := range tasks {
			work <- t
		}
		close(work)
		wg.Wait()
	}
}

const heartbeatParallel = 8

// heartbeat renews the task's lease once, and stops the task when the job
// is no longer its own.
func (t *Task) heartbeat() {
	if t.ctx.Err() != nil {
		return // finishing: its outcome is being recorded
	}
	e := t.r.e
	_, err := e.store.Heartbeat(t.ctx, t.job.ID, t.job.LeaseToken, e.opts.Lease)
	if errors.Is(err, store.ErrLeaseLost) || errors.Is(err, store.ErrNotFound) {
		// Canceled, deleted or rescued elsewhere: stop working on it.
		t.cancel(errLeaseLost)
		return
	}
	if err != nil && t.ctx.Err() == nil {
		e.log.Warn("heartbeat", "job", t.job.ID, "trace_id", traceID(t.job), "err", err)
	}
}

// finish records the outcome. The final state is stored before its event
// is published.
func (r *runner) finish(t *Task, err error, final *job.Progress, ran time.Duration) {
	e := r.e
	defer func() {
		for _, p := range t.temps {
			os.Remove(p) // gone already when the store took it over
		}
	}()
	cause := context.Cause(t.ctx)
	switch {
	case errors.Is(cause, errCanceled), errors.Is(cause, errDeleted), errors.Is(cause, errLeaseLost):
		// The job is no longer ours; whoever took it recorded its state.
		return
	}
	// Store writes must outlive the handler's context.
	ctx := context.WithoutCancel(t.ctx)
	var j *job.Job
	var serr error
	if err == nil && t.ctx.Err() == nil {
		j, serr = e.store.Complete(ctx, t.job.ID, t.job.LeaseToken,
			store.Outcome{Result: t.result, Artifacts: t.artifacts, Progress: final, Retention: r.q.Retention, Known: t.known})
	} else {
		j, serr = r.unfinished(ctx, t, err, cause, final)
	}
	if serr != nil {
		if !errors.Is(serr, store.ErrLeaseLost) && !errors.Is(serr, store.ErrNotFound) {
			e.log.Error("record job outcome", "job", t.job.ID, "trace_id", traceID(t.job), "err", serr)
		}
		return
	}
	r.recorded(ctx, t, j, ran)
}

// unfinished records an attempt that did not succeed: released at a
// shutdown, failed otherwise. It is apart from finish, as are the other
// steps off the path of a success, so that finish's frame stays small: a
// completion's calls run on the job's goroutine, whose stack would grow
// (and be copied) past its first size otherwise.
func (r *runner) unfinished(ctx context.Context, t *Task, err, cause error, final *job.Progress) (*job.Job, error) {
	e := r.e
	switch {
	case e.work.Err() != nil && !errors.Is(cause, errTimeout):
		// Interrupted by the shutdown: the job did nothing wrong, so it
		// goes back to its queue without spending an attempt.
		if final != nil {
			if _, perr := e.store.Progress(ctx, t.job.ID, t.job.LeaseToken, *final); perr != nil {
				e.log.Warn("store progress", "job", t.job.ID, "trace_id", traceID(t.job), "err", perr)
			}
		}
		return e.store.Release(ctx, t.job.ID, t.job.LeaseToken, job.Error{Message: "interrupted by shutdown", Code: job.CodeShutdown})
	default:
		f := store.Failure{Progress: final, Retention: r.q.Retention, Retryable: true, Backoff: e.backoff(t.job.Attempt)}
		var perm permanentError
		switch {
		case errors.Is(cause, errTimeout):
			f.Error = job.Error{Message: fmt.Sprintf("deadline exceeded: the attempt ran longer than its timeout of %s", t.timeout), Code: job.CodeTimeout}
		case errors.As(err, &perm):
			f.Error = job.Error{Message: err.Error(), Code: job.CodeHandler}
			f.Retryable = false
		default:
			if err == nil {
				err = context.Cause(t.ctx)
			}
			f.Error = job.Error{Message: err.Error(), Code: job.CodeHandler}
		}
		return e.store.Fail(ctx, t.job.ID, t.job.LeaseToken, f)
	}
}

// recorded tells of an attempt whose outcome the store recorded.
func (r *runner) recorded(ctx context.Context, t *Task, j *job.Job, ran time.Duration) {
	e := r.e
	e.opts.Metrics.Ran(j.Queue, ran, j)
	if e.log.Enabled(ctx, slog.LevelDebug) {
		e.log.Debug("job attempt ended", "job", j.ID, "queue", j.Queue, "attempt", t.job.Attempt, "state", j.State,
			"ran", ran, "trace_id", traceID(j))
	}
	e.opts.Metrics.Changed(j)
	e.publish(j)
	if j.State == job.Queued {
		// A retry: wake up when it is due.
		r.wake()
	}
}
