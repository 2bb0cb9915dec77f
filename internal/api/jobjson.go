package api

import (
	"encoding/json"
	"math"
	"time"

	"github.com/docket/docket/internal/job"
)

// jobJSON is a job as the API shows it (DESIGN §2).
type jobJSON struct {
	ID          string            `json:"id"`
	Queue       string            `json:"queue"`
	Owner       string            `json:"owner,omitempty"`
	State       job.State         `json:"state"`
	Version     int64             `json:"version"`
	Progress    progressJSON      `json:"progress"`
	Position    int64             `json:"position"`
	Attempt     int               `json:"attempt"`
	MaxAttempts int               `json:"max_attempts"`
	Priority    int               `json:"priority"`
	Labels      map[string]string `json:"labels"`
	Input       inputJSON         `json:"input"`
	Result      *resultJSON       `json:"result"`
	Artifacts   int               `json:"artifacts"`
	Error       *job.Error        `json:"error"`
	CreatedAt   *time.Time        `json:"created_at"`
	StartedAt   *time.Time        `json:"started_at"`
	FinishedAt  *time.Time        `json:"finished_at"`
	UpdatedAt   *time.Time        `json:"updated_at"`
	ExpiresAt   *time.Time        `json:"expires_at"`
	Links       linksJSON         `json:"links"`
}

type progressJSON struct {
	Current int64    `json:"current"`
	Total   int64    `json:"total"`
	Message string   `json:"message"`
	Percent *float64 `json:"percent"` // null while the total is unknown
}

type inputJSON struct {
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	Filename    string `json:"filename,omitempty"`
}

type resultJSON struct {
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
}

type linksJSON struct {
	Self      string `json:"self"`
	Result    string `json:"result"`
	Events    string `json:"events"`
	Cancel    string `json:"cancel"`
	Artifacts string `json:"artifacts"`
}

func jobPath(id string) string { return "/v1/jobs/" + id }

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func toJSON(j *job.Job) jobJSON {
	self := jobPath(j.ID)
	out := jobJSON{ID: j.ID, Queue: j.Queue, Owner: j.Owner, State: j.State, Version: j.Version,
		Progress: progressJSON{Current: j.Progress.Current, Total: j.Progress.Total, Message: j.Progress.Message},
		Position: j.Position, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Priority: j.Priority, Labels: j.Labels,
		Input:     inputJSON{ContentType: j.Input.ContentType, Size: j.Input.Size, Filename: j.Input.Name},
		Artifacts: j.Artifacts, Error: j.Error,
		CreatedAt: timePtr(j.CreatedAt), StartedAt: timePtr(j.StartedAt), FinishedAt: timePtr(j.FinishedAt),
		UpdatedAt: timePtr(j.UpdatedAt), ExpiresAt: timePtr(j.ExpiresAt),
		Links: linksJSON{Self: self, Result: self + "/result", Events: self + "/events", Cancel: self + "/cancel", Artifacts: self + "/artifacts"}}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if p := j.Progress.Percent(); p >= 0 {
		p = math.Round(p*10) / 10
		out.Progress.Percent = &p
	}
	if j.Result != nil {
		out.Result = &resultJSON{ContentType: j.Result.ContentType, Size: j.Result.Size}
	}
	return out
}

// JobJSON renders a job as GET /v1/jobs/{id} does, for webhook bodies: a
// receiver then parses one shape whichever way it learns of a job. The
// position is not known outside a read, and is 0.
func JobJSON(j *job.Job) ([]byte, error) {
	return json.Marshal(toJSON(j))
}
