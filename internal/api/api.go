// Package api is docket's HTTP API (/v1): submit, watch, fetch, cancel,
// retry and delete jobs; list jobs and queues; health. Every error is an RFC
// 9457 problem. Requests carry a bearer token whose owner sees only its own
// jobs; without configured tokens the API runs open (loopback only, which
// the server enforces).
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/metrics"
)

// Scopes a token may hold.
const (
	ScopeSubmit = "submit"
	ScopeRead   = "read"
	ScopeAdmin  = "admin"
	ScopeWorker = "worker"
	// ScopeMetrics reads /metrics, for a scraper that needs nothing else.
	ScopeMetrics = "metrics"
)

// Token is an accepted bearer token, known by its SHA-256 only.
type Token struct {
	Owner  string
	Scopes []string
	Hash   [32]byte
}

// Config configures the API.
type Config struct {
	Engine *engine.Engine
	// Tokens accepted; none means open mode, every caller an admin.
	Tokens []Token
	// MaxBody bounds a submitted body in bytes; 0 means no limit.
	MaxBody int64
	// Rate is requests per second allowed per token (per client address in
	// open mode); 0 means no limit. Burst is the bucket size.
	Rate  float64
	Burst int
	// TempDir receives uploads too large to hold in memory; it should be on
	// the store's file system so that handing them over is a rename.
	TempDir string
	Logger  *slog.Logger
	// Metrics, when set, counts the requests and streams, and is served
	// at GET /metrics.
	Metrics *metrics.Metrics
	// Apps add routes of their own beside /v1, such as the compatible API
	// of a service docket replaces; they get the same tokens, scopes, rate
	// limits and problem documents as the API's own routes.
	Apps []App
}

// Server serves the API.
type Server struct {
	cfg Config
	e   *engine.Engine
	log *slog.Logger
	mux *http.ServeMux

	limitMu  sync.Mutex
	limiters map[string]*limiter

	// claims is canceled by Drain: remote workers' claims end.
	claims     context.Context
	stopClaims context.CancelFunc

	// streams serves the job event streams taken over from net/http.
	streams *streamServer

	// apps are the routes cfg.Apps added.
	apps []route
}

type limiter struct {
	*rate.Limiter
	seen time.Time
}

// New builds the API server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 20
	}
	s := &Server{cfg: cfg, e: cfg.Engine, log: cfg.Logger, mux: http.NewServeMux(), limiters: map[string]*limiter{}}
	s.streams = newStreamServer(s.e, s.log)
	s.streams.metrics = cfg.Metrics
	s.claims, s.stopClaims = context.WithCancel(context.Background())
	s.apps = s.appRoutes()
	s.routes()
	return s
}

// route is one registered route: its pattern, the scope it needs ("" for
// none) and its handler. The list drives both the mux and the check that
// /openapi.json describes every route.
type route struct {
	pattern string
	scope   string
	handler func(http.ResponseWriter, *http.Request, *caller)
}

func (s *Server) routeList() []route {
	return []route{
		{"POST /v1/queues/{queue}/jobs", ScopeSubmit, s.submit},
		{"GET /v1/jobs", ScopeRead, s.list},
		{"GET /v1/jobs/{id}", ScopeRead, s.get},
		{"DELETE /v1/jobs/{id}", ScopeSubmit, s.delete},
		{"GET /v1/jobs/{id}/result", ScopeRead, s.result},
		{"GET /v1/jobs/{id}/status", ScopeRead, s.status},
		{"GET /v1/jobs/{id}/events", ScopeRead, s.jobEvents},
		{"GET /v1/events", ScopeRead, s.allEvents},
		{"GET /v1/ws", ScopeRead, s.ws},
		{"GET /v1/jobs/{id}/artifacts", ScopeRead, s.artifacts},
		{"GET /v1/jobs/{id}/artifacts/{name}", ScopeRead, s.artifact},
		{"POST /v1/jobs/{id}/cancel", ScopeSubmit, s.cancel},
		{"POST /v1/jobs/{id}/retry", ScopeSubmit, s.retry},
		{"GET /v1/queues", ScopeRead, s.queues},
		{"POST /v1/queues/{queue}/pause", ScopeAdmin, s.pause},
		{"POST /v1/queues/{queue}/resume", ScopeAdmin, s.resume},
		{"POST /v1/queues/{queue}/claim", ScopeWorker, s.claimJob},
		{"GET /v1/jobs/{id}/input", ScopeWorker, s.jobInput},
		{"POST /v1/jobs/{id}/heartbeat", ScopeWorker, s.heartbeatJob},
		{"POST /v1/jobs/{id}/progress", ScopeWorker, s.progressJob},
		{"POST /v1/jobs/{id}/complete", ScopeWorker, s.completeJob},
		{"POST /v1/jobs/{id}/fail", ScopeWorker, s.failJob},
		{"GET /healthz", "", s.healthz},
		{"GET /readyz", "", s.readyz},
		{"GET /openapi.json", "", s.openapi},
		{"GET /metrics", ScopeMetrics, s.serveMetrics},
	}
}

// Patterns lists the registered route patterns ("METHOD /path"), the apps'
// included.
func (s *Server) Patterns() []string {
	var out []string
	for _, r := range append(s.routeList(), s.apps...) {
		out = append(out, r.pattern)
	}
	return out
}

func (s *Server) routes() {
	for _, rt := range append(s.routeList(), s.apps...) {
		s.mux.Handle(rt.pattern, s.guard(rt))
	}
}

// ServeHTTP serves the API; requests no route matches get a problem too.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.logger(r).Error("panic serving request", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			writeProblem(w, r, probInternal.with(internalDetail))
		}
	}()
	r = s.observe(w, r)
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		s.measure("unmatched", w, r, func(w http.ResponseWriter, r *http.Request) { s.unmatched(h, w, r) })
		return
	}
	s.mux.ServeHTTP(w, r)
}

// unmatched answers a request no route matches, with a problem: the mux's
// own 404 and 405 are plain text.
func (s *Server) unmatched(h http.Handler, w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		writeProblem(w, r, probMethod.with(r.Method+" is not allowed on "+r.URL.Path))
		return
	}
	writeProblem(w, r, probNotFound.with("no route for "+r.Method+" "+r.URL.Path))
}

// statusRecorder captures what the mux's error handlers write.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.status = code }

// caller is who sent the request.
type caller struct {
	owner  string
	scopes map[string]bool
	admin  bool   // sees every owner's jobs
	key    string // rate-limit bucket
}

func (c *caller) can(scope string) bool { return c.admin || c.scopes[scope] }

// sees reports whether the caller may see a job of owner: a job of another
// owner is answered like a job that does not exist.
func (c *caller) sees(owner string) bool { return c.admin || c.owner == owner }

// guard authenticates, rate-limits and checks the route's scope.
func (s *Server) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.measure(rt.pattern, w, r, func(w http.ResponseWriter, r *http.Request) { s.serveRoute(rt, w, r) })
	})
}

func (s *Server) serveRoute(rt route, w http.ResponseWriter, r *http.Request) {
	c, p := s.authenticate(r, rt.scope == "")
	if p != nil {
		if p.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="docket"`)
		}
		writeProblem(w, r, *p)
		return
	}
	if rt.scope != "" {
		if d, ok := s.allow(c.key); !ok {
			writeProblem(w, r, probRateLimited.with(fmt.Sprintf("rate limit of %g requests per second", s.cfg.Rate)).after(d))
			return
		}
		if !c.can(rt.scope) {
			writeProblem(w, r, probForbidden.with("this needs the "+rt.scope+" scope"))
			return
		}
	}
	rt.handler(w, r, c)
}

// authenticate finds the caller. A public route (one without a scope) may
// be called without a token, but a token sent to it must be known.
func (s *Server) authenticate(r *http.Request, public bool) (*caller, *problem) {
	if len(s.cfg.Tokens) == 0 {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		return &caller{admin: true, key: "addr:" + host}, nil
	}
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		if public {
			return &caller{}, nil
		}
		p := probUnauthorized.with("send Authorization: Bearer <token>")
		return nil, &p
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	var found *Token
	for i := range s.cfg.Tokens {
		// Compare with every token, in constant time, whatever matches.
		if subtle.ConstantTimeCompare(sum[:], s.cfg.Tokens[i].Hash[:]) == 1 {
			found = &s.cfg.Tokens[i]
		}
	}
	if found == nil {
		p := probUnauthorized.with("unknown token")
		return nil, &p
	}
	c := &caller{owner: found.Owner, scopes: map[string]bool{}, key: fmt.Sprintf("tok:%x", sum[:8])}
	for _, sc := range found.Scopes {
		c.scopes[sc] = true
	}
	c.admin = c.scopes[ScopeAdmin]
	return c, nil
}

// allow takes a token from the caller's bucket, or says how long to wait.
func (s *Server) allow(key string) (time.Duration, bool) {
	if s.cfg.Rate <= 0 {
		return 0, true
	}
	now := time.Now()
	s.limitMu.Lock()
	l := s.limiters[key]
	if l == nil {
		if len(s.limiters) > 10_000 {
			// Forget buckets idle long enough to be full again.
			for k, v := range s.limiters {
				if now.Sub(v.seen) > time.Duration(float64(s.cfg.Burst)/s.cfg.Rate*float64(time.Second)) {
					delete(s.limiters, k)
				}
			}
		}
		l = &limiter{Limiter: rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)}
		s.limiters[key] = l
	}
	l.seen = now
	s.limitMu.Unlock()
	res := l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ *caller) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.e.Store().QueueCounts(ctx); err != nil {
		writeProblem(w, r, probUnavailable.with("store unreachable: "+err.Error()).after(time.Second))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
