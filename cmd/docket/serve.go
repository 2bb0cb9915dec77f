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
	"path/filepath"
	"strings"
	"time"

	"github.com/docket/docket"
	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/config"
	"github.com/docket/docket/internal/webhook"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML configuration file (none: the built-in echo demo queue)")
	dataDir := fs.String("data-dir", "", "data directory (overrides data_dir and DOCKET_DATA_DIR)")
	listen := fs.String("listen", "", "address to serve HTTP on (overrides listen and DOCKET_LISTEN)")
	storeURL := fs.String("store", "", `store: "sqlite" (overrides store and DOCKET_STORE)`)
	sync := fs.String("sqlite-sync", "", `"normal" (survives a process crash) or "full" (also power loss)`)
	level := fs.String("log-level", "info", "debug, info, warn or error")
	grace := fs.Duration("shutdown-grace", 30*time.Second, "how long running jobs may finish on shutdown")
	pprofAddr := fs.String("pprof", "", "serve Go's profiles (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	for dst, v := range map[*string]string{&cfg.DataDir: *dataDir, &cfg.Store: *storeURL, &cfg.SQLiteSync: *sync, &cfg.Listen: *listen} {
		if v != "" {
			*dst = v
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(cfg.Tokens) == 0 && !loopback(cfg.Listen) {
		return fmt.Errorf("refusing to listen on %s without tokens: open mode serves only a loopback address (127.0.0.1, ::1, localhost); configure tokens to listen elsewhere", cfg.Listen)
	}
	if *pprofAddr != "" {
		stop, err := servePprof(*pprofAddr, log)
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
	dc := docket.Config{DataDir: cfg.DataDir, Store: cfg.Store, SQLiteSync: cfg.SQLiteSync, Logger: log,
		ShutdownGrace: *grace, Queues: map[string]docket.Queue{}}
	for name, q := range cfg.Queues {
		dc.Queues[name] = docket.Queue{Concurrency: q.Concurrency, MaxQueued: q.MaxQueued, Timeout: q.Timeout,
			MaxAttempts: q.MaxAttempts, Retention: q.Retention, Command: q.Command, ResultType: q.ResultType}
	}
	d, err := docket.Open(ctx, dc)
	if err != nil {
		return err
	}
	// The demo queue runs when no queue is configured, and a configured
	// queue named echo without a command gets the demo handler too.
	if q, ok := cfg.Queues["echo"]; len(cfg.Queues) == 0 || ok && len(q.Command) == 0 && q.Concurrency > 0 {
		d.Handle("echo", echo)
	}
	for name, q := range cfg.Queues {
		if name != "echo" && len(q.Command) == 0 && q.Concurrency > 0 {
			log.Warn("queue has no command: its jobs are stored for remote workers, none run here", "queue", name, "concurrency", q.Concurrency)
		}
		if q.Paused {
			d.Engine().SetPaused(name, true)
		}
	}
	secret, err := webhook.LoadSecret(cfg.Webhooks.Secret, cfg.DataDir)
	if err != nil {
		d.Close(context.Background())
		return err
	}
	hooks, err := webhook.New(webhook.Options{Store: d.Engine().Store(), Hub: d.Engine().Hub(), Marshal: api.JobJSON,
		Secret: secret, AllowPrivate: cfg.Webhooks.AllowPrivate, Logger: log,
		MaxAttempts: cfg.Webhooks.MaxAttempts, MaxAge: cfg.Webhooks.MaxAge})
	if err != nil {
		d.Close(context.Background())
		return err
	}
	// Listening before the engine starts: the first jobs' changes count.
	hooks.Start()
	if err := d.Start(); err != nil {
		hooks.Stop(context.Background())
		d.Close(context.Background())
		return err
	}
	tokens := make([]api.Token, len(cfg.Tokens))
	for i, t := range cfg.Tokens {
		tokens[i] = api.Token{Owner: t.Owner, Scopes: t.Scopes, Hash: t.Hash}
	}
	handler := api.New(api.Config{Engine: d.Engine(), Tokens: tokens, MaxBody: cfg.Limits.MaxBody,
		Rate: cfg.Limits.Rate, Burst: cfg.Limits.Burst, TempDir: filepath.Join(cfg.DataDir, "tmp"), Logger: log})
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
	log.Info("docket running", "url", "http://"+ln.Addr().String(), "data_dir", cfg.DataDir, "store", cfg.Store,
		"sqlite_sync", cfg.SQLiteSync, "queues", strings.Join(d.Engine().Queues(), ","))
	if len(cfg.Tokens) == 0 {
		log.Warn("open mode: no tokens configured, every caller is an admin; serving on a loopback address only")
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		d.Engine().Stop(context.Background())
		hooks.Stop(context.Background())
		d.Close(context.Background())
		return fmt.Errorf("http server: %w", err)
	}
	log.Info("shutting down: no new requests or jobs; running jobs may finish", "grace", *grace)
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
		srv.Close()
	}
	// The engine first, so that the jobs finishing in the grace period
	// have their deliveries recorded; the store last, as both write to it.
	if err := d.Engine().Stop(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	if err := hooks.Stop(sctx); err != nil {
		log.Warn("webhook shutdown", "err", err)
	}
	if err := d.Close(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
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
