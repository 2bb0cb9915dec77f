package client

import "time"

// State is a job's state. Only Terminal states are final: a running job
// whose worker dies goes back to queued.
type State string

// The states of a job.
const (
	StateQueued    State = "queued" // includes jobs delayed to a later run_at
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCanceled  State = "canceled"
)

// Terminal reports whether s is final, so that there is nothing left to
// wait for.
func (s State) Terminal() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCanceled
}

// Job is a job as the server reports it: a snapshot, current as of Version.
// Times the server reports as null (a job not yet started or finished) are
// zero.
type Job struct {
	ID    string `json:"id"`
	Queue string `json:"queue"`
	// Owner is the tenant the submitting token belongs to; empty in open mode.
	Owner string `json:"owner,omitempty"`
	State State  `json:"state"`
	// Version increases on every change; Poll uses it to wait for the next one.
	Version  int64    `json:"version"`
	Progress Progress `json:"progress"`
	// Position is how many runnable jobs of the queue are ahead, while queued.
	Position    int64             `json:"position"`
	Attempt     int               `json:"attempt"`
	MaxAttempts int               `json:"max_attempts"`
	Priority    int               `json:"priority"`
	Labels      map[string]string `json:"labels,omitempty"`
	Input       Blob              `json:"input"`
	// Result is nil until the job has succeeded.
	Result *Blob `json:"result"`
	// Artifacts is how many named files the job produced besides its result.
	Artifacts int `json:"artifacts"`
	// Error is the last failure, kept while retries remain; nil if none.
	Error      *JobError `json:"error"`
	CreatedAt  time.Time `json:"created_at,omitzero"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
	// ExpiresAt is when a finished job will be purged.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Links     Links     `json:"links"`
}

// Terminal reports whether the job has finished, one way or another.
func (j *Job) Terminal() bool { return j.State.Terminal() }

// Progress is what the job's handler last reported. The server coalesces
// reports, so intermediate steps may be skipped, never the last one.
type Progress struct {
	Current int64  `json:"current"`
	Total   int64  `json:"total"` // 0: unknown
	Message string `json:"message,omitempty"`
	// Percent is nil when Total is unknown, so that "no idea" is not
	// mistaken for 0%.
	Percent *float64 `json:"percent"`
}

// Blob describes stored bytes: an input or a result.
type Blob struct {
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	// Filename is the name an input was submitted under, if any.
	Filename string `json:"filename,omitempty"`
}

// JobError is a job's last failure.
type JobError struct {
	Message string `json:"message"`
	// Code classifies the failure, e.g. "deadline_exceeded" for a timeout.
	Code string `json:"code,omitempty"`
}

// Links are the job's URLs, relative to the server unless the server made
// them absolute.
type Links struct {
	Self      string `json:"self,omitempty"`
	Result    string `json:"result,omitempty"`
	Events    string `json:"events,omitempty"`
	Cancel    string `json:"cancel,omitempty"`
	Artifacts string `json:"artifacts,omitempty"`
}

// Artifact is one named file a job produced.
type Artifact struct {
	Name        string `json:"name"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	URL         string `json:"url,omitempty"`
}

// JobList is one page of jobs, newest first.
type JobList struct {
	Jobs []Job `json:"jobs"`
	// NextCursor fetches the next page; empty on the last one.
	NextCursor string `json:"next_cursor,omitempty"`
}

// Queue is a queue's settings and how many of its jobs are in each state.
type Queue struct {
	Name        string `json:"name"`
	Concurrency int    `json:"concurrency"`
	Paused      bool   `json:"paused"`
	// MaxQueued is the admission limit: submits beyond it are refused with
	// 503. 0 means none.
	MaxQueued int `json:"max_queued"`
	// MaxAttempts, Timeout and Retention are the defaults of the queue's
	// jobs; Timeout and Retention are Go durations ("10m", "24h0m0s"),
	// Timeout empty when attempts have no deadline.
	MaxAttempts int         `json:"max_attempts,omitempty"`
	Timeout     string      `json:"timeout,omitempty"`
	Retention   string      `json:"retention,omitempty"`
	Counts      QueueCounts `json:"counts"`
}

// QueueCounts are a queue's jobs by state.
type QueueCounts struct {
	Queued    int64 `json:"queued"`
	Running   int64 `json:"running"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	Canceled  int64 `json:"canceled"`
}
