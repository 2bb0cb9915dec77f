package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgServer is a PostgreSQL server of a test's own, for the tests that
// restart the database under running nodes: restarting the shared server
// would break every other test using it at the time.
type pgServer struct {
	t    testing.TB
	bin  string // the folder of initdb and pg_ctl
	dir  string
	port int
	// URL connects to its postgres database.
	URL string
}

// startPostgres initialises and starts a throwaway server on a free
// loopback port; it is stopped and removed when the test ends. Without the
// server programs the test is skipped, or fails when CI=true.
func startPostgres(t testing.TB) *pgServer {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("PostgreSQL's server programs (initdb, pg_ctl) are not installed; .ci/run installs them")
		}
		t.Skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
	}
	dir, err := os.MkdirTemp("", "docket-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &pgServer{t: t, bin: filepath.Dir(found[len(found)-1]), dir: dir, port: freePort(t)}
	p.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	// PostgreSQL refuses to run as root: run its programs as postgres.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	p.run("initdb", "-D", p.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(dir, "log"), "-o", p.options(), "-w", "-t", "60", "start")
	t.Cleanup(func() {
		p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
	})
	p.ready(30 * time.Second)
	return p
}

func (p *pgServer) data() string { return filepath.Join(p.dir, "data") }

// options keep the server to loopback and its socket in its own folder, and
// trade durability for speed: the tests restart it cleanly.
func (p *pgServer) options() string {
	return fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200", p.port, p.dir)
}

// restart stops the server (closing every connection, as an operator's
// restart does) and starts it again.
func (p *pgServer) restart() {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "log"), "-o", p.options(), "-m", "fast", "-w", "-t", "60", "restart")
	p.ready(30 * time.Second)
}

func (p *pgServer) run(prog string, args ...string) {
	p.t.Helper()
	cmd := exec.Command(filepath.Join(p.bin, prog), args...)
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(p.bin, prog)}, args...)...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
		p.t.Fatalf("%s: %v\n%s\n%s", prog, err, out, log)
	}
}

func (p *pgServer) ready(within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, p.URL)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("PostgreSQL at %s not ready: %v", p.URL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
