package pdfapp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
)

// Content types of what the queues produce.
const (
	// ImageType is the content type of the page artifacts.
	ImageType = "image/png"
	// MarkdownType is the content type of pdf.ocr's result.
	MarkdownType = "text/markdown; charset=utf-8"
	// SummaryType is the content type of pdf.render's result.
	SummaryType = "application/json"
)

// DPILabel is the job label that asks for another resolution than the
// app's, from MinDPI to MaxDPI: `?label=dpi:300` on a submit.
const DPILabel = "dpi"

// The resolutions a job may ask for: below 50 DPI text is unreadable, above
// 600 a page is hundreds of megabytes of pixels.
const (
	MinDPI = 50
	MaxDPI = 600
)

// Options configure the app. Zero values take the documented defaults.
type Options struct {
	// DPI is the resolution pages are rendered at (default 150), unless a
	// job's dpi label says otherwise.
	DPI int
	// Slots is how many tool processes (pdftoppm, tesseract) the app runs
	// at once, across both queues and all their jobs (default
	// runtime.NumCPU()): one document alone uses them all, several share
	// them without oversubscribing the cores.
	Slots int
	// PageTimeout kills a tool that finishes no page for this long
	// (default 2m): the page is beyond what it can do, and the job fails.
	PageTimeout time.Duration
	// MaxPages refuses larger documents (default 2000).
	MaxPages int
	// TempDir receives the jobs' work directories (default os.TempDir()).
	// On the file system of the engine's temporary files, handing a page
	// image over is a rename rather than a copy.
	TempDir string
	// Logger receives the warnings of tools that succeeded anyway
	// (default slog.Default()).
	Logger *slog.Logger
}

// DefaultDPI is the default resolution of the page images.
const DefaultDPI = 150

func (o *Options) defaults() error {
	if o.DPI == 0 {
		o.DPI = DefaultDPI
	}
	if o.DPI < MinDPI || o.DPI > MaxDPI {
		return fmt.Errorf("pdfapp: DPI %d: want %d to %d", o.DPI, MinDPI, MaxDPI)
	}
	if o.Slots <= 0 {
		o.Slots = runtime.NumCPU()
	}
	if o.PageTimeout <= 0 {
		o.PageTimeout = 2 * time.Minute
	}
	if o.MaxPages <= 0 {
		o.MaxPages = 2000
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	// The paths given to the tools must not depend on their directory.
	dir, err := filepath.Abs(o.TempDir)
	if err != nil {
		return fmt.Errorf("pdfapp: temporary directory: %w", err)
	}
	o.TempDir = dir
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// App runs the PDF queues of one process; its slots are shared by both.
type App struct {
	tools   Tools
	opts    Options
	pool    *cpuSlots
	tickets atomic.Uint64
}

// New returns the app running tools (see FindTools) with opts.
func New(tools Tools, opts Options) (*App, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return &App{tools: tools, opts: opts, pool: newCPUSlots(opts.Slots)}, nil
}

// Register declares the two queues on e, with their default settings (see
// Queues), and returns the app running them.
func Register(e *engine.Engine, tools Tools, opts Options) (*App, error) {
	a, err := New(tools, opts)
	if err != nil {
		return nil, err
	}
	for _, q := range a.Queues() {
		if err := e.AddQueue(q); err != nil {
			return nil, fmt.Errorf("pdfapp: %w", err)
		}
	}
	return a, nil
}

// Tools returns the programs the app runs.
func (a *App) Tools() Tools { return a.tools }

// Options returns the app's options, defaults filled in.
func (a *App) Options() Options { return a.opts }

// Queues returns the app's queues with their handlers and default
// settings, for the caller to adjust before declaring them.
//
// Each queue runs max(2, Slots) documents at once: the slots bound the CPU
// used, so more documents in flight would only wait, while a second one
// keeps the cores busy during the last pages of the first. Failures caused
// by the document itself are permanent; others (a full disk, a tool killed
// from outside) are retried.
func (a *App) Queues() []engine.Queue {
	conc := max(2, a.opts.Slots)
	return []engine.Queue{
		{Name: RenderQueue, Concurrency: conc, Timeout: 30 * time.Minute, MaxAttempts: 3, Retention: 24 * time.Hour,
			Handler: engine.HandlerFunc(func(ctx context.Context, t *engine.Task) error { return a.run(ctx, t, false) })},
		{Name: OCRQueue, Concurrency: conc, Timeout: time.Hour, MaxAttempts: 3, Retention: 24 * time.Hour,
			Handler: engine.HandlerFunc(func(ctx context.Context, t *engine.Task) error { return a.run(ctx, t, true) })},
	}
}

// jobTask is what the handlers need of a running job; *engine.Task has it.
type jobTask interface {
	Job() *job.Job
	OpenInput(ctx context.Context) (io.ReadCloser, error)
	Progress(current, total int64, message string)
	SetResult(contentType string, b []byte)
	SetResultFile(contentType, path string) error
	AddArtifactFile(name, contentType, path string) error
}

// Summary is pdf.render's result.
type Summary struct {
	Pages  int      `json:"pages"`
	DPI    int      `json:"dpi"`
	Images []string `json:"images"`
	// Warnings are what pdftoppm said about a damaged document it still
	// rendered (some pages may be partly blank).
	Warnings []string `json:"warnings,omitempty"`
}

// run is both queues' handler: pdf.ocr when ocr is set, pdf.render if not.
func (a *App) run(ctx context.Context, t jobTask, ocr bool) error {
	dpi, err := a.dpi(t.Job().Labels)
	if err != nil {
		return engine.Permanent(err)
	}
	dir, err := os.MkdirTemp(a.opts.TempDir, "pdf-*")
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	input := filepath.Join(dir, "input.pdf")
	if err := copyPDFInput(ctx, t, input); err != nil {
		return err
	}
	pages, err := a.pageCount(ctx, input)
	if err != nil {
		return err
	}
	// The total is known before any page is done, so that a client sees
	// "0 of 17" rather than an unknown total.
	t.Progress(0, int64(pages), fmt.Sprintf("%d pages", pages))

	d := &document{app: a, t: t, ocr: ocr, dir: dir, input: input, pages: pages, dpi: dpi, next: 1,
		place: turn{jobPriority: t.Job().Priority, ticket: a.tickets.Add(1)}, changed: make(chan struct{})}
	if err := d.process(ctx); err != nil {
		return err
	}
	if ocr {
		return d.markdown()
	}
	return d.summary()
}

// dpi is the job's dpi label, else the app's.
func (a *App) dpi(labels map[string]string) (int, error) {
	v, ok := labels[DPILabel]
	if !ok {
		return a.opts.DPI, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < MinDPI || n > MaxDPI {
		return 0, fmt.Errorf("label %s=%q: want a resolution from %d to %d", DPILabel, v, MinDPI, MaxDPI)
	}
	return n, nil
}

// pdfHeaderWindow is how far into a file PDF readers look for "%PDF-".
const pdfHeaderWindow = 1024

// copyPDFInput writes the job's input to path, since the tools read files,
// and refuses at once an input that cannot be a PDF.
func copyPDFInput(ctx context.Context, t jobTask, path string) error {
	rc, err := t.OpenInput(ctx)
	if err != nil {
		return fmt.Errorf("open input: %w", err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, pdfHeaderWindow)
	head, err := br.Peek(pdfHeaderWindow)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read input: %w", err)
	}
	switch {
	case len(head) == 0:
		return engine.Permanent(errors.New("the input is empty: submit the PDF file as the job's input"))
	case !bytes.Contains(head, []byte("%PDF-")):
		return engine.Permanent(fmt.Errorf("the input is not a PDF: no %%PDF- header in its first %d bytes", pdfHeaderWindow))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("input file: %w", err)
	}
	_, err = io.Copy(f, br)
	if err = errors.Join(err, f.Close()); err != nil {
		return fmt.Errorf("copy input: %w", err)
	}
	return nil
}

// pageCount asks pdfinfo for the number of pages, which also checks that
// poppler can open the document at all.
func (a *App) pageCount(ctx context.Context, input string) (int, error) {
	var out bytes.Buffer
	_, err := runTool(ctx, toolRun{argv: []string{a.tools.PDFInfo.Path, input}, stdout: &cappedWriter{w: &out, n: 1 << 20}, idle: a.opts.PageTimeout})
	if err != nil {
		return 0, unreadablePDF(err)
	}
	// Metadata (title, author...) comes first and may hold any text; the
	// last "Pages:" line is pdfinfo's own.
	pages := -1
	for line := range strings.Lines(out.String()) {
		if v, ok := strings.CutPrefix(line, "Pages:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				pages = n
			}
		}
	}
	switch {
	case pages < 0:
		return 0, engine.Permanent(errors.New("the input is not a readable PDF: pdfinfo gave no page count"))
	case pages == 0:
		return 0, engine.Permanent(errors.New("the PDF has no pages"))
	case pages > a.opts.MaxPages:
		return 0, engine.Permanent(fmt.Errorf("the PDF has %d pages, more than the %d allowed", pages, a.opts.MaxPages))
	}
	return pages, nil
}

// unreadablePDF turns a tool's failure on the document into a permanent
// error that says what is wrong with it; other errors (the job canceled,
// the tool missing) pass unchanged.
func unreadablePDF(err error) error {
	var te *toolError
	if !errors.As(err, &te) || te.code < 0 && te.idle == 0 {
		return err
	}
	switch {
	case te.idle > 0:
		return engine.Permanent(fmt.Errorf("the PDF could not be processed in time: %w", err))
	case strings.Contains(te.stderr, "Incorrect password"):
		return engine.Permanent(fmt.Errorf("the PDF is protected by a password: %w", err))
	}
	return engine.Permanent(fmt.Errorf("the input is not a readable PDF: %w", err))
}

// cappedWriter keeps the first n bytes written and drops the rest.
type cappedWriter struct {
	w io.Writer
	n int64
}

func (l *cappedWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	q := p
	if int64(len(q)) > l.n {
		q = q[:l.n]
	}
	n, err := l.w.Write(q)
	l.n -= int64(n)
	if err != nil {
		return n, err
	}
	return len(p), nil
}

// summary sets pdf.render's result.
func (d *document) summary() error {
	s := Summary{Pages: d.pages, DPI: d.dpi, Images: make([]string, d.pages), Warnings: d.warnings}
	for i := range d.pages {
		s.Images[i] = ArtifactName(i + 1)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	d.t.SetResult(SummaryType, b)
	return nil
}

// markdown joins the pages' text into pdf.ocr's result, a heading per page,
// through a file: a long document's text need not be held in memory.
func (d *document) markdown() error {
	path := filepath.Join(d.dir, "result.md")
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("markdown: %w", err)
	}
	w := bufio.NewWriter(f)
	for page := 1; page <= d.pages; page++ {
		text, err := os.ReadFile(d.textPath(page))
		if err != nil {
			f.Close()
			return fmt.Errorf("markdown: page %d: %w", page, err)
		}
		if page > 1 {
			w.WriteString("\n")
		}
		fmt.Fprintf(w, "## Page %d\n\n", page)
		if md := pageMarkdown(text); md != "" {
			w.WriteString(md)
			w.WriteString("\n")
		}
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return fmt.Errorf("markdown: %w", err)
	}
	if err := d.t.SetResultFile(MarkdownType, path); err != nil {
		return fmt.Errorf("markdown: %w", err)
	}
	return nil
}

// pageMarkdown tidies tesseract's text of one page: no form feed, no
// trailing blanks, at most one empty line in a row, and a '#' starting a
// line escaped, so that the only headings are the pages'.
func pageMarkdown(text []byte) string {
	var b strings.Builder
	blank := false
	for line := range strings.Lines(strings.ToValidUTF8(string(text), "\uFFFD")) {
		line = strings.TrimRight(line, " \t\r\n\f\v")
		line = strings.ReplaceAll(line, "\f", "")
		if strings.TrimSpace(line) == "" {
			blank = b.Len() > 0
			continue
		}
		if blank {
			b.WriteString("\n")
			blank = false
		}
		if strings.HasPrefix(strings.TrimLeft(line, " "), "#") {
			i := strings.Index(line, "#")
			line = line[:i] + `\` + line[i:]
		}
		b.WriteString(line)
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}
