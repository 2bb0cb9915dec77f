// Package sqlite is docket's embedded store: one SQLite database file in the
// data directory (WAL mode, pure-Go driver), with inputs, results and
// artifacts larger than a page kept as files beside it, so that a 100 MiB
// result is streamed to disk and never held in memory.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/docket/docket/internal/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Sync says how much a commit survives.
type Sync string

const (
	// SyncNormal survives a crash of the process (the default): a commit is
	// in the WAL file before the call returns, but not forced to the disk,
	// so a power loss may lose the last commits.
	SyncNormal Sync = "normal"
	// SyncFull also survives power loss: every commit waits for fsync.
	SyncFull Sync = "full"
)

// Options configure Open.
type Options struct {
	// Dir is the data directory; the database is Dir/docket.db and files
	// live under Dir/blobs.
	Dir  string
	Sync Sync
	// InlineMax is the largest input, result or artifact kept inside the
	// database; larger ones become files. Default 32 KiB.
	InlineMax int64
}

// Store is the SQLite implementation of store.Store.
type Store struct {
	dir       string
	blobs     string
	inlineMax int64
	sync      bool

	rdb *sql.DB // readers
	wdb *sql.DB // the writer's pool of one

	ops        chan *op
	quit       chan struct{}
	writerDone chan struct{}
	ckptDone   chan struct{}
	closeOnce  sync.Once

	stmts sync.Map // query → *sql.Stmt on rdb
}

// stmt returns the reader statement for query, prepared once: parsing
// and planning it again on every Get would cost more than running it.
func (s *Store) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.rdb.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

func (s *Store) read(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// readRow is QueryRow with a prepared statement; a failure to prepare
// surfaces from Scan.
func (s *Store) readRow(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return s.rdb.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// checkpointEvery is how often the WAL is copied back into the database.
// SQLite would otherwise do it inside the commit that crosses 1000 pages,
// and that commit, with every write queued behind it, would pay for the
// copy and its fsync.
const checkpointEvery = 250 * time.Millisecond

func (s *Store) checkpointer() {
	defer close(s.ckptDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			if _, err := s.rdb.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
				// Busy or closing; the next tick tries again.
				continue
			}
		}
	}
}

// ErrClosed is store.ErrClosed.
var ErrClosed = store.ErrClosed

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store in opts.Dir and applies the
// embedded migrations.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("sqlite: empty data directory")
	}
	if opts.Sync == "" {
		opts.Sync = SyncNormal
	}
	if opts.Sync != SyncNormal && opts.Sync != SyncFull {
		return nil, fmt.Errorf("sqlite: sync %q: want normal or full", opts.Sync)
	}
	if opts.InlineMax <= 0 {
		opts.InlineMax = 32 << 10
	}
	blobs := filepath.Join(opts.Dir, "blobs")
	if err := os.MkdirAll(blobs, 0o750); err != nil {
		return nil, fmt.Errorf("sqlite: data directory: %w", err)
	}
	path := filepath.Join(opts.Dir, "docket.db")
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(30000)", "wal_autocheckpoint(0)", "synchronous(" + string(opts.Sync) + ")", "foreign_keys(OFF)"} {
		q.Add("_pragma", p)
	}
	dsn := "file:" + path + "?" + q.Encode()
	rdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(4)
	rdb.SetMaxIdleConns(4)
	rdb.SetConnMaxIdleTime(0)
	wdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	s := &Store{dir: opts.Dir, blobs: blobs, inlineMax: opts.InlineMax, sync: opts.Sync == SyncFull,
		rdb: rdb, wdb: wdb, ops: make(chan *op, 4*maxBatch), quit: make(chan struct{}), writerDone: make(chan struct{}),
		ckptDone: make(chan struct{})}
	conn, err := wdb.Conn(ctx)
	if err != nil {
		rdb.Close()
		wdb.Close()
		return nil, fmt.Errorf("sqlite: connect %s: %w", path, err)
	}
	if err := migrate(ctx, conn); err != nil {
		conn.Close()
		rdb.Close()
		wdb.Close()
		return nil, err
	}
	go s.writer(conn)
	go s.checkpointer()
	return s, nil
}

// migrate applies the embedded migrations not applied yet, in one immediate
// transaction so that stores opening the same file at once agree.
func migrate(ctx context.Context, conn *sql.Conn) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	slices.Sort(names)
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	rollback := func(err error) error {
		conn.ExecContext(ctx, "ROLLBACK")
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
		return rollback(err)
	}
	for _, name := range names {
		base := filepath.Base(name)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return rollback(fmt.Errorf("migration %s: no version prefix", base))
		}
		var n int
		if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE version = ?", v).Scan(&n); err != nil {
			return rollback(err)
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return rollback(err)
		}
		if _, err := conn.ExecContext(ctx, string(body)); err != nil {
			return rollback(fmt.Errorf("migration %s: %w", base, err))
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			v, base, time.Now().UnixMicro()); err != nil {
			return rollback(err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return rollback(err)
	}
	return nil
}

// Close finishes queued writes and closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.writerDone
		<-s.ckptDone
		// Leave a small WAL behind; another process may hold it open, in
		// which case this does what it can.
		s.rdb.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		s.stmts.Range(func(_, st any) bool {
			st.(*sql.Stmt).Close()
			return true
		})
	})
	return errors.Join(s.wdb.Close(), s.rdb.Close())
}
