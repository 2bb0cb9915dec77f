package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/gateway"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

func storeFilterAll() store.Filter { return store.Filter{} }

// upstream is the service behind the gateway in these tests.
type upstream struct {
	*httptest.Server
	fails    atomic.Int32 // requests to /unavailable
	release  chan struct{}
	mu       sync.Mutex
	lastAuth []string
}

// echoed is what /echo answers: what it received.
type echoed struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Query  string      `json:"query"`
	Host   string      `json:"host"`
	Header http.Header `json:"header"`
	Body   string      `json:"body"`
	Length int64       `json:"length"`
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.lastAuth = r.Header["Authorization"]
		u.mu.Unlock()
		w.Header().Set("X-Upstream", "yes")
		json.NewEncoder(w).Encode(echoed{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host,
			Header: r.Header, Body: string(b), Length: r.ContentLength})
	})
	mux.HandleFunc("/reports/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		fmt.Fprintf(w, "report %s", strings.TrimPrefix(r.URL.Path, "/reports/"))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "slow done")
	})
	mux.HandleFunc("/forbidden", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Reason", "policy")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error": "you may not"}`)
	})
	mux.HandleFunc("/unavailable", func(w http.ResponseWriter, r *http.Request) {
		u.fails.Add(1)
		w.Header().Set("Retry-After", "0")
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/hangup", func(w http.ResponseWriter, r *http.Request) {
		u.fails.Add(1)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-u.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		// A body of the size asked for, of bytes derived from their
		// offset, written in pieces: never held whole.
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		if r.URL.Query().Get("length") == "known" {
			w.Header().Set("Content-Length", fmt.Sprint(n))
		}
		io.Copy(w, io.LimitReader(&pattern{}, n))
	})
	mux.HandleFunc("/sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	u.Server = httptest.NewServer(mux)
	t.Cleanup(u.Close)
	return u
}

// pattern is an endless reader of bytes that depend on their offset.
type pattern struct{ off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.off*7 + p.off>>11)
		p.off++
	}
	return len(b), nil
}

const (
	aliceToken = "alice-token"
	bobToken   = "bob-token"
)

type env struct {
	up  *upstream
	srv *apitest.Server
	g   *gateway.Gateway
}

// start runs a gateway to a new upstream, with alice's and bob's tokens.
func start(t *testing.T, change func(*gateway.Config, *engine.Queue)) *env {
	up := newUpstream(t)
	base, _ := url.Parse(up.URL)
	cfg := gateway.Config{Upstreams: []gateway.Upstream{{Name: "app", URL: base, Prefix: "/",
		RequireAsync: []string{"POST /reports/"}}}, MaxBody: 200 << 20}
	q := engine.Queue{Name: gateway.Queue, Concurrency: 4, MaxAttempts: 3}
	if change != nil {
		change(&cfg, &q)
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if q.Concurrency > 0 {
		q.Handler = g.Handler(t.TempDir())
	}
	srv := apitest.Start(t, apitest.Options{
		Tokens: map[string]apitest.Token{
			aliceToken: {Owner: "alice", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
			bobToken:   {Owner: "bob", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
		},
		Queues: []engine.Queue{q}, Apps: []api.App{g.App()}, MaxBody: cfg.MaxBody})
	return &env{up: up, srv: srv, g: g}
}

// do sends a request as the token's owner, without following redirects.
func (e *env) do(t *testing.T, token, method, path string, body io.Reader, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func readAll(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// accepted checks a 202 of the gateway and returns the job id.
func accepted(t *testing.T, r *http.Response) string {
	t.Helper()
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202: %s", r.StatusCode, readAll(t, r))
	}
	var body struct {
		ID     string `json:"async_request_id"`
		Status string `json:"status"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.ID == "" || body.Status != "queued" {
		t.Fatalf("202 body %+v", body)
	}
	if loc := r.Header.Get("Location"); loc != "/v1/jobs/"+body.ID {
		t.Errorf("Location %q", loc)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	return body.ID
}

// done waits for the job to end and returns it.
func (e *env) done(t *testing.T, id string) *job.Job {
	t.Helper()
	return e.srv.Await(t, id, func(j *job.Job) bool { return j.State.Terminal() })
}

func TestAsyncRequestIsRecordedAndReplayed(t *testing.T) {
	for _, c := range []struct {
		name   string
		header []string
	}{
		{"prefer", []string{"Prefer", "respond-async"}},
		{"prefer among others", []string{"Prefer", "return=minimal, respond-async"}},
		{"x-async-request", []string{"X-Async-Request", "true"}},
		{"x-async-background", []string{"X-Async-Background", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := start(t, nil)
			header := append([]string{"Content-Type", "text/plain", "X-Custom", "kept", "Connection", "X-Hop",
				"X-Hop", "dropped", "Keep-Alive", "timeout=5", "X-Forwarded-For", "10.1.1.1"}, c.header...)
			r := e.do(t, aliceToken, "POST", "/echo?a=1&b=%20two", strings.NewReader("hello upstream"), header...)
			id := accepted(t, r)
			if j := e.done(t, id); j.State != job.Succeeded || j.Owner != "alice" || j.Queue != gateway.Queue {
				t.Fatalf("job %+v", j)
			}
			res := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil)
			if res.StatusCode != 200 || res.Header.Get("X-Upstream") != "yes" {
				t.Fatalf("result %d %v", res.StatusCode, res.Header)
			}
			var got echoed
			if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.Method != "POST" || got.Path != "/echo" || got.Query != "a=1&b=%20two" || got.Body != "hello upstream" || got.Length != 14 {
				t.Errorf("upstream got %+v", got)
			}
			h := got.Header
			for _, gone := range []string{"X-Hop", "Keep-Alive", "Authorization", "X-Async-Request", "X-Async-Background"} {
				if h.Get(gone) != "" {
					t.Errorf("%s reached the upstream: %q", gone, h.Get(gone))
				}
			}
			if h.Get("X-Custom") != "kept" || h.Get("Content-Type") != "text/plain" {
				t.Errorf("headers lost: %v", h)
			}
			if p := h.Get("Prefer"); strings.Contains(p, "respond-async") || c.name == "prefer among others" && p != "return=minimal" {
				t.Errorf("Prefer %q reached the upstream", p)
			}
			if xff := h.Get("X-Forwarded-For"); xff != "10.1.1.1, 127.0.0.1" {
				t.Errorf("X-Forwarded-For %q", xff)
			}
			if h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-Host") != strings.TrimPrefix(e.srv.URL, "http://") {
				t.Errorf("forwarding headers %v", h)
			}
		})
	}
}

func TestSyncPassThrough(t *testing.T) {
	e := start(t, nil)
	r := e.do(t, aliceToken, "PUT", "/echo?x=y", strings.NewReader("sync body"), "X-Custom", "1")
	if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "yes" {
		t.Fatalf("status %d", r.StatusCode)
	}
	var got echoed
	json.NewDecoder(r.Body).Decode(&got)
	if got.Method != "PUT" || got.Query != "x=y" || got.Body != "sync body" || got.Header.Get("Authorization") != "" ||
		got.Header.Get("X-Custom") != "1" || got.Header.Get("X-Forwarded-For") == "" {
		t.Errorf("upstream got %+v", got)
	}
	// The upstream's errors pass as they are.
	r = e.do(t, aliceToken, "GET", "/forbidden", nil)
	if r.StatusCode != 403 || readAll(t, r) != `{"error": "you may not"}` {
		t.Errorf("403 became %d", r.StatusCode)
	}
	// No job was made.
	if page, err := e.srv.Engine.Store().List(context.Background(), storeFilterAll()); err != nil || len(page.Jobs) != 0 {
		t.Errorf("sync requests made jobs: %v %v", page.Jobs, err)
	}
	// Without a token: 401, the upstream never called.
	if r := e.do(t, "", "GET", "/echo", nil); r.StatusCode != 401 {
		t.Errorf("no token: %d", r.StatusCode)
	}
	// docket's namespace is not proxied.
	r = e.do(t, aliceToken, "GET", "/v1/nothing-here", nil)
	if r.StatusCode != 404 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/problem+json") {
		t.Errorf("/v1/nothing-here: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
}

func TestSyncStreams(t *testing.T) {
	e := start(t, nil)
	r := e.do(t, aliceToken, "GET", "/stream", nil)
	buf := make([]byte, 6)
	if _, err := io.ReadFull(r.Body, buf); err != nil || string(buf) != "first\n" {
		t.Fatalf("first chunk %q %v", buf, err)
	}
	// The first chunk came while the upstream still holds the response.
	close(e.up.release)
	if rest := readAll(t, r); rest != "second\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestRequireAsync(t *testing.T) {
	e := start(t, nil)
	r := e.do(t, aliceToken, "POST", "/reports/42", strings.NewReader("{}"))
	if r.StatusCode != http.StatusConflict {
		t.Fatalf("status %d, want 409", r.StatusCode)
	}
	var p struct{ Type, Detail string }
	json.NewDecoder(r.Body).Decode(&p)
	if p.Type != "urn:docket:problem:async-required" || !strings.Contains(p.Detail, "Prefer: respond-async") {
		t.Errorf("problem %+v", p)
	}
	// Only the declared method: a GET of the same path is proxied.
	if r := e.do(t, aliceToken, "GET", "/reports/42", nil); r.StatusCode != 200 || readAll(t, r) != "report 42" {
		t.Errorf("GET: %d", r.StatusCode)
	}
	id := accepted(t, e.do(t, aliceToken, "POST", "/reports/42", strings.NewReader("{}"), "Prefer", "respond-async"))
	e.done(t, id)
	if r := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil); readAll(t, r) != "report 42" {
		t.Error("async report lost")
	}
}

func TestPreferWait(t *testing.T) {
	e := start(t, nil)
	// The upstream answers within the wait: its response, at once.
	r := e.do(t, aliceToken, "GET", "/forbidden", nil, "Prefer", "wait=5")
	if r.StatusCode != 403 || r.Header.Get("X-Reason") != "policy" || readAll(t, r) != `{"error": "you may not"}` {
		t.Fatalf("wait answered %d", r.StatusCode)
	}
	if r.Header.Get("Preference-Applied") != "wait=5" || !strings.HasSuffix(r.Header.Get("Content-Location"), "/result") {
		t.Errorf("headers %v", r.Header)
	}
	// It does not: 202, and the request goes on.
	began := time.Now()
	id := accepted(t, e.do(t, aliceToken, "GET", "/slow", nil, "Prefer", "respond-async, wait=1"))
	if d := time.Since(began); d < time.Second {
		t.Errorf("answered after %v, before the wait", d)
	}
	if j := e.done(t, id); j.State != job.Succeeded {
		t.Fatalf("job %s", j.State)
	}
	if r := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil); readAll(t, r) != "slow done" {
		t.Error("slow result lost")
	}
}

func TestResultReplayedByteForByte(t *testing.T) {
	e := start(t, nil)
	id := accepted(t, e.do(t, aliceToken, "GET", "/forbidden", nil, "X-Async-Request", "true"))
	e.done(t, id)
	direct, err := http.Get(e.up.URL + "/forbidden")
	if err != nil {
		t.Fatal(err)
	}
	want := readAll(t, direct)
	r := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil)
	if r.StatusCode != 403 || readAll(t, r) != want {
		t.Fatalf("replayed %d", r.StatusCode)
	}
	for _, k := range []string{"Content-Type", "X-Reason", "Content-Length"} {
		if r.Header.Get(k) != direct.Header.Get(k) {
			t.Errorf("%s: %q, upstream sent %q", k, r.Header.Get(k), direct.Header.Get(k))
		}
	}
	if got := r.Header.Values("Set-Cookie"); len(got) != 2 || got[0] != "a=1" || got[1] != "b=2" {
		t.Errorf("Set-Cookie %v", got)
	}
	// Binary bodies, with and without a length.
	for _, length := range []string{"known", "unknown"} {
		id := accepted(t, e.do(t, aliceToken, "GET", "/bytes?n=300001&length="+length, nil, "Prefer", "respond-async"))
		e.done(t, id)
		got := readAll(t, e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil))
		wantBytes, _ := io.ReadAll(io.LimitReader(&pattern{}, 300001))
		if got != string(wantBytes) {
			t.Errorf("%s length: %d bytes replayed, not the upstream's %d", length, len(got), len(wantBytes))
		}
	}
}

func TestStatusMonitor(t *testing.T) {
	e := start(t, nil)
	id := accepted(t, e.do(t, aliceToken, "GET", "/slow", nil, "Prefer", "respond-async"))
	r := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/status", nil)
	if r.StatusCode != 202 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("pending status %d", r.StatusCode)
	}
	var j struct {
		State string `json:"state"`
	}
	json.NewDecoder(r.Body).Decode(&j)
	if j.State != "queued" && j.State != "running" {
		t.Errorf("state %q", j.State)
	}
	e.done(t, id)
	r = e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/status", nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/v1/jobs/"+id+"/result" {
		t.Fatalf("done status %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	// A client that follows redirects lands on the upstream's response.
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/jobs/"+id+"/status", nil)
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || readAll(t, res) != "slow done" {
		t.Errorf("followed: %d", res.StatusCode)
	}
}

func TestOwnerIsolation(t *testing.T) {
	e := start(t, nil)
	id := accepted(t, e.do(t, aliceToken, "POST", "/echo", strings.NewReader("secret"), "Prefer", "respond-async"))
	e.done(t, id)
	for _, path := range []string{"/v1/jobs/" + id, "/v1/jobs/" + id + "/result", "/v1/jobs/" + id + "/status"} {
		if r := e.do(t, bobToken, "GET", path, nil); r.StatusCode != 404 {
			t.Errorf("bob GET %s: %d", path, r.StatusCode)
		}
	}
	if r := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil); r.StatusCode != 200 {
		t.Errorf("alice: %d", r.StatusCode)
	}
}

func TestUpstreamDown(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	e := start(t, func(c *gateway.Config, q *engine.Queue) {
		c.Upstreams[0].URL = &url.URL{Scheme: "http", Host: dead}
	})
	// Even a POST is retried: it was never sent.
	id := accepted(t, e.do(t, aliceToken, "POST", "/echo", strings.NewReader("x"), "Prefer", "respond-async"))
	j := e.done(t, id)
	if j.State != job.Failed || j.Attempt != 3 || j.Error == nil || !strings.Contains(j.Error.Message, "did not answer POST /echo") ||
		!strings.Contains(j.Error.Message, "refused") {
		t.Fatalf("job %s after %d attempts: %+v", j.State, j.Attempt, j.Error)
	}
	r := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil)
	if r.StatusCode != 500 || !strings.Contains(readAll(t, r), "refused") {
		t.Errorf("result of a failed job: %d", r.StatusCode)
	}
	// Synchronously: 502 problem.
	if r := e.do(t, aliceToken, "GET", "/echo", nil); r.StatusCode != 502 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/problem+json") {
		t.Errorf("sync to a dead upstream: %d", r.StatusCode)
	}
}

func TestRetries(t *testing.T) {
	e := start(t, nil)
	// 503 to an idempotent request: retried, and the last answer kept.
	id := accepted(t, e.do(t, aliceToken, "GET", "/unavailable", nil, "Prefer", "respond-async"))
	if j := e.done(t, id); j.State != job.Succeeded || j.Attempt != 3 || e.up.fails.Load() != 3 {
		t.Fatalf("job %s after %d attempts, upstream called %d times", j.State, j.Attempt, e.up.fails.Load())
	}
	r := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil)
	if r.StatusCode != 503 || !strings.Contains(readAll(t, r), "maintenance") {
		t.Errorf("kept answer %d", r.StatusCode)
	}
	// A POST that may have reached the upstream is not sent twice.
	e.up.fails.Store(0)
	id = accepted(t, e.do(t, aliceToken, "POST", "/hangup", strings.NewReader("x"), "Prefer", "respond-async"))
	j := e.done(t, id)
	if j.State != job.Failed || j.Attempt != 1 || e.up.fails.Load() != 1 || !strings.Contains(j.Error.Message, "not retried") {
		t.Fatalf("POST: %s after %d attempts (%d calls): %+v", j.State, j.Attempt, e.up.fails.Load(), j.Error)
	}
	// Unless the upstream says it may be.
	e = start(t, func(c *gateway.Config, q *engine.Queue) { c.Upstreams[0].RetryUnsafe = true })
	id = accepted(t, e.do(t, aliceToken, "POST", "/hangup", strings.NewReader("x"), "Prefer", "respond-async"))
	if j := e.done(t, id); j.State != job.Failed || j.Attempt != 3 || e.up.fails.Load() != 3 {
		t.Fatalf("retry_unsafe POST: %s after %d attempts (%d calls)", j.State, j.Attempt, e.up.fails.Load())
	}
}

func TestLimits(t *testing.T) {
	e := start(t, func(c *gateway.Config, q *engine.Queue) {
		c.MaxBody = 1000
		c.Upstreams[0].MaxResponse = 5000
	})
	big := strings.Repeat("x", 1001)
	if r := e.do(t, aliceToken, "POST", "/echo", strings.NewReader(big), "Prefer", "respond-async"); r.StatusCode != 413 {
		t.Errorf("async big body: %d", r.StatusCode)
	}
	if r := e.do(t, aliceToken, "POST", "/echo", strings.NewReader(big)); r.StatusCode != 413 {
		t.Errorf("sync big body: %d", r.StatusCode)
	}
	id := accepted(t, e.do(t, aliceToken, "GET", "/bytes?n=5001", nil, "Prefer", "respond-async"))
	if j := e.done(t, id); j.State != job.Failed || j.Attempt != 1 || !strings.Contains(j.Error.Message, "max_response") {
		t.Errorf("big response: %s %+v", j.State, j.Error)
	}
	// A full queue: 503 with Retry-After.
	e = start(t, func(c *gateway.Config, q *engine.Queue) { q.Concurrency, q.MaxQueued = 0, 1 })
	accepted(t, e.do(t, aliceToken, "GET", "/echo", nil, "Prefer", "respond-async"))
	r := e.do(t, aliceToken, "GET", "/echo", nil, "Prefer", "respond-async")
	if r.StatusCode != 503 || r.Header.Get("Retry-After") == "" {
		t.Errorf("full queue: %d", r.StatusCode)
	}
}

func TestWebhookAndIdempotency(t *testing.T) {
	e := start(t, func(c *gateway.Config, q *engine.Queue) { q.Concurrency = 0 })
	r := e.do(t, aliceToken, "POST", "/echo", strings.NewReader("x"), "Prefer", "respond-async",
		"Docket-Webhook", "https://hooks.example.com/done", "Docket-Webhook-Events", "completed", "Idempotency-Key", "k1")
	id := accepted(t, r)
	j := e.srv.Job(t, id)
	if j.Webhook != "https://hooks.example.com/done" || len(j.WebhookEvents) != 1 || j.WebhookEvents[0] != "completed" {
		t.Errorf("webhook %q %v", j.Webhook, j.WebhookEvents)
	}
	if in := string(e.srv.Input(t, id)); strings.Contains(in, "Docket-Webhook") || !strings.Contains(in, "Idempotency-Key: k1") {
		t.Errorf("recorded request:\n%s", in)
	}
	again := e.do(t, aliceToken, "POST", "/echo", strings.NewReader("x"), "Prefer", "respond-async", "Idempotency-Key", "k1")
	if again.Header.Get("Idempotent-Replayed") != "true" || accepted(t, again) != id {
		t.Error("the same Idempotency-Key made a second job")
	}
	if r := e.do(t, aliceToken, "POST", "/echo", nil, "Prefer", "respond-async", "Docket-Webhook", "ftp://x"); r.StatusCode != 400 {
		t.Errorf("bad webhook: %d", r.StatusCode)
	}
}

// Bodies of any size stream through: neither the recorded request nor the
// recorded response is held in memory.
func TestLargeBodiesStream(t *testing.T) {
	e := start(t, nil)
	const size = 64 << 20
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	before := m.HeapInuse

	id := accepted(t, e.do(t, aliceToken, "POST", "/sum", io.LimitReader(&pattern{}, size), "Prefer", "respond-async"))
	e.done(t, id)
	h := sha256.New()
	io.Copy(h, io.LimitReader(&pattern{}, size))
	if got := readAll(t, e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil)); got != fmt.Sprintf("%d %s", size, hex.EncodeToString(h.Sum(nil))) {
		t.Errorf("upstream got %s", got)
	}
	id = accepted(t, e.do(t, aliceToken, "GET", fmt.Sprintf("/bytes?n=%d", size), nil, "Prefer", "respond-async"))
	e.done(t, id)
	r := e.do(t, aliceToken, "GET", "/v1/jobs/"+id+"/result", nil)
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil || n != size {
		t.Errorf("replayed %d bytes: %v", n, err)
	}
	close(stop)
	wg.Wait()
	if grew := int64(peak.Load()) - int64(before); grew > 24<<20 {
		t.Errorf("heap grew by %d MiB moving %d MiB bodies", grew>>20, size>>20)
	}
}
