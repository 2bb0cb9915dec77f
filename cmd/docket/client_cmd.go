package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/docket/docket/client"
)

// stdin is where submit reads an input named "-" or not named at all;
// tests replace it.
var stdin io.Reader = os.Stdin

// exitError carries an exit status other than the usage error's 2: 1 when
// the server or the job said no, 130 when Ctrl-C stopped a wait.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the process exit status for an error run returned.
func exitCode(err error) int {
	if e, ok := errors.AsType[*exitError](err); ok {
		return e.code
	}
	return 2
}

// failed marks err as the server's or the job's answer rather than a
// misuse of the command, so that scripts can tell them apart.
func failed(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	if _, ok := errors.AsType[*exitError](err); ok {
		return err
	}
	return &exitError{1, err}
}

var errInterrupted = &exitError{130, errors.New("interrupted")}

const defaultServer = "http://127.0.0.1:8080"

// conn holds the flags every client command takes.
type conn struct{ server, token string }

func (c *conn) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", cmpOr(os.Getenv("DOCKET_SERVER"), defaultServer), "docket server URL ($DOCKET_SERVER)")
	fs.StringVar(&c.token, "token", os.Getenv("DOCKET_TOKEN"), "API token ($DOCKET_TOKEN)")
}

func (c *conn) client() *client.Client { return client.New(c.server, c.token) }

// again is how to run another command against the same server, for hints.
func (c *conn) again(args string) string {
	if c.server != cmpOr(os.Getenv("DOCKET_SERVER"), defaultServer) {
		return "docket " + args + " --server " + c.server
	}
	return "docket " + args
}

func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags placed anywhere among the arguments (docket jobs get
// ID --server URL) and checks the count of the others.
func parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if len(pos) < minArgs || len(pos) > maxArgs {
		fs.Usage()
		return nil, fmt.Errorf("%s: wrong number of arguments", fs.Name())
	}
	return pos, nil
}

// labelFlag collects repeated --label k=v (or k:v).
type labelFlag map[string]string

func (l labelFlag) String() string { return "" }

func (l labelFlag) Set(s string) error {
	i := strings.IndexAny(s, "=:")
	if i <= 0 {
		return fmt.Errorf("label %q: want key=value or key:value", s)
	}
	l[s[:i]] = s[i+1:]
	return nil
}

// listFlag collects repeated or comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func submitCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("submit", "docket submit [flags] QUEUE [FILE|-]\n\nSubmits FILE (or stdin) as a job's input and prints the job id, or with\n--wait follows the job and writes its result.", stderr)
	var cn conn
	cn.register(fs)
	var o client.SubmitOptions
	labels := labelFlag{}
	fs.StringVar(&o.ContentType, "content-type", "", "input content type (default: from FILE's extension or content; stdin: application/octet-stream)")
	fs.StringVar(&o.Filename, "filename", "", "with --multipart: the file name sent (default: FILE's base name)")
	fs.BoolVar(&o.Multipart, "multipart", false, `send the input as the "file" part of a multipart form`)
	fs.IntVar(&o.Priority, "priority", 0, "priority: higher runs first")
	fs.DurationVar(&o.Delay, "delay", 0, "run no sooner than this from now")
	runAt := fs.String("run-at", "", "run no sooner than this RFC 3339 time")
	fs.DurationVar(&o.Timeout, "timeout", 0, "per-attempt timeout (default: the queue's)")
	fs.IntVar(&o.MaxAttempts, "max-attempts", 0, "attempts before the job fails (default: the queue's)")
	fs.Var(labels, "label", "label key=value or key:value (repeatable)")
	fs.BoolVar(&o.Unique, "unique", false, "return the existing job if the same input is queued, running or done")
	fs.StringVar(&o.IdempotencyKey, "idempotency-key", "", "resubmits with this key return the first job")
	wait := fs.Bool("wait", false, "wait for the job to end, showing progress on stderr, and write its result")
	out := fs.String("o", "", "write the result to this file, not stdout (implies --wait)")
	pos, err := parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	o.Labels = labels
	if *runAt != "" {
		if o.RunAt, err = time.Parse(time.RFC3339, *runAt); err != nil {
			return fmt.Errorf("--run-at: %w", err)
		}
	}
	queue := pos[0]
	var in io.Reader = stdin
	if len(pos) == 1 && isTerminal(stdin) {
		fmt.Fprintln(stderr, "reading the input from the terminal; end it with Ctrl-D")
	}
	if len(pos) == 2 && pos[1] != "-" {
		f, err := os.Open(pos[1])
		if err != nil {
			return failed(err)
		}
		defer f.Close()
		in = f
		o.Filename = cmpOr(o.Filename, filepath.Base(pos[1]))
		if o.ContentType == "" {
			if o.ContentType, in, err = detectType(f); err != nil {
				return failed(err)
			}
		}
	}
	o.ContentType = cmpOr(o.ContentType, "application/octet-stream")
	c := cn.client()
	job, err := c.Submit(ctx, queue, in, o)
	if err != nil {
		if ctx.Err() != nil {
			return errInterrupted
		}
		return failed(fmt.Errorf("submit: %w", err))
	}
	if !*wait && *out == "" {
		// The id alone on stdout, so that id=$(docket submit ...) works.
		fmt.Fprintln(stdout, job.ID)
		fmt.Fprintf(stderr, "%s %s: %s\n", job.ID, job.State, c.URL(cmpOr(job.Links.Self, "/v1/jobs/"+job.ID)))
		return nil
	}
	fmt.Fprintf(stderr, "%s submitted to %s\n", job.ID, queue)
	return waitAndFetch(ctx, &cn, c, job, *out, stdout, stderr)
}

// detectType names a file's content type from its extension, else from
// its first bytes, and returns the reader to submit: the file itself when
// it could be rewound, so that its size stays known.
func detectType(f *os.File) (string, io.Reader, error) {
	if t := mime.TypeByExtension(filepath.Ext(f.Name())); t != "" {
		return t, f, nil
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return "", nil, err
	}
	head = head[:n]
	t := http.DetectContentType(head)
	if _, err := f.Seek(0, io.SeekStart); err != nil { // a pipe
		return t, io.MultiReader(bytes.NewReader(head), f), nil
	}
	return t, f, nil
}

// waitAndFetch follows a job to its end and writes its result. Ctrl-C
// leaves the job running and says how to come back to it.
func waitAndFetch(ctx context.Context, cn *conn, c *client.Client, job *client.Job, out string, stdout, stderr io.Writer) error {
	final, err := follow(ctx, c, job, stderr)
	if err != nil {
		if ctx.Err() != nil {
			comeBack(cn, job.ID, stderr)
			return errInterrupted
		}
		return failed(err)
	}
	if err := jobOutcome(final); err != nil {
		return err
	}
	if err := fetch(ctx, c, final.ID, "", out, stdout); err != nil {
		if ctx.Err() != nil {
			comeBack(cn, job.ID, stderr)
			return errInterrupted
		}
		return failed(err)
	}
	return nil
}

func comeBack(cn *conn, id string, stderr io.Writer) {
	fmt.Fprintf(stderr, "\nStopped waiting; job %s goes on. To come back to it:\n", id)
	tw := tabwriter.NewWriter(stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  %s\tits state and progress\n", cn.again("jobs get "+id))
	fmt.Fprintf(tw, "  %s\twait for it again\n", cn.again("jobs wait "+id))
	fmt.Fprintf(tw, "  %s\tfetch its result\n", cn.again("jobs result "+id+" -o FILE"))
	fmt.Fprintf(tw, "  %s\tstop it\n", cn.again("jobs cancel "+id))
	tw.Flush()
}

// jobOutcome is nil for a succeeded job, else the error that ended it.
func jobOutcome(j *client.Job) error {
	switch j.State {
	case client.StateSucceeded:
		return nil
	case client.StateFailed:
		msg := "no error message"
		if j.Error != nil {
			msg = j.Error.Message
		}
		return &exitError{1, fmt.Errorf("job %s failed after %d attempt(s): %s", j.ID, j.Attempt, msg)}
	default:
		return &exitError{1, fmt.Errorf("job %s %s", j.ID, j.State)}
	}
}

// follow waits for the job's end, showing its progress on w.
func follow(ctx context.Context, c *client.Client, job *client.Job, w io.Writer) (*client.Job, error) {
	pv := &progressView{w: w, tty: isTerminal(w)}
	defer pv.end()
	if job.Terminal() {
		pv.show(job)
		return job, nil
	}
	return c.Wait(ctx, job.ID, pv.show)
}

// progressView draws a job's progress: one line redrawn in place on a
// terminal, a line per change elsewhere (logs, CI).
type progressView struct {
	w     io.Writer
	tty   bool
	last  string
	drawn bool
}

const barWidth = 20

func (p *progressView) show(j *client.Job) {
	line := describe(j, p.tty)
	if line == p.last {
		return
	}
	p.last = line
	if !p.tty {
		fmt.Fprintf(p.w, "%s %s\n", j.ID, line)
		return
	}
	// Lines longer than the terminal wrap, and \r then only redraws the
	// last row; 79 columns fit any terminal.
	if utf8.RuneCountInString(line) > 79 {
		line = string([]rune(line)[:78]) + "…"
	}
	fmt.Fprintf(p.w, "\r%s\x1b[K", line)
	p.drawn = true
}

func (p *progressView) end() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// describe is a job's progress in a few words: "[#####-----] 3/17 18% page 3".
func describe(j *client.Job, bar bool) string {
	switch j.State {
	case client.StateQueued:
		if j.Position > 0 {
			return fmt.Sprintf("queued, %d ahead", j.Position)
		}
		return "queued"
	case client.StateFailed:
		if j.Error != nil {
			return "failed: " + j.Error.Message
		}
		return "failed"
	case client.StateSucceeded, client.StateCanceled:
		return string(j.State)
	}
	p := j.Progress
	var b strings.Builder
	if pct, ok := percent(p); ok {
		if bar {
			n := int(math.Round(pct / 100 * barWidth))
			n = min(max(n, 0), barWidth)
			b.WriteString("[" + strings.Repeat("#", n) + strings.Repeat("-", barWidth-n) + "] ")
		} else {
			b.WriteString("running ")
		}
		fmt.Fprintf(&b, "%d/%d %.0f%%", p.Current, p.Total, pct)
	} else {
		b.WriteString("running")
		if p.Current > 0 {
			fmt.Fprintf(&b, " %d", p.Current)
		}
	}
	if p.Message != "" {
		b.WriteString(" " + p.Message)
	}
	return b.String()
}

// percent is the server's percentage, or derived when it sent none.
func percent(p client.Progress) (float64, bool) {
	if p.Percent != nil {
		return *p.Percent, true
	}
	if p.Total > 0 {
		return float64(p.Current) * 100 / float64(p.Total), true
	}
	return 0, false
}

// isTerminal reports whether f is a terminal (an *os.File on a character
// device), without a terminal library.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// fetch writes a job's result (or, with name, an artifact) to the file out,
// or stdout when out is "" or "-".
func fetch(ctx context.Context, c *client.Client, id, name, out string, stdout io.Writer) error {
	var body io.ReadCloser
	var err error
	if name == "" {
		_, body, err = c.Result(ctx, id)
	} else {
		_, body, err = c.Artifact(ctx, id, name)
	}
	if pe, ok := errors.AsType[*client.PendingError](err); ok {
		state := "not finished"
		if pe.Job != nil {
			state = string(pe.Job.State)
		}
		return fmt.Errorf("job %s is %s: no result yet (docket jobs wait %s)", id, state, id)
	}
	if err != nil {
		return err
	}
	defer body.Close()
	return writeOutput(out, stdout, body)
}

// writeOutput copies r to the file path (stdout if "" or "-"). The file
// appears only once complete, so an interrupted download never passes for
// a result.
func writeOutput(path string, stdout io.Writer, r io.Reader) error {
	if path == "" || path == "-" {
		_, err := io.Copy(stdout, r)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".part-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(tmp, r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

const jobsUsage = `Usage:
  docket jobs ls [--queue Q] [--state S] [--label k=v] [--limit N] [--all]
  docket jobs get ID                  the job as JSON
  docket jobs wait ID                 wait for its end, showing progress
  docket jobs result ID [-o FILE]     its result
  docket jobs artifacts ID            its artifacts
  docket jobs artifact ID NAME [-o FILE]
  docket jobs cancel ID
  docket jobs retry ID                run a failed or canceled job again
  docket jobs rm ID                   delete it, its result and artifacts

Every command takes --server URL ($DOCKET_SERVER, default ` + defaultServer + `)
and --token TOKEN ($DOCKET_TOKEN).
`

func jobsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, jobsUsage)
		return flag.ErrHelp
	}
	sub, args := args[0], args[1:]
	var cn conn
	fs := newFlagSet("jobs "+sub, "docket jobs "+sub+" [flags] ID", stderr)
	cn.register(fs)
	simple := func(f func(c *client.Client, id string) error) error {
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		return failed(f(cn.client(), pos[0]))
	}
	switch sub {
	case "ls", "list":
		return jobsLs(ctx, fs, &cn, args, stdout, stderr)
	case "get":
		return simple(func(c *client.Client, id string) error {
			j, err := c.Get(ctx, id)
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(j, "", "  ")
			_, err = fmt.Fprintf(stdout, "%s\n", b)
			return err
		})
	case "wait":
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		c := cn.client()
		j, err := follow(ctx, c, &client.Job{ID: pos[0]}, stderr)
		if err != nil {
			if ctx.Err() != nil {
				return errInterrupted
			}
			return failed(err)
		}
		fmt.Fprintln(stdout, j.ID, j.State)
		return jobOutcome(j)
	case "result", "artifact":
		out := fs.String("o", "", "write to this file, not stdout")
		n := 1
		if sub == "artifact" {
			fs.Usage = func() {
				fmt.Fprintf(stderr, "Usage: docket jobs artifact [flags] ID NAME\n\nFlags:\n")
				fs.PrintDefaults()
			}
			n = 2
		}
		pos, err := parse(fs, args, n, n)
		if err != nil {
			return err
		}
		pos = append(pos, "")
		return failed(fetch(ctx, cn.client(), pos[0], pos[1], *out, stdout))
	case "artifacts":
		return simple(func(c *client.Client, id string) error {
			list, err := c.Artifacts(ctx, id)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tSIZE")
			for _, a := range list {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", a.Name, a.ContentType, a.Size)
			}
			return tw.Flush()
		})
	case "cancel", "retry":
		return simple(func(c *client.Client, id string) error {
			f := c.Cancel
			if sub == "retry" {
				f = c.Retry
			}
			j, err := f(ctx, id)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout, j.ID, j.State)
			return err
		})
	case "rm", "delete":
		return simple(func(c *client.Client, id string) error { return c.Delete(ctx, id) })
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, jobsUsage)
		return nil
	}
	fmt.Fprint(stderr, jobsUsage)
	return fmt.Errorf("unknown command jobs %q", sub)
}

func jobsLs(ctx context.Context, fs *flag.FlagSet, cn *conn, args []string, stdout, stderr io.Writer) error {
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: docket jobs ls [flags]\n\nLists jobs, newest first.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var o client.ListOptions
	var states listFlag
	labels := labelFlag{}
	fs.StringVar(&o.Queue, "queue", "", "only this queue's jobs")
	fs.Var(&states, "state", "only jobs in these states (repeatable or comma-separated)")
	fs.Var(labels, "label", "only jobs with this label key=value (repeatable)")
	fs.IntVar(&o.Limit, "limit", 50, "jobs per page")
	fs.StringVar(&o.Cursor, "cursor", "", "the page after a previous listing's last")
	all := fs.Bool("all", false, "every page, not just the first")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	o.States, o.Labels = states, labels
	c := cn.client()
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tQUEUE\tSTATE\tPROGRESS\tAGE")
	now := time.Now()
	for {
		page, err := c.List(ctx, o)
		if err != nil {
			tw.Flush()
			return failed(err)
		}
		for _, j := range page.Jobs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", j.ID, j.Queue, j.State, progressCell(j.Progress), age(now, j.CreatedAt))
		}
		if page.NextCursor == "" {
			break
		}
		if !*all {
			tw.Flush()
			fmt.Fprintf(stderr, "more jobs: the same with --cursor %s, or --all\n", page.NextCursor)
			return nil
		}
		o.Cursor = page.NextCursor
	}
	return tw.Flush()
}

func progressCell(p client.Progress) string {
	if pct, ok := percent(p); ok {
		return fmt.Sprintf("%d/%d %.0f%%", p.Current, p.Total, pct)
	}
	if p.Current > 0 {
		return fmt.Sprint(p.Current)
	}
	return "-"
}

// age is how long ago t was, in one unit, as people read it in a table.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func queuesCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub := "ls"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	var cn conn
	fs := newFlagSet("queues "+sub, "docket queues [ls | pause QUEUE | resume QUEUE] [flags]", stderr)
	cn.register(fs)
	switch sub {
	case "ls", "list":
		if _, err := parse(fs, args, 0, 0); err != nil {
			return err
		}
		qs, err := cn.client().Queues(ctx)
		if err != nil {
			return failed(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSTATUS\tCONCURRENCY\tQUEUED\tRUNNING\tSUCCEEDED\tFAILED\tCANCELED")
		for _, q := range qs {
			status := "active"
			if q.Paused {
				status = "paused"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", q.Name, status, q.Concurrency,
				q.Counts.Queued, q.Counts.Running, q.Counts.Succeeded, q.Counts.Failed, q.Counts.Canceled)
		}
		return tw.Flush()
	case "pause", "resume":
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		c := cn.client()
		f, done := c.Pause, "paused"
		if sub == "resume" {
			f, done = c.Resume, "resumed"
		}
		if _, err := f(ctx, pos[0]); err != nil {
			return failed(err)
		}
		fmt.Fprintln(stdout, pos[0], done)
		return nil
	}
	fs.Usage()
	return fmt.Errorf("unknown command queues %q", sub)
}
