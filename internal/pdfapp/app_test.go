package pdfapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/sqlite"
)

// These tests run the real tools on real documents through a real engine
// and SQLite store: what the app promises (pages, text, progress, clean
// failures, no process left behind) only holds or breaks there.

// regalPDF is a scan of 17 invoices, pages without a text layer.
const regalPDF = "testdata/regal-17pages.pdf"

// needTools finds the tools, or skips the test without them; with CI=true
// it fails instead, since CI installs them and a skip would hide a broken
// setup.
func needTools(t testing.TB) Tools {
	t.Helper()
	tools, err := FindTools(context.Background())
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and the PDF tools are missing: %v", err)
		}
		t.Skipf("PDF tools missing (set CI=true to fail instead): %v", err)
	}
	return tools
}

// pdfEngine is an engine on a fresh SQLite store with the app's queues.
type pdfEngine struct {
	e     *engine.Engine
	st    store.Store
	app   *App
	mu    sync.Mutex
	seen  map[string][]engine.Event
	tools Tools
}

// startPDF starts an engine running the app with tools and opts; the
// queues run one attempt unless attempts says otherwise.
func startPDF(t testing.TB, tools Tools, opts Options) *pdfEngine {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Options{Store: st, TempDir: tmp, ProgressEvery: time.Millisecond,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if opts.TempDir == "" {
		opts.TempDir = tmp
	}
	app, err := Register(e, tools, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	pe := &pdfEngine{e: e, st: st, app: app, seen: map[string][]engine.Event{}, tools: tools}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := e.Stop(ctx); err != nil {
			t.Errorf("engine stop: %v", err)
		}
		st.Close()
	})
	return pe
}

// submit submits a document and records every event of its job.
func (pe *pdfEngine) submit(t testing.TB, queue string, pdf []byte, labels map[string]string) string {
	t.Helper()
	nj := store.NewJob{Queue: queue, Input: store.Data{Blob: job.Blob{Name: "doc.pdf", ContentType: "application/pdf"}, Bytes: pdf},
		Labels: labels}
	out, err := pe.e.Submit(context.Background(), []store.NewJob{nj})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Err != nil {
		t.Fatal(out[0].Err)
	}
	return out[0].Job.ID
}

// watch records the events of every job from now on, until the test
// ends: subscribed before the submit, it sees a job's first progress.
func (pe *pdfEngine) watch(t testing.TB) {
	sub := pe.e.Hub().Subscribe(nil)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case ev := <-sub.C():
				pe.mu.Lock()
				pe.seen[ev.JobID] = append(pe.seen[ev.JobID], ev)
				pe.mu.Unlock()
			}
		}
	})
	t.Cleanup(func() {
		sub.Close()
		close(done)
		wg.Wait()
	})
}

func (pe *pdfEngine) wait(t testing.TB, id string, within time.Duration) *job.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	j, err := pe.e.Wait(ctx, id)
	if err != nil {
		t.Fatalf("job %s did not finish within %s: %v (last %+v)", id, within, err, j)
	}
	return j
}

func (pe *pdfEngine) result(t testing.TB, id string) (string, []byte) {
	t.Helper()
	b, rc, err := pe.st.OpenResult(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b.ContentType, data
}

// artifacts checks that the job has one PNG per page, named in page
// order, and returns the first one decoded.
func (pe *pdfEngine) artifacts(t testing.TB, id string, pages int) (width, height int) {
	t.Helper()
	list, err := pe.st.Artifacts(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range list {
		names = append(names, a.Name)
		if a.ContentType != ImageType || a.Size == 0 {
			t.Errorf("artifact %s: %s, %d bytes", a.Name, a.ContentType, a.Size)
		}
	}
	slices.Sort(names)
	var want []string
	for p := 1; p <= pages; p++ {
		want = append(want, ArtifactName(p))
	}
	if !slices.Equal(names, want) {
		t.Fatalf("artifacts %v, want %v", names, want)
	}
	_, rc, err := pe.st.OpenArtifact(context.Background(), id, ArtifactName(1))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	img, err := png.Decode(rc)
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", ArtifactName(1), err)
	}
	return img.Bounds().Dx(), img.Bounds().Dy()
}

// threePages is a small generated document whose words tesseract reads
// exactly.
var threePages = []string{
	"Quarterly report\nZebra crossing",
	"Marmalade inventory\nLighthouse keeper",
	"Saxophone lessons\nVolcano observatory",
}

func TestRenderGeneratedPDF(t *testing.T) {
	tools := needTools(t)
	pe := startPDF(t, tools, Options{})
	doc := testPDF(threePages, "")
	cases := []struct {
		name   string
		labels map[string]string
		width  int // of a US Letter page: 8.5 in × DPI
	}{
		{"default DPI", nil, 1275},
		{"dpi label", map[string]string{DPILabel: "72"}, 612},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := pe.submit(t, RenderQueue, doc, c.labels)
			j := pe.wait(t, id, time.Minute)
			if j.State != job.Succeeded {
				t.Fatalf("state %s, error %+v", j.State, j.Error)
			}
			if j.Progress.Current != 3 || j.Progress.Total != 3 {
				t.Errorf("progress %+v, want 3 of 3", j.Progress)
			}
			w, h := pe.artifacts(t, id, 3)
			if w != c.width || h != c.width*11*2/17 {
				t.Errorf("page 1 is %dx%d pixels, want %dx%d", w, h, c.width, c.width*11*2/17)
			}
			ctype, body := pe.result(t, id)
			var s Summary
			if err := json.Unmarshal(body, &s); err != nil || ctype != SummaryType {
				t.Fatalf("summary %q (%s): %v", body, ctype, err)
			}
			want := Summary{Pages: 3, DPI: c.width * 2 / 17, Images: []string{"page-001.png", "page-002.png", "page-003.png"}}
			if s.Pages != want.Pages || s.DPI != want.DPI || !slices.Equal(s.Images, want.Images) {
				t.Errorf("summary %+v, want %+v", s, want)
			}
		})
	}
}

func TestOCRGeneratedPDF(t *testing.T) {
	tools := needTools(t)
	pe := startPDF(t, tools, Options{})
	id := pe.submit(t, OCRQueue, testPDF(threePages, ""), nil)
	j := pe.wait(t, id, time.Minute)
	if j.State != job.Succeeded {
		t.Fatalf("state %s, error %+v", j.State, j.Error)
	}
	pe.artifacts(t, id, 3)
	ctype, md := pe.result(t, id)
	if ctype != MarkdownType {
		t.Errorf("content type %q, want %q", ctype, MarkdownType)
	}
	sections := pageSections(t, string(md), 3)
	for i, text := range threePages {
		for _, word := range strings.Fields(text) {
			if !strings.Contains(sections[i], word) {
				t.Errorf("page %d: %q not read; its markdown:\n%s", i+1, word, sections[i])
			}
		}
	}
}

// pageSections splits the markdown at its page headings, checking that
// there is one per page, in order, and no other heading.
func pageSections(t testing.TB, md string, pages int) []string {
	t.Helper()
	heading := regexp.MustCompile(`(?m)^#+ .*$`)
	heads := heading.FindAllString(md, -1)
	var want []string
	for p := 1; p <= pages; p++ {
		want = append(want, "## Page "+strconv.Itoa(p))
	}
	if !slices.Equal(heads, want) {
		t.Fatalf("headings %q, want %q; markdown:\n%s", heads, want, md)
	}
	parts := heading.Split(md, -1)
	return parts[1:]
}

// The 17 scanned pages, read in full once: the text, the images, and
// progress rising one page at a time to a total known before the first
// page is done.
func TestOCRScannedDocument(t *testing.T) {
	tools := needTools(t)
	doc, err := os.ReadFile(regalPDF)
	if err != nil {
		t.Fatal(err)
	}
	pe := startPDF(t, tools, Options{})
	pe.watch(t)
	id := pe.submit(t, OCRQueue, doc, nil)
	j := pe.wait(t, id, 3*time.Minute)
	if j.State != job.Succeeded {
		t.Fatalf("state %s, error %+v", j.State, j.Error)
	}
	if j.Progress.Current != 17 || j.Progress.Total != 17 {
		t.Errorf("final progress %+v, want 17 of 17", j.Progress)
	}
	pe.artifacts(t, id, 17)
	_, md := pe.result(t, id)
	sections := pageSections(t, string(md), 17)
	// Words of the invoices that tesseract reads on their page (checked on
	// the rendered images).
	for page, word := range map[int]string{1: "Guardforce", 2: "VEGETARIAN", 10: "Wholesale", 17: "LUCULLUS"} {
		if !strings.Contains(strings.ToLower(sections[page-1]), strings.ToLower(word)) {
			t.Errorf("page %d: %q not read; its markdown:\n%s", page, word, sections[page-1])
		}
	}
	if n := strings.Count(strings.ToUpper(string(md)), "INVOICE"); n < 10 {
		t.Errorf("INVOICE read %d times in 17 invoices", n)
	}

	// The stored progress, as every watcher saw it.
	time.Sleep(50 * time.Millisecond) // the hub delivers asynchronously
	pe.mu.Lock()
	events := pe.seen[id]
	pe.mu.Unlock()
	var progress []job.Progress
	for _, ev := range events {
		if ev.State == job.Running && ev.Progress.Total > 0 {
			progress = append(progress, ev.Progress)
		}
	}
	if len(progress) < 2 {
		t.Fatalf("progress events %+v", progress)
	}
	if first := progress[0]; first.Current != 0 || first.Total != 17 {
		t.Errorf("first progress %+v, want 0 of 17 before any page is done", first)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i].Total != 17 || progress[i].Current < progress[i-1].Current {
			t.Errorf("progress went from %+v to %+v", progress[i-1], progress[i])
		}
	}
	if last := progress[len(progress)-1]; last.Current != 17 {
		t.Errorf("last progress %+v, want 17 of 17", last)
	}
	t.Logf("%d progress events: %+v ... %+v", len(progress), progress[0], progress[len(progress)-1])
}

// Documents that are not PDFs, or that poppler cannot open, fail at once,
// without retry and with a message that says why.
func TestBadDocumentsFailCleanly(t *testing.T) {
	tools := needTools(t)
	regal, err := os.ReadFile(regalPDF)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 50_000)
	for i := range garbage {
		garbage[i] = byte(i*7919 + i/13)
	}
	cases := []struct {
		name  string
		input []byte
		want  string
	}{
		{"empty", nil, "the input is empty"},
		{"garbage", garbage, "not a PDF"},
		{"garbage after a PDF header", append([]byte("%PDF-1.7\n"), garbage...), "not a readable PDF: pdfinfo: exit status 1"},
		{"truncated", regal[:len(regal)/2], "Couldn't read xref table"},
		{"encrypted", testPDF([]string{"Secret"}, "sesame"), "protected by a password"},
		{"no pages", []byte("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"), "page count 0"},
	}
	pe := startPDF(t, tools, Options{})
	for _, queue := range []string{RenderQueue, OCRQueue} {
		for _, c := range cases {
			t.Run(queue+"/"+c.name, func(t *testing.T) {
				nj := store.NewJob{Queue: queue, MaxAttempts: 3, Input: store.Data{Bytes: c.input}}
				out, err := pe.e.Submit(context.Background(), []store.NewJob{nj})
				if err != nil || out[0].Err != nil {
					t.Fatal(err, out[0].Err)
				}
				j := pe.wait(t, out[0].Job.ID, 30*time.Second)
				if j.State != job.Failed || j.Attempt != 1 || j.Error == nil {
					t.Fatalf("state %s after %d attempts (of 3), error %+v: want failed at once", j.State, j.Attempt, j.Error)
				}
				if !strings.Contains(j.Error.Message, c.want) {
					t.Errorf("error %q, want it to say %q", j.Error.Message, c.want)
				}
				if len(j.Error.Message) > 2000 {
					t.Errorf("error message of %d bytes", len(j.Error.Message))
				}
				t.Logf("%s", j.Error.Message)
			})
		}
	}
}

func TestDPILabelBounds(t *testing.T) {
	a, err := New(Tools{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		label string
		want  int // 0: refused
	}{
		{"", 0}, {"abc", 0}, {"49", 0}, {"601", 0}, {"-150", 0},
		{"50", 50}, {" 300 ", 300}, {"600", 600},
	}
	for _, c := range cases {
		got, err := a.dpi(map[string]string{DPILabel: c.label})
		if c.want == 0 && err == nil || c.want != 0 && (err != nil || got != c.want) {
			t.Errorf("dpi label %q: %d, %v; want %d", c.label, got, err, c.want)
		}
	}
	if got, err := a.dpi(nil); got != DefaultDPI || err != nil {
		t.Errorf("no label: %d, %v", got, err)
	}
	if _, err := New(Tools{}, Options{DPI: 1000}); err == nil {
		t.Error("Options.DPI 1000 accepted")
	}
}

// wrapTool writes a shell script in dir that stands for tool: it notes its
// pid and what it runs in dir/pids, then runs body (by default the real
// tool, in the same process, so that the pid is the tool's).
func wrapTool(t testing.TB, dir string, tool Tool, body string) Tool {
	t.Helper()
	if body == "" {
		body = fmt.Sprintf(`exec %q "$@"`, tool.Path)
	}
	path := filepath.Join(dir, tool.Name)
	script := fmt.Sprintf("#!/bin/sh\necho \"$$ %s\" >> %q\n%s\n", tool.Name, filepath.Join(dir, "pids"), body)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tool.Path = path
	return tool
}

// pids reads the pids the wrappers noted.
func pids(t testing.TB, dir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "pids"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			t.Fatalf("pids file: %q", line)
		}
		out = append(out, pid)
	}
	return out
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Canceling a job kills its tools at once: none outlives the job.
func TestCancelKillsTools(t *testing.T) {
	tools := needTools(t)
	doc, err := os.ReadFile(regalPDF)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tools.PDFToPPM = wrapTool(t, dir, tools.PDFToPPM, "")
	tools.Tesseract = wrapTool(t, dir, tools.Tesseract, "")
	pe := startPDF(t, tools, Options{})
	for _, queue := range []string{RenderQueue, OCRQueue} {
		t.Run(queue, func(t *testing.T) {
			os.Remove(filepath.Join(dir, "pids"))
			// At 300 DPI every page takes a few seconds.
			id := pe.submit(t, queue, doc, map[string]string{DPILabel: "300"})
			deadline := time.Now().Add(30 * time.Second)
			for len(pids(t, dir)) < 2 {
				if time.Now().After(deadline) {
					t.Fatal("the tools did not start")
				}
				time.Sleep(10 * time.Millisecond)
			}
			running := pids(t, dir)
			for _, pid := range running {
				if !alive(pid) {
					t.Fatalf("tool %d ended before the cancel: the document is too quick for this test", pid)
				}
			}
			canceled := time.Now()
			if _, err := pe.e.Cancel(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			if j := pe.wait(t, id, 10*time.Second); j.State != job.Canceled {
				t.Fatalf("state %s", j.State)
			}
			for _, pid := range pids(t, dir) {
				for alive(pid) {
					if time.Since(canceled) > 5*time.Second {
						t.Fatalf("tool %d still running 5 s after the cancel", pid)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			t.Logf("%d tools killed within %s", len(running), time.Since(canceled).Round(time.Millisecond))
		})
	}
}

// A tool that hangs is killed after PageTimeout without a page done, and
// the job fails with a message that says so rather than hanging.
func TestHungToolIsKilled(t *testing.T) {
	tools := needTools(t)
	dir := t.TempDir()
	cases := []struct {
		name  string
		queue string
		wrap  func(Tools) Tools
	}{
		{"pdfinfo", RenderQueue, func(tl Tools) Tools { tl.PDFInfo = wrapTool(t, dir, tl.PDFInfo, "exec sleep 60"); return tl }},
		{"pdftoppm", RenderQueue, func(tl Tools) Tools { tl.PDFToPPM = wrapTool(t, dir, tl.PDFToPPM, "exec sleep 60"); return tl }},
		{"tesseract", OCRQueue, func(tl Tools) Tools { tl.Tesseract = wrapTool(t, dir, tl.Tesseract, "exec sleep 60"); return tl }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(filepath.Join(dir, "pids"))
			pe := startPDF(t, c.wrap(tools), Options{PageTimeout: 300 * time.Millisecond})
			start := time.Now()
			id := pe.submit(t, c.queue, testPDF(threePages[:1], ""), nil)
			j := pe.wait(t, id, 20*time.Second)
			if j.State != job.Failed || j.Attempt != 1 || j.Error == nil || !strings.Contains(j.Error.Message, "killed after 300ms") {
				t.Fatalf("state %s after %d attempts, error %+v", j.State, j.Attempt, j.Error)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %s", took)
			}
			for _, pid := range pids(t, dir) {
				if alive(pid) {
					t.Errorf("hung tool %d still running", pid)
				}
			}
		})
	}
}

// Documents submitted together share the slots: never more tools at once
// than slots, and all slots used while there is work.
func TestDocumentsShareSlots(t *testing.T) {
	tools := needTools(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	// Each run notes its start and end; O_APPEND keeps short lines whole.
	count := func(tool Tool) Tool {
		return wrapTool(t, dir, tool, fmt.Sprintf(`echo "+" >> %q; %q "$@"; rc=$?; echo "-" >> %q; exit $rc`, log, tool.Path, log))
	}
	tools.PDFToPPM = count(tools.PDFToPPM)
	tools.Tesseract = count(tools.Tesseract)
	const slots = 2
	pe := startPDF(t, tools, Options{Slots: slots})
	var ids []string
	for i := range 3 {
		ids = append(ids, pe.submit(t, OCRQueue, testPDF(threePages, ""), nil))
		ids = append(ids, pe.submit(t, RenderQueue, testPDF(threePages[i:], ""), nil))
	}
	for _, id := range ids {
		if j := pe.wait(t, id, 2*time.Minute); j.State != job.Succeeded {
			t.Fatalf("job %s: %s %+v", id, j.State, j.Error)
		}
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	running, most := 0, 0
	for _, c := range bytes.Fields(b) {
		if c[0] == '+' {
			running++
		} else {
			running--
		}
		most = max(most, running)
	}
	if most != slots {
		t.Errorf("at most %d tools ran at once, want %d (the slots)", most, slots)
	}
}

func TestSlotsServeByPriority(t *testing.T) {
	s := newCPUSlots(1)
	ctx := context.Background()
	if err := s.acquire(ctx, turn{ticket: 1}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []uint64
	var wg sync.WaitGroup
	waiters := []turn{{ticket: 5}, {ticket: 3}, {ticket: 9, jobPriority: 1}, {ticket: 4}}
	for i, p := range waiters {
		wg.Go(func() {
			if err := s.acquire(ctx, p); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, p.ticket)
			mu.Unlock()
			s.release()
		})
		// Each waiter queued before the next.
		for {
			s.mu.Lock()
			n := len(s.waiters)
			s.mu.Unlock()
			if n == i+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	// One that gives up leaves the queue.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.acquire(gone, turn{ticket: 0}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled acquire: %v", err)
	}
	s.release()
	wg.Wait()
	if want := []uint64{9, 3, 4, 5}; !slices.Equal(order, want) {
		t.Errorf("served %v, want %v (job priority first, then start order)", order, want)
	}
	if s.free != 1 || len(s.waiters) != 0 {
		t.Errorf("free %d, waiters %d after all released", s.free, len(s.waiters))
	}
}

// A holder with more work keeps its slot, unless a waiter comes first.
func TestSlotsKeep(t *testing.T) {
	s := newCPUSlots(1)
	ctx := context.Background()
	holder := turn{ticket: 2}
	if err := s.acquire(ctx, holder); err != nil {
		t.Fatal(err)
	}
	if !s.keep(holder) {
		t.Fatal("gave the slot away with nobody waiting")
	}
	got := make(chan turn, 2)
	var wg sync.WaitGroup
	defer wg.Wait()
	wait := func(p turn) {
		wg.Go(func() {
			if err := s.acquire(ctx, p); err != nil {
				t.Error(err)
				return
			}
			got <- p
		})
		for {
			s.mu.Lock()
			n := len(s.waiters)
			s.mu.Unlock()
			if n > 0 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait(turn{ticket: 3}) // a later document
	if !s.keep(holder) {
		t.Fatal("gave the slot to a later document")
	}
	s.mu.Lock()
	s.waiters[0].p.jobPriority = 1 // now it comes first
	s.mu.Unlock()
	if s.keep(holder) {
		t.Fatal("kept the slot from a document of a higher job priority")
	}
	if p := <-got; p.ticket != 3 {
		t.Errorf("granted to %+v", p)
	}
	s.release()
}

func TestPageMarkdown(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"\f", ""},
		{"Hello  \nworld\n\n\n\nagain\n\f", "Hello\nworld\n\nagain"},
		{"\n\n  indented\n", "  indented"},
		{"# INVOICE 2\n  #5 item", "\\# INVOICE 2\n  \\#5 item"},
		{"bad \xff byte", "bad \uFFFD byte"},
	}
	for _, c := range cases {
		if got := pageMarkdown([]byte(c.in)); got != c.want {
			t.Errorf("pageMarkdown(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseRendered(t *testing.T) {
	cases := []struct {
		line string
		page int
		ok   bool
	}{
		{"3 9 /w/p-03.png", 3, true},
		{"12 17 /w/p-12.png", 12, true},
		{"2 9 /w/p-02.png", 0, false},  // outside the range
		{"3 9 /x/p-03.png", 0, false},  // elsewhere
		{"3 9 /w/sub/p.png", 0, false}, // elsewhere
		{"Syntax Error: Couldn't find trailer dictionary", 0, false},
		{"Syntax Error (30): Illegal character ')'", 0, false},
		{"3 9", 0, false},
	}
	for _, c := range cases {
		page, _, ok := parseRendered(c.line, 3, 12, "/w")
		if page != c.page || ok != c.ok {
			t.Errorf("%q: page %d %v, want %d %v", c.line, page, ok, c.page, c.ok)
		}
	}
}

func TestStderrLines(t *testing.T) {
	var progress []string
	w := &stderrLines{max: 64, line: func(s string) bool {
		if strings.HasPrefix(s, "progress") {
			progress = append(progress, s)
			return true
		}
		return false
	}}
	io.WriteString(w, "Syntax Error: bad\nSyntax Error: bad\nprogress 1\nSyntax ")
	io.WriteString(w, "Error: worse\nprogress 2")
	w.flush()
	if got, want := w.String(), "Syntax Error: bad; Syntax Error: worse"; got != want {
		t.Errorf("kept %q, want %q", got, want)
	}
	if !slices.Equal(progress, []string{"progress 1", "progress 2"}) {
		t.Errorf("progress lines %q", progress)
	}
	for i := range 10 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if got, want := w.String(), "…line 6; line 7; line 8; line 9"; got != want {
		t.Errorf("kept %q, want %q", got, want)
	}
	io.WriteString(w, strings.Repeat("x", 100)+"\n")
	if s := w.String(); len(s) > 64+len("…") || !strings.HasPrefix(s, "…") {
		t.Errorf("tail %q", s)
	}
}

// A damaged document that poppler still renders succeeds, and the summary
// says what pdftoppm complained about.
func TestRenderDamagedPDFWarns(t *testing.T) {
	tools := needTools(t)
	pe := startPDF(t, tools, Options{})
	doc := testPDF(threePages, "")
	// Page 2 names a font its page does not have.
	i := bytes.Index(doc, []byte("Marmalade"))
	j := bytes.LastIndex(doc[:i], []byte("/F1 "))
	doc = slices.Concat(doc[:j], []byte("/F9 "), doc[j+4:])
	id := pe.submit(t, RenderQueue, doc, map[string]string{DPILabel: "50"})
	if j := pe.wait(t, id, time.Minute); j.State != job.Succeeded {
		t.Fatalf("state %s, error %+v", j.State, j.Error)
	}
	_, body := pe.result(t, id)
	var s Summary
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	if s.Pages != 3 || !slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, "Unknown font tag 'F9'") }) {
		t.Errorf("summary %s, want 3 pages and pdftoppm's warning", body)
	}
}
