package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// A problem is an RFC 9457 error response. Its type is a stable URN that
// clients can switch on; the title is fixed per type, the detail is about
// this occurrence.
type problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Code is a failed job's error code, for job-failed problems, and why
	// the lease was lost, for lease-lost problems.
	Code string `json:"code,omitempty"`
	// JobState is what became of the job, for lease-lost problems.
	JobState string `json:"job_state,omitempty"`

	retryAfter time.Duration
}

// internalDetail is all a client learns of an unexpected error.
const internalDetail = "internal error; the server's log has its cause (look for this request's X-Request-Id)"

// Problem types. Clients rely on these; never change one.
var (
	probBadRequest      = problem{Type: "urn:docket:problem:bad-request", Title: "Bad request", Status: http.StatusBadRequest}
	probInvalidField    = problem{Type: "urn:docket:problem:invalid-field", Title: "Invalid field", Status: http.StatusUnprocessableEntity}
	probInvalidJSON     = problem{Type: "urn:docket:problem:invalid-json", Title: "Body is not valid JSON", Status: http.StatusBadRequest}
	probUnauthorized    = problem{Type: "urn:docket:problem:unauthorized", Title: "Missing or unknown token", Status: http.StatusUnauthorized}
	probForbidden       = problem{Type: "urn:docket:problem:forbidden", Title: "Token lacks the scope", Status: http.StatusForbidden}
	probNotFound        = problem{Type: "urn:docket:problem:not-found", Title: "Not found", Status: http.StatusNotFound}
	probJobNotFound     = problem{Type: "urn:docket:problem:job-not-found", Title: "No such job", Status: http.StatusNotFound}
	probQueueNotFound   = problem{Type: "urn:docket:problem:queue-not-found", Title: "No such queue", Status: http.StatusNotFound}
	probArtifactMissing = problem{Type: "urn:docket:problem:artifact-not-found", Title: "No such artifact", Status: http.StatusNotFound}
	probMethod          = problem{Type: "urn:docket:problem:method-not-allowed", Title: "Method not allowed", Status: http.StatusMethodNotAllowed}
	probConflict        = problem{Type: "urn:docket:problem:state-conflict", Title: "The job's state does not allow this", Status: http.StatusConflict}
	probJobFailed       = problem{Type: "urn:docket:problem:job-failed", Title: "The job failed", Status: http.StatusInternalServerError}
	probLeaseLost       = problem{Type: "urn:docket:problem:lease-lost", Title: "The worker no longer holds the job", Status: http.StatusConflict}
	probJobCanceled     = problem{Type: "urn:docket:problem:job-canceled", Title: "The job was canceled", Status: http.StatusConflict}
	probResultExpired   = problem{Type: "urn:docket:problem:result-expired", Title: "The job's result has expired", Status: http.StatusGone}
	probTooLarge        = problem{Type: "urn:docket:problem:body-too-large", Title: "Request body too large", Status: http.StatusRequestEntityTooLarge}
	probMediaType       = problem{Type: "urn:docket:problem:unsupported-media-type", Title: "Unsupported media type", Status: http.StatusUnsupportedMediaType}
	probRateLimited     = problem{Type: "urn:docket:problem:rate-limited", Title: "Too many requests", Status: http.StatusTooManyRequests}
	probQueueFull       = problem{Type: "urn:docket:problem:queue-full", Title: "The queue is full", Status: http.StatusServiceUnavailable}
	probUnavailable     = problem{Type: "urn:docket:problem:unavailable", Title: "Service unavailable", Status: http.StatusServiceUnavailable}
	probTimeout         = problem{Type: "urn:docket:problem:job-timeout", Title: "The job reached its timeout", Status: http.StatusGatewayTimeout}
	probInternal        = problem{Type: "urn:docket:problem:internal", Title: "Internal error", Status: http.StatusInternalServerError}
)

// with returns a copy of p about this occurrence.
func (p problem) with(detail string) problem {
	p.Detail = detail
	return p
}

func (p problem) after(d time.Duration) problem {
	p.retryAfter = d
	return p
}

func writeProblem(w http.ResponseWriter, r *http.Request, p problem) {
	if p.Instance == "" && r != nil {
		p.Instance = r.URL.Path
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Del("ETag")
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((p.retryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// bodyProblem is the problem of a request body that could not be read: too
// large (413) or broken off (400).
func bodyProblem(err error) *problem {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		p := probTooLarge.with(fmt.Sprintf("the body is limited to %d bytes", tooBig.Limit))
		return &p
	}
	p := probBadRequest.with("reading the body: " + err.Error())
	return &p
}
