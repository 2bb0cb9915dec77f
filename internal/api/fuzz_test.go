package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
)

// FuzzSubmitDecoding sends arbitrary query strings, headers and bodies to
// the submit route: every answer is a success or a client error given as a
// problem, never a server error or a panic.
func FuzzSubmitDecoding(f *testing.F) {
	f.Add("priority=1&label=a:b", "application/json", "", "wait=1", `{"x":1}`)
	f.Add("delay=1s", "multipart/form-data; boundary=XX", "k", "", "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nhi\r\n--XX--\r\n")
	f.Add("run_at=2030-01-01T00:00:00Z&unique=true", "text/plain", "", "respond-async", "hello")
	f.Add("max_attempts=%zz", "application/json", "", "", `[1,`)
	f.Add("", "multipart/form-data; boundary=", "", "wait=-3", "--")
	ev := newEnv(f, api.Config{MaxBody: 1 << 16}, engine.Options{})
	h := ev.srv.Config.Handler
	f.Fuzz(func(t *testing.T, query, ctype, key, prefer, body string) {
		if _, err := url.ParseRequestURI("/v1/queues/held/jobs?" + query); err != nil || strings.ContainsAny(query, " #") {
			return // not a request line a client can send
		}
		req := httptest.NewRequest("POST", "/v1/queues/held/jobs?"+query, strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		if prefer != "" {
			req.Header.Set("Prefer", prefer)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusAccepted || rec.Code == http.StatusOK:
			var m map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || m["id"] == nil {
				t.Fatalf("%d with body %q", rec.Code, rec.Body.Bytes())
			}
		case rec.Code >= 400 && rec.Code < 500:
			if rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d is not a problem: %q", rec.Code, rec.Body.Bytes())
			}
			var p map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p["type"] == nil {
				t.Fatalf("%d problem %q", rec.Code, rec.Body.Bytes())
			}
		default:
			t.Fatalf("status %d for query %q type %q body %q: %s", rec.Code, query, ctype, body, rec.Body.Bytes())
		}
	})
}
