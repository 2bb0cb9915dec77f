package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/sqlite"
)

// crashChildEnv, when set to a data directory, turns the test binary into a
// docket node serving the crash queue on that directory: a process the
// crash test can kill with SIGKILL, which no in-process engine can stand
// in for (a dead process runs no deferred code, flushes nothing and leaves
// its leases behind).
const crashChildEnv = "DOCKET_CRASH_CHILD"

const (
	crashQueueName   = "crash"
	crashMaxAttempts = 5
	crashJobs        = 200
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		runCrashChild(dir)
		os.Exit(3) // unreachable: the child ends by being killed
	}
	os.Exit(m.Run())
}

// crashOptions are the engine settings of every node of the crash test, so
// that the restarted node is the same as the killed ones. The lease is short
// so that a dead node's jobs come back within a second.
func crashOptions(st store.Store, worker, tempDir string, log *slog.Logger) engine.Options {
	return engine.Options{
		Store:       st,
		Logger:      log,
		Worker:      worker,
		Lease:       time.Second,
		Poll:        20 * time.Millisecond,
		RescueEvery: 200 * time.Millisecond,
		BackoffBase: 10 * time.Millisecond,
		BackoffMax:  50 * time.Millisecond,
		TempDir:     tempDir,
	}
}

func crashQueue() engine.Queue {
	return engine.Queue{Name: crashQueueName, Concurrency: 4, MaxAttempts: crashMaxAttempts,
		Handler: engine.HandlerFunc(crashWork)}
}

// crashWork always succeeds, after a pause long enough for a kill to catch
// jobs in flight. Its result names the attempt that made it, so that a
// stored result can be traced to the attempt the store counted.
func crashWork(ctx context.Context, tk *engine.Task) error {
	rc, err := tk.OpenInput(ctx)
	if err != nil {
		return err
	}
	in, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return err
	}
	tk.Progress(1, 2, "started")
	select {
	case <-time.After(crashDelay(in)):
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	tk.Progress(2, 2, "done")
	tk.SetResult("text/plain", crashResult(in, tk.Attempt()))
	return nil
}

// crashDelay spreads run times over 100–250 ms so that workers do not
// finish in lockstep and a kill always finds some of them busy.
func crashDelay(in []byte) time.Duration {
	return 100*time.Millisecond + time.Duration(crc32.ChecksumIEEE(in)%150)*time.Millisecond
}

func crashResult(in []byte, attempt int) []byte {
	return fmt.Appendf(nil, "%s#%d", bytes.ToUpper(in), attempt)
}

func crashWorker(pid int) string { return fmt.Sprintf("crash-child-%d", pid) }

// runCrashChild serves the crash queue until the process is killed. It also
// exits when its standard input closes, which happens when the test process
// dies, so that a crashed or timed-out test leaves no node behind.
func runCrashChild(dir string) {
	exit := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "crash child: "+format+"\n", args...)
		os.Exit(2)
	}
	time.AfterFunc(2*time.Minute, func() { exit("still alive after 2m") })
	st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: dir})
	if err != nil {
		exit("open store: %v", err)
	}
	tmp, err := os.MkdirTemp(dir, "tmp-")
	if err != nil {
		exit("temp dir: %v", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	e, err := engine.New(crashOptions(st, crashWorker(os.Getpid()), tmp, log))
	if err != nil {
		exit("engine: %v", err)
	}
	if err := e.AddQueue(crashQueue()); err != nil {
		exit("queue: %v", err)
	}
	if err := e.Start(); err != nil {
		exit("start: %v", err)
	}
	io.Copy(io.Discard, os.Stdin)
	exit("standard input closed")
}

// crashChild is a node process of the crash test.
type crashChild struct {
	cmd  *exec.Cmd
	out  bytes.Buffer // stdout and stderr; read only once done is closed
	done chan struct{}
	err  error // of Wait; set once done is closed

	checked bool // its output was searched for race reports
}

func startCrashChild(t *testing.T, dir string) *crashChild {
	t.Helper()
	c := &crashChild{done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$")
	c.cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	// The write end stays open in this process for the child's lifetime;
	// see runCrashChild.
	if _, err := c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() { c.kill(t) })
	return c
}

func (c *crashChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone, so that the
// store holds exactly what it had committed.
func (c *crashChild) kill(t *testing.T) {
	t.Helper()
	if !c.exited() {
		c.cmd.Process.Kill()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("child %d survived SIGKILL", c.cmd.Process.Pid)
		}
	}
	if !c.checked && strings.Contains(c.out.String(), "DATA RACE") {
		t.Errorf("data race in child %d:\n%s", c.cmd.Process.Pid, c.out.String())
	}
	c.checked = true
}

// output is the child's output so far; it kills the child to read it.
func (c *crashChild) output(t *testing.T) string {
	c.kill(t)
	return fmt.Sprintf("child %d (%v):\n%s", c.cmd.Process.Pid, c.err, c.out.String())
}

// crashSnapshot is every job of the crash queue by id.
func crashSnapshot(t *testing.T, st store.Store) map[string]*job.Job {
	t.Helper()
	out := map[string]*job.Job{}
	f := store.Filter{Queue: crashQueueName, Limit: 1000}
	for {
		page, err := st.List(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			out[j.ID] = j
		}
		if page.Next == "" {
			return out
		}
		f.After = page.Next
	}
}

func crashCounts(t *testing.T, st store.Store) map[job.State]int64 {
	t.Helper()
	qcs, err := st.QueueCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, qc := range qcs {
		if qc.Queue == crashQueueName {
			return qc.Counts
		}
	}
	return map[job.State]int64{}
}

// waitCrash polls until ready reports true, failing after timeout or as soon
// as the child (if any) exits on its own. ready also says what it saw, for
// the failure message.
func waitCrash(t *testing.T, what string, timeout time.Duration, c *crashChild, ready func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := ready()
		if ok {
			return
		}
		if c != nil && c.exited() {
			t.Fatalf("%s: child exited first; last seen %s\n%s", what, seen, c.output(t))
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("%s: not within %s; last seen %s", what, timeout, seen)
			if c != nil {
				msg += "\n" + c.output(t)
			}
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type tLogWriter struct{ t *testing.T }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// A node killed with SIGKILL in the middle of its work loses nothing: after
// a restart every accepted job succeeds exactly once for good, the attempts
// the dead node held are counted, and the jobs it had finished are left as
// they were. Two nodes die in a row, the second while rerunning a job the
// first one lost, so that one job's lease is lost twice.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills node processes")
	}
	ctx := context.Background()
	dir := t.TempDir()

	inputs := map[string][]byte{}
	func() {
		st, err := sqlite.Open(ctx, sqlite.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		batch := make([]store.NewJob, crashJobs)
		for i := range batch {
			batch[i] = store.NewJob{Queue: crashQueueName, MaxAttempts: crashMaxAttempts,
				Input: store.Data{Bytes: fmt.Appendf(nil, "job-%03d", i)}}
		}
		out, err := st.Insert(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, in := range out {
			if in.Err != nil || in.Job == nil || in.Existing {
				t.Fatalf("insert %d: %+v", i, in)
			}
			inputs[in.Job.ID] = batch[i].Input.Bytes
		}
	}()

	// The observer reads the store the nodes write, as a second process
	// would.
	obs := openStore(t, dir)

	// First node: killed with work done, in flight and waiting.
	child := startCrashChild(t, dir)
	waitCrash(t, "first node under way", 30*time.Second, child, func() (bool, string) {
		n := crashCounts(t, obs)
		return n[job.Succeeded] >= 10 && n[job.Running] >= 2 && n[job.Queued] >= 20, fmt.Sprint(n)
	})
	child.kill(t)
	first := crashSnapshot(t, obs)
	t.Logf("first kill: %v", crashCounts(t, obs))

	// Second node: rescues the first one's jobs, and is killed while it
	// reruns one of them.
	child = startCrashChild(t, dir)
	worker := crashWorker(child.cmd.Process.Pid)
	waitCrash(t, "second node rerunning a lost job", 30*time.Second, child, func() (bool, string) {
		page, err := obs.List(ctx, store.Filter{Queue: crashQueueName, States: []job.State{job.Running}, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			if j.Worker == worker && j.Attempt >= 2 {
				return true, ""
			}
		}
		return false, fmt.Sprint(crashCounts(t, obs))
	})
	child.kill(t)
	second := crashSnapshot(t, obs)
	t.Logf("second kill: %v", crashCounts(t, obs))

	for i, snap := range []map[string]*job.Job{first, second} {
		running := 0
		for _, j := range snap {
			if j.State == job.Running {
				running++
			}
		}
		if len(snap) != crashJobs || running == 0 {
			t.Fatalf("kill %d: %d jobs, %d running: the kill proves nothing", i+1, len(snap), running)
		}
	}

	// Restart in process, with the same settings.
	st := openStore(t, dir)
	log := slog.New(slog.NewTextHandler(tLogWriter{t}, nil))
	e := start(t, st, crashOptions(st, "restarted", t.TempDir(), log), crashQueue())
	waitCrash(t, "every job finished", 60*time.Second, nil, func() (bool, string) {
		n := crashCounts(t, obs)
		return n[job.Succeeded]+n[job.Failed]+n[job.Canceled] == crashJobs, fmt.Sprint(n)
	})
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}

	final := crashSnapshot(t, obs)
	if len(final) != crashJobs {
		t.Errorf("%d jobs in the store, want %d", len(final), crashJobs)
	}
	results := map[string]string{}
	for id, in := range inputs {
		j, ok := final[id]
		if !ok {
			t.Errorf("job %s (%s) lost", id, in)
			continue
		}
		if j.State != job.Succeeded {
			t.Errorf("job %s (%s): %s after %d attempts, error %+v", id, in, j.State, j.Attempt, j.Error)
			continue
		}
		if j.Attempt < 1 || j.Attempt > crashMaxAttempts {
			t.Errorf("job %s (%s): attempt %d of %d", id, in, j.Attempt, crashMaxAttempts)
		}
		if j.Progress != (job.Progress{Current: 2, Total: 2, Message: "done"}) {
			t.Errorf("job %s (%s): progress %+v", id, in, j.Progress)
		}
		results[id] = readResult(t, obs, id)
		if want := string(crashResult(in, j.Attempt)); results[id] != want {
			t.Errorf("job %s: result %q, want %q", id, results[id], want)
		}
	}
	lost := map[int]int{} // leases lost by a job → number of such jobs
	for id, j := range final {
		n := 0
		for k, snap := range []map[string]*job.Job{first, second} {
			before := snap[id]
			switch {
			case before == nil:
				t.Errorf("kill %d: job %s missing", k+1, id)
			case before.State == job.Succeeded:
				// Done before the kill: never run again, nor changed.
				if j.Attempt != 1 || before.Attempt != 1 || j.Version != before.Version || !j.FinishedAt.Equal(before.FinishedAt) {
					t.Errorf("kill %d: job %s succeeded before it (attempt %d, version %d), now attempt %d, version %d",
						k+1, id, before.Attempt, before.Version, j.Attempt, j.Version)
				}
			case before.State == job.Running:
				// The attempt in flight died with the node: it counts.
				n++
				if j.Attempt <= before.Attempt {
					t.Errorf("kill %d: job %s was running attempt %d, finished at attempt %d",
						k+1, id, before.Attempt, j.Attempt)
				}
			}
		}
		lost[n]++
		if j.State == job.Succeeded && j.Attempt < 1+n {
			t.Errorf("job %s lost %d leases but succeeded at attempt %d", id, n, j.Attempt)
		}
	}
	if lost[2] == 0 {
		t.Errorf("no job was running at both kills: %v", lost)
	}
	n := crashCounts(t, obs)
	var total int64
	for _, c := range n {
		total += c
	}
	if total != crashJobs || n[job.Succeeded] != crashJobs {
		t.Errorf("queue counts %v, want %d succeeded", n, crashJobs)
	}
	t.Logf("jobs by leases lost: %v", lost)
}
