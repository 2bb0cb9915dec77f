package api_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/metrics"
	"github.com/docket/docket/internal/store"
)

// scrape reads /metrics as Prometheus would.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	families, err := textParse(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// value is the sample of family with these labels: a counter's or a
// gauge's value, or a histogram's count.
func value(families map[string]*dto.MetricFamily, family string, labels ...string) float64 {
	f := families[family]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// syncBuffer is a log destination the server and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMetricsCountTheWorkload(t *testing.T) {
	m := metrics.New(nil)
	var failedOnce sync.Map
	flaky := engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
		if _, seen := failedOnce.LoadOrStore(tk.ID(), true); !seen {
			return errors.New("first attempt fails")
		}
		return nil
	})
	logs := &syncBuffer{}
	srv := apitest.Start(t, apitest.Options{
		Tokens: map[string]apitest.Token{
			"alice":   {Owner: "alice", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
			"scraper": {Owner: "ops", Scopes: []string{api.ScopeMetrics}},
		},
		Queues:  []engine.Queue{{Name: "flaky", Concurrency: 2, MaxAttempts: 3, Handler: flaky}},
		Metrics: m,
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	const n = 12
	var ids []string
	for i := range n {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/queues/echo/jobs", strings.NewReader(fmt.Sprintf(`{"i":%d}`, i)))
		req.Header.Set("Authorization", "Bearer alice")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		if i == 0 {
			req.Header.Set("X-Request-Id", "req-from-client-1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 || resp.Header.Get("X-Request-Id") == "" {
			t.Fatalf("submit: %d, request id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
		}
		if i == 0 && resp.Header.Get("X-Request-Id") != "req-from-client-1" {
			t.Errorf("the client's request id became %q", resp.Header.Get("X-Request-Id"))
		}
		ids = append(ids, resp.Header.Get("Location")[len("/v1/jobs/"):])
	}
	for _, id := range ids {
		if j := srv.Await(t, id, func(j *job.Job) bool { return j.State.Terminal() }); j.State != job.Succeeded {
			t.Fatalf("job %s", j.State)
		}
	}
	if tp := srv.Job(t, ids[0]).Labels["traceparent"]; tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("traceparent label %q", tp)
	}
	flakyIn, err := srv.Engine.Submit(context.Background(), []store.NewJob{{Queue: "flaky"}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Await(t, flakyIn[0].Job.ID, func(j *job.Job) bool { return j.State == job.Succeeded })

	// A scraper's token reads /metrics, and nothing else.
	if resp, err := http.Get(srv.URL + "/metrics"); err != nil || resp.StatusCode != 401 {
		t.Errorf("without a token: %v", resp.StatusCode)
	}
	f := scrape(t, srv.URL, "scraper")
	checks := []struct {
		family string
		labels []string
		want   float64
	}{
		{"docket_jobs_submitted_total", []string{"queue", "echo"}, n},
		{"docket_jobs_started_total", []string{"queue", "echo"}, n},
		{"docket_jobs_finished_total", []string{"queue", "echo", "state", "succeeded"}, n},
		{"docket_job_wait_seconds", []string{"queue", "echo"}, n},
		{"docket_job_run_seconds", []string{"queue", "echo", "outcome", "succeeded"}, n},
		{"docket_job_retries_total", []string{"queue", "flaky"}, 1},
		{"docket_job_run_seconds", []string{"queue", "flaky", "outcome", "retried"}, 1},
		{"docket_jobs_finished_total", []string{"queue", "flaky", "state", "succeeded"}, 1},
		{"docket_http_requests_total", []string{"route", "POST /v1/queues/{queue}/jobs", "code", "202"}, n},
		{"docket_http_request_duration_seconds", []string{"route", "POST /v1/queues/{queue}/jobs"}, n},
		{"docket_http_requests_total", []string{"route", "GET /metrics", "code", "401"}, 1},
	}
	for _, c := range checks {
		if got := value(f, c.family, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.family, c.labels, got, c.want)
		}
	}
	if value(f, "go_goroutines") <= 0 || value(f, "process_resident_memory_bytes") <= 0 {
		t.Error("no Go or process metrics")
	}

	// Every log line about a request has its id; the job's lines carry
	// the submitter's trace id.
	out := logs.String()
	if !strings.Contains(out, `"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`) {
		t.Errorf("no job log line with the trace id:\n%s", out)
	}
}

func TestMetricsStoreCountsAndStreams(t *testing.T) {
	m := metrics.New(nil)
	srv := apitest.Start(t, apitest.Options{Queues: []engine.Queue{{Name: "held", Concurrency: 0}}, Metrics: m})
	var ids []string
	for range 3 {
		in, err := srv.Engine.Submit(context.Background(), []store.NewJob{{Queue: "held"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in[0].Job.ID)
	}
	// The job counts come from the store at each scrape, whichever node
	// changed the jobs.
	rec := httptest.NewRecorder()
	metrics.New(metrics.StoreCounts(srv.Engine.Store())).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	families, err := textParse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := value(families, "docket_queue_depth", "queue", "held"); got != 3 {
		t.Errorf("depth %v", got)
	}
	if got := value(families, "docket_jobs", "queue", "held", "state", "queued"); got != 3 {
		t.Errorf("queued %v", got)
	}

	// Open streams are counted while they are open.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, path := range []string{"/v1/jobs/" + ids[0] + "/events", "/v1/events"} {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	awaitStreams(t, srv.URL, 2, 5*time.Second)
	// A stream served off net/http notices a client gone at its next probe
	// (every 5 s), not at once.
	cancel()
	awaitStreams(t, srv.URL, 0, 15*time.Second)
}

// awaitStreams waits until /metrics counts want open SSE streams.
func awaitStreams(t *testing.T, url string, want float64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := value(scrape(t, url, ""), "docket_event_streams", "kind", "sse")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v SSE streams open, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func textParse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}
