// Package gateway puts docket in front of an existing HTTP service and makes
// its slow endpoints asynchronous without changing them: a request that asks
// for it (Prefer: respond-async, X-Async-Request: true) is recorded whole as
// a job of the http queue and answered 202 at once; a worker replays it to
// the service and keeps the response, which GET /v1/jobs/{id}/result gives
// back as the service sent it. Other requests are proxied as usual.
//
// A recorded request is the job's input and a recorded response its result,
// both as HTTP/1.1 messages (media types application/http;
// msgtype=request and msgtype=response, RFC 9112 §10.1), so that they stream
// through the store at any size and read back with net/http.
package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// Queue is the queue of the gateway's jobs.
const Queue = "http"

// The media types of recorded messages.
const (
	RequestType  = "application/http; msgtype=request"
	ResponseType = "application/http; msgtype=response"
)

// DefaultMaxResponse bounds a recorded response body when the upstream sets
// no bound of its own.
const DefaultMaxResponse = 1 << 30

// Upstream is a service docket fronts.
type Upstream struct {
	// Name identifies the upstream in its jobs' "upstream" label, by which
	// a worker finds where to replay them; unique.
	Name string
	// URL is the service's base URL; a request's path is joined to its
	// path.
	URL *url.URL
	// Prefix selects the requests sent to this upstream: those whose path
	// starts with it ("/" for all). The longest matching prefix wins.
	Prefix string
	// RequireAsync lists the routes, as net/http ServeMux patterns such as
	// "POST /reports/" or "/export", that are too slow to be called
	// synchronously: without an asynchronous header they answer 409.
	RequireAsync []string
	// PassAuthorization forwards the caller's Authorization header. It is
	// off by default as that header carries the caller's docket token,
	// which the upstream has no use for unless it shares docket's tokens.
	PassAuthorization bool
	// RetryUnsafe lets the jobs of non-idempotent requests (POST, PATCH)
	// be retried after a failure that may have reached the upstream: only
	// for upstreams that deduplicate them. A request that could not be
	// sent at all (connection refused) is retried whatever the method.
	RetryUnsafe bool
	// MaxResponse bounds a recorded response body in bytes; 0 means
	// DefaultMaxResponse. A larger response fails its job.
	MaxResponse int64
}

// Config configures a Gateway.
type Config struct {
	Upstreams []Upstream
	// MaxBody bounds a request body, proxied or recorded; 0: no bound.
	MaxBody int64
	// Transport sends requests upstream; nil: one with the timeouts
	// below, without transparent decompression (responses are kept and
	// replayed byte for byte).
	Transport http.RoundTripper
	Logger    *slog.Logger
}

// Gateway serves the upstreams' routes (see App) and replays their
// recorded requests (see Handler).
type Gateway struct {
	cfg       Config
	upstreams []*upstream // longest prefix first
	byName    map[string]*upstream
	client    *http.Client
	log       *slog.Logger
}

// upstream is an Upstream ready to serve.
type upstream struct {
	Upstream
	proxy *httputil.ReverseProxy
	// async matches the RequireAsync routes.
	async *http.ServeMux
}

// New checks the configuration and builds the gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Transport == nil {
		cfg.Transport = newTransport()
	}
	g := &Gateway{cfg: cfg, byName: map[string]*upstream{}, log: cfg.Logger,
		// Redirects are the upstream's answer, recorded as they are.
		client: &http.Client{Transport: cfg.Transport, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}}
	prefixes := map[string]bool{}
	for _, up := range cfg.Upstreams {
		u := &upstream{Upstream: up}
		if u.Name == "" {
			return nil, errors.New("gateway: an upstream without a name")
		}
		if g.byName[u.Name] != nil {
			return nil, fmt.Errorf("gateway: two upstreams named %q", u.Name)
		}
		if u.URL == nil || (u.URL.Scheme != "http" && u.URL.Scheme != "https") || u.URL.Host == "" {
			return nil, fmt.Errorf("gateway: upstream %s: want an http:// or https:// URL", u.Name)
		}
		if u.Prefix == "" {
			u.Prefix = "/"
		}
		if !strings.HasPrefix(u.Prefix, "/") {
			return nil, fmt.Errorf("gateway: upstream %s: prefix %q must start with /", u.Name, u.Prefix)
		}
		if prefixes[u.Prefix] {
			return nil, fmt.Errorf("gateway: two upstreams for prefix %q", u.Prefix)
		}
		prefixes[u.Prefix] = true
		if u.MaxResponse <= 0 {
			u.MaxResponse = DefaultMaxResponse
		}
		u.async = http.NewServeMux()
		for _, p := range u.RequireAsync {
			if err := register(u.async, p); err != nil {
				return nil, fmt.Errorf("gateway: upstream %s: require_async %q: %w", u.Name, p, err)
			}
		}
		u.proxy = g.newProxy(u)
		g.upstreams = append(g.upstreams, u)
		g.byName[u.Name] = u
	}
	// Longest prefix first, so that the first match is the most specific.
	for i := 1; i < len(g.upstreams); i++ {
		for k := i; k > 0 && len(g.upstreams[k].Prefix) > len(g.upstreams[k-1].Prefix); k-- {
			g.upstreams[k], g.upstreams[k-1] = g.upstreams[k-1], g.upstreams[k]
		}
	}
	return g, nil
}

// register adds a pattern to mux, turning its panic on a malformed or
// conflicting pattern into an error.
func register(mux *http.ServeMux, pattern string) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%v", v)
		}
	}()
	mux.Handle(pattern, http.NotFoundHandler())
	return nil
}

// newTransport is http.DefaultTransport's setup, with responses kept as
// the upstream encoded them.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// ServesRoot reports whether an upstream serves every path (prefix "/"),
// GET / included.
func (g *Gateway) ServesRoot() bool { return g.route("/") != nil }

// route finds the upstream of a request path.
func (g *Gateway) route(path string) *upstream {
	for _, u := range g.upstreams {
		if strings.HasPrefix(path, u.Prefix) {
			return u
		}
	}
	return nil
}

// requiresAsync reports whether r is for one of u's require_async routes.
func (u *upstream) requiresAsync(r *http.Request) bool {
	_, pattern := u.async.Handler(r)
	return pattern != ""
}
