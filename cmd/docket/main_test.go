package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket"
)

func TestEchoQueue(t *testing.T) {
	ctx := t.Context()
	d, err := docket.Open(ctx, docket.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	d.Handle("echo", echo)
	d.Start()
	cases := []struct {
		name, ctype, input string
		state              docket.State
		steps              int64
	}{
		{"plain bytes", "text/plain", "hello", docket.StateSucceeded, 0},
		{"json with steps", "application/json", `{"steps":3,"sleep":"1ms"}`, docket.StateSucceeded, 3},
		{"json without steps", "application/json", `[1,2]`, docket.StateSucceeded, 0},
		{"bad sleep", "application/json", `{"steps":1,"sleep":"soon"}`, docket.StateFailed, 0},
		{"asked to fail", "application/json", `{"fail":"as asked"}`, docket.StateFailed, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j, err := d.Submit(ctx, "echo", []byte(c.input), docket.SubmitOptions{ContentType: c.ctype, MaxAttempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			j, err = d.Wait(wctx, j.ID)
			if err != nil || j.State != c.state {
				t.Fatalf("state %s (%v), want %s; error %+v", j.State, err, c.state, j.Error)
			}
			if c.state != docket.StateSucceeded {
				return
			}
			if j.Progress.Total != c.steps || j.Progress.Current != c.steps {
				t.Fatalf("progress %+v, want %d steps", j.Progress, c.steps)
			}
			ctype, body, err := d.Result(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			got, _ := io.ReadAll(body)
			if string(got) != c.input || ctype != c.ctype {
				t.Fatalf("result %q (%s), want %q (%s)", got, ctype, c.input, c.ctype)
			}
		})
	}
}

// serve runs from a configuration file, answers HTTP on its listen
// address, and stops cleanly when its context ends.
func TestServeStartsAndStops(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "docket.yaml")
	os.WriteFile(cfg, []byte("data_dir: "+filepath.Join(dir, "data")+"\nqueues:\n  words:\n    concurrency: 2\n    command: [\"wc\", \"-w\", \"{input}\"]\n"), 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-config", cfg, "-listen", "127.0.0.1:0"}, io.Discard, &logs)
	}()
	deadline := time.Now().Add(10 * time.Second)
	re := regexp.MustCompile(`url=(http://\S+)`)
	var base string
	for base == "" {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			base = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("not started: %s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := http.Post(base+"/v1/queues/words/jobs", "text/plain", strings.NewReader("one two three"))
	if err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("submit over HTTP: %v %v", res, err)
	}
	res.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "docket.db")); err != nil {
		t.Fatalf("no database in the configured data dir: %v", err)
	}
}

// Without tokens docket serves a loopback address only.
func TestServeRefusesOpenModeOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		err := run(t.Context(), []string{"serve", "-data-dir", t.TempDir(), "-listen", addr}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "without tokens") {
			t.Errorf("listen %s: %v, want a refusal", addr, err)
		}
	}
}

// syncBuffer is a bytes.Buffer the server may write while the test reads.
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

func TestCommandLineErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"nope"}, "unknown command"},
		{[]string{"serve", "-config", "/does/not/exist.yaml"}, "exist.yaml"},
		{[]string{"bench", "-mode", "bogus", "-jobs", "10"}, "unknown mode"},
		{[]string{"serve", "-queues", "nope", "-listen", "127.0.0.1:0"}, `no queue "nope"`},
		{[]string{"serve", "-queues", "echo", "-work=false", "-listen", "127.0.0.1:0"}, "cannot be given with --queues"},
		{[]string{"worker", "-queues", "nope"}, `no queue "nope"`},
		{[]string{"worker", "-store", "mysql://x"}, "store"},
	}
	for _, c := range cases {
		err := run(t.Context(), c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "docket ") {
		t.Errorf("version: %q %v", out.String(), err)
	}
}

// A worker node runs the queues of a store it shares, here with an API
// node that runs none.
func TestWorkerRunsSharedQueues(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"worker", "-data-dir", dir, "-queues", "echo"}, io.Discard, &logs)
	}()
	for !strings.Contains(logs.String(), "docket worker running") {
		select {
		case err := <-done:
			t.Fatalf("worker exited: %v\n%s", err, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The submitting side declares the queue without running it.
	d, err := docket.Open(ctx, docket.Config{DataDir: dir, Queues: map[string]docket.Queue{"echo": {Concurrency: 0}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	j, err := d.Submit(ctx, "echo", []byte("hello"), docket.SubmitOptions{ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if j, err = d.Wait(wctx, j.ID); err != nil || j.State != docket.StateSucceeded {
		t.Fatalf("%v %+v\n%s", err, j, logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("worker: %v\n%s", err, logs.String())
	}
}
