package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
)

// The streams of one job are taken over from net/http on HTTP/1.x and
// written by the Server's stream server. These tests check that clients
// cannot tell, and that a taken-over stream ends when it should.

// waitUntil polls cond until it holds, failing the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func apiServer(ev *env) *api.Server { return ev.srv.Config.Handler.(*api.Server) }

// streamEnv is newEnv whose Server is closed at the end of the test, as
// the server command closes it: no stream outlives the test.
func streamEnv(t *testing.T, opts engine.Options) *env {
	ev := newEnv(t, api.Config{}, opts)
	t.Cleanup(apiServer(ev).Close)
	return ev
}

// noHijack hides the connection from the handler, as a middleware that
// wraps the ResponseWriter without Unwrap does: streams then go through
// net/http.
type noHijack struct{ http.ResponseWriter }

func (w noHijack) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

// streamServers are the ways a stream can be served: taken over (the env's
// own server), and through net/http on HTTP/1.1 and on HTTP/2.
func streamServers(t *testing.T, ev *env) map[string]*httptest.Server {
	h := ev.srv.Config.Handler
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(noHijack{w}, r)
	}))
	h2 := httptest.NewUnstartedServer(h)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(func() {
		plain.CloseClientConnections()
		plain.Close()
		h2.CloseClientConnections()
		h2.Close()
	})
	return map[string]*httptest.Server{"taken over": ev.srv, "net/http": plain, "http2": h2}
}

// get opens path on srv; the caller closes the body.
func get(t *testing.T, srv *httptest.Server, path string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
	}
	return res
}

var streamFormats = []struct {
	name   string
	query  string
	header []string
}{
	{"sse", "", nil},
	{"ndjson", "", []string{"Accept", "application/x-ndjson"}},
	{"json-array", "?format=json-array", nil},
}

// A taken-over stream carries the same headers and the same bytes as one
// served through net/http, whatever the format and the resume point.
func TestTakenOverStreamsMatchNetHTTP(t *testing.T) {
	ev := streamEnv(t, engine.Options{ProgressEvery: time.Millisecond})
	srvs := streamServers(t, ev)

	t.Run("finished job", func(t *testing.T) {
		_, id := ev.submit("echo", "", "x")
		final := ev.waitState(id, "", "succeeded")
		v := int64(final["version"].(float64))
		for _, f := range streamFormats {
			for _, last := range []int64{-1, 0, v - 1, v, v + 3} {
				header := f.header
				if last >= 0 {
					header = append(header[:len(header):len(header)], "Last-Event-ID", strconv.FormatInt(last, 10))
				}
				bodies := map[string]string{}
				for name, srv := range srvs {
					res := get(t, srv, "/v1/jobs/"+id+"/events"+f.query, header...)
					b, err := io.ReadAll(res.Body)
					res.Body.Close()
					if err != nil {
						t.Fatalf("%s %s after %d: %v", name, f.name, last, err)
					}
					bodies[name] = string(b)
				}
				if bodies["taken over"] != bodies["net/http"] || bodies["taken over"] != bodies["http2"] {
					t.Errorf("%s after %d: bodies differ:\n%q\n%q\n%q", f.name, last, bodies["taken over"], bodies["net/http"], bodies["http2"])
				}
			}
		}
	})

	t.Run("running job", func(t *testing.T) {
		_, id := ev.submit("gated", "", "x")
		ev.waitState(id, "", "running")
		// The gated handler reports its progress once; wait for it, so
		// that the only change left is the end.
		waitUntil(t, 10*time.Second, "reporting progress", func() bool {
			j, err := ev.e.Store().Get(context.Background(), id)
			return err == nil && j.Progress.Current == 1
		})
		type read struct {
			res  *http.Response
			body chan string
		}
		reads := map[string]read{}
		for _, f := range streamFormats {
			for name, srv := range srvs {
				res := get(t, srv, "/v1/jobs/"+id+"/events"+f.query, f.header...)
				r := read{res, make(chan string, 1)}
				go func() {
					b, _ := io.ReadAll(r.res.Body)
					r.res.Body.Close()
					r.body <- string(b)
				}()
				reads[f.name+" "+name] = r
			}
		}
		if n := api.OpenStreams(apiServer(ev)); n != len(streamFormats) {
			t.Fatalf("%d streams taken over, want %d: one per format, on HTTP/1.1 only", n, len(streamFormats))
		}
		ev.gate <- struct{}{}
		for _, f := range streamFormats {
			bodies := map[string]string{}
			for name := range srvs {
				r := reads[f.name+" "+name]
				select {
				case bodies[name] = <-r.body:
				case <-time.After(30 * time.Second):
					t.Fatalf("%s %s: the stream did not end", f.name, name)
				}
				for _, h := range []string{"Content-Type", "Cache-Control", "X-Accel-Buffering"} {
					if got, want := r.res.Header.Get(h), reads[f.name+" net/http"].res.Header.Get(h); got != want {
						t.Errorf("%s %s: %s %q, want %q", f.name, name, h, got, want)
					}
				}
			}
			if !reads[f.name+" taken over"].res.Close {
				t.Errorf("%s: a taken-over stream's response must say Connection: close", f.name)
			}
			if bodies["taken over"] != bodies["net/http"] || bodies["taken over"] != bodies["http2"] {
				t.Errorf("%s: bodies differ:\n%q\n%q\n%q", f.name, bodies["taken over"], bodies["net/http"], bodies["http2"])
			}
			if !strings.Contains(bodies["taken over"], "succeeded") {
				t.Errorf("%s: no final event in %q", f.name, bodies["taken over"])
			}
		}
	})
}

// finalState is the state in the last event of a whole stream's body.
func finalState(t *testing.T, format, body string) string {
	t.Helper()
	switch format {
	case "json-array":
		var arr []map[string]any
		if err := json.Unmarshal([]byte(body), &arr); err != nil || len(arr) == 0 {
			t.Fatalf("array %q: %v", body, err)
		}
		return arr[len(arr)-1]["state"].(string)
	case "ndjson":
		lines := strings.Split(strings.TrimSpace(body), "\n")
		var m struct{ Job map[string]any }
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
			t.Fatalf("ndjson %q: %v", body, err)
		}
		return m.Job["state"].(string)
	}
	i := strings.LastIndex(body, "\ndata: ")
	if i < 0 {
		t.Fatalf("sse %q: no event", body)
	}
	var j map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(body[i+len("\ndata: "):], "\n", 2)[0]), &j); err != nil {
		t.Fatalf("sse %q: %v", body, err)
	}
	return j["state"].(string)
}

// Many streams at once, in every format, all end with their job's final
// event, and leave nothing behind.
func TestManyTakenOverStreams(t *testing.T) {
	ev := streamEnv(t, engine.Options{ProgressEvery: time.Millisecond})
	const n = 500
	release := make(chan struct{})
	ev.e.AddQueue(engine.Queue{Name: "many", Concurrency: n, MaxAttempts: 1, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
		tk.Progress(1, 2, "waiting")
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		tk.Progress(2, 2, "done")
		tk.SetResult("text/plain", []byte("ok"))
		return nil
	})})
	subs := ev.e.Hub().Subscribers()
	ids := make([]string, n)
	for i := range ids {
		_, ids[i] = ev.submit("many", "", "x")
	}
	type result struct {
		format, body string
		err          error
	}
	results := make(chan result, n)
	for i, id := range ids {
		f := streamFormats[i%len(streamFormats)]
		res := get(t, ev.srv, "/v1/jobs/"+id+"/events"+f.query, f.header...)
		go func() {
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			results <- result{f.name, string(b), err}
		}()
	}
	s := apiServer(ev)
	if got := api.OpenStreams(s); got != n {
		t.Fatalf("%d streams taken over, want %d", got, n)
	}
	close(release)
	timeout := time.After(60 * time.Second)
	for i := range n {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("%s stream: %v", r.format, r.err)
			}
			if got := finalState(t, r.format, r.body); got != "succeeded" {
				t.Fatalf("%s stream ends with %s: %q", r.format, got, r.body)
			}
		case <-timeout:
			t.Fatalf("%d of %d streams got their final event", i, n)
		}
	}
	waitUntil(t, 10*time.Second, "all closed", func() bool {
		return api.OpenStreams(s) == 0 && ev.e.Hub().Subscribers() == subs
	})
}

// rawStream sends a stream's request on a connection of its own with a
// small receive buffer, and returns the connection unread.
func rawStream(t *testing.T, ev *env, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = setRecvBuffer(fd, 4096) })
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", ev.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: docket\r\n\r\n", path)
	return conn
}

// chatty adds a queue whose jobs report large progress as fast as the
// engine stores it, until release is closed.
func chatty(ev *env, release chan struct{}) {
	msg := strings.Repeat("m", 4096)
	ev.e.AddQueue(engine.Queue{Name: "chatty", Concurrency: 2, MaxAttempts: 1, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
		for i := int64(1); ; i++ {
			tk.Progress(i, 0, msg)
			select {
			case <-release:
				tk.SetResult("text/plain", []byte("done"))
				return nil
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	})})
}

// Clients that stop reading hold up neither the others nor the engine,
// and are dropped once they have read nothing for the stall timeout.
func TestStalledClients(t *testing.T) {
	t.Run("others go on", func(t *testing.T) {
		ev := streamEnv(t, engine.Options{ProgressEvery: time.Millisecond})
		s := apiServer(ev)
		api.SetStreamTimings(s, api.StreamTimings{Stall: time.Hour})
		release := make(chan struct{})
		chatty(ev, release)
		_, id := ev.submit("chatty", "", "x")
		ev.waitState(id, "", "running")
		path := "/v1/jobs/" + id + "/events"
		// More stalled clients than the stream server has writers.
		const stalled = 8
		for range stalled {
			rawStream(t, ev, path)
		}
		waitUntil(t, 30*time.Second, "stalled", func() bool { return api.StalledStreams(s) == stalled })

		good := ev.openStream(path, "")
		var mu sync.Mutex
		count := 0
		ended := make(chan sseEvent, 1)
		go func() {
			var last sseEvent
			for {
				e, ok := good.next()
				if !ok {
					ended <- last
					return
				}
				mu.Lock()
				count++
				mu.Unlock()
				last = e
			}
		}()
		waitUntil(t, 30*time.Second, "receiving events beside stalled clients", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return count >= 20
		})
		if n := api.StalledStreams(s); n != stalled {
			t.Fatalf("%d streams stalled, want %d", n, stalled)
		}
		close(release)
		select {
		case last := <-ended:
			if last.job["state"] != "succeeded" {
				t.Fatalf("the reading client's last event: %v", last.job["state"])
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the reading client did not get the final event")
		}
	})

	t.Run("dropped", func(t *testing.T) {
		ev := streamEnv(t, engine.Options{ProgressEvery: time.Millisecond})
		s := apiServer(ev)
		api.SetStreamTimings(s, api.StreamTimings{Stall: 200 * time.Millisecond})
		release := make(chan struct{})
		defer close(release)
		chatty(ev, release)
		subs := ev.e.Hub().Subscribers()
		_, id := ev.submit("chatty", "", "x")
		ev.waitState(id, "", "running")
		conn := rawStream(t, ev, "/v1/jobs/"+id+"/events")
		waitUntil(t, 30*time.Second, "stalled", func() bool { return api.StalledStreams(s) == 1 })
		waitUntil(t, 30*time.Second, "dropped", func() bool {
			return api.OpenStreams(s) == 0 && api.StalledStreams(s) == 0 && ev.e.Hub().Subscribers() == subs
		})
		// The client finds its connection closed once it reads again.
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := io.Copy(io.Discard, conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the dropped stream's connection is still open")
		}
	})
}

// A client that goes away is noticed without a write to it: its stream's
// subscription and socket are let go.
func TestTakenOverStreamOfGoneClient(t *testing.T) {
	ev := streamEnv(t, engine.Options{})
	s := apiServer(ev)
	api.SetStreamTimings(s, api.StreamTimings{Probe: 20 * time.Millisecond, Sweep: 10 * time.Millisecond})
	subs := ev.e.Hub().Subscribers()
	_, id := ev.submit("gated", "", "x")
	ev.waitState(id, "", "running")
	var clients []*sseClient
	for _, f := range streamFormats {
		clients = append(clients, ev.openStream("/v1/jobs/"+id+"/events"+f.query, "", f.header...))
	}
	if n := api.OpenStreams(s); n != len(clients) {
		t.Fatalf("%d streams taken over, want %d", n, len(clients))
	}
	for _, c := range clients {
		c.close()
	}
	waitUntil(t, 30*time.Second, "cleaned up", func() bool {
		return api.OpenStreams(s) == 0 && ev.e.Hub().Subscribers() == subs
	})
}

// A resumed stream starts right after the version the client saw, never
// repeating it, at any point of the job's life.
func TestTakenOverStreamResume(t *testing.T) {
	ev := streamEnv(t, engine.Options{ProgressEvery: time.Millisecond})
	_, id := ev.submit("stepped", "", "x")
	path := "/v1/jobs/" + id + "/events"
	first := ev.openStream(path, "")
	var seen []sseEvent
	seen = append(seen, first.until(func(e sseEvent) bool { return e.job["state"] == "running" })...)
	for step := 1; step <= 3; step++ {
		// Every step, a stream resumed after each version seen so far
		// gets exactly the next change.
		var resumed []*sseClient
		for _, e := range seen {
			resumed = append(resumed, ev.openStream(path, "", "Last-Event-ID", strconv.FormatInt(e.id, 10)))
		}
		ev.steps <- struct{}{}
		next := first.until(func(e sseEvent) bool { return step < 3 && current(e) == float64(step) || e.job["state"] == "succeeded" })
		want := next[len(next)-1]
		for i, c := range resumed {
			after := seen[i].id
			got := c.until(func(e sseEvent) bool { return e.id >= want.id })
			for _, e := range got {
				if e.id <= after {
					t.Fatalf("step %d, resumed after %d: got %d again: %v", step, after, e.id, kinds(got))
				}
			}
			c.close()
		}
		seen = append(seen, next...)
	}
	// Resumed after the end: nothing, and the stream ends at once.
	last := seen[len(seen)-1]
	done := ev.openStream(path, "", "Last-Event-ID", strconv.FormatInt(last.id, 10))
	if e, ok := done.next(); ok {
		t.Fatalf("resumed after the final event: got %v", kinds([]sseEvent{e}))
	}
}

// Closing the Server ends the streams it took over, which net/http's
// shutdown does not know; streams opened afterwards go through net/http.
func TestCloseEndsTakenOverStreams(t *testing.T) {
	ev := streamEnv(t, engine.Options{})
	s := apiServer(ev)
	subs := ev.e.Hub().Subscribers()
	_, id := ev.submit("gated", "", "x")
	ev.waitState(id, "", "running")
	var ends []chan error
	for _, f := range streamFormats {
		res := get(t, ev.srv, "/v1/jobs/"+id+"/events"+f.query, f.header...)
		end := make(chan error, 1)
		go func() {
			defer res.Body.Close()
			_, err := io.Copy(io.Discard, bufio.NewReader(res.Body))
			end <- err
		}()
		ends = append(ends, end)
	}
	if n := api.OpenStreams(s); n != len(ends) {
		t.Fatalf("%d streams taken over, want %d", n, len(ends))
	}
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	for _, end := range ends {
		select {
		case <-end:
		case <-time.After(30 * time.Second):
			t.Fatal("a stream outlived Close")
		}
	}
	if n, m := api.OpenStreams(s), ev.e.Hub().Subscribers(); n != 0 || m != subs {
		t.Fatalf("after Close: %d streams, %d subscriptions (want 0, %d)", n, m, subs)
	}
	// Later streams are served through net/http, and still work.
	after := ev.openStream("/v1/jobs/"+id+"/events", "")
	if e, ok := after.next(); !ok || e.job["state"] != "running" {
		t.Fatalf("a stream after Close: %v %v", e, ok)
	}
	if n := api.OpenStreams(s); n != 0 {
		t.Fatalf("a stream was taken over after Close")
	}
	after.close()
}

// Idle taken-over streams get their keep-alives from the shared loop: a
// comment in SSE, an empty line in NDJSON, nothing in an array.
func TestTakenOverHeartbeats(t *testing.T) {
	ev := streamEnv(t, engine.Options{})
	api.SetStreamTimings(apiServer(ev), api.StreamTimings{Heartbeat: 20 * time.Millisecond, Sweep: 5 * time.Millisecond})
	_, id := ev.submit("gated", "", "x")
	ev.waitState(id, "", "running")
	path := "/v1/jobs/" + id + "/events"
	array := get(t, ev.srv, path+"?format=json-array")
	arrayBody := make(chan string, 1)
	go func() {
		defer array.Body.Close()
		b, _ := io.ReadAll(array.Body)
		arrayBody <- string(b)
	}()
	for _, tc := range []struct {
		name   string
		header []string
		beat   string // a keep-alive line
	}{
		{"sse", nil, ": ping"},
		{"ndjson", []string{"Accept", "application/x-ndjson"}, ""},
	} {
		res := get(t, ev.srv, path, tc.header...)
		lines := make(chan string)
		go func() {
			defer close(lines)
			br := bufio.NewReader(res.Body)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				lines <- strings.TrimSuffix(line, "\n")
			}
		}()
		timeout := time.After(30 * time.Second)
		for beats := 0; beats < 3; {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("%s: the stream ended", tc.name)
				}
				if line == tc.beat {
					beats++
				}
			case <-timeout:
				t.Fatalf("%s: %d keep-alives in 30 s", tc.name, beats)
			}
		}
		res.Body.Close()
		for range lines {
		}
	}
	ev.gate <- struct{}{}
	select {
	case b := <-arrayBody:
		var arr []map[string]any
		if err := json.Unmarshal([]byte(b), &arr); err != nil || strings.Count(b, "\n") != 1 {
			t.Fatalf("array with keep-alives or broken: %q %v", b, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the array stream did not end")
	}
}

// Changes that another process sharing the store makes, which this one's
// hub never hears of, reach taken-over streams through the recheck: the
// state, and in an array the queue position as it moves.
func TestTakenOverStreamRecheck(t *testing.T) {
	ev := streamEnv(t, engine.Options{})
	api.SetStreamTimings(apiServer(ev), api.StreamTimings{Recheck: 20 * time.Millisecond})
	ctx := context.Background()
	_, ahead := ev.submit("held", "", "x")
	_, id := ev.submit("held", "", "x")
	type read struct {
		name string
		mu   sync.Mutex
		got  []byte
		end  chan struct{}
	}
	var reads []*read
	for _, f := range streamFormats {
		res := get(t, ev.srv, "/v1/jobs/"+id+"/events"+f.query, f.header...)
		r := &read{name: f.name, end: make(chan struct{})}
		go func() {
			defer close(r.end)
			defer res.Body.Close()
			buf := make([]byte, 4096)
			for {
				n, err := res.Body.Read(buf)
				r.mu.Lock()
				r.got = append(r.got, buf[:n]...)
				r.mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		reads = append(reads, r)
	}
	// Straight through the store: the hub is not told.
	if _, err := ev.e.Store().Cancel(ctx, ahead, time.Hour); err != nil {
		t.Fatal(err)
	}
	array := reads[len(reads)-1]
	waitUntil(t, 30*time.Second, "told of the new position", func() bool {
		array.mu.Lock()
		defer array.mu.Unlock()
		return strings.Contains(string(array.got), `"n_ahead_in_queue":0`)
	})
	if _, err := ev.e.Store().Cancel(ctx, id, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, r := range reads {
		select {
		case <-r.end:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the stream did not end", r.name)
		}
		b := string(r.got)
		if got := finalState(t, r.name, b); got != "canceled" {
			t.Fatalf("%s: the stream ends with %s: %q", r.name, got, b)
		}
		if r.name == "json-array" {
			var arr []map[string]any
			json.Unmarshal([]byte(b), &arr)
			var ahead []float64
			for _, el := range arr {
				ahead = append(ahead, el["n_ahead_in_queue"].(float64))
			}
			if len(ahead) < 3 || ahead[0] != 1 || ahead[len(ahead)-2] != 0 {
				t.Fatalf("positions %v in %q, want 1 first, then 0", ahead, b)
			}
		}
	}
}
