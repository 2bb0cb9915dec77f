package pdfapp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// toolRun is one run of a tool.
type toolRun struct {
	argv []string
	env  []string // added to the inherited environment
	dir  string
	// stdout receives the standard output; nil discards it.
	stdout io.Writer
	// line, if set, is called with each line of stderr, from one goroutine
	// at a time; it returns true for a line that reports progress, which
	// also restarts the idle timer and is not kept for the error message.
	line func(string) bool
	// idle kills the process when this long passes without a progress
	// line (or, without line, since it started): a page that takes longer
	// is not going to finish.
	idle time.Duration
}

// errToolIdle is the cause of a tool killed by its idle timer.
var errToolIdle = errors.New("no progress")

// toolError is a tool that ran and failed: its exit status and the end of
// its stderr, which is where the tools say what was wrong with the input.
type toolError struct {
	tool   string
	code   int // -1: killed by a signal
	stderr string
	idle   time.Duration // set when killed by the idle timer
}

func (e *toolError) Error() string {
	var s string
	switch {
	case e.idle > 0:
		s = fmt.Sprintf("%s: killed after %s without progress (the page timeout)", e.tool, e.idle)
	case e.code < 0:
		s = e.tool + ": killed by a signal"
	default:
		s = fmt.Sprintf("%s: exit status %d", e.tool, e.code)
	}
	if e.stderr != "" {
		s += ": " + e.stderr
	}
	return s
}

// toolWaitDelay bounds the wait for a tool's pipes after it exited or was
// killed, in case something it started keeps them open.
const toolWaitDelay = time.Second

// runTool runs p and waits for it. The tool runs in its own process group,
// killed whole when ctx ends or the idle timer fires: tesseract and
// pdftoppm start no children, but whatever a wrapper script starts must not
// outlive the job either. It returns what the tool said on stderr besides
// progress, and a *toolError when the tool failed, or ctx's cause
// (wrapped) when ctx ended first.
func runTool(ctx context.Context, p toolRun) ([]string, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cmd := osexec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = p.dir
	if len(p.env) > 0 {
		cmd.Env = append(cmd.Environ(), p.env...)
	}
	cmd.Stdout = p.stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = toolWaitDelay
	tail := &stderrLines{max: toolStderrTail}
	cmd.Stderr = tail

	var timer *time.Timer
	if p.idle > 0 {
		timer = time.AfterFunc(p.idle, func() { cancel(errToolIdle) })
		defer timer.Stop()
	}
	tail.line = func(s string) bool {
		if p.line == nil || !p.line(s) {
			return false
		}
		if timer != nil {
			timer.Reset(p.idle)
		}
		return true
	}

	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.argv[0], err)
	}
	// CommandContext would kill the leader only; the whole group goes.
	stopped := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			killToolGroup(cmd.Process.Pid)
		case <-stopped:
		}
	}()
	err := cmd.Wait()
	close(stopped)
	<-watched
	killToolGroup(cmd.Process.Pid) // leftovers of a finished tool
	tail.flush()

	name := filepath.Base(p.argv[0])
	said := tail.lines()
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), errToolIdle) {
			return said, &toolError{tool: name, code: -1, stderr: tail.String(), idle: p.idle}
		}
		return said, fmt.Errorf("%s: %w", name, context.Cause(ctx))
	}
	var ee *osexec.ExitError
	if errors.As(err, &ee) {
		return said, &toolError{tool: name, code: ee.ExitCode(), stderr: tail.String()}
	}
	// ErrWaitDelay: the tool exited, something it left held its stderr.
	if err != nil && !errors.Is(err, osexec.ErrWaitDelay) {
		return said, fmt.Errorf("run %s: %w", name, err)
	}
	return said, nil
}

func killToolGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// toolStderrTail and toolStderrLines bound what is kept of a tool's stderr
// for its error message: the last few lines, which say what went wrong,
// not a log of complaints about every byte of a damaged file.
const (
	toolStderrTail  = 512
	toolStderrLines = 4
)

// stderrLines splits what a tool writes on stderr into lines, hands each
// to line, and keeps the last of the others for the error message, without
// repeating a line the tool printed several times in a row (poppler
// repeats its complaints once per attempt to read a damaged table).
type stderrLines struct {
	max     int // bytes kept
	line    func(string) bool
	partial []byte
	mu      sync.Mutex
	kept    []string
	cut     bool
}

func (w *stderrLines) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(w.partial) < w.max {
				w.partial = append(w.partial, p[:min(len(p), w.max-len(w.partial))]...)
			}
			break
		}
		w.partial = append(w.partial, p[:i]...)
		w.emit()
		p = p[i+1:]
	}
	return n, nil
}

// flush emits a last line without a newline. It is called once the tool
// has exited and its stderr is drained.
func (w *stderrLines) flush() {
	if len(w.partial) > 0 {
		w.emit()
	}
}

func (w *stderrLines) emit() {
	s := strings.TrimSpace(strings.ToValidUTF8(string(w.partial), ""))
	w.partial = w.partial[:0]
	if s == "" || w.line != nil && w.line(s) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.kept) > 0 && w.kept[len(w.kept)-1] == s {
		return
	}
	if len(w.kept) == toolStderrLines {
		w.kept = append(w.kept[:0], w.kept[1:]...)
		w.cut = true
	}
	w.kept = append(w.kept, s)
}

// String gives the kept lines, joined on one line: they end up in a job's
// error message.
func (w *stderrLines) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := strings.Join(w.kept, "; ")
	cut := w.cut
	if len(s) > w.max {
		s = strings.ToValidUTF8(s[len(s)-w.max:], "")
		cut = true
	}
	if cut {
		s = "…" + s
	}
	return s
}

// lines gives the kept lines: the warnings of a tool that succeeded.
func (w *stderrLines) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.kept...)
}
