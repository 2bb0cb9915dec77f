package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/webhook"
)

// App mounts the upstreams' prefixes on an API server. Every request
// through the gateway needs the submit scope, as it acts on the upstream
// on the caller's behalf; docket's own routes (/v1/...) keep precedence.
func (g *Gateway) App() api.App {
	return func(s *api.Server) []api.Route {
		var out []api.Route
		for _, u := range g.upstreams {
			out = append(out, api.Route{Pattern: u.Prefix, Scope: api.ScopeSubmit, Handler: func(w http.ResponseWriter, r *http.Request, c api.Caller) {
				g.serve(s, w, r, c)
			}})
		}
		return out
	}
}

// labelPathMax bounds the path kept in a job's label.
const labelPathMax = 256

// serve answers one request for an upstream.
func (g *Gateway) serve(s *api.Server, w http.ResponseWriter, r *http.Request, c api.Caller) {
	if r.URL.Path == "/v1" || strings.HasPrefix(r.URL.Path, "/v1/") {
		// Under a catch-all prefix: docket's namespace is never proxied.
		api.WriteProblem(w, r, api.ProblemRouteNotFound, "no route for "+r.Method+" "+r.URL.Path)
		return
	}
	u := g.route(r.URL.Path)
	if u == nil {
		api.WriteProblem(w, r, api.ProblemRouteNotFound, "no route for "+r.Method+" "+r.URL.Path)
		return
	}
	if g.cfg.MaxBody > 0 {
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBody)
	}
	pref := api.ParsePrefer(r.Header)
	async := pref.Async || pref.Wait > 0 || isTrue(r.Header.Get(headerAsync)) || isTrue(r.Header.Get(headerAsyncBg))
	// A HEAD or OPTIONS request has no body to wait for; CONNECT is not
	// a request to replay.
	if r.Method == http.MethodHead || r.Method == http.MethodOptions || r.Method == http.MethodConnect {
		async = false
	}
	if !async {
		if u.requiresAsync(r) {
			api.WriteProblem(w, r, api.ProblemAsyncRequired, fmt.Sprintf(
				"%s %s runs too long to be answered at once: send it again with the header "+
					"\"Prefer: respond-async\" (or \"X-Async-Request: true\") and follow the Location of the 202 answer",
				r.Method, r.URL.Path))
			return
		}
		u.proxy.ServeHTTP(w, r)
		return
	}
	g.accept(s, u, w, r, c, pref)
}

func isTrue(v string) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	return err == nil && b
}

// accept records the request as a job and answers 202, or, when the
// client prefers to wait and the upstream answers within the wait, with
// the upstream's response.
func (g *Gateway) accept(s *api.Server, u *upstream, w http.ResponseWriter, r *http.Request, c api.Caller, pref api.Preferences) {
	nj := store.NewJob{Queue: Queue, Owner: c.Owner, IdempotencyKey: r.Header.Get(headerIdempotencyKey),
		Labels: map[string]string{"upstream": u.Name, "method": r.Method, "path": truncate(r.URL.Path, labelPathMax)}}
	if tp := api.Traceparent(r.Header); tp != "" {
		nj.Labels["traceparent"] = tp
	}
	if len(nj.IdempotencyKey) > 255 {
		api.WriteProblem(w, r, api.ProblemBadRequest, "Idempotency-Key is limited to 255 characters")
		return
	}
	if hook := r.Header.Get(headerWebhook); hook != "" {
		if err := webhook.CheckURL(hook); err != nil {
			api.WriteProblem(w, r, api.ProblemBadRequest, headerWebhook+": "+err.Error())
			return
		}
		nj.Webhook, nj.WebhookEvents = hook, webhook.DefaultEvents
		if ev := r.Header.Get(headerWebhookEvents); ev != "" {
			events, err := webhook.ParseEvents(ev)
			if err != nil {
				api.WriteProblem(w, r, api.ProblemBadRequest, headerWebhookEvents+": "+err.Error())
				return
			}
			nj.WebhookEvents = events
		}
	}

	// The message is written by a goroutine and read into the store's
	// spool as it comes, so that a body of any size streams through.
	pr, pw := io.Pipe()
	recorded := make(chan error, 1)
	body := &bodyReader{r: r.Body}
	go func() {
		err := u.recordRequest(pw, r, body)
		pw.CloseWithError(err)
		recorded <- err
	}()
	up, err := s.Spool(pr, RequestType)
	pr.CloseWithError(errors.New("gateway: spool ended"))
	if rerr := <-recorded; rerr != nil {
		err = rerr
	}
	if body.err != nil && body.err != io.EOF {
		// net/http hides the body's own error from errors.As.
		err = body.err
	}
	if err != nil {
		if up != nil {
			up.Discard()
		}
		if !answerBodyError(w, r, err) {
			api.WriteProblem(w, r, api.ProblemBadRequest, "reading the request: "+err.Error())
		}
		return
	}
	nj.Input, nj.InputDigest = up.Data, up.Digest
	out, err := s.Engine().Submit(r.Context(), []store.NewJob{nj})
	if err == nil {
		err = out[0].Err
	}
	if err != nil {
		up.Discard()
		if errors.Is(err, store.ErrQueueFull) {
			api.WriteProblem(w, r, api.ProblemQueueFull, "the "+Queue+" queue holds its limit of waiting requests")
			return
		}
		s.Fail(w, r, err)
		return
	}
	j := out[0].Job
	if out[0].Existing {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if pref.Wait > 0 && !j.State.Terminal() {
		ctx, cancel := context.WithTimeout(r.Context(), pref.Wait)
		if done, err := s.Engine().Wait(ctx, j.ID); err == nil {
			j = done
		}
		cancel()
	}
	if j.State == job.Succeeded {
		// The upstream answered within the wait: its response, as a
		// synchronous call would have had it.
		b, rc, err := s.Engine().Store().OpenResult(r.Context(), j.ID)
		if err == nil {
			defer rc.Close()
			w.Header().Set("Preference-Applied", fmt.Sprintf("wait=%d", int(pref.Wait/time.Second)))
			w.Header().Set("Content-Location", "/v1/jobs/"+j.ID+"/result")
			s.WriteResult(w, r, b, rc)
			return
		}
	}
	w.Header().Set("Location", "/v1/jobs/"+j.ID)
	w.Header().Set("Retry-After", "1")
	if pref.Async {
		w.Header().Set("Preference-Applied", "respond-async")
	}
	api.WriteJSON(w, http.StatusAccepted, acceptedJSON{ID: j.ID, Status: string(j.State),
		StatusURL: "/v1/jobs/" + j.ID + "/status", ResultURL: "/v1/jobs/" + j.ID + "/result"})
}

// bodyReader keeps the error that ended a request body.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		b.err = err
	}
	return n, err
}

// answerBodyError answers a request whose body failed: 413 past the
// limit, nothing to a client that left. It reports whether it answered;
// other errors are the caller's to answer.
func answerBodyError(w http.ResponseWriter, r *http.Request, err error) bool {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		api.WriteProblem(w, r, api.ProblemTooLarge, fmt.Sprintf("the request body passes the limit of %d bytes", tooLarge.Limit))
	case r.Context().Err() != nil:
	default:
		return false
	}
	return true
}

// acceptedJSON is the body of a 202: the job's id under the name the
// X-Async-Request convention gives it.
type acceptedJSON struct {
	ID        string `json:"async_request_id"`
	Status    string `json:"status"`
	StatusURL string `json:"status_url"`
	ResultURL string `json:"result_url"`
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// newProxy is the synchronous path of an upstream: a reverse proxy that
// streams both ways.
func (g *Gateway) newProxy(u *upstream) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u.URL)
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
			u.prepare(pr.Out.Header)
		},
		Transport: g.cfg.Transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if !answerBodyError(w, r, err) {
				g.log.Warn("upstream unreachable", "upstream", u.Name, "method", r.Method, "path", r.URL.Path, "err", err)
				api.WriteProblem(w, r, api.ProblemBadGateway, "upstream "+u.Name+" did not answer: "+err.Error())
			}
		},
	}
}
