package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A cluster on one PostgreSQL database: two API nodes and two worker nodes,
// each its own process. 20,000 jobs are submitted over HTTP across both API
// nodes while one worker is killed with SIGKILL and the database restarts;
// every accepted job must finish, exactly once, and an API node must see
// completions made by the workers.
func TestClusterOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server and four docket processes")
	}
	const (
		jobs       = 20_000
		submitters = 16
		killAt     = 5_000  // submitted jobs when a worker is killed
		restartAt  = 9_000  // ... when PostgreSQL restarts
		reviveAt   = 13_000 // ... when the killed worker comes back
	)
	pg := startPostgres(t)
	bin := buildDocket(t)
	dir := t.TempDir()
	// One configuration for all: the API nodes do not work, the workers
	// run the queue. A short lease brings the killed worker's jobs back soon.
	cfg := writeFile(t, dir, "docket.yaml", "lease: 2s\nqueues:\n  echo:\n    concurrency: 32\n")
	node := func(name string, args ...string) *process {
		args = append(args, "--store", pg.URL, "--data-dir", filepath.Join(dir, name), "--shutdown-grace", "5s")
		return startProcess(t, name, bin, args...)
	}
	api1 := node("api1", "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--work=false")
	api2 := node("api2", "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--work=false")
	w1 := node("w1", "worker", "--config", cfg)
	node("w2", "worker", "--config", cfg)
	apis := []*process{api1, api2}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// Every succeeded event api1 streams, by job and version: a job
	// completed twice would show two versions.
	completions := newCompletionLog()
	go completions.follow(ctx, api1.url+"/v1/events?state=succeeded")

	var (
		submitted atomic.Int64
		ids       = make([]string, jobs)
		wg        sync.WaitGroup
		watchers  sync.WaitGroup
		failures  = make(chan error, jobs)
		chaos     sync.WaitGroup
		w1b       *process
	)
	next := atomic.Int64{}
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= jobs {
					return
				}
				at := apis[i%2]
				id, err := submitJob(ctx, at.url, fmt.Sprintf("job-%d", i))
				if err != nil {
					failures <- fmt.Errorf("job %d: %w", i, err)
					return
				}
				ids[i] = id
				n := submitted.Add(1)
				if i%1000 == 1 {
					// Submitted through api2, followed on api1: the
					// events of another node's work.
					watchers.Add(1)
					go func() {
						defer watchers.Done()
						if err := followJob(ctx, api1.url, id); err != nil {
							failures <- fmt.Errorf("following job %s on api1: %w", id, err)
						}
					}()
				}
				switch n {
				case killAt:
					w1.kill()
				case restartAt:
					chaos.Add(1)
					go func() {
						defer chaos.Done()
						pg.restart()
					}()
				case reviveAt:
					chaos.Add(1)
					go func() {
						defer chaos.Done()
						w1b = node("w1b", "worker", "--config", cfg)
					}()
				}
			}
		}()
	}
	wg.Wait()
	chaos.Wait()
	select {
	case err := <-failures:
		t.Fatal(err)
	default:
	}
	t.Logf("submitted %d jobs through 2 API nodes", submitted.Load())

	// Every accepted job finishes.
	var counts map[string]int64
	for {
		counts = queueCounts(ctx, t, api2.url)
		if counts["succeeded"] == jobs {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("not every job finished: %v\napi1: %s\nw1b: %s", counts, api1.tail(), w1b.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	watchers.Wait()
	select {
	case err := <-failures:
		t.Fatal(err)
	default:
	}

	// Exactly once: the store holds each job once, succeeded, and no
	// job was completed in two versions.
	all := listJobs(ctx, t, api1.url)
	if len(all) != jobs {
		t.Fatalf("%d jobs listed, want %d", len(all), jobs)
	}
	rescued := 0
	for _, id := range ids {
		j, ok := all[id]
		if !ok || j.State != "succeeded" {
			t.Fatalf("job %s: %+v", id, j)
		}
		if j.Attempt > 1 {
			rescued++
		}
	}
	if dup := completions.duplicates(); len(dup) > 0 {
		t.Fatalf("jobs completed more than once: %v", dup)
	}
	seen := completions.jobs()
	if seen == 0 {
		t.Fatal("api1 streamed no completion made by the worker nodes")
	}
	if rescued == 0 {
		t.Error("no job was rescued from the killed worker")
	}
	t.Logf("every job succeeded once; %d ran again after the killed worker's lease lapsed; api1 streamed %d completions made by the workers", rescued, seen)
}

// process is a docket node run as its own OS process.
type process struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	logs *syncBuffer
	url  string // the API's, for serve
	done chan struct{}
}

var (
	runningLog = regexp.MustCompile(`msg="docket (?:worker )?running".*`)
	urlLog     = regexp.MustCompile(`url=(http://\S+)`)
)

func startProcess(t testing.TB, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, cmd: exec.Command(bin, args...), logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if line := runningLog.FindString(p.logs.String()); line != "" {
			if m := urlLog.FindStringSubmatch(line); m != nil {
				p.url = m[1]
			}
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited at start: %s", name, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start: %s", name, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the process at once, as a crash of its machine would.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// tail is the end of the process's log, for failure messages.
func (p *process) tail() string {
	if p == nil {
		return ""
	}
	s := p.logs.String()
	return s[max(0, len(s)-3000):]
}

// buildDocket builds the command once per test binary run.
var buildDocket = func() func(t testing.TB) string {
	var once sync.Once
	var bin string
	var err error
	var out []byte
	return func(t testing.TB) string {
		t.Helper()
		once.Do(func() {
			dir, derr := os.MkdirTemp("", "docket-bin-")
			if derr != nil {
				err = derr
				return
			}
			bin = filepath.Join(dir, "docket")
			out, err = exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		})
		if err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		return bin
	}
}()

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// submitJob submits one short echo job, retrying with the same
// idempotency key while the node or its database is unavailable.
func submitJob(ctx context.Context, base, key string) (string, error) {
	var last error
	for attempt := 0; attempt < 600; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/queues/echo/jobs", strings.NewReader(`{"steps":1,"sleep":"20ms"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			var body struct {
				ID string `json:"id"`
			}
			derr := json.NewDecoder(res.Body).Decode(&body)
			res.Body.Close()
			switch {
			case (res.StatusCode == http.StatusAccepted || res.StatusCode == http.StatusOK) && derr == nil && body.ID != "":
				return body.ID, nil
			case res.StatusCode < 500:
				return "", fmt.Errorf("submit: status %d", res.StatusCode)
			}
			err = fmt.Errorf("submit: status %d", res.StatusCode)
		}
		last = err
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("submit kept failing: %w", last)
}

// followJob reads a job's event stream until its final event.
func followJob(ctx context.Context, base, id string) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+id+"/events", nil)
		req.Header.Set("Accept", "application/x-ndjson")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(100 * time.Millisecond)
			continue // the node's database restarting: watch again
		}
		sc := bufio.NewScanner(res.Body)
		final := ""
		for sc.Scan() {
			var ev struct {
				Job struct {
					State string `json:"state"`
				} `json:"job"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				switch ev.Job.State {
				case "succeeded", "failed", "canceled":
					final = ev.Job.State
				}
			}
		}
		res.Body.Close()
		switch final {
		case "succeeded":
			return nil
		case "":
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue // the stream broke before the end: resume
		default:
			return fmt.Errorf("final state %s", final)
		}
	}
}

// completionLog records the succeeded events of a stream of all jobs.
type completionLog struct {
	mu       sync.Mutex
	versions map[string]map[float64]bool
}

func newCompletionLog() *completionLog {
	return &completionLog{versions: map[string]map[float64]bool{}}
}

// follow reads the SSE stream at url until ctx ends, reconnecting when it
// breaks.
func (c *completionLog) follow(ctx context.Context, url string) {
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var j struct {
				ID      string  `json:"id"`
				State   string  `json:"state"`
				Version float64 `json:"version"`
			}
			if json.Unmarshal([]byte(data), &j) != nil || j.State != "succeeded" {
				continue
			}
			c.mu.Lock()
			if c.versions[j.ID] == nil {
				c.versions[j.ID] = map[float64]bool{}
			}
			c.versions[j.ID][j.Version] = true
			c.mu.Unlock()
		}
		res.Body.Close()
	}
}

func (c *completionLog) duplicates() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, vs := range c.versions {
		if len(vs) > 1 {
			out = append(out, id)
		}
	}
	return out
}

func (c *completionLog) jobs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.versions)
}

func queueCounts(ctx context.Context, t testing.TB, base string) map[string]int64 {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/queues", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil // checked again
	}
	defer res.Body.Close()
	var body struct {
		Queues []struct {
			Name   string           `json:"name"`
			Counts map[string]int64 `json:"counts"`
		} `json:"queues"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return nil
	}
	for _, q := range body.Queues {
		if q.Name == "echo" {
			return q.Counts
		}
	}
	return nil
}

type listedJob struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Attempt int    `json:"attempt"`
}

// listJobs pages through every job.
func listJobs(ctx context.Context, t testing.TB, base string) map[string]listedJob {
	t.Helper()
	out := map[string]listedJob{}
	cursor := ""
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs?limit=1000&cursor="+cursor, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Jobs []listedJob `json:"jobs"`
			Next string      `json:"next_cursor"`
		}
		err = json.NewDecoder(res.Body).Decode(&page)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			out[j.ID] = j
		}
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
}
