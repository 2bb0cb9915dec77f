package api

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Every request has an id: the client's X-Request-Id when it sends a
// usable one (so that a request can be followed through the proxies in
// front of docket), else a new one. It is sent back in X-Request-Id and is
// on every log line about the request.
const headerRequestID = "X-Request-Id"

// requestID is the id of a request whose client sent sent: kept when it is
// 1 to 128 letters, digits and ._:/+=- (safe in a header and a log line).
func requestID(sent string) string {
	if usableID(sent) {
		return sent
	}
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func usableID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:/+=-", c) >= 0) {
			return false
		}
	}
	return true
}

type logKey struct{}

// logger is the request's logger: the server's, with the request's id.
func (s *Server) logger(r *http.Request) *slog.Logger {
	if l, ok := r.Context().Value(logKey{}).(*slog.Logger); ok {
		return l
	}
	return s.log
}

// observe gives the request its id and logger.
func (s *Server) observe(w http.ResponseWriter, r *http.Request) *http.Request {
	id := requestID(r.Header.Get(headerRequestID))
	w.Header().Set(headerRequestID, id)
	return r.WithContext(context.WithValue(r.Context(), logKey{}, s.log.With("request_id", id)))
}

// Traceparent is the request's W3C trace context header when it is well
// formed (version 00, non-zero ids), else "". A submitted job keeps it as
// its "traceparent" label, so that its work is tied to the trace of the
// request that asked for it: its log lines carry the trace id, commands get
// it in $TRACEPARENT and the gateway passes it upstream.
func Traceparent(h http.Header) string {
	tp := h.Get("Traceparent")
	if !traceparentPattern.MatchString(tp) || tp[3:35] == zeros[:32] || tp[36:52] == zeros[:16] {
		return ""
	}
	return tp
}

var traceparentPattern = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

const zeros = "00000000000000000000000000000000"

// recorder notes a response's status for the request metrics, passing
// everything else through, flushes and hijacks included.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush is for handlers that test for http.Flusher.
func (r *recorder) Flush() { http.NewResponseController(r.ResponseWriter).Flush() }

// Hijack is for handlers that test for http.Hijacker (WebSocket): the
// connection is theirs, and the request counts as switched.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return conn, brw, err
}

// measure serves a route's request, counting it by pattern and status.
func (s *Server) measure(pattern string, w http.ResponseWriter, r *http.Request, serve func(http.ResponseWriter, *http.Request)) {
	if s.cfg.Metrics == nil {
		serve(w, r)
		return
	}
	began := time.Now()
	rec := &recorder{ResponseWriter: w}
	serve(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	s.cfg.Metrics.Request(pattern, rec.status, time.Since(began))
}

func (f streamFormat) kind() string {
	switch f {
	case formatNDJSON:
		return "ndjson"
	case formatArray:
		return "json"
	}
	return "sse"
}

// serveMetrics serves the Prometheus metrics; 404 when the server keeps
// none.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, _ *caller) {
	if s.cfg.Metrics == nil {
		writeProblem(w, r, probNotFound.with("this server keeps no metrics"))
		return
	}
	s.cfg.Metrics.Handler().ServeHTTP(w, r)
}

// withTraceparent adds the request's trace context to a job's labels.
func withTraceparent(labels map[string]string, h http.Header) map[string]string {
	tp := Traceparent(h)
	if tp == "" {
		return labels
	}
	if labels == nil {
		labels = map[string]string{}
	}
	labels["traceparent"] = tp
	return labels
}
