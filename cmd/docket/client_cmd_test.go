package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket/client"
	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
)

// idPattern matches a job id: a UUIDv7.
const idPattern = `[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}`

var idRE = regexp.MustCompile(idPattern)

// runCLI runs the command line against srv and returns its output.
func runCLI(ctx context.Context, t *testing.T, srv *apitest.Server, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--server", srv.URL)
	err = run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// watched keeps what a command writes and shows each write to onWrite as
// it comes: the progress view writes a line at a time.
type watched struct {
	bytes.Buffer
	onWrite func(string)
}

func (w *watched) Write(p []byte) (int, error) {
	w.onWrite(string(p))
	return w.Buffer.Write(p)
}

func withStdin(t *testing.T, s string) {
	old := stdin
	stdin = strings.NewReader(s)
	t.Cleanup(func() { stdin = old })
}

// admin is a token that may do anything.
var admin = map[string]apitest.Token{"s3cret": {Owner: "alice", Scopes: []string{api.ScopeAdmin}}}

// held is a queue without workers: its jobs stay queued.
var held = engine.Queue{Name: "held"}

// steps is a queue whose jobs run apitest.Steps(total, next).
func steps(total int64, next <-chan struct{}) engine.Queue {
	return engine.Queue{Name: "steps", Concurrency: 1, Handler: apitest.Steps(total, next)}
}

func submit(t *testing.T, c *client.Client, queue, body string, o client.SubmitOptions) *client.Job {
	t.Helper()
	j, err := c.Submit(t.Context(), queue, strings.NewReader(body), o)
	if err != nil {
		t.Fatalf("submit to %s: %v", queue, err)
	}
	return j
}

func isDone(j *job.Job) bool    { return j.State.Terminal() }
func isRunning(j *job.Job) bool { return j.State == job.Running }

var jsonInput = client.SubmitOptions{ContentType: "application/json"}

func TestSubmitWaitWritesResult(t *testing.T) {
	// The job takes each step once the command has shown the previous one.
	next := make(chan struct{}, 3)
	srv := apitest.Start(t, apitest.Options{Queues: []engine.Queue{steps(3, next)}})
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	os.WriteFile(in, []byte(`{"hello": "docket"}`), 0o644)
	out := filepath.Join(dir, "out.json")
	var stdout bytes.Buffer
	stepLine := regexp.MustCompile(` running \d/3 `)
	stderr := &watched{onWrite: func(s string) {
		if stepLine.MatchString(s) {
			next <- struct{}{}
		}
	}}
	err := run(t.Context(), []string{"submit", "steps", in, "--wait", "-o", out, "--label", "a=b", "--server", srv.URL}, &stdout, stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil || string(got) != `{"hello": "docket"}` {
		t.Fatalf("result %q, %v", got, err)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q, want nothing: the result went to the file", stdout.String())
	}
	// Not a terminal: one line per change, ending with the final state.
	id := idRE.FindString(stderr.String())
	for _, line := range []string{"running 1/3 33% step 1 of 3", "running 2/3 67% step 2 of 3", "running 3/3 100% step 3 of 3"} {
		if !strings.Contains(stderr.String(), id+" "+line+"\n") {
			t.Errorf("no line %q:\n%s", line, stderr)
		}
	}
	if !strings.HasSuffix(stderr.String(), id+" succeeded\n") {
		t.Errorf("progress lines:\n%s", stderr)
	}
	if j := srv.Job(t, id); j.Labels["a"] != "b" || j.Input.ContentType != "application/json" {
		t.Errorf("stored %+v", j)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("left behind: %v", entries)
	}

	t.Run("to stdout", func(t *testing.T) {
		withStdin(t, "from stdin")
		stdout, _, err := runCLI(t.Context(), t, srv, "submit", "--wait", "echo")
		if err != nil || stdout != "from stdin" {
			t.Fatalf("stdout %q, %v", stdout, err)
		}
	})
}

func TestSubmitPrintsID(t *testing.T) {
	var mu sync.Mutex
	var length int64 // the last submit's Content-Length; -1 when not sent
	srv := apitest.Start(t, apitest.Options{Observe: func(r *http.Request) {
		if r.Method == http.MethodPost {
			mu.Lock()
			length = r.ContentLength
			mu.Unlock()
		}
	}})
	dir := t.TempDir()
	files := map[string]string{"a.json": `{}`, "notes.unknownext": "plain words", "blob.unknownext": "\x00\x01\x02"}
	for name, content := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
	}
	cases := []struct {
		name  string
		args  []string
		stdin string
		// check gets the job as stored, its input and the Content-Length sent.
		check func(t *testing.T, j *job.Job, input string, length int64)
	}{
		{"type from extension", []string{"echo", filepath.Join(dir, "a.json")}, "", func(t *testing.T, j *job.Job, input string, length int64) {
			if j.Input.ContentType != "application/json" || input != "{}" {
				t.Errorf("%+v %q", j.Input, input)
			}
		}},
		{"type sniffed", []string{"echo", filepath.Join(dir, "notes.unknownext")}, "", func(t *testing.T, j *job.Job, input string, length int64) {
			if j.Input.ContentType != "text/plain; charset=utf-8" || input != "plain words" || length != 11 {
				t.Errorf("%+v %q, Content-Length %d", j.Input, input, length)
			}
		}},
		{"binary sniffed", []string{"echo", filepath.Join(dir, "blob.unknownext")}, "", func(t *testing.T, j *job.Job, input string, length int64) {
			if j.Input.ContentType != "application/octet-stream" || j.Input.Size != 3 {
				t.Errorf("%+v", j.Input)
			}
		}},
		{"stdin", []string{"echo", "-"}, "<b>html?</b>", func(t *testing.T, j *job.Job, input string, length int64) {
			if j.Input.ContentType != "application/octet-stream" || input != "<b>html?</b>" {
				t.Errorf("%+v %q", j.Input, input)
			}
		}},
		{"options", []string{"--priority", "3", "echo", "--label", "a=b", "--label", "c:d", "--unique", "--idempotency-key", "k",
			"--delay", "1m", "--timeout", "30s", "--max-attempts", "2", "--content-type", "text/csv", "--multipart"}, "x,y", func(t *testing.T, j *job.Job, input string, length int64) {
			if j.Priority != 3 || len(j.Labels) != 2 || j.Labels["a"] != "b" || j.Labels["c"] != "d" || !j.Unique || j.IdempotencyKey != "k" ||
				j.Timeout != 30*time.Second || j.MaxAttempts != 2 {
				t.Errorf("options not applied: %+v", j)
			}
			if d := j.RunAt.Sub(j.CreatedAt); d < 59*time.Second || d > 61*time.Second {
				t.Errorf("run_at %v after creation, want 1m", d)
			}
			// Sent as a form's file part, named "input" for want of a file.
			if j.Input.ContentType != "text/csv" || j.Input.Name != "input" || input != "x,y" {
				t.Errorf("%+v %q", j.Input, input)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withStdin(t, tc.stdin)
			stdout, stderr, err := runCLI(t.Context(), t, srv, append([]string{"submit"}, tc.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			id := strings.TrimSuffix(stdout, "\n")
			if !regexp.MustCompile("^" + idPattern + "$").MatchString(id) {
				t.Fatalf("stdout %q, want the id alone", stdout)
			}
			if !strings.Contains(stderr, srv.URL+"/v1/jobs/"+id) {
				t.Errorf("stderr %q lacks the status URL", stderr)
			}
			mu.Lock()
			n := length
			mu.Unlock()
			tc.check(t, srv.Job(t, id), string(srv.Input(t, id)), n)
		})
	}
}

func TestJobsLs(t *testing.T) {
	next := make(chan struct{}, 2)
	srv := apitest.Start(t, apitest.Options{Queues: []engine.Queue{held, steps(17, next)}})
	ctx := t.Context()
	c := client.New(srv.URL, "")
	labels := map[string]string{"k": "v"}
	// Newest first: queued, running at step 3 of 17, failed.
	failed := submit(t, c, "echo", `{"fail": "x"}`, client.SubmitOptions{ContentType: "application/json", Labels: labels}).ID
	srv.Await(t, failed, isDone)
	running := submit(t, c, "steps", "", client.SubmitOptions{Labels: labels}).ID
	next <- struct{}{}
	next <- struct{}{}
	srv.Await(t, running, func(j *job.Job) bool { return j.Progress.Current == 3 })
	queued := submit(t, c, "held", "", client.SubmitOptions{Labels: labels}).ID

	stdout, stderr, err := runCLI(ctx, t, srv, "jobs", "ls")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	want := []string{
		`ID +QUEUE +STATE +PROGRESS +AGE`,
		queued + ` +held +queued +- +\d+s`,
		running + ` +steps +running +3/17 18% +\d+s`,
		failed + ` +echo +failed +- +\d+s`,
	}
	if len(lines) != len(want) {
		t.Fatalf("table:\n%s", stdout)
	}
	for i, w := range want {
		if !regexp.MustCompile("^" + w + "$").MatchString(lines[i]) {
			t.Errorf("line %d %q, want %s", i, lines[i], w)
		}
	}

	stdout, _, _ = runCLI(ctx, t, srv, "jobs", "ls", "--state", "failed,running", "--label", "k=v")
	if n := strings.Count(stdout, "\n"); n != 3 || strings.Contains(stdout, queued) {
		t.Errorf("filtered:\n%s", stdout)
	}
	stdout, stderr, _ = runCLI(ctx, t, srv, "jobs", "ls", "--limit", "2")
	if n := strings.Count(stdout, "\n"); n != 3 || !strings.Contains(stderr, "--cursor "+running) {
		t.Errorf("first page:\n%s\n%s", stdout, stderr)
	}
	stdout, _, _ = runCLI(ctx, t, srv, "jobs", "ls", "--limit", "2", "--all")
	if n := strings.Count(stdout, "\n"); n != 4 {
		t.Errorf("all pages:\n%s", stdout)
	}
}

func TestJobsAndQueuesCommands(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{Tokens: admin})
	t.Setenv("DOCKET_TOKEN", "s3cret")
	ctx := t.Context()
	c := client.New(srv.URL, "s3cret")
	const input = `{"artifacts": {"page-1.png": "png"}}`
	j := submit(t, c, "echo", input, jsonInput)
	srv.Await(t, j.ID, isDone)
	out := filepath.Join(t.TempDir(), "page.png")
	cases := []struct {
		args []string
		want string // regexp on stdout
	}{
		{[]string{"jobs", "get", j.ID}, `(?s)^\{\n  "id": "` + j.ID + `",.*"state": "succeeded"`},
		{[]string{"jobs", "wait", j.ID}, `^` + j.ID + ` succeeded\n$`},
		{[]string{"jobs", "result", j.ID}, `^` + regexp.QuoteMeta(input) + `$`},
		{[]string{"jobs", "artifacts", j.ID}, `(?m)^NAME +TYPE +SIZE\npage-1.png +image/png +3$`},
		{[]string{"jobs", "artifact", j.ID, "page-1.png", "-o", out}, `^$`},
		{[]string{"jobs", "retry", j.ID}, `^$`}, // a succeeded job: refused, below
		{[]string{"queues", "pause", "echo"}, `^echo paused\n$`},
		{[]string{"queues"}, `(?m)^NAME +STATUS +CONCURRENCY +QUEUED +RUNNING +SUCCEEDED +FAILED +CANCELED\necho +paused +4 +0 +0 +1 +0 +0$`},
		{[]string{"queues", "resume", "echo"}, `^echo resumed\n$`},
		{[]string{"jobs", "rm", j.ID}, `^$`},
	}
	for _, tc := range cases {
		stdout, stderr, err := runCLI(ctx, t, srv, tc.args...)
		if len(tc.args) > 1 && tc.args[1] == "retry" {
			if exitCode(err) != 1 || !strings.Contains(err.Error(), "409 ") || !strings.Contains(err.Error(), "cannot retry a succeeded job") {
				t.Errorf("retry of a succeeded job: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, stderr)
		}
		if !regexp.MustCompile(tc.want).MatchString(stdout) {
			t.Errorf("%v: stdout\n%s\nwant %s", tc.args, stdout, tc.want)
		}
	}
	if b, _ := os.ReadFile(out); string(b) != "png" {
		t.Errorf("artifact file %q", b)
	}
	if _, err := c.Get(ctx, j.ID); !client.IsNotFound(err) {
		t.Errorf("after rm: %v", err)
	}
	// Not to run for an hour: still queued when canceled.
	j2 := submit(t, c, "echo", "", client.SubmitOptions{Delay: time.Hour})
	if stdout, _, err := runCLI(ctx, t, srv, "jobs", "cancel", j2.ID); err != nil || stdout != j2.ID+" canceled\n" {
		t.Errorf("cancel: %q %v", stdout, err)
	}
	if stdout, _, err := runCLI(ctx, t, srv, "jobs", "retry", j2.ID); err != nil || stdout != j2.ID+" queued\n" {
		t.Errorf("retry: %q %v", stdout, err)
	}
}

func TestClientCommandErrors(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{Tokens: admin, Queues: []engine.Queue{steps(2, nil)}})
	ctx := t.Context()
	c := client.New(srv.URL, "s3cret")
	running := submit(t, c, "steps", "", client.SubmitOptions{})
	srv.Await(t, running.ID, isRunning)
	failedJob := submit(t, c, "echo", `{"fail": "tesseract crashed"}`, jsonInput)
	srv.Await(t, failedJob.ID, isDone)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"jobs", "get", "nope", "--token", "s3cret"}, 1, `404 No such job: no job "nope"`},
		{[]string{"jobs", "get", "nope"}, 1, "401 Missing or unknown token: send Authorization: Bearer <token>"},
		{[]string{"queues", "--token", "wrong"}, 1, "401 Missing or unknown token: unknown token"},
		{[]string{"submit", "nope", "--token", "s3cret"}, 1, `submit: 404 No such queue: no queue named "nope"`},
		{[]string{"submit", "echo", "/does/not/exist", "--token", "s3cret"}, 1, "no such file"},
		{[]string{"jobs", "result", running.ID, "--token", "s3cret"}, 1, "is running: no result yet"},
		{[]string{"jobs", "result", failedJob.ID, "--token", "s3cret"}, 1, "500 The job failed: tesseract crashed"},
		{[]string{"jobs", "wait", failedJob.ID, "--token", "s3cret"}, 1, "failed after 1 attempt(s): tesseract crashed"},
		{[]string{"jobs", "get"}, 2, "wrong number of arguments"},
		{[]string{"jobs", "frobnicate"}, 2, `unknown command jobs "frobnicate"`},
		{[]string{"submit", "echo", "--priority", "high"}, 2, "invalid value"},
		{[]string{"submit", "echo", "--label", "novalue"}, 2, "key=value"},
	}
	for _, tc := range cases {
		_, _, err := runCLI(ctx, t, srv, tc.args...)
		if err == nil || exitCode(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v (exit %d), want exit %d and %q", tc.args, err, exitCode(err), tc.code, tc.want)
		}
	}
	if err := run(ctx, []string{"jobs"}, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("bare jobs: %v", err)
	}
	withStdin(t, `{"fail": "bad input"}`)
	_, _, err := runCLI(ctx, t, srv, "submit", "echo", "--content-type", "application/json", "--wait", "--token", "s3cret")
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "bad input") {
		t.Errorf("submit --wait of a failing job: %v", err)
	}
}

// Ctrl-C while waiting leaves the job alone and tells how to come back.
func TestSubmitWaitInterrupted(t *testing.T) {
	// The job stays running at step 1 of 10.
	srv := apitest.Start(t, apitest.Options{Queues: []engine.Queue{steps(10, nil)}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// What Ctrl-C does to run's context, once the command shows progress.
	stderr := &watched{onWrite: func(s string) {
		if strings.Contains(s, " running 1/10 ") {
			cancel()
		}
	}}
	withStdin(t, "x")
	t.Setenv("DOCKET_SERVER", srv.URL)
	err := run(ctx, []string{"submit", "steps", "--wait", "--server", srv.URL}, &bytes.Buffer{}, stderr)
	if exitCode(err) != 130 {
		t.Fatalf("exit %d (%v), want 130\n%s", exitCode(err), err, stderr)
	}
	id := idRE.FindString(stderr.String())
	for _, want := range []string{"docket jobs get " + id + " ", "docket jobs result " + id + " -o FILE", "docket jobs wait " + id} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if j := srv.Job(t, id); j.State != job.Running {
		t.Errorf("job %s after Ctrl-C, want it left running", j.State)
	}
}

func TestDescribe(t *testing.T) {
	pct := 17.6
	cases := []struct {
		j        client.Job
		bar, log string
	}{
		{client.Job{State: client.StateRunning, Progress: client.Progress{Current: 3, Total: 17, Message: "page 3", Percent: &pct}},
			"[####----------------] 3/17 18% page 3", "running 3/17 18% page 3"},
		{client.Job{State: client.StateRunning, Progress: client.Progress{Current: 17, Total: 17}},
			"[####################] 17/17 100%", "running 17/17 100%"},
		{client.Job{State: client.StateRunning, Progress: client.Progress{Current: 5, Message: "rows"}}, "running 5 rows", "running 5 rows"},
		{client.Job{State: client.StateQueued, Position: 4}, "queued, 4 ahead", "queued, 4 ahead"},
		{client.Job{State: client.StateFailed, Error: &client.JobError{Message: "boom"}}, "failed: boom", "failed: boom"},
	}
	for _, tc := range cases {
		if got := describe(&tc.j, true); got != tc.bar {
			t.Errorf("bar %q, want %q", got, tc.bar)
		}
		if got := describe(&tc.j, false); got != tc.log {
			t.Errorf("line %q, want %q", got, tc.log)
		}
	}
	var b bytes.Buffer
	pv := &progressView{w: &b, tty: true}
	pv.show(&cases[0].j)
	pv.show(&cases[0].j) // unchanged: not redrawn
	pv.show(&cases[1].j)
	pv.end()
	if want := "\r" + cases[0].bar + "\x1b[K\r" + cases[1].bar + "\x1b[K\n"; b.String() != want {
		t.Errorf("drawn %q, want %q", b.String(), want)
	}
}

func TestAge(t *testing.T) {
	now := time.Now()
	for d, want := range map[time.Duration]string{5 * time.Second: "5s", 3 * time.Minute: "3m", 5 * time.Hour: "5h", 72 * time.Hour: "3d"} {
		if got := age(now, now.Add(-d)); got != want {
			t.Errorf("age %v: %s, want %s", d, got, want)
		}
	}
}
