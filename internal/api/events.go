package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
)

// Event streams carry a job's changes as they happen. A stream of one job
// starts with its current state, resumes after the version a client last
// saw (SSE's Last-Event-ID), and ends after the terminal event. Events come
// from the engine's hub, whose subscriptions never block the engine: a
// client that reads slowly loses intermediate progress, never the latest
// state. A client that missed changes while away gets the job as it now is:
// its latest progress and its current state.

// heartbeatEvery is the interval of keep-alive comments on idle streams.
var heartbeatEvery = 15 * time.Second

// recheckEvery bounds how late a change made by another process sharing
// the store is seen; this process's own changes arrive through the hub at
// once. Every open stream rereads its job at this pace, so it stays slow:
// with 10,000 streams a one-second pace was most of the server's work.
const recheckEvery = 30 * time.Second

type streamFormat int

const (
	formatSSE streamFormat = iota
	formatNDJSON
	formatArray
)

func streamFormatOf(r *http.Request) streamFormat {
	if r.URL.Query().Get("format") == "json-array" {
		return formatArray
	}
	if strings.Contains(r.Header.Get("Accept"), "application/x-ndjson") || r.URL.Query().Get("format") == "ndjson" {
		return formatNDJSON
	}
	return formatSSE
}

// setStreamHeaders sets the headers of a stream's response.
func setStreamHeaders(h http.Header, format streamFormat) {
	switch format {
	case formatSSE:
		h.Set("Content-Type", "text/event-stream")
	case formatNDJSON:
		h.Set("Content-Type", "application/x-ndjson")
	case formatArray:
		h.Set("Content-Type", "application/json")
	}
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // let proxies pass events at once
}

// stream writes events in one of the three formats through net/http.
type stream struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	format streamFormat
	n      int // elements written (json-array)
}

func newStream(w http.ResponseWriter, format streamFormat) *stream {
	setStreamHeaders(w.Header(), format)
	w.WriteHeader(http.StatusOK)
	s := &stream{w: w, rc: http.NewResponseController(w), format: format}
	if format == formatArray {
		fmt.Fprint(w, "[")
	}
	s.rc.Flush()
	return s
}

// arrayElement is one element of the json-array format.
type arrayElement struct {
	Fraction      *float64   `json:"fraction"`
	Message       string     `json:"message"`
	NAheadInQueue int64      `json:"n_ahead_in_queue"`
	State         job.State  `json:"state"`
	Error         *job.Error `json:"error,omitempty"`
	Result        string     `json:"result,omitempty"`
}

// appendEvent appends the frame of one event about j, of kind "state" or
// "progress"; n is the count of the elements written before it (json-array).
// Both ways of serving a stream write these bytes.
func appendEvent(b []byte, format streamFormat, kind string, j *job.Job, n int) ([]byte, error) {
	switch format {
	case formatSSE:
		data, err := json.Marshal(toJSON(j))
		if err != nil {
			return b, err
		}
		b = append(b, "event: "...)
		b = append(b, kind...)
		b = append(b, "\nid: "...)
		b = strconv.AppendInt(b, j.Version, 10)
		b = append(b, "\ndata: "...)
		b = append(b, data...)
		return append(b, "\n\n"...), nil
	case formatNDJSON:
		// What json.Encoder writes: the value, then a newline.
		data, err := json.Marshal(map[string]any{"event": kind, "id": j.Version, "job": toJSON(j)})
		if err != nil {
			return b, err
		}
		b = append(b, data...)
		return append(b, '\n'), nil
	}
	el := arrayElement{Message: j.Progress.Message, NAheadInQueue: j.Position, State: j.State}
	if p := j.Progress.Percent(); p >= 0 {
		f := p / 100
		el.Fraction = &f
	}
	if j.State == job.Succeeded {
		one := 1.0
		el.Fraction = &one
		el.Result = jobPath(j.ID) + "/result"
	}
	if j.State.Terminal() && j.State != job.Succeeded {
		el.Error = j.Error
		if el.Error == nil {
			el.Error = &job.Error{Message: "job " + string(j.State)}
		}
	}
	data, err := json.Marshal(el)
	if err != nil {
		return b, err
	}
	if n > 0 {
		b = append(b, ',')
	}
	return append(b, data...), nil
}

// appendHeartbeat appends a keep-alive: a comment, an empty line, or
// nothing in an array, which has no room for one but whitespace.
func appendHeartbeat(b []byte, format streamFormat) []byte {
	switch format {
	case formatSSE:
		return append(b, ": ping\n\n"...)
	case formatNDJSON:
		return append(b, '\n')
	}
	return b
}

// appendEnd appends what closes a stream's body.
func appendEnd(b []byte, format streamFormat) []byte {
	if format == formatArray {
		return append(b, "]\n"...)
	}
	return b
}

// send writes one event about j; kind is "state" or "progress".
func (s *stream) send(kind string, j *job.Job) error {
	b, err := appendEvent(nil, s.format, kind, j, s.n)
	s.n++
	if err != nil {
		return err
	}
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *stream) heartbeat() error {
	b := appendHeartbeat(nil, s.format)
	if len(b) == 0 {
		return nil
	}
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *stream) end() {
	if b := appendEnd(nil, s.format); len(b) > 0 {
		s.w.Write(b)
	}
	s.rc.Flush()
}

// lastEventID is the version a resuming client saw last, or -1.
func lastEventID(r *http.Request) int64 {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("last_event_id")
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request, c *caller) {
	j := s.load(w, r, c)
	if j == nil {
		return
	}
	format := streamFormatOf(r)
	if s.takeOver(w, r, j, format) {
		return
	}
	s.serveJobEvents(w, r, j, format)
}

// serveJobEvents serves the stream of j through net/http, for as long as
// it lasts: on HTTP/2, and wherever the connection cannot be taken over.
func (s *Server) serveJobEvents(w http.ResponseWriter, r *http.Request, j *job.Job, format streamFormat) {
	sub := s.e.Hub().SubscribeJob(j.ID)
	defer sub.Close()
	// Read again now that changes are caught by the subscription.
	cur, err := s.e.Store().Get(r.Context(), j.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	j = cur
	st := newStream(w, format)
	s.cfg.Metrics.Stream(format.kind(), 1)
	defer s.cfg.Metrics.Stream(format.kind(), -1)
	defer st.end()

	sent := lastEventID(r)
	var lastState job.State
	emit := func(j *job.Job) error {
		kind := "progress"
		if j.State != lastState {
			kind = "state"
		}
		lastState = j.State
		sent = j.Version
		return st.send(kind, j)
	}
	if format == formatArray || j.Version > sent || j.State.Terminal() && sent < 0 {
		if err := emit(j); err != nil || j.State.Terminal() {
			return
		}
	} else {
		lastState = j.State
	}
	if j.State.Terminal() {
		return
	}
	hb := time.NewTicker(heartbeatEvery)
	defer hb.Stop()
	recheck := time.NewTicker(recheckEvery)
	defer recheck.Stop()
	ctx := r.Context()
	for {
		var next *job.Job
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
			if st.heartbeat() != nil {
				return
			}
			continue
		case ev := <-sub.C():
			if ev.Deleted {
				return
			}
			next = ev.Job
		case <-recheck.C:
			got, err := s.e.Store().Get(ctx, j.ID)
			if errors.Is(err, context.Canceled) {
				return
			}
			if err != nil {
				return // deleted, or the store is gone: end the stream
			}
			if format == formatArray && got.State == job.Queued && got.Position != j.Position && got.Version == sent {
				// Only the array format reports the queue position as
				// it moves; the others follow versions.
				j = got
				if st.send("progress", got) != nil {
					return
				}
				continue
			}
			next = got
		}
		if next == nil || next.Version <= sent {
			continue
		}
		if format == formatArray && next.State == job.Queued {
			if got, err := s.e.Store().Get(ctx, next.ID); err == nil {
				next = got // with its position
			}
		}
		j = next
		if emit(j) != nil || j.State.Terminal() {
			return
		}
	}
}

// allEvents is the stream of every job of the caller (all jobs for an
// admin), filtered by queue and state: for dashboards.
func (s *Server) allEvents(w http.ResponseWriter, r *http.Request, c *caller) {
	q := r.URL.Query()
	queue := q.Get("queue")
	list, p := parseStates(q)
	if p != nil {
		writeProblem(w, r, *p)
		return
	}
	states := map[job.State]bool{}
	for _, st := range list {
		states[st] = true
	}
	sub := s.e.Hub().Subscribe(func(ev engine.Event) bool {
		// Owner isolation is decided here, before anything is queued for
		// this client.
		return c.sees(ev.Owner) && !ev.Deleted && (queue == "" || ev.Queue == queue) && (len(states) == 0 || states[ev.State])
	})
	defer sub.Close()
	format := streamFormatOf(r)
	if format == formatArray {
		format = formatSSE
	}
	st := newStream(w, format)
	s.cfg.Metrics.Stream(format.kind(), 1)
	defer s.cfg.Metrics.Stream(format.kind(), -1)
	hb := time.NewTicker(heartbeatEvery)
	defer hb.Stop()
	ctx := r.Context()
	last := map[string]job.State{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
			if st.heartbeat() != nil {
				return
			}
		case ev := <-sub.C():
			kind := "progress"
			if last[ev.JobID] != ev.State {
				kind = "state"
			}
			if ev.State.Terminal() {
				delete(last, ev.JobID)
			} else {
				last[ev.JobID] = ev.State
			}
			if st.send(kind, ev.Job) != nil {
				return
			}
		}
	}
}
