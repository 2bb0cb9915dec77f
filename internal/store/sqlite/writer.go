package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	"github.com/docket/docket/internal/job"
)

// SQLite lets one connection write at a time, so the store funnels every
// write through one goroutine that owns the write connection. It takes all
// the operations waiting when it becomes free and runs them in one
// transaction (group commit): one WAL commit then serves many callers, which
// is what makes single inserts from many goroutines fast while each one is
// still durable before it returns. Each operation runs under a savepoint, so
// one that fails leaves the others of its batch unaffected.

const maxBatch = 512

type op struct {
	fn func(*wtx) error
	// multi marks an operation that may fail after a first write; only
	// those pay for a savepoint. A single-write one fails with nothing
	// written, as SQLite statements are atomic.
	multi bool
	after func() // run once the transaction committed, if fn succeeded
	done  chan error
}

// wtx is an open write transaction with prepared-statement reuse.
type wtx struct {
	ctx   context.Context
	conn  driver.ConnPrepareContext
	stmts map[string]driver.Stmt
	// moves are the queue_counts changes of the running operation; they
	// join txMoves when it succeeds and are written before the commit.
	moves, txMoves map[countKey]int64
}

type countKey struct {
	queue string
	state job.State
}

// move records that a job of queue left state from (if any) for state to
// (if any).
func (w *wtx) move(queue string, from, to job.State) {
	if from == to {
		return
	}
	if from != "" {
		w.moves[countKey{queue, from}]--
	}
	if to != "" {
		w.moves[countKey{queue, to}]++
	}
}

func (w *wtx) flushMoves() error {
	for k, n := range w.txMoves {
		if n == 0 {
			continue
		}
		if _, err := w.exec(`INSERT INTO queue_counts (queue, state, n) VALUES (?, ?, ?)
			ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n`, k.queue, string(k.state), n); err != nil {
			return fmt.Errorf("sqlite: queue counts: %w", err)
		}
	}
	return nil
}

// run runs one operation, keeping its count moves only if it succeeds.
func (w *wtx) run(o *op) error {
	clear(w.moves)
	err := o.fn(w)
	if err == nil {
		for k, n := range w.moves {
			w.txMoves[k] += n
		}
	}
	return err
}

func (w *wtx) stmt(query string) (driver.Stmt, error) {
	if s, ok := w.stmts[query]; ok {
		return s, nil
	}
	s, err := w.conn.PrepareContext(w.ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", query, err)
	}
	w.stmts[query] = s
	return s, nil
}

func (w *wtx) exec(query string, args ...any) (driver.Result, error) {
	s, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	return s.(driver.StmtExecContext).ExecContext(w.ctx, namedArgs(args))
}

func (w *wtx) query(query string, args ...any) (*rows, error) {
	s, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	r, err := s.(driver.StmtQueryContext).QueryContext(w.ctx, namedArgs(args))
	if err != nil {
		return nil, err
	}
	return newRows(r), nil
}

func (w *wtx) queryRow(query string, args ...any) row {
	r, err := w.query(query, args...)
	return row{rows: r, err: err}
}

// write runs fn, which makes at most one write, in the writer's next
// transaction and waits for its commit.
func (s *Store) write(ctx context.Context, fn func(*wtx) error, after func()) error {
	return s.submit(ctx, &op{fn: fn, after: after, done: make(chan error, 1)})
}

// writeMulti is write for an fn that may fail after writing.
func (s *Store) writeMulti(ctx context.Context, fn func(*wtx) error, after func()) error {
	return s.submit(ctx, &op{fn: fn, multi: true, after: after, done: make(chan error, 1)})
}

func (s *Store) submit(ctx context.Context, o *op) error {
	select {
	case s.ops <- o:
	case <-s.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued the operation will run; wait for it so that the caller
	// never reports failure for a change that was in fact committed.
	return <-o.done
}

func (s *Store) writer(conn *sql.Conn) {
	defer close(s.writerDone)
	defer conn.Close()
	// The loop runs inside Raw, which lends it the driver connection.
	err := conn.Raw(func(dc any) error {
		pc, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return fmt.Errorf("sqlite: driver connection %T cannot prepare", dc)
		}
		w := &wtx{ctx: context.Background(), conn: pc, stmts: map[string]driver.Stmt{},
			moves: map[countKey]int64{}, txMoves: map[countKey]int64{}}
		defer func() {
			for _, st := range w.stmts {
				st.Close()
			}
		}()
		s.loop(w)
		return nil
	})
	if err != nil {
		// Nothing can be written: answer every operation with the error.
		for {
			select {
			case o := <-s.ops:
				o.done <- err
			case <-s.quit:
				return
			}
		}
	}
}

func (s *Store) loop(w *wtx) {
	batch := make([]*op, 0, maxBatch)
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.quit:
			// Finish what was queued before the close.
			for {
				select {
				case o := <-s.ops:
					s.runBatch(w, []*op{o})
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
		s.drain(&batch)
		s.runBatch(w, batch)
	}
}

// drain adds the waiting operations to batch, up to maxBatch.
func (s *Store) drain(batch *[]*op) {
	for len(*batch) < maxBatch {
		select {
		case o := <-s.ops:
			*batch = append(*batch, o)
		default:
			return
		}
	}
}

func (s *Store) runBatch(w *wtx, batch []*op) {
	errs := make([]error, len(batch))
	fail := func(err error) {
		for _, o := range batch {
			o.done <- err
		}
	}
	if _, err := w.exec("BEGIN IMMEDIATE"); err != nil {
		fail(fmt.Errorf("sqlite: begin: %w", err))
		return
	}
	clear(w.txMoves)
	single := len(batch) == 1
	for i, o := range batch {
		if single || !o.multi {
			// The transaction itself, or the statement, is the savepoint.
			errs[i] = w.run(o)
			continue
		}
		if _, err := w.exec("SAVEPOINT op"); err != nil {
			errs[i] = err
			continue
		}
		errs[i] = w.run(o)
		if errs[i] != nil {
			if _, err := w.exec("ROLLBACK TO op"); err != nil {
				w.exec("ROLLBACK")
				fail(fmt.Errorf("sqlite: rollback to savepoint: %w", err))
				return
			}
		}
		if _, err := w.exec("RELEASE op"); err != nil {
			w.exec("ROLLBACK")
			fail(fmt.Errorf("sqlite: release savepoint: %w", err))
			return
		}
	}
	if single && errs[0] != nil {
		w.exec("ROLLBACK")
		batch[0].done <- errs[0]
		return
	}
	if err := w.flushMoves(); err != nil {
		w.exec("ROLLBACK")
		fail(err)
		return
	}
	if _, err := w.exec("COMMIT"); err != nil {
		w.exec("ROLLBACK")
		fail(fmt.Errorf("sqlite: commit: %w", err))
		return
	}
	for i, o := range batch {
		if errs[i] == nil && o.after != nil {
			o.after()
		}
		o.done <- errs[i]
	}
}
