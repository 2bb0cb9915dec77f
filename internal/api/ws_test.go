package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
)

func (ev *env) dialWS(token string) *websocket.Conn {
	ev.t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ev.srv.URL, "http")+"/v1/ws", &websocket.DialOptions{HTTPHeader: h, HTTPClient: ev.srv.Client()})
	if err != nil {
		ev.t.Fatal(err)
	}
	ev.t.Cleanup(func() { c.CloseNow() })
	return c
}

type wsMsg struct {
	Type  string         `json:"type"`
	Event string         `json:"event"`
	Job   map[string]any `json:"job"`
	JobID string         `json:"job_id"`
	Error string         `json:"error"`
}

func readWS(t *testing.T, c *websocket.Conn) wsMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var m wsMsg
	if err := wsjson.Read(ctx, c, &m); err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

// The WebSocket carries the same sequence as the SSE stream, and only the
// caller's jobs.
func TestWebSocket(t *testing.T) {
	ev := newEnv(t, api.Config{Tokens: tokens()}, engine.Options{ProgressEvery: time.Millisecond})
	c := ev.dialWS(aliceToken)
	_, id := ev.submit("stepped", aliceToken, "x")
	_, bobs := ev.submit("echo", bobToken, "bob's")
	ctx := context.Background()
	wsjson.Write(ctx, c, map[string]any{"type": "subscribe", "jobs": []string{id, bobs, "01939999-0000-7000-8000-000000000000"}})
	// The job's snapshot, an error for each of the two others, then the
	// acknowledgement; the job's own changes may come in between.
	var errs int
	var snapshot bool
	for {
		m := readWS(t, c)
		if m.Type == "subscribed" {
			break
		}
		switch {
		case m.Type == "error":
			if m.Error != "no such job" {
				t.Fatalf("foreign or unknown job: %+v", m)
			}
			errs++
		case m.Job["id"] == id:
			snapshot = snapshot || m.Event == "state"
		default:
			t.Fatalf("unexpected message %+v", m)
		}
	}
	if errs != 2 || !snapshot {
		t.Fatalf("%d errors, snapshot %v", errs, snapshot)
	}
	go func() {
		for range 3 {
			ev.steps <- struct{}{}
		}
	}()
	var last wsMsg
	for last.Type != "done" {
		last = readWS(t, c)
		if last.Job["owner"] != "alice" {
			t.Fatalf("bob's job on alice's socket: %+v", last)
		}
	}
	if last.Job["state"] != "succeeded" || last.Job["progress"].(map[string]any)["current"].(float64) != 3 {
		t.Fatalf("done %+v", last.Job)
	}
	// Following all jobs: alice's new job arrives, bob's never does.
	wsjson.Write(ctx, c, map[string]any{"type": "subscribe", "all": true})
	if m := readWS(t, c); m.Type != "subscribed" {
		t.Fatalf("no acknowledgement: %+v", m)
	}
	ev.submit("echo", bobToken, "bob again")
	_, mine := ev.submit("echo", aliceToken, "alice again")
	for {
		m := readWS(t, c)
		if m.Job["owner"] != "alice" {
			t.Fatalf("bob's job on alice's socket: %+v", m)
		}
		if m.Type == "done" && m.Job["id"] == mine {
			break
		}
	}
	wsjson.Write(ctx, c, map[string]any{"type": "dance"})
	if m := readWS(t, c); m.Type != "error" {
		t.Fatalf("unknown message: %+v", m)
	}
}
