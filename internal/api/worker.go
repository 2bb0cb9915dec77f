package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// The remote-worker protocol (docs/WORKERS.md): a worker claims a job of a
// queue, reads its input, reports progress and heartbeats, and completes
// or fails it, every call after the claim carrying the lease token in the
// LeaseHeader header. Workers act on the jobs of every owner: a job's
// owner is who may read it, a worker is what runs it.

// LeaseHeader carries a remote worker's lease token.
const LeaseHeader = "Docket-Lease"

const (
	// defaultClaimWait is how long a claim waits for a job unless told.
	defaultClaimWait = 30 * time.Second
	// inlineInput is the largest input a claim answer carries inline
	// (base64): smaller ones save the worker a request, larger ones are
	// fetched, streamed, from the input URL.
	inlineInput = 64 << 10
	// maxWorkerJSON bounds the JSON bodies of claims, progress and failures.
	maxWorkerJSON = 64 << 10
	// maxMessage bounds a progress message and a failure's message.
	maxMessage = 4 << 10
)

// Drain ends the claims waiting for a job, which answer 204 at once, and
// refuses new ones with 503: a job handed out on a connection that the
// shutdown is about to cut might never reach its worker, and would wait for
// its lease to lapse. Register it with http.Server.RegisterOnShutdown.
func (s *Server) Drain() { s.stopClaims() }

type leaseJSON struct {
	Token            string     `json:"token"`
	ExpiresAt        *time.Time `json:"expires_at"`
	TTLSeconds       float64    `json:"ttl_seconds"`
	HeartbeatSeconds float64    `json:"heartbeat_seconds"`
	Deadline         *time.Time `json:"deadline"`
}

type workerInputJSON struct {
	inputJSON
	URL string `json:"url"`
	// Data is the input, base64, when it is small; absent otherwise.
	Data *string `json:"data,omitempty"`
}

// heldJSON is a job as its worker sees it: the job as GET shows it, with
// its lease and where to read its input.
type heldJSON struct {
	jobJSON
	Input workerInputJSON `json:"input"`
	Lease leaseJSON       `json:"lease"`
}

func toHeld(l *engine.Lease) heldJSON {
	j := toJSON(l.Job)
	return heldJSON{jobJSON: j, Input: workerInputJSON{inputJSON: j.Input, URL: jobPath(l.Job.ID) + "/input"},
		Lease: leaseJSON{Token: l.Token, ExpiresAt: timePtr(l.ExpiresAt), TTLSeconds: l.Duration.Seconds(),
			HeartbeatSeconds: (l.Duration / 3).Seconds(), Deadline: timePtr(l.Deadline)}}
}

// claimRequest is the optional JSON body of a claim; query parameters of
// the same names override it.
type claimRequest struct {
	Worker string          `json:"worker"`
	Lease  json.RawMessage `json:"lease"`
	Wait   json.RawMessage `json:"wait"`
}

// rawArg is a JSON body's option as a query parameter would give it.
func rawArg(m json.RawMessage) string {
	if v := string(bytes.TrimSpace(m)); v != "null" {
		return v
	}
	return ""
}

// seconds reads a duration given as a Go duration ("30s") or a number of
// seconds (30, "1.5"), the form scripts find easiest.
func seconds(v string) (time.Duration, error) {
	v = strings.Trim(strings.TrimSpace(v), `"`)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f > 1e6 {
			return 0, errors.New("out of range")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("want a duration such as 30s, or a number of seconds")
	}
	return d, nil
}

func (s *Server) claimJob(w http.ResponseWriter, r *http.Request, c *caller) {
	queue := r.PathValue("queue")
	if _, ok := s.e.Queue(queue); !ok {
		writeProblem(w, r, probQueueNotFound.with("no queue named "+strconv.Quote(queue)))
		return
	}
	var req claimRequest
	if p := readJSON(w, r, &req, true); p != nil {
		writeProblem(w, r, *p)
		return
	}
	q := r.URL.Query()
	for key := range q {
		if key != "worker" && key != "lease" && key != "wait" {
			writeProblem(w, r, probBadRequest.with(fmt.Sprintf("unknown parameter %q (want worker, lease, wait)", key)))
			return
		}
	}
	if q.Has("worker") {
		req.Worker = q.Get("worker")
	}
	leaseArg, waitArg := rawArg(req.Lease), rawArg(req.Wait)
	if q.Has("lease") {
		leaseArg = q.Get("lease")
	}
	if q.Has("wait") {
		waitArg = q.Get("wait")
	}
	wait := defaultClaimWait
	if waitArg != "" {
		d, err := seconds(waitArg)
		if err == nil && d > maxWait {
			err = fmt.Errorf("at most %s", maxWait)
		}
		if err != nil {
			writeProblem(w, r, probBadRequest.with("wait="+strconv.Quote(waitArg)+": "+err.Error()))
			return
		}
		wait = d
	}
	var lease time.Duration
	if leaseArg != "" {
		d, err := seconds(leaseArg)
		if err == nil && (d < engine.MinLease || d > engine.MaxLease) {
			err = fmt.Errorf("want %s to %s", engine.MinLease, engine.MaxLease)
		}
		if err != nil {
			writeProblem(w, r, probBadRequest.with("lease="+strconv.Quote(leaseArg)+": "+err.Error()))
			return
		}
		lease = d
	}
	if len(req.Worker) > 200 || strings.ContainsFunc(req.Worker, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		writeProblem(w, r, probBadRequest.with("worker: at most 200 printable characters"))
		return
	}
	if req.Worker == "" {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		req.Worker = "remote@" + host
	}
	if s.claims.Err() != nil {
		writeProblem(w, r, probUnavailable.with("the server is shutting down").after(time.Second))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.claims, cancel)()

	l, err := s.e.ClaimRemote(ctx, engine.RemoteClaim{Queue: queue, Worker: req.Worker, Lease: lease, Wait: wait})
	switch {
	case errors.Is(err, engine.ErrUnknownQueue):
		writeProblem(w, r, probQueueNotFound.with(err.Error()))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	case l == nil:
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	out := toHeld(l)
	if l.Job.Input.Size <= inlineInput {
		if data, err := s.readInline(r.Context(), l.Job.ID); err == nil {
			out.Input.Data = &data
		} else {
			// The worker can still fetch it from the input URL.
			s.logger(r).Warn("read input of claimed job", "job", l.Job.ID, "err", err)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", jobPath(l.Job.ID))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) readInline(ctx context.Context, id string) (string, error) {
	rc, err := s.e.Store().OpenInput(ctx, id)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, inlineInput+1))
	if err != nil {
		return "", err
	}
	if len(b) > inlineInput {
		return "", errors.New("input larger than its recorded size")
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// readJSON decodes an optional (or required) JSON body into v, refusing
// unknown fields so that a misspelt one is not silently ignored.
func readJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) *problem {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWorkerJSON))
	if err != nil {
		return bodyProblem(err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		p := probInvalidJSON.with("a JSON object is needed")
		return &p
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			p := probMediaType.with("Content-Type " + strconv.Quote(ct) + ": want application/json")
			return &p
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		p := probInvalidJSON.with(err.Error())
		return &p
	}
	if dec.More() {
		p := probInvalidJSON.with("more than one JSON value")
		return &p
	}
	return nil
}

// leaseOf reads the lease token of a worker's call, or answers 400.
func leaseOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok := strings.TrimSpace(r.Header.Get(LeaseHeader))
	if tok == "" {
		writeProblem(w, r, probBadRequest.with("send the lease token of the claim in the "+LeaseHeader+" header"))
		return "", false
	}
	return tok, true
}

// leaseFailed answers an error of a worker's call: lease-lost problems say
// why in code, and what became of the job in job_state.
func (s *Server) leaseFailed(w http.ResponseWriter, r *http.Request, err error) {
	var lost *engine.LeaseLostError
	if errors.As(err, &lost) {
		p := probLeaseLost.with(lost.Error())
		p.Code, p.JobState = lost.Reason, string(lost.State)
		writeProblem(w, r, p)
		return
	}
	s.fail(w, r, err)
}

func (s *Server) jobInput(w http.ResponseWriter, r *http.Request, c *caller) {
	tok, ok := leaseOf(w, r)
	if !ok {
		return
	}
	j, err := s.e.RemoteJob(r.Context(), r.PathValue("id"), tok)
	if err != nil {
		s.leaseFailed(w, r, err)
		return
	}
	rc, err := s.e.Store().OpenInput(r.Context(), j.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	if j.Input.Name != "" {
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": j.Input.Name}))
	}
	w.Header().Set("Cache-Control", "no-store")
	serveBlob(w, j.Input, rc)
}

func (s *Server) heartbeatJob(w http.ResponseWriter, r *http.Request, c *caller) {
	tok, ok := leaseOf(w, r)
	if !ok {
		return
	}
	l, err := s.e.HeartbeatRemote(r.Context(), r.PathValue("id"), tok)
	if err != nil {
		s.leaseFailed(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, toHeld(l))
}

type progressRequest struct {
	Current *int64 `json:"current"`
	Total   int64  `json:"total"`
	Message string `json:"message"`
}

func (s *Server) progressJob(w http.ResponseWriter, r *http.Request, c *caller) {
	tok, ok := leaseOf(w, r)
	if !ok {
		return
	}
	var req progressRequest
	if p := readJSON(w, r, &req, false); p != nil {
		writeProblem(w, r, *p)
		return
	}
	switch {
	case req.Current == nil:
		writeProblem(w, r, probInvalidField.with("current is required"))
		return
	case *req.Current < 0 || req.Total < 0:
		writeProblem(w, r, probInvalidField.with("current and total must not be negative"))
		return
	case len(req.Message) > maxMessage:
		writeProblem(w, r, probInvalidField.with(fmt.Sprintf("message is limited to %d bytes", maxMessage)))
		return
	}
	l, err := s.e.ProgressRemote(r.Context(), r.PathValue("id"), tok, job.Progress{Current: *req.Current, Total: req.Total, Message: req.Message})
	if err != nil {
		s.leaseFailed(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, toHeld(l))
}

type failRequest struct {
	Error     string `json:"error"`
	Retryable *bool  `json:"retryable"`
	Code      string `json:"code"`
}

// validCode reports whether a worker's error code is a short token, such
// as bad_input, that clients can switch on.
func validCode(code string) bool {
	if len(code) > 64 {
		return false
	}
	for _, r := range code {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

func (s *Server) failJob(w http.ResponseWriter, r *http.Request, c *caller) {
	tok, ok := leaseOf(w, r)
	if !ok {
		return
	}
	var req failRequest
	if p := readJSON(w, r, &req, false); p != nil {
		writeProblem(w, r, *p)
		return
	}
	switch {
	case strings.TrimSpace(req.Error) == "":
		writeProblem(w, r, probInvalidField.with("error is required: the message the job's owner will see"))
		return
	case len(req.Error) > maxMessage:
		writeProblem(w, r, probInvalidField.with(fmt.Sprintf("error is limited to %d bytes", maxMessage)))
		return
	case !validCode(req.Code):
		writeProblem(w, r, probInvalidField.with("code: at most 64 letters, digits, '_', '-' and '.'"))
		return
	}
	retryable := req.Retryable == nil || *req.Retryable
	j, err := s.e.FailRemote(r.Context(), r.PathValue("id"), tok, engine.RemoteFailure{Message: req.Error, Code: req.Code, Retryable: retryable})
	if err != nil {
		s.leaseFailed(w, r, err)
		return
	}
	writeJob(w, http.StatusOK, j)
}

// spooled is what a completion hands to the store: its files are removed
// after the call, whatever the store did with them.
type spooled struct {
	result    *store.Data
	artifacts []store.Data
}

func (sp *spooled) discard() {
	if sp.result != nil && sp.result.Path != "" {
		os.Remove(sp.result.Path)
	}
	for _, a := range sp.artifacts {
		if a.Path != "" {
			os.Remove(a.Path)
		}
	}
}

func (s *Server) completeJob(w http.ResponseWriter, r *http.Request, c *caller) {
	tok, ok := leaseOf(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	// A lost lease is answered before a large result is read for nothing.
	if _, err := s.e.RemoteJob(r.Context(), id, tok); err != nil {
		s.leaseFailed(w, r, err)
		return
	}
	sp, p := s.readOutcome(w, r)
	defer sp.discard()
	if p != nil {
		writeProblem(w, r, *p)
		return
	}
	j, err := s.e.CompleteRemote(r.Context(), id, tok, sp.result, sp.artifacts)
	if errors.Is(err, store.ErrName) {
		writeProblem(w, r, probBadRequest.with(err.Error()))
		return
	}
	if err != nil {
		s.leaseFailed(w, r, err)
		return
	}
	writeJob(w, http.StatusOK, j)
}

// readOutcome reads a completion's body: the result itself, or a
// multipart/form-data form with a "result" part and "artifact" parts.
// Bodies are spooled as submits are, never held whole in memory.
func (s *Server) readOutcome(w http.ResponseWriter, r *http.Request) (*spooled, *problem) {
	sp := &spooled{}
	body := r.Body
	if s.cfg.MaxBody > 0 {
		body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	}
	fail := func(err error) (*spooled, *problem) {
		return sp, bodyProblem(err)
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		in, err := s.spool(body, r.ContentLength, "application/octet-stream", "")
		if err != nil {
			return fail(err)
		}
		if in.Size == 0 {
			in.discard()
			return sp, nil // nothing sent: success without a result
		}
		sp.result = &in.Data
		return sp, nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		p := probMediaType.with("Content-Type " + strconv.Quote(ct) + ": " + err.Error())
		return sp, &p
	}
	if mt != "multipart/form-data" {
		in, err := s.spool(body, r.ContentLength, ct, "")
		if err != nil {
			return fail(err)
		}
		sp.result = &in.Data
		return sp, nil
	}
	if params["boundary"] == "" {
		p := probMediaType.with("multipart/form-data without a boundary")
		return sp, &p
	}
	mr := multipart.NewReader(body, params["boundary"])
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return sp, nil
		}
		if err != nil {
			return fail(err)
		}
		pct := part.Header.Get("Content-Type")
		switch part.FormName() {
		case "result":
			if sp.result != nil {
				p := probBadRequest.with(`more than one "result" part`)
				return sp, &p
			}
			if pct == "" {
				pct = "application/octet-stream"
			}
			in, err := s.spool(part, -1, pct, "")
			if err != nil {
				return fail(err)
			}
			sp.result = &in.Data
		case "artifact":
			// The filename as sent: FileName would strip a path, turning a
			// name such as ../x into another artifact than the one meant.
			_, cd, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
			name := cd["filename"]
			if err := store.CheckName(name); err != nil {
				p := probBadRequest.with(`artifact part: its filename is the artifact's name: ` + err.Error())
				return sp, &p
			}
			if seen[name] {
				p := probBadRequest.with("artifact " + strconv.Quote(name) + " given twice")
				return sp, &p
			}
			seen[name] = true
			if pct == "" {
				if pct = mime.TypeByExtension(filepath.Ext(name)); pct == "" {
					pct = "application/octet-stream"
				}
			}
			in, err := s.spool(part, -1, pct, name)
			if err != nil {
				return fail(err)
			}
			sp.artifacts = append(sp.artifacts, in.Data)
		default:
			p := probBadRequest.with(fmt.Sprintf("unknown part %q (want result, artifact)", part.FormName()))
			part.Close()
			return sp, &p
		}
	}
}
