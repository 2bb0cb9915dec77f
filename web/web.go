// Package web is docket's dashboard: one page and its scripts, embedded in
// the binary and served beside the API, that talks to /v1 from the browser
// with the user's token. It needs nothing from outside (no CDN, no fonts,
// no build step): the files under static/ are served as they are.
//
// The page is served at exactly GET /, everything else under /ui/, so that
// a gateway that proxies the rest of the paths to an upstream keeps them.
// Links inside the dashboard are fragments (#/jobs/ID), never paths, for
// the same reason.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/docket/docket/internal/api"
)

//go:embed static
var static embed.FS

// versionMark is replaced in index.html by the version of the assets, so
// that the page names assets by URLs that change whenever any of them does
// and may therefore be cached for good.
const versionMark = "__VERSION__"

// asset is one embedded file as served.
type asset struct {
	body  []byte
	gz    []byte // gzip-compressed body, nil when that does not pay
	ctype string
	etag  string // quoted strong ETag of body; gz has its own
}

// site is what App serves; built once, from the embedded files.
type site struct {
	index   *asset
	assets  map[string]*asset // by path under static/, such as "js/app.js"
	version string
}

// built is made when a server first mounts the dashboard, not when the
// program starts: every command of the binary links this package, and
// most serve no dashboard.
var built = sync.OnceValue(build)

// build reads the embedded files, hashes and compresses them. A broken
// embed is a bug of the program, found by every test: it panics.
func build() *site {
	s := &site{assets: map[string]*asset{}}
	sum := sha256.New()
	var index []byte
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		if name == "index.html" {
			index = b
			return nil
		}
		s.assets[name] = newAsset(name, b)
		sum.Write([]byte(name))
		sum.Write(b)
		return nil
	})
	if err == nil && index == nil {
		err = errors.New("no index.html")
	}
	if err != nil {
		panic("web: embedded files: " + err.Error())
	}
	s.version = hex.EncodeToString(sum.Sum(nil))[:12]
	s.index = newAsset("index.html", bytes.ReplaceAll(index, []byte(versionMark), []byte(s.version)))
	return s
}

func newAsset(name string, b []byte) *asset {
	h := sha256.Sum256(b)
	a := &asset{body: b, ctype: contentType(name), etag: `"` + hex.EncodeToString(h[:8]) + `"`}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	// Small files and images gain little and cost a decompression.
	if buf.Len() < len(b)*9/10 {
		a.gz = buf.Bytes()
	}
	return a
}

// contentType is set by hand for the types the dashboard uses, so that it
// does not depend on the host's MIME tables (a Windows registry may map
// .js to text/plain, which browsers refuse for modules).
func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".json", ".webmanifest":
		return "application/json"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// App serves the dashboard: the page at GET / and GET /ui/, its assets
// under GET /ui/{version}/..., and GET /ui/session, which tells the page
// who the token it holds belongs to. The page and the assets are public
// (Scope ""): only what the page then asks of /v1 needs a token.
func App(srv *api.Server) []api.Route {
	return append(AppUI(srv), api.Route{Pattern: "GET /{$}", Handler: built().serveIndex})
}

// AppUI serves the dashboard as App does but at /ui/ only, leaving GET /
// to a gateway upstream that serves every path.
func AppUI(_ *api.Server) []api.Route {
	s := built()
	return []api.Route{
		{Pattern: "GET /ui/{$}", Handler: s.serveIndex},
		{Pattern: "GET /ui/", Handler: s.serveAsset},
		{Pattern: "GET /ui/session", Scope: api.ScopeRead, Handler: serveSession},
	}
}

// Version is the content hash of the dashboard's assets: the path segment
// under /ui/ that the page loads them from.
func Version() string { return built().version }

// csp allows the page nothing but its own origin: results and artifacts are
// shown from Blob URLs, never inserted as markup, so no inline script or
// style is needed.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

func (s *site) serveIndex(w http.ResponseWriter, r *http.Request, _ api.Caller) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	// The page names the current assets: it must be revalidated every
	// time, or a browser would keep loading the assets of an old version.
	h.Set("Cache-Control", "no-cache")
	serve(w, r, s.index)
}

// serveAsset serves /ui/{version}/{name}. An asset of the current version
// is cached for good (its URL changes with its content); one asked for
// under another version, from a page loaded before an upgrade, gets the
// current bytes but must be revalidated, as must /ui/{name}.
func (s *site) serveAsset(w http.ResponseWriter, r *http.Request, _ api.Caller) {
	rest := strings.TrimPrefix(r.URL.Path, "/ui/")
	cache := "no-cache"
	a := s.assets[rest]
	if a == nil {
		if v, name, ok := strings.Cut(rest, "/"); ok {
			a = s.assets[name]
			if v == s.version {
				cache = "public, max-age=31536000, immutable"
			}
		}
	}
	if a == nil {
		api.WriteProblem(w, r, api.ProblemRouteNotFound, "no dashboard file "+strconv.Quote(rest))
		return
	}
	w.Header().Set("Cache-Control", cache)
	serve(w, r, a)
}

// serve answers with a, compressed when the client takes gzip, or 304 when
// the client's copy is current.
func serve(w http.ResponseWriter, r *http.Request, a *asset) {
	h := w.Header()
	body, etag := a.body, a.etag
	if a.gz != nil {
		h.Set("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			body, etag = a.gz, strings.TrimSuffix(a.etag, `"`)+`-gz"`
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if match(r.Header.Get("If-None-Match"), etag) {
		h.Del("Content-Encoding")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// acceptsGzip reports whether an Accept-Encoding header takes gzip (and
// does not refuse it with q=0).
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}

// match reports whether an If-None-Match header names etag (weakly, as
// RFC 9110 has it for If-None-Match).
func match(header, etag string) bool {
	if header == "" {
		return false
	}
	if strings.TrimSpace(header) == "*" {
		return true
	}
	for _, t := range strings.Split(header, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == etag {
			return true
		}
	}
	return false
}

// session is what GET /ui/session answers: who the caller is, so that the
// page shows the owner column and the admin buttons only to those who
// can use them. The API still decides every request on its own.
type session struct {
	Owner string `json:"owner,omitempty"`
	Admin bool   `json:"admin"`
}

func serveSession(w http.ResponseWriter, r *http.Request, c api.Caller) {
	w.Header().Set("Cache-Control", "no-store")
	api.WriteJSON(w, http.StatusOK, session{Owner: c.Owner, Admin: c.Admin})
}
