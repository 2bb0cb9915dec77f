// Package apitest starts a real docket server for tests of code that talks
// to docket over HTTP, such as the Go client and the command line: the HTTP
// API of package api over a running engine and a SQLite store in a
// temporary directory, listening on a loopback address.
//
// Tests that go through the server docket runs in production check the
// client against the API as it is, status codes, problem documents and
// long polls included; a stand-in that answered in the API's shapes would
// be a second copy of it, free to drift from the first.
//
// Every server has an "echo" queue whose handler, Echo, returns its input
// and can be asked to report progress, add artifacts or fail. Steps is a
// handler whose progress the test paces, for jobs that must be seen
// running or seen at every step. Tests add their own queues with Options.
package apitest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/metrics"
	"github.com/docket/docket/internal/store/sqlite"
)

// Token is what a bearer token stands for.
type Token struct {
	// Owner is the tenant the token's jobs belong to.
	Owner string
	// Scopes are the token's rights: api.ScopeSubmit, api.ScopeRead,
	// api.ScopeWorker (the remote-worker protocol), api.ScopeAdmin (every
	// right, and every owner's jobs).
	Scopes []string
}

// Options configure a Server. The zero value is an open server (no
// tokens, every caller an admin) with only the echo queue and no limits.
type Options struct {
	// Tokens maps plain bearer tokens to what they stand for; none runs
	// the API in open mode.
	Tokens map[string]Token
	// Queues are declared besides the default echo queue; one named
	// "echo" replaces it. A queue with no Concurrency has no workers here,
	// so that its jobs stay queued.
	Queues []engine.Queue
	// MaxBody bounds a submitted body in bytes; 0 means no limit.
	MaxBody int64
	// Rate is requests per second allowed per token (per client address in
	// open mode), Burst the bucket size; Rate 0 means no limit.
	Rate  float64
	Burst int
	// Observe, if set, is called with every request before the API serves
	// it, for checking what a client sent that the server does not keep,
	// such as its Content-Length or Prefer header. It runs on the server's
	// goroutines and must not read the body.
	Observe func(*http.Request)
	// Logger receives the server's logs. By default warnings and errors go
	// to the test's log (Start) or to stderr (New).
	Logger *slog.Logger
	// Apps add routes beside the API's, as api.Config.Apps.
	Apps []api.App
	// Metrics, when set, receives the engine's and the API's metrics,
	// served at /metrics.
	Metrics *metrics.Metrics
	// RescueEvery is how often the engine looks for lapsed leases, for
	// tests of jobs whose worker vanished; 0 keeps the engine's default
	// (every 15s), longer than a test wants to wait.
	RescueEvery time.Duration
}

// DefaultQueues are the queues every server has unless Options replace
// them: "echo", with four workers running Echo and three attempts per job.
func DefaultQueues() []engine.Queue {
	return []engine.Queue{{Name: "echo", Concurrency: 4, MaxAttempts: 3, Handler: Echo}}
}

// Server is a running docket server.
type Server struct {
	// URL is the server's base URL, such as http://127.0.0.1:41234.
	URL string
	// Engine runs the server's jobs; its Store is what the API reads and
	// writes, for checking what the server kept.
	Engine *engine.Engine

	hs        *httptest.Server
	api       *api.Server
	st        *sqlite.Store
	removeDir string // the data directory New made, removed on Close
	closeOnce sync.Once
}

// stopGrace is how long handlers still running at Close may finish before
// they are canceled: a test's server has no work worth waiting for, and a
// job the test holds with Steps must not hold up its cleanup.
const stopGrace = 100 * time.Millisecond

// awaitFor bounds Await.
const awaitFor = 10 * time.Second

// Start starts a server for the test and has it closed when the test and
// its subtests are done. Its data lives in a temporary directory of the
// test's.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	var tl *testLog
	if opts.Logger == nil {
		tl = &testLog{t: t}
		opts.Logger = slog.New(slog.NewTextHandler(tl, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := start(opts, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if tl != nil {
			tl.close()
		}
	})
	return s
}

// New starts a server whose data lives in a new temporary directory, for
// code that has no testing.TB, such as examples. The caller closes it.
func New(opts Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "docket-apitest-*")
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := start(opts, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.removeDir = dir
	return s, nil
}

func start(opts Options, dir string) (*Server, error) {
	st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: dir})
	if err != nil {
		return nil, err
	}
	// Retries come after a millisecond, not a second, and progress is
	// stored every 10ms, not every 250ms, so that tests see them at once.
	e, err := engine.New(engine.Options{Store: st, TempDir: dir, Logger: opts.Logger,
		BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond, ProgressEvery: 10 * time.Millisecond,
		RescueEvery: opts.RescueEvery, Metrics: opts.Metrics})
	if err != nil {
		st.Close()
		return nil, err
	}
	queues := DefaultQueues()
	for _, q := range opts.Queues {
		replaced := false
		for i := range queues {
			if queues[i].Name == q.Name {
				queues[i], replaced = q, true
			}
		}
		if !replaced {
			queues = append(queues, q)
		}
	}
	for _, q := range queues {
		if err := e.AddQueue(q); err != nil {
			st.Close()
			return nil, err
		}
	}
	if err := e.Start(); err != nil {
		st.Close()
		return nil, err
	}
	var tokens []api.Token
	for plain, tok := range opts.Tokens {
		tokens = append(tokens, api.Token{Owner: tok.Owner, Scopes: tok.Scopes, Hash: sha256.Sum256([]byte(plain))})
	}
	a := api.New(api.Config{Engine: e, Tokens: tokens, MaxBody: opts.MaxBody,
		Rate: opts.Rate, Burst: opts.Burst, TempDir: dir, Logger: opts.Logger, Apps: opts.Apps,
		Metrics: opts.Metrics})
	var h http.Handler = a
	if observe := opts.Observe; observe != nil {
		apiHandler := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			observe(r)
			apiHandler.ServeHTTP(w, r)
		})
	}
	s := &Server{Engine: e, st: st, hs: httptest.NewServer(h), api: a}
	s.URL = s.hs.URL
	return s, nil
}

// Close stops the server: it cuts the connections still open (a long poll
// would otherwise hold Close up for as long as it waits), stops the engine,
// canceling the handlers still running after a moment, and closes the
// store. Calling it again does nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.hs.CloseClientConnections()
		s.hs.Close()
		s.api.Close() // the event streams taken over from net/http
		ctx, cancel := context.WithTimeout(context.Background(), stopGrace)
		defer cancel()
		s.Engine.Stop(ctx) // an error only says that handlers were canceled
		s.st.Close()
		if s.removeDir != "" {
			os.RemoveAll(s.removeDir)
		}
	})
}

// Job returns job id as the store keeps it, with what the API does not
// show, such as RunAt, Timeout, Unique and IdempotencyKey.
func (s *Server) Job(t testing.TB, id string) *job.Job {
	t.Helper()
	j, err := s.Engine.Store().Get(context.Background(), id)
	if err != nil {
		t.Fatalf("apitest: job %s: %v", id, err)
	}
	return j
}

// Input returns the stored input of job id.
func (s *Server) Input(t testing.TB, id string) []byte {
	t.Helper()
	rc, err := s.Engine.Store().OpenInput(context.Background(), id)
	if err != nil {
		t.Fatalf("apitest: input of job %s: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("apitest: input of job %s: %v", id, err)
	}
	return b
}

// Await waits until job id satisfies ok and returns it, failing the test
// if that takes more than ten seconds. It follows the engine's events, so
// it sees every stored change without polling. Call it from the test's
// goroutine.
func (s *Server) Await(t testing.TB, id string, ok func(*job.Job) bool) *job.Job {
	t.Helper()
	sub := s.Engine.Hub().SubscribeJob(id)
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), awaitFor)
	defer cancel()
	// Subscribed first, read second: no change can fall in between.
	j, err := s.Engine.Store().Get(ctx, id)
	if err != nil {
		t.Fatalf("apitest: job %s: %v", id, err)
	}
	for !ok(j) {
		select {
		case ev := <-sub.C():
			if ev.Deleted {
				t.Fatalf("apitest: job %s was deleted", id)
			}
			if ev.Version > j.Version {
				j = ev.Job
			}
		case <-ctx.Done():
			t.Fatalf("apitest: job %s still %s, progress %+v, error %+v after %v", id, j.State, j.Progress, j.Error, awaitFor)
		}
	}
	return j
}

// Echo is the echo queue's handler. It succeeds with its input as the
// result, under the input's content type. A JSON object input can ask for
// more, done in this order:
//
//	{"steps": 3}                       report progress 1 to 3 of 3, "step 1 of 3"...
//	{"artifacts": {"page-1.png": "…"}} add these artifacts, typed by their extension
//	{"fail": "no pages"}               then fail with this message, without retry
//
// Progress reported in quick succession is coalesced by the engine, so a
// client may see only the last step; Steps paces a job step by step. Echo
// reads its input into memory: it is meant for small inputs.
var Echo engine.Handler = engine.HandlerFunc(echo)

func echo(ctx context.Context, tk *engine.Task) error {
	in, err := readInput(ctx, tk)
	if err != nil {
		return err
	}
	var ask struct {
		Steps     int64             `json:"steps"`
		Artifacts map[string]string `json:"artifacts"`
		Fail      string            `json:"fail"`
	}
	ctype := tk.Job().Input.ContentType
	if mt, _, _ := mime.ParseMediaType(ctype); mt == "application/json" || strings.HasSuffix(mt, "+json") {
		json.Unmarshal(in, &ask) // anything but an object asks for nothing
	}
	for i := int64(1); i <= ask.Steps; i++ {
		tk.Progress(i, ask.Steps, fmt.Sprintf("step %d of %d", i, ask.Steps))
	}
	for name, content := range ask.Artifacts {
		atype := mime.TypeByExtension(filepath.Ext(name))
		if atype == "" {
			atype = "application/octet-stream"
		}
		if err := tk.AddArtifact(name, atype, strings.NewReader(content)); err != nil {
			return engine.Permanent(err)
		}
	}
	if ask.Fail != "" {
		return engine.Permanent(errors.New(ask.Fail))
	}
	tk.SetResult(ctype, in)
	return nil
}

// Steps returns a handler that moves in lock step with the test: it
// reports step 1 of total, waits for a value on next, reports step 2, and
// so on; after the value that follows the last step it succeeds with its
// input as the result. The engine coalesces progress reported in quick
// succession, so only a handler that waits can be seen at every step.
//
// With a nil next the job stays running at step 1 until it is canceled or
// the server closes: a job that is running for as long as the test needs.
// Every job of a queue running Steps takes values from the same next.
func Steps(total int64, next <-chan struct{}) engine.Handler {
	return engine.HandlerFunc(func(ctx context.Context, tk *engine.Task) error {
		for i := int64(1); i <= total; i++ {
			tk.Progress(i, total, fmt.Sprintf("step %d of %d", i, total))
			select {
			case <-next:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		in, err := readInput(ctx, tk)
		if err != nil {
			return err
		}
		tk.SetResult(tk.Job().Input.ContentType, in)
		return nil
	})
}

func readInput(ctx context.Context, tk *engine.Task) ([]byte, error) {
	rc, err := tk.OpenInput(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// testLog writes the server's log lines to the test's log until the test's
// cleanup is over; a line after that would make the testing package panic.
type testLog struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Log("docket: " + string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}
