package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/store/sqlite"
)

// env is a real API server over a real engine and SQLite store.
type env struct {
	t   testing.TB
	srv *httptest.Server
	e   *engine.Engine
	// gate holds the "gated" queue's handler until released.
	gate chan struct{}
	// steps paces the "stepped" queue's handler: one progress step per
	// value, three in all.
	steps chan struct{}
}

const (
	aliceToken = "alice-secret"
	bobToken   = "bob-secret"
	adminToken = "admin-secret"
	readToken  = "reader-secret"
)

func tokens() []api.Token {
	mk := func(tok, owner string, scopes ...string) api.Token {
		return api.Token{Owner: owner, Scopes: scopes, Hash: sha256.Sum256([]byte(tok))}
	}
	return []api.Token{
		mk(aliceToken, "alice", api.ScopeSubmit, api.ScopeRead),
		mk(bobToken, "bob", api.ScopeSubmit, api.ScopeRead),
		mk(adminToken, "ops", api.ScopeAdmin),
		mk(readToken, "alice", api.ScopeRead),
	}
}

// newEnv starts a server; cfg's Engine and TempDir are filled in.
func newEnv(t testing.TB, cfg api.Config, opts engine.Options) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	opts.Store, opts.TempDir = st, dir
	if opts.BackoffBase == 0 {
		opts.BackoffBase, opts.BackoffMax = time.Millisecond, 2*time.Millisecond
	}
	e, err := engine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ev := &env{t: t, e: e, gate: make(chan struct{}), steps: make(chan struct{})}
	queues := []engine.Queue{
		{Name: "echo", Concurrency: 4, MaxAttempts: 1, Handler: engine.HandlerFunc(echo)},
		{Name: "gated", Concurrency: 2, MaxAttempts: 1, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			tk.Progress(1, 2, "waiting")
			select {
			case <-ev.gate:
				tk.SetResult("text/plain", []byte("released"))
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})},
		{Name: "stepped", Concurrency: 2, MaxAttempts: 1, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			for i := range int64(3) {
				select {
				case <-ev.steps:
				case <-ctx.Done():
					return ctx.Err()
				}
				tk.Progress(i+1, 3, fmt.Sprintf("step %d", i+1))
			}
			tk.SetResult("text/plain", []byte("stepped"))
			return nil
		})},
		{Name: "stored", Concurrency: 0, MaxQueued: 3},
		{Name: "held", Concurrency: 0},
		{Name: "slow", Concurrency: 1, MaxAttempts: 1, Timeout: 100 * time.Millisecond, Handler: engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
			<-ctx.Done()
			return ctx.Err()
		})},
		{Name: "expiring", Concurrency: 1, MaxAttempts: 1, Retention: time.Millisecond, Handler: engine.HandlerFunc(echo)},
	}
	for _, q := range queues {
		if err := e.AddQueue(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	cfg.Engine, cfg.TempDir = e, dir
	ev.srv = httptest.NewServer(api.New(cfg))
	t.Cleanup(func() {
		ev.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		select {
		case <-ev.gate:
		default:
			close(ev.gate)
		}
		e.Stop(ctx)
		st.Close()
	})
	return ev
}

// echo returns its input; inputs starting with "fail" fail, "none" gives no
// result, "art" adds an artifact.
func echo(ctx context.Context, tk *engine.Task) error {
	rc, err := tk.OpenInput(ctx)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	switch {
	case bytes.HasPrefix(b, []byte("fail")):
		return engine.Permanent(errors.New("asked to fail"))
	case bytes.HasPrefix(b, []byte("none")):
		return nil
	case bytes.HasPrefix(b, []byte("art")):
		if err := tk.AddArtifact("page-001.txt", "text/plain", bytes.NewReader([]byte("page one"))); err != nil {
			return err
		}
	}
	tk.SetResult(tk.Job().Input.ContentType, b)
	return nil
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

// problem checks a problem+json answer of the given status and type suffix.
func (r resp) problem(t *testing.T, status int, typ string) {
	t.Helper()
	if r.status != status || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("got %d %s %s, want %d problem", r.status, r.header.Get("Content-Type"), r.body, status)
	}
	m := r.json(t)
	if m["type"] != "urn:docket:problem:"+typ || int(m["status"].(float64)) != status || m["title"] == "" {
		t.Fatalf("problem %v, want type %s", m, typ)
	}
}

func (ev *env) do(method, path, token string, body io.Reader, header ...string) resp {
	ev.t.Helper()
	req, err := http.NewRequest(method, ev.srv.URL+path, body)
	if err != nil {
		ev.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := ev.srv.Client().Do(req)
	if err != nil {
		ev.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (ev *env) submit(queue, token, body string, header ...string) (resp, string) {
	ev.t.Helper()
	r := ev.do("POST", "/v1/queues/"+queue+"/jobs", token, strings.NewReader(body), append([]string{"Content-Type", "text/plain"}, header...)...)
	if r.status != http.StatusAccepted && r.status != http.StatusOK {
		return r, ""
	}
	return r, r.json(ev.t)["id"].(string)
}

// waitState polls until the job reaches state.
func (ev *env) waitState(id, token, state string) map[string]any {
	ev.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	query := "" // first a plain read, then long polls for the next change
	for {
		r := ev.do("GET", "/v1/jobs/"+id+query, token, nil)
		if r.status != 200 {
			ev.t.Fatalf("get %s: %d %s", id, r.status, r.body)
		}
		m := r.json(ev.t)
		if m["state"] == state {
			return m
		}
		query = fmt.Sprintf("?wait=2s&after=%v", m["version"])
		if time.Now().After(deadline) {
			ev.t.Fatalf("job %s is %v, want %s", id, m["state"], state)
		}
	}
}

func TestSubmitAndFetch(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{})
	cases := []struct {
		name, ctype string
		body        func() (io.Reader, string)
		wantType    string
		wantBody    string
		filename    string
	}{
		{"json", "application/json", func() (io.Reader, string) { return strings.NewReader(`{"a":1}`), "application/json" }, "application/json", `{"a":1}`, ""},
		{"raw bytes", "", func() (io.Reader, string) { return bytes.NewReader([]byte{0, 1, 2, 255}), "application/octet-stream" }, "application/octet-stream", "\x00\x01\x02\xff", ""},
		{"multipart file", "", func() (io.Reader, string) {
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			mw.WriteField("note", "ignored")
			h := make(map[string][]string)
			h["Content-Disposition"] = []string{`form-data; name="file"; filename="scan.pdf"`}
			h["Content-Type"] = []string{"application/pdf"}
			pw, _ := mw.CreatePart(h)
			pw.Write([]byte("%PDF-1.4 tiny"))
			mw.Close()
			return &buf, mw.FormDataContentType()
		}, "application/pdf", "%PDF-1.4 tiny", "scan.pdf"},
		{"large spooled", "", func() (io.Reader, string) {
			return bytes.NewReader(bytes.Repeat([]byte("x"), 200<<10)), "text/plain"
		}, "text/plain", strings.Repeat("x", 200<<10), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, ct := c.body()
			r := ev.do("POST", "/v1/queues/echo/jobs?priority=5&label=doc:a&label=kind:test&max_attempts=2", "", body, "Content-Type", ct)
			if r.status != http.StatusAccepted {
				t.Fatalf("submit: %d %s", r.status, r.body)
			}
			m := r.json(t)
			id := m["id"].(string)
			if r.header.Get("Location") != "/v1/jobs/"+id || r.header.Get("Retry-After") == "" {
				t.Fatalf("headers %v", r.header)
			}
			in := m["input"].(map[string]any)
			if in["content_type"] != c.wantType || int(in["size"].(float64)) != len(c.wantBody) || (c.filename != "" && in["filename"] != c.filename) {
				t.Fatalf("input %v", in)
			}
			if m["priority"].(float64) != 5 || m["max_attempts"].(float64) != 2 || m["labels"].(map[string]any)["doc"] != "a" {
				t.Fatalf("options not applied: %v", m)
			}
			links := m["links"].(map[string]any)
			if links["self"] != "/v1/jobs/"+id || links["result"] != "/v1/jobs/"+id+"/result" {
				t.Fatalf("links %v", links)
			}
			ev.waitState(id, "", "succeeded")
			res := ev.do("GET", "/v1/jobs/"+id+"/result", "", nil)
			if res.status != 200 || string(res.body) != c.wantBody || res.header.Get("Content-Type") != c.wantType {
				t.Fatalf("result %d %s %.40q", res.status, res.header.Get("Content-Type"), res.body)
			}
		})
	}
}

func TestSubmitErrors(t *testing.T) {
	ev := newEnv(t, api.Config{MaxBody: 1 << 20}, engine.Options{})
	multipartNoFile := func() (io.Reader, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("note", "no file here")
		mw.Close()
		return &buf, mw.FormDataContentType()
	}
	cases := []struct {
		name, path, ctype, body string
		mk                      func() (io.Reader, string)
		status                  int
		typ                     string
	}{
		{"unknown queue", "/v1/queues/nope/jobs", "text/plain", "x", nil, 404, "queue-not-found"},
		{"unknown option", "/v1/queues/echo/jobs?prio=1", "text/plain", "x", nil, 400, "bad-request"},
		{"bad priority", "/v1/queues/echo/jobs?priority=high", "text/plain", "x", nil, 400, "bad-request"},
		{"bad delay", "/v1/queues/echo/jobs?delay=soon", "text/plain", "x", nil, 400, "bad-request"},
		{"delay and run_at", "/v1/queues/echo/jobs?delay=1s&run_at=2030-01-01T00:00:00Z", "text/plain", "x", nil, 400, "bad-request"},
		{"bad run_at", "/v1/queues/echo/jobs?run_at=tomorrow", "text/plain", "x", nil, 400, "bad-request"},
		{"zero max_attempts", "/v1/queues/echo/jobs?max_attempts=0", "text/plain", "x", nil, 400, "bad-request"},
		{"bad label", "/v1/queues/echo/jobs?label=nocolon", "text/plain", "x", nil, 400, "bad-request"},
		{"invalid json", "/v1/queues/echo/jobs", "application/json", `{"a":`, nil, 400, "invalid-json"},
		{"two json values", "/v1/queues/echo/jobs", "application/json", `{} {}`, nil, 400, "invalid-json"},
		{"large invalid json", "/v1/queues/echo/jobs", "application/json", `[` + strings.Repeat(`1,`, 40<<10) + `]`, nil, 400, "invalid-json"},
		{"bad media type", "/v1/queues/echo/jobs", "text/plain; charset", "x", nil, 415, "unsupported-media-type"},
		{"multipart without boundary", "/v1/queues/echo/jobs", "multipart/form-data", "x", nil, 415, "unsupported-media-type"},
		{"multipart without file", "/v1/queues/echo/jobs", "", "", multipartNoFile, 422, "invalid-field"},
		{"over the body limit", "/v1/queues/echo/jobs", "application/octet-stream", strings.Repeat("x", 1<<20+1), nil, 413, "body-too-large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(c.body)
			ct := c.ctype
			if c.mk != nil {
				body, ct = c.mk()
			}
			ev.do("POST", c.path, "", body, "Content-Type", ct).problem(t, c.status, c.typ)
		})
	}
	// Nothing refused was stored.
	r := ev.do("GET", "/v1/jobs", "", nil)
	if jobs := r.json(t)["jobs"].([]any); len(jobs) != 0 {
		t.Fatalf("refused submits left %d jobs", len(jobs))
	}
}

// zeros is an endless reader of zero bytes: an upload that never ends.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := int64(len(p))
	if n > z.n {
		n = z.n
	}
	clear(p[:n])
	z.n -= n
	return int(n), nil
}

// A 1 GiB upload over the limit is refused with 413 as soon as the limit is
// passed, and one under it is spooled to disk: neither is held in memory.
func TestLargeUploadsAreStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("streams hundreds of MiB")
	}
	ev := newEnv(t, api.Config{MaxBody: 64 << 20}, engine.Options{})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		}
	})
	r := ev.do("POST", "/v1/queues/stored/jobs", "", &zeros{n: 1 << 30}, "Content-Type", "application/octet-stream")
	r.problem(t, 413, "body-too-large")
	r, id := ev.submit("stored", "", "")
	_ = r
	r = ev.do("POST", "/v1/queues/stored/jobs", "", &zeros{n: 60 << 20}, "Content-Type", "application/octet-stream")
	close(stop)
	wg.Wait()
	if r.status != http.StatusAccepted {
		t.Fatalf("60 MiB upload: %d %s", r.status, r.body)
	}
	if m := r.json(t); int64(m["input"].(map[string]any)["size"].(float64)) != 60<<20 {
		t.Fatalf("stored size %v", m["input"])
	}
	if grew := int64(peak) - int64(before); grew > 32<<20 {
		t.Fatalf("heap grew by %d MiB while streaming uploads", grew>>20)
	}
	ev.do("DELETE", "/v1/jobs/"+id, "", nil)
}

func TestIdempotencyKey(t *testing.T) {
	ev := newEnv(t, api.Config{Tokens: tokens()}, engine.Options{})
	r1, id1 := ev.submit("held", aliceToken, "one", "Idempotency-Key", "k-1")
	r2, id2 := ev.submit("held", aliceToken, "two", "Idempotency-Key", "k-1")
	if id1 == "" || id1 != id2 || r2.header.Get("Idempotent-Replayed") != "true" || r1.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("replay: %s %s %v", id1, id2, r2.header)
	}
	// Unique per owner: bob's same key is his own job.
	_, id3 := ev.submit("held", bobToken, "three", "Idempotency-Key", "k-1")
	if id3 == "" || id3 == id1 {
		t.Fatalf("bob got %q", id3)
	}
	// unique=true returns the job with the same input.
	_, u1 := ev.submit("held", aliceToken, "same", "X-Ignored", "1")
	r := ev.do("POST", "/v1/queues/stored/jobs?unique=true", aliceToken, strings.NewReader("same"), "Content-Type", "text/plain")
	// The first was not unique; this one is new, and a third unique one
	// returns it.
	u2 := r.json(t)["id"].(string)
	r = ev.do("POST", "/v1/queues/stored/jobs?unique=true", aliceToken, strings.NewReader("same"), "Content-Type", "text/plain")
	if u3 := r.json(t)["id"].(string); u3 != u2 || u2 == u1 {
		t.Fatalf("unique: %s %s %s", u1, u2, u3)
	}
}

func TestQueueFullAndRateLimit(t *testing.T) {
	t.Run("max_queued", func(t *testing.T) {
		ev := newEnv(t, api.Config{}, engine.Options{})
		for i := range 3 {
			if r, _ := ev.submit("stored", "", fmt.Sprint(i)); r.status != 202 {
				t.Fatalf("submit %d: %d", i, r.status)
			}
		}
		r, _ := ev.submit("stored", "", "overflow")
		r.problem(t, 503, "queue-full")
		if r.header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
	})
	t.Run("rate", func(t *testing.T) {
		ev := newEnv(t, api.Config{Tokens: tokens(), Rate: 1, Burst: 3}, engine.Options{})
		for i := range 3 {
			if r := ev.do("GET", "/v1/jobs", aliceToken, nil); r.status != 200 {
				t.Fatalf("request %d: %d", i, r.status)
			}
		}
		r := ev.do("GET", "/v1/jobs", aliceToken, nil)
		r.problem(t, 429, "rate-limited")
		if r.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		// Another token has its own bucket.
		if r := ev.do("GET", "/v1/jobs", bobToken, nil); r.status != 200 {
			t.Fatalf("bob limited by alice: %d", r.status)
		}
	})
}

func TestGetETagAndLongPoll(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{})
	_, id := ev.submit("gated", "", "x")
	m := ev.waitState(id, "", "running")
	for m["progress"].(map[string]any)["message"] != "waiting" {
		// Settled: claimed, and its one progress report stored.
		m = ev.do("GET", fmt.Sprintf("/v1/jobs/%s?wait=2s&after=%v", id, m["version"]), "", nil).json(t)
	}
	v := int64(m["version"].(float64))
	r := ev.do("GET", "/v1/jobs/"+id, "", nil)
	tag := r.header.Get("ETag")
	if tag == "" {
		t.Fatal("no ETag")
	}
	if r := ev.do("GET", "/v1/jobs/"+id, "", nil, "If-None-Match", tag); r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Fatalf("If-None-Match: %d", r.status)
	}
	// A long poll returns when the job changes, not at the end of its wait.
	done := make(chan resp, 1)
	start := time.Now()
	go func() { done <- ev.do("GET", fmt.Sprintf("/v1/jobs/%s?wait=20s&after=%d", id, v), "", nil) }()
	time.Sleep(100 * time.Millisecond)
	close(ev.gate)
	r = <-done
	if took := time.Since(start); r.status != 200 || took > 10*time.Second {
		t.Fatalf("long poll: %d after %v", r.status, took)
	}
	if m := r.json(t); int64(m["version"].(float64)) <= v {
		t.Fatalf("long poll returned version %v, not past %d", m["version"], v)
	}
	// An expired wait answers the job as it is.
	_, id2 := ev.submit("stored", "", "y")
	start = time.Now()
	r = ev.do("GET", "/v1/jobs/"+id2+"?wait=200ms", "", nil)
	if r.status != 200 || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("idle long poll: %d after %v", r.status, time.Since(start))
	}
	ev.do("GET", "/v1/jobs/"+id2+"?wait=forever", "", nil).problem(t, 400, "bad-request")
	ev.do("GET", "/v1/jobs/"+id2+"?wait=1s&after=x", "", nil).problem(t, 400, "bad-request")
	ev.do("GET", "/v1/jobs/01939999-0000-7000-8000-000000000000", "", nil).problem(t, 404, "job-not-found")
}

func TestPreferWait(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{})
	t.Run("done in time", func(t *testing.T) {
		r, _ := ev.submit("echo", "", "quick", "Prefer", "wait=10")
		if r.status != 200 || r.json(t)["state"] != "succeeded" || r.header.Get("Preference-Applied") != "wait=10" {
			t.Fatalf("%d %v %s", r.status, r.header, r.body)
		}
	})
	t.Run("not done in time", func(t *testing.T) {
		start := time.Now()
		r, id := ev.submit("stored", "", "later", "Prefer", "wait=1")
		if r.status != 202 || id == "" || time.Since(start) < 900*time.Millisecond {
			t.Fatalf("%d after %v", r.status, time.Since(start))
		}
	})
	t.Run("the job's timeout first", func(t *testing.T) {
		r, _ := ev.submit("slow", "", "too slow", "Prefer", "wait=10")
		r.problem(t, 504, "job-timeout")
	})
	t.Run("respond-async", func(t *testing.T) {
		r, _ := ev.submit("echo", "", "async", "Prefer", "respond-async, wait=10")
		if r.status != 202 || r.header.Get("Preference-Applied") != "respond-async" {
			t.Fatalf("%d %v", r.status, r.header)
		}
	})
}

func TestResultStatuses(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{PurgeEvery: time.Hour})
	_, pending := ev.submit("stored", "", "p")
	r := ev.do("GET", "/v1/jobs/"+pending+"/result", "", nil)
	if r.status != 202 || r.header.Get("Retry-After") == "" {
		t.Fatalf("pending: %d %v", r.status, r.header)
	}
	_, failed := ev.submit("echo", "", "fail now")
	ev.waitState(failed, "", "failed")
	ev.do("GET", "/v1/jobs/"+failed+"/result", "", nil).problem(t, 500, "job-failed")
	ev.do("POST", "/v1/jobs/"+pending+"/cancel", "", nil)
	ev.do("GET", "/v1/jobs/"+pending+"/result", "", nil).problem(t, 409, "job-canceled")
	_, none := ev.submit("echo", "", "none")
	ev.waitState(none, "", "succeeded")
	if r := ev.do("GET", "/v1/jobs/"+none+"/result", "", nil); r.status != 204 {
		t.Fatalf("no result: %d", r.status)
	}
	_, exp := ev.submit("expiring", "", "soon gone")
	ev.waitState(exp, "", "succeeded")
	time.Sleep(5 * time.Millisecond)
	ev.do("GET", "/v1/jobs/"+exp+"/result", "", nil).problem(t, 410, "result-expired")
}

func TestArtifacts(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{})
	_, id := ev.submit("echo", "", "art please")
	ev.waitState(id, "", "succeeded")
	r := ev.do("GET", "/v1/jobs/"+id+"/artifacts", "", nil)
	list := r.json(t)["artifacts"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["name"] != "page-001.txt" || list[0].(map[string]any)["url"] != "/v1/jobs/"+id+"/artifacts/page-001.txt" {
		t.Fatalf("artifacts %s", r.body)
	}
	if r := ev.do("GET", "/v1/jobs/"+id+"/artifacts/page-001.txt", "", nil); r.status != 200 || string(r.body) != "page one" {
		t.Fatalf("download %d %q", r.status, r.body)
	}
	ev.do("GET", "/v1/jobs/"+id+"/artifacts/nope.txt", "", nil).problem(t, 404, "artifact-not-found")
	ev.do("GET", "/v1/jobs/"+id+"/artifacts/..secret", "", nil).problem(t, 400, "bad-request")
	ev.do("GET", "/v1/jobs/"+id+"/artifacts/"+url.PathEscape("../../etc/passwd"), "", nil).problem(t, 400, "bad-request")
}

func TestCancelRetryDelete(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{})
	_, id := ev.submit("gated", "", "x")
	ev.waitState(id, "", "running")
	if r := ev.do("POST", "/v1/jobs/"+id+"/cancel", "", nil); r.status != 200 || r.json(t)["state"] != "canceled" {
		t.Fatalf("cancel %d %s", r.status, r.body)
	}
	ev.do("POST", "/v1/jobs/"+id+"/cancel", "", nil).problem(t, 409, "state-conflict")
	if r := ev.do("POST", "/v1/jobs/"+id+"/retry", "", nil); r.status != 200 || r.json(t)["state"] != "queued" {
		t.Fatalf("retry %d %s", r.status, r.body)
	}
	ev.do("POST", "/v1/jobs/"+id+"/retry", "", nil).problem(t, 409, "state-conflict")
	if r := ev.do("DELETE", "/v1/jobs/"+id, "", nil); r.status != 204 {
		t.Fatalf("delete %d", r.status)
	}
	ev.do("GET", "/v1/jobs/"+id, "", nil).problem(t, 404, "job-not-found")
	ev.do("DELETE", "/v1/jobs/"+id, "", nil).problem(t, 404, "job-not-found")
}

func TestList(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{})
	var ids []string
	for i := range 7 {
		_, id := ev.submit("stored", "", fmt.Sprint(i))
		ids = append(ids, id)
		if i == 2 {
			break
		}
	}
	for i := range 4 {
		r := ev.do("POST", fmt.Sprintf("/v1/queues/echo/jobs?label=batch:%d", i%2), "", strings.NewReader("e"), "Content-Type", "text/plain")
		ids = append(ids, r.json(t)["id"].(string))
	}
	var seen []string
	cursor := ""
	for pages := 0; ; pages++ {
		r := ev.do("GET", "/v1/jobs?limit=3&cursor="+cursor, "", nil)
		m := r.json(t)
		for _, j := range m["jobs"].([]any) {
			seen = append(seen, j.(map[string]any)["id"].(string))
		}
		cursor = m["next_cursor"].(string)
		if cursor == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != len(ids) || seen[0] != ids[len(ids)-1] {
		t.Fatalf("paged %d jobs (newest %s), want %d newest first", len(seen), seen[0], len(ids))
	}
	count := func(q string) int {
		r := ev.do("GET", "/v1/jobs?"+q, "", nil)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", q, r.status, r.body)
		}
		return len(r.json(t)["jobs"].([]any))
	}
	if n := count("queue=stored"); n != 3 {
		t.Fatalf("queue filter: %d", n)
	}
	if n := count("label=batch:1"); n != 2 {
		t.Fatalf("label filter: %d", n)
	}
	if n := count("state=queued&queue=stored"); n != 3 {
		t.Fatalf("state filter: %d", n)
	}
	ev.do("GET", "/v1/jobs?state=lost", "", nil).problem(t, 400, "bad-request")
	ev.do("GET", "/v1/jobs?limit=0", "", nil).problem(t, 400, "bad-request")
}

func TestQueuesPauseResume(t *testing.T) {
	ev := newEnv(t, api.Config{Tokens: tokens()}, engine.Options{})
	ev.submit("stored", aliceToken, "q")
	r := ev.do("GET", "/v1/queues", aliceToken, nil)
	var found bool
	for _, q := range r.json(t)["queues"].([]any) {
		m := q.(map[string]any)
		if m["name"] == "stored" {
			found = true
			if m["counts"].(map[string]any)["queued"].(float64) != 1 || m["max_queued"].(float64) != 3 {
				t.Fatalf("queue %v", m)
			}
		}
	}
	if !found {
		t.Fatalf("queues %s", r.body)
	}
	ev.do("POST", "/v1/queues/echo/pause", aliceToken, nil).problem(t, 403, "forbidden")
	if r := ev.do("POST", "/v1/queues/echo/pause", adminToken, nil); r.status != 200 || r.json(t)["paused"] != true {
		t.Fatalf("pause %d %s", r.status, r.body)
	}
	_, id := ev.submit("echo", aliceToken, "held")
	time.Sleep(100 * time.Millisecond)
	if m := ev.do("GET", "/v1/jobs/"+id, aliceToken, nil).json(t); m["state"] != "queued" {
		t.Fatalf("paused queue ran a job: %v", m["state"])
	}
	ev.do("POST", "/v1/queues/echo/resume", adminToken, nil)
	ev.waitState(id, aliceToken, "succeeded")
	ev.do("POST", "/v1/queues/nope/pause", adminToken, nil).problem(t, 404, "queue-not-found")
}

// Token A can neither read, list, cancel, retry, delete nor fetch the
// result or artifacts of token B's jobs: they answer as if absent.
func TestTenantIsolation(t *testing.T) {
	ev := newEnv(t, api.Config{Tokens: tokens()}, engine.Options{})
	_, id := ev.submit("echo", aliceToken, "art of alice")
	ev.waitState(id, aliceToken, "succeeded")
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/jobs/" + id},
		{"GET", "/v1/jobs/" + id + "?wait=1s"},
		{"GET", "/v1/jobs/" + id + "/result"},
		{"GET", "/v1/jobs/" + id + "/artifacts"},
		{"GET", "/v1/jobs/" + id + "/artifacts/page-001.txt"},
		{"POST", "/v1/jobs/" + id + "/cancel"},
		{"POST", "/v1/jobs/" + id + "/retry"},
		{"DELETE", "/v1/jobs/" + id},
	} {
		ev.do(c.method, c.path, bobToken, nil).problem(t, 404, "job-not-found")
	}
	if r := ev.do("GET", "/v1/jobs", bobToken, nil); len(r.json(t)["jobs"].([]any)) != 0 {
		t.Fatalf("bob lists alice's jobs: %s", r.body)
	}
	if r := ev.do("GET", "/v1/jobs", aliceToken, nil); len(r.json(t)["jobs"].([]any)) != 1 {
		t.Fatalf("alice lists %s", r.body)
	}
	// The job is intact, and an admin sees it.
	if r := ev.do("GET", "/v1/jobs/"+id+"/result", aliceToken, nil); r.status != 200 {
		t.Fatalf("alice's result: %d", r.status)
	}
	if r := ev.do("GET", "/v1/jobs/"+id, adminToken, nil); r.status != 200 || r.json(t)["owner"] != "alice" {
		t.Fatalf("admin: %d %s", r.status, r.body)
	}
	if r := ev.do("GET", "/v1/jobs?owner=alice", adminToken, nil); len(r.json(t)["jobs"].([]any)) != 1 {
		t.Fatalf("admin list: %s", r.body)
	}
}

func TestAuth(t *testing.T) {
	ev := newEnv(t, api.Config{Tokens: tokens()}, engine.Options{})
	r := ev.do("GET", "/v1/jobs", "", nil)
	r.problem(t, 401, "unauthorized")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
	ev.do("GET", "/v1/jobs", "not-a-token", nil).problem(t, 401, "unauthorized")
	ev.do("GET", "/v1/jobs", "", nil, "Authorization", "Basic YWxpY2U6eA==").problem(t, 401, "unauthorized")
	// A read-only token cannot submit.
	ev.do("POST", "/v1/queues/echo/jobs", readToken, strings.NewReader("x"), "Content-Type", "text/plain").problem(t, 403, "forbidden")
	for _, path := range []string{"/healthz", "/readyz", "/openapi.json"} {
		if r := ev.do("GET", path, "", nil); r.status != 200 {
			t.Fatalf("%s without a token: %d", path, r.status)
		}
	}
}

func TestRoutingProblems(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{})
	ev.do("GET", "/v1/nothing", "", nil).problem(t, 404, "not-found")
	r := ev.do("PUT", "/v1/jobs/x", "", nil)
	r.problem(t, 405, "method-not-allowed")
	if r.header.Get("Allow") == "" {
		t.Fatal("405 without Allow")
	}
	if r := ev.do("GET", "/healthz", "", nil); r.status != 200 || r.json(t)["status"] != "ok" {
		t.Fatalf("healthz %d", r.status)
	}
	if r := ev.do("GET", "/readyz", "", nil); r.status != 200 {
		t.Fatalf("readyz %d", r.status)
	}
}
