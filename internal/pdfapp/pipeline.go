package pdfapp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/docket/docket/internal/engine"
)

// document is one job's document on its way through the tools.
//
// Its pages are processed by lanes, as many as the app has slots: each
// lane waits for work, takes a slot, takes the next piece of work, runs it
// and gives the slot back. A piece of work is either the OCR of one
// rendered page (first, so that pages finish in a steady stream and their
// images do not pile up), or the rendering of the next range of pages. A
// range is a share of what is left, ceil(left/slots) pages (at most
// maxRange), as in guided self-scheduling: the first ranges are long, which
// spares pdftoppm reopening the document for every page, and the last are
// single pages, so that the lanes finish together.
type document struct {
	app   *App
	t     jobTask
	ocr   bool
	dir   string
	input string
	pages int
	dpi   int
	place turn // in the slots' queue
	fail  context.CancelCauseFunc

	mu        sync.Mutex
	next      int            // the first page not given to a render yet
	rendering int            // render processes running
	ready     []int          // rendered pages waiting for OCR
	images    map[int]string // page → its image, until handed to the task
	done      int            // pages finished
	changed   chan struct{}  // closed (and replaced) when work may have appeared
	warnings  []string
}

// piece is one piece of a document's work: OCR of page, or rendering of
// pages first to last.
type piece struct {
	page        int
	first, last int
}

// process runs the document's lanes until every page is done or one fails.
func (d *document) process(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	d.fail = cancel
	d.images = map[int]string{}
	var wg sync.WaitGroup
	for range min(d.app.opts.Slots, d.pages) {
		wg.Go(func() {
			if err := d.lane(ctx); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// lane does the document's work, a piece at a time, each on a slot. It
// keeps its slot from one piece to the next unless a document before it
// waits for one.
func (d *document) lane(ctx context.Context) (err error) {
	held := false
	defer func() {
		if held {
			d.app.pool.release()
		}
	}()
	for {
		if !held {
			more, err := d.await(ctx)
			if err != nil || !more {
				return err
			}
			if err := d.app.pool.acquire(ctx, d.place); err != nil {
				return err
			}
			held = true
		}
		w, ok := d.take()
		if !ok {
			// Nothing to do now (another lane took the last piece, or
			// the pages to read are still being rendered).
			d.app.pool.release()
			held = false
			continue
		}
		if w.page > 0 {
			err = d.read(ctx, w.page)
		} else {
			err = d.render(ctx, w.first, w.last)
		}
		if err != nil {
			return err
		}
		held = d.app.pool.keep(d.place)
	}
}

// await waits until there may be work for a lane, and reports false when
// there will be none.
func (d *document) await(ctx context.Context) (bool, error) {
	for {
		d.mu.Lock()
		if d.next <= d.pages || len(d.ready) > 0 {
			d.mu.Unlock()
			return true, nil
		}
		if !d.ocr || d.rendering == 0 {
			d.mu.Unlock()
			return false, nil
		}
		// Pages being rendered will need reading.
		changed := d.changed
		d.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return false, context.Cause(ctx)
		}
	}
}

func (d *document) take() (piece, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ready) > 0 {
		p := d.ready[0]
		d.ready = d.ready[1:]
		return piece{page: p}, true
	}
	if left := d.pages - d.next + 1; left > 0 {
		n := min((left+d.app.opts.Slots-1)/d.app.opts.Slots, maxRange)
		w := piece{first: d.next, last: d.next + n - 1}
		d.next += n
		d.rendering++
		return w, true
	}
	return piece{}, false
}

// maxRange bounds a render range. A range holds its slot until its last
// page is done, and the slot may be one that a document started earlier
// let go for a moment, its lanes waiting for pages being rendered: four
// pages (2 s at 150 DPI) is as long as that document then waits for it,
// while pdftoppm still opens a document only a few times.
const maxRange = 4

// notify wakes the lanes waiting for work. d.mu must be held.
func (d *document) notify() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// step counts a finished page. Progress counts pages done, not page
// numbers: lanes finish pages out of order, and progress must only rise.
func (d *document) step(page int, what string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done++
	d.t.Progress(int64(d.done), int64(d.pages), fmt.Sprintf("page %d %s", page, what))
}

// maxRenderWarnings bounds the warnings kept for a summary.
const maxRenderWarnings = 20

// render runs pdftoppm on pages first to last. -progress makes it print
// "page last file" on stderr once each page's file is written, so that the
// page is handed on (or counted) at once rather than when the range ends.
func (d *document) render(ctx context.Context, first, last int) error {
	var mu sync.Mutex
	got := map[int]bool{}
	var failed error
	line := func(s string) bool {
		page, file, ok := parseRendered(s, first, last, d.dir)
		if !ok {
			return false
		}
		mu.Lock()
		got[page] = true
		mu.Unlock()
		if err := d.rendered(page, file); err != nil {
			mu.Lock()
			failed = errors.Join(failed, err)
			mu.Unlock()
			d.fail(err)
		}
		return true
	}
	argv := []string{d.app.tools.PDFToPPM.Path, "-r", strconv.Itoa(d.dpi), "-png", "-progress",
		"-f", strconv.Itoa(first), "-l", strconv.Itoa(last), d.input, filepath.Join(d.dir, "p")}
	said, err := runTool(ctx, toolRun{argv: argv, line: line, idle: d.app.opts.PageTimeout})

	d.mu.Lock()
	d.rendering--
	d.notify()
	if len(said) > 0 && len(d.warnings) < maxRenderWarnings {
		d.warnings = append(d.warnings, said[:min(len(said), maxRenderWarnings-len(d.warnings))]...)
	}
	d.mu.Unlock()

	mu.Lock()
	defer mu.Unlock()
	if failed != nil {
		return failed
	}
	if err != nil {
		return unreadablePDF(err)
	}
	for p := first; p <= last; p++ {
		if !got[p] {
			return engine.Permanent(fmt.Errorf("pdftoppm rendered no image of page %d", p))
		}
	}
	if len(said) > 0 {
		d.app.opts.Logger.Debug("pdftoppm warnings", "pages", fmt.Sprintf("%d-%d", first, last), "stderr", strings.Join(said, "; "))
	}
	return nil
}

// parseRendered reads a -progress line of pdftoppm: "5 9 /dir/p-05.png".
// The file must be in dir: it is moved into the job's artifacts.
func parseRendered(s string, first, last int, dir string) (int, string, bool) {
	f := strings.SplitN(s, " ", 3)
	if len(f) != 3 {
		return 0, "", false
	}
	page, err1 := strconv.Atoi(f[0])
	_, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || page < first || page > last || filepath.Dir(f[2]) != dir {
		return 0, "", false
	}
	return page, f[2], true
}

// rendered hands a rendered page on: to the task at once for pdf.render,
// to the OCR lanes for pdf.ocr.
func (d *document) rendered(page int, file string) error {
	if !d.ocr {
		if err := d.t.AddArtifactFile(ArtifactName(page), ImageType, file); err != nil {
			return fmt.Errorf("page %d: %w", page, err)
		}
		d.step(page, "rendered")
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.images[page] = file
	d.ready = append(d.ready, page)
	d.notify()
	return nil
}

// textPath is where the OCR text of page is kept until the markdown is
// written.
func (d *document) textPath(page int) string {
	return filepath.Join(d.dir, fmt.Sprintf("text-%d.txt", page))
}

// read runs tesseract on a rendered page, then hands its image to the
// task. OMP_THREAD_LIMIT=1: tesseract's own threads make a page four times
// slower on a busy machine, and the lanes already use every core.
func (d *document) read(ctx context.Context, page int) error {
	d.mu.Lock()
	image := d.images[page]
	d.mu.Unlock()
	out, err := os.Create(d.textPath(page))
	if err != nil {
		return fmt.Errorf("page %d text: %w", page, err)
	}
	argv := []string{d.app.tools.Tesseract.Path, image, "stdout", "-l", requiredLanguage, "--dpi", strconv.Itoa(d.dpi)}
	_, err = runTool(ctx, toolRun{argv: argv, env: []string{"OMP_THREAD_LIMIT=1"}, stdout: out, idle: d.app.opts.PageTimeout})
	if err = errors.Join(err, out.Close()); err != nil {
		var te *toolError
		if errors.As(err, &te) {
			return unreadablePage(page, err)
		}
		return fmt.Errorf("page %d: %w", page, err)
	}
	if err := d.t.AddArtifactFile(ArtifactName(page), ImageType, image); err != nil {
		return fmt.Errorf("page %d: %w", page, err)
	}
	d.mu.Lock()
	delete(d.images, page)
	d.mu.Unlock()
	d.step(page, "read")
	return nil
}

// unreadablePage is tesseract failing on a page image: the same image
// would fail again, unless the tool was killed from outside.
func unreadablePage(page int, err error) error {
	var te *toolError
	if errors.As(err, &te) && te.code < 0 && te.idle == 0 {
		return fmt.Errorf("page %d: %w", page, err)
	}
	return engine.Permanent(fmt.Errorf("OCR of page %d failed: %w", page, err))
}
