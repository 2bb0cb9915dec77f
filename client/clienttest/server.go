// Package clienttest is an in-memory stand-in for a docket server that
// answers in the shapes of its HTTP API, for testing code built on package
// client without running a server.
//
// It runs no work: jobs stay queued until the test moves them along with
// Progress, Succeed, Fail and AddArtifact, typically from a function given
// to OnSubmit. It keeps only the first MiB of each input, so tests can
// submit inputs of any size.
package clienttest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docket/docket/client"
)

// keep is how much of each input a Server remembers.
const keep = 1 << 20

// Server is a fake docket server listening on a loopback address.
type Server struct {
	// URL is the server's base URL, for client.New.
	URL string

	hs    *httptest.Server
	token string

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change, to wake long polls
	seq      int
	order    []string // ids, oldest first
	jobs     map[string]*fakeJob
	idem     map[string]string
	queues   map[string]*client.Queue
	onSubmit func(id string)
}

type fakeJob struct {
	job        client.Job
	sub        Submission
	result     []byte
	resultType string
	artifacts  []artifact
}

type artifact struct {
	name, contentType string
	b                 []byte
}

// Submission is what a submit carried.
type Submission struct {
	Query     url.Values
	Header    http.Header
	Multipart bool
	// ContentType and Filename are the input's (the file part's, if multipart).
	ContentType, Filename string
	// Size is the whole input's size; Input holds its first MiB.
	Size  int64
	Input []byte
}

// NewServer starts a fake server with one queue, "echo". A non-empty token
// is required as a bearer token on every request; empty runs it open.
// Close it when done.
func NewServer(token string) *Server {
	s := &Server{token: token, changed: make(chan struct{}), jobs: map[string]*fakeJob{},
		idem: map[string]string{}, queues: map[string]*client.Queue{}}
	s.AddQueue("echo", 1, 0)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/queues/{queue}/jobs", s.submit)
	mux.HandleFunc("GET /v1/jobs", s.list)
	mux.HandleFunc("GET /v1/jobs/{id}", s.get)
	mux.HandleFunc("GET /v1/jobs/{id}/result", s.result)
	mux.HandleFunc("GET /v1/jobs/{id}/artifacts", s.artifacts)
	mux.HandleFunc("GET /v1/jobs/{id}/artifacts/{name}", s.artifact)
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", s.cancel)
	mux.HandleFunc("POST /v1/jobs/{id}/retry", s.retry)
	mux.HandleFunc("DELETE /v1/jobs/{id}", s.delete)
	mux.HandleFunc("GET /v1/queues", s.listQueues)
	mux.HandleFunc("POST /v1/queues/{queue}/pause", s.pause)
	mux.HandleFunc("POST /v1/queues/{queue}/resume", s.pause)
	s.hs = httptest.NewServer(s.auth(mux))
	s.URL = s.hs.URL
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.hs.Close() }

// AddQueue declares a queue; maxQueued 0 is unlimited, otherwise submits
// beyond it are refused with 503.
func (s *Server) AddQueue(name string, concurrency, maxQueued int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queues[name] = &client.Queue{Name: name, Concurrency: concurrency, MaxQueued: maxQueued}
}

// OnSubmit has f called, in a goroutine of its own, with the id of every
// job submitted from now on: the place to play the worker.
func (s *Server) OnSubmit(f func(id string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onSubmit = f
}

// Submission returns what the submit of job id carried.
func (s *Server) Submission(id string) Submission {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fj := s.jobs[id]; fj != nil {
		return fj.sub
	}
	return Submission{}
}

// Job returns job id as the server would report it.
func (s *Server) Job(id string) (client.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fj := s.jobs[id]; fj != nil {
		return s.view(fj), true
	}
	return client.Job{}, false
}

// Progress reports progress of job id, starting it if it was queued.
func (s *Server) Progress(id string, current, total int64, message string) {
	s.update(id, func(j *fakeJob, now time.Time) {
		s.start(j, now)
		j.job.Progress = client.Progress{Current: current, Total: total, Message: message}
	})
}

// Succeed finishes job id with this result.
func (s *Server) Succeed(id, contentType string, result []byte) {
	s.update(id, func(j *fakeJob, now time.Time) {
		s.start(j, now)
		j.job.State, j.job.FinishedAt = client.StateSucceeded, now
		j.job.Result = &client.Blob{ContentType: contentType, Size: int64(len(result))}
		j.result, j.resultType = result, contentType
	})
}

// Fail finishes job id as failed with this error message.
func (s *Server) Fail(id, message string) {
	s.update(id, func(j *fakeJob, now time.Time) {
		s.start(j, now)
		j.job.State, j.job.FinishedAt = client.StateFailed, now
		j.job.Error = &client.JobError{Message: message, Code: "handler_error"}
	})
}

// AddArtifact adds a named file to job id's artifacts.
func (s *Server) AddArtifact(id, name, contentType string, b []byte) {
	s.update(id, func(j *fakeJob, now time.Time) {
		j.artifacts = append(j.artifacts, artifact{name, contentType, b})
		j.job.Artifacts = len(j.artifacts)
	})
}

func (s *Server) start(j *fakeJob, now time.Time) {
	if j.job.State == client.StateQueued {
		j.job.State, j.job.StartedAt, j.job.Attempt = client.StateRunning, now, j.job.Attempt+1
	}
}

// update changes a job under the lock, bumps its version and wakes long polls.
func (s *Server) update(id string, f func(*fakeJob, time.Time)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	fj := s.jobs[id]
	if fj == nil {
		return false
	}
	now := time.Now().UTC()
	f(fj, now)
	fj.job.Version++
	fj.job.UpdatedAt = now
	close(s.changed)
	s.changed = make(chan struct{})
	return true
}

// view is a job as answered: derived fields filled in. s.mu is held.
func (s *Server) view(fj *fakeJob) client.Job {
	j := fj.job
	j.Labels = maps.Clone(j.Labels)
	if j.Labels == nil {
		j.Labels = map[string]string{}
	}
	if p := j.Progress; p.Total > 0 {
		pct := float64(p.Current) * 100 / float64(p.Total)
		j.Progress.Percent = &pct
	}
	self := "/v1/jobs/" + j.ID
	j.Links = client.Links{Self: self, Result: self + "/result", Events: self + "/events", Cancel: self + "/cancel", Artifacts: self + "/artifacts"}
	return j
}

func (s *Server) auth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
			w.Header().Set("WWW-Authenticate", `Bearer realm="docket"`)
			problem(w, http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func problem(w http.ResponseWriter, status int, detail string) { problemCode(w, status, detail, "") }

// problemCode writes a problem; code is a failed job's error code.
func problemCode(w http.ResponseWriter, status int, detail, code string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	p := map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail}
	if code != "" {
		p["code"] = code
	}
	json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// keeper counts what is written to it and keeps the first MiB.
type keeper struct {
	n int64
	b []byte
}

func (k *keeper) Write(p []byte) (int, error) {
	k.n += int64(len(p))
	if room := keep - len(k.b); room > 0 {
		k.b = append(k.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	queue := r.PathValue("queue")
	q := r.URL.Query()
	j := client.Job{Queue: queue, State: client.StateQueued, MaxAttempts: 3, Labels: map[string]string{}}
	var err error
	if v := q.Get("priority"); v != "" {
		j.Priority, err = strconv.Atoi(v)
	}
	if v := q.Get("max_attempts"); v != "" && err == nil {
		j.MaxAttempts, err = strconv.Atoi(v)
	}
	for _, name := range []string{"delay", "timeout"} {
		if v := q.Get(name); v != "" && err == nil {
			_, err = time.ParseDuration(v)
		}
	}
	if v := q.Get("run_at"); v != "" && err == nil {
		_, err = time.Parse(time.RFC3339, v)
	}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, ":")
		if !ok && err == nil {
			err = fmt.Errorf("label %q is not key:value", l)
		}
		j.Labels[k] = v
	}
	if err != nil {
		problem(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	qu := s.queues[queue]
	var queued int
	for _, fj := range s.jobs {
		if fj.job.Queue == queue && fj.job.State == client.StateQueued {
			queued++
		}
	}
	existing := s.idem[r.Header.Get("Idempotency-Key")]
	s.mu.Unlock()
	switch {
	case qu == nil:
		problem(w, http.StatusNotFound, "no queue "+queue)
		return
	case existing != "":
		s.answer(w, existing, http.StatusOK)
		return
	case qu.MaxQueued > 0 && queued >= qu.MaxQueued:
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "queue "+queue+" is full")
		return
	}

	sub := Submission{Query: q, Header: r.Header.Clone(), ContentType: r.Header.Get("Content-Type")}
	var in keeper
	mt, params, _ := mime.ParseMediaType(sub.ContentType)
	if mt == "multipart/form-data" {
		sub.Multipart = true
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				problem(w, http.StatusBadRequest, "no file part: "+err.Error())
				return
			}
			if p.FormName() == "file" {
				sub.Filename, sub.ContentType = p.FileName(), p.Header.Get("Content-Type")
				_, err = io.Copy(&in, p)
				if err != nil {
					problem(w, http.StatusBadRequest, err.Error())
					return
				}
				break
			}
		}
	} else {
		if _, err := io.Copy(&in, r.Body); err != nil {
			problem(w, http.StatusBadRequest, err.Error())
			return
		}
		if sub.ContentType == "" {
			sub.ContentType = "application/octet-stream"
		}
	}
	sub.Size, sub.Input = in.n, in.b
	j.Input = client.Blob{ContentType: sub.ContentType, Size: sub.Size, Filename: sub.Filename}

	s.mu.Lock()
	s.seq++
	now := time.Now().UTC()
	j.ID = fmt.Sprintf("job-%06d", s.seq)
	j.Version, j.CreatedAt, j.UpdatedAt = 1, now, now
	s.jobs[j.ID] = &fakeJob{job: j, sub: sub}
	s.order = append(s.order, j.ID)
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		s.idem[k] = j.ID
	}
	f := s.onSubmit
	s.mu.Unlock()
	if f != nil {
		go f(j.ID)
	}
	status := http.StatusAccepted
	if v, ok := strings.CutPrefix(r.Header.Get("Prefer"), "wait="); ok {
		if n, err := strconv.Atoi(v); err == nil {
			w.Header().Set("Preference-Applied", "wait="+v)
			if j, ok := s.await(r, j.ID, 1, time.Duration(n)*time.Second, true); ok && j.Terminal() {
				status = http.StatusOK
			}
		}
	}
	s.answer(w, j.ID, status)
}

// answer writes job id; 202 comes with where and when to look again.
func (s *Server) answer(w http.ResponseWriter, id string, status int) {
	j, ok := s.Job(id)
	if !ok {
		problem(w, http.StatusNotFound, "no job "+id)
		return
	}
	if status == http.StatusAccepted {
		w.Header().Set("Location", j.Links.Self)
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, j)
}

// await waits until job id's version passes after (or it ends, when
// untilEnd) or wait runs out, and returns it.
func (s *Server) await(r *http.Request, id string, after int64, wait time.Duration, untilEnd bool) (client.Job, bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		fj, ch := s.jobs[id], s.changed
		var j client.Job
		if fj != nil {
			j = s.view(fj)
		}
		s.mu.Unlock()
		if fj == nil {
			return j, false
		}
		if j.Terminal() || (!untilEnd && j.Version > after) {
			return j, true
		}
		select {
		case <-ch:
		case <-timer.C:
			return j, true
		case <-r.Context().Done():
			return j, true
		}
	}
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if v := r.URL.Query().Get("wait"); v != "" {
		wait, err := time.ParseDuration(v)
		after, err2 := strconv.ParseInt(cmpOr(r.URL.Query().Get("after"), "0"), 10, 64)
		if err != nil || err2 != nil {
			problem(w, http.StatusBadRequest, "wait is a duration, after a version")
			return
		}
		s.await(r, id, after, wait, false)
	}
	s.answer(w, id, http.StatusOK)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	fj := s.jobs[id]
	var j client.Job
	var body []byte
	var ctype string
	if fj != nil {
		j, body, ctype = s.view(fj), fj.result, fj.resultType
	}
	s.mu.Unlock()
	switch {
	case fj == nil:
		problem(w, http.StatusNotFound, "no job "+id)
	case j.State == client.StateSucceeded:
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	case j.State == client.StateFailed:
		problemCode(w, http.StatusInternalServerError, j.Error.Message, j.Error.Code)
	case j.State == client.StateCanceled:
		problem(w, http.StatusConflict, "job "+id+" was canceled")
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, j)
	}
}

func (s *Server) artifacts(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	fj := s.jobs[id]
	list := []client.Artifact{}
	if fj != nil {
		for _, a := range fj.artifacts {
			list = append(list, client.Artifact{Name: a.name, ContentType: a.contentType, Size: int64(len(a.b)),
				URL: "/v1/jobs/" + id + "/artifacts/" + url.PathEscape(a.name)})
		}
	}
	s.mu.Unlock()
	if fj == nil {
		problem(w, http.StatusNotFound, "no job "+id)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"artifacts": list})
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request) {
	id, name := r.PathValue("id"), r.PathValue("name")
	s.mu.Lock()
	var found *artifact
	if fj := s.jobs[id]; fj != nil {
		for i := range fj.artifacts {
			if fj.artifacts[i].name == name {
				found = &fj.artifacts[i]
			}
		}
	}
	s.mu.Unlock()
	if found == nil {
		problem(w, http.StatusNotFound, "no artifact "+name+" in job "+id)
		return
	}
	w.Header().Set("Content-Type", found.contentType)
	w.Write(found.b)
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r.PathValue("id"), func(j *client.Job) bool { return !j.Terminal() }, client.StateCanceled)
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r.PathValue("id"), func(j *client.Job) bool {
		return j.State == client.StateFailed || j.State == client.StateCanceled
	}, client.StateQueued)
}

func (s *Server) transition(w http.ResponseWriter, id string, allowed func(*client.Job) bool, to client.State) {
	j, ok := s.Job(id)
	if !ok {
		problem(w, http.StatusNotFound, "no job "+id)
		return
	}
	if !allowed(&j) {
		problem(w, http.StatusConflict, fmt.Sprintf("job %s is %s", id, j.State))
		return
	}
	s.update(id, func(fj *fakeJob, now time.Time) {
		fj.job.State = to
		if to.Terminal() {
			fj.job.FinishedAt = now
		} else {
			fj.job.Attempt, fj.job.Error, fj.job.FinishedAt = 0, nil, time.Time{}
		}
	})
	s.answer(w, id, http.StatusOK)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	_, ok := s.jobs[id]
	delete(s.jobs, id)
	s.order = slices.DeleteFunc(s.order, func(x string) bool { return x == id })
	s.mu.Unlock()
	if !ok {
		problem(w, http.StatusNotFound, "no job "+id)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, offset := 50, 0
	if v := q.Get("limit"); v != "" {
		limit, _ = strconv.Atoi(v)
	}
	if v := q.Get("cursor"); v != "" {
		offset, _ = strconv.Atoi(v)
	}
	if limit <= 0 || offset < 0 {
		problem(w, http.StatusBadRequest, "bad limit or cursor")
		return
	}
	s.mu.Lock()
	var match []client.Job
	for _, id := range slices.Backward(s.order) {
		j := s.view(s.jobs[id])
		if keepJob(&j, q) {
			match = append(match, j)
		}
	}
	s.mu.Unlock()
	out := struct {
		Jobs       []client.Job `json:"jobs"`
		NextCursor string       `json:"next_cursor,omitempty"`
	}{Jobs: []client.Job{}}
	if offset < len(match) {
		out.Jobs = match[offset:min(offset+limit, len(match))]
	}
	if offset+limit < len(match) {
		out.NextCursor = strconv.Itoa(offset + limit)
	}
	writeJSON(w, http.StatusOK, out)
}

func keepJob(j *client.Job, q url.Values) bool {
	if v := q.Get("queue"); v != "" && j.Queue != v {
		return false
	}
	if st := q["state"]; len(st) > 0 && !slices.Contains(st, string(j.State)) {
		return false
	}
	for _, l := range q["label"] {
		k, v, _ := strings.Cut(l, ":")
		if got, ok := j.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (s *Server) listQueues(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	list := []client.Queue{}
	for _, q := range s.queues {
		list = append(list, s.queueView(q))
	}
	s.mu.Unlock()
	slices.SortFunc(list, func(a, b client.Queue) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, map[string]any{"queues": list})
}

// queueView is a queue with its counts. s.mu is held.
func (s *Server) queueView(q *client.Queue) client.Queue {
	v := *q
	for _, fj := range s.jobs {
		if fj.job.Queue != q.Name {
			continue
		}
		switch fj.job.State {
		case client.StateQueued:
			v.Counts.Queued++
		case client.StateRunning:
			v.Counts.Running++
		case client.StateSucceeded:
			v.Counts.Succeeded++
		case client.StateFailed:
			v.Counts.Failed++
		case client.StateCanceled:
			v.Counts.Canceled++
		}
	}
	return v
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("queue")
	s.mu.Lock()
	q := s.queues[name]
	var v client.Queue
	if q != nil {
		q.Paused = strings.HasSuffix(r.URL.Path, "/pause")
		v = s.queueView(q)
	}
	s.mu.Unlock()
	if q == nil {
		problem(w, http.StatusNotFound, "no queue "+name)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
