// Package client talks to a docket server over its HTTP API: submit work,
// follow a job's progress, fetch its result and artifacts, and manage jobs
// and queues.
//
//	c := client.New("http://127.0.0.1:8080", os.Getenv("DOCKET_TOKEN"))
//	job, err := c.Submit(ctx, "thumbs", file, client.SubmitOptions{ContentType: "image/jpeg"})
//	job, err = c.Wait(ctx, job.ID, func(j *client.Job) { fmt.Println(j.Progress.Current, j.Progress.Total) })
//	ctype, body, err := c.Result(ctx, job.ID)
//
// Inputs and results are streamed, never held in memory, so gigabyte files
// are fine. Errors the server answers are *Problem values (RFC 9457);
// Result says ErrPending while the job has not finished.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Client is a docket server's client. It is safe for concurrent use.
type Client struct {
	server string
	token  string
	hc     *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends requests with hc, for custom transports, TLS or
// proxies. A Timeout on hc must exceed the long-poll wait (30s for Wait),
// or waits fail instead of returning.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// New returns a client of the server at the base URL server, like
// "http://127.0.0.1:8080" (a missing scheme means http). token is sent as
// a bearer token; leave it empty for a server in open mode.
func New(server, token string, opts ...Option) *Client {
	server = strings.TrimRight(strings.TrimSpace(server), "/")
	if server != "" && !strings.Contains(server, "://") {
		server = "http://" + server
	}
	// No timeout by default: long polls and large transfers take as long
	// as they take; contexts bound them.
	c := &Client{server: server, token: token, hc: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// URL resolves a path or link the server returned (such as Job.Links.Self)
// against the server's address, for showing to people or other tools.
func (c *Client) URL(path string) string {
	if strings.Contains(path, "://") {
		return path
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return c.server + path
}

// SubmitOptions are a submit's optional settings. Zero values leave the
// queue's defaults.
type SubmitOptions struct {
	// ContentType is the input's type, stored with it and handed to the
	// handler; empty lets the server decide.
	ContentType string
	// Filename is the input's file name, sent as the file part's name with
	// Multipart; a raw body has no place for one.
	Filename string
	// Multipart sends the input as the "file" part of a multipart form, as
	// browsers and some HTTP tools do.
	Multipart bool
	// IdempotencyKey makes resubmits safe: a second submit with the same key
	// (per owner) returns the first job, whatever its state.
	IdempotencyKey string
	// Priority orders the queue: higher runs first.
	Priority int
	// Delay holds the job back; RunAt does the same with a date. Set one.
	Delay time.Duration
	RunAt time.Time
	// Timeout bounds each attempt.
	Timeout time.Duration
	// MaxAttempts bounds retries of failed attempts.
	MaxAttempts int
	// Labels are free key-values to filter jobs by.
	Labels map[string]string
	// Unique returns an existing queued, running or succeeded job with the
	// same queue, owner and input instead of running it again.
	Unique bool
	// Wait asks the server to hold the answer up to this long (rounded up
	// to whole seconds, at most a minute) so that quick jobs come back
	// finished.
	Wait time.Duration
}

func (o *SubmitOptions) query() url.Values {
	q := url.Values{}
	if o.Priority != 0 {
		q.Set("priority", strconv.Itoa(o.Priority))
	}
	if o.Delay > 0 {
		q.Set("delay", o.Delay.String())
	}
	if !o.RunAt.IsZero() {
		q.Set("run_at", o.RunAt.Format(time.RFC3339Nano))
	}
	if o.Timeout > 0 {
		q.Set("timeout", o.Timeout.String())
	}
	if o.MaxAttempts > 0 {
		q.Set("max_attempts", strconv.Itoa(o.MaxAttempts))
	}
	for _, k := range slices.Sorted(maps.Keys(o.Labels)) {
		q.Add("label", k+":"+o.Labels[k])
	}
	if o.Unique {
		q.Set("unique", "true")
	}
	return q
}

// Submit creates a job on queue with body as its input and returns it, as
// soon as it is stored unless o.Wait asks for more. body is streamed, never
// read whole, and not closed; nil means an empty input. The job comes back
// queued (or finished, with o.Wait); a full queue or a rate limit is a
// *Problem with Status 503 or 429 and a RetryAfter.
func (c *Client) Submit(ctx context.Context, queue string, body io.Reader, o SubmitOptions) (*Job, error) {
	if queue == "" {
		return nil, errors.New("docket: submit: no queue")
	}
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/queues/"+url.PathEscape(queue)+"/jobs", o.query())
	if err != nil {
		return nil, err
	}
	if o.Multipart {
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		go func() { pw.CloseWithError(writeMultipart(mw, body, o)) }()
		// Once the server has answered, stop feeding the form even if it
		// did not read it all (an early 413 or 401).
		defer pr.Close()
		req.Body, req.ContentLength = pr, -1
	} else {
		if o.ContentType != "" {
			req.Header.Set("Content-Type", o.ContentType)
		}
		// A known length lets the server refuse an oversized input before
		// it is sent; otherwise the body goes chunked.
		switch n := sizeOf(body); {
		case body == nil || n == 0:
			req.Body, req.ContentLength = http.NoBody, 0
		default:
			req.Body, req.ContentLength = io.NopCloser(body), n
		}
	}
	if o.IdempotencyKey != "" {
		req.Header.Set("Idempotency-Key", o.IdempotencyKey)
	}
	if o.Wait > 0 {
		req.Header.Set("Prefer", "wait="+strconv.FormatInt(int64(math.Ceil(o.Wait.Seconds())), 10))
	}
	var j Job
	if err := c.doJSON(req, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

func writeMultipart(mw *multipart.Writer, body io.Reader, o SubmitOptions) error {
	name := o.Filename
	if name == "" {
		name = "input"
	}
	ctype := o.ContentType
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", multipart.FileContentDisposition("file", name))
	h.Set("Content-Type", ctype)
	part, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if body != nil {
		if _, err := io.Copy(part, body); err != nil {
			return err
		}
	}
	return mw.Close()
}

// sizeOf is the number of bytes left in r, or -1 if that cannot be known
// without reading it.
func sizeOf(r io.Reader) int64 {
	switch v := r.(type) {
	case *bytes.Reader:
		return int64(v.Len())
	case *bytes.Buffer:
		return int64(v.Len())
	case *strings.Reader:
		return int64(v.Len())
	case *os.File:
		st, err := v.Stat()
		if err != nil || !st.Mode().IsRegular() {
			return -1
		}
		off, err := v.Seek(0, io.SeekCurrent)
		if err != nil || off > st.Size() {
			return -1
		}
		return st.Size() - off
	}
	return -1
}

// Get returns the job with this id. An unknown id is a 404 *Problem, never
// a queued job.
func (c *Client) Get(ctx context.Context, id string) (*Job, error) {
	return c.Poll(ctx, id, 0, 0)
}

// Poll is a long poll: it returns the job once its Version exceeds after,
// once it has finished, or once wait has run out (then unchanged). A wait
// of 0 returns at once, like Get.
func (c *Client) Poll(ctx context.Context, id string, after int64, wait time.Duration) (*Job, error) {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
		q.Set("after", strconv.FormatInt(after, 10))
	}
	var j Job
	if err := c.getJSON(ctx, jobPath(id), q, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// pollWait is how long each of Wait's long polls lasts: long enough to cost
// nothing while a job runs, short enough for proxies not to cut it.
const pollWait = 30 * time.Second

// unavailableFor is how long Wait rides out a server it cannot reach or
// that answers it is overloaded (a restart, a deploy) before giving up.
const unavailableFor = 2 * time.Minute

// Wait follows the job until it has finished and returns it in its final
// state. progress, if not nil, is called with each new version of the job
// (progress reports and state changes), the first one included; the server
// coalesces progress, so steps may be skipped. A failed or canceled job is
// not an error: check the returned job's State. When ctx ends first the job
// goes on; Wait only stops watching. A server that cannot be reached or
// answers 429, 502, 503 or 504 (a restart, a deploy) is retried with
// backoff for up to two minutes, since the job goes on meanwhile. It follows
// the job's event stream (NDJSON), resuming after the last version seen when
// the connection breaks, and falls back to long polls on a server without
// event streams.
func (c *Client) Wait(ctx context.Context, id string, progress func(*Job)) (*Job, error) {
	var seen int64 = -1
	// Follow the job's event stream; reconnect (resuming after the last
	// version seen) when it breaks, and fall back to long polls when the
	// server offers no stream.
	var failingSince time.Time
	backoff := 250 * time.Millisecond
	for {
		j, err := c.follow(ctx, id, &seen, progress)
		if err == nil {
			return j, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, errNoStream) {
			break
		}
		if !transient(err) {
			return nil, err
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		} else if time.Since(failingSince) > unavailableFor {
			return nil, err
		}
		if err := sleep(ctx, backoff); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return c.pollUntilDone(ctx, id, seen, progress)
}

// errNoStream: the server has no event stream for jobs.
var errNoStream = errors.New("docket: no event stream")

// follow reads the job's NDJSON event stream until the job ends (it
// returns the final job), the stream breaks, or ctx ends.
func (c *Client) follow(ctx context.Context, id string, seen *int64, progress func(*Job)) (*Job, error) {
	q := url.Values{}
	if *seen >= 0 {
		q.Set("last_event_id", strconv.FormatInt(*seen, 10))
	}
	req, err := c.newRequest(ctx, http.MethodGet, jobPath(id)+"/events", q)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.do(req)
	if err != nil {
		var p *Problem
		if errors.As(err, &p) && (p.Status == http.StatusNotFound && !strings.HasSuffix(p.Type, "job-not-found") || p.Status == http.StatusMethodNotAllowed) {
			return nil, errNoStream // a server without streams
		}
		return nil, err
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		return nil, errNoStream
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue // keep-alive
		}
		var ev struct {
			ID  int64 `json:"id"`
			Job *Job  `json:"job"`
		}
		if err := json.Unmarshal(line, &ev); err != nil || ev.Job == nil {
			return nil, fmt.Errorf("docket: event stream of %s: bad line %.80q", id, line)
		}
		if ev.ID > *seen {
			*seen = ev.ID
			if progress != nil {
				progress(ev.Job)
			}
		}
		if ev.Job.Terminal() {
			return ev.Job, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, io.ErrUnexpectedEOF // ended before the job did: reconnect
}

// pollUntilDone waits with long polls, for servers without event streams.
func (c *Client) pollUntilDone(ctx context.Context, id string, seen int64, progress func(*Job)) (*Job, error) {
	var failingSince time.Time
	backoff := 250 * time.Millisecond
	for {
		start := time.Now()
		j, err := c.Poll(ctx, id, max(seen, 0), pollWait)
		if err != nil {
			if ctx.Err() != nil || !transient(err) {
				return nil, err
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > unavailableFor {
				return nil, err
			}
			pause := backoff
			var p *Problem
			if errors.As(err, &p) && p.RetryAfter > 0 {
				pause = p.RetryAfter
			}
			backoff = min(2*backoff, 5*time.Second)
			if err := sleep(ctx, pause); err != nil {
				return nil, err
			}
			continue
		}
		failingSince, backoff = time.Time{}, 250*time.Millisecond
		if j.Version != seen {
			seen = j.Version
			if progress != nil {
				progress(j)
			}
		} else if time.Since(start) < pollWait/2 {
			// Unchanged and early: a server (or proxy) that does not hold
			// long polls. Do not hammer it.
			if err := sleep(ctx, time.Second); err != nil {
				return nil, err
			}
		}
		if j.Terminal() {
			return j, nil
		}
	}
}

// transient reports whether err may go away by itself: the server
// unreachable, restarting, or shedding load.
func transient(err error) bool {
	var p *Problem
	if errors.As(err, &p) {
		switch p.Status {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	return true // no answer at all: connection refused, reset, timed out
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Result opens the result of a succeeded job and gives its content type;
// the caller closes body, which is empty for a job that succeeded without
// a result. While the job is queued or running the error is
// a *PendingError (errors.Is(err, ErrPending)); a failed job is a 500
// *Problem carrying its error, a canceled one 409, a purged one 410.
func (c *Client) Result(ctx context.Context, id string) (contentType string, body io.ReadCloser, err error) {
	return c.download(ctx, jobPath(id)+"/result")
}

// Artifacts lists the named files a job produced.
func (c *Client) Artifacts(ctx context.Context, id string) ([]Artifact, error) {
	var out struct {
		Artifacts []Artifact `json:"artifacts"`
	}
	if err := c.getJSON(ctx, jobPath(id)+"/artifacts", nil, &out); err != nil {
		return nil, err
	}
	return out.Artifacts, nil
}

// Artifact opens one artifact of a job and gives its content type; the
// caller closes the body.
func (c *Client) Artifact(ctx context.Context, id, name string) (string, io.ReadCloser, error) {
	return c.download(ctx, jobPath(id)+"/artifacts/"+url.PathEscape(name))
}

func (c *Client) download(ctx context.Context, path string) (string, io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode == http.StatusAccepted {
		defer resp.Body.Close()
		pe := &PendingError{RetryAfter: retryAfter(resp.Header)}
		var j Job
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&j) == nil && j.ID != "" {
			pe.Job = &j
		}
		return "", nil, pe
	}
	return resp.Header.Get("Content-Type"), resp.Body, nil
}

// Cancel cancels a queued or running job. A running job's handler is
// asked to stop, so the job may still report running for a moment before
// it ends canceled. Canceling a finished job is a 409 *Problem.
func (c *Client) Cancel(ctx context.Context, id string) (*Job, error) {
	return c.postJob(ctx, jobPath(id)+"/cancel")
}

// Retry queues a failed or canceled job to run again, with the same input
// and id. Retrying any other job is a 409 *Problem.
func (c *Client) Retry(ctx context.Context, id string) (*Job, error) {
	return c.postJob(ctx, jobPath(id)+"/retry")
}

func (c *Client) postJob(ctx context.Context, path string) (*Job, error) {
	req, err := c.newRequest(ctx, http.MethodPost, path, nil)
	if err != nil {
		return nil, err
	}
	var j Job
	if err := c.doJSON(req, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// Delete removes a job with its input, result and artifacts, for good:
// afterwards its id is unknown (404).
func (c *Client) Delete(ctx context.Context, id string) error {
	req, err := c.newRequest(ctx, http.MethodDelete, jobPath(id), nil)
	if err != nil {
		return err
	}
	return c.doJSON(req, nil)
}

// ListOptions filter and page List. Zero values do not filter.
type ListOptions struct {
	Queue string
	// States keeps jobs in any of these states.
	States []string
	// Labels keeps jobs carrying all of these labels.
	Labels map[string]string
	// Limit is the page size; 0 lets the server choose.
	Limit int
	// Cursor is a previous page's NextCursor.
	Cursor string
}

// List returns one page of the caller's jobs, newest first.
func (c *Client) List(ctx context.Context, o ListOptions) (*JobList, error) {
	q := url.Values{}
	if o.Queue != "" {
		q.Set("queue", o.Queue)
	}
	for _, s := range o.States {
		q.Add("state", s)
	}
	for _, k := range slices.Sorted(maps.Keys(o.Labels)) {
		q.Add("label", k+":"+o.Labels[k])
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	var l JobList
	if err := c.getJSON(ctx, "/v1/jobs", q, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Queues returns the server's queues with their settings and job counts.
func (c *Client) Queues(ctx context.Context) ([]Queue, error) {
	var out struct {
		Queues []Queue `json:"queues"`
	}
	if err := c.getJSON(ctx, "/v1/queues", nil, &out); err != nil {
		return nil, err
	}
	return out.Queues, nil
}

// Pause stops a queue's workers from claiming jobs; submits are still
// accepted and running jobs finish.
func (c *Client) Pause(ctx context.Context, queue string) (*Queue, error) {
	return c.setPaused(ctx, queue, true)
}

// Resume lets a paused queue's workers claim jobs again.
func (c *Client) Resume(ctx context.Context, queue string) (*Queue, error) {
	return c.setPaused(ctx, queue, false)
}

func (c *Client) setPaused(ctx context.Context, queue string, paused bool) (*Queue, error) {
	verb := "resume"
	if paused {
		verb = "pause"
	}
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/queues/"+url.PathEscape(queue)+"/"+verb, nil)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := c.doJSON(req, &raw); err != nil {
		return nil, err
	}
	q := &Queue{Name: queue, Paused: paused}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, q); err != nil {
			return nil, fmt.Errorf("docket: %s %s: %w", verb, queue, err)
		}
	}
	return q, nil
}

func jobPath(id string) string { return "/v1/jobs/" + url.PathEscape(id) }

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values) (*http.Request, error) {
	if c.server == "" {
		return nil, errors.New("docket: no server address")
	}
	u := c.server + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "docket-client")
	return req, nil
}

// do sends req; any answer but a 2xx comes back as a *Problem.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, problemOf(resp)
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, out any) error {
	req, err := c.newRequest(ctx, http.MethodGet, path, q)
	if err != nil {
		return err
	}
	return c.doJSON(req, out)
}

// doJSON sends req and decodes the answer into out (nil: discards it).
func (c *Client) doJSON(req *http.Request, out any) error {
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("docket: %s %s: decoding the answer: %w", req.Method, req.URL.Path, err)
	}
	return nil
}
