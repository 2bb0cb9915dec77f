package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
)

// whoami is an App with a route per scope that answers with its caller,
// and one that reads an upload.
func whoami(s *api.Server) []api.Route {
	answer := func(w http.ResponseWriter, r *http.Request, c api.Caller) {
		api.WriteJSON(w, http.StatusOK, map[string]any{"owner": c.Owner, "admin": c.Admin, "sees_alice": c.Sees("alice")})
	}
	return []api.Route{
		{Pattern: "GET /app/read", Scope: api.ScopeRead, Handler: answer},
		{Pattern: "POST /app/submit", Scope: api.ScopeSubmit, Handler: answer},
		{Pattern: "GET /app/public", Handler: answer},
		{Pattern: "POST /app/upload", Scope: api.ScopeSubmit, Handler: func(w http.ResponseWriter, r *http.Request, c api.Caller) {
			up := s.ReadUpload(w, r)
			if up == nil {
				return
			}
			up.Discard()
			api.WriteJSON(w, http.StatusOK, map[string]any{"size": up.Size, "name": up.Name, "engine": s.Engine() != nil})
		}},
		{Pattern: "GET /app/missing", Scope: api.ScopeRead, Handler: func(w http.ResponseWriter, r *http.Request, c api.Caller) {
			api.WriteProblem(w, r, api.ProblemQueueFull, "full")
		}},
	}
}

func TestAppRoutes(t *testing.T) {
	ev := newEnv(t, api.Config{Tokens: tokens(), MaxBody: 100, Apps: []api.App{whoami}}, engine.Options{})
	type want struct {
		status int
		owner  string
		admin  bool
		sees   bool
	}
	cases := []struct {
		name, method, path, token, body string
		want                            want
		problem                         string
	}{
		{name: "read as alice", method: "GET", path: "/app/read", token: aliceToken, want: want{status: 200, owner: "alice", sees: true}},
		{name: "read as bob", method: "GET", path: "/app/read", token: bobToken, want: want{status: 200, owner: "bob"}},
		{name: "read as admin", method: "GET", path: "/app/read", token: adminToken, want: want{status: 200, owner: "ops", admin: true, sees: true}},
		{name: "read without token", method: "GET", path: "/app/read", want: want{status: 401}, problem: "unauthorized"},
		{name: "submit with read only", method: "POST", path: "/app/submit", token: readToken, want: want{status: 403}, problem: "forbidden"},
		{name: "public without token", method: "GET", path: "/app/public", want: want{status: 200}},
		{name: "public with unknown token", method: "GET", path: "/app/public", token: "nobody", want: want{status: 401}, problem: "unauthorized"},
		{name: "wrong method", method: "DELETE", path: "/app/read", token: aliceToken, want: want{status: 405}, problem: "method-not-allowed"},
		{name: "upload over MaxBody", method: "POST", path: "/app/upload", token: aliceToken, body: strings.Repeat("x", 101), want: want{status: 413}, problem: "body-too-large"},
		{name: "problem with Retry-After", method: "GET", path: "/app/missing", token: aliceToken, want: want{status: 503}, problem: "queue-full"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ev.do(tc.method, tc.path, tc.token, strings.NewReader(tc.body))
			if r.status != tc.want.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want.status, r.body)
			}
			if tc.problem != "" {
				r.problem(t, tc.want.status, tc.problem)
				if p := r.json(t); p["detail"] == "" || p["detail"] == nil {
					t.Errorf("problem without detail: %v", p)
				}
				if tc.want.status == 503 && r.header.Get("Retry-After") != "1" {
					t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
				}
				return
			}
			m := r.json(t)
			if tc.path == "/app/public" {
				return
			}
			if m["owner"] != tc.want.owner || m["admin"] != tc.want.admin || m["sees_alice"] != tc.want.sees {
				t.Errorf("caller %v, want %+v", m, tc.want)
			}
		})
	}
	r := ev.do("POST", "/app/upload", aliceToken, strings.NewReader("hello"), "Content-Type", "text/plain")
	if m := r.json(t); r.status != 200 || m["size"] != 5.0 || m["engine"] != true {
		t.Errorf("upload: %d %v", r.status, m)
	}
	patterns := apiServer(ev).Patterns()
	for _, p := range []string{"GET /app/read", "GET /app/public", "POST /v1/queues/{queue}/jobs"} {
		if !slices.Contains(patterns, p) {
			t.Errorf("Patterns() lacks %s", p)
		}
	}
}
