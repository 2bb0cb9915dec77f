package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// oaDoc is the part of an OpenAPI document the checks below read.
type oaDoc struct {
	OpenAPI string `json:"openapi"`
	// Paths holds path items by key: operations under method names, and
	// path-level parameters, summary and so on.
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Responses map[string]oaResponse `json:"responses"`
		Schemas   map[string]any        `json:"schemas"`
	} `json:"components"`
}

type oaOperation struct {
	Responses  map[string]oaResponse `json:"responses"`
	Parameters []json.RawMessage     `json:"parameters"`
}

type oaResponse struct {
	Ref     string `json:"$ref"`
	Content map[string]struct {
		Schema struct {
			Ref string `json:"$ref"`
		} `json:"schema"`
	} `json:"content"`
}

var oaMethods = map[string]bool{"get": true, "put": true, "post": true, "delete": true, "options": true, "head": true, "patch": true, "trace": true}

func oaLoad(t *testing.T) ([]byte, oaDoc) {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc oaDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return raw, doc
}

// oaRouteOps returns the server's routes as "METHOD /path" with path
// wildcards in OpenAPI form ({name...} and {$} are ServeMux syntax). They
// are the API's own: Config{} mounts no App, and an App's routes are left
// out of openapi.json on purpose, as they are another service's API,
// mounted only when asked for and described with their app (docs/PDF.md).
func oaRouteOps(t *testing.T) map[string]bool {
	t.Helper()
	ops := map[string]bool{}
	for _, p := range New(Config{}).Patterns() {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			t.Fatalf("pattern %q has no method: every route must name one", p)
		}
		path = strings.ReplaceAll(strings.TrimSuffix(path, "{$}"), "...}", "}")
		ops[strings.ToUpper(method)+" "+path] = true
	}
	return ops
}

func oaDocOps(t *testing.T, doc oaDoc) map[string]oaOperation {
	t.Helper()
	ops := map[string]oaOperation{}
	for path, item := range doc.Paths {
		for key, raw := range item {
			if !oaMethods[key] {
				continue
			}
			var op oaOperation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", key, path, err)
			}
			ops[strings.ToUpper(key)+" "+path] = op
		}
	}
	return ops
}

func TestOpenAPIVersion(t *testing.T) {
	_, doc := oaLoad(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	if len(doc.Paths) == 0 {
		t.Fatal("no paths")
	}
}

// The description and the mux are two lists of the same routes; a route
// added to one only is a client that breaks or a route nobody knows of.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	_, doc := oaLoad(t)
	routes, described := oaRouteOps(t), oaDocOps(t, doc)
	for _, op := range slices.Sorted(maps.Keys(routes)) {
		if _, ok := described[op]; !ok {
			t.Errorf("route %s is not described in openapi.json", op)
		}
	}
	for _, op := range slices.Sorted(maps.Keys(described)) {
		if !routes[op] {
			t.Errorf("openapi.json describes %s, which the server does not route", op)
		}
	}
	routePaths := map[string]bool{}
	for op := range routes {
		_, path, _ := strings.Cut(op, " ")
		routePaths[path] = true
	}
	for _, path := range slices.Sorted(maps.Keys(doc.Paths)) {
		if !routePaths[path] {
			t.Errorf("openapi.json has path %s, which no route serves", path)
		}
	}
}

// Clients decode every error as a problem, so each operation must say which
// of its errors are problems.
func TestOpenAPIOperationsAnswerProblems(t *testing.T) {
	_, doc := oaLoad(t)
	if _, ok := doc.Components.Schemas["Problem"]; !ok {
		t.Fatal("no Problem schema in components")
	}
	const problemRef = "#/components/schemas/Problem"
	resolve := func(r oaResponse) (oaResponse, bool) {
		if r.Ref == "" {
			return r, true
		}
		name, ok := strings.CutPrefix(r.Ref, "#/components/responses/")
		if !ok {
			return r, false
		}
		got, ok := doc.Components.Responses[name]
		return got, ok
	}
	ops := oaDocOps(t, doc)
	for _, name := range slices.Sorted(maps.Keys(ops)) {
		op := ops[name]
		t.Run(name, func(t *testing.T) {
			if len(op.Responses) == 0 {
				t.Fatal("no responses")
			}
			problems := 0
			for _, status := range slices.Sorted(maps.Keys(op.Responses)) {
				r, ok := resolve(op.Responses[status])
				if !ok {
					t.Errorf("%s: unresolvable $ref %q", status, op.Responses[status].Ref)
					continue
				}
				pj, isProblem := r.Content["application/problem+json"]
				if isProblem && pj.Schema.Ref != problemRef {
					t.Errorf("%s: problem+json schema is %q, want %s", status, pj.Schema.Ref, problemRef)
				}
				if status[0] == '4' || status[0] == '5' {
					if !isProblem {
						t.Errorf("%s: an error response that is not application/problem+json", status)
					}
					if status[0] == '4' && isProblem {
						problems++
					}
				}
			}
			if problems == 0 {
				t.Error("no 4xx response with the Problem schema")
			}
		})
	}
}

// A path wildcard the operation does not declare leaves generated clients
// unable to fill it in.
func TestOpenAPIPathParameters(t *testing.T) {
	raw, doc := oaLoad(t)
	var full struct {
		Components struct {
			Parameters map[string]struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &full); err != nil {
		t.Fatal(err)
	}
	type param struct {
		Ref  string `json:"$ref"`
		Name string `json:"name"`
		In   string `json:"in"`
	}
	pathParams := func(raws []json.RawMessage) map[string]bool {
		out := map[string]bool{}
		for _, r := range raws {
			var p param
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			if name, ok := strings.CutPrefix(p.Ref, "#/components/parameters/"); ok {
				c, found := full.Components.Parameters[name]
				if !found {
					t.Errorf("unresolvable parameter $ref %q", p.Ref)
					continue
				}
				p.Name, p.In = c.Name, c.In
			}
			if p.In == "path" {
				out[p.Name] = true
			}
		}
		return out
	}
	wildcard := regexp.MustCompile(`\{([^}]+)\}`)
	for _, path := range slices.Sorted(maps.Keys(doc.Paths)) {
		var shared []json.RawMessage
		if r, ok := doc.Paths[path]["parameters"]; ok {
			if err := json.Unmarshal(r, &shared); err != nil {
				t.Fatal(err)
			}
		}
		ops := oaDocOps(t, oaDoc{Paths: map[string]map[string]json.RawMessage{path: doc.Paths[path]}})
		for _, name := range slices.Sorted(maps.Keys(ops)) {
			op := ops[name]
			declared := pathParams(append(append([]json.RawMessage(nil), shared...), op.Parameters...))
			for _, m := range wildcard.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("%s: path parameter %q is not declared", name, m[1])
				}
			}
		}
	}
}

// Every $ref must point into the document: a dangling one makes the whole
// description unusable to tools.
func TestOpenAPIRefsResolve(t *testing.T) {
	raw, _ := oaLoad(t)
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	lookup := func(ref string) bool {
		ptr, ok := strings.CutPrefix(ref, "#/")
		if !ok {
			return false
		}
		node := tree
		for _, tok := range strings.Split(ptr, "/") {
			tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
			m, ok := node.(map[string]any)
			if !ok {
				return false
			}
			if node, ok = m[tok]; !ok {
				return false
			}
		}
		return true
	}
	var walk func(any)
	walk = func(n any) {
		switch v := n.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok && !lookup(ref) {
				t.Errorf("dangling $ref %q", ref)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(tree)
}

func TestOpenAPIServed(t *testing.T) {
	raw, _ := oaLoad(t)
	tok := Token{Owner: "alice", Scopes: []string{ScopeRead}, Hash: sha256.Sum256([]byte("alice-token"))}
	tests := []struct {
		name   string
		cfg    Config
		auth   string
		status int
		ctype  string
	}{
		{"open mode", Config{}, "", http.StatusOK, "application/json"},
		{"tokens, none sent", Config{Tokens: []Token{tok}}, "", http.StatusOK, "application/json"},
		{"tokens, known one sent", Config{Tokens: []Token{tok}}, "Bearer alice-token", http.StatusOK, "application/json"},
		{"tokens, unknown one sent", Config{Tokens: []Token{tok}}, "Bearer nobody", http.StatusUnauthorized, "application/problem+json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(New(tt.cfg))
			defer srv.Close()
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/openapi.json", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tt.ctype {
				t.Errorf("Content-Type %q, want %q", ct, tt.ctype)
			}
			if tt.status == http.StatusOK && !bytes.Equal(body, raw) {
				t.Errorf("served %d bytes that differ from openapi.json (%d bytes)", len(body), len(raw))
			}
		})
	}
}
