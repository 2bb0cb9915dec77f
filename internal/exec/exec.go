// Package exec runs a job as an external program: the command gets the job's
// input as a file and an output folder, reports progress on stdout, and its
// stdout (or the file named by $DOCKET_RESULT) and output files become the
// job's result and artifacts.
//
// Output is streamed through files in a per-job work directory and never held
// in memory, because results may be hundreds of megabytes. The command runs
// in its own process group so that it and everything it started can be killed
// together when the job is canceled or times out.
package exec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Task is what a command needs from the running job; the engine's task
// satisfies it.
//
// Progress is called from a goroutine other than the one calling Run, but
// never concurrently with itself and never after Run returns.
//
// SetResultFile and AddArtifactFile take ownership of the file at path: the
// task may rename it, and must move or copy it before returning, because Run
// removes the work directory holding it once the task has taken its files.
type Task interface {
	ID() string
	Attempt() int
	OpenInput(ctx context.Context) (io.ReadCloser, error)
	// InputName is the input's original filename, or "". Only its extension
	// is used, so that commands which look at file types see input.pdf.
	InputName() string
	Progress(current, total int64, message string)
	SetResultFile(contentType, path string) error
	AddArtifactFile(name, contentType, path string) error
}

// Command runs one external program per job, as configured for a queue.
// The zero values of the optional fields are usable defaults, and a Command
// may run many jobs concurrently.
type Command struct {
	// Argv is executed directly, never through a shell, so job data cannot
	// inject shell syntax. "{input}" and "{output}" anywhere in an element
	// are replaced by the input file path and the output folder path.
	Argv []string
	// ResultType is the result's content type; "" sniffs the first 512
	// bytes, which suits commands whose output type varies.
	ResultType string
	// Env holds extra KEY=VALUE entries added to the inherited environment.
	// The DOCKET_* variables are set last and cannot be overridden.
	Env []string
	// Dir is where per-job work directories are created; "" means
	// os.TempDir(). Results are moved out of it, so putting it on the same
	// file system as the job storage avoids copying large files.
	Dir string
	// StderrTail is how many trailing bytes of stderr are kept for the error
	// message; the end of stderr is where programs explain why they failed.
	// 0 means 4096.
	StderrTail int
}

// ExitError is returned when the command exits non-zero or is killed, so
// callers can tell a failed job apart from a failure to run it.
type ExitError struct {
	// Code is the exit status, or -1 if the command was killed by a signal.
	Code int
	// Stderr is the trimmed tail of the command's stderr.
	Stderr string
}

// Error gives "exit status N: <stderr tail>", which is meant to be shown to
// users as the job's error message.
func (e *ExitError) Error() string {
	s := "exit status " + strconv.Itoa(e.Code)
	if e.Code < 0 {
		s = "killed by signal"
	}
	if e.Stderr != "" {
		s += ": " + e.Stderr
	}
	return s
}

const (
	defaultStderrTail = 4096
	// maxLine is the longest line that can be a progress line; longer lines
	// are passed to the result in pieces.
	maxLine = 64 << 10
	// waitDelay bounds how long Run waits for stdout and stderr to close
	// after the command exits or is killed, since a background process may
	// keep them open forever.
	waitDelay = time.Second
)

// Run runs the command for one job and hands its result and artifacts to t.
// It returns an *ExitError if the command fails, and an error wrapping
// ctx.Err() if ctx ends first, after killing the command's process group.
// Processes the command left running in its group are killed when it exits,
// since a job owns no processes after it finished.
func (c *Command) Run(ctx context.Context, t Task) error {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return errors.New("command: empty argv")
	}
	parent := c.Dir
	if parent == "" {
		parent = os.TempDir()
	}
	// The command may run in another directory than ours, so give it
	// absolute paths.
	parent, err := filepath.Abs(parent)
	if err != nil {
		return fmt.Errorf("command work dir: %w", err)
	}
	work, err := os.MkdirTemp(parent, "job-*")
	if err != nil {
		return fmt.Errorf("command work dir: %w", err)
	}
	defer os.RemoveAll(work)

	var (
		input      = filepath.Join(work, "input"+inputExt(t.InputName()))
		output     = filepath.Join(work, "output")
		resultFile = filepath.Join(work, "result")
		stdoutFile = filepath.Join(work, "stdout")
	)
	if err := copyInput(ctx, t, input); err != nil {
		return err
	}
	if err := os.Mkdir(output, 0o755); err != nil {
		return fmt.Errorf("command output dir: %w", err)
	}

	// One pass, so a path containing "{output}" is not replaced again.
	r := strings.NewReplacer("{input}", input, "{output}", output)
	argv := make([]string, len(c.Argv))
	for i, a := range c.Argv {
		argv[i] = r.Replace(a)
	}
	cmd := osexec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Env = append(cmd.Env,
		"DOCKET_JOB_ID="+t.ID(),
		"DOCKET_ATTEMPT="+strconv.Itoa(t.Attempt()),
		"DOCKET_INPUT="+input,
		"DOCKET_OUTPUT="+output,
		"DOCKET_RESULT="+resultFile,
	)
	if tp, ok := t.(interface{ Traceparent() string }); ok && tp.Traceparent() != "" {
		// The W3C trace context of the request that submitted the job, for
		// commands that report to the same trace.
		cmd.Env = append(cmd.Env, "TRACEPARENT="+tp.Traceparent())
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var killed atomic.Bool
	cmd.Cancel = func() error {
		killed.Store(true)
		return killGroup(cmd.Process.Pid)
	}
	cmd.WaitDelay = waitDelay
	stderr := &tailBuffer{max: c.StderrTail}
	if stderr.max <= 0 {
		stderr.max = defaultStderrTail
	}
	cmd.Stderr = stderr

	out, err := os.Create(stdoutFile)
	if err != nil {
		return fmt.Errorf("command stdout file: %w", err)
	}
	defer out.Close()
	// A non-file Stdout makes exec copy through its own pipe, which
	// WaitDelay can close; the io.Pipe lets us read it line by line.
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	parsed := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(out, maxLine)
		err := splitStdout(pr, bw, t)
		if err == nil {
			err = bw.Flush()
		}
		// Unblocks exec's copy if we stopped early.
		pr.CloseWithError(err)
		parsed <- err
	}()
	waitErr := cmd.Wait()
	pw.Close()
	parseErr := <-parsed
	_ = killGroup(cmd.Process.Pid) // leftovers of a finished command

	if killed.Load() {
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return fmt.Errorf("run %s: %w: %w", argv[0], ctx.Err(), &ExitError{Code: code, Stderr: stderr.String()})
	}
	var ee *osexec.ExitError
	if errors.As(waitErr, &ee) {
		return &ExitError{Code: ee.ExitCode(), Stderr: stderr.String()}
	}
	if parseErr != nil {
		return fmt.Errorf("read stdout of %s: %w", argv[0], parseErr)
	}
	// ErrWaitDelay only means a leftover process held stdout or stderr
	// open after the command itself succeeded.
	if waitErr != nil && !errors.Is(waitErr, osexec.ErrWaitDelay) {
		return fmt.Errorf("run %s: %w", argv[0], waitErr)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("command stdout file: %w", err)
	}
	if err := c.handResult(t, resultFile, stdoutFile); err != nil {
		return err
	}
	return handArtifacts(t, output)
}

// copyInput gives the command its input as a file, since most programs
// want a path rather than a stream.
func copyInput(ctx context.Context, t Task, path string) error {
	rc, err := t.OpenInput(ctx)
	if err != nil {
		return fmt.Errorf("open input: %w", err)
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create input file: %w", err)
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy input: %w", err)
	}
	return nil
}

// splitStdout copies r to w without the progress lines, which go to t.
func splitStdout(r io.Reader, w io.Writer, t Task) error {
	br := bufio.NewReaderSize(r, maxLine)
	long := false // in a line longer than the buffer: all of it is result data
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = true
			if _, err := w.Write(line); err != nil {
				return err
			}
			continue
		}
		if len(line) > 0 {
			cur, total, msg, ok := ParseProgress(line)
			if ok && !long {
				t.Progress(cur, total, msg)
			} else if _, err := w.Write(line); err != nil {
				return err
			}
		}
		long = false
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// handResult prefers the $DOCKET_RESULT file, which lets a command use
// stdout for logging; otherwise non-empty stdout is the result.
func (c *Command) handResult(t Task, resultFile, stdoutFile string) error {
	path := resultFile
	fi, err := os.Lstat(resultFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		path = stdoutFile
		fi, err = os.Stat(stdoutFile)
		if err != nil {
			return fmt.Errorf("command result: %w", err)
		}
		if fi.Size() == 0 {
			return nil
		}
	case err != nil:
		return fmt.Errorf("command result: %w", err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("command result: $DOCKET_RESULT is not a regular file")
	}
	ct := c.ResultType
	if ct == "" {
		if ct, err = sniff(path); err != nil {
			return fmt.Errorf("command result: %w", err)
		}
	}
	if err := t.SetResultFile(ct, path); err != nil {
		return fmt.Errorf("set result: %w", err)
	}
	return nil
}

// handArtifacts collects the regular files the command left at the top of
// the output folder. Anything else (folders, symlinks that may point outside
// the work dir, names unfit for URLs) is skipped rather than failing a job
// whose main work succeeded.
func handArtifacts(t Task, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read output dir: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !validName(name) {
			continue
		}
		path := filepath.Join(dir, name)
		ct := mime.TypeByExtension(filepath.Ext(name))
		if ct == "" {
			if ct, err = sniff(path); err != nil {
				return fmt.Errorf("artifact %s: %w", name, err)
			}
		}
		if err := t.AddArtifactFile(name, ct, path); err != nil {
			return fmt.Errorf("add artifact %s: %w", name, err)
		}
	}
	return nil
}

// sniff guesses a content type from the first 512 bytes, as browsers do.
func sniff(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var buf [512]byte
	n, err := io.ReadFull(f, buf[:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return "", err
	}
	return http.DetectContentType(buf[:n]), nil
}

// validName reports whether name is usable as an artifact name as is: in
// URLs, on any file system, and never hidden.
func validName(name string) bool {
	if len(name) == 0 || len(name) > 255 || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// inputExt returns the extension of the input's original name if it is
// short and alphanumeric; the name itself comes from users and is not
// trusted anywhere near a path.
func inputExt(name string) string {
	ext := filepath.Ext(name)
	if len(ext) < 2 || len(ext) > 16 {
		return ""
	}
	for i := 1; i < len(ext); i++ {
		c := ext[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return ""
		}
	}
	return ext
}

// killGroup kills the whole process group led by pid: killing only the
// leader would leave its children running and holding the job's pipes.
func killGroup(pid int) error {
	if pid <= 0 {
		return nil
	}
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// tailBuffer keeps the last max bytes written, so a chatty command cannot
// grow memory while the end of its stderr is still kept.
type tailBuffer struct {
	max       int
	buf       []byte
	truncated bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > b.max {
		p = p[len(p)-b.max:]
		b.truncated = true
	}
	if drop := len(b.buf) + len(p) - b.max; drop > 0 {
		b.buf = b.buf[:copy(b.buf, b.buf[drop:])]
		b.truncated = true
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

// String returns the kept tail, starting at a line boundary if it was cut
// and a whole line remains, so messages do not begin mid-word.
func (b *tailBuffer) String() string {
	s := b.buf
	if b.truncated {
		if i := bytes.IndexByte(s, '\n'); i >= 0 && len(bytes.TrimSpace(s[i+1:])) > 0 {
			s = s[i+1:]
		}
	}
	return strings.ToValidUTF8(string(bytes.TrimSpace(s)), "")
}
