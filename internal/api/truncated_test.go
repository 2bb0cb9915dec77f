package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/store"
)

// A body cut short is refused, whatever its size: a small one must not
// pass for a whole input because it ended before the buffer was full.
func TestTruncatedBodiesAreRefused(t *testing.T) {
	ev := newEnv(t, api.Config{}, engine.Options{})
	part := "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n"
	cases := []struct{ name, body string }{
		{"small part without its closing boundary", part + "%PDF-1.4 and no end"},
		{"large part without its closing boundary", part + strings.Repeat("x", 100<<10)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/v1/queues/held/jobs", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "multipart/form-data; boundary=XX")
			rec := httptest.NewRecorder()
			ev.srv.Config.Handler.ServeHTTP(rec, req)
			resp{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}.problem(t, http.StatusBadRequest, "bad-request")
		})
	}
	if page, err := ev.e.Store().List(t.Context(), store.Filter{}); err != nil || len(page.Jobs) != 0 {
		t.Errorf("truncated bodies made jobs: %v (%v)", page.Jobs, err)
	}
}
