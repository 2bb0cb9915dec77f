package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/docket/docket"
	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/pdfapp"
	"github.com/docket/docket/web"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: docket serve [flags]\n\nRuns the HTTP API and the queues of this node.\n\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "", "address to serve HTTP on (overrides listen and DOCKET_LISTEN)")
	nf := addNodeFlags(fs)
	nf.work = fs.Bool("work", true, "run queues here; false: an API node only, others (worker nodes, remote workers) run the jobs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, log, err := nf.loadConfig(stderr, *listen)
	if err != nil {
		return err
	}
	if len(cfg.Tokens) == 0 && !loopback(cfg.Listen) {
		return fmt.Errorf("refusing to listen on %s without tokens: open mode serves only a loopback address (127.0.0.1, ::1, localhost); configure tokens to listen elsewhere", cfg.Listen)
	}
	if *nf.pprof != "" {
		stop, err := servePprof(*nf.pprof, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	n, err := startNode(ctx, nf, cfg, log)
	if err != nil {
		return err
	}
	tokens := make([]api.Token, len(cfg.Tokens))
	for i, t := range cfg.Tokens {
		tokens[i] = api.Token{Owner: t.Owner, Scopes: t.Scopes, Hash: t.Hash}
	}
	var apps []api.App
	// The dashboard: at GET / and /ui/, or at /ui/ only when an upstream
	// serves every path.
	if n.gateway != nil && n.gateway.ServesRoot() {
		apps = append(apps, web.AppUI)
	} else {
		apps = append(apps, web.App)
	}
	if n.pdf != nil {
		apps = append(apps, pdfapp.Compat) // the PDF OCR service's routes, beside /v1
	}
	if n.gateway != nil {
		apps = append(apps, n.gateway.App()) // the upstreams' paths
	}
	handler := api.New(api.Config{Engine: n.d.Engine(), Tokens: tokens, MaxBody: cfg.Limits.MaxBody,
		Rate: cfg.Limits.Rate, Burst: cfg.Limits.Burst, TempDir: filepath.Join(cfg.DataDir, "tmp"), Logger: log, Apps: apps,
		Metrics: n.metrics})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Remote workers' waiting claims would hold the shutdown up for their
	// whole wait.
	srv.RegisterOnShutdown(handler.Drain)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	attrs := []any{"url", "http://" + ln.Addr().String(), "data_dir", cfg.DataDir, "store", redactURL(cfg.Store)}
	if cfg.Store == "sqlite" {
		attrs = append(attrs, "sqlite_sync", cfg.SQLiteSync)
	}
	log.Info("docket running", append(attrs, "queues", strings.Join(n.d.Engine().Queues(), ","), "runs", strings.Join(n.run, ","))...)
	if len(cfg.Tokens) == 0 {
		log.Warn("open mode: no tokens configured, every caller is an admin; serving on a loopback address only")
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		n.stop(context.Background())
		return fmt.Errorf("http server: %w", err)
	}
	log.Info("shutting down: no new requests or jobs; running jobs may finish", "grace", *nf.grace)
	sctx, cancel := context.WithTimeout(context.Background(), *nf.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
		srv.Close()
	}
	n.stop(sctx)
	// The event streams taken over from net/http, which srv.Shutdown does
	// not know; after the engine, so that they carry the jobs finishing
	// in the grace period.
	handler.Close()
	log.Info("stopped")
	return nil
}

// redactURL hides the password of a store URL in logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

// loopback reports whether addr (host:port) only accepts local connections.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// echo is the demo queue's handler: it returns its input, after optional
// progress steps asked for by a JSON input {"steps": N, "sleep": "100ms"}.
var echo = docket.HandlerFunc(func(ctx context.Context, j *docket.Job) error {
	in, err := j.Input(ctx)
	if err != nil {
		return err
	}
	var opts struct {
		Steps int    `json:"steps"`
		Sleep string `json:"sleep"`
		Fail  string `json:"fail"`
	}
	if strings.Contains(j.InputType(), "json") {
		json.Unmarshal(in, &opts) // not a JSON object: nothing to do but echo
	}
	pause, err := time.ParseDuration(cmpOr(opts.Sleep, "0s"))
	if err != nil {
		return docket.Permanent(fmt.Errorf("echo: sleep: %w", err))
	}
	if opts.Steps < 0 || opts.Steps > 100_000 {
		return docket.Permanent(errors.New("echo: steps must be between 0 and 100000"))
	}
	for i := 1; i <= opts.Steps; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		j.Progress(int64(i), int64(opts.Steps), fmt.Sprintf("step %d of %d", i, opts.Steps))
	}
	if opts.Fail != "" {
		return errors.New(opts.Fail)
	}
	j.SetResult(cmpOr(j.InputType(), "application/octet-stream"), in)
	return nil
})

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
