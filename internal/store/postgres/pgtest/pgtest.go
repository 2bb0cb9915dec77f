// Package pgtest gives a test a PostgreSQL schema of its own, so that tests
// of any package can run against the shared database in parallel without
// seeing each other's data.
//
// The server is named by DOCKET_TEST_POSTGRES (default DefaultURL). When it
// cannot be reached the test is skipped, unless CI=true, where that is a
// failure: a CI run must not pass by testing nothing.
package pgtest

import (
	"context"
	"crypto/rand"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the server tests use when DOCKET_TEST_POSTGRES is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// BaseURL returns the test server's connection string, without a schema.
func BaseURL() string {
	if u := os.Getenv("DOCKET_TEST_POSTGRES"); u != "" {
		return u
	}
	return DefaultURL
}

// URL creates a fresh, empty schema docket_test_<random> and returns a
// connection string whose search_path names it. The schema and everything
// in it are dropped when the test ends (after the test's own cleanups
// registered later, such as closing a store).
func URL(t testing.TB) string {
	t.Helper()
	base := BaseURL()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := connect(ctx, base)
	if err != nil {
		unavailable(t, base, err)
	}
	defer conn.Close(context.Background())
	schema := "docket_test_" + strings.ToLower(rand.Text()[:16])
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		t.Fatalf("pgtest: create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
		}
	})
	return withSearchPath(base, schema)
}

func connect(ctx context.Context, conn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(conn)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	return pgx.ConnectConfig(ctx, cfg)
}

func unavailable(t testing.TB, base string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("pgtest: PostgreSQL at %s is unreachable (CI=true, so this fails): %v", redact(base), err)
	}
	t.Skipf("pgtest: PostgreSQL at %s is unreachable, skipping (set DOCKET_TEST_POSTGRES to a reachable server): %v", redact(base), err)
}

// withSearchPath sets search_path in a connection string of either form.
func withSearchPath(conn, schema string) string {
	if u, err := url.Parse(conn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return conn + " search_path=" + schema
}

// redact hides a password in a URL before it is printed.
func redact(conn string) string {
	if u, err := url.Parse(conn); err == nil {
		return u.Redacted()
	}
	return conn
}
