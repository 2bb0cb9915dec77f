package web_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/web"
)

// firstLoadBudget bounds what a browser fetches to show the dashboard the
// first time: the page and every file it names.
const firstLoadBudget = 200 << 10

type response struct {
	status int
	header http.Header
	body   []byte
}

func fetch(t *testing.T, method, url string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// An explicit Accept-Encoding keeps net/http from asking for gzip and
	// decoding it behind the test's back.
	req.Header.Set("Accept-Encoding", "identity")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

// assetRefs are the files index.html names (href and src), as served paths.
var assetRefs = regexp.MustCompile(`(?:href|src)="(/ui/[^"]+)"`)

// imports are the static imports of a module.
var imports = regexp.MustCompile(`(?m)^import .* from '(\./[^']+)';`)

func TestServesPageAndAssets(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{Tokens: tokens(), Apps: []api.App{web.App}})
	v := web.Version()

	page := fetch(t, "GET", srv.URL+"/")
	if page.status != 200 {
		t.Fatalf("GET /: %d %s", page.status, page.body)
	}
	for k, want := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "no-cache",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := page.header.Get(k); got != want {
			t.Errorf("GET /: %s %q, want %q", k, got, want)
		}
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	if bytes.Contains(page.body, []byte("__VERSION__")) || !bytes.Contains(page.body, []byte("ui/"+v+"/")) {
		t.Errorf("the page does not name the assets by version %s:\n%s", v, page.body)
	}
	if r := fetch(t, "GET", srv.URL+"/", "If-None-Match", page.header.Get("ETag")); r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Errorf("GET / with its ETag: %d, %d bytes", r.status, len(r.body))
	}
	if r := fetch(t, "HEAD", srv.URL+"/"); r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != page.header.Get("Content-Length") {
		t.Errorf("HEAD /: %d, %d bytes, length %s", r.status, len(r.body), r.header.Get("Content-Length"))
	}

	// Every file the page names, and every module those import: served
	// under the version, cached for good, with its type; the total within
	// the budget.
	total, gzTotal := len(page.body), 0
	if r := fetch(t, "GET", srv.URL+"/", "Accept-Encoding", "gzip"); r.header.Get("Content-Encoding") == "gzip" {
		gzTotal = len(r.body)
	} else {
		gzTotal = len(page.body)
	}
	seen := map[string]bool{}
	var queue []string
	for _, m := range assetRefs.FindAllStringSubmatch(string(page.body), -1) {
		queue = append(queue, strings.TrimPrefix(m[1], "/ui/"+v+"/"))
	}
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		url := srv.URL + "/ui/" + v + "/" + name
		r := fetch(t, "GET", url)
		if r.status != 200 {
			t.Errorf("GET %s: %d", url, r.status)
			continue
		}
		ext := name[strings.LastIndex(name, "."):]
		if got := r.header.Get("Content-Type"); got != types[ext] {
			t.Errorf("%s: Content-Type %q, want %q", name, got, types[ext])
		}
		if got := r.header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
			t.Errorf("%s: Cache-Control %q", name, got)
		}
		if r.header.Get("ETag") == "" {
			t.Errorf("%s: no ETag", name)
		}
		total += len(r.body)
		gz := fetch(t, "GET", url, "Accept-Encoding", "gzip, deflate, br")
		if gz.header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(gz.body))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil || !bytes.Equal(plain, r.body) {
				t.Errorf("%s: gzip body does not decode to the file (%v)", name, err)
			}
			if gz.header.Get("ETag") == r.header.Get("ETag") {
				t.Errorf("%s: one ETag for two encodings", name)
			}
			if gz.header.Get("Vary") != "Accept-Encoding" {
				t.Errorf("%s: Vary %q", name, gz.header.Get("Vary"))
			}
		}
		gzTotal += len(gz.body)
		if ext == ".js" {
			dir := name[:strings.LastIndex(name, "/")+1]
			for _, m := range imports.FindAllStringSubmatch(string(r.body), -1) {
				dep := dir + strings.TrimPrefix(m[1], "./")
				if !strings.Contains(string(page.body), `"/ui/`+v+"/"+dep+`"`) {
					t.Errorf("%s imports %s, which the page does not preload: the first load would wait for it", name, dep)
				}
				queue = append(queue, dep)
			}
		}
	}
	if !seen["js/app.js"] || !seen["app.css"] {
		t.Errorf("the page names %v; want js/app.js and app.css among them", seen)
	}
	t.Logf("first load: %d files, %d bytes (%d gzip)", len(seen)+1, total, gzTotal)
	if total > firstLoadBudget {
		t.Errorf("the first load is %d bytes uncompressed, over the budget of %d", total, firstLoadBudget)
	}
}

func TestAssetCaching(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{Apps: []api.App{web.App}})
	v := web.Version()
	cur := fetch(t, "GET", srv.URL+"/ui/"+v+"/app.css")
	for _, tc := range []struct{ path, cache string }{
		{"/ui/app.css", "no-cache"},              // unversioned: revalidate
		{"/ui/0123456789ab/app.css", "no-cache"}, // a page from before an upgrade
		{"/ui/" + v + "/js/app.js", "public, max-age=31536000, immutable"},
	} {
		r := fetch(t, "GET", srv.URL+tc.path)
		if r.status != 200 || r.header.Get("Cache-Control") != tc.cache {
			t.Errorf("GET %s: %d, Cache-Control %q, want %q", tc.path, r.status, r.header.Get("Cache-Control"), tc.cache)
		}
	}
	if r := fetch(t, "GET", srv.URL+"/ui/app.css", "If-None-Match", `"x", `+cur.header.Get("ETag")); r.status != http.StatusNotModified {
		t.Errorf("revalidation with a matching ETag: %d", r.status)
	}
	if r := fetch(t, "GET", srv.URL+"/ui/app.css", "If-None-Match", `"other"`); r.status != 200 {
		t.Errorf("revalidation with another ETag: %d", r.status)
	}
	if r := fetch(t, "GET", srv.URL+"/ui/"+v+"/app.css", "Accept-Encoding", "gzip;q=0"); r.header.Get("Content-Encoding") != "" {
		t.Errorf("gzip sent to a client that refuses it")
	}
	// /ui/ itself is the page, for servers whose root belongs to a gateway
	// upstream (AppUI).
	if r := fetch(t, "GET", srv.URL+"/ui/"); r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /ui/: %d %s", r.status, r.header.Get("Content-Type"))
	}
	for _, path := range []string{"/ui/nope.js", "/ui/" + v + "/nope.js", "/ui/" + v + "/", "/ui/index.html", "/ui/../go.mod", "/index.html"} {
		r := fetch(t, "GET", srv.URL+path)
		if r.status != 404 || r.header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("GET %s: %d %s, want a 404 problem", path, r.status, r.header.Get("Content-Type"))
		}
	}
	if r := fetch(t, "POST", srv.URL+"/"); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", r.status)
	}
}

func TestSession(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{Tokens: tokens(), Apps: []api.App{web.App}})
	who := func(token string, want int) map[string]any {
		t.Helper()
		var h []string
		if token != "" {
			h = []string{"Authorization", "Bearer " + token}
		}
		r := fetch(t, "GET", srv.URL+"/ui/session", h...)
		if r.status != want {
			t.Fatalf("session with %q: %d, want %d: %s", token, r.status, want, r.body)
		}
		var m map[string]any
		json.Unmarshal(r.body, &m)
		if want == 200 && r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("session cached: %q", r.header.Get("Cache-Control"))
		}
		return m
	}
	who("", 401) // the page then asks for a token
	who("nobody", 401)
	if m := who(aliceToken, 200); m["owner"] != "alice" || m["admin"] != false {
		t.Errorf("alice: %v", m)
	}
	if m := who(adminToken, 200); m["owner"] != "ops" || m["admin"] != true {
		t.Errorf("admin: %v", m)
	}
	// The page and its assets need no token; an unknown one is still refused.
	if r := fetch(t, "GET", srv.URL+"/"); r.status != 200 {
		t.Errorf("GET / without a token: %d", r.status)
	}
	if r := fetch(t, "GET", srv.URL+"/", "Authorization", "Bearer nobody"); r.status != 401 {
		t.Errorf("GET / with an unknown token: %d", r.status)
	}

	open := apitest.Start(t, apitest.Options{Apps: []api.App{web.App}})
	r := fetch(t, "GET", open.URL+"/ui/session")
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"admin":true`)) {
		t.Errorf("open mode: %d %s", r.status, r.body)
	}
}

// TestBesideCatchAll mounts the dashboard beside an app that serves every
// other path, as the gateway does: the exact root and /ui/ stay the
// dashboard's, the rest goes to the other app.
func TestBesideCatchAll(t *testing.T) {
	other := func(*api.Server) []api.Route {
		return []api.Route{{Pattern: "/", Handler: func(w http.ResponseWriter, r *http.Request, _ api.Caller) {
			io.WriteString(w, "upstream "+r.Method+" "+r.URL.Path)
		}}}
	}
	srv := apitest.Start(t, apitest.Options{Apps: []api.App{web.App, other}})
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/", "<!doctype html>"},
		{"GET", "/ui/" + web.Version() + "/app.css", "/* docket dashboard"},
		{"POST", "/", "upstream POST /"},
		{"GET", "/reports/1", "upstream GET /reports/1"},
		{"GET", "/uix", "upstream GET /uix"},
	} {
		r := fetch(t, tc.method, srv.URL+tc.path)
		if !bytes.HasPrefix(r.body, []byte(tc.want)) {
			t.Errorf("%s %s: %d %.60q, want %q…", tc.method, tc.path, r.status, r.body, tc.want)
		}
	}
}
