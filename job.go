package docket

import (
	"context"
	"io"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
)

// Job is a running job as its handler sees it.
type Job struct{ t *engine.Task }

// ID is the job's id.
func (j *Job) ID() string { return j.t.ID() }

// Queue is the job's queue.
func (j *Job) Queue() string { return j.t.Queue() }

// Attempt is the attempt number, from 1. Delivery is at least once: a
// handler can use it to stay idempotent.
func (j *Job) Attempt() int { return j.t.Attempt() }

// Labels are the job's labels.
func (j *Job) Labels() map[string]string { return j.t.Job().Labels }

// InputType is the input's content type.
func (j *Job) InputType() string { return j.t.Job().Input.ContentType }

// InputName is the input's file name, if it was submitted as a file.
func (j *Job) InputName() string { return j.t.InputName() }

// OpenInput streams the input, which may be large.
func (j *Job) OpenInput(ctx context.Context) (io.ReadCloser, error) { return j.t.OpenInput(ctx) }

// Input reads the whole input into memory.
func (j *Job) Input(ctx context.Context) ([]byte, error) {
	rc, err := j.t.OpenInput(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// Progress reports progress; total 0 means unknown. Call it as often as
// convenient: reports are coalesced to a few stored updates per second, and
// the last one is always kept.
func (j *Job) Progress(current, total int64, message string) { j.t.Progress(current, total, message) }

// SetResult sets the job's result, stored when the handler returns nil.
func (j *Job) SetResult(contentType string, b []byte) { j.t.SetResult(contentType, b) }

// SetResultFile sets the result to a file, which the job takes over (it is
// moved, not copied, when it can be): the way to return a large result.
func (j *Job) SetResultFile(contentType, path string) error {
	return j.t.SetResultFile(contentType, path)
}

// AddArtifact stores a named file with the result, streamed from r. Names
// are 1 to 255 letters, digits, '.', '_' or '-', not starting with '.'.
func (j *Job) AddArtifact(name, contentType string, r io.Reader) error {
	return j.t.AddArtifact(name, contentType, r)
}

// State is a job's state.
type State string

// The states of a job.
const (
	StateQueued    State = State(job.Queued)
	StateRunning   State = State(job.Running)
	StateSucceeded State = State(job.Succeeded)
	StateFailed    State = State(job.Failed)
	StateCanceled  State = State(job.Canceled)
)

// Terminal reports whether the job is finished.
func (s State) Terminal() bool { return job.State(s).Terminal() }

// Progress is a job's last reported progress.
type Progress = job.Progress

// JobError is a job's last failure.
type JobError = job.Error

// Blob describes stored bytes: an input, a result or an artifact.
type Blob = job.Blob

// JobInfo is a snapshot of a job.
type JobInfo struct {
	ID          string
	Queue       string
	Owner       string
	State       State
	Progress    Progress
	Position    int64 // jobs ahead of it, while queued
	Attempt     int
	MaxAttempts int
	Priority    int
	Labels      map[string]string
	Input       Blob
	Result      *Blob
	Artifacts   int
	Error       *JobError
	CreatedAt   time.Time
	StartedAt   time.Time
	FinishedAt  time.Time
	UpdatedAt   time.Time
	ExpiresAt   time.Time
	Version     int64
}

func infoOf(j *job.Job) *JobInfo {
	if j == nil {
		return nil
	}
	return &JobInfo{ID: j.ID, Queue: j.Queue, Owner: j.Owner, State: State(j.State), Progress: j.Progress,
		Position: j.Position, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Priority: j.Priority, Labels: j.Labels,
		Input: j.Input, Result: j.Result, Artifacts: j.Artifacts, Error: j.Error, CreatedAt: j.CreatedAt,
		StartedAt: j.StartedAt, FinishedAt: j.FinishedAt, UpdatedAt: j.UpdatedAt, ExpiresAt: j.ExpiresAt, Version: j.Version}
}
