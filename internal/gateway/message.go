package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
)

// hopHeaders are the headers of one connection, not of the message, which
// no proxy passes on (RFC 9110 §7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders drops the hop-by-hop headers, those the Connection
// header names included.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// The headers by which a client asks for an asynchronous request, and those
// it tells docket about the job with: docket's own, never the upstream's.
const (
	headerAsync          = "X-Async-Request"
	headerAsyncBg        = "X-Async-Background"
	headerWebhook        = "Docket-Webhook"
	headerWebhookEvents  = "Docket-Webhook-Events"
	headerIdempotencyKey = "Idempotency-Key"
)

// prepare makes the headers of a request for the upstream: docket's own
// headers and preferences removed, and Authorization unless the upstream
// takes it. Hop-by-hop and X-Forwarded-* headers are the proxy's concern.
func (u *upstream) prepare(h http.Header) {
	h.Del(headerAsync)
	h.Del(headerAsyncBg)
	h.Del(headerWebhook)
	h.Del(headerWebhookEvents)
	if !u.PassAuthorization {
		h.Del("Authorization")
	}
	// The preferences about waiting were docket's to honour; others (such
	// as return=minimal) are the upstream's.
	var keep []string
	for _, line := range h.Values("Prefer") {
		for pref := range strings.SplitSeq(line, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(pref), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "respond-async", "wait", "":
			default:
				keep = append(keep, strings.TrimSpace(pref))
			}
		}
	}
	h.Del("Prefer")
	if len(keep) > 0 {
		h.Set("Prefer", strings.Join(keep, ", "))
	}
}

// recordRequest writes in, with body as its body, as the HTTP/1.1 message
// the upstream is to get: its method, path, query, headers (prepared as
// for a proxied request, X-Forwarded-* set from the client's connection)
// and body, framed by Content-Length or, when the client sent none,
// chunked. The body streams through.
func (u *upstream) recordRequest(w io.Writer, in *http.Request, body io.Reader) error {
	out := &http.Request{
		Method:        in.Method,
		URL:           &url.URL{Path: in.URL.Path, RawPath: in.URL.RawPath, RawQuery: in.URL.RawQuery},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        in.Header.Clone(),
		Host:          in.Host,
		ContentLength: in.ContentLength,
	}
	if out.Header == nil {
		out.Header = http.Header{}
	}
	removeHopHeaders(out.Header)
	// The body is read now: the upstream has nothing to continue.
	out.Header.Del("Expect")
	u.prepare(out.Header)
	if v, ok := in.Header["X-Forwarded-For"]; ok {
		out.Header["X-Forwarded-For"] = v
	}
	(&httputil.ProxyRequest{In: in, Out: out}).SetXForwarded()
	if _, ok := out.Header["User-Agent"]; !ok {
		// Write would put Go's own in.
		out.Header["User-Agent"] = []string{""}
	}
	if in.ContentLength != 0 {
		out.Body = io.NopCloser(body)
	}
	return out.Write(w)
}

// errTooLarge fails a response larger than its upstream's MaxResponse.
var errTooLarge = errors.New("response too large")

// capped reads at most n bytes and fails past them, rather than cutting
// the body short as io.LimitReader would.
type capped struct {
	r io.Reader
	n int64
}

func (c *capped) Read(p []byte) (int, error) {
	if c.n < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > c.n+1 {
		p = p[:c.n+1]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	if c.n < 0 {
		return n, errTooLarge
	}
	return n, err
}

// recordResponse writes resp as an HTTP/1.1 message: status, headers and
// body, streamed, failing with errTooLarge past max bytes of body. A body of
// unknown length is delimited by the end of the message.
func recordResponse(w io.Writer, resp *http.Response, max int64) error {
	removeHopHeaders(resp.Header)
	resp.Body = io.NopCloser(&capped{r: resp.Body, n: max})
	resp.TransferEncoding = nil
	resp.Trailer = nil
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	if err := resp.Write(w); err != nil {
		if errors.Is(err, errTooLarge) {
			return fmt.Errorf("%w: the body passed %d bytes", errTooLarge, max)
		}
		return err
	}
	return nil
}
