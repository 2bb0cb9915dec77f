// Package metrics keeps docket's Prometheus metrics: jobs by queue and
// state, wait and run times, retries and rescues, HTTP requests, open event
// streams and webhook deliveries. A Metrics has a registry of its own, so
// that several servers in one process (tests) do not share counters, and
// every method works on a nil *Metrics, doing nothing, so that code can
// report without checking whether anyone collects.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// Metrics holds the metrics of one docket node.
type Metrics struct {
	reg *prometheus.Registry

	submitted *prometheus.CounterVec
	started   *prometheus.CounterVec
	finished  *prometheus.CounterVec
	retries   *prometheus.CounterVec
	rescues   *prometheus.CounterVec
	wait      *prometheus.HistogramVec
	run       *prometheus.HistogramVec

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	streams  *prometheus.GaugeVec
	webhooks *prometheus.CounterVec
}

// Counts reads the number of jobs per queue and state, as the store keeps
// them; it is called at every scrape.
type Counts func(ctx context.Context) (map[string]map[job.State]int64, error)

// timeBuckets span a millisecond to an hour: jobs are quick no-ops or
// minutes-long documents.
var timeBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// New makes the metrics, with Go's and the process's own, and the job
// counts read by counts at each scrape (nil: none).
func New(counts Counts) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.submitted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "docket_jobs_submitted_total",
		Help: "Jobs inserted through this node, by queue."}, []string{"queue"})
	m.started = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "docket_jobs_started_total",
		Help: "Attempts started (claimed) through this node, by its workers or remote workers, by queue."}, []string{"queue"})
	m.finished = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "docket_jobs_finished_total",
		Help: "Jobs that reached a final state through this node, by queue and state (succeeded, failed, canceled)."}, []string{"queue", "state"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "docket_job_retries_total",
		Help: "Failed attempts put back in their queue for another try, by queue."}, []string{"queue"})
	m.rescues = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "docket_job_rescues_total",
		Help: "Running jobs taken back from a worker whose lease lapsed, by queue."}, []string{"queue"})
	m.wait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "docket_job_wait_seconds",
		Help: "Time from a job being due to its attempt starting, by queue.", Buckets: timeBuckets}, []string{"queue"})
	m.run = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "docket_job_run_seconds",
		Help: "Time an attempt ran on this node's workers, by queue and outcome (succeeded, failed, retried, canceled).", Buckets: timeBuckets},
		[]string{"queue", "outcome"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "docket_http_requests_total",
		Help: "HTTP requests answered, by route pattern and status code."}, []string{"route", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "docket_http_request_duration_seconds",
		Help: "Time to answer an HTTP request (to its end, for streams), by route pattern.", Buckets: prometheus.DefBuckets}, []string{"route"})
	m.streams = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "docket_event_streams",
		Help: "Event streams open, by kind (sse, ndjson, json, websocket)."}, []string{"kind"})
	m.webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "docket_webhook_deliveries_total",
		Help: "Webhook delivery attempts, by outcome (delivered, retry, dropped)."}, []string{"outcome"})
	for _, c := range []prometheus.Collector{m.submitted, m.started, m.finished, m.retries, m.rescues, m.wait, m.run,
		m.requests, m.latency, m.streams, m.webhooks} {
		f(c)
	}
	if counts != nil {
		f(&countsCollector{counts: counts})
	}
	return m
}

// StoreCounts adapts a store's QueueCounts to Counts.
func StoreCounts(st store.Store) Counts {
	return func(ctx context.Context) (map[string]map[job.State]int64, error) {
		qc, err := st.QueueCounts(ctx)
		if err != nil {
			return nil, err
		}
		out := make(map[string]map[job.State]int64, len(qc))
		for _, q := range qc {
			out[q.Queue] = q.Counts
		}
		return out, nil
	}
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is where the metrics are registered, for tests and for adding
// metrics of one's own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Submitted counts a job inserted.
func (m *Metrics) Submitted(queue string) {
	if m != nil {
		m.submitted.WithLabelValues(queue).Inc()
	}
}

// Started counts an attempt claimed, wait after it was due.
func (m *Metrics) Started(queue string, wait time.Duration) {
	if m != nil {
		m.started.WithLabelValues(queue).Inc()
		m.wait.WithLabelValues(queue).Observe(max(wait, 0).Seconds())
	}
}

// Ran records how long an attempt ran on this node and how it ended.
func (m *Metrics) Ran(queue string, ran time.Duration, j *job.Job) {
	if m != nil {
		m.run.WithLabelValues(queue, outcome(j)).Observe(ran.Seconds())
	}
}

// Changed counts what a change of a job that ran means: a final state or
// a retry. Changes of queued jobs (cancel, retry by hand) count too.
func (m *Metrics) Changed(j *job.Job) {
	if m == nil {
		return
	}
	switch j.State {
	case job.Succeeded, job.Failed, job.Canceled:
		m.finished.WithLabelValues(j.Queue, string(j.State)).Inc()
	case job.Queued:
		if j.Error != nil && j.Attempt > 0 {
			m.retries.WithLabelValues(j.Queue).Inc()
		}
	}
}

// Rescued counts a job taken back from a vanished worker.
func (m *Metrics) Rescued(queue string) {
	if m != nil {
		m.rescues.WithLabelValues(queue).Inc()
	}
}

// Request counts an HTTP request answered.
func (m *Metrics) Request(route string, code int, took time.Duration) {
	if m != nil {
		m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		m.latency.WithLabelValues(route).Observe(took.Seconds())
	}
}

// Stream counts an event stream of kind opened (delta 1) or closed (-1).
func (m *Metrics) Stream(kind string, delta int) {
	if m != nil {
		m.streams.WithLabelValues(kind).Add(float64(delta))
	}
}

// Webhook counts a delivery attempt's outcome.
func (m *Metrics) Webhook(outcome string) {
	if m != nil {
		m.webhooks.WithLabelValues(outcome).Inc()
	}
}

func outcome(j *job.Job) string {
	if j == nil {
		return "lost"
	}
	if j.State == job.Queued {
		return "retried"
	}
	return string(j.State)
}

// countsCollector reports the store's job counts at scrape time, so that
// they are right whichever node made the changes.
type countsCollector struct{ counts Counts }

var (
	jobsDesc  = prometheus.NewDesc("docket_jobs", "Jobs in the store, by queue and state.", []string{"queue", "state"}, nil)
	depthDesc = prometheus.NewDesc("docket_queue_depth", "Jobs waiting in the queue (state queued).", []string{"queue"}, nil)
)

func (c *countsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- depthDesc
}

func (c *countsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.counts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(jobsDesc, err)
		return
	}
	for queue, states := range counts {
		for _, st := range []job.State{job.Queued, job.Running, job.Succeeded, job.Failed, job.Canceled} {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(states[st]), queue, string(st))
		}
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(states[job.Queued]), queue)
	}
}
