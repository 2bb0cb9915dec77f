package api

import (
	"io"
	"net/http"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// An App adds routes of its own to a Server, such as the API of an
// existing service whose clients docket serves unchanged. New calls it
// once, with the server being built, so that the App's handlers can keep
// the server to reach its engine and read uploads as /v1 does.
type App func(s *Server) []Route

// Route is a route an App adds. It is served like the API's own routes:
// the token is checked, a route with a scope is rate-limited, and a wrong
// method, an unknown path or a panic is answered with a problem.
type Route struct {
	// Pattern is a net/http ServeMux pattern with its method, such as
	// "GET /tasks". One that conflicts with another route makes New panic,
	// as two handlers for one request is a bug of the program.
	Pattern string
	// Scope is the token scope the route needs (ScopeRead, ScopeSubmit...);
	// "" serves it without a token, though a token sent must be known.
	Scope string
	// Handler serves the request for the caller its token names.
	Handler func(http.ResponseWriter, *http.Request, Caller)
}

// Caller is who sent a request to an App's route.
type Caller struct {
	// Owner owns the jobs the caller submits; it is "" in open mode and
	// on routes without a scope called without a token.
	Owner string
	// Admin callers see every owner's jobs, as every caller does in open
	// mode.
	Admin bool
}

// Sees reports whether the caller may see a job of owner. A job it may
// not see must be answered like one that does not exist (404), so that
// owners cannot learn of each other's jobs.
func (c Caller) Sees(owner string) bool { return c.Admin || c.Owner == owner }

func (s *Server) appRoutes() []route {
	var out []route
	for _, app := range s.cfg.Apps {
		for _, ar := range app(s) {
			h := ar.Handler
			out = append(out, route{pattern: ar.Pattern, scope: ar.Scope, handler: func(w http.ResponseWriter, r *http.Request, c *caller) {
				h(w, r, Caller{Owner: c.owner, Admin: c.admin})
			}})
		}
	}
	return out
}

// Engine returns the engine whose jobs the server serves.
func (s *Server) Engine() *engine.Engine { return s.e }

// Upload is a request body read by ReadUpload: in memory when small,
// else in a temporary file, so that no upload is ever held whole. Submit
// it as a job's input (the store takes the file over) or Discard it.
type Upload struct {
	// Data is the input: its bytes or file, and its content type and file
	// name as the client declared them.
	store.Data
	// Digest is the hex SHA-256 of the bytes, for store.NewJob.InputDigest.
	Digest string
}

// Discard removes the upload's temporary file, for an upload that is not
// submitted.
func (u *Upload) Discard() { (&input{Data: u.Data}).discard() }

// ReadUpload reads the request's body as POST /v1/queues/{queue}/jobs
// does: the body itself, or the "file" part of a multipart form, bounded
// by Config.MaxBody and spooled to Config.TempDir past 32 KiB. When the
// body cannot be read it answers with the problem (413 over the limit,
// 415 for a broken Content-Type, 422 for a form without its file part)
// and returns nil.
func (s *Server) ReadUpload(w http.ResponseWriter, r *http.Request) *Upload {
	in, p := s.readInput(w, r)
	if p != nil {
		writeProblem(w, r, *p)
		return nil
	}
	return &Upload{Data: in.Data, Digest: in.digest}
}

// ProblemType is one of the API's problem types. Apps answer with these
// rather than types of their own, so that a client switches on one set of
// types whichever route it called (docs/API.md lists them).
type ProblemType struct{ p problem }

// The problem types apps answer with.
var (
	ProblemBadRequest           = ProblemType{probBadRequest}
	ProblemInvalidField         = ProblemType{probInvalidField}
	ProblemUnsupportedMediaType = ProblemType{probMediaType}
	ProblemJobNotFound          = ProblemType{probJobNotFound}
	ProblemArtifactNotFound     = ProblemType{probArtifactMissing}
	ProblemJobFailed            = ProblemType{probJobFailed}
	// ProblemQueueFull carries Retry-After, as /v1 submits do.
	ProblemQueueFull = ProblemType{probQueueFull.after(time.Second)}
)

// WriteProblem answers with a problem of type t whose detail is about
// this occurrence. The detail is always given: clients of services built
// on FastAPI read only it.
func WriteProblem(w http.ResponseWriter, r *http.Request, t ProblemType, detail string) {
	writeProblem(w, r, t.p.with(detail))
}

// Fail answers an unexpected error: it is logged and the client gets a
// 500 internal problem, or nothing when it has left already.
func (s *Server) Fail(w http.ResponseWriter, r *http.Request, err error) { s.fail(w, r, err) }

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

// WriteBlob answers 200 with stored bytes (a result or an artifact) read
// from rc, under their own content type, as /v1 serves them.
func WriteBlob(w http.ResponseWriter, b job.Blob, rc io.Reader) { serveBlob(w, b, rc) }
