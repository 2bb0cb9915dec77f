package docket_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docket/docket"
)

// These tests drive docket only through its public API, on a real SQLite
// data directory and with real processes, because the guarantees users rely
// on (no process outlives its job, nothing is lost across a restart) only
// hold or break at that level.

// openDocket opens a Docket on cfg, in a fresh data directory unless cfg
// names one, and closes it when the test ends. Closing twice is harmless, so
// tests may close it themselves.
func openDocket(t *testing.T, cfg docket.Config) *docket.Docket {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		// Failures are asserted on job state; logs would only be noise.
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d, err := docket.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	return d
}

func start(t *testing.T, d *docket.Docket) {
	t.Helper()
	if err := d.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

func submit(t *testing.T, d *docket.Docket, queue string, input []byte, o docket.SubmitOptions) *docket.JobInfo {
	t.Helper()
	info, err := d.Submit(t.Context(), queue, input, o)
	if err != nil {
		t.Fatalf("Submit(%s): %v", queue, err)
	}
	return info
}

// wait bounds Wait, so that a job that never finishes fails the test
// instead of hanging it.
func wait(t *testing.T, d *docket.Docket, id string) *docket.JobInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	info, err := d.Wait(ctx, id)
	if err != nil {
		t.Fatalf("Wait(%s): %v (last seen %+v)", id, err, info)
	}
	return info
}

// poll calls Get until ok holds, for at most limit: the states it waits
// for are not final, so Wait cannot be used.
func poll(t *testing.T, d *docket.Docket, id string, limit time.Duration, what string, ok func(*docket.JobInfo) bool) *docket.JobInfo {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		info, err := d.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		if ok(info) {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: not %s after %s: %+v", id, what, limit, info)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func result(t *testing.T, d *docket.Docket, id string) (string, []byte) {
	t.Helper()
	ct, rc, err := d.Result(t.Context(), id)
	if err != nil {
		t.Fatalf("Result(%s): %v", id, err)
	}
	return ct, readAll(t, rc)
}

// sh runs script with sh -c; args become $1, $2, ... The executor itself
// never uses a shell, so this is only how the tests write their commands.
func sh(script string, args ...string) []string {
	return append([]string{"sh", "-c", script, "sh"}, args...)
}

func TestCommandSuccess(t *testing.T) {
	t.Parallel()
	large := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB: past the inline size, so stored as a file
	type artifact struct{ contentType, body string }
	tests := []struct {
		name       string
		argv       []string
		resultType string
		input      string
		opts       docket.SubmitOptions

		wantResult   *string // nil: no result at all
		wantType     string
		wantProgress docket.Progress
		wantArtifact map[string]artifact
	}{{
		name: "progress lines and typed result",
		argv: sh(`echo "progress 1/3 reading"; echo "progress 2/3 counting"
			tr a-z A-Z < "$1"; echo "progress 3/3 done"`, "{input}"),
		resultType:   "text/plain",
		input:        "hello docket\n",
		wantResult:   ptr("HELLO DOCKET\n"),
		wantType:     "text/plain",
		wantProgress: docket.Progress{Current: 3, Total: 3, Message: "done"},
	}, {
		name:         "sniffed result type",
		argv:         sh(`printf '<!DOCTYPE html><html><body>%s</body></html>' "$(cat "$1")"`, "{input}"),
		input:        "hi",
		wantResult:   ptr("<!DOCTYPE html><html><body>hi</body></html>"),
		wantType:     "text/html; charset=utf-8",
		wantProgress: docket.Progress{},
	}, {
		name:         "fractional and unknown-total progress",
		argv:         sh(`echo 0.5; echo "progress 7 pages so far"; echo 1.5; echo 1`),
		resultType:   "text/plain",
		wantResult:   ptr("1.5\n1\n"), // out-of-range and dotless numbers are result data
		wantType:     "text/plain",
		wantProgress: docket.Progress{Current: 7, Total: 0, Message: "pages so far"},
	}, {
		name:         "DOCKET_RESULT wins over stdout",
		argv:         sh(`echo "log: working"; printf 'the real result' > "$DOCKET_RESULT"; echo "log: done"`),
		resultType:   "text/plain",
		wantResult:   ptr("the real result"),
		wantType:     "text/plain",
		wantProgress: docket.Progress{},
	}, {
		name:         "empty stdout is no result",
		argv:         sh(`echo "progress 1/1 nothing to say"`),
		wantProgress: docket.Progress{Current: 1, Total: 1, Message: "nothing to say"},
	}, {
		name: "output files become artifacts",
		argv: sh(`out=$1
			cp "$2" "$out/copy.txt"
			printf '{"words": %d}' "$(wc -w < "$2")" > "$out/stats.json"
			printf '\211PNG\r\n\032\n' > "$out/picture"
			echo hidden > "$out/.hidden"
			mkdir "$out/sub" && echo nested > "$out/sub/nested.txt"
			ln -s /etc/passwd "$out/link.txt"
			echo "made 3 files"`, "{output}", "{input}"),
		resultType: "text/plain",
		input:      "one two three",
		wantResult: ptr("made 3 files\n"),
		wantType:   "text/plain",
		wantArtifact: map[string]artifact{
			"copy.txt":   {"text/plain; charset=utf-8", "one two three"},
			"stats.json": {"application/json", `{"words": 3}`},
			"picture":    {"image/png", "\x89PNG\r\n\x1a\n"},
		},
	}, {
		name:         "input file keeps its extension",
		argv:         sh(`basename "$DOCKET_INPUT"; cat "$1"`, "{input}"),
		resultType:   "text/plain",
		input:        "%PDF-1.7",
		opts:         docket.SubmitOptions{Filename: "report.pdf", ContentType: "application/pdf"},
		wantResult:   ptr("input.pdf\n%PDF-1.7"),
		wantType:     "text/plain",
		wantProgress: docket.Progress{},
	}, {
		name:         "large result and artifact",
		argv:         sh(`cat "$1"; cat "$1" > "$2/big-output"`, "{input}", "{output}"),
		resultType:   "application/octet-stream",
		input:        large,
		wantResult:   &large,
		wantType:     "application/octet-stream",
		wantArtifact: map[string]artifact{"big-output": {"text/plain; charset=utf-8", large}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			d := openDocket(t, docket.Config{Queues: map[string]docket.Queue{
				"cmd": {Concurrency: 1, MaxAttempts: 1, Command: tt.argv, ResultType: tt.resultType},
			}})
			start(t, d)
			info := wait(t, d, submit(t, d, "cmd", []byte(tt.input), tt.opts).ID)
			if info.State != docket.StateSucceeded {
				t.Fatalf("state %s, error %+v", info.State, info.Error)
			}
			if info.Progress != tt.wantProgress {
				t.Errorf("progress %+v, want %+v", info.Progress, tt.wantProgress)
			}

			if tt.wantResult == nil {
				if info.Result != nil {
					t.Errorf("result %+v, want none", info.Result)
				}
				if _, _, err := d.Result(ctx, info.ID); !errors.Is(err, docket.ErrNotFound) {
					t.Errorf("Result without one: %v, want ErrNotFound", err)
				}
			} else {
				ct, body := result(t, d, info.ID)
				if ct != tt.wantType {
					t.Errorf("result type %q, want %q", ct, tt.wantType)
				}
				if string(body) != *tt.wantResult {
					t.Errorf("result %q, want %q", abbrev(body), abbrev([]byte(*tt.wantResult)))
				}
				if info.Result == nil || info.Result.Size != int64(len(*tt.wantResult)) || info.Result.ContentType != tt.wantType {
					t.Errorf("JobInfo.Result %+v, want %d bytes of %s", info.Result, len(*tt.wantResult), tt.wantType)
				}
			}

			if info.Artifacts != len(tt.wantArtifact) {
				t.Errorf("JobInfo.Artifacts %d, want %d", info.Artifacts, len(tt.wantArtifact))
			}
			listed, err := d.Engine().Store().Artifacts(ctx, info.ID)
			if err != nil {
				t.Fatalf("list artifacts: %v", err)
			}
			var names []string
			for _, b := range listed {
				names = append(names, b.Name)
				if want, ok := tt.wantArtifact[b.Name]; ok && (b.ContentType != want.contentType || b.Size != int64(len(want.body))) {
					t.Errorf("listed artifact %+v, want %s of %d bytes", b, want.contentType, len(want.body))
				}
			}
			wantNames := make([]string, 0, len(tt.wantArtifact))
			for name, want := range tt.wantArtifact {
				wantNames = append(wantNames, name)
				ct, rc, err := d.Artifact(ctx, info.ID, name)
				if err != nil {
					t.Errorf("Artifact(%s): %v", name, err)
					continue
				}
				if body := readAll(t, rc); ct != want.contentType || string(body) != want.body {
					t.Errorf("artifact %s: %s %q, want %s %q", name, ct, abbrev(body), want.contentType, abbrev([]byte(want.body)))
				}
			}
			slices.Sort(wantNames)
			if !slices.Equal(names, wantNames) {
				t.Errorf("artifacts %q, want %q", names, wantNames)
			}
			for _, skipped := range []string{".hidden", "sub", "nested.txt", "link.txt"} {
				if _, _, err := d.Artifact(ctx, info.ID, skipped); !errors.Is(err, docket.ErrNotFound) {
					t.Errorf("Artifact(%s): %v, want ErrNotFound", skipped, err)
				}
			}
		})
	}
}

func TestCommandFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		argv        []string
		maxAttempts int
		wantIn      []string // substrings of the error message
		wantNotIn   []string
	}{{
		name:        "exit status and stderr, after every attempt",
		argv:        sh(`echo "progress 1/2 trying" ; echo "warming up" >&2; echo "cannot frobnicate $1 (attempt $DOCKET_ATTEMPT)" >&2; exit 3`, "widget"),
		maxAttempts: 2,
		wantIn:      []string{"exit status 3", "warming up", "cannot frobnicate widget (attempt 2)"},
	}, {
		name: "only the tail of a long stderr",
		argv: sh(`i=0; while [ $i -lt 2000 ]; do echo "stderr line $i" >&2; i=$((i+1)); done; exit 1`),
		// The message ends with the last line and starts on a line boundary.
		maxAttempts: 1,
		wantIn:      []string{"exit status 1: stderr line ", "\nstderr line 1999"},
		wantNotIn:   []string{"stderr line 0\n", "stderr line 1000\n"},
	}, {
		name:        "program that cannot start",
		argv:        []string{filepath.Join(t.TempDir(), "no-such-program")},
		maxAttempts: 1,
		wantIn:      []string{"no-such-program"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := openDocket(t, docket.Config{Queues: map[string]docket.Queue{
				"cmd": {Concurrency: 1, MaxAttempts: tt.maxAttempts, Command: tt.argv},
			}})
			start(t, d)
			info := wait(t, d, submit(t, d, "cmd", []byte("x"), docket.SubmitOptions{}).ID)
			if info.State != docket.StateFailed {
				t.Fatalf("state %s, want failed", info.State)
			}
			if info.Attempt != tt.maxAttempts || info.MaxAttempts != tt.maxAttempts {
				t.Errorf("attempt %d of %d, want %d of %d", info.Attempt, info.MaxAttempts, tt.maxAttempts, tt.maxAttempts)
			}
			if info.Error == nil {
				t.Fatal("failed job without an error")
			}
			if info.Error.Code != "handler_error" {
				t.Errorf("error code %q, want handler_error", info.Error.Code)
			}
			msg := info.Error.Message
			for _, s := range tt.wantIn {
				if !strings.Contains(msg, s) {
					t.Errorf("error message lacks %q:\n%s", s, abbrev([]byte(msg)))
				}
			}
			for _, s := range tt.wantNotIn {
				if strings.Contains(msg, s) {
					t.Errorf("error message has %q:\n%s", s, abbrev([]byte(msg)))
				}
			}
			if len(msg) > 4096+100 {
				t.Errorf("error message of %d bytes: the stderr tail is unbounded", len(msg))
			}
			if _, _, err := d.Result(t.Context(), info.ID); !errors.Is(err, docket.ErrState) {
				t.Errorf("Result of a failed job: %v, want ErrState", err)
			}
		})
	}
}

// spawner is a command that starts two background children and reports,
// as progress, the id of its process group (its own pid, as the group's
// leader). The shell and its subshells carry marker in their command line,
// since the subshells are forks of it; the sleeps they run do not, and are
// found by their process group.
func spawner(marker string) []string {
	return sh(`(sleep 300; :) & (sleep 300; :) & echo "progress 1/2 started $$"; wait; echo "progress 2/2 survived"`, marker)
}

// newMarker returns a string unique to one test, so that its processes are
// told apart from those of the tests running alongside it.
func newMarker() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "docket-test-" + hex.EncodeToString(b)
}

// groupOf parses the process group id the spawner reported, or 0 when the
// job never got that far.
func groupOf(p docket.Progress) int {
	pid, _ := strconv.Atoi(strings.TrimPrefix(p.Message, "started "))
	return pid
}

// proc is a live (not zombie) process.
type proc struct {
	pid, pgrp int
	cmdline   string
}

// procs lists the live processes whose command line contains marker or
// whose process group is pgrp (when pgrp > 0). Zombies are left out: they
// run nothing, and whether they are reaped depends on the init process of
// the machine, not on docket.
func procs(t *testing.T, marker string, pgrp int) []proc {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	var out []proc
	for _, e := range dirs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 3 || fields[0] == "Z" || fields[0] == "X" {
			continue
		}
		group, _ := strconv.Atoi(fields[2])
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cmd := strings.TrimRight(strings.ReplaceAll(string(cmdline), "\x00", " "), " ")
		if strings.Contains(cmd, marker) || (pgrp > 0 && group == pgrp) {
			out = append(out, proc{pid: pid, pgrp: group, cmdline: cmd})
		}
	}
	return out
}

// killLeftovers makes sure a failing test leaves no sleeping processes
// behind. It kills only processes carrying the test's marker and the
// members of their process groups, never the test binary's own group.
func killLeftovers(t *testing.T, marker string) {
	t.Cleanup(func() {
		own := syscall.Getpgrp()
		for _, p := range procs(t, marker, 0) {
			if p.pgrp != own {
				for _, q := range procs(t, marker, p.pgrp) {
					syscall.Kill(q.pid, syscall.SIGKILL)
				}
			}
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
	})
}

// awaitNoProcesses fails the test unless every process of the command is
// gone within 5 s.
func awaitNoProcesses(t *testing.T, marker string, pgrp int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := procs(t, marker, pgrp)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of the job still running 5s after it ended: %+v", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// started waits until the spawner is running with its children started,
// and returns its process group.
func started(t *testing.T, d *docket.Docket, id, marker string) int {
	t.Helper()
	info := poll(t, d, id, 5*time.Second, "running with children started", func(j *docket.JobInfo) bool {
		return j.State == docket.StateRunning && strings.HasPrefix(j.Progress.Message, "started ")
	})
	pgrp := groupOf(info.Progress)
	if pgrp <= 0 {
		t.Fatalf("progress %+v names no process group", info.Progress)
	}
	// The children are forked before the progress line is written.
	if n := len(procs(t, marker, pgrp)); n < 3 {
		t.Fatalf("%d processes of the command running, want the leader and its 2 children at least", n)
	}
	return pgrp
}

// TestCommandProcessesDieWithJob checks that however an attempt ends, no
// process of its command outlives it: a job owns its processes, and a
// leftover one would hold resources (and maybe the job's files) forever.
func TestCommandProcessesDieWithJob(t *testing.T) {
	t.Parallel()
	cancel := func(t *testing.T, d *docket.Docket, id string) {
		info, err := d.Cancel(t.Context(), id)
		if err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		if info.State != docket.StateCanceled {
			t.Errorf("Cancel returned state %s", info.State)
		}
	}
	del := func(t *testing.T, d *docket.Docket, id string) {
		if err := d.Delete(t.Context(), id); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	tests := []struct {
		name    string
		argv    func(marker string) []string
		queue   docket.Queue
		opts    docket.SubmitOptions
		end     func(t *testing.T, d *docket.Docket, id string) // nil: the attempt ends by itself
		want    docket.State                                    // "": the job is gone
		code    string
		message []string
	}{{
		name:  "cancel",
		argv:  spawner,
		queue: docket.Queue{MaxAttempts: 3},
		end:   cancel,
		want:  docket.StateCanceled,
	}, {
		name:  "delete",
		argv:  spawner,
		queue: docket.Queue{MaxAttempts: 3},
		end:   del,
	}, {
		name:    "queue timeout",
		argv:    spawner,
		queue:   docket.Queue{MaxAttempts: 1, Timeout: 300 * time.Millisecond},
		want:    docket.StateFailed,
		code:    "deadline_exceeded",
		message: []string{"deadline", "300ms"},
	}, {
		name:    "job timeout overrides the queue's",
		argv:    spawner,
		queue:   docket.Queue{MaxAttempts: 1, Timeout: time.Hour},
		opts:    docket.SubmitOptions{Timeout: 300 * time.Millisecond},
		want:    docket.StateFailed,
		code:    "deadline_exceeded",
		message: []string{"deadline", "300ms"},
	}, {
		// The children keep stdout open: the command's exit must still
		// end the job, with the output written before it.
		name: "exit with children holding stdout",
		argv: func(marker string) []string {
			return sh(`(sleep 300; :) & echo "progress 1/1 started $$"; echo result`, marker)
		},
		queue: docket.Queue{MaxAttempts: 1, ResultType: "text/plain"},
		want:  docket.StateSucceeded,
	}, {
		name: "exit with detached children",
		argv: func(marker string) []string {
			return sh(`(sleep 300; :) >/dev/null 2>&1 & echo "progress 1/1 started $$"; echo result`, marker)
		},
		queue: docket.Queue{MaxAttempts: 1, ResultType: "text/plain"},
		want:  docket.StateSucceeded,
	}, {
		name: "failure with children",
		argv: func(marker string) []string {
			return sh(`(sleep 300; :) >/dev/null 2>&1 & echo "progress 1/1 started $$"; echo broken >&2; exit 2`, marker)
		},
		queue:   docket.Queue{MaxAttempts: 1},
		want:    docket.StateFailed,
		code:    "handler_error",
		message: []string{"exit status 2: broken"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			marker := newMarker()
			killLeftovers(t, marker)
			q := tt.queue
			q.Concurrency, q.Command = 1, tt.argv(marker)
			d := openDocket(t, docket.Config{Queues: map[string]docket.Queue{"cmd": q}})
			start(t, d)
			id := submit(t, d, "cmd", nil, tt.opts).ID

			var info *docket.JobInfo
			pgrp := 0
			if tt.end != nil {
				pgrp = started(t, d, id, marker)
				tt.end(t, d, id)
				awaitNoProcesses(t, marker, pgrp)
				if tt.want == "" {
					if _, err := d.Get(t.Context(), id); !errors.Is(err, docket.ErrNotFound) {
						t.Fatalf("Get: %v, want ErrNotFound", err)
					}
					return
				}
				info = wait(t, d, id)
			} else {
				info = wait(t, d, id)
				// The final progress is stored with the final state.
				if pgrp = groupOf(info.Progress); pgrp <= 0 {
					t.Errorf("progress %+v: the command never reported starting its children", info.Progress)
				}
				awaitNoProcesses(t, marker, pgrp)
			}

			// The end of the attempt is recorded once, as it happened:
			// a canceled job is not turned into a failure or a retry.
			if info.State != tt.want || info.Attempt != 1 {
				t.Fatalf("state %s attempt %d, want %s attempt 1 (error %+v)", info.State, info.Attempt, tt.want, info.Error)
			}
			if tt.code == "" {
				if info.Error != nil {
					t.Errorf("error %+v, want none", info.Error)
				}
			} else if info.Error == nil || info.Error.Code != tt.code {
				t.Fatalf("error %+v, want code %s", info.Error, tt.code)
			}
			for _, s := range tt.message {
				if !strings.Contains(info.Error.Message, s) {
					t.Errorf("error message %q lacks %q", info.Error.Message, s)
				}
			}
			if run := info.FinishedAt.Sub(info.StartedAt); run > 4*time.Second {
				t.Errorf("the attempt ran %s", run)
			}
			if info.State == docket.StateSucceeded {
				if _, body := result(t, d, id); string(body) != "result\n" {
					t.Errorf("result %q, want %q", body, "result\n")
				}
			}
			if info.State == docket.StateCanceled {
				if _, err := d.Cancel(t.Context(), id); !errors.Is(err, docket.ErrState) {
					t.Errorf("second Cancel: %v, want ErrState", err)
				}
			}
		})
	}
}

func TestCloseKillsCommandAndRequeues(t *testing.T) {
	t.Parallel()
	marker := newMarker()
	killLeftovers(t, marker)
	dir := t.TempDir()
	// A single attempt: the shutdown must not spend it.
	queues := map[string]docket.Queue{"cmd": {Concurrency: 1, MaxAttempts: 1, Command: spawner(marker)}}
	d := openDocket(t, docket.Config{DataDir: dir, ShutdownGrace: 200 * time.Millisecond, Queues: queues})
	start(t, d)
	id := submit(t, d, "cmd", []byte("keep me"), docket.SubmitOptions{}).ID
	pgrp := started(t, d, id, marker)

	begun := time.Now()
	err := d.Close(t.Context())
	if took := time.Since(begun); took > 3*time.Second {
		t.Errorf("Close took %s with a shutdown grace of 200ms", took)
	}
	// The grace period ran out, and Close says so.
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close: %v, want an error wrapping context.DeadlineExceeded", err)
	}
	awaitNoProcesses(t, marker, pgrp)

	// No Start: the reopened Docket only looks.
	d = openDocket(t, docket.Config{DataDir: dir, Queues: queues})
	info, err := d.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if info.State != docket.StateQueued {
		t.Fatalf("after shutdown: state %s, want queued", info.State)
	}
	if info.Error == nil || info.Error.Code != "shutdown" {
		t.Errorf("error %+v, want code shutdown", info.Error)
	}
	if info.Attempt != 0 || info.MaxAttempts != 1 {
		t.Errorf("attempt %d of %d, want 0 of 1: an interrupted attempt does not count", info.Attempt, info.MaxAttempts)
	}
	if info.Input.Size != int64(len("keep me")) {
		t.Errorf("input %+v lost across the restart", info.Input)
	}
}

// recorder is a Go handler that records which jobs ran, in order, and can
// be made to fail.
type recorder struct {
	mu     sync.Mutex
	ran    []string // job ids
	labels map[string]map[string]string
	fail   atomic.Bool
}

func (r *recorder) Run(ctx context.Context, j *docket.Job) error {
	in, err := j.Input(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.ran = append(r.ran, j.ID())
	if r.labels == nil {
		r.labels = map[string]map[string]string{}
	}
	r.labels[j.ID()] = j.Labels()
	r.mu.Unlock()
	if r.fail.Load() {
		return docket.Permanent(fmt.Errorf("refusing %q", in))
	}
	j.Progress(1, 1, "echoed")
	j.SetResult("text/plain", append([]byte("echo: "), in...))
	return j.AddArtifact("input.bin", "application/octet-stream", bytes.NewReader(in))
}

func (r *recorder) order() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ran)
}

func TestHandlerAPI(t *testing.T) {
	t.Parallel()

	t.Run("priority order and position", func(t *testing.T) {
		t.Parallel()
		d := openDocket(t, docket.Config{})
		rec := &recorder{}
		d.Handle("q", rec)
		// Submitted before Start so that all of them wait together.
		low := submit(t, d, "q", []byte("low"), docket.SubmitOptions{Priority: -1})
		mid := submit(t, d, "q", []byte("mid"), docket.SubmitOptions{})
		high := submit(t, d, "q", []byte("high"), docket.SubmitOptions{Priority: 5})
		mid2 := submit(t, d, "q", []byte("mid2"), docket.SubmitOptions{})
		for _, c := range []struct {
			job  *docket.JobInfo
			want int64
		}{{high, 0}, {mid, 1}, {mid2, 2}, {low, 3}} {
			info, err := d.Get(t.Context(), c.job.ID)
			if err != nil {
				t.Fatal(err)
			}
			if info.State != docket.StateQueued || info.Position != c.want || info.Priority != c.job.Priority {
				t.Errorf("job of priority %d: %s at position %d, want queued at %d", c.job.Priority, info.State, info.Position, c.want)
			}
		}
		start(t, d)
		for _, j := range []*docket.JobInfo{low, mid, high, mid2} {
			if info := wait(t, d, j.ID); info.State != docket.StateSucceeded {
				t.Fatalf("state %s, error %+v", info.State, info.Error)
			}
		}
		if got, want := rec.order(), []string{high.ID, mid.ID, mid2.ID, low.ID}; !slices.Equal(got, want) {
			t.Errorf("ran %v, want by priority then age %v", got, want)
		}
	})

	t.Run("delay", func(t *testing.T) {
		t.Parallel()
		d := openDocket(t, docket.Config{})
		d.Handle("q", &recorder{})
		start(t, d)
		const delay = 500 * time.Millisecond
		submitted := time.Now()
		later := submit(t, d, "q", []byte("later"), docket.SubmitOptions{Delay: delay})
		now := submit(t, d, "q", []byte("now"), docket.SubmitOptions{})
		if info := wait(t, d, now.ID); info.State != docket.StateSucceeded {
			t.Fatalf("undelayed job %s", info.State)
		}
		if info, err := d.Get(t.Context(), later.ID); err != nil || info.State != docket.StateQueued {
			t.Fatalf("delayed job after the undelayed one ran: %+v, %v; want still queued", info, err)
		}
		info := wait(t, d, later.ID)
		if info.State != docket.StateSucceeded {
			t.Fatalf("delayed job %s", info.State)
		}
		// Stored times have microsecond precision.
		if early := info.StartedAt.Sub(submitted); early < delay-time.Millisecond {
			t.Errorf("delayed job started %s after submit, want at least %s", early, delay)
		}
	})

	t.Run("labels, result and artifact", func(t *testing.T) {
		t.Parallel()
		d := openDocket(t, docket.Config{})
		rec := &recorder{}
		d.Handle("q", rec)
		start(t, d)
		labels := map[string]string{"customer": "acme", "kind": "invoice"}
		info := wait(t, d, submit(t, d, "q", []byte("payload"), docket.SubmitOptions{Labels: labels, ContentType: "text/plain"}).ID)
		if info.State != docket.StateSucceeded {
			t.Fatalf("state %s, error %+v", info.State, info.Error)
		}
		if !reflect.DeepEqual(info.Labels, labels) {
			t.Errorf("JobInfo.Labels %v, want %v", info.Labels, labels)
		}
		rec.mu.Lock()
		seen := rec.labels[info.ID]
		rec.mu.Unlock()
		if !reflect.DeepEqual(seen, labels) {
			t.Errorf("handler saw labels %v, want %v", seen, labels)
		}
		if info.Input.ContentType != "text/plain" || info.Progress != (docket.Progress{Current: 1, Total: 1, Message: "echoed"}) {
			t.Errorf("input %+v progress %+v", info.Input, info.Progress)
		}
		if ct, body := result(t, d, info.ID); ct != "text/plain" || string(body) != "echo: payload" {
			t.Errorf("result %s %q", ct, body)
		}
		ct, rc, err := d.Artifact(t.Context(), info.ID, "input.bin")
		if err != nil {
			t.Fatalf("Artifact: %v", err)
		}
		if body := readAll(t, rc); ct != "application/octet-stream" || string(body) != "payload" {
			t.Errorf("artifact %s %q", ct, body)
		}
	})

	t.Run("idempotency key and unique input", func(t *testing.T) {
		t.Parallel()
		d := openDocket(t, docket.Config{Queues: map[string]docket.Queue{"stored": {}}})
		first := submit(t, d, "stored", []byte("a"), docket.SubmitOptions{IdempotencyKey: "order-42"})
		again := submit(t, d, "stored", []byte("something else"), docket.SubmitOptions{IdempotencyKey: "order-42"})
		if again.ID != first.ID {
			t.Errorf("same idempotency key: job %s, want the first job %s", again.ID, first.ID)
		}
		other := submit(t, d, "stored", []byte("a"), docket.SubmitOptions{IdempotencyKey: "order-43"})
		if other.ID == first.ID {
			t.Error("another idempotency key returned the first job")
		}

		u1 := submit(t, d, "stored", []byte("same bytes"), docket.SubmitOptions{Unique: true})
		u2 := submit(t, d, "stored", []byte("same bytes"), docket.SubmitOptions{Unique: true})
		if u2.ID != u1.ID {
			t.Errorf("same unique input: job %s, want the first job %s", u2.ID, u1.ID)
		}
		if u3 := submit(t, d, "stored", []byte("other bytes"), docket.SubmitOptions{Unique: true}); u3.ID == u1.ID {
			t.Error("different unique input returned the first job")
		}
		// A canceled job no longer blocks its input.
		if _, err := d.Cancel(t.Context(), u1.ID); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		if u4 := submit(t, d, "stored", []byte("same bytes"), docket.SubmitOptions{Unique: true}); u4.ID == u1.ID {
			t.Error("unique input matched a canceled job")
		}
	})

	t.Run("retry of a failed job", func(t *testing.T) {
		t.Parallel()
		d := openDocket(t, docket.Config{})
		rec := &recorder{}
		rec.fail.Store(true)
		d.Handle("q", rec)
		start(t, d)
		id := submit(t, d, "q", []byte("flaky"), docket.SubmitOptions{}).ID
		info := wait(t, d, id)
		// Permanent skips the remaining attempts.
		if info.State != docket.StateFailed || info.Attempt != 1 || info.MaxAttempts != docket.DefaultQueue.MaxAttempts {
			t.Fatalf("state %s attempt %d of %d, want failed at once", info.State, info.Attempt, info.MaxAttempts)
		}
		if info.Error == nil || !strings.Contains(info.Error.Message, `refusing "flaky"`) {
			t.Errorf("error %+v", info.Error)
		}
		if _, err := d.Retry(t.Context(), id); err != nil {
			t.Fatalf("Retry (still failing): %v", err)
		}
		if info := wait(t, d, id); info.State != docket.StateFailed {
			t.Fatalf("retried job %s, want failed again", info.State)
		}

		rec.fail.Store(false)
		info, err := d.Retry(t.Context(), id)
		if err != nil {
			t.Fatalf("Retry: %v", err)
		}
		if info.State != docket.StateQueued || info.Error != nil || info.Attempt != 0 {
			t.Errorf("Retry returned state %s attempt %d error %+v, want a fresh queued job", info.State, info.Attempt, info.Error)
		}
		info = wait(t, d, id)
		if info.State != docket.StateSucceeded || info.Attempt != 1 || info.Error != nil {
			t.Fatalf("after retry: state %s attempt %d error %+v", info.State, info.Attempt, info.Error)
		}
		if _, body := result(t, d, id); string(body) != "echo: flaky" {
			t.Errorf("result %q", body)
		}
		if _, err := d.Retry(t.Context(), id); !errors.Is(err, docket.ErrState) {
			t.Errorf("Retry of a succeeded job: %v, want ErrState", err)
		}
		if n := len(rec.order()); n != 3 {
			t.Errorf("handler ran %d times, want 3", n)
		}
	})

	t.Run("delete", func(t *testing.T) {
		t.Parallel()
		d := openDocket(t, docket.Config{})
		d.Handle("q", &recorder{})
		start(t, d)
		id := wait(t, d, submit(t, d, "q", []byte("bye"), docket.SubmitOptions{}).ID).ID
		if err := d.Delete(t.Context(), id); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := d.Get(t.Context(), id); !errors.Is(err, docket.ErrNotFound) {
			t.Errorf("Get after Delete: %v, want ErrNotFound", err)
		}
		if _, _, err := d.Result(t.Context(), id); !errors.Is(err, docket.ErrNotFound) {
			t.Errorf("Result after Delete: %v, want ErrNotFound", err)
		}
		if _, _, err := d.Artifact(t.Context(), id, "input.bin"); !errors.Is(err, docket.ErrNotFound) {
			t.Errorf("Artifact after Delete: %v, want ErrNotFound", err)
		}
		if err := d.Delete(t.Context(), id); !errors.Is(err, docket.ErrNotFound) {
			t.Errorf("second Delete: %v, want ErrNotFound", err)
		}
		for name, op := range map[string]func() error{
			"Cancel": func() error { _, err := d.Cancel(t.Context(), id); return err },
			"Retry":  func() error { _, err := d.Retry(t.Context(), id); return err },
			"Wait":   func() error { _, err := d.Wait(t.Context(), id); return err },
		} {
			if err := op(); !errors.Is(err, docket.ErrNotFound) {
				t.Errorf("%s after Delete: %v, want ErrNotFound", name, err)
			}
		}
	})

	t.Run("unknown queue", func(t *testing.T) {
		t.Parallel()
		d := openDocket(t, docket.Config{Queues: map[string]docket.Queue{"known": {}}})
		if _, err := d.Submit(t.Context(), "unknown", nil, docket.SubmitOptions{}); !errors.Is(err, docket.ErrUnknownQueue) {
			t.Errorf("Submit to an undeclared queue: %v, want ErrUnknownQueue", err)
		}
		submit(t, d, "known", nil, docket.SubmitOptions{})
	})

	t.Run("queue full", func(t *testing.T) {
		t.Parallel()
		// Concurrency 0: no worker here, so jobs stay queued.
		d := openDocket(t, docket.Config{Queues: map[string]docket.Queue{"small": {Concurrency: 0, MaxQueued: 1}}})
		start(t, d)
		first := submit(t, d, "small", []byte("1"), docket.SubmitOptions{IdempotencyKey: "k1"})
		if _, err := d.Submit(t.Context(), "small", []byte("2"), docket.SubmitOptions{}); !errors.Is(err, docket.ErrQueueFull) {
			t.Fatalf("Submit past MaxQueued: %v, want ErrQueueFull", err)
		}
		// A resubmission of a job already in is not a new job.
		if again, err := d.Submit(t.Context(), "small", []byte("1"), docket.SubmitOptions{IdempotencyKey: "k1"}); err != nil || again.ID != first.ID {
			t.Errorf("idempotent resubmit to a full queue: %+v, %v; want the first job", again, err)
		}
		// Space frees up when the waiting job leaves the queue.
		if _, err := d.Cancel(t.Context(), first.ID); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		submit(t, d, "small", []byte("3"), docket.SubmitOptions{})
		if info, err := d.Get(t.Context(), first.ID); err != nil || info.State != docket.StateCanceled {
			t.Errorf("first job %+v, %v", info, err)
		}
	})
}

func TestReopenKeepsJobs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	d := openDocket(t, docket.Config{DataDir: dir, Queues: map[string]docket.Queue{"later": {}}})
	d.Handle("now", &recorder{})
	start(t, d)
	done := wait(t, d, submit(t, d, "now", []byte("finished before the restart"), docket.SubmitOptions{}).ID)
	if done.State != docket.StateSucceeded {
		t.Fatalf("state %s, error %+v", done.State, done.Error)
	}
	// Larger than a database page, so the input is kept as a file.
	bigInput := bytes.Repeat([]byte("durable "), 10<<10)
	waiting := submit(t, d, "later", bigInput, docket.SubmitOptions{Priority: 3, Labels: map[string]string{"k": "v"}, IdempotencyKey: "later-1"})
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	d = openDocket(t, docket.Config{DataDir: dir})
	rec := &recorder{}
	d.Handle("later", rec)
	d.Handle("now", &recorder{})

	got, err := d.Get(ctx, done.ID)
	if err != nil {
		t.Fatalf("Get finished job after reopen: %v", err)
	}
	if got.State != docket.StateSucceeded || got.Version != done.Version || !reflect.DeepEqual(got.Result, done.Result) {
		t.Errorf("finished job after reopen: %+v, want %+v", got, done)
	}
	if ct, body := result(t, d, done.ID); ct != "text/plain" || string(body) != "echo: finished before the restart" {
		t.Errorf("result after reopen: %s %q", ct, body)
	}
	if _, rc, err := d.Artifact(ctx, done.ID, "input.bin"); err != nil {
		t.Errorf("artifact after reopen: %v", err)
	} else if body := readAll(t, rc); string(body) != "finished before the restart" {
		t.Errorf("artifact after reopen: %q", body)
	}

	got, err = d.Get(ctx, waiting.ID)
	if err != nil {
		t.Fatalf("Get queued job after reopen: %v", err)
	}
	if got.State != docket.StateQueued || got.Priority != 3 || got.Labels["k"] != "v" || got.Input.Size != int64(len(bigInput)) {
		t.Errorf("queued job after reopen: %+v", got)
	}
	// The idempotency key survives too.
	if again := submit(t, d, "later", nil, docket.SubmitOptions{IdempotencyKey: "later-1"}); again.ID != waiting.ID {
		t.Errorf("idempotency key forgotten across reopen: got job %s, want %s", again.ID, waiting.ID)
	}

	start(t, d)
	if info := wait(t, d, waiting.ID); info.State != docket.StateSucceeded {
		t.Fatalf("job queued before the restart: %s, error %+v", info.State, info.Error)
	}
	if _, body := result(t, d, waiting.ID); !bytes.Equal(body, append([]byte("echo: "), bigInput...)) {
		t.Errorf("input of the job queued before the restart changed: result of %d bytes", len(body))
	}
}

func ptr[T any](v T) *T { return &v }

// abbrev keeps failure messages about large bodies readable.
func abbrev(b []byte) string {
	if len(b) <= 200 {
		return string(b)
	}
	return fmt.Sprintf("%s... (%d bytes)", b[:200], len(b))
}
