package api

import (
	"bufio"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/docket/docket/internal/job"
)

// Problems of the gateway's routes (package gateway), beside those of every
// app.
var (
	// ProblemRouteNotFound: no route, docket's or an upstream's, serves
	// the path.
	ProblemRouteNotFound = ProblemType{probNotFound}
	// ProblemTooLarge: the request body passes the configured limit.
	ProblemTooLarge = ProblemType{probTooLarge}
	// ProblemAsyncRequired: the route is declared require_async and was
	// called without asking for an asynchronous answer.
	ProblemAsyncRequired = ProblemType{probAsyncRequired}
	// ProblemBadGateway: the upstream of a proxied request did not answer.
	ProblemBadGateway = ProblemType{probBadGateway}
)

var (
	probAsyncRequired = problem{Type: "urn:docket:problem:async-required", Title: "This route must be called asynchronously", Status: http.StatusConflict}
	probBadGateway    = problem{Type: "urn:docket:problem:bad-gateway", Title: "The upstream did not answer", Status: http.StatusBadGateway}
)

// Preferences are the parts of a request's Prefer headers (RFC 7240)
// docket honours.
type Preferences struct {
	// Async: respond-async, answer 202 at once.
	Async bool
	// Wait: wait=N, the client would rather wait up to N seconds (bounded
	// by a minute) for the outcome.
	Wait time.Duration
}

// ParsePrefer reads the Prefer headers of h.
func ParsePrefer(h http.Header) Preferences {
	p := parsePrefer(h)
	return Preferences{Async: p.async, Wait: p.wait}
}

// Spool reads r, a body being received, as a job's input of contentType:
// in memory when small, else in a temporary file, hashed as it comes.
// Submit it as a job's input or Discard it.
func (s *Server) Spool(r io.Reader, contentType string) (*Upload, error) {
	in, err := s.spool(r, -1, contentType, "")
	if err != nil {
		return nil, err
	}
	return &Upload{Data: in.Data, Digest: in.digest}, nil
}

// recordedResponse reports whether a result is an HTTP response recorded
// by the gateway, which is served as the upstream sent it rather than as
// stored bytes.
func recordedResponse(b job.Blob) bool {
	mt, params, err := mime.ParseMediaType(b.ContentType)
	return err == nil && mt == "application/http" && strings.EqualFold(params["msgtype"], "response")
}

// replayResponse answers with a recorded HTTP response: its status, its
// headers and its body, streamed. A record that cannot be read is an
// internal error, answered before anything is written.
func replayResponse(w http.ResponseWriter, rc io.Reader) error {
	resp, err := http.ReadResponse(bufio.NewReaderSize(rc, 32<<10), nil)
	if err != nil {
		return fmt.Errorf("reading the recorded response: %w", err)
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	// The record's framing is its own, not the client's connection's.
	for _, c := range resp.Header["Connection"] {
		for f := range strings.SplitSeq(c, ",") {
			h.Del(textproto.TrimString(f))
		}
	}
	h.Del("Connection")
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
	return nil
}

// WriteResult answers 200 with a job's result read from rc: a recorded
// HTTP response as the upstream sent it, anything else as stored bytes
// under its own content type.
func (s *Server) WriteResult(w http.ResponseWriter, r *http.Request, b job.Blob, rc io.Reader) {
	if !recordedResponse(b) {
		serveBlob(w, b, rc)
		return
	}
	if err := replayResponse(w, rc); err != nil {
		s.fail(w, r, err)
	}
}

// status is the job's status monitor, for clients that follow redirects
// (the asynchronous request-reply pattern): 202 with Retry-After and the
// job while it is pending, 303 See Other to its result once it succeeded,
// and 200 with the job when it failed or was canceled, as there is no
// result to go to.
func (s *Server) status(w http.ResponseWriter, r *http.Request, c *caller) {
	j := s.load(w, r, c)
	if j == nil {
		return
	}
	switch j.State {
	case job.Succeeded:
		w.Header().Set("Location", jobPath(j.ID)+"/result")
		writeJob(w, http.StatusSeeOther, j)
	case job.Failed, job.Canceled:
		writeJob(w, http.StatusOK, j)
	default:
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Location", jobPath(j.ID)+"/status")
		writeJob(w, http.StatusAccepted, j)
	}
}
