// Command docket is the docket job server and its tools.
//
//	docket serve [-config docket.yaml] [-data-dir DIR]   run the API and the queues
//	docket worker --store postgres://... [--queues a,b]  run queues, no API
//	docket bench [-mode all|drain|concurrent|latency|memory]  measure the engine
//	docket submit [flags] QUEUE [FILE|-]                 submit a job to a server
//	docket jobs ls|get|wait|result|artifacts|artifact|cancel|retry|rm  manage jobs
//	docket queues [pause|resume QUEUE]                   list, pause, resume queues
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `docket: durable asynchronous jobs for slow work

Usage:
  docket serve [flags]   run the job server (see docket serve -h)
  docket worker [flags]  run queues without the API, on a shared store (see docket worker -h)
  docket bench [flags]   measure the engine on SQLite or PostgreSQL (see docket bench -h)
  docket submit [flags] QUEUE [FILE|-]
                         submit a job; --wait follows it and writes its result
  docket jobs ls|get|wait|result|artifacts|artifact|cancel|retry|rm [flags] ...
                         list and manage jobs (see docket jobs help)
  docket queues [pause|resume QUEUE]
                         list queues, pause or resume one
  docket version         print the version

submit, jobs and queues talk to a server: they take --server URL
($DOCKET_SERVER, default http://127.0.0.1:8080) and --token TOKEN ($DOCKET_TOKEN).
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "docket:", err)
		}
		os.Exit(exitCode(err))
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "worker":
		return worker(ctx, args[1:], stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "submit":
		return submitCmd(ctx, args[1:], stdout, stderr)
	case "jobs":
		return jobsCmd(ctx, args[1:], stdout, stderr)
	case "queues":
		return queuesCmd(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "docket", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// newLogger logs at level in format: "text" (key=value, for people) or
// "json" (one object per line, for log collectors).
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	o := &slog.HandlerOptions{Level: l}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
