package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

const (
	// resyncMargin is how far before the last moment the LISTEN connection
	// was known to work a resync starts: notifications in flight then,
	// and clocks of other nodes a little behind, are covered.
	resyncMargin = 5 * time.Second
	// Reconnection backoff bounds.
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// Watch implements store.Watcher. It holds a connection of its own, out of
// the pool, that LISTENs on the schema's channel. When that connection is
// lost it connects again, with backoff, and then calls fn with a resync
// notice listing every job changed since shortly before the loss.
func (s *Store) Watch(ctx context.Context, fn func(store.Notice)) error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	s.watches.Add(1)
	s.closeMu.RUnlock()
	defer s.watches.Done()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.base, cancel)
	defer stop()

	var (
		good    time.Time // the last moment the connection was known to work
		resync  bool      // notices may have been missed since good
		backoff = backoffMin
	)
	for {
		conn, err := s.listen(wctx)
		if err == nil && resync {
			err = s.resync(wctx, good.Add(-resyncMargin), fn)
			if err != nil {
				conn.Close(context.Background())
			}
		}
		if err != nil {
			if wctx.Err() != nil {
				return s.watchEnd(ctx)
			}
			s.log.Warn("postgres: listen", "channel", s.channel, "err", err, "retry_in", backoff)
			select {
			case <-wctx.Done():
				return s.watchEnd(ctx)
			case <-time.After(backoff + rand.N(backoff/2)):
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff, resync = backoffMin, false
		good = time.Now()
		err = s.receive(wctx, conn, fn, &good)
		conn.Close(context.Background())
		if wctx.Err() != nil {
			return s.watchEnd(ctx)
		}
		s.log.Warn("postgres: listen connection lost", "channel", s.channel, "err", err)
		resync = true
		if s.watchLost != nil {
			s.watchLost()
		}
	}
}

// watchEnd is what Watch returns: the caller's context error, or ErrClosed
// when the store closed under it.
func (s *Store) watchEnd(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// listen opens the watch connection and subscribes to the channel.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.connCfg.Copy()
	cfg.RuntimeParams["application_name"] = "docket-listen"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("listen: %w", err)
	}
	return conn, nil
}

// receive hands notifications to fn until the connection fails or ctx
// ends. A quiet connection is checked every s.listenPing with LISTEN again,
// which changes nothing and keeps the connection's last statement a LISTEN
// for whoever looks at pg_stat_activity.
func (s *Store) receive(ctx context.Context, conn *pgx.Conn, fn func(store.Notice), good *time.Time) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, s.listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err == nil {
			*good = time.Now()
			changes, err := s.decode(n.Payload)
			if err != nil {
				s.log.Warn("postgres: notification", "err", err)
				continue
			}
			if len(changes) > 0 {
				fn(store.Notice{Changes: changes})
			}
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wctx.Err() == nil || conn.IsClosed() {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, s.listenPing)
		_, err = conn.Exec(pctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize())
		cancel()
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		*good = time.Now()
	}
}

// payload is a notification as docket_changed sends it: one array per
// field (migration 0005). Entries is the form of earlier migrations, one
// array per job: [id, queue, owner, version, state] and a removed flag;
// still read, so that a notification sent before the migration is not
// lost on a node that hears it after.
type payload struct {
	Origin   string              `json:"o"`
	IDs      []string            `json:"j"`
	Queues   []string            `json:"q"`
	Owners   []string            `json:"w"`
	Versions []int64             `json:"v"`
	States   []string            `json:"s"`
	Gone     []bool              `json:"d"`
	Entries  [][]json.RawMessage `json:"c"`
}

// decode reads a payload; changes this store made itself give nothing.
func (s *Store) decode(text string) ([]store.Change, error) {
	// Most payloads a busy node hears are its own: they are told apart by
	// their head alone, without decoding the rest (the origin is base32,
	// which JSON quotes as it is).
	if strings.HasPrefix(text, `{"o":"`) && strings.HasPrefix(text[len(`{"o":"`):], s.origin+`",`) {
		return nil, nil
	}
	var p payload
	if err := json.Unmarshal([]byte(text), &p); err != nil {
		return nil, fmt.Errorf("payload %.80q: %w", text, err)
	}
	if p.Origin == s.origin {
		return nil, nil
	}
	if p.Entries != nil {
		return decodeEntries(p.Entries)
	}
	n := len(p.IDs)
	if len(p.Queues) != n || len(p.Owners) != n || len(p.Versions) != n || len(p.States) != n || len(p.Gone) != n {
		return nil, fmt.Errorf("payload %.80q: columns of different lengths", text)
	}
	out := make([]store.Change, n)
	for i := range out {
		out[i] = store.Change{JobID: p.IDs[i], Queue: p.Queues[i], Owner: p.Owners[i], Version: p.Versions[i],
			State: job.State(p.States[i]), Deleted: p.Gone[i]}
	}
	return out, nil
}

// decodeEntries reads the entries of a payload of the earlier form.
func decodeEntries(entries [][]json.RawMessage) ([]store.Change, error) {
	out := make([]store.Change, 0, len(entries))
	for _, e := range entries {
		if len(e) < 5 {
			return nil, fmt.Errorf("payload entry %s: %d fields", e, len(e))
		}
		var c store.Change
		var state string
		for i, dst := range []any{&c.JobID, &c.Queue, &c.Owner, &c.Version, &state} {
			if err := json.Unmarshal(e[i], dst); err != nil {
				return nil, fmt.Errorf("payload entry field %d: %w", i, err)
			}
		}
		c.State = job.State(state)
		if len(e) > 5 {
			if err := json.Unmarshal(e[5], &c.Deleted); err != nil {
				return nil, fmt.Errorf("payload entry deleted flag: %w", err)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// resync calls fn with every job changed since a time, as it now is.
func (s *Store) resync(ctx context.Context, since time.Time, fn func(store.Notice)) error {
	rows, err := s.pool.Query(ctx, s.sql("changed_since"), since)
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	changes := []store.Change{}
	var c store.Change
	var state string
	_, err = pgx.ForEachRow(rows, []any{&c.JobID, &c.Queue, &c.Owner, &c.Version, &state}, func() error {
		c.State = job.State(state)
		changes = append(changes, c)
		return nil
	})
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	fn(store.Notice{Resync: true, Changes: changes})
	return nil
}

// Lead implements store.Leader with a session-level advisory lock, held on
// a connection of its own: the lock lasts as long as that connection, so a
// leader that dies or loses the database frees it for another node. A
// leader checks its connection on every call.
func (s *Store) Lead(ctx context.Context) (bool, error) {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	s.closeMu.RLock()
	closed := s.closed
	s.closeMu.RUnlock()
	if closed {
		return false, ErrClosed
	}
	if s.leading {
		// The check is not cut short by the caller's context: a
		// canceled check would look like a lost connection.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := s.leadConn.Ping(pctx)
		cancel()
		if err == nil {
			return true, nil
		}
		s.log.Warn("postgres: lead lost with its connection", "err", err)
		s.leadConn.Close(context.Background())
		s.leadConn, s.leading = nil, false
	}
	if s.leadConn == nil || s.leadConn.IsClosed() {
		cfg := s.connCfg.Copy()
		cfg.RuntimeParams["application_name"] = "docket-lead"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return false, fmt.Errorf("postgres: lead: connect: %w", err)
		}
		s.leadConn = conn
	}
	var ok bool
	err := s.leadConn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", lockLead).Scan(&ok)
	if err != nil {
		s.leadConn.Close(context.Background())
		s.leadConn = nil
		return false, fmt.Errorf("postgres: lead: %w", err)
	}
	s.leading = ok
	return ok, nil
}
