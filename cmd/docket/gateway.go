package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/docket/docket"
	"github.com/docket/docket/internal/config"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/gateway"
)

// The http queue's settings where the configuration has none: requests
// wait on the network more than on a CPU, so many run at once.
var gatewayQueue = config.Queue{Concurrency: 16, Timeout: 10 * time.Minute, MaxAttempts: 3, Retention: 24 * time.Hour}

// addUpstream puts the --upstream flag's service first, for every path,
// replacing a configured upstream of the same prefix.
func addUpstream(cfg *config.Config, raw string) {
	if raw == "" {
		return
	}
	up := config.Upstream{Name: "default", URL: raw, Prefix: "/"}
	kept := []config.Upstream{up}
	for _, u := range cfg.Upstreams {
		if u.Prefix != "/" {
			if u.Name == "default" {
				u.Name = "upstream-" + strings.Trim(u.Prefix, "/")
			}
			kept = append(kept, u)
		}
	}
	cfg.Upstreams = kept
}

// mountGateway declares the http queue of the configured upstreams, run
// here when selected, and returns the gateway whose routes the API mounts.
func mountGateway(d *docket.Docket, cfg *config.Config, selected map[string]bool, log *slog.Logger) (*gateway.Gateway, error) {
	gc := gateway.Config{MaxBody: cfg.Limits.MaxBody, Logger: log}
	for _, u := range cfg.Upstreams {
		base, err := url.Parse(u.URL)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", u.Name, err)
		}
		gc.Upstreams = append(gc.Upstreams, gateway.Upstream{Name: u.Name, URL: base, Prefix: u.Prefix,
			RequireAsync: u.RequireAsync, PassAuthorization: u.PassAuthorization, RetryUnsafe: u.RetryUnsafe, MaxResponse: u.MaxResponse})
	}
	g, err := gateway.New(gc)
	if err != nil {
		return nil, err
	}
	q, ok := cfg.Queues[gateway.Queue]
	if !ok {
		q = gatewayQueue
	}
	if !selected[gateway.Queue] {
		q.Concurrency = 0
	}
	if err := d.Engine().AddQueue(engine.Queue{Name: gateway.Queue, Concurrency: q.Concurrency, MaxQueued: q.MaxQueued,
		Timeout: q.Timeout, MaxAttempts: q.MaxAttempts, Retention: q.Retention, Prefetch: q.Prefetch, Handler: g.Handler(filepath.Join(cfg.DataDir, "tmp"))}); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	for _, u := range cfg.Upstreams {
		log.Info("gateway: upstream", "name", u.Name, "prefix", u.Prefix, "target", redactURL(u.URL),
			"require_async", strings.Join(u.RequireAsync, ","), "replays_here", q.Concurrency > 0)
	}
	return g, nil
}
