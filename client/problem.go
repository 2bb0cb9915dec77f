package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Problem is an error answered by the server, as an RFC 9457 problem
// document. Callers branch on Status: 404 for an unknown (or another
// owner's) job, 409 for a transition the job's state forbids, 429 and 503
// for admission limits, to be retried after RetryAfter; or on Type, a
// stable URN such as "urn:docket:problem:queue-full".
type Problem struct {
	Type     string `json:"type,omitempty"`
	Title    string `json:"title,omitempty"`
	Status   int    `json:"status,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Code is a failed job's error code (such as "deadline_exceeded") when
	// the problem reports its failure, so that callers need not parse Detail.
	Code string `json:"code,omitempty"`
	// RetryAfter is how long the server asked to wait before trying again,
	// from the Retry-After header (or the document's retry_after, in
	// seconds); 0 if it did not say.
	RetryAfter time.Duration `json:"-"`
}

// Error reads like "404 Not Found: no job 0193…".
func (p *Problem) Error() string {
	title := p.Title
	if title == "" {
		title = http.StatusText(p.Status)
	}
	s := title
	if p.Status != 0 {
		s = strconv.Itoa(p.Status) + " " + title
	}
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}

// IsNotFound reports whether err is the server saying the job, artifact or
// queue does not exist. Jobs of other owners are reported the same way, so
// that ids cannot be probed.
func IsNotFound(err error) bool {
	var p *Problem
	return errors.As(err, &p) && p.Status == http.StatusNotFound
}

// ErrPending is the error Result and Artifact return while the job has not
// finished: errors.Is(err, ErrPending) tells it from a failure. The error
// itself is a *PendingError, which says when to ask again.
var ErrPending = errors.New("job not finished yet")

// PendingError is the answer to asking for the result of a job that is
// still queued or running.
type PendingError struct {
	// RetryAfter is when the server suggests asking again; 0 if it did not say.
	RetryAfter time.Duration
	// Job is the job as the server reported it with the answer, if it did.
	Job *Job
}

// Error names the job's state when it is known.
func (e *PendingError) Error() string {
	if e.Job != nil && e.Job.State != "" {
		return fmt.Sprintf("job %s is %s, no result yet", e.Job.ID, e.Job.State)
	}
	return ErrPending.Error()
}

// Is makes errors.Is(err, ErrPending) true.
func (e *PendingError) Is(target error) bool { return target == ErrPending }

// problemOf turns an error response into a *Problem, whatever the server
// (or a proxy in front of it) answered: a problem document, other JSON, or
// text.
func problemOf(resp *http.Response) *Problem {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	p := &Problem{}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var extra struct {
		RetryAfter json.Number `json:"retry_after"`
	}
	if strings.HasSuffix(mt, "json") && json.Unmarshal(b, p) == nil {
		json.Unmarshal(b, &extra) // optional; a malformed one is ignored
	} else if s := strings.TrimSpace(string(b)); s != "" && (mt == "" || strings.HasPrefix(mt, "text/plain")) {
		p.Detail = truncate(s, 300)
	}
	if p.Status == 0 {
		p.Status = resp.StatusCode
	}
	if p.Title == "" {
		p.Title = http.StatusText(resp.StatusCode)
	}
	p.RetryAfter = retryAfter(resp.Header)
	if p.RetryAfter == 0 && extra.RetryAfter != "" {
		if f, err := extra.RetryAfter.Float64(); err == nil && f > 0 {
			p.RetryAfter = time.Duration(f * float64(time.Second))
		}
	}
	return p
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date.
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
