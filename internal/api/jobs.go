package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// fail answers an unexpected error.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client left
	}
	s.logger(r).Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeProblem(w, r, probInternal.with(internalDetail))
}

// load returns the caller's job, or answers 404 for a job that does not
// exist or belongs to another owner: the two must look the same.
func (s *Server) load(w http.ResponseWriter, r *http.Request, c *caller) *job.Job {
	id := r.PathValue("id")
	j, err := s.e.Store().Get(r.Context(), id)
	if err == nil && !c.sees(j.Owner) {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, r, probJobNotFound.with("no job "+strconv.Quote(id)))
		return nil
	}
	if err != nil {
		s.fail(w, r, err)
		return nil
	}
	return j
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, c *caller) {
	j := s.load(w, r, c)
	if j == nil {
		return
	}
	q := r.URL.Query()
	if ws := q.Get("wait"); ws != "" {
		wait, err := time.ParseDuration(ws)
		if err != nil || wait < 0 {
			writeProblem(w, r, probBadRequest.with("wait="+strconv.Quote(ws)+": want a duration such as 30s"))
			return
		}
		after := j.Version
		if as := q.Get("after"); as != "" {
			if after, err = strconv.ParseInt(as, 10, 64); err != nil {
				writeProblem(w, r, probBadRequest.with("after="+strconv.Quote(as)+": want a version number"))
				return
			}
		}
		if j.Version <= after && !j.State.Terminal() {
			j = s.waitChange(r.Context(), j, after, min(wait, maxWait))
		}
	}
	if match := r.Header.Get("If-None-Match"); match != "" && match == etag(j) {
		w.Header().Set("ETag", etag(j))
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJob(w, http.StatusOK, j)
}

// waitChange waits until the job's version passes after, it ends, or wait
// runs out, and returns the job as it then is.
func (s *Server) waitChange(ctx context.Context, j *job.Job, after int64, wait time.Duration) *job.Job {
	sub := s.e.Hub().SubscribeJob(j.ID)
	defer sub.Close()
	// Read again: a change between the first read and the subscription
	// would otherwise be missed.
	if cur, err := s.e.Store().Get(ctx, j.ID); err == nil {
		j = cur
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// Another process may change the job without an event here.
	recheck := time.NewTicker(time.Second)
	defer recheck.Stop()
	for j.Version <= after && !j.State.Terminal() {
		select {
		case <-ctx.Done():
			return j
		case <-timer.C:
			return j
		case ev := <-sub.C():
			if ev.Deleted {
				return j
			}
		case <-recheck.C:
		}
		cur, err := s.e.Store().Get(ctx, j.ID)
		if err != nil {
			return j
		}
		j = cur
	}
	return j
}

func (s *Server) result(w http.ResponseWriter, r *http.Request, c *caller) {
	j := s.load(w, r, c)
	if j == nil {
		return
	}
	switch j.State {
	case job.Queued, job.Running:
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Location", jobPath(j.ID))
		writeJob(w, http.StatusAccepted, j)
		return
	case job.Failed:
		p := probJobFailed
		if j.Error != nil {
			p = p.with(j.Error.Message)
			p.Code = j.Error.Code
		}
		writeProblem(w, r, p)
		return
	case job.Canceled:
		writeProblem(w, r, probJobCanceled.with("job "+j.ID+" was canceled"))
		return
	}
	if !j.ExpiresAt.IsZero() && time.Now().After(j.ExpiresAt) {
		writeProblem(w, r, probResultExpired.with("the result was kept until "+j.ExpiresAt.UTC().Format(time.RFC3339)))
		return
	}
	b, rc, err := s.e.Store().OpenResult(r.Context(), j.ID)
	if errors.Is(err, store.ErrNotFound) && j.Result == nil {
		w.WriteHeader(http.StatusNoContent) // succeeded without a result
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	s.WriteResult(w, r, b, rc)
}

func serveBlob(w http.ResponseWriter, b job.Blob, rc io.Reader) {
	h := w.Header()
	ct := b.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.FormatInt(b.Size, 10))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	io.Copy(w, rc)
}

type artifactJSON struct {
	Name        string `json:"name"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	URL         string `json:"url"`
}

func (s *Server) artifacts(w http.ResponseWriter, r *http.Request, c *caller) {
	j := s.load(w, r, c)
	if j == nil {
		return
	}
	list, err := s.e.Store().Artifacts(r.Context(), j.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]artifactJSON, 0, len(list))
	for _, a := range list {
		out = append(out, artifactJSON{Name: a.Name, ContentType: a.ContentType, Size: a.Size, URL: jobPath(j.ID) + "/artifacts/" + a.Name})
	}
	writeJSON(w, http.StatusOK, map[string]any{"artifacts": out})
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request, c *caller) {
	name := r.PathValue("name")
	if err := store.CheckName(name); err != nil {
		writeProblem(w, r, probBadRequest.with(err.Error()))
		return
	}
	j := s.load(w, r, c)
	if j == nil {
		return
	}
	b, rc, err := s.e.Store().OpenArtifact(r.Context(), j.ID, name)
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, r, probArtifactMissing.with("job "+j.ID+" has no artifact "+strconv.Quote(name)))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	serveBlob(w, b, rc)
}

// change answers the outcome of cancel and retry.
func (s *Server) change(w http.ResponseWriter, r *http.Request, c *caller, what string, fn func(context.Context, string) (*job.Job, error)) {
	j := s.load(w, r, c)
	if j == nil {
		return
	}
	nj, err := fn(r.Context(), j.ID)
	switch {
	case errors.Is(err, store.ErrState):
		writeProblem(w, r, probConflict.with(fmt.Sprintf("cannot %s a %s job", what, j.State)))
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, r, probJobNotFound.with("no job "+strconv.Quote(j.ID)))
	case err != nil:
		s.fail(w, r, err)
	default:
		writeJob(w, http.StatusOK, nj)
	}
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request, c *caller) {
	s.change(w, r, c, "cancel", s.e.Cancel)
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request, c *caller) {
	s.change(w, r, c, "retry", s.e.Retry)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, c *caller) {
	j := s.load(w, r, c)
	if j == nil {
		return
	}
	if _, err := s.e.Delete(r.Context(), j.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseStates reads the state filter: repeatable, or comma-separated.
func parseStates(q url.Values) ([]job.State, *problem) {
	var out []job.State
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			if !job.State(st).Valid() {
				p := probBadRequest.with("state=" + strconv.Quote(st) + ": want queued, running, succeeded, failed or canceled")
				return nil, &p
			}
			out = append(out, job.State(st))
		}
	}
	return out, nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, c *caller) {
	q := r.URL.Query()
	f := store.Filter{Queue: q.Get("queue"), After: q.Get("cursor"), Limit: 50}
	if !c.admin {
		f.Owner = c.owner
	} else if o := q.Get("owner"); o != "" {
		f.Owner = o
	}
	states, p := parseStates(q)
	if p != nil {
		writeProblem(w, r, *p)
		return
	}
	f.States = states
	for _, kv := range q["label"] {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || k == "" {
			writeProblem(w, r, probBadRequest.with("label="+strconv.Quote(kv)+": want key:value"))
			return
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[k] = v
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeProblem(w, r, probBadRequest.with("limit="+strconv.Quote(l)+": want 1 to 1000"))
			return
		}
		f.Limit = n
	}
	page, err := s.e.Store().List(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	jobs := make([]jobJSON, 0, len(page.Jobs))
	for _, j := range page.Jobs {
		jobs = append(jobs, toJSON(j))
	}
	out := map[string]any{"jobs": jobs, "next_cursor": page.Next}
	writeJSON(w, http.StatusOK, out)
}

type queueJSON struct {
	Name        string              `json:"name"`
	Concurrency int                 `json:"concurrency"`
	MaxQueued   int                 `json:"max_queued"`
	MaxAttempts int                 `json:"max_attempts"`
	Timeout     string              `json:"timeout,omitempty"`
	Retention   string              `json:"retention"`
	Paused      bool                `json:"paused"`
	Counts      map[job.State]int64 `json:"counts"`
}

func (s *Server) queueJSON(name string, counts map[job.State]int64) queueJSON {
	q, _ := s.e.Queue(name)
	out := queueJSON{Name: name, Concurrency: q.Concurrency, MaxQueued: q.MaxQueued, MaxAttempts: q.MaxAttempts,
		Retention: q.Retention.String(), Paused: s.e.Paused(name), Counts: map[job.State]int64{}}
	if q.Timeout > 0 {
		out.Timeout = q.Timeout.String()
	}
	for _, st := range job.States {
		out.Counts[st] = counts[st]
	}
	return out
}

func (s *Server) queues(w http.ResponseWriter, r *http.Request, c *caller) {
	counts, err := s.e.Store().QueueCounts(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	byName := map[string]map[job.State]int64{}
	for _, qc := range counts {
		byName[qc.Queue] = qc.Counts
	}
	names := s.e.Queues()
	sort.Strings(names)
	out := make([]queueJSON, 0, len(names))
	for _, n := range names {
		out = append(out, s.queueJSON(n, byName[n]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"queues": out})
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request, c *caller)  { s.setPaused(w, r, true) }
func (s *Server) resume(w http.ResponseWriter, r *http.Request, c *caller) { s.setPaused(w, r, false) }

func (s *Server) setPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	name := r.PathValue("queue")
	if err := s.e.SetPaused(name, paused); err != nil {
		writeProblem(w, r, probQueueNotFound.with("no queue named "+strconv.Quote(name)))
		return
	}
	counts, err := s.e.Store().QueueCounts(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var mine map[job.State]int64
	for _, qc := range counts {
		if qc.Queue == name {
			mine = qc.Counts
		}
	}
	writeJSON(w, http.StatusOK, s.queueJSON(name, mine))
}
