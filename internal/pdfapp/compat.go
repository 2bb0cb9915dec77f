package pdfapp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// Task statuses of the compatible API. It has four where docket has five
// states: a canceled job is a failed task.
const (
	statusPending    = "pending"
	statusProcessing = "processing"
	statusCompleted  = "completed"
	statusFailed     = "failed"
)

// statusOf is the compatible API's status of a job in state st.
func statusOf(st job.State) string {
	switch st {
	case job.Queued:
		return statusPending
	case job.Running:
		return statusProcessing
	case job.Succeeded:
		return statusCompleted
	}
	return statusFailed
}

// statesFor are the job states a ?status= filter of GET /tasks selects.
var statesFor = map[string][]job.State{
	statusPending:    {job.Queued},
	statusProcessing: {job.Running},
	statusCompleted:  {job.Succeeded},
	statusFailed:     {job.Failed, job.Canceled},
}

// Compat is the api.App of the compatible routes: the API of the Python
// PDF OCR service the PDF app replaces, so that its clients work
// unchanged (docs/PDF.md). A task is a job of OCRQueue, its id the job's
// id, so /v1/jobs/{id} and its event streams see the same job. Errors are
// the API's problem documents, whose detail member is what the original's
// clients read.
func Compat(s *api.Server) []api.Route {
	c := &compat{s: s}
	return []api.Route{
		{Pattern: "POST /process_pdf", Scope: api.ScopeSubmit, Handler: c.process},
		{Pattern: "GET /result/{job_id}/status", Scope: api.ScopeRead, Handler: c.status},
		{Pattern: "GET /result/{job_id}/markdown", Scope: api.ScopeRead, Handler: c.markdown},
		{Pattern: "GET /result/{job_id}/images", Scope: api.ScopeRead, Handler: c.images},
		{Pattern: "GET /result/{job_id}/images/{name}", Scope: api.ScopeRead, Handler: c.image},
		{Pattern: "DELETE /result/{job_id}", Scope: api.ScopeSubmit, Handler: c.delete},
		{Pattern: "GET /tasks", Scope: api.ScopeRead, Handler: c.tasks},
		{Pattern: "GET /health", Handler: c.health},
	}
}

type compat struct{ s *api.Server }

// taskJSON is a job as the compatible API shows it.
type taskJSON struct {
	JobID          string  `json:"job_id"`
	Status         string  `json:"status"`
	Filename       string  `json:"filename"`
	TotalPages     int64   `json:"total_pages"`
	ProcessedPages int64   `json:"processed_pages"`
	CreatedAt      string  `json:"created_at"`
	UpdatedAt      string  `json:"updated_at"`
	ErrorMessage   *string `json:"error_message"`
}

// message answers an upload and a delete.
type message struct {
	JobID   string `json:"job_id"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// isoLayout writes times as FastAPI writes an aware datetime: ISO 8601 to
// the microsecond, with the offset as "+00:00", which datetime.fromisoformat
// reads in every Python 3 version ("Z" only from 3.11 on).
const isoLayout = "2006-01-02T15:04:05.000000-07:00"

func toTaskJSON(j *job.Job) taskJSON {
	t := taskJSON{JobID: j.ID, Status: statusOf(j.State), Filename: j.Input.Name,
		TotalPages: j.Progress.Total, ProcessedPages: j.Progress.Current,
		CreatedAt: j.CreatedAt.UTC().Format(isoLayout), UpdatedAt: j.UpdatedAt.UTC().Format(isoLayout)}
	if t.Status == statusFailed {
		msg := taskError(j)
		t.ErrorMessage = &msg
	}
	return t
}

func taskError(j *job.Job) string {
	if j.Error != nil && j.Error.Message != "" {
		return j.Error.Message
	}
	if j.State == job.Canceled {
		return "the task was canceled"
	}
	return "the task failed"
}

// uploadIsPDF reports whether an upload holds a PDF, by its bytes, as the
// queue's handler will judge it: clients send PDFs as
// application/octet-stream or with no type at all (Python's requests
// does), so the declared type says nothing.
func uploadIsPDF(d store.Data) (bool, error) {
	head := d.Bytes
	if d.Path != "" {
		f, err := os.Open(d.Path)
		if err != nil {
			return false, fmt.Errorf("pdfapp: read upload: %w", err)
		}
		defer f.Close()
		buf := make([]byte, pdfHeaderWindow)
		n, err := io.ReadFull(f, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("pdfapp: read upload: %w", err)
		}
		head = buf[:n]
	}
	return bytes.Contains(head[:min(len(head), pdfHeaderWindow)], []byte("%PDF-")), nil
}

func (c *compat) process(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	// The original takes a form only; a bare body would be a job whose
	// file name is lost.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "multipart/form-data" {
		api.WriteProblem(w, r, api.ProblemUnsupportedMediaType, `send the PDF as the "file" field of a multipart/form-data form`)
		return
	}
	up := c.s.ReadUpload(w, r)
	if up == nil {
		return
	}
	if up.Size == 0 {
		up.Discard()
		api.WriteProblem(w, r, api.ProblemInvalidField, `the "file" field is empty`)
		return
	}
	ok, err := uploadIsPDF(up.Data)
	if err != nil || !ok {
		up.Discard()
		if err != nil {
			c.s.Fail(w, r, err)
			return
		}
		api.WriteProblem(w, r, api.ProblemUnsupportedMediaType, fmt.Sprintf("file %q is not a PDF: no %%PDF- header in its first %d bytes", up.Name, pdfHeaderWindow))
		return
	}
	up.ContentType = "application/pdf"
	out, err := c.s.Engine().Submit(r.Context(), []store.NewJob{{Queue: OCRQueue, Owner: caller.Owner, Input: up.Data, InputDigest: up.Digest}})
	if err == nil {
		err = out[0].Err
	}
	if err != nil {
		up.Discard()
		if errors.Is(err, store.ErrQueueFull) {
			api.WriteProblem(w, r, api.ProblemQueueFull, "too many PDFs are waiting; try again later")
			return
		}
		c.s.Fail(w, r, err)
		return
	}
	// 200, not 202: the original answers 200 and its clients check for it.
	api.WriteJSON(w, http.StatusOK, message{JobID: out[0].Job.ID, Status: statusPending,
		Message: "PDF accepted; poll /result/" + out[0].Job.ID + "/status for its progress"})
}

// load returns the caller's task named by the path, or answers 404 for one
// that does not exist, is another owner's or is no OCR job: the three
// must look the same.
func (c *compat) load(w http.ResponseWriter, r *http.Request, caller api.Caller) *job.Job {
	id := r.PathValue("job_id")
	j, err := c.s.Engine().Store().Get(r.Context(), id)
	if err == nil && (j.Queue != OCRQueue || !caller.Sees(j.Owner)) {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		api.WriteProblem(w, r, api.ProblemJobNotFound, "task "+strconv.Quote(id)+" not found")
		return nil
	}
	if err != nil {
		c.s.Fail(w, r, err)
		return nil
	}
	return j
}

func (c *compat) status(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	if j := c.load(w, r, caller); j != nil {
		api.WriteJSON(w, http.StatusOK, toTaskJSON(j))
	}
}

func (c *compat) markdown(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	j := c.load(w, r, caller)
	if j == nil {
		return
	}
	switch st := statusOf(j.State); st {
	case statusPending, statusProcessing:
		// Not an error, so no problem document; detail is there for
		// clients that print what they are told.
		w.Header().Set("Retry-After", "1")
		api.WriteJSON(w, http.StatusAccepted, struct {
			JobID          string `json:"job_id"`
			Status         string `json:"status"`
			Detail         string `json:"detail"`
			TotalPages     int64  `json:"total_pages"`
			ProcessedPages int64  `json:"processed_pages"`
		}{j.ID, st, fmt.Sprintf("the task is %s: %d of %d pages done", st, j.Progress.Current, j.Progress.Total),
			j.Progress.Total, j.Progress.Current})
		return
	case statusFailed:
		api.WriteProblem(w, r, api.ProblemJobFailed, taskError(j))
		return
	}
	var content []byte
	_, rc, err := c.s.Engine().Store().OpenResult(r.Context(), j.ID)
	if err == nil {
		content, err = io.ReadAll(rc)
		rc.Close()
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) { // not found: a document without text
		c.s.Fail(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, struct {
		JobID   string `json:"job_id"`
		Status  string `json:"status"`
		Content string `json:"content"`
	}{j.ID, statusCompleted, string(content)})
}

func (c *compat) images(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	j := c.load(w, r, caller)
	if j == nil {
		return
	}
	list, err := c.s.Engine().Store().Artifacts(r.Context(), j.ID)
	if err != nil {
		c.s.Fail(w, r, err)
		return
	}
	names := []string{}
	for _, a := range list {
		if strings.HasPrefix(a.ContentType, "image/") {
			names = append(names, a.Name)
		}
	}
	slices.Sort(names) // page order, as ArtifactName makes them
	api.WriteJSON(w, http.StatusOK, struct {
		JobID  string   `json:"job_id"`
		Count  int      `json:"count"`
		Images []string `json:"images"`
	}{j.ID, len(names), names})
}

func (c *compat) image(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	j := c.load(w, r, caller)
	if j == nil {
		return
	}
	name := r.PathValue("name")
	if err := store.CheckName(name); err != nil {
		api.WriteProblem(w, r, api.ProblemBadRequest, err.Error())
		return
	}
	b, rc, err := c.s.Engine().Store().OpenArtifact(r.Context(), j.ID, name)
	if errors.Is(err, store.ErrNotFound) {
		api.WriteProblem(w, r, api.ProblemArtifactNotFound, "task "+j.ID+" has no image "+strconv.Quote(name))
		return
	}
	if err != nil {
		c.s.Fail(w, r, err)
		return
	}
	defer rc.Close()
	api.WriteBlob(w, b, rc)
}

func (c *compat) delete(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	j := c.load(w, r, caller)
	if j == nil {
		return
	}
	// A running task is interrupted; its input, text and images go with it.
	if _, err := c.s.Engine().Delete(r.Context(), j.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		c.s.Fail(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, message{JobID: j.ID, Status: "deleted", Message: "the task, its text and its images were deleted"})
}

// tasksPage is how many jobs GET /tasks reads from the store at once.
const tasksPage = 1000

func (c *compat) tasks(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	f := store.Filter{Queue: OCRQueue, Limit: tasksPage}
	if !caller.Admin {
		f.Owner = caller.Owner
	}
	if vals, ok := r.URL.Query()["status"]; ok {
		v := vals[len(vals)-1]
		if f.States, ok = statesFor[v]; !ok {
			api.WriteProblem(w, r, api.ProblemInvalidField, "status="+strconv.Quote(v)+": want pending, processing, completed or failed")
			return
		}
	}
	// Every task, as the original lists them all; retention bounds them.
	out := []taskJSON{}
	for {
		page, err := c.s.Engine().Store().List(r.Context(), f)
		if err != nil {
			c.s.Fail(w, r, err)
			return
		}
		for _, j := range page.Jobs {
			out = append(out, toTaskJSON(j))
		}
		if page.Next == "" {
			break
		}
		f.After = page.Next
	}
	api.WriteJSON(w, http.StatusOK, struct {
		Count int        `json:"count"`
		Tasks []taskJSON `json:"tasks"`
	}{len(out), out})
}

func (c *compat) health(w http.ResponseWriter, r *http.Request, _ api.Caller) {
	api.WriteJSON(w, http.StatusOK, map[string]string{"status": "healthy"})
}
