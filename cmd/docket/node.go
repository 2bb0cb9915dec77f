package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docket/docket"
	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/config"
	"github.com/docket/docket/internal/gateway"
	"github.com/docket/docket/internal/metrics"
	"github.com/docket/docket/internal/pdfapp"
	"github.com/docket/docket/internal/webhook"
)

// nodeFlags are the flags of the commands that run queues (serve, worker).
type nodeFlags struct {
	config, dataDir, store, sync, level, format, queues, pprof, apps, upstream *string
	grace                                                                      *time.Duration
	work                                                                       *bool // nil: always
}

func addNodeFlags(fs *flag.FlagSet) *nodeFlags {
	return &nodeFlags{
		config:   fs.String("config", "", "YAML configuration file (none: the built-in echo demo queue)"),
		dataDir:  fs.String("data-dir", "", "data directory (overrides data_dir and DOCKET_DATA_DIR)"),
		store:    fs.String("store", "", `store: "sqlite" or a postgres:// URL (overrides store and DOCKET_STORE)`),
		sync:     fs.String("sqlite-sync", "", `"normal" (survives a process crash) or "full" (also power loss)`),
		level:    fs.String("log-level", "info", "debug, info, warn or error"),
		format:   fs.String("log-format", "", `"text" (the default) or "json" (overrides DOCKET_LOG_FORMAT)`),
		queues:   fs.String("queues", "", "comma-separated queues this node runs (default: every queue with a concurrency); the others are still accepted and stored"),
		pprof:    fs.String("pprof", "", "serve Go's profiles (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060"),
		grace:    fs.Duration("shutdown-grace", 30*time.Second, "how long running jobs may finish on shutdown"),
		upstream: fs.String("upstream", "", "put docket in front of the HTTP service at this URL (the gateway, for every path; upstreams in the configuration for more)"),
		apps:     fs.String("app", "", `built-in apps to mount (overrides apps and DOCKET_APPS): "pdf", the PDF queues pdf.render and pdf.ocr (needs pdftoppm, pdfinfo and tesseract)`),
	}
}

// loadConfig reads the configuration and applies the flags over it.
func (nf *nodeFlags) loadConfig(stderr io.Writer, listen string) (*config.Config, *slog.Logger, error) {
	log, err := newLogger(stderr, *nf.level, cmpOr(*nf.format, os.Getenv("DOCKET_LOG_FORMAT")))
	if err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(*nf.config)
	if err != nil {
		return nil, nil, err
	}
	for dst, v := range map[*string]string{&cfg.DataDir: *nf.dataDir, &cfg.Store: *nf.store, &cfg.SQLiteSync: *nf.sync, &cfg.Listen: listen} {
		if v != "" {
			*dst = v
		}
	}
	if *nf.apps != "" {
		cfg.Apps = config.SplitList(*nf.apps)
	}
	addUpstream(&cfg, *nf.upstream)
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	return &cfg, log, nil
}

// node is a running engine and the webhook sender that reports its jobs'
// changes.
type node struct {
	log   *slog.Logger
	d     *docket.Docket
	hooks *webhook.Worker
	run   []string // the queues this node runs
	// pdf is the PDF app, with --app pdf; its queues are declared (and run
	// here if selected), its routes are for the API to mount.
	pdf *pdfapp.App
	// gateway fronts the configured upstreams; nil without any.
	gateway *gateway.Gateway
	// metrics are the node's, served at /metrics.
	metrics *metrics.Metrics
}

// startNode opens the store, declares the queues (running those selected
// by --queues here), and starts the engine and the webhook sender.
func startNode(ctx context.Context, nf *nodeFlags, cfg *config.Config, log *slog.Logger) (*node, error) {
	apps := appQueues(cfg)
	for _, name := range apps {
		if q, ok := cfg.Queues[name]; ok && len(q.Command) > 0 {
			return nil, fmt.Errorf("queues.%s: docket runs this queue itself (--app or upstreams): remove its command", name)
		}
	}
	selected, err := selectQueues(cfg, *nf.queues, apps)
	if err != nil {
		return nil, err
	}
	if nf.work != nil && !*nf.work {
		if *nf.queues != "" {
			return nil, errors.New("--work=false runs no queue: it cannot be given with --queues")
		}
		selected = map[string]bool{}
	}
	dc := docket.Config{DataDir: cfg.DataDir, Store: cfg.Store, SQLiteSync: cfg.SQLiteSync, Logger: log,
		Lease: cfg.Lease, ShutdownGrace: *nf.grace, Queues: map[string]docket.Queue{}}
	for name, q := range cfg.Queues {
		conc := q.Concurrency
		if !selected[name] {
			conc = 0
		}
		dc.Queues[name] = docket.Queue{Concurrency: conc, MaxQueued: q.MaxQueued, Timeout: q.Timeout,
			MaxAttempts: q.MaxAttempts, Retention: q.Retention, Command: q.Command, ResultType: q.ResultType, Prefetch: q.Prefetch}
	}
	d, err := docket.Open(ctx, dc)
	if err != nil {
		return nil, err
	}
	// The demo queue runs when no queue is configured, and a configured
	// queue named echo without a command gets the demo handler too. Where
	// it is not run, it is still declared, so that its jobs are accepted.
	eq, configured := cfg.Queues["echo"]
	demo := !configured && len(cfg.Queues) == 0 || configured && len(eq.Command) == 0 && eq.Concurrency > 0
	switch {
	case demo && selected["echo"]:
		d.Handle("echo", echo)
	case demo && !configured:
		q := docket.DefaultQueue
		q.Concurrency = 0
		if err := d.AddQueue("echo", q); err != nil {
			d.Close(context.Background())
			return nil, err
		}
	}
	var pdf *pdfapp.App
	if slices.Contains(cfg.Apps, "pdf") {
		if pdf, err = mountPDF(ctx, d, cfg, selected, log); err != nil {
			d.Close(context.Background())
			return nil, err
		}
	}
	var gw *gateway.Gateway
	if len(cfg.Upstreams) > 0 {
		if gw, err = mountGateway(d, cfg, selected, log); err != nil {
			d.Close(context.Background())
			return nil, err
		}
	}
	for name, q := range cfg.Queues {
		if name != "echo" && len(q.Command) == 0 && selected[name] && !slices.Contains(apps, name) {
			log.Warn("queue has no command: its jobs are stored for remote workers, none run here", "queue", name, "concurrency", q.Concurrency)
		}
		if q.Paused {
			d.Engine().SetPaused(name, true)
		}
	}
	secret, err := webhook.LoadSecret(cfg.Webhooks.Secret, cfg.DataDir)
	if err != nil {
		d.Close(context.Background())
		return nil, err
	}
	m := metrics.New(metrics.StoreCounts(d.Engine().Store()))
	d.Engine().SetMetrics(m)
	hooks, err := webhook.New(webhook.Options{Store: d.Engine().Store(), Hub: d.Engine().Hub(), Marshal: api.JobJSON, Metrics: m,
		Secret: secret, AllowPrivate: cfg.Webhooks.AllowPrivate, Logger: log,
		MaxAttempts: cfg.Webhooks.MaxAttempts, MaxAge: cfg.Webhooks.MaxAge})
	if err != nil {
		d.Close(context.Background())
		return nil, err
	}
	// Listening before the engine starts: the first jobs' changes count.
	hooks.Start()
	if err := d.Start(); err != nil {
		hooks.Stop(context.Background())
		d.Close(context.Background())
		return nil, err
	}
	n := &node{log: log, d: d, hooks: hooks, pdf: pdf, gateway: gw, metrics: m}
	for _, name := range d.Engine().Queues() {
		if q, _ := d.Engine().Queue(name); q.Concurrency > 0 {
			n.run = append(n.run, name)
		}
	}
	return n, nil
}

// appQueues are the queues of the apps cfg mounts.
// The gateway's http queue counts as one: docket runs it, not a command.
func appQueues(cfg *config.Config) []string {
	var out []string
	if slices.Contains(cfg.Apps, "pdf") {
		out = append(out, pdfapp.RenderQueue, pdfapp.OCRQueue)
	}
	if len(cfg.Upstreams) > 0 {
		out = append(out, gateway.Queue)
	}
	return out
}

// mountPDF declares the PDF queues, running those selected here. Running
// them needs the tools: without them docket refuses to start, since every
// job would fail; a node that only declares them (an API node, or one
// given other --queues) does not. A configured queue of the same name sets
// the queue's settings.
func mountPDF(ctx context.Context, d *docket.Docket, cfg *config.Config, selected map[string]bool, log *slog.Logger) (*pdfapp.App, error) {
	runs := false
	for _, name := range []string{pdfapp.RenderQueue, pdfapp.OCRQueue} {
		c, configured := cfg.Queues[name]
		runs = runs || selected[name] && (!configured || c.Concurrency > 0)
	}
	var tools pdfapp.Tools
	if runs {
		var err error
		if tools, err = pdfapp.FindTools(ctx); err != nil {
			return nil, fmt.Errorf("--app pdf: %w", err)
		}
	}
	app, err := pdfapp.New(tools, pdfapp.Options{TempDir: filepath.Join(cfg.DataDir, "tmp"), Logger: log})
	if err != nil {
		return nil, err
	}
	for _, q := range app.Queues() {
		if c, ok := cfg.Queues[q.Name]; ok {
			q.Concurrency, q.MaxQueued, q.Timeout, q.MaxAttempts, q.Retention = c.Concurrency, c.MaxQueued, c.Timeout, c.MaxAttempts, c.Retention
			q.Prefetch = c.Prefetch
		}
		if !selected[q.Name] {
			q.Concurrency = 0
		}
		if err := d.Engine().AddQueue(q); err != nil {
			return nil, fmt.Errorf("--app pdf: %w", err)
		}
	}
	if !runs {
		log.Info("PDF app: queues declared, run by other nodes", "queues", pdfapp.RenderQueue+","+pdfapp.OCRQueue)
		return app, nil
	}
	o := app.Options()
	log.Info("PDF app: tools found", "pdfinfo", tools.PDFInfo.String(), "pdftoppm", tools.PDFToPPM.String(),
		"tesseract", tools.Tesseract.String(), "languages", strings.Join(tools.Languages, ","),
		"slots", o.Slots, "dpi", o.DPI)
	return app, nil
}

// selectQueues parses --queues: the queues this node runs. Empty selects
// every configured queue and the apps' queues (or the demo queue when
// there are none).
func selectQueues(cfg *config.Config, list string, apps []string) (map[string]bool, error) {
	sel := map[string]bool{}
	if strings.TrimSpace(list) == "" {
		for _, name := range apps {
			sel[name] = true
		}
		for name := range cfg.Queues {
			sel[name] = true
		}
		if len(cfg.Queues) == 0 {
			sel["echo"] = true
		}
		return sel, nil
	}
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		_, ok := cfg.Queues[name]
		if !ok && !(len(cfg.Queues) == 0 && name == "echo") && !slices.Contains(apps, name) {
			known := slices.Sorted(maps.Keys(cfg.Queues))
			if len(known) == 0 {
				known = []string{"echo"}
			}
			known = append(known, apps...)
			return nil, fmt.Errorf("--queues: no queue %q in the configuration (queues: %s)", name, strings.Join(known, ", "))
		}
		sel[name] = true
	}
	if len(sel) == 0 {
		return nil, errors.New("--queues: no queue named")
	}
	return sel, nil
}

// stop drains the node: the engine first, so that the jobs finishing in the
// grace period have their deliveries recorded; the store last, as both
// write to it.
func (n *node) stop(ctx context.Context) {
	if err := n.d.Engine().Stop(ctx); err != nil {
		n.log.Warn("shutdown", "err", err)
	}
	if err := n.hooks.Stop(ctx); err != nil {
		n.log.Warn("webhook shutdown", "err", err)
	}
	if err := n.d.Close(ctx); err != nil {
		n.log.Warn("shutdown", "err", err)
	}
}
