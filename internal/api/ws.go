package api

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/store"
)

// The WebSocket carries the same events as the streams, for clients that
// follow many jobs over one connection. The client says what it wants:
//
//	{"type": "subscribe", "jobs": ["<id>", ...]}   follow these jobs
//	{"type": "subscribe", "all": true}             follow every job of the caller
//	{"type": "unsubscribe", "jobs": [...]} / {"type": "unsubscribe", "all": true}
//
// and receives {"type": "event", "event": "state"|"progress", "job": {...}}
// for every change, plus {"type": "done", "job": {...}} when a job it follows
// ends. A subscribe to a job sends its current state at once; an unknown or
// foreign job gets {"type": "error", "job_id": "...", "error": "..."}; then
// {"type": "subscribed"} (or "unsubscribed") acknowledges the request.

type wsRequest struct {
	Type string   `json:"type"`
	Jobs []string `json:"jobs"`
	All  bool     `json:"all"`
}

type wsMessage struct {
	Type  string   `json:"type"`
	Event string   `json:"event,omitempty"`
	Job   *jobJSON `json:"job,omitempty"`
	JobID string   `json:"job_id,omitempty"`
	Error string   `json:"error,omitempty"`
}

// wsInterest is what one connection follows.
type wsInterest struct {
	mu   sync.Mutex
	all  bool
	jobs map[string]bool
}

func (in *wsInterest) wants(id string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.all || in.jobs[id]
}

func (s *Server) ws(w http.ResponseWriter, r *http.Request, c *caller) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer conn.CloseNow()
	s.cfg.Metrics.Stream("websocket", 1)
	defer s.cfg.Metrics.Stream("websocket", -1)
	conn.SetReadLimit(64 << 10)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	in := &wsInterest{jobs: map[string]bool{}}
	sub := s.e.Hub().Subscribe(func(ev engine.Event) bool {
		return c.sees(ev.Owner) && in.wants(ev.JobID)
	})
	defer sub.Close()

	// Everything written goes through out, drained by the writer below, so
	// that one goroutine writes to the connection.
	out := make(chan wsMessage, 64)
	send := func(m wsMessage) bool {
		select {
		case out <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer cancel()
		for {
			var req wsRequest
			if err := wsjson.Read(ctx, conn, &req); err != nil {
				return
			}
			switch req.Type {
			case "subscribe", "unsubscribe":
				add := req.Type == "subscribe"
				in.mu.Lock()
				if req.All {
					in.all = add
				}
				for _, id := range req.Jobs {
					if add {
						in.jobs[id] = true
					} else {
						delete(in.jobs, id)
					}
				}
				in.mu.Unlock()
				if !add {
					if !send(wsMessage{Type: "unsubscribed"}) {
						return
					}
					continue
				}
				for _, id := range req.Jobs {
					j, err := s.e.Store().Get(ctx, id)
					if err == nil && !c.sees(j.Owner) {
						err = store.ErrNotFound
					}
					if err != nil {
						msg := "internal error"
						if errors.Is(err, store.ErrNotFound) {
							msg = "no such job"
						}
						in.mu.Lock()
						delete(in.jobs, id)
						in.mu.Unlock()
						if !send(wsMessage{Type: "error", JobID: id, Error: msg}) {
							return
						}
						continue
					}
					js := toJSON(j)
					typ := "event"
					if j.State.Terminal() {
						typ = "done"
					}
					if !send(wsMessage{Type: typ, Event: "state", Job: &js}) {
						return
					}
				}
				// The acknowledgement: every change from now on is sent.
				if !send(wsMessage{Type: "subscribed"}) {
					return
				}
			default:
				if !send(wsMessage{Type: "error", Error: `unknown message type; want "subscribe" or "unsubscribe"`}) {
					return
				}
			}
		}
	}()

	write := func(m wsMessage) error {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		return wsjson.Write(wctx, conn, m)
	}
	ping := time.NewTicker(heartbeatEvery)
	defer ping.Stop()
	last := map[string]string{} // job id → state last sent
	for {
		select {
		case <-ctx.Done():
			conn.Close(websocket.StatusNormalClosure, "")
			return
		case <-ping.C:
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				return
			}
		case m := <-out:
			if m.Job != nil {
				last[m.Job.ID] = string(m.Job.State)
			}
			if write(m) != nil {
				return
			}
		case ev := <-sub.C():
			if ev.Deleted {
				continue
			}
			js := toJSON(ev.Job)
			kind := "progress"
			if last[ev.JobID] != string(ev.State) {
				kind = "state"
			}
			last[ev.JobID] = string(ev.State)
			typ := "event"
			if ev.State.Terminal() {
				typ = "done"
				delete(last, ev.JobID)
			}
			if write(wsMessage{Type: typ, Event: kind, Job: &js}) != nil {
				return
			}
		}
	}
}
