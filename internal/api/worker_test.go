package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store/sqlite"
)

// Tokens of the remote-worker tests.
const (
	wkWorker = "wk-worker"  // scope worker
	wkOwner  = "wk-alice"   // alice: submit, read
	wkAdmin  = "wk-admin"   // admin: implies worker
	wkReader = "wk-reader"  // alice: read only
	wkBob    = "wk-bob"     // bob: submit, read
	wkNobody = "wk-unknown" // no such token
)

// wenv is a real docket server (apitest) with queues served by remote
// workers: "remote" (3 attempts), "once" (1 attempt), "timed" (a 1s
// timeout) and "small" (bodies of at most 4 KiB).
type wenv struct {
	t *testing.T
	s *apitest.Server
}

func newWorkerEnv(t *testing.T, opts apitest.Options) *wenv {
	t.Helper()
	opts.Tokens = map[string]apitest.Token{
		wkWorker: {Owner: "workers", Scopes: []string{api.ScopeWorker}},
		wkOwner:  {Owner: "alice", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
		wkAdmin:  {Owner: "ops", Scopes: []string{api.ScopeAdmin}},
		wkReader: {Owner: "alice", Scopes: []string{api.ScopeRead}},
		wkBob:    {Owner: "bob", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
	}
	opts.Queues = append(opts.Queues,
		engine.Queue{Name: "remote", MaxAttempts: 3},
		engine.Queue{Name: "once", MaxAttempts: 1},
		engine.Queue{Name: "timed", MaxAttempts: 2, Timeout: time.Second},
	)
	if opts.RescueEvery == 0 {
		opts.RescueEvery = 50 * time.Millisecond
	}
	return &wenv{t: t, s: apitest.Start(t, opts)}
}

func (w *wenv) do(method, path, token, lease string, body io.Reader, header ...string) resp {
	w.t.Helper()
	r, err := w.send(method, path, token, lease, body, header...)
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// send is do for goroutines other than the test's.
func (w *wenv) send(method, path, token, lease string, body io.Reader, header ...string) (resp, error) {
	req, err := http.NewRequest(method, w.s.URL+path, body)
	if err != nil {
		return resp{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if lease != "" {
		req.Header.Set(api.LeaseHeader, lease)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}, err
}

// claimLater starts a claim on another goroutine; its answer comes on the
// channel (status 0 if it could not be made).
func (w *wenv) claimLater(queue, query string) <-chan resp {
	got := make(chan resp, 1)
	go func() {
		r, err := w.send("POST", "/v1/queues/"+queue+"/claim"+query, wkWorker, "", nil)
		if err != nil {
			r = resp{body: []byte(err.Error())}
		}
		got <- r
	}()
	return got
}

// submit submits body as alice and returns the job's id.
func (w *wenv) submit(queue, query, ctype string, body []byte) string {
	w.t.Helper()
	r := w.do("POST", "/v1/queues/"+queue+"/jobs"+query, wkOwner, "", bytes.NewReader(body), "Content-Type", ctype)
	if r.status != http.StatusAccepted {
		w.t.Fatalf("submit: %d %s", r.status, r.body)
	}
	return r.json(w.t)["id"].(string)
}

// held is a claim's answer, as a worker reads it.
type held struct {
	ID          string `json:"id"`
	Queue       string `json:"queue"`
	Owner       string `json:"owner"`
	State       string `json:"state"`
	Attempt     int    `json:"attempt"`
	MaxAttempts int    `json:"max_attempts"`
	Progress    struct {
		Current int64  `json:"current"`
		Total   int64  `json:"total"`
		Message string `json:"message"`
	} `json:"progress"`
	Input struct {
		ContentType string  `json:"content_type"`
		Size        int64   `json:"size"`
		URL         string  `json:"url"`
		Data        *string `json:"data"`
	} `json:"input"`
	Lease struct {
		Token            string     `json:"token"`
		ExpiresAt        time.Time  `json:"expires_at"`
		TTLSeconds       float64    `json:"ttl_seconds"`
		HeartbeatSeconds float64    `json:"heartbeat_seconds"`
		Deadline         *time.Time `json:"deadline"`
	} `json:"lease"`
	Error *job.Error `json:"error"`
}

func (w *wenv) decode(r resp) held {
	w.t.Helper()
	var h held
	if err := json.Unmarshal(r.body, &h); err != nil {
		w.t.Fatalf("answer %q: %v", r.body, err)
	}
	return h
}

// claim claims a job of queue as the worker, expecting one.
func (w *wenv) claim(queue, query string) held {
	w.t.Helper()
	r := w.do("POST", "/v1/queues/"+queue+"/claim"+query, wkWorker, "", nil)
	if r.status != http.StatusOK {
		w.t.Fatalf("claim %s: %d %s", queue, r.status, r.body)
	}
	return w.decode(r)
}

// call makes a worker's call about a claimed job.
func (w *wenv) call(h held, what string, body io.Reader, header ...string) resp {
	w.t.Helper()
	return w.do("POST", "/v1/jobs/"+h.ID+"/"+what, wkWorker, h.Lease.Token, body, header...)
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

func leaseLost(t *testing.T, r resp, reason string) {
	t.Helper()
	r.problem(t, http.StatusConflict, "lease-lost")
	if got := r.json(t)["code"]; got != reason {
		t.Fatalf("lease-lost code %v, want %s: %s", got, reason, r.body)
	}
}

func TestWorkerClaimAndComplete(t *testing.T) {
	big := make([]byte, 1<<20) // past what a submit or completion keeps in memory
	rand.Read(big)
	tests := []struct {
		name      string
		input     []byte
		ctype     string
		complete  func(w *multipart.Writer) // nil: the result is the raw body
		raw       []byte
		rawType   string
		result    []byte // nil: no result (204)
		resType   string
		artifacts map[string]string
	}{
		{name: "raw bytes", input: []byte(`{"text":"hi"}`), ctype: "application/json",
			raw: []byte{0, 1, 2, 0xff, '\n'}, rawType: "image/png", result: []byte{0, 1, 2, 0xff, '\n'}, resType: "image/png"},
		{name: "large input and result", input: big, ctype: "application/octet-stream",
			raw: big, rawType: "application/x-big", result: big, resType: "application/x-big"},
		{name: "no result", input: []byte("x"), ctype: "text/plain"},
		{name: "multipart with artifacts", input: []byte("pages"), ctype: "text/plain",
			complete: func(mw *multipart.Writer) {
				h := textproto.MIMEHeader{}
				h.Set("Content-Disposition", `form-data; name="result"`)
				h.Set("Content-Type", "text/markdown")
				p, _ := mw.CreatePart(h)
				p.Write([]byte("# two pages\n"))
				a, _ := mw.CreateFormFile("artifact", "page-001.txt")
				a.Write([]byte("page one"))
				h = textproto.MIMEHeader{}
				h.Set("Content-Disposition", `form-data; name="artifact"; filename="page-002.png"`)
				h.Set("Content-Type", "image/png")
				b, _ := mw.CreatePart(h)
				b.Write(big[:70000])
			},
			result: []byte("# two pages\n"), resType: "text/markdown",
			artifacts: map[string]string{"page-001.txt": "page one", "page-002.png": string(big[:70000])}},
	}
	w := newWorkerEnv(t, apitest.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.t = t
			id := w.submit("remote", "", tt.ctype, tt.input)
			h := w.claim("remote", "?wait=5s&worker=test-worker")
			if h.ID != id || h.State != "running" || h.Owner != "alice" || h.Attempt != 1 || h.Queue != "remote" {
				t.Fatalf("claimed %+v, want job %s running, attempt 1", h, id)
			}
			if h.Lease.Token == "" || time.Until(h.Lease.ExpiresAt) <= 0 || h.Lease.TTLSeconds != 30 || h.Lease.HeartbeatSeconds != 10 || h.Lease.Deadline != nil {
				t.Fatalf("lease %+v", h.Lease)
			}
			if sj := w.s.Job(t, id); sj.Worker != "test-worker" {
				t.Errorf("stored worker %q", sj.Worker)
			}
			// Small inputs come inline; every input can be streamed.
			if len(tt.input) <= 64<<10 {
				if h.Input.Data == nil {
					t.Fatal("small input not inline")
				}
				if got, _ := base64.StdEncoding.DecodeString(*h.Input.Data); !bytes.Equal(got, tt.input) {
					t.Fatalf("inline input %q, want %q", got, tt.input)
				}
			} else if h.Input.Data != nil {
				t.Fatal("large input inline")
			}
			in := w.do("GET", h.Input.URL, wkWorker, h.Lease.Token, nil)
			if in.status != 200 || !bytes.Equal(in.body, tt.input) || in.header.Get("Content-Type") != tt.ctype {
				t.Fatalf("input: %d %s, %d bytes", in.status, in.header.Get("Content-Type"), len(in.body))
			}

			r := w.call(h, "progress", jsonBody(map[string]any{"current": 1, "total": 2, "message": "half"}), "Content-Type", "application/json")
			if p := w.decode(r).Progress; r.status != 200 || p.Current != 1 || p.Total != 2 || p.Message != "half" {
				t.Fatalf("progress: %d %s", r.status, r.body)
			}
			if sj := w.s.Job(t, id); sj.Progress.Current != 1 {
				t.Fatalf("stored progress %+v", sj.Progress)
			}
			time.Sleep(5 * time.Millisecond)
			r = w.call(h, "heartbeat", nil)
			if hb := w.decode(r); r.status != 200 || !hb.Lease.ExpiresAt.After(h.Lease.ExpiresAt) || hb.Lease.Token != h.Lease.Token {
				t.Fatalf("heartbeat: %d %s", r.status, r.body)
			}

			var body io.Reader
			var ctype string
			switch {
			case tt.complete != nil:
				var buf bytes.Buffer
				mw := multipart.NewWriter(&buf)
				tt.complete(mw)
				mw.Close()
				body, ctype = &buf, mw.FormDataContentType()
			case tt.raw != nil:
				body, ctype = bytes.NewReader(tt.raw), tt.rawType
			}
			var hdr []string
			if ctype != "" {
				hdr = []string{"Content-Type", ctype}
			}
			r = w.call(h, "complete", body, hdr...)
			if r.status != 200 || r.json(t)["state"] != "succeeded" {
				t.Fatalf("complete: %d %s", r.status, r.body)
			}

			res := w.do("GET", "/v1/jobs/"+id+"/result", wkOwner, "", nil)
			if tt.result == nil {
				if res.status != http.StatusNoContent {
					t.Fatalf("result: %d %s, want 204", res.status, res.body)
				}
			} else if res.status != 200 || !bytes.Equal(res.body, tt.result) || res.header.Get("Content-Type") != tt.resType {
				t.Fatalf("result: %d %s, %d bytes, want %d bytes of %s", res.status, res.header.Get("Content-Type"), len(res.body), len(tt.result), tt.resType)
			}
			for name, content := range tt.artifacts {
				a := w.do("GET", "/v1/jobs/"+id+"/artifacts/"+name, wkOwner, "", nil)
				if a.status != 200 || string(a.body) != content {
					t.Errorf("artifact %s: %d, %d bytes", name, a.status, len(a.body))
				}
			}
			if got := int(w.s.Job(t, id).Artifacts); got != len(tt.artifacts) {
				t.Errorf("%d artifacts, want %d", got, len(tt.artifacts))
			}
			// The job is finished: the lease went with it.
			leaseLost(t, w.call(h, "heartbeat", nil), engine.LostFinished)
		})
	}
}

func TestWorkerFail(t *testing.T) {
	tests := []struct {
		name      string
		queue     string
		body      map[string]any
		state     string
		code      string
		resultErr int // the owner's result status once it failed
	}{
		{"retryable, attempts left", "remote", map[string]any{"error": "upstream down"}, "queued", job.CodeHandler, 0},
		{"not retryable", "remote", map[string]any{"error": "bad page", "retryable": false, "code": "bad_input"}, "failed", "bad_input", 500},
		{"last attempt", "once", map[string]any{"error": "boom", "retryable": true}, "failed", job.CodeHandler, 500},
	}
	w := newWorkerEnv(t, apitest.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.t = t
			id := w.submit(tt.queue, "", "text/plain", []byte("in"))
			h := w.claim(tt.queue, "?wait=5s")
			r := w.call(h, "fail", jsonBody(tt.body))
			if r.status != 200 {
				t.Fatalf("fail: %d %s", r.status, r.body)
			}
			got := w.decode(r)
			if got.ID != id || got.State != tt.state || got.Error == nil || got.Error.Code != tt.code || got.Error.Message != tt.body["error"] {
				t.Fatalf("failed job %s", r.body)
			}
			if tt.resultErr != 0 {
				res := w.do("GET", "/v1/jobs/"+id+"/result", wkOwner, "", nil)
				res.problem(t, tt.resultErr, "job-failed")
				if res.json(t)["code"] != tt.code {
					t.Fatalf("result problem %s", res.body)
				}
				return
			}
			// A retry is claimable again (after a backoff of milliseconds),
			// as attempt 2, under a new lease.
			again := w.claim(tt.queue, "?wait=5s")
			if again.ID != id || again.Attempt != 2 || again.Lease.Token == h.Lease.Token {
				t.Fatalf("retry claimed %+v", again)
			}
			leaseLost(t, w.call(h, "progress", jsonBody(map[string]any{"current": 1})), engine.LostExpired)
			if r := w.call(again, "complete", strings.NewReader("ok"), "Content-Type", "text/plain"); r.status != 200 {
				t.Fatalf("complete: %d %s", r.status, r.body)
			}
		})
	}
}

func TestWorkerClaimWaits(t *testing.T) {
	w := newWorkerEnv(t, apitest.Options{})
	t.Run("204 when nothing comes", func(t *testing.T) {
		w.t = t
		start := time.Now()
		r := w.do("POST", "/v1/queues/remote/claim?wait=300ms", wkWorker, "", nil)
		if r.status != http.StatusNoContent || len(r.body) != 0 {
			t.Fatalf("claim: %d %s, want 204", r.status, r.body)
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
			t.Fatalf("claim answered after %v, want about 300ms", d)
		}
		if r := w.do("POST", "/v1/queues/remote/claim?wait=0", wkWorker, "", nil); r.status != http.StatusNoContent {
			t.Fatalf("claim without wait: %d %s", r.status, r.body)
		}
	})
	t.Run("woken by an insert", func(t *testing.T) {
		w.t = t
		start := time.Now()
		got := w.claimLater("remote", "?wait=20s")
		time.Sleep(200 * time.Millisecond) // the claim is waiting by now
		id := w.submit("remote", "", "text/plain", []byte("wake"))
		r := <-got
		if r.status != 200 || w.decode(r).ID != id {
			t.Fatalf("claim: %d %s", r.status, r.body)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("claim took %v", d)
		}
	})
	t.Run("delayed job comes due", func(t *testing.T) {
		w.t = t
		id := w.submit("remote", "?delay=300ms", "text/plain", []byte("later"))
		h := w.claim("remote", "?wait=10s")
		if h.ID != id {
			t.Fatalf("claimed %s, want %s", h.ID, id)
		}
		w.call(h, "complete", nil)
	})
	t.Run("paused queue", func(t *testing.T) {
		w.t = t
		if r := w.do("POST", "/v1/queues/remote/pause", wkAdmin, "", nil); r.status != 200 {
			t.Fatalf("pause: %d", r.status)
		}
		id := w.submit("remote", "", "text/plain", []byte("paused"))
		if r := w.do("POST", "/v1/queues/remote/claim?wait=200ms", wkWorker, "", nil); r.status != http.StatusNoContent {
			t.Fatalf("claim of a paused queue: %d %s", r.status, r.body)
		}
		got := w.claimLater("remote", "?wait=20s")
		time.Sleep(100 * time.Millisecond)
		if r := w.do("POST", "/v1/queues/remote/resume", wkAdmin, "", nil); r.status != 200 {
			t.Fatalf("resume: %d", r.status)
		}
		r := <-got
		if r.status != 200 || w.decode(r).ID != id {
			t.Fatalf("claim after resume: %d %s", r.status, r.body)
		}
	})
}

func TestWorkerConcurrentClaims(t *testing.T) {
	w := newWorkerEnv(t, apitest.Options{})
	const jobs, workers = 24, 8
	// Half the claimers wait before the jobs exist, half come after.
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	claimer := func() {
		defer wg.Done()
		for {
			req, _ := http.NewRequest("POST", w.s.URL+"/v1/queues/remote/claim?wait=1s", nil)
			req.Header.Set("Authorization", "Bearer "+wkWorker)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			var h held
			err = json.NewDecoder(res.Body).Decode(&h)
			res.Body.Close()
			if res.StatusCode == http.StatusNoContent {
				return
			}
			if res.StatusCode != 200 || err != nil {
				t.Errorf("claim: %d %v", res.StatusCode, err)
				return
			}
			mu.Lock()
			seen[h.ID]++
			mu.Unlock()
		}
	}
	wg.Add(workers / 2)
	for range workers / 2 {
		go claimer()
	}
	ids := map[string]bool{}
	for i := range jobs {
		ids[w.submit("remote", "", "text/plain", fmt.Appendf(nil, "job %d", i))] = true
		if i == jobs/2 {
			wg.Add(workers / 2)
			for range workers / 2 {
				go claimer()
			}
		}
	}
	wg.Wait()
	if len(seen) != jobs {
		t.Fatalf("%d jobs claimed, want %d", len(seen), jobs)
	}
	for id, n := range seen {
		if n != 1 || !ids[id] {
			t.Errorf("job %s claimed %d times", id, n)
		}
	}
}

func TestWorkerLeaseLost(t *testing.T) {
	w := newWorkerEnv(t, apitest.Options{})
	t.Run("canceled", func(t *testing.T) {
		w.t = t
		id := w.submit("remote", "", "text/plain", []byte("cancel me"))
		h := w.claim("remote", "?wait=5s")
		if r := w.do("POST", "/v1/jobs/"+id+"/cancel", wkOwner, "", nil); r.status != 200 {
			t.Fatalf("cancel: %d %s", r.status, r.body)
		}
		for _, what := range []string{"heartbeat", "progress", "complete", "fail"} {
			var body io.Reader
			switch what {
			case "progress":
				body = jsonBody(map[string]any{"current": 1})
			case "fail":
				body = jsonBody(map[string]any{"error": "x"})
			}
			r := w.call(h, what, body)
			leaseLost(t, r, engine.LostCanceled)
			if r.json(t)["job_state"] != "canceled" {
				t.Fatalf("%s: %s", what, r.body)
			}
		}
		leaseLost(t, w.do("GET", h.Input.URL, wkWorker, h.Lease.Token, nil), engine.LostCanceled)
		if st := w.s.Job(t, id).State; st != job.Canceled {
			t.Fatalf("job %s", st)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		w.t = t
		id := w.submit("remote", "", "text/plain", []byte("delete me"))
		h := w.claim("remote", "?wait=5s")
		if r := w.do("DELETE", "/v1/jobs/"+id, wkOwner, "", nil); r.status != 204 {
			t.Fatalf("delete: %d", r.status)
		}
		leaseLost(t, w.call(h, "heartbeat", nil), engine.LostDeleted)
	})
	t.Run("lease lapses", func(t *testing.T) {
		w.t = t
		id := w.submit("remote", "", "text/plain", []byte("abandoned"))
		h := w.claim("remote", "?wait=5s&lease=1s")
		if h.Lease.TTLSeconds != 1 {
			t.Fatalf("lease %+v", h.Lease)
		}
		// No heartbeat: the rescuer takes the job back to its queue.
		j := w.s.Await(t, id, func(j *job.Job) bool { return j.State == job.Queued })
		if j.Error == nil || j.Error.Code != job.CodeLease || j.Attempt != 1 {
			t.Fatalf("rescued job %+v", j)
		}
		again := w.claim("remote", "?wait=5s")
		if again.ID != id || again.Attempt != 2 {
			t.Fatalf("claimed %+v", again)
		}
		leaseLost(t, w.call(h, "heartbeat", nil), engine.LostExpired)
		leaseLost(t, w.call(h, "complete", strings.NewReader("late"), "Content-Type", "text/plain"), engine.LostExpired)
		if r := w.call(again, "complete", strings.NewReader("on time"), "Content-Type", "text/plain"); r.status != 200 {
			t.Fatalf("complete: %d %s", r.status, r.body)
		}
	})
	t.Run("heartbeats keep it", func(t *testing.T) {
		w.t = t
		id := w.submit("remote", "", "text/plain", []byte("kept"))
		h := w.claim("remote", "?wait=5s&lease=1")
		for range 6 {
			time.Sleep(300 * time.Millisecond)
			if r := w.call(h, "heartbeat", nil); r.status != 200 {
				t.Fatalf("heartbeat: %d %s", r.status, r.body)
			}
		}
		if j := w.s.Job(t, id); j.State != job.Running || j.Attempt != 1 {
			t.Fatalf("job %s attempt %d", j.State, j.Attempt)
		}
		w.call(h, "complete", nil)
	})
	t.Run("deadline", func(t *testing.T) {
		w.t = t
		id := w.submit("timed", "", "text/plain", []byte("slow"))
		h := w.claim("timed", "?wait=5s&lease=60s")
		if h.Lease.Deadline == nil || h.Lease.ExpiresAt.After(h.Lease.Deadline.Add(50*time.Millisecond)) {
			t.Fatalf("lease %+v: want it to end by the deadline", h.Lease)
		}
		time.Sleep(time.Until(*h.Lease.Deadline) + 50*time.Millisecond)
		r := w.call(h, "heartbeat", nil)
		r.problem(t, http.StatusConflict, "lease-lost")
		// Whichever came first, the worker's call or the rescuer, the
		// attempt is over and retried.
		if code := r.json(t)["code"]; code != engine.LostDeadline && code != engine.LostExpired {
			t.Fatalf("heartbeat after the deadline: %s", r.body)
		}
		j := w.s.Job(t, id)
		if j.State != job.Queued || j.Error == nil || (j.Error.Code != job.CodeTimeout && j.Error.Code != job.CodeLease) {
			t.Fatalf("job after its deadline: %s %+v", j.State, j.Error)
		}
	})
}

func TestWorkerAuth(t *testing.T) {
	w := newWorkerEnv(t, apitest.Options{})
	id := w.submit("remote", "", "text/plain", []byte("auth"))
	h := w.claim("remote", "?wait=5s")
	tests := []struct {
		name         string
		method, path string
		token, lease string
		status       int
		problem      string
	}{
		{"claim without token", "POST", "/v1/queues/remote/claim?wait=0", "", "", 401, "unauthorized"},
		{"claim with unknown token", "POST", "/v1/queues/remote/claim?wait=0", wkNobody, "", 401, "unauthorized"},
		{"claim by a submitter", "POST", "/v1/queues/remote/claim?wait=0", wkOwner, "", 403, "forbidden"},
		{"claim by a reader", "POST", "/v1/queues/remote/claim?wait=0", wkReader, "", 403, "forbidden"},
		{"claim by an admin", "POST", "/v1/queues/remote/claim?wait=0", wkAdmin, "", 204, ""},
		{"heartbeat by the owner", "POST", "/v1/jobs/" + id + "/heartbeat", wkOwner, h.Lease.Token, 403, "forbidden"},
		{"heartbeat without lease", "POST", "/v1/jobs/" + id + "/heartbeat", wkWorker, "", 400, "bad-request"},
		{"heartbeat with a wrong lease", "POST", "/v1/jobs/" + id + "/heartbeat", wkWorker, "0123456789abcdef.u.0", 409, "lease-lost"},
		{"heartbeat with garbage", "POST", "/v1/jobs/" + id + "/heartbeat", wkWorker, "garbage", 409, "lease-lost"},
		{"heartbeat of another job", "POST", "/v1/jobs/01936f00-0000-7000-8000-000000000000/heartbeat", wkWorker, h.Lease.Token, 409, "lease-lost"},
		{"heartbeat by an admin", "POST", "/v1/jobs/" + id + "/heartbeat", wkAdmin, h.Lease.Token, 200, ""},
		{"input without lease", "GET", "/v1/jobs/" + id + "/input", wkWorker, "", 400, "bad-request"},
		{"input by a reader", "GET", "/v1/jobs/" + id + "/input", wkReader, h.Lease.Token, 403, "forbidden"},
		{"a worker reads no job", "GET", "/v1/jobs/" + id, wkWorker, "", 403, "forbidden"},
		{"a worker submits nothing", "POST", "/v1/queues/remote/jobs", wkWorker, "", 403, "forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.t = t
			r := w.do(tt.method, tt.path, tt.token, tt.lease, nil)
			if tt.problem != "" {
				r.problem(t, tt.status, tt.problem)
				if tt.status == 401 && r.header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				return
			}
			if r.status != tt.status {
				t.Fatalf("%d %s, want %d", r.status, r.body, tt.status)
			}
		})
	}
	// Workers act on every owner's jobs: bob's job is claimed like alice's.
	r := w.do("POST", "/v1/queues/remote/jobs", wkBob, "", strings.NewReader("bob's"), "Content-Type", "text/plain")
	if r.status != 202 {
		t.Fatalf("bob submits: %d", r.status)
	}
	w.t = t
	if got := w.claim("remote", "?wait=5s"); got.Owner != "bob" {
		t.Fatalf("claimed %+v", got)
	}
}

func TestWorkerBadRequests(t *testing.T) {
	w := newWorkerEnv(t, apitest.Options{MaxBody: 4 << 10})
	w.submit("remote", "", "text/plain", []byte("x"))
	h := w.claim("remote", "?wait=5s")
	form := func(parts ...[3]string) (io.Reader, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for _, p := range parts {
			hd := textproto.MIMEHeader{}
			cd := `form-data; name="` + p[0] + `"`
			if p[1] != "" {
				cd += `; filename="` + p[1] + `"`
			}
			hd.Set("Content-Disposition", cd)
			pw, _ := mw.CreatePart(hd)
			pw.Write([]byte(p[2]))
		}
		mw.Close()
		return &buf, mw.FormDataContentType()
	}
	tests := []struct {
		name    string
		path    string // after /v1/; LEASE marks calls about the claimed job
		body    func() (io.Reader, string)
		status  int
		problem string
	}{
		{"wait not a duration", "queues/remote/claim?wait=soon", nil, 400, "bad-request"},
		{"wait too long", "queues/remote/claim?wait=2m", nil, 400, "bad-request"},
		{"lease too short", "queues/remote/claim?lease=0.5", nil, 400, "bad-request"},
		{"lease too long", "queues/remote/claim?lease=1h", nil, 400, "bad-request"},
		{"unknown parameter", "queues/remote/claim?limit=3", nil, 400, "bad-request"},
		{"unknown queue", "queues/nope/claim", nil, 404, "queue-not-found"},
		{"unknown field", "queues/remote/claim", func() (io.Reader, string) { return strings.NewReader(`{"wiat": "1s"}`), "application/json" }, 400, "invalid-json"},
		{"options in the body", "queues/remote/claim", func() (io.Reader, string) {
			return strings.NewReader(`{"wait": 0, "lease": "5s", "worker": "w1"}`), "application/json"
		}, 204, ""},
		{"progress not JSON", "LEASE/progress", func() (io.Reader, string) { return strings.NewReader("half"), "" }, 400, "invalid-json"},
		{"progress without current", "LEASE/progress", func() (io.Reader, string) { return strings.NewReader(`{"total": 3}`), "" }, 422, "invalid-field"},
		{"negative progress", "LEASE/progress", func() (io.Reader, string) { return strings.NewReader(`{"current": -1}`), "" }, 422, "invalid-field"},
		{"fail without message", "LEASE/fail", func() (io.Reader, string) { return strings.NewReader(`{"retryable": false}`), "" }, 422, "invalid-field"},
		{"fail with a bad code", "LEASE/fail", func() (io.Reader, string) { return strings.NewReader(`{"error": "x", "code": "no spaces"}`), "" }, 422, "invalid-field"},
		{"artifact without name", "LEASE/complete", func() (io.Reader, string) { return form([3]string{"artifact", "", "x"}) }, 400, "bad-request"},
		{"artifact escaping", "LEASE/complete", func() (io.Reader, string) { return form([3]string{"artifact", "../x", "x"}) }, 400, "bad-request"},
		{"artifact twice", "LEASE/complete", func() (io.Reader, string) {
			return form([3]string{"artifact", "a.txt", "x"}, [3]string{"artifact", "a.txt", "y"})
		}, 400, "bad-request"},
		{"two results", "LEASE/complete", func() (io.Reader, string) {
			return form([3]string{"result", "", "x"}, [3]string{"result", "", "y"})
		}, 400, "bad-request"},
		{"unknown part", "LEASE/complete", func() (io.Reader, string) { return form([3]string{"file", "a", "x"}) }, 400, "bad-request"},
		{"result too large", "LEASE/complete", func() (io.Reader, string) { return bytes.NewReader(make([]byte, 5<<10)), "application/octet-stream" }, 413, "body-too-large"},
		{"bad content type", "LEASE/complete", func() (io.Reader, string) { return strings.NewReader("x"), "text/" }, 415, "unsupported-media-type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.t = t
			path := "/v1/" + strings.Replace(tt.path, "LEASE", "jobs/"+h.ID, 1)
			var body io.Reader
			var hdr []string
			if tt.body != nil {
				var ct string
				body, ct = tt.body()
				if ct != "" {
					hdr = []string{"Content-Type", ct}
				}
			}
			r := w.do("POST", path, wkWorker, h.Lease.Token, body, hdr...)
			if tt.problem == "" {
				if r.status != tt.status {
					t.Fatalf("%d %s, want %d", r.status, r.body, tt.status)
				}
				return
			}
			r.problem(t, tt.status, tt.problem)
		})
	}
	// None of the refused calls touched the job.
	w.t = t
	if j := w.s.Job(t, h.ID); j.State != job.Running || j.Artifacts != 0 {
		t.Fatalf("job %s with %d artifacts", j.State, j.Artifacts)
	}
	if r := w.call(h, "complete", strings.NewReader("fine"), "Content-Type", "text/plain"); r.status != 200 {
		t.Fatalf("complete: %d %s", r.status, r.body)
	}
}

// A remote worker's progress and outcome reach the job's watchers as a
// local handler's do.
func TestWorkerEventsReachWatchers(t *testing.T) {
	w := newWorkerEnv(t, apitest.Options{})
	id := w.submit("remote", "", "text/plain", []byte("watched"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", w.s.URL+"/v1/jobs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+wkOwner)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("events: %d", res.StatusCode)
	}
	sse := &sseClient{t: t, res: res, sc: bufio.NewScanner(res.Body), done: cancel}
	defer sse.close()
	if e, ok := sse.next(); !ok || e.job["state"] != "queued" {
		t.Fatalf("first event %+v", e)
	}
	h := w.claim("remote", "?wait=5s")
	sse.until(func(e sseEvent) bool { return e.kind == "state" && e.job["state"] == "running" })
	for i := 1; i <= 3; i++ {
		if r := w.call(h, "progress", jsonBody(map[string]any{"current": i, "total": 3, "message": fmt.Sprintf("page %d", i)})); r.status != 200 {
			t.Fatalf("progress: %d %s", r.status, r.body)
		}
		sse.until(func(e sseEvent) bool { return e.kind == "progress" && current(e) == float64(i) })
	}
	w.call(h, "complete", strings.NewReader("done"), "Content-Type", "text/plain")
	seen := sse.until(func(e sseEvent) bool { return e.job["state"] == "succeeded" })
	if last := seen[len(seen)-1]; last.kind != "state" {
		t.Fatalf("last event %s", last.kind)
	}
}

// Drain, at shutdown, ends the claims that wait and refuses new ones.
func TestWorkerDrain(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := engine.New(engine.Options{Store: st, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AddQueue(engine.Queue{Name: "remote"}); err != nil {
		t.Fatal(err)
	}
	e.Start()
	defer e.Stop(context.Background())
	tok := api.Token{Owner: "w", Scopes: []string{api.ScopeWorker}, Hash: sha256.Sum256([]byte(wkWorker))}
	a := api.New(api.Config{Engine: e, Tokens: []api.Token{tok}, TempDir: dir})
	srv := httptest.NewServer(a)
	defer srv.Close()
	w := &wenv{t: t, s: &apitest.Server{URL: srv.URL}}

	start := time.Now()
	got := w.claimLater("remote", "?wait=30s")
	time.Sleep(100 * time.Millisecond)
	a.Drain()
	if r := <-got; r.status != http.StatusNoContent || time.Since(start) > 10*time.Second {
		t.Fatalf("waiting claim at drain: %d %s after %v", r.status, r.body, time.Since(start))
	}
	r := w.do("POST", "/v1/queues/remote/claim", wkWorker, "", nil)
	r.problem(t, http.StatusServiceUnavailable, "unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

// The example Python worker, run as its README says, serves a queue
// through the real server: it completes jobs, reports progress on the way,
// keeps a short lease alive with heartbeats, and fails bad input for good.
func TestPythonWorker(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/python3"); serr == nil {
			py, err = "/usr/bin/python3", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is needed to test examples/worker-python in CI")
		}
		t.Skip("no python3: the example worker is not tested")
	}
	script, err := filepath.Abs("../../examples/worker-python/worker.py")
	if err != nil {
		t.Fatal(err)
	}
	w := newWorkerEnv(t, apitest.Options{})
	sub := w.s.Engine.Hub().Subscribe(func(ev engine.Event) bool { return ev.Queue == "remote" })
	defer sub.Close()

	// Each job runs longer than the worker's 1s lease: only heartbeats let
	// it finish under the lease it was claimed with.
	texts := []string{"hello remote world", "one", "a b c d"}
	var ids []string
	for _, text := range texts {
		in, _ := json.Marshal(map[string]any{"text": text, "steps": 4, "sleep": 0.35})
		ids = append(ids, w.submit("remote", "", "application/json", in))
	}
	bad := w.submit("remote", "", "application/json", []byte(`{"words": 3}`))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, script, "--max-jobs", "10", "--exit-when-idle", "--wait", "1", "--lease", "1")
	cmd.Env = append(os.Environ(), "DOCKET_SERVER="+w.s.URL, "DOCKET_TOKEN="+wkWorker, "DOCKET_QUEUE=remote", "PYTHONDONTWRITEBYTECODE=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("worker.py: %v\n%s", err, out.String())
	}
	t.Logf("worker.py:\n%s", out.String())

	for i, id := range ids {
		j := w.s.Job(t, id)
		if j.State != job.Succeeded || j.Attempt != 1 {
			t.Fatalf("job %s: %s, attempt %d, error %+v", id, j.State, j.Attempt, j.Error)
		}
		if j.Progress.Current != 4 || j.Progress.Total != 4 {
			t.Errorf("job %s: stored progress %+v", id, j.Progress)
		}
		r := w.do("GET", "/v1/jobs/"+id+"/result", wkOwner, "", nil)
		var res struct {
			Words int    `json:"words"`
			Upper string `json:"upper"`
		}
		if r.status != 200 || r.header.Get("Content-Type") != "application/json" || json.Unmarshal(r.body, &res) != nil {
			t.Fatalf("result of %s: %d %s", id, r.status, r.body)
		}
		if res.Words != len(strings.Fields(texts[i])) || res.Upper != strings.ToUpper(texts[i]) {
			t.Errorf("result of %q: %+v", texts[i], res)
		}
	}
	if j := w.s.Job(t, bad); j.State != job.Failed || j.Error == nil || j.Error.Code != "bad_input" || j.Attempt != 1 {
		t.Fatalf("bad input: %s, %+v", j.State, j.Error)
	}
	// Every step reached the hub, and so every watcher.
	steps := map[string]map[int64]bool{}
	for {
		select {
		case ev := <-sub.C():
			if ev.State == job.Running && ev.Progress.Current > 0 {
				if steps[ev.JobID] == nil {
					steps[ev.JobID] = map[int64]bool{}
				}
				steps[ev.JobID][ev.Progress.Current] = true
			}
			continue
		default:
		}
		break
	}
	for _, id := range ids {
		if len(steps[id]) < 4 {
			t.Errorf("job %s: progress events for steps %v, want 1 to 4", id, steps[id])
		}
	}
}
