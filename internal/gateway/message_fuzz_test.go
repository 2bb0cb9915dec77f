package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Whatever request a server accepts, its record reads back as the request
// the upstream is to get: the same method, path, query and body, the
// end-to-end headers kept, docket's own and the connection's dropped.
func FuzzRecordRequest(f *testing.F) {
	f.Add([]byte("POST /reports/1?a=1&b=%20 HTTP/1.1\r\nHost: x\r\nX-Custom: v\r\nContent-Length: 4\r\n\r\nbody"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nPrefer: respond-async, return=minimal\r\nAuthorization: Bearer t\r\n\r\n"))
	f.Add([]byte("PUT /a%2Fb/c HTTP/1.1\r\nHost: x\r\nConnection: X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	u := &upstream{Upstream: Upstream{Name: "app"}}
	f.Fuzz(func(t *testing.T, raw []byte) {
		in, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		body, err := io.ReadAll(in.Body)
		if err != nil {
			return
		}
		in.RemoteAddr = "192.0.2.1:1234"
		var rec bytes.Buffer
		if err := u.recordRequest(&rec, in, bytes.NewReader(body)); err != nil {
			return // net/http refuses to write it (such as a bad header value)
		}
		got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(rec.Bytes())))
		if err != nil {
			t.Fatalf("recorded request unreadable: %v\n%q", err, rec.Bytes())
		}
		if got.Method != in.Method || got.URL.EscapedPath() != in.URL.EscapedPath() || got.URL.RawQuery != in.URL.RawQuery {
			t.Errorf("recorded %s %s?%s, received %s %s?%s", got.Method, got.URL.EscapedPath(), got.URL.RawQuery,
				in.Method, in.URL.EscapedPath(), in.URL.RawQuery)
		}
		if b, err := io.ReadAll(got.Body); err != nil || !bytes.Equal(b, body) {
			t.Errorf("body %q, received %q (%v)", b, body, err)
		}
		if got.Header.Get("X-Forwarded-For") == "" || got.Header.Get("Authorization") != "" || got.Header.Get("Connection") != "" ||
			got.Header.Get("X-Async-Request") != "" {
			t.Errorf("headers %v", got.Header)
		}
		for pref := range strings.SplitSeq(got.Header.Get("Prefer"), ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(pref), "=")
			if n := strings.ToLower(strings.TrimSpace(name)); n == "respond-async" || n == "wait" {
				t.Errorf("Prefer %q recorded", got.Header.Get("Prefer"))
			}
		}
	})
}
