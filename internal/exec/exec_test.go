package exec

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type progressCall struct {
	cur, total int64
	msg        string
}

type fileCall struct {
	name, contentType, path string
}

// fakeTask records what Run hands it. Taken files are renamed into its own
// folder, as the engine's task does, since Run removes its work dir.
type fakeTask struct {
	t         *testing.T
	input     []byte
	inputName string
	dir       string

	mu         sync.Mutex
	progress   []progressCall
	onProgress func(progressCall)
	result     *fileCall
	artifacts  []fileCall
	taken      int
}

func newFakeTask(t *testing.T, input string) *fakeTask {
	return &fakeTask{t: t, input: []byte(input), dir: t.TempDir()}
}

func (f *fakeTask) ID() string   { return "job-42" }
func (f *fakeTask) Attempt() int { return 3 }
func (f *fakeTask) OpenInput(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(f.input)), nil
}
func (f *fakeTask) InputName() string { return f.inputName }

func (f *fakeTask) Progress(cur, total int64, msg string) {
	p := progressCall{cur, total, msg}
	f.mu.Lock()
	f.progress = append(f.progress, p)
	cb := f.onProgress
	f.mu.Unlock()
	if cb != nil {
		cb(p)
	}
}

func (f *fakeTask) take(path string) (string, error) {
	f.mu.Lock()
	f.taken++
	dst := filepath.Join(f.dir, strconv.Itoa(f.taken)+"-"+filepath.Base(path))
	f.mu.Unlock()
	return dst, os.Rename(path, dst)
}

func (f *fakeTask) SetResultFile(contentType, path string) error {
	dst, err := f.take(path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.result != nil {
		f.t.Errorf("SetResultFile called twice")
	}
	f.result = &fileCall{contentType: contentType, path: dst}
	return nil
}

func (f *fakeTask) AddArtifactFile(name, contentType, path string) error {
	dst, err := f.take(path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.artifacts = append(f.artifacts, fileCall{name, contentType, dst})
	return nil
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func shell(script string, args ...string) []string {
	return append([]string{"sh", "-c", script, "sh"}, args...)
}

func TestRunResult(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", maxLine+100)
	tests := []struct {
		name         string
		script       string
		resultType   string
		wantResult   *string // nil: no result
		wantType     string
		wantProgress []progressCall
	}{
		{
			name:       "plain",
			script:     `printf 'a\nb\n'`,
			wantResult: ptr("a\nb\n"),
			wantType:   "text/plain; charset=utf-8",
		},
		{
			name:   "progress removed",
			script: `printf 'progress 1/3 one\nline1\n0.5\ttwo\n{"progress":0.75}\n{"current":2,"total":3,"message":"m"}\n  line2\nprogress 5'`,
			// The last line has no newline and is still progress.
			wantResult: ptr("line1\n  line2\n"),
			wantType:   "text/plain; charset=utf-8",
			wantProgress: []progressCall{
				{1, 3, "one"}, {500, 1000, "two"}, {750, 1000, ""}, {2, 3, "m"}, {5, 0, ""},
			},
		},
		{
			name:         "final line without newline",
			script:       `printf 'a\nprogress 1/2\nb'`,
			wantResult:   ptr("a\nb"),
			wantType:     "text/plain; charset=utf-8",
			wantProgress: []progressCall{{1, 2, ""}},
		},
		{
			name:         "crlf kept",
			script:       `printf 'x\r\nprogress 1/2\r\ny\r\n'`,
			wantResult:   ptr("x\r\ny\r\n"),
			wantType:     "text/plain; charset=utf-8",
			wantProgress: []progressCall{{1, 2, ""}},
		},
		{
			name:       "other json is data",
			script:     `printf '{"a":1}\n{"progress":"x"}\n'`,
			wantResult: ptr("{\"a\":1}\n{\"progress\":\"x\"}\n"),
			wantType:   "text/plain; charset=utf-8",
		},
		{
			name:         "long line then progress",
			script:       `printf '%s\nprogress 1/2\n' "$1"`,
			wantResult:   ptr(long + "\n"),
			wantType:     "text/plain; charset=utf-8",
			wantProgress: []progressCall{{1, 2, ""}},
		},
		{
			// The tail of a long line looks like progress but is data.
			name:       "progress inside long line",
			script:     `printf '%.65536sprogress 1/2\n' "$1"`,
			wantResult: ptr(long[:maxLine] + "progress 1/2\n"),
			wantType:   "text/plain; charset=utf-8",
		},
		{
			name:       "binary",
			script:     `printf '\000\001\002\n\377'`,
			wantResult: ptr("\x00\x01\x02\n\xff"),
			wantType:   "application/octet-stream",
		},
		{
			name:       "result type configured",
			script:     `printf 'a,b\n'`,
			resultType: "text/csv",
			wantResult: ptr("a,b\n"),
			wantType:   "text/csv",
		},
		{
			name:         "no output no result",
			script:       `echo progress 1/1`,
			wantProgress: []progressCall{{1, 1, ""}},
		},
		{
			name:       "DOCKET_RESULT wins",
			script:     `echo log line; printf '<html><body>hi</body></html>' > "$DOCKET_RESULT"`,
			wantResult: ptr("<html><body>hi</body></html>"),
			wantType:   "text/html; charset=utf-8",
		},
		{
			name:       "empty DOCKET_RESULT is a result",
			script:     `echo log line; : > "$DOCKET_RESULT"`,
			resultType: "application/json",
			wantResult: ptr(""),
			wantType:   "application/json",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task := newFakeTask(t, "")
			c := &Command{Argv: shell(tt.script, long), ResultType: tt.resultType, Dir: t.TempDir()}
			if err := c.Run(context.Background(), task); err != nil {
				t.Fatalf("Run: %v", err)
			}
			switch {
			case tt.wantResult == nil && task.result != nil:
				t.Errorf("got result %q, want none", readFile(t, task.result.path))
			case tt.wantResult != nil && task.result == nil:
				t.Errorf("got no result, want %q", *tt.wantResult)
			case tt.wantResult != nil:
				if got := readFile(t, task.result.path); got != *tt.wantResult {
					t.Errorf("result = %.200q, want %.200q", got, *tt.wantResult)
				}
				if task.result.contentType != tt.wantType {
					t.Errorf("content type = %q, want %q", task.result.contentType, tt.wantType)
				}
			}
			if fmt.Sprint(task.progress) != fmt.Sprint(tt.wantProgress) {
				t.Errorf("progress = %v, want %v", task.progress, tt.wantProgress)
			}
			assertNoWorkDirs(t, c.Dir)
		})
	}
}

func ptr(s string) *string { return &s }

func assertNoWorkDirs(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in work dir: %s", e.Name())
	}
}

func TestRunEnvironmentAndInput(t *testing.T) {
	t.Setenv("DOCKET_TEST_PARENT", "from-parent")
	task := newFakeTask(t, "input contents\n")
	task.inputName = "../My Report.PDF"
	script := `printf '%s\n' "$DOCKET_JOB_ID" "$DOCKET_ATTEMPT" "$DOCKET_INPUT" "$DOCKET_OUTPUT" "$DOCKET_RESULT" "$DOCKET_TEST_PARENT" "$EXTRA" "$1" "$2"; cat "$DOCKET_INPUT"`
	c := &Command{
		Argv: shell(script, "--in={input}", "{output}"),
		// DOCKET_* set by the executor must win over configured ones.
		Env: []string{"EXTRA=configured", "DOCKET_JOB_ID=spoofed"},
		Dir: t.TempDir(),
	}
	if err := c.Run(context.Background(), task); err != nil {
		t.Fatalf("Run: %v", err)
	}
	lines := strings.Split(readFile(t, task.result.path), "\n")
	if len(lines) != 11 {
		t.Fatalf("output lines = %q", lines)
	}
	id, attempt, input, output, result := lines[0], lines[1], lines[2], lines[3], lines[4]
	if id != "job-42" || attempt != "3" {
		t.Errorf("DOCKET_JOB_ID, DOCKET_ATTEMPT = %q, %q", id, attempt)
	}
	if !filepath.IsAbs(input) || filepath.Base(input) != "input.PDF" {
		t.Errorf("DOCKET_INPUT = %q, want absolute path to input.PDF", input)
	}
	if !filepath.IsAbs(output) || !filepath.IsAbs(result) || strings.HasPrefix(result, output+"/") {
		t.Errorf("DOCKET_OUTPUT, DOCKET_RESULT = %q, %q", output, result)
	}
	if lines[5] != "from-parent" || lines[6] != "configured" {
		t.Errorf("inherited, extra env = %q, %q", lines[5], lines[6])
	}
	if lines[7] != "--in="+input || lines[8] != output {
		t.Errorf("substituted args = %q, %q; want --in=%s, %s", lines[7], lines[8], input, output)
	}
	if lines[9] != "input contents" {
		t.Errorf("input file contents = %q", lines[9])
	}
	assertNoWorkDirs(t, c.Dir)
}

func TestRunArtifacts(t *testing.T) {
	t.Parallel()
	task := newFakeTask(t, "")
	script := `cd "$DOCKET_OUTPUT" &&
		printf '{"a":1}' > data.json &&
		printf '%%PDF-1.4 x' > report &&
		echo x > .hidden &&
		echo x > 'bad name.txt' &&
		echo x > 'caf\303\251.txt' &&
		mkdir sub && echo x > sub/inner.txt &&
		ln -s data.json link.json &&
		mkfifo pipe`
	c := &Command{Argv: shell(script), Dir: t.TempDir()}
	if err := c.Run(context.Background(), task); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []struct{ name, contentType, content string }{
		{"data.json", "application/json", `{"a":1}`},
		{"report", "application/pdf", "%PDF-1.4 x"},
	}
	if len(task.artifacts) != len(want) {
		t.Fatalf("artifacts = %v, want %v", task.artifacts, want)
	}
	for i, w := range want {
		a := task.artifacts[i]
		if a.name != w.name || a.contentType != w.contentType {
			t.Errorf("artifact %d = %s (%s), want %s (%s)", i, a.name, a.contentType, w.name, w.contentType)
		}
		if got := readFile(t, a.path); got != w.content {
			t.Errorf("artifact %s content = %q, want %q", a.name, got, w.content)
		}
	}
	if task.result != nil {
		t.Errorf("unexpected result")
	}
}

func TestRunExitError(t *testing.T) {
	t.Parallel()
	manyLines := `i=0; while [ $i -lt 2000 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 3`
	tests := []struct {
		name       string
		script     string
		tail       int
		wantCode   int
		wantStderr string // exact, or suffix when maxLen > 0
		maxLen     int
	}{
		{name: "short", script: `echo out; echo '  boom  ' >&2; exit 2`, wantCode: 2, wantStderr: "boom"},
		{name: "no stderr", script: `exit 1`, wantCode: 1},
		{name: "killed by signal", script: `kill -9 $$`, wantCode: -1},
		{name: "long stderr", script: manyLines, wantCode: 3, wantStderr: "line 1999", maxLen: 4096},
		{name: "custom tail", script: manyLines, tail: 40, wantCode: 3, wantStderr: "line 1999", maxLen: 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task := newFakeTask(t, "")
			c := &Command{Argv: shell(tt.script), StderrTail: tt.tail, Dir: t.TempDir()}
			err := c.Run(context.Background(), task)
			var ee *ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("Run error = %v, want *ExitError", err)
			}
			if ee.Code != tt.wantCode {
				t.Errorf("Code = %d, want %d", ee.Code, tt.wantCode)
			}
			if tt.maxLen == 0 {
				if ee.Stderr != tt.wantStderr {
					t.Errorf("Stderr = %q, want %q", ee.Stderr, tt.wantStderr)
				}
			} else {
				if len(ee.Stderr) > tt.maxLen || !strings.HasSuffix(ee.Stderr, tt.wantStderr) {
					t.Errorf("Stderr (%d bytes) = ...%q, want at most %d bytes ending in %q",
						len(ee.Stderr), ee.Stderr[max(0, len(ee.Stderr)-50):], tt.maxLen, tt.wantStderr)
				}
				// Cut at a line boundary: every line is whole.
				for _, l := range strings.Split(ee.Stderr, "\n") {
					if _, err := strconv.Atoi(strings.TrimPrefix(l, "line ")); err != nil {
						t.Errorf("partial line %q in stderr tail", l)
					}
				}
			}
			if task.result != nil || len(task.artifacts) > 0 {
				t.Errorf("failed command handed result or artifacts")
			}
			assertNoWorkDirs(t, c.Dir)
		})
	}
	t.Run("message", func(t *testing.T) {
		for _, tt := range []struct {
			err  ExitError
			want string
		}{
			{ExitError{Code: 2, Stderr: "boom"}, "exit status 2: boom"},
			{ExitError{Code: 1}, "exit status 1"},
			{ExitError{Code: -1, Stderr: "x"}, "killed by signal: x"},
		} {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		}
	})
}

func TestRunStartError(t *testing.T) {
	t.Parallel()
	c := &Command{Argv: []string{"/nonexistent/docket-command"}, Dir: t.TempDir()}
	err := c.Run(context.Background(), newFakeTask(t, ""))
	var ee *ExitError
	if err == nil || errors.As(err, &ee) {
		t.Fatalf("Run error = %v, want a start error", err)
	}
	if err := (&Command{}).Run(context.Background(), newFakeTask(t, "")); err == nil {
		t.Fatal("Run with empty argv succeeded")
	}
}

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"fits", 10, []string{"ab", "cd\n"}, "abcd"},
		{"cut at line", 10, []string{"aaaa\nbbb\ncc\n"}, "bbb\ncc"},
		{"cut over writes", 8, []string{"xxxx\n", "yy\n", "zz\n"}, "yy\nzz"},
		{"no line boundary", 4, []string{"abcdefgh"}, "efgh"},
		{"only last newline", 5, []string{"abcdefg\n"}, "defg"},
		{"invalid utf8 dropped", 4, []string{"é€"}, "€"},
	}
	for _, tt := range tests {
		b := &tailBuffer{max: tt.max}
		for _, w := range tt.writes {
			if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
				t.Fatalf("%s: Write = %d, %v", tt.name, n, err)
			}
		}
		if len(b.buf) > tt.max {
			t.Errorf("%s: kept %d bytes, max %d", tt.name, len(b.buf), tt.max)
		}
		if got := b.String(); got != tt.want {
			t.Errorf("%s: String() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"a":                      true,
		"report-1_final.v2.pdf":  true,
		"A.B":                    true,
		strings.Repeat("a", 255): true,
		strings.Repeat("a", 256): false,
		"":                       false,
		".hidden":                false,
		"..":                     false,
		"a b":                    false,
		"a/b":                    false,
		"café":                   false,
		"a\x00":                  false,
	} {
		if got := validName(name); got != want {
			t.Errorf("validName(%.20q) = %v, want %v", name, got, want)
		}
	}
}

func TestInputExt(t *testing.T) {
	for name, want := range map[string]string{
		"":                         "",
		"report.pdf":               ".pdf",
		"archive.tar.gz":           ".gz",
		"dir.d/noext":              "",
		"../../etc/passwd":         "",
		"x.$(rm -rf)":              "",
		"x.p df":                   "",
		"x." + "abcdefghijklmnopq": "",
		"x.":                       "",
		"photo.JPEG":               ".JPEG",
	} {
		if got := inputExt(name); got != want {
			t.Errorf("inputExt(%q) = %q, want %q", name, got, want)
		}
	}
}

// procs lists live (non-zombie) processes that are in process group pgid or
// have marker in their command line.
func procs(t *testing.T, pgid int, marker string) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, d := range dirs {
		stat, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue // gone
		}
		// Fields after the parenthesized command: state ppid pgrp ...
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(d + "/cmdline")
		if f[2] == strconv.Itoa(pgid) || bytes.Contains(cmdline, []byte(marker)) {
			found = append(found, fmt.Sprintf("%s %q", d, bytes.ReplaceAll(cmdline, []byte{0}, []byte(" "))))
		}
	}
	return found
}

// assertAllGone waits up to 2s for every process of the group or with the
// marker to die; SIGKILL is asynchronous.
func assertAllGone(t *testing.T, pgid int, marker string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := procs(t, pgid, marker)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes still running: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newMarker() string {
	return fmt.Sprintf("docket-exec-test-%d-%s", os.Getpid(), rand.Text())
}

// groupScript starts two background children, reports the group id ($$ of
// the leader, thanks to Setpgid) as progress, and waits for them.
const groupScript = `(sleep 300; true) & (sleep 300; true) & echo "progress 0/1 $$"; wait`

func TestRunKillsGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		cancel  bool // cancel once the command reported its group
		wantErr error
	}{
		{
			name:    "cancel",
			ctx:     func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			cancel:  true,
			wantErr: context.Canceled,
		},
		{
			name: "timeout",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), time.Second)
			},
			wantErr: context.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			marker := newMarker()
			ctx, cancel := tt.ctx()
			defer cancel()
			task := newFakeTask(t, "")
			if tt.cancel {
				task.onProgress = func(progressCall) { cancel() }
			}
			c := &Command{Argv: []string{"sh", "-c", groupScript, marker}, Dir: t.TempDir()}
			start := time.Now()
			err := c.Run(ctx, task)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run error = %v, want %v", err, tt.wantErr)
			}
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != -1 {
				t.Errorf("Run error = %v, want it to wrap a killed ExitError", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Run took %v", d)
			}
			if len(task.progress) != 1 {
				t.Fatalf("progress = %v, want the group id", task.progress)
			}
			pgid, err := strconv.Atoi(task.progress[0].msg)
			if err != nil {
				t.Fatal(err)
			}
			assertAllGone(t, pgid, marker)
			assertNoWorkDirs(t, c.Dir)
		})
	}
}

// A background process holding stdout must not keep Run waiting once the
// command itself has exited, and must not outlive the job.
func TestRunLeftoverHoldingStdout(t *testing.T) {
	t.Parallel()
	marker := newMarker()
	task := newFakeTask(t, "")
	script := `(sleep 300; true) & echo "progress 0/1 $$"; echo done`
	c := &Command{Argv: []string{"sh", "-c", script, marker}, Dir: t.TempDir()}
	start := time.Now()
	if err := c.Run(context.Background(), task); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v", d)
	}
	if task.result == nil || readFile(t, task.result.path) != "done\n" {
		t.Errorf("result = %v, want done", task.result)
	}
	pgid, err := strconv.Atoi(task.progress[0].msg)
	if err != nil {
		t.Fatal(err)
	}
	assertAllGone(t, pgid, marker)
}

// A 100 MiB result goes through files, not memory.
func TestRunLargeResultStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB of output")
	}
	// Not parallel: TotalAlloc counts every goroutine's allocations.
	const size = 100 << 20
	tests := []struct{ name, script string }{
		{"one huge line", `head -c 104857600 /dev/zero | tr '\0' 'a'`},
		{"many lines", `yes 'a line of result text, long enough to keep the test quick...' | head -c 104857600`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := newFakeTask(t, "")
			c := &Command{Argv: shell(tt.script), Dir: t.TempDir()}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			if err := c.Run(context.Background(), task); err != nil {
				t.Fatalf("Run: %v", err)
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 20<<20 {
				t.Errorf("allocated %d MiB for a %d MiB result", grew>>20, size>>20)
			}
			if task.result == nil {
				t.Fatal("no result")
			}
			fi, err := os.Stat(task.result.path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != size {
				t.Errorf("result size = %d, want %d", fi.Size(), size)
			}
		})
	}
}
