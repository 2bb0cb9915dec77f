package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docket/docket/client"
	"github.com/docket/docket/client/clienttest"
)

// runCLI runs the command line against srv and returns its output.
func runCLI(ctx context.Context, t *testing.T, srv *clienttest.Server, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--server", srv.URL)
	err = run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func withStdin(t *testing.T, s string) {
	old := stdin
	stdin = strings.NewReader(s)
	t.Cleanup(func() { stdin = old })
}

// echoWorker makes srv run every job like the demo queue: steps of
// progress, then the input as the result.
func echoWorker(srv *clienttest.Server, steps int64) {
	srv.OnSubmit(func(id string) {
		for i := range steps {
			time.Sleep(5 * time.Millisecond)
			srv.Progress(id, i+1, steps, "step")
		}
		sub := srv.Submission(id)
		srv.Succeed(id, sub.ContentType, sub.Input)
	})
}

func TestSubmitWaitWritesResult(t *testing.T) {
	srv := clienttest.NewServer("")
	defer srv.Close()
	echoWorker(srv, 3)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	os.WriteFile(in, []byte(`{"hello": "docket"}`), 0o644)
	out := filepath.Join(dir, "out.json")
	stdout, stderr, err := runCLI(t.Context(), t, srv, "submit", "echo", in, "--wait", "-o", out, "--label", "a=b")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil || string(got) != `{"hello": "docket"}` {
		t.Fatalf("result %q, %v", got, err)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing: the result went to the file", stdout)
	}
	// Not a terminal: one line per change, ending with the final state.
	if !regexp.MustCompile(`job-\d+ running \d/3 \d+% step\n`).MatchString(stderr) || !strings.HasSuffix(stderr, " succeeded\n") {
		t.Errorf("progress lines:\n%s", stderr)
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
	srv := clienttest.NewServer("")
	defer srv.Close()
	dir := t.TempDir()
	files := map[string]string{"a.json": `{}`, "notes.unknownext": "plain words", "blob.unknownext": "\x00\x01\x02"}
	for name, content := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
	}
	cases := []struct {
		name  string
		args  []string
		stdin string
		check func(t *testing.T, sub clienttest.Submission)
	}{
		{"type from extension", []string{"echo", filepath.Join(dir, "a.json")}, "", func(t *testing.T, sub clienttest.Submission) {
			if sub.ContentType != "application/json" || string(sub.Input) != "{}" {
				t.Errorf("%+v", sub)
			}
		}},
		{"type sniffed", []string{"echo", filepath.Join(dir, "notes.unknownext")}, "", func(t *testing.T, sub clienttest.Submission) {
			if sub.ContentType != "text/plain; charset=utf-8" || string(sub.Input) != "plain words" || sub.Header.Get("Content-Length") != "11" {
				t.Errorf("%+v", sub)
			}
		}},
		{"binary sniffed", []string{"echo", filepath.Join(dir, "blob.unknownext")}, "", func(t *testing.T, sub clienttest.Submission) {
			if sub.ContentType != "application/octet-stream" || sub.Size != 3 {
				t.Errorf("%+v", sub)
			}
		}},
		{"stdin", []string{"echo", "-"}, "<b>html?</b>", func(t *testing.T, sub clienttest.Submission) {
			if sub.ContentType != "application/octet-stream" || string(sub.Input) != "<b>html?</b>" {
				t.Errorf("%+v", sub)
			}
		}},
		{"options", []string{"--priority", "3", "echo", "--label", "a=b", "--label", "c:d", "--unique", "--idempotency-key", "k",
			"--delay", "1m", "--timeout", "30s", "--max-attempts", "2", "--content-type", "text/csv", "--multipart"}, "x,y", func(t *testing.T, sub clienttest.Submission) {
			want := "delay=1m0s&label=a%3Ab&label=c%3Ad&max_attempts=2&priority=3&timeout=30s&unique=true"
			if q := sub.Query.Encode(); q != want || sub.Header.Get("Idempotency-Key") != "k" || !sub.Multipart ||
				sub.ContentType != "text/csv" || string(sub.Input) != "x,y" {
				t.Errorf("query %s\n%+v", q, sub)
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
			id := strings.TrimSpace(stdout)
			if !strings.HasPrefix(id, "job-") || strings.Contains(id, "\n") {
				t.Fatalf("stdout %q, want the id alone", stdout)
			}
			if !strings.Contains(stderr, srv.URL+"/v1/jobs/"+id) {
				t.Errorf("stderr %q lacks the status URL", stderr)
			}
			tc.check(t, srv.Submission(id))
		})
	}
}

func TestJobsLs(t *testing.T) {
	srv := clienttest.NewServer("")
	defer srv.Close()
	ctx := t.Context()
	c := client.New(srv.URL, "")
	var ids []string
	for range 3 {
		j, err := c.Submit(ctx, "echo", nil, client.SubmitOptions{Labels: map[string]string{"k": "v"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	srv.Progress(ids[1], 3, 17, "page 3")
	srv.Fail(ids[0], "x")

	stdout, stderr, err := runCLI(ctx, t, srv, "jobs", "ls")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	want := []string{
		`ID +QUEUE +STATE +PROGRESS +AGE`,
		ids[2] + ` +echo +queued +- +\d+s`,
		ids[1] + ` +echo +running +3/17 18% +\d+s`,
		ids[0] + ` +echo +failed +- +\d+s`,
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
	if n := strings.Count(stdout, "\n"); n != 3 {
		t.Errorf("filtered:\n%s", stdout)
	}
	stdout, stderr, _ = runCLI(ctx, t, srv, "jobs", "ls", "--limit", "2")
	if n := strings.Count(stdout, "\n"); n != 3 || !strings.Contains(stderr, "--cursor 2") {
		t.Errorf("first page:\n%s\n%s", stdout, stderr)
	}
	stdout, _, _ = runCLI(ctx, t, srv, "jobs", "ls", "--limit", "2", "--all")
	if n := strings.Count(stdout, "\n"); n != 4 {
		t.Errorf("all pages:\n%s", stdout)
	}
}

func TestJobsAndQueuesCommands(t *testing.T) {
	srv := clienttest.NewServer("s3cret")
	defer srv.Close()
	t.Setenv("DOCKET_TOKEN", "s3cret")
	ctx := t.Context()
	c := client.New(srv.URL, "s3cret")
	j, _ := c.Submit(ctx, "echo", strings.NewReader("in"), client.SubmitOptions{})
	srv.AddArtifact(j.ID, "page-1.png", "image/png", []byte("png"))
	srv.Succeed(j.ID, "text/plain", []byte("the result"))
	out := filepath.Join(t.TempDir(), "page.png")
	cases := []struct {
		args []string
		want string // regexp on stdout
	}{
		{[]string{"jobs", "get", j.ID}, `(?s)^\{\n  "id": "` + j.ID + `",.*"state": "succeeded"`},
		{[]string{"jobs", "wait", j.ID}, `^` + j.ID + ` succeeded\n$`},
		{[]string{"jobs", "result", j.ID}, `^the result$`},
		{[]string{"jobs", "artifacts", j.ID}, `(?m)^NAME +TYPE +SIZE\npage-1.png +image/png +3$`},
		{[]string{"jobs", "artifact", j.ID, "page-1.png", "-o", out}, `^$`},
		{[]string{"jobs", "retry", j.ID}, `^$`}, // a succeeded job: refused, below
		{[]string{"queues", "pause", "echo"}, `^echo paused\n$`},
		{[]string{"queues"}, `(?m)^NAME +STATUS +CONCURRENCY +QUEUED +RUNNING +SUCCEEDED +FAILED +CANCELED\necho +paused +1 +0 +0 +1 +0 +0$`},
		{[]string{"queues", "resume", "echo"}, `^echo resumed\n$`},
		{[]string{"jobs", "rm", j.ID}, `^$`},
	}
	for _, tc := range cases {
		stdout, stderr, err := runCLI(ctx, t, srv, tc.args...)
		if len(tc.args) > 1 && tc.args[1] == "retry" {
			if exitCode(err) != 1 || !strings.Contains(err.Error(), "409 Conflict") {
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
	j2, _ := c.Submit(ctx, "echo", nil, client.SubmitOptions{})
	if stdout, _, err := runCLI(ctx, t, srv, "jobs", "cancel", j2.ID); err != nil || stdout != j2.ID+" canceled\n" {
		t.Errorf("cancel: %q %v", stdout, err)
	}
	if stdout, _, err := runCLI(ctx, t, srv, "jobs", "retry", j2.ID); err != nil || stdout != j2.ID+" queued\n" {
		t.Errorf("retry: %q %v", stdout, err)
	}
}

func TestClientCommandErrors(t *testing.T) {
	srv := clienttest.NewServer("s3cret")
	defer srv.Close()
	ctx := t.Context()
	c := client.New(srv.URL, "s3cret")
	running, _ := c.Submit(ctx, "echo", nil, client.SubmitOptions{})
	srv.Progress(running.ID, 1, 2, "")
	failedJob, _ := c.Submit(ctx, "echo", nil, client.SubmitOptions{})
	srv.Fail(failedJob.ID, "tesseract crashed")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"jobs", "get", "nope", "--token", "s3cret"}, 1, "404 Not Found: no job nope"},
		{[]string{"jobs", "get", "nope"}, 1, "401 Unauthorized: a valid bearer token is required"},
		{[]string{"queues", "--token", "wrong"}, 1, "401 Unauthorized"},
		{[]string{"submit", "nope", "--token", "s3cret"}, 1, "submit: 404 Not Found: no queue nope"},
		{[]string{"submit", "echo", "/does/not/exist", "--token", "s3cret"}, 1, "no such file"},
		{[]string{"jobs", "result", running.ID, "--token", "s3cret"}, 1, "is running: no result yet"},
		{[]string{"jobs", "result", failedJob.ID, "--token", "s3cret"}, 1, "500 Internal Server Error: tesseract crashed"},
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
	srv.OnSubmit(func(id string) { srv.Fail(id, "bad input") })
	withStdin(t, "x")
	_, _, err := runCLI(ctx, t, srv, "submit", "echo", "--wait", "--token", "s3cret")
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "bad input") {
		t.Errorf("submit --wait of a failing job: %v", err)
	}
}

// Ctrl-C while waiting leaves the job alone and tells how to come back.
func TestSubmitWaitInterrupted(t *testing.T) {
	srv := clienttest.NewServer("")
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv.OnSubmit(func(id string) {
		srv.Progress(id, 1, 10, "page 1")
		time.Sleep(50 * time.Millisecond)
		cancel() // what Ctrl-C does to run's context
	})
	withStdin(t, "x")
	t.Setenv("DOCKET_SERVER", srv.URL)
	_, stderr, err := runCLI(ctx, t, srv, "submit", "echo", "--wait")
	if exitCode(err) != 130 {
		t.Fatalf("exit %d (%v), want 130", exitCode(err), err)
	}
	id := regexp.MustCompile(`job-\d+`).FindString(stderr)
	for _, want := range []string{"docket jobs get " + id + " ", "docket jobs result " + id + " -o FILE", "docket jobs wait " + id} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if j, _ := srv.Job(id); j.State != client.StateRunning {
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
