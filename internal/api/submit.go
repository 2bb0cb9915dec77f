package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/webhook"
)

// memLimit is the largest input kept in memory; larger ones are spooled to
// a temporary file as they arrive, so that no body is ever held whole.
const memLimit = 32 << 10

// maxWait bounds Prefer: wait and long-poll waits.
const maxWait = 60 * time.Second

// options are a submit's query parameters.
type options struct {
	priority    int
	runAt       time.Time
	timeout     time.Duration
	maxAttempts int
	labels      map[string]string
	unique      bool
	webhook     string
	events      []string
}

// parseOptions reads the query parameters of a submit; unknown ones are
// refused, so that a misspelt option is not silently ignored.
func parseOptions(q url.Values, now time.Time) (options, error) {
	var o options
	for key, vals := range q {
		v := vals[len(vals)-1]
		var err error
		switch key {
		case "priority":
			o.priority, err = strconv.Atoi(v)
			if err == nil && (o.priority < -1000 || o.priority > 1000) {
				err = errors.New("must be between -1000 and 1000")
			}
		case "delay":
			var d time.Duration
			d, err = time.ParseDuration(v)
			if err == nil && d < 0 {
				err = errors.New("must not be negative")
			}
			if q.Has("run_at") {
				err = errors.New("give delay or run_at, not both")
			}
			o.runAt = now.Add(d)
		case "run_at":
			o.runAt, err = time.Parse(time.RFC3339Nano, v)
		case "timeout":
			o.timeout, err = time.ParseDuration(v)
			if err == nil && o.timeout <= 0 {
				err = errors.New("must be positive")
			}
		case "max_attempts":
			o.maxAttempts, err = strconv.Atoi(v)
			if err == nil && (o.maxAttempts < 1 || o.maxAttempts > 100) {
				err = errors.New("must be between 1 and 100")
			}
		case "unique":
			o.unique, err = strconv.ParseBool(v)
		case "webhook":
			o.webhook, err = v, webhook.CheckURL(v)
		case "webhook_events":
			if !q.Has("webhook") {
				err = errors.New("only with webhook")
				break
			}
			o.events, err = webhook.ParseEvents(v)
		case "label":
			o.labels = map[string]string{}
			for _, kv := range vals {
				k, val, ok := strings.Cut(kv, ":")
				if !ok || k == "" || len(k) > 128 || len(val) > 1024 {
					return o, fmt.Errorf("label %q: want key:value", kv)
				}
				o.labels[k] = val
			}
		default:
			return o, fmt.Errorf("unknown option %q", key)
		}
		if err != nil {
			return o, fmt.Errorf("%s=%q: %w", key, v, err)
		}
	}
	if o.webhook != "" && o.events == nil {
		// Kept explicit with the job, so that a later change of the
		// default does not change what an existing job asked for.
		o.events = slices.Clone(webhook.DefaultEvents)
	}
	return o, nil
}

var spoolBufs = sync.Pool{New: func() any {
	b := make([]byte, memLimit+1)
	return &b
}}

// input is a submitted body, in memory or spooled to a file.
type input struct {
	store.Data
	digest string
}

func (in *input) discard() {
	if in.Path != "" {
		os.Remove(in.Path)
	}
}

// spool reads r into memory up to memLimit and into a temporary file past
// it, hashing as it goes.
// size is the body's length when the client declared it, else -1.
func (s *Server) spool(r io.Reader, size int64, contentType, filename string) (*input, error) {
	h := sha256.New()
	// A body of known small size gets a buffer of its size (plus one byte
	// to see the end); others borrow a pooled one, so that small submits
	// do not allocate and clear 32 KiB each.
	var buf []byte
	if size >= 0 && size <= memLimit {
		buf = make([]byte, size+1)
	} else {
		pb := spoolBufs.Get().(*[]byte)
		defer spoolBufs.Put(pb)
		buf = *pb
	}
	n, err := fill(r, buf)
	switch {
	case errors.Is(err, io.EOF):
		h.Write(buf[:n])
		data := buf[:n:n]
		if len(buf) == memLimit+1 {
			data = bytes.Clone(buf[:n]) // the pooled buffer goes back
		}
		return &input{Data: store.Data{Blob: job.Blob{ContentType: contentType, Name: filename, Size: int64(n)}, Bytes: data},
			digest: hex.EncodeToString(h.Sum(nil))}, nil
	case err != nil:
		return nil, err
	}
	f, err := os.CreateTemp(s.cfg.TempDir, "upload-*")
	if err != nil {
		return nil, fmt.Errorf("spool upload: %w", err)
	}
	written, err := io.Copy(io.MultiWriter(f, h), io.MultiReader(bytes.NewReader(buf[:n]), r))
	if err = errors.Join(err, f.Close()); err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	return &input{Data: store.Data{Blob: job.Blob{ContentType: contentType, Name: filename, Size: written}, Path: f.Name()},
		digest: hex.EncodeToString(h.Sum(nil))}, nil
}

// fill reads r into buf until buf is full (nil) or r ends (io.EOF). Unlike
// io.ReadFull it hands on r's own io.ErrUnexpectedEOF, with which a body or
// a multipart part cut short ends: taken for a short read, it would make a
// job of a truncated input.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readInput decodes the body of a submit: the input is the body itself, or
// the "file" part of a multipart form.
func (s *Server) readInput(w http.ResponseWriter, r *http.Request) (*input, *problem) {
	body := r.Body
	if s.cfg.MaxBody > 0 {
		body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		p := probMediaType.with("Content-Type " + strconv.Quote(ct) + ": " + err.Error())
		return nil, &p
	}
	fail := func(err error) (*input, *problem) {
		return nil, bodyProblem(err)
	}
	if mt == "multipart/form-data" {
		if params["boundary"] == "" {
			p := probMediaType.with("multipart/form-data without a boundary")
			return nil, &p
		}
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				p := probInvalidField.with(`the form has no "file" part`)
				return nil, &p
			}
			if err != nil {
				return fail(err)
			}
			if part.FormName() != "file" {
				part.Close()
				continue
			}
			pct := part.Header.Get("Content-Type")
			if pct == "" {
				pct = "application/octet-stream"
			}
			in, err := s.spool(part, -1, pct, part.FileName())
			if err != nil {
				return fail(err)
			}
			return in, nil
		}
	}
	in, err := s.spool(body, r.ContentLength, ct, "")
	if err != nil {
		return fail(err)
	}
	if mt == "application/json" || strings.HasSuffix(mt, "+json") {
		if err := validJSON(in); err != nil {
			in.discard()
			p := probInvalidJSON.with(err.Error())
			return nil, &p
		}
	}
	return in, nil
}

// validJSON checks that a JSON input is one well-formed value, streaming
// it when it was spooled to a file.
func validJSON(in *input) error {
	if in.Path == "" {
		if !json.Valid(in.Bytes) {
			var v any
			if err := json.Unmarshal(in.Bytes, &v); err != nil {
				return err
			}
			return errors.New("not a single JSON value")
		}
		return nil
	}
	f, err := os.Open(in.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	depth, values := 0, 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if depth != 0 || values != 1 {
				return errors.New("unexpected end of JSON input")
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if depth == 0 {
				values++
			}
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		default:
			if depth == 0 {
				values++
			}
		}
		if values > 1 {
			return errors.New("more than one JSON value")
		}
	}
}

// preferences are the parts of Prefer headers docket honours.
type preferences struct {
	async bool
	wait  time.Duration
}

func parsePrefer(h http.Header) preferences {
	var p preferences
	for _, line := range h.Values("Prefer") {
		for _, pref := range strings.Split(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(pref), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "respond-async":
				p.async = true
			case "wait":
				if n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`)); err == nil && n > 0 {
					p.wait = min(time.Duration(n)*time.Second, maxWait)
				}
			}
		}
	}
	return p
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request, c *caller) {
	queue := r.PathValue("queue")
	q, ok := s.e.Queue(queue)
	if !ok {
		writeProblem(w, r, probQueueNotFound.with("no queue named "+strconv.Quote(queue)))
		return
	}
	opts, err := parseOptions(r.URL.Query(), time.Now())
	if err != nil {
		writeProblem(w, r, probBadRequest.with(err.Error()))
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 {
		writeProblem(w, r, probBadRequest.with("Idempotency-Key is limited to 255 characters"))
		return
	}
	in, p := s.readInput(w, r)
	if p != nil {
		writeProblem(w, r, *p)
		return
	}
	out, err := s.e.Submit(r.Context(), []store.NewJob{{Queue: queue, Owner: c.owner, Input: in.Data, InputDigest: in.digest,
		Unique: opts.unique, MaxAttempts: opts.maxAttempts, Priority: opts.priority, RunAt: opts.runAt,
		Timeout: opts.timeout, IdempotencyKey: key, Labels: withTraceparent(opts.labels, r.Header), Webhook: opts.webhook, WebhookEvents: opts.events}})
	if err == nil {
		err = out[0].Err
	}
	if err != nil {
		in.discard()
		switch {
		case errors.Is(err, store.ErrQueueFull):
			writeProblem(w, r, probQueueFull.with(fmt.Sprintf("queue %s holds its limit of %d waiting jobs", queue, q.MaxQueued)).after(time.Second))
		case errors.Is(err, engine.ErrUnknownQueue):
			writeProblem(w, r, probQueueNotFound.with(err.Error()))
		default:
			s.fail(w, r, err)
		}
		return
	}
	j := out[0].Job
	if out[0].Existing {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	pref := parsePrefer(r.Header)
	w.Header().Set("Location", jobPath(j.ID))
	if pref.async {
		w.Header().Set("Preference-Applied", "respond-async")
	} else if pref.wait > 0 && !j.State.Terminal() {
		w.Header().Set("Preference-Applied", fmt.Sprintf("wait=%d", int(pref.wait/time.Second)))
		ctx, cancel := context.WithTimeout(r.Context(), pref.wait)
		done, err := s.e.Wait(ctx, j.ID)
		cancel()
		if err == nil {
			j = done
		} else if done != nil && done.Version > j.Version {
			j = done
		}
	}
	if j.State.Terminal() {
		// Only a client that asked to wait is told, by 504, that the job's
		// own timeout ended the wait.
		if pref.wait > 0 && !pref.async && j.State == job.Failed && j.Error != nil && j.Error.Code == job.CodeTimeout {
			p := probTimeout.with(j.Error.Message)
			p.Instance = jobPath(j.ID)
			writeProblem(w, r, p)
			return
		}
		writeJob(w, http.StatusOK, j)
		return
	}
	w.Header().Set("Retry-After", "1")
	writeJob(w, http.StatusAccepted, j)
}

func writeJob(w http.ResponseWriter, status int, j *job.Job) {
	w.Header().Set("ETag", etag(j))
	writeJSON(w, status, toJSON(j))
}

func etag(j *job.Job) string {
	return fmt.Sprintf(`"%d.%d"`, j.Version, j.Position)
}
