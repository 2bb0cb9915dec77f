package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
)

type sseEvent struct {
	kind string
	id   int64
	job  map[string]any
}

// sseClient reads a Server-Sent Events stream.
type sseClient struct {
	t    *testing.T
	res  *http.Response
	sc   *bufio.Scanner
	done context.CancelFunc
}

func (ev *env) openStream(path, token string, header ...string) *sseClient {
	ev.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ev.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := ev.srv.Client().Do(req)
	if err != nil {
		ev.t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		ev.t.Fatalf("stream %s: %d %s", path, res.StatusCode, b)
	}
	c := &sseClient{t: ev.t.(*testing.T), res: res, sc: bufio.NewScanner(res.Body), done: cancel}
	c.sc.Buffer(make([]byte, 1<<16), 1<<20)
	ev.t.Cleanup(c.close)
	return c
}

func (c *sseClient) close() {
	c.done()
	c.res.Body.Close()
}

// next returns the next event, or ok=false at the end of the stream.
func (c *sseClient) next() (e sseEvent, ok bool) {
	c.t.Helper()
	for c.sc.Scan() {
		line := c.sc.Text()
		switch {
		case line == "":
			if e.kind != "" {
				return e, true
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			e.kind = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			e.id, _ = strconv.ParseInt(line[len("id: "):], 10, 64)
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[len("data: "):]), &e.job); err != nil {
				c.t.Fatalf("data %q: %v", line, err)
			}
		}
	}
	return e, false
}

// until reads events until one satisfies cond.
func (c *sseClient) until(cond func(sseEvent) bool) []sseEvent {
	c.t.Helper()
	var seen []sseEvent
	for {
		e, ok := c.next()
		if !ok {
			c.t.Fatalf("stream ended before the awaited event; saw %v", kinds(seen))
		}
		seen = append(seen, e)
		if cond(e) {
			return seen
		}
	}
}

func kinds(es []sseEvent) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s#%d:%v:%v", e.kind, e.id, e.job["state"], e.job["progress"].(map[string]any)["current"]))
	}
	return out
}

func current(e sseEvent) float64 { return e.job["progress"].(map[string]any)["current"].(float64) }

func TestSSEJobStreamAndResume(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{ProgressEvery: time.Millisecond})
	_, id := ev.submit("stepped", "", "x")
	first := ev.openStream("/v1/jobs/"+id+"/events", "")
	seen := first.until(func(e sseEvent) bool { return e.job["state"] == "running" })
	if seen[0].kind != "state" {
		t.Fatalf("first event %v, want a state snapshot", kinds(seen))
	}
	ev.steps <- struct{}{}
	seen = append(seen, first.until(func(e sseEvent) bool { return current(e) == 1 })...)
	last := seen[len(seen)-1]
	first.close()

	// Two steps happen while the client is away.
	ev.steps <- struct{}{}
	ev.steps <- struct{}{}
	ev.e.Wait(context.Background(), id)

	again := ev.openStream("/v1/jobs/"+id+"/events", "", "Last-Event-ID", strconv.FormatInt(last.id, 10))
	var rest []sseEvent
	for {
		e, ok := again.next()
		if !ok {
			break
		}
		rest = append(rest, e)
	}
	if len(rest) == 0 || rest[0].id <= last.id {
		t.Fatalf("resume after %d: %v", last.id, kinds(rest))
	}
	end := rest[len(rest)-1]
	if end.kind != "state" || end.job["state"] != "succeeded" || current(end) != 3 {
		t.Fatalf("resumed stream ends with %v", kinds(rest))
	}
	all := append(seen, rest...)
	states := map[any]bool{}
	for i, e := range all {
		states[e.job["state"]] = true
		if i > 0 && e.id <= all[i-1].id {
			t.Fatalf("ids not increasing: %v", kinds(all))
		}
	}
	if !states["running"] || !states["succeeded"] {
		t.Fatalf("state changes missing: %v", kinds(all))
	}
	// A finished job answers its final event at once and ends.
	done := ev.openStream("/v1/jobs/"+id+"/events", "")
	if e, ok := done.next(); !ok || e.job["state"] != "succeeded" {
		t.Fatalf("finished job: %v %v", e, ok)
	}
	if _, ok := done.next(); ok {
		t.Fatal("the stream of a finished job goes on")
	}
}

// NDJSON carries the same events as SSE.
func TestNDJSONStream(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{ProgressEvery: time.Millisecond})
	_, id := ev.submit("stepped", "", "x")
	ev.waitState(id, "", "running")
	req, _ := http.NewRequest("GET", ev.srv.URL+"/v1/jobs/"+id+"/events", nil)
	req.Header.Set("Accept", "application/x-ndjson")
	res, err := ev.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("content type %s", res.Header.Get("Content-Type"))
	}
	go func() {
		for range 3 {
			ev.steps <- struct{}{}
		}
	}()
	dec := json.NewDecoder(res.Body)
	var lines []map[string]any
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	lastLine := lines[len(lines)-1]
	if lines[0]["event"] != "state" || lastLine["event"] != "state" || lastLine["job"].(map[string]any)["state"] != "succeeded" {
		t.Fatalf("ndjson lines %v", lines)
	}
}

func TestJSONArrayStream(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{ProgressEvery: time.Millisecond})
	_, id := ev.submit("stepped", "", "x")
	go func() {
		for range 3 {
			ev.steps <- struct{}{}
		}
	}()
	r := ev.do("GET", "/v1/jobs/"+id+"/events?format=json-array", "", nil)
	var arr []map[string]any
	if err := json.Unmarshal(r.body, &arr); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
	lastEl := arr[len(arr)-1]
	if lastEl["state"] != "succeeded" || lastEl["fraction"] != 1.0 || lastEl["result"] != "/v1/jobs/"+id+"/result" {
		t.Fatalf("array %v", arr)
	}
	for _, el := range arr {
		if _, ok := el["n_ahead_in_queue"]; !ok {
			t.Fatalf("element without n_ahead_in_queue: %v", el)
		}
	}
	// A finished job: a one-element array, at once.
	r = ev.do("GET", "/v1/jobs/"+id+"/events?format=json-array", "", nil)
	if err := json.Unmarshal(r.body, &arr); err != nil || len(arr) != 1 {
		t.Fatalf("finished: %s %v", r.body, err)
	}
	// A failed job's last element carries the error.
	_, failed := ev.submit("echo", "", "fail please")
	ev.waitState(failed, "", "failed")
	r = ev.do("GET", "/v1/jobs/"+failed+"/events?format=json-array", "", nil)
	json.Unmarshal(r.body, &arr)
	if len(arr) != 1 || arr[0]["error"] == nil {
		t.Fatalf("failed: %s", r.body)
	}
}

// No event of another owner's job reaches a stream.
func TestEventStreamsIsolateOwners(t *testing.T) {
	ev := newEnv(t, api.Config{Tokens: tokens()}, engine.Options{})
	alice := ev.openStream("/v1/events", aliceToken)
	admin := ev.openStream("/v1/events?queue=echo", adminToken)
	_, bobJob := ev.submit("echo", bobToken, "bob's")
	_, aliceJob := ev.submit("echo", aliceToken, "alice's")
	ev.waitState(bobJob, bobToken, "succeeded")
	ev.waitState(aliceJob, aliceToken, "succeeded")
	seen := alice.until(func(e sseEvent) bool { return e.job["id"] == aliceJob && e.job["state"] == "succeeded" })
	for _, e := range seen {
		if e.job["owner"] != "alice" {
			t.Fatalf("alice's stream carried %v", e.job)
		}
	}
	owners := map[any]bool{}
	admin.until(func(e sseEvent) bool {
		if e.job["state"] == "succeeded" {
			owners[e.job["owner"]] = true
		}
		return len(owners) == 2
	})
	ev.do("GET", "/v1/jobs/"+aliceJob+"/events", bobToken, nil).problem(t, 404, "job-not-found")
	ev.do("GET", "/v1/events?state=bogus", aliceToken, nil).problem(t, 400, "bad-request")
}

// A client that stops reading cannot stall the engine or other clients:
// its events are coalesced, and it still ends with the terminal event.
func TestSlowConsumer(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{ProgressEvery: time.Millisecond})
	const updates = 3000
	ev.e.AddQueue(engine.Queue{Name: "chatty", Concurrency: 1, MaxAttempts: 1, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
		for i := range int64(updates) {
			tk.Progress(i+1, updates, strings.Repeat("m", 512))
			if i%50 == 0 {
				time.Sleep(time.Millisecond) // let reports reach the store
			}
		}
		return nil
	})})
	_, id := ev.submit("chatty", "", "x")
	slow := ev.openStream("/v1/jobs/"+id+"/events", "") // not read until the job is done
	fast := ev.openStream("/v1/jobs/"+id+"/events", "")
	fastDone := make(chan int, 1)
	go func() {
		n := 0
		for {
			e, ok := fast.next()
			if !ok {
				fastDone <- n
				return
			}
			n++
			_ = e
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := ev.e.Wait(ctx, id)
	if err != nil || j.State != "succeeded" {
		t.Fatalf("the engine stalled: %v %v", j, err)
	}
	select {
	case <-fastDone:
	case <-time.After(10 * time.Second):
		t.Fatal("a reading client was stalled by a slow one")
	}
	var n int
	var last sseEvent
	for {
		e, ok := slow.next()
		if !ok {
			break
		}
		n, last = n+1, e
	}
	if last.job["state"] != "succeeded" {
		t.Fatalf("the slow client's last event: %v", last.job["state"])
	}
	if n >= updates {
		t.Fatalf("the slow client got %d events for %d updates: not coalesced", n, updates)
	}
}
