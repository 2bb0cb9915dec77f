// Package postgres is docket's shared store: PostgreSQL through pgx, for
// many API and worker nodes at once. Claims lock rows with FOR UPDATE SKIP
// LOCKED; every change is announced with NOTIFY so that other nodes wake
// their workers and update their watchers; inputs, results and artifacts
// live in the database, in chunks, so that any node can serve any of them
// without holding one whole in memory.
//
// All tables live in the schema the connection's search_path names (set it
// in the URL, ?search_path=name), and so do the advisory locks and the
// notification channel, so that installations in different schemas of one
// database never meet.
package postgres

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docket/docket/internal/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

//go:embed queries.sql
var queriesSQL string

// Options configure Open.
type Options struct {
	// URL is the connection string, e.g.
	// postgres://user@host:5432/db?sslmode=disable&search_path=docket.
	URL string
	// MaxConns is the size of the connection pool; a pool_max_conns in the
	// URL wins. Default 20: batched writes, claims and reads run side by
	// side.
	MaxConns int32
	// InlineMax is the largest input, result or artifact kept in its row;
	// larger ones are stored in chunks. Default 32 KiB.
	InlineMax int64
	// ChunkSize is the size of a chunk of large data. Default 1 MiB.
	ChunkSize int
	// Log receives what the store cannot return to a caller, such as a
	// lost LISTEN connection; nil discards it.
	Log *slog.Logger
}

// Advisory lock classes; the second key of every lock is a hash of the
// schema, so that stores in different schemas never share one.
const (
	lockMigrate = 0x646b7401
	lockLead    = 0x646b7402
)

// Store is the PostgreSQL implementation of store.Store, store.Watcher and
// store.Leader.
type Store struct {
	pool      *pgxpool.Pool
	connCfg   *pgx.ConnConfig // for the connections kept out of the pool
	log       *slog.Logger
	inlineMax int64
	chunkSize int
	origin    string // this instance, in the payloads it sends
	channel   string // the schema's NOTIFY channel

	q map[string]string // statements by name, from queries.sql

	// base is canceled by Close: it bounds every background statement and
	// every Watch.
	base    context.Context
	cancel  context.CancelFunc
	closeMu sync.RWMutex // held for reading while handing work to the groups
	closed  bool
	workers sync.WaitGroup // the group workers
	watches sync.WaitGroup // running Watch calls

	inserts    *group[*insertCall]
	saves      *group[*saveCall]
	progresses *group[*progressCall]
	heartbeats *group[*heartbeatCall]

	leadMu   sync.Mutex
	leadConn *pgx.Conn
	leading  bool

	// listenPing is how long a quiet LISTEN connection waits before it
	// checks that it still works, so that a silently dropped connection
	// is found out.
	listenPing time.Duration
	// watchLost, set by tests before Watch, runs once Watch found its
	// connection lost and before it connects again.
	watchLost func()
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Watcher = (*Store)(nil)
	_ store.Leader  = (*Store)(nil)
)

// Open connects to the database, applies the embedded migrations not
// applied yet and starts the store's batch writers.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.URL == "" {
		return nil, errors.New("postgres: empty URL")
	}
	cfg, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse URL: %w", err)
	}
	if !hasParam(opts.URL, "pool_max_conns") {
		cfg.MaxConns = 20
		if opts.MaxConns > 0 {
			cfg.MaxConns = opts.MaxConns
		}
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// A database that does not answer must not hold a reconnecting
		// watcher or a would-be leader for minutes.
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	if opts.InlineMax <= 0 {
		opts.InlineMax = 32 << 10
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 1 << 20
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	q, err := parseQueries(queriesSQL)
	if err != nil {
		return nil, err
	}
	origin := rand.Text()[:16]
	// docket_changed puts the origin in every payload this pool's
	// connections send; the watcher skips its own.
	cfg.ConnConfig.RuntimeParams["docket.origin"] = origin
	// Every query of the store is meant to follow an index. pgx prepares
	// each statement once per connection, and PostgreSQL may then keep a
	// generic plan made while the jobs table was small (or never analyzed,
	// as with autovacuum off): a claim or a completion by id = ANY(...)
	// would scan the whole table on every call from then on, slower as the
	// table grows (measured: 40 ms a completion instead of 0.8 ms). Ruling
	// sequential scans out where an index serves keeps those plans right;
	// a URL that sets enable_seqscan decides for itself.
	if _, set := cfg.ConnConfig.RuntimeParams["enable_seqscan"]; !set {
		cfg.ConnConfig.RuntimeParams["enable_seqscan"] = "off"
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "docket"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	var channel string
	if err := pool.QueryRow(ctx, "SELECT docket_channel()").Scan(&channel); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: channel: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Store{pool: pool, connCfg: cfg.ConnConfig, log: opts.Log, inlineMax: opts.InlineMax,
		chunkSize: opts.ChunkSize, origin: origin, channel: channel, q: q, base: base, cancel: cancel,
		listenPing: 15 * time.Second}
	s.inserts = newGroup(s, maxInsertBatch, func(c *insertCall) int { return len(c.rows) }, s.runInserts)
	s.saves = newGroup(s, maxBatch, nil, s.runSaves)
	s.progresses = newGroup(s, maxBatch, nil, s.runProgress)
	s.heartbeats = newGroup(s, maxBatch, nil, s.runHeartbeats)
	return s, nil
}

// hasParam reports whether a connection string sets a parameter, in either
// the URL or the key=value form.
func hasParam(conn, name string) bool {
	if u, err := url.Parse(conn); err == nil && u.Scheme != "" {
		return u.Query().Has(name)
	}
	return strings.Contains(conn, name+"=")
}

// migrate applies the embedded migrations not applied yet, in one
// transaction holding an advisory lock, so that nodes starting together
// apply each migration once and none starts on a half-made schema.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	slices.Sort(names)
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var schema *string
	if err := tx.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if schema == nil {
		// No schema of the search_path exists yet: make the first one,
		// so that search_path=docket in the URL is all it takes to keep
		// docket apart from other tables. Nodes starting together
		// serialise on a lock of the database, and the second finds it.
		var first string
		err := tx.QueryRow(ctx, "SELECT trim(both '\"' from trim(split_part(current_setting('search_path'), ',', 1)))").Scan(&first)
		if err != nil {
			return fmt.Errorf("postgres: migrate: %w", err)
		}
		if first == "" || first == "$user" {
			return errors.New("postgres: migrate: no schema of the search_path exists; name one with search_path in the URL")
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 0)", lockMigrate); err != nil {
			return fmt.Errorf("postgres: migrate: lock: %w", err)
		}
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{first}.Sanitize()); err != nil {
			return fmt.Errorf("postgres: migrate: create schema %s: %w", first, err)
		}
		if err := tx.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil || schema == nil {
			return fmt.Errorf("postgres: migrate: schema %s made but not current: %v", first, err)
		}
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))", lockMigrate); err != nil {
		return fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	known := 0
	for _, name := range names {
		v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, "migrations/"), "_", 2)[0])
		if err == nil {
			known = max(known, v)
		}
	}
	// A schema migrated by a newer docket may hold what this one does not
	// know how to keep consistent: refuse rather than corrupt it.
	if newest := slices.Max(append(applied, 0)); newest > known {
		return fmt.Errorf("postgres: migrate: the schema is at version %d, newer than this docket knows (%d): run a docket at least as new as the one that migrated it", newest, known)
	}
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("postgres: migration %s: no version prefix", base)
		}
		if slices.Contains(applied, v) {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return fmt.Errorf("postgres: migration %s: %w", base, err)
		}
		if _, err := tx.Exec(ctx, string(body)); err != nil {
			return fmt.Errorf("postgres: migration %s: %w", base, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", v, base); err != nil {
			return fmt.Errorf("postgres: migration %s: %w", base, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: commit: %w", err)
	}
	return nil
}

// jobColumns are the columns scanJob reads, in its order.
var jobColumns = []string{"id", "queue", "owner", "state", "priority", "run_at", "attempt", "max_attempts",
	"timeout_us", "idempotency_key", "input_digest", "unique_digest", "labels", "input_type", "input_name",
	"input_size", "progress_current", "progress_total", "progress_message", "result_type", "result_size",
	"artifacts", "error_message", "error_code", "created_at", "started_at", "finished_at", "updated_at",
	"expires_at", "version", "lease_token", "lease_expires_at", "worker", "webhook_url", "webhook_events"}

var columnsMark = regexp.MustCompile(`(\w+\.)?@job_columns`)

// parseQueries splits queries.sql into its named statements.
func parseQueries(text string) (map[string]string, error) {
	out := map[string]string{}
	var name string
	var body strings.Builder
	flush := func() {
		if name != "" {
			q := strings.TrimSuffix(strings.TrimSpace(body.String()), ";")
			out[name] = columnsMark.ReplaceAllStringFunc(q, func(m string) string {
				prefix, _, _ := strings.Cut(m, "@")
				cols := make([]string, len(jobColumns))
				for i, c := range jobColumns {
					cols[i] = prefix + c
				}
				return strings.Join(cols, ", ")
			})
		}
		body.Reset()
	}
	for line := range strings.Lines(text) {
		if n, ok := strings.CutPrefix(line, "-- name: "); ok {
			flush()
			name = strings.TrimSpace(n)
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("postgres: queries.sql: %s defined twice", name)
			}
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		body.WriteString(line)
	}
	flush()
	return out, nil
}

// sql returns the statement of that name; a missing one is a bug caught by
// every test.
func (s *Store) sql(name string) string {
	q, ok := s.q[name]
	if !ok {
		panic("postgres: no statement " + name)
	}
	return q
}

// closeGrace bounds how long Close waits for batched writes.
const closeGrace = 30 * time.Second

// Close waits for the batched writes handed over so far, then closes the
// pool and the connections kept for LISTEN and for the lead.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	for _, g := range []interface{ stop() }{s.inserts, s.saves, s.progresses, s.heartbeats} {
		g.stop()
	}
	// The batches handed over are finished, unless the database does not
	// answer: then they are cut short rather than holding Close forever.
	finished := make(chan struct{})
	go func() {
		s.workers.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(closeGrace):
		s.log.Warn("postgres: close: batched writes still running, canceling them", "after", closeGrace)
	}
	s.cancel()
	<-finished
	s.watches.Wait()
	s.leadMu.Lock()
	if s.leadConn != nil {
		s.leadConn.Close(context.Background())
		s.leadConn, s.leading = nil, false
	}
	s.leadMu.Unlock()
	s.pool.Close()
	return nil
}

// now is the store's clock, at the precision PostgreSQL keeps, so that a job
// returned from memory equals the job read back.
func now() time.Time {
	return time.Now().Truncate(time.Microsecond)
}

// ErrClosed is store.ErrClosed.
var ErrClosed = store.ErrClosed

// refs is a slice that pgx encodes as an array without reflection and
// without boxing each element: Index hands out a pointer, which an
// interface holds as it is. A slice of a struct type such as pgtype.Text
// goes through reflect otherwise, and pgtype.FlatArray boxes each element,
// an allocation per element of every batch statement.
type refs[T any] []T

// Dimensions implements pgtype.ArrayGetter; a nil slice is NULL.
func (a refs[T]) Dimensions() []pgtype.ArrayDimension {
	if a == nil {
		return nil
	}
	return []pgtype.ArrayDimension{{Length: int32(len(a)), LowerBound: 1}}
}

// Index implements pgtype.ArrayGetter.
func (a refs[T]) Index(i int) any { return &a[i] }

// IndexType implements pgtype.ArrayGetter.
func (a refs[T]) IndexType() any { return new(T) }
