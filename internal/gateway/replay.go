package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"

	"github.com/docket/docket/internal/engine"
)

// Handler replays the recorded requests of the http queue to their
// upstreams and records the responses; tempDir receives the responses as
// they arrive, and should be on the store's file system.
func (g *Gateway) Handler(tempDir string) engine.Handler {
	return engine.HandlerFunc(func(ctx context.Context, t *engine.Task) error { return g.replay(ctx, t, tempDirOf(tempDir)) })
}

// idempotent methods may be sent twice with the effect of once (RFC 9110
// §9.2.2), so their jobs are retried whatever went wrong.
var idempotent = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPut: true, http.MethodDelete: true,
	http.MethodOptions: true, http.MethodTrace: true,
}

func (g *Gateway) replay(ctx context.Context, t *engine.Task, tempDir string) error {
	name := t.Job().Labels["upstream"]
	u := g.byName[name]
	if u == nil {
		return engine.Permanent(fmt.Errorf("no upstream named %q is configured on this worker", name))
	}
	in, err := t.OpenInput(ctx)
	if err != nil {
		return fmt.Errorf("opening the recorded request: %w", err)
	}
	defer in.Close()
	rec, err := http.ReadRequest(bufio.NewReaderSize(in, 32<<10))
	if err != nil {
		return engine.Permanent(fmt.Errorf("the recorded request is unreadable: %w", err))
	}
	out := rec.Clone(ctx)
	out.RequestURI = ""
	out.Body = rec.Body
	if rec.ContentLength == 0 {
		out.Body = http.NoBody
	}
	// The recorded request is the one the upstream should get, forwarding
	// headers included; only its address changes.
	(&httputil.ProxyRequest{In: rec, Out: out}).SetURL(u.URL)
	retryable := idempotent[rec.Method] || u.RetryUnsafe
	resp, err := g.client.Do(out)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = fmt.Errorf("upstream %s (%s) did not answer %s %s: %w", u.Name, u.URL.Redacted(), rec.Method, rec.URL.Path, err)
		var op *net.OpError
		if retryable || errors.As(err, &op) && op.Op == "dial" {
			// Not sent at all, or safe to send again.
			return err
		}
		return engine.Permanent(fmt.Errorf("%w; %s is not retried as it may have reached the upstream (retry_unsafe allows it)", err, rec.Method))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		// The upstream, or a proxy before it, is unavailable for now: try
		// again while attempts remain, and keep the last answer.
		if retryable && t.Attempt() < t.Job().MaxAttempts {
			return fmt.Errorf("upstream %s answered %s to %s %s", u.Name, resp.Status, rec.Method, rec.URL.Path)
		}
	}
	f, err := os.CreateTemp(tempDir, "response-*")
	if err != nil {
		return fmt.Errorf("recording the response: %w", err)
	}
	path := f.Name()
	defer os.Remove(path) // a no-op once the store has taken it
	w := bufio.NewWriterSize(f, 64<<10)
	err = recordResponse(w, resp, u.MaxResponse)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errTooLarge) {
			return engine.Permanent(fmt.Errorf("upstream %s's response to %s %s: %w (max_response)", u.Name, rec.Method, rec.URL.Path, err))
		}
		return fmt.Errorf("recording upstream %s's response: %w", u.Name, err)
	}
	return t.SetResultFile(ResponseType, path)
}

// tempDirOf is where responses are recorded when no directory is given.
func tempDirOf(dir string) string {
	if dir == "" {
		return os.TempDir()
	}
	return filepath.Clean(dir)
}
