// Package pdfapp is docket's PDF app: the queues that turn a PDF into page
// images (pdf.render) and OCR text as markdown (pdf.ocr), one progress step
// per page, and the routes of the PDF OCR service whose clients it serves
// unchanged (POST /process_pdf, GET /result/{job_id}/..., GET /tasks).
//
// The queues run the programs of poppler-utils and tesseract-ocr (see
// FindTools): pdfinfo counts the pages, so that a job's progress has its
// total before the first page is done, pdftoppm renders page ranges and
// tesseract reads one page at a time, single-threaded. Parallelism comes
// from pages, not threads: every tool process of the app takes one of a
// fixed number of CPU slots (one per core by default), shared by both
// queues, so that one document alone uses every core and many documents
// together never run more processes than there are cores.
package pdfapp

import "fmt"

// The app's queues.
const (
	// RenderQueue renders every page of its input PDF to a PNG artifact.
	RenderQueue = "pdf.render"
	// OCRQueue renders every page, reads it with tesseract and returns the
	// text as markdown, a heading per page; the page images are kept as
	// artifacts too.
	OCRQueue = "pdf.ocr"
)

// ArtifactName is the name under which page (1-based) is stored: names
// sort in page order for documents of up to 999 pages.
func ArtifactName(page int) string { return fmt.Sprintf("page-%03d.png", page) }
