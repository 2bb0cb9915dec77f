// Command sse measures docket's job event streams (Server-Sent Events) on a
// running server, over loopback, in two phases:
//
//   - watchers: many concurrent SSE streams, one per job. -watchers echo jobs
//     ({"steps":N,"sleep":D}) are submitted to a queue whose concurrency lets
//     them all run together, and one stream is opened per job while they
//     run (with -hold, the queue is paused until every stream is open, and
//     then resumed). Each stream must deliver its job's final event within
//     -final-bound (1 s) of the job's completion: receive time on this
//     machine's clock − finished_at in the event's data. The server's peak
//     RSS is its VmHWM (/proc/PID/status of -server-pid).
//   - fanout: -fanout-jobs echo jobs report progress continuously (the
//     engine stores at most one report per job per 250 ms), each watched by
//     -fanout-per-job SSE streams, plus -fanout-all streams of GET
//     /v1/events. Over -duration after -warmup, every progress event gives
//     the latency from the store write to its receipt (receive time −
//     updated_at), and the stored update rate is counted from the distinct
//     versions seen. The jobs are then canceled.
//
// Every step has a deadline and -timeout bounds the whole run: the program
// always exits by itself. See README.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	baseURL   = flag.String("url", "http://127.0.0.1:8080", "docket server URL")
	token     = flag.String("token", "", "bearer token (none: open mode)")
	queue     = flag.String("queue", "echo", "queue running the echo demo handler")
	serverPID = flag.Int("server-pid", 0, "server process ID, to read its RSS from /proc (0: not read)")
	phases    = flag.String("phases", "watchers,fanout", "phases to run: watchers, fanout, or both (comma-separated)")
	timeout   = flag.Duration("timeout", 8*time.Minute, "bound on the whole run; the program exits when it is reached")

	watchers    = flag.Int("watchers", 10000, "watchers phase: jobs, one SSE stream each")
	steps       = flag.Int("steps", 3, "watchers phase: progress steps per job")
	stepSleep   = flag.String("sleep", "10s", "watchers phase: sleep before each step")
	hold        = flag.Bool("hold", false, "watchers phase: pause the queue while the streams open, then resume it (the streams start on queued jobs; slow, see README)")
	openers     = flag.Int("openers", 256, "streams being opened at once (request sent, first event not yet received)")
	submitters  = flag.Int("submitters", 32, "concurrent submit (and cancel) requests")
	openWait    = flag.Duration("open-wait", 2*time.Minute, "watchers phase: bound on submitting and opening every stream")
	finishGrace = flag.Duration("finish-grace", time.Minute, "watchers phase: how long after steps×sleep the final events may take")
	finalBound  = flag.Duration("final-bound", time.Second, "watchers phase: the bound on receive − finished_at")
	rssTarget   = flag.Float64("rss-target", 500, "watchers phase: server peak RSS target in MiB")

	fanoutJobs   = flag.Int("fanout-jobs", 260, "fanout phase: jobs reporting progress")
	fanoutPerJob = flag.Int("fanout-per-job", 4, "fanout phase: SSE streams per job")
	fanoutAll    = flag.Int("fanout-all", 2, "fanout phase: GET /v1/events streams (all jobs of the queue)")
	fanoutSleep  = flag.String("fanout-sleep", "1ms", "fanout phase: the jobs' sleep between progress reports")
	warmup       = flag.Duration("warmup", 3*time.Second, "fanout phase: time between opening the streams and measuring")
	duration     = flag.Duration("duration", 20*time.Second, "fanout phase: measurement window")
	settle       = flag.Duration("settle", 5*time.Second, "pause between the phases")
	p99Target    = flag.Duration("p99-target", 50*time.Millisecond, "fanout phase: p99 target of receive − updated_at")
)

// client is the HTTP client of every request: a connection per stream, no
// limit on connections per host, and idle ones kept for reuse.
var client = &http.Client{Transport: &http.Transport{
	Proxy:               nil,
	DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	MaxConnsPerHost:     0,
	MaxIdleConns:        0,
	MaxIdleConnsPerHost: 50000,
	IdleConnTimeout:     time.Minute,
	DisableCompression:  true,
	ForceAttemptHTTP2:   false,
}}

func main() {
	flag.Parse()
	*baseURL = strings.TrimRight(*baseURL, "/")
	// The whole run is bounded, whatever a phase waits on.
	time.AfterFunc(*timeout, func() {
		fmt.Fprintf(os.Stderr, "sse: -timeout %s reached; exiting\n", *timeout)
		os.Exit(2)
	})
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < uint64(*watchers)+256 {
		// Go raises the soft limit to the hard one at start; this is all.
		fmt.Printf("note: this process may open %d files, fewer than -watchers %d needs: raise the limit (ulimit -n)\n", lim.Cur, *watchers)
	}
	fmt.Printf("sse: %s, server pid %d, %s %s/%s, %d cores\n", *baseURL, *serverPID, runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())

	var summary []string
	failed := false
	for _, p := range strings.Split(*phases, ",") {
		var t []string
		var err error
		switch strings.TrimSpace(p) {
		case "watchers":
			t, err = runWatchers(ctx)
		case "fanout":
			if len(summary) > 0 {
				time.Sleep(*settle) // let the server settle after the previous phase
			}
			t, err = runFanout(ctx)
		case "":
			continue
		default:
			err = fmt.Errorf("unknown phase %q", p)
		}
		summary = append(summary, t...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sse: %s: %v\n", p, err)
			failed = true
		}
	}
	fmt.Println()
	fmt.Println("== summary")
	for _, t := range summary {
		fmt.Println(t)
	}
	if failed {
		os.Exit(1)
	}
}

// jobEvent is what the measurement reads from an event's data.
type jobEvent struct {
	ID         string     `json:"id"`
	State      string     `json:"state"`
	Version    int64      `json:"version"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	UpdatedAt  *time.Time `json:"updated_at"`
	Progress   struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progress"`
}

func terminal(state string) bool {
	return state == "succeeded" || state == "failed" || state == "canceled"
}

// readSSE reads events from r until fn returns false or the stream ends.
// recv is the time the event's first line was read.
func readSSE(r io.Reader, fn func(kind string, data []byte, recv time.Time) bool) error {
	br := bufio.NewReaderSize(r, 4096)
	var kind string
	var data []byte
	var recv time.Time
	started := false
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long data line: read the rest of it.
			rest, err2 := br.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), err2
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if !started {
			recv = time.Now()
			started = true
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if data != nil {
				if !fn(kind, data, recv) {
					return nil
				}
			}
			kind, data, started = "", nil, false
			continue
		}
		if line[0] == ':' {
			if data == nil && kind == "" {
				started = false // a comment alone (keep-alive) is not an event
			}
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			kind = string(value)
		case "data":
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, value...)
		}
	}
}

// openStream sends GET path with Accept: text/event-stream.
func openStream(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *baseURL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	auth(req)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return resp, nil
}

func auth(req *http.Request) {
	if *token != "" {
		req.Header.Set("Authorization", "Bearer "+*token)
	}
}

// call sends a request with a JSON body (if any) and decodes a JSON answer
// into out (if not nil).
func call(ctx context.Context, method, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, *baseURL+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	auth(req)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type queueInfo struct {
	Name        string           `json:"name"`
	Concurrency int              `json:"concurrency"`
	Paused      bool             `json:"paused"`
	Counts      map[string]int64 `json:"counts"`
}

func getQueue(ctx context.Context) (queueInfo, error) {
	var out struct {
		Queues []queueInfo `json:"queues"`
	}
	if err := call(ctx, http.MethodGet, "/v1/queues", nil, &out); err != nil {
		return queueInfo{}, err
	}
	for _, q := range out.Queues {
		if q.Name == *queue {
			return q, nil
		}
	}
	return queueInfo{}, fmt.Errorf("the server has no queue %q", *queue)
}

// submitJobs submits n jobs with body to the queue, sub at a time.
func submitJobs(ctx context.Context, n int, body []byte) ([]string, error) {
	ids := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(*submitters, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				var j jobEvent
				if err := call(ctx, http.MethodPost, "/v1/queues/"+*queue+"/jobs", body, &j); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				ids[i] = j.ID
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("submit: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	return ids, nil
}

// cancelJobs cancels the jobs, ignoring those already finished.
func cancelJobs(ctx context.Context, ids []string) int {
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range min(*submitters, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				if call(ctx, http.MethodPost, "/v1/jobs/"+ids[i]+"/cancel", nil, nil) != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(failed.Load())
}

// memInfo is a server's memory as /proc/PID/status gives it, in MiB.
type memInfo struct{ rss, hwm float64 }

func serverMem() (memInfo, bool) {
	if *serverPID <= 0 {
		return memInfo{}, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", *serverPID))
	if err != nil {
		return memInfo{}, false
	}
	var m memInfo
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = kb / 1024
		case "VmHWM:":
			m.hwm = kb / 1024
		}
	}
	return m, true
}

// serverCPU is the server's CPU time so far (user + system).
func serverCPU() time.Duration {
	if *serverPID <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", *serverPID))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the busy CPU time of the whole machine so far (all cores),
// from /proc/stat.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i := 1; i <= 8; i++ {
		if i == 4 || i == 5 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseInt(f[i], 10, 64)
		busy += v
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// cpuMeter reports how the machine's CPU was used over a stretch of time:
// by the server, by this program, by anything else, as a share of one core.
type cpuMeter struct {
	at                time.Time
	server, own, busy time.Duration
}

func startCPU() cpuMeter {
	busy := machineCPU()
	return cpuMeter{time.Now(), serverCPU(), selfCPU(), busy}
}

// other is the share of one core that processes other than the server and
// this program took.
func (c cpuMeter) other() float64 {
	busy := machineCPU()
	el := time.Since(c.at).Seconds()
	o := (busy - c.busy - (serverCPU() - c.server) - (selfCPU() - c.own)).Seconds() / el
	if *serverPID <= 0 || o < 0 {
		return 0
	}
	return 100 * o
}

func (c cpuMeter) String() string {
	el := time.Since(c.at).Seconds()
	s := fmt.Sprintf("this program %.0f%% of a core", 100*(selfCPU()-c.own).Seconds()/el)
	if *serverPID > 0 {
		s = fmt.Sprintf("server %.0f%% of a core, ", 100*(serverCPU()-c.server).Seconds()/el) + s +
			fmt.Sprintf(", other processes %.0f%%", c.other())
	}
	return s + fmt.Sprintf(" (over %.1f s; %d cores)", el, runtime.NumCPU())
}

// rssSampler records the largest server RSS seen while it runs.
type rssSampler struct {
	max  atomic.Int64 // KiB
	stop chan struct{}
	done chan struct{}
}

func sampleRSS() *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if m, ok := serverMem(); ok && int64(m.rss*1024) > s.max.Load() {
				s.max.Store(int64(m.rss * 1024))
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) Stop() float64 {
	close(s.stop)
	<-s.done
	return float64(s.max.Load()) / 1024
}

// percentile of sorted durations (nearest rank).
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// errorLog keeps a count of errors and the first few, for the report.
type errorLog struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (e *errorLog) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.first) < 3 {
		e.first = append(e.first, err.Error())
	}
}

func (e *errorLog) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		return "none"
	}
	return fmt.Sprintf("%d (first: %s)", e.n, strings.Join(e.first, "; "))
}

// watcherResult is what one stream of the watchers phase saw.
type watcherResult struct {
	opened   bool   // first event received
	firstIn  string // the state in the first event
	final    bool   // terminal event received
	state    string
	lag      time.Duration // receive − finished_at of the final event
	started  time.Time
	finished time.Time
	events   int
}

func runWatchers(ctx context.Context) ([]string, error) {
	n := *watchers
	fmt.Printf("== watchers: %d concurrent SSE streams, one per echo job (%d steps of %s)\n", n, *steps, *stepSleep)
	pause, err := time.ParseDuration(*stepSleep)
	if err != nil {
		return nil, fmt.Errorf("-sleep: %w", err)
	}
	rss := sampleRSS()
	q, err := getQueue(ctx)
	if err != nil {
		return nil, err
	}
	if q.Concurrency < n {
		fmt.Printf("note: queue %s has concurrency %d < %d jobs: they cannot all run together\n", *queue, q.Concurrency, n)
	}
	// With -hold, the jobs wait in the paused queue until every stream is
	// open; otherwise they run as they are submitted.
	resumed := !*hold
	if *hold {
		if err := call(ctx, http.MethodPost, "/v1/queues/"+*queue+"/pause", nil, nil); err != nil {
			return nil, err
		}
	}
	resume := func() error {
		if resumed {
			return nil
		}
		resumed = true
		return call(context.WithoutCancel(ctx), http.MethodPost, "/v1/queues/"+*queue+"/resume", nil, nil)
	}
	defer resume()

	octx, ocancel := context.WithTimeout(ctx, *openWait)
	defer ocancel()
	t0 := time.Now()
	body := fmt.Appendf(nil, `{"steps":%d,"sleep":%q}`, *steps, *stepSleep)
	ids, err := submitJobs(octx, n, body)
	if err != nil {
		return nil, err
	}
	how := "running as they come"
	if *hold {
		how = "queue paused"
	}
	fmt.Printf("submitted %d jobs in %.1f s (%s)\n", n, time.Since(t0).Seconds(), how)

	// The streams live until the final event or the end of the phase.
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	results := make([]watcherResult, n)
	var errs errorLog
	var open, maxOpen atomic.Int64
	sem := make(chan struct{}, *openers)
	var opened, done sync.WaitGroup
	opened.Add(n)
	done.Add(n)
	t1 := time.Now()
	go func() {
		for i, id := range ids {
			select {
			case sem <- struct{}{}:
			case <-octx.Done():
				for range n - i {
					opened.Done()
					done.Done()
				}
				return
			}
			go func(r *watcherResult) {
				defer done.Done()
				first := true
				release := func() {
					if first {
						first = false
						<-sem
						opened.Done()
					}
				}
				defer release()
				resp, err := openStream(sctx, "/v1/jobs/"+id+"/events")
				if err != nil {
					errs.add(err)
					return
				}
				defer resp.Body.Close()
				cur := open.Add(1)
				defer open.Add(-1)
				for {
					m := maxOpen.Load()
					if cur <= m || maxOpen.CompareAndSwap(m, cur) {
						break
					}
				}
				err = readSSE(resp.Body, func(kind string, data []byte, recv time.Time) bool {
					r.events++
					var ev jobEvent
					if err := json.Unmarshal(data, &ev); err != nil {
						errs.add(fmt.Errorf("job %s: event data: %w", id, err))
						return false
					}
					if first {
						r.opened, r.firstIn = true, ev.State
						release()
						if terminal(ev.State) {
							return false // too late: the job had finished
						}
					}
					if terminal(ev.State) {
						r.final, r.state = true, ev.State
						if ev.FinishedAt != nil {
							r.finished = *ev.FinishedAt
							r.lag = recv.Sub(*ev.FinishedAt)
						}
						if ev.StartedAt != nil {
							r.started = *ev.StartedAt
						}
						return false
					}
					return true
				})
				if err != nil && sctx.Err() == nil {
					errs.add(fmt.Errorf("job %s: %w", id, err))
				}
				if !r.final && sctx.Err() == nil && err == nil {
					errs.add(fmt.Errorf("job %s: the stream ended before the final event", id))
				}
			}(&results[i])
		}
	}()
	waitOrTimeout(octx, &opened)
	nOpen := 0
	firstStates := map[string]int{}
	for i := range results {
		if results[i].opened {
			nOpen++
			firstStates[results[i].firstIn]++
		}
	}
	openMem, _ := serverMem()
	fmt.Printf("streams open with their first event: %d of %d in %.1f s (state in the first event: %s); open at once: %d; server RSS then %.1f MiB\n",
		nOpen, n, time.Since(t1).Seconds(), countsOf(firstStates), open.Load(), openMem.rss)

	cpu := startCPU()
	if *hold {
		if err := resume(); err != nil {
			return nil, err
		}
		fmt.Printf("queue resumed: the jobs run now; ")
	}
	tResume := time.Now()
	fmt.Printf("waiting (at most %s) for the final events\n", time.Duration(*steps)*pause+*finishGrace)
	dctx, dcancel := context.WithTimeout(ctx, time.Duration(*steps)*pause+*finishGrace)
	defer dcancel()
	waitOrTimeout(dctx, &done)
	elapsed := time.Since(tResume)
	scancel()
	cpuStr, otherCPU := cpu.String(), cpu.other()
	waitAtMost(10*time.Second, &done)
	client.Transport.(*http.Transport).CloseIdleConnections()
	peakSampled := rss.Stop()
	mem, memOK := serverMem()

	var lags []time.Duration
	var minStart, maxStart, minFin, maxFin time.Time
	states := map[string]int{}
	events, within, negative := 0, 0, 0
	for _, r := range results {
		events += r.events
		if !r.final || terminal(r.firstIn) {
			continue
		}
		states[r.state]++
		if r.finished.IsZero() {
			continue
		}
		lags = append(lags, r.lag)
		if r.lag <= *finalBound {
			within++
		}
		if r.lag < 0 {
			negative++
		}
		if minFin.IsZero() || r.finished.Before(minFin) {
			minFin = r.finished
		}
		if r.finished.After(maxFin) {
			maxFin = r.finished
		}
		if !r.started.IsZero() {
			if minStart.IsZero() || r.started.Before(minStart) {
				minStart = r.started
			}
			if r.started.After(maxStart) {
				maxStart = r.started
			}
		}
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	fmt.Printf("final events received: %d of %d watchers (%s) in %.1f s after the streams opened; events received in all: %d\n",
		len(lags), n, countsOf(states), elapsed.Seconds(), events)
	if len(lags) > 0 {
		fmt.Printf("jobs started over %.2f s and finished over %.2f s (first start to last finish %.2f s)\n",
			maxStart.Sub(minStart).Seconds(), maxFin.Sub(minFin).Seconds(), maxFin.Sub(minStart).Seconds())
		fmt.Printf("receive − finished_at: p50 %s, p90 %s, p99 %s, max %s; within %s: %d of %d\n",
			ms(percentile(lags, 0.50)), ms(percentile(lags, 0.90)), ms(percentile(lags, 0.99)), ms(lags[len(lags)-1]),
			*finalBound, within, n)
	}
	if negative > 0 {
		fmt.Printf("note: %d final events arrived before their finished_at (clock steps?)\n", negative)
	}
	fmt.Printf("stream errors: %s\n", errs.String())
	fmt.Printf("CPU from the streams' opening to the last final event: %s\n", cpuStr)
	if memOK {
		fmt.Printf("server RSS: peak (VmHWM) %.1f MiB; largest sampled %.1f MiB; now %.1f MiB\n", mem.hwm, peakSampled, mem.rss)
	}

	live := 0
	for _, r := range results {
		if r.opened && !terminal(r.firstIn) {
			live++
		}
	}
	t := []string{
		fmt.Sprintf("watchers: %d SSE streams open at once, %d of them before their job finished; %d of %d got their job's final event (%s)",
			maxOpen.Load(), live, len(lags), n, countsOf(states)),
		fmt.Sprintf("watchers: receive − finished_at p50 %s, p99 %s, max %s; within %s: %d of %d -> target (all within %s): %s",
			ms(percentile(lags, 0.50)), ms(percentile(lags, 0.99)), ms(maxOr0(lags)), *finalBound, within, n, *finalBound,
			met(len(lags) == n && within == n)),
	}
	if memOK {
		t = append(t, fmt.Sprintf("watchers: server RSS peak (VmHWM) %.1f MiB (%.1f MiB once the streams were open) -> target (<= %.0f MiB): %s",
			mem.hwm, openMem.rss, *rssTarget, met(mem.hwm <= *rssTarget)))
	}
	t = append(t, "watchers: CPU "+cpuStr)
	if o := otherCPU; o >= 10 {
		t = append(t, fmt.Sprintf("watchers: note: other processes took %.0f%% of a core: the figures are disturbed, run again", o))
	}
	return t, nil
}

// countsOf formats counts by state: "running 9990, succeeded 10".
func countsOf(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func maxOr0(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1]
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// waitOrTimeout waits for wg or ctx, whichever comes first.
func waitOrTimeout(ctx context.Context, wg *sync.WaitGroup) {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
	case <-ctx.Done():
	}
}

// waitAtMost waits for wg, at most d.
func waitAtMost(d time.Duration, wg *sync.WaitGroup) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	waitOrTimeout(ctx, wg)
}

// sample is one progress event received during the fanout window.
type sample struct {
	job     string
	version int64
	updated time.Time
	lag     time.Duration
}

// streamSamples is what one fanout stream saw.
type streamSamples struct {
	all     bool // a GET /v1/events stream
	samples []sample
	gaps    int64 // versions skipped between consecutive progress events
}

func runFanout(ctx context.Context) ([]string, error) {
	m := *fanoutJobs
	fmt.Println()
	fmt.Printf("== fanout: %d echo jobs reporting progress (sleep %s between reports), %d SSE streams per job, %d GET /v1/events streams\n",
		m, *fanoutSleep, *fanoutPerJob, *fanoutAll)
	if _, err := time.ParseDuration(*fanoutSleep); err != nil {
		return nil, fmt.Errorf("-fanout-sleep: %w", err)
	}
	q, err := getQueue(ctx)
	if err != nil {
		return nil, err
	}
	if q.Paused {
		if err := call(ctx, http.MethodPost, "/v1/queues/"+*queue+"/resume", nil, nil); err != nil {
			return nil, err
		}
	}
	if q.Concurrency < m {
		fmt.Printf("note: queue %s has concurrency %d < %d jobs\n", *queue, q.Concurrency, m)
	}
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	var errs errorLog
	var streams []*streamSamples
	var wg, jobStreams sync.WaitGroup
	var windowStart, windowEnd atomic.Pointer[time.Time]
	inWindow := func(t time.Time) bool {
		s, e := windowStart.Load(), windowEnd.Load()
		return s != nil && !t.Before(*s) && (e == nil || t.Before(*e))
	}
	// watch reads one stream; ready is called once its first event came
	// (or it failed).
	watch := func(path string, s *streamSamples, ready func()) {
		defer wg.Done()
		var once sync.Once
		defer once.Do(ready)
		resp, err := openStream(sctx, path)
		if err != nil {
			if sctx.Err() == nil {
				errs.add(err)
			}
			return
		}
		defer resp.Body.Close()
		lastVersion := map[string]int64{}
		first := !s.all // a job's stream starts with the job as it is, not a new write
		err = readSSE(resp.Body, func(kind string, data []byte, recv time.Time) bool {
			var ev jobEvent
			if err := json.Unmarshal(data, &ev); err != nil {
				errs.add(fmt.Errorf("%s: event data: %w", path, err))
				return false
			}
			once.Do(ready)
			if first {
				first = false
				lastVersion[ev.ID] = ev.Version
				return true
			}
			if ev.State == "running" && kind == "progress" && ev.UpdatedAt != nil {
				if v, ok := lastVersion[ev.ID]; ok && ev.Version > v+1 {
					s.gaps += ev.Version - v - 1
				}
				if inWindow(recv) {
					s.samples = append(s.samples, sample{ev.ID, ev.Version, *ev.UpdatedAt, recv.Sub(*ev.UpdatedAt)})
				}
			}
			lastVersion[ev.ID] = ev.Version
			return !(terminal(ev.State) && !s.all)
		})
		if err != nil && sctx.Err() == nil {
			errs.add(fmt.Errorf("%s: %w", path, err))
		}
	}
	// The all-jobs streams open first, so that they see every job.
	for range *fanoutAll {
		s := &streamSamples{all: true}
		streams = append(streams, s)
		wg.Add(1)
		go watch("/v1/events?queue="+*queue, s, func() {})
	}
	t0 := time.Now()
	body := fmt.Appendf(nil, `{"steps":100000,"sleep":%q}`, *fanoutSleep)
	ids, err := submitJobs(ctx, m, body)
	if err != nil {
		scancel()
		return nil, err
	}
	fmt.Printf("submitted %d jobs in %.1f s\n", m, time.Since(t0).Seconds())
	defer func() {
		if ids != nil {
			cancelJobs(context.WithoutCancel(ctx), ids)
		}
	}()
	sem := make(chan struct{}, *openers)
	for _, id := range ids {
		for range *fanoutPerJob {
			s := &streamSamples{}
			streams = append(streams, s)
			wg.Add(1)
			jobStreams.Add(1)
			sem <- struct{}{}
			go func() {
				defer jobStreams.Done()
				watch("/v1/jobs/"+id+"/events", s, func() { <-sem })
			}()
		}
	}
	time.Sleep(*warmup)
	rss := sampleRSS()
	cpu := startCPU()
	start := time.Now()
	windowStart.Store(&start)
	select {
	case <-time.After(*duration):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	end := time.Now()
	windowEnd.Store(&end)
	cpuStr, otherCPU := cpu.String(), cpu.other()
	peak := rss.Stop()
	failedCancels := cancelJobs(context.WithoutCancel(ctx), ids)
	ids = nil
	// The job streams end with the canceled state; the others are closed.
	waitAtMost(15*time.Second, &jobStreams)
	scancel()
	waitAtMost(10*time.Second, &wg)

	window := end.Sub(start)
	var jobLags, allLags []time.Duration
	versions := map[string]map[int64]bool{}
	var gaps, allGaps, jobSamples int64
	for _, s := range streams {
		for _, x := range s.samples {
			if s.all {
				allLags = append(allLags, x.lag)
			} else {
				jobLags = append(jobLags, x.lag)
				jobSamples++
			}
			if !x.updated.Before(start) && x.updated.Before(end) {
				vs := versions[x.job]
				if vs == nil {
					vs = map[int64]bool{}
					versions[x.job] = vs
				}
				vs[x.version] = true
			}
		}
		if s.all {
			allGaps += s.gaps
		} else {
			gaps += s.gaps
		}
	}
	stored := 0
	for _, vs := range versions {
		stored += len(vs)
	}
	rate := float64(stored) / window.Seconds()
	fmt.Printf("stored progress updates: %d in %.1f s = %.0f/s across %d jobs (distinct versions with updated_at in the window)\n",
		stored, window.Seconds(), rate, len(versions))
	fmt.Printf("progress events received: %d on %d job streams (%.0f/s), %d on %d GET /v1/events streams (%.0f/s)\n",
		jobSamples, m**fanoutPerJob, float64(jobSamples)/window.Seconds(), len(allLags), *fanoutAll, float64(len(allLags))/window.Seconds())
	fmt.Printf("progress versions skipped (a newer one came first; the hub keeps the latest): %d on job streams, %d on GET /v1/events streams\n",
		gaps, allGaps)
	sort.Slice(jobLags, func(i, j int) bool { return jobLags[i] < jobLags[j] })
	sort.Slice(allLags, func(i, j int) bool { return allLags[i] < allLags[j] })
	report := func(what string, l []time.Duration) {
		if len(l) == 0 {
			fmt.Printf("%s: no samples\n", what)
			return
		}
		fmt.Printf("%s: p50 %s, p90 %s, p99 %s, p99.9 %s, max %s (%d samples)\n", what,
			ms(percentile(l, 0.5)), ms(percentile(l, 0.9)), ms(percentile(l, 0.99)), ms(percentile(l, 0.999)), ms(l[len(l)-1]), len(l))
	}
	report("receive − updated_at, job streams", jobLags)
	report("receive − updated_at, GET /v1/events streams", allLags)
	fmt.Printf("stream errors: %s; failed cancels: %d\n", errs.String(), failedCancels)
	fmt.Printf("CPU during the window: %s\n", cpuStr)
	if *serverPID > 0 {
		fmt.Printf("server RSS during the window: largest sampled %.1f MiB\n", peak)
	}
	if len(jobLags) == 0 {
		return []string{"fanout: no progress events received in the window -> target: NOT met"}, errors.New("no progress events received in the window")
	}
	p99 := percentile(jobLags, 0.99)
	t := []string{
		fmt.Sprintf("fanout: %d jobs, %.0f stored progress updates/s; %d job streams received %.0f events/s, %d GET /v1/events streams %.0f/s",
			m, rate, m**fanoutPerJob, float64(jobSamples)/window.Seconds(), *fanoutAll, float64(len(allLags))/window.Seconds()),
		fmt.Sprintf("fanout: receive − updated_at on job streams p50 %s, p99 %s, max %s (%d samples) -> target (p99 <= %s): %s",
			ms(percentile(jobLags, 0.5)), ms(p99), ms(jobLags[len(jobLags)-1]), len(jobLags), *p99Target, met(p99 <= *p99Target)),
	}
	if len(allLags) > 0 {
		t = append(t, fmt.Sprintf("fanout: receive − updated_at on GET /v1/events streams p50 %s, p99 %s, max %s (%d samples)",
			ms(percentile(allLags, 0.5)), ms(percentile(allLags, 0.99)), ms(allLags[len(allLags)-1]), len(allLags)))
	}
	t = append(t, "fanout: CPU "+cpuStr)
	if o := otherCPU; o >= 10 {
		t = append(t, fmt.Sprintf("fanout: note: other processes took %.0f%% of a core: the figures are disturbed, run again", o))
	}
	return t, nil
}
