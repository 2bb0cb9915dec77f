package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

// worker runs queues without serving the API: a node added to a shared
// (PostgreSQL) store to work, while API nodes take requests.
func worker(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: docket worker --store postgres://... [flags]\n\nRuns the queues of this node and serves no API.\n\n")
		fs.PrintDefaults()
	}
	nf := addNodeFlags(fs)
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics at /metrics on this address, e.g. 127.0.0.1:9100 (the worker serves no API to carry them)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, log, err := nf.loadConfig(stderr, "")
	if err != nil {
		return err
	}
	if *nf.pprof != "" {
		stop, err := servePprof(*nf.pprof, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	n, err := startNode(ctx, nf, cfg, log)
	if err != nil {
		return err
	}
	if len(n.run) == 0 {
		n.stop(context.Background())
		return fmt.Errorf("worker: no queue to run: give queues a concurrency in the configuration, or name them with --queues")
	}
	if *metricsAddr != "" {
		stop, err := serveMetrics(*metricsAddr, n.metrics.Handler(), log)
		if err != nil {
			n.stop(context.Background())
			return err
		}
		defer stop()
	}
	log.Info("docket worker running", "store", redactURL(cfg.Store), "data_dir", cfg.DataDir, "runs", strings.Join(n.run, ","))
	if cfg.Store == "sqlite" {
		log.Warn("a worker on the embedded store shares its file with the server only on this machine; use PostgreSQL to add machines")
	}
	<-ctx.Done()
	log.Info("shutting down: no new jobs; running jobs may finish", "grace", *nf.grace)
	sctx, cancel := context.WithTimeout(context.Background(), *nf.grace)
	defer cancel()
	n.stop(sctx)
	log.Info("stopped")
	return nil
}
