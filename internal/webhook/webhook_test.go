package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/store/sqlite"
	"github.com/docket/docket/internal/webhook"
)

var secret = []byte("test-secret")

// call is one request a receiver got.
type call struct {
	event, delivery string
	body            []byte
	at              time.Time
	verr            error
}

// receiver records deliveries and verifies their signatures; status, if
// set, chooses each answer.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	calls  []call
	status func(n int) int
}

func newReceiver(t *testing.T, status func(n int) int) *receiver {
	r := &receiver{status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		c := call{event: req.Header.Get("Docket-Event"), delivery: req.Header.Get("Docket-Delivery"), body: body, at: time.Now(),
			verr: webhook.Verify(secret, req.Header.Get("Docket-Signature"), body, time.Minute)}
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
			c.verr = fmt.Errorf("%s with Content-Type %q", req.Method, req.Header.Get("Content-Type"))
		}
		r.mu.Lock()
		r.calls = append(r.calls, c)
		n := len(r.calls)
		r.mu.Unlock()
		if r.status != nil {
			w.WriteHeader(r.status(n))
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// await waits for a call satisfying ok.
func (r *receiver) await(t *testing.T, what string, ok func([]call) bool) []call {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cs := r.got(); ok(cs) {
			return cs
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: receiver got %d calls: %v", what, len(r.got()), events(r.got()))
	return nil
}

func events(cs []call) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.event
	}
	return out
}

// server is docket as serve runs it: store, engine, API and webhook worker
// over one data directory.
type server struct {
	t    *testing.T
	dir  string
	st   *sqlite.Store
	e    *engine.Engine
	w    *webhook.Worker
	http *httptest.Server
	logs *syncBuf
	once sync.Once
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// work is the test queue's handler: input {"steps": N, "every": "5ms", "fail": true}.
func work(ctx context.Context, tk *engine.Task) error {
	rc, err := tk.OpenInput(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	var in struct {
		Steps int
		Every string
		Fail  bool
	}
	json.NewDecoder(rc).Decode(&in)
	every, _ := time.ParseDuration(in.Every)
	for i := range in.Steps {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
		tk.Progress(int64(i+1), int64(in.Steps), "")
	}
	if in.Fail {
		return engine.Permanent(fmt.Errorf("asked to fail"))
	}
	tk.SetResult("text/plain", []byte("ok"))
	return nil
}

func start(t *testing.T, dir string, allowPrivate bool) *server {
	t.Helper()
	s := &server{t: t, dir: dir, logs: &syncBuf{}}
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Options{Store: st, TempDir: dir, Logger: log, ProgressEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AddQueue(engine.Queue{Name: "work", Concurrency: 4, MaxAttempts: 1, Handler: engine.HandlerFunc(work)}); err != nil {
		t.Fatal(err)
	}
	w, err := webhook.New(webhook.Options{Store: st, Hub: e.Hub(), Marshal: api.JobJSON, Secret: secret, AllowPrivate: allowPrivate,
		Logger: log, BackoffBase: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	s.st, s.e, s.w = st, e, w
	s.http = httptest.NewServer(api.New(api.Config{Engine: e, TempDir: dir, Logger: log}))
	t.Cleanup(s.stop)
	return s
}

// stop shuts down in serve's order.
func (s *server) stop() {
	s.once.Do(func() {
		s.http.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.e.Stop(ctx)
		if err := s.w.Stop(ctx); err != nil {
			s.t.Error(err)
		}
		s.st.Close()
	})
}

// submit submits input to the work queue with the query q and returns the
// status and the job id.
func (s *server) submit(t *testing.T, input string, q url.Values) (int, string) {
	t.Helper()
	resp, err := http.Post(s.http.URL+"/v1/queues/work/jobs?"+q.Encode(), "application/json", strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID     string `json:"id"`
		Detail string `json:"detail"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode >= 400 {
		return resp.StatusCode, out.Detail
	}
	return resp.StatusCode, out.ID
}

func hook(u string, events string) url.Values {
	q := url.Values{"webhook": {u}}
	if events != "" {
		q.Set("webhook_events", events)
	}
	return q
}

func wantJob(t *testing.T, c call, id, state string) {
	t.Helper()
	if c.verr != nil {
		t.Errorf("%s delivery: %v", c.event, c.verr)
	}
	var j struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Links struct {
			Self string `json:"self"`
		} `json:"links"`
	}
	if err := json.Unmarshal(c.body, &j); err != nil {
		t.Fatalf("%s delivery body %q: %v", c.event, c.body, err)
	}
	if j.ID != id || j.State != state || j.Links.Self != "/v1/jobs/"+id {
		t.Errorf("%s delivery: job %s in state %s, want %s in %s (%s)", c.event, j.ID, j.State, id, state, c.body)
	}
	if c.delivery == "" {
		t.Errorf("%s delivery without Docket-Delivery", c.event)
	}
}

func TestSignedDeliveryDefaults(t *testing.T) {
	s := start(t, t.TempDir(), true)
	r := newReceiver(t, nil)
	_, id := s.submit(t, `{"steps":2}`, hook(r.srv.URL+"/hook", ""))
	cs := r.await(t, "completed", func(cs []call) bool { return len(cs) >= 1 })
	time.Sleep(300 * time.Millisecond) // nothing else (started, progress) comes
	cs = r.got()
	if len(cs) != 1 || cs[0].event != "completed" {
		t.Fatalf("deliveries %v, want only completed", events(cs))
	}
	wantJob(t, cs[0], id, "succeeded")

	_, failed := s.submit(t, `{"fail":true}`, hook(r.srv.URL+"/hook", ""))
	cs = r.await(t, "failed", func(cs []call) bool { return len(cs) >= 2 })
	wantJob(t, cs[1], failed, "failed")
	if cs[1].event != "failed" {
		t.Errorf("event %q, want failed", cs[1].event)
	}
}

func TestEventsFilter(t *testing.T) {
	s := start(t, t.TempDir(), true)
	r := newReceiver(t, nil)
	_, a := s.submit(t, `{"steps":1}`, hook(r.srv.URL+"/a", "started,completed"))
	_, b := s.submit(t, `{}`, hook(r.srv.URL+"/b", "failed"))
	cs := r.await(t, "started and completed", func(cs []call) bool { return len(cs) >= 2 })
	time.Sleep(300 * time.Millisecond)
	cs = r.got()
	if got := strings.Join(events(cs), ","); got != "started,completed" {
		t.Fatalf("deliveries %s, want started,completed (job %s only; %s asked for failed and succeeded)", got, a, b)
	}
	wantJob(t, cs[0], a, "running")
	wantJob(t, cs[1], a, "succeeded")
	if cs[0].delivery == cs[1].delivery {
		t.Error("two deliveries share an id")
	}
}

func TestProgressCoalesced(t *testing.T) {
	s := start(t, t.TempDir(), true)
	r := newReceiver(t, nil)
	// About 2 s of progress reported every 5 ms.
	_, id := s.submit(t, `{"steps":400,"every":"5ms"}`, hook(r.srv.URL, "progress,completed"))
	cs := r.await(t, "completed", func(cs []call) bool { return len(cs) > 0 && cs[len(cs)-1].event == "completed" })
	var progress []call
	for _, c := range cs[:len(cs)-1] {
		if c.event != "progress" {
			t.Errorf("event %s before completed", c.event)
		}
		progress = append(progress, c)
		wantJob(t, c, id, "running")
	}
	ran := cs[len(cs)-1].at.Sub(cs[0].at)
	if len(progress) < 2 || float64(len(progress)) > ran.Seconds()*2+2 {
		t.Errorf("%d progress deliveries over %s: want about 2 a second", len(progress), ran)
	}
	for i := 1; i < len(progress); i++ {
		// Recorded 500 ms apart; sending adds jitter, more so under -race.
		if gap := progress[i].at.Sub(progress[i-1].at); gap < 250*time.Millisecond {
			t.Errorf("progress deliveries %d and %d %s apart", i-1, i, gap)
		}
	}
}

func TestRetryAfterError(t *testing.T) {
	s := start(t, t.TempDir(), true)
	r := newReceiver(t, func(n int) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusNoContent
	})
	_, id := s.submit(t, `{}`, hook(r.srv.URL, ""))
	cs := r.await(t, "retry", func(cs []call) bool { return len(cs) >= 2 })
	if cs[0].delivery != cs[1].delivery || cs[0].event != "completed" {
		t.Errorf("retry: deliveries %s/%s of %v, want one delivery twice", cs[0].delivery, cs[1].delivery, events(cs))
	}
	wantJob(t, cs[1], id, "succeeded")
	time.Sleep(300 * time.Millisecond)
	if n := len(r.got()); n != 2 {
		t.Errorf("%d calls after a 2xx, want 2", n)
	}
	if due, _ := s.st.DueDeliveries(context.Background(), time.Now().Add(time.Hour), 10, time.Minute); len(due) != 0 {
		t.Errorf("still stored after delivery: %+v", due)
	}
}

func TestDeliveryAfterRestart(t *testing.T) {
	dir := t.TempDir()
	var up atomic.Bool
	r := newReceiver(t, func(int) int {
		if up.Load() {
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	})
	s := start(t, dir, true)
	_, id := s.submit(t, `{}`, hook(r.srv.URL, ""))
	r.await(t, "first attempt", func(cs []call) bool { return len(cs) >= 1 })
	s.stop()
	before := len(r.got())
	up.Store(true)
	time.Sleep(200 * time.Millisecond)
	if n := len(r.got()); n != before {
		t.Fatalf("calls while docket was down: %d, then %d", before, n)
	}
	s2 := start(t, dir, true)
	_ = s2
	cs := r.await(t, "after restart", func(cs []call) bool { return len(cs) > before })
	last := cs[len(cs)-1]
	wantJob(t, last, id, "succeeded")
	if last.delivery != cs[0].delivery {
		t.Errorf("delivery id changed across the restart: %s then %s", cs[0].delivery, last.delivery)
	}
}

func TestSubmitRefusesBadWebhooks(t *testing.T) {
	s := start(t, t.TempDir(), true)
	for _, q := range []url.Values{
		hook("file:///etc/passwd", ""),
		hook("gopher://example.com/", ""),
		hook("/relative", ""),
		hook("http://example.com/"+strings.Repeat("a", 2100), ""),
		hook("http://example.com/", "done"),
		{"webhook_events": {"completed"}},
	} {
		if code, detail := s.submit(t, `{}`, q); code != http.StatusBadRequest || detail == "" {
			t.Errorf("submit with %v: %d %q, want 400 with a detail", q, code, detail)
		}
	}
	code, detail := s.submit(t, `{}`, hook("file:///etc/passwd", ""))
	if !strings.Contains(detail, "http") {
		t.Errorf("file URL refused with %d %q: want the detail to say only http(s) is called", code, detail)
	}
}

func TestPrivateAddressRefused(t *testing.T) {
	r := newReceiver(t, nil)
	s := start(t, t.TempDir(), false)
	_, id := s.submit(t, `{}`, hook(r.srv.URL, ""))
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.logs.String(), "refused") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	logs := s.logs.String()
	if !strings.Contains(logs, "loopback") || !strings.Contains(logs, "refused") || !strings.Contains(logs, id) {
		t.Errorf("no clear log of the refusal:\n%s", logs)
	}
	if n := len(r.got()); n != 0 {
		t.Errorf("the receiver on 127.0.0.1 got %d calls", n)
	}
	// Kept for retrying, its failed attempts counted.
	s.stop()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: s.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	due, err := st.DueDeliveries(context.Background(), time.Now().Add(time.Hour), 10, time.Minute)
	if err != nil || len(due) != 1 || due[0].JobID != id || due[0].Attempt < 1 {
		t.Errorf("stored deliveries %+v, %v: want the job's, with a failed attempt", due, err)
	}
}
