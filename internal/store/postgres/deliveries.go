package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// AddDeliveries implements store.Store.
func (s *Store) AddDeliveries(ctx context.Context, ds []store.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	at := now()
	n := len(ds)
	ids, jobs, urls, events := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	bodies, attempts := make([][]byte, n), make([]int32, n)
	nexts, created := make([]time.Time, n), make([]time.Time, n)
	for i := range ds {
		d := &ds[i]
		if d.ID == "" {
			d.ID = job.NewID()
		}
		ids[i], jobs[i], urls[i], events[i] = d.ID, d.JobID, d.URL, d.Event
		bodies[i], attempts[i] = nonNil(d.Body), int32(d.Attempt)
		nexts[i], created[i] = d.NextAt, at
		if d.NextAt.IsZero() {
			nexts[i] = at
		}
	}
	if _, err := s.pool.Exec(ctx, s.sql("add_deliveries"), ids, jobs, urls, events, bodies, attempts, nexts, created); err != nil {
		return s.wrap("add deliveries", err)
	}
	return nil
}

// DueDeliveries implements store.Store.
func (s *Store) DueDeliveries(ctx context.Context, at time.Time, limit int, lease time.Duration) ([]store.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	next := at.Add(lease).Truncate(time.Microsecond)
	rows, err := s.pool.Query(ctx, s.sql("due_deliveries"), at, limit, next)
	if err != nil {
		return nil, s.wrap("due deliveries", err)
	}
	var out []store.Delivery
	var d store.Delivery
	_, err = pgx.ForEachRow(rows, []any{&d.ID, &d.JobID, &d.URL, &d.Event, &d.Body, &d.Attempt, &d.CreatedAt}, func() error {
		d.CreatedAt, d.NextAt = d.CreatedAt.UTC(), next.UTC()
		out = append(out, d)
		d.Body = nil // scanned into afresh, not shared with the one kept
		return nil
	})
	if err != nil {
		return nil, s.wrap("due deliveries", err)
	}
	// RETURNING gives no order: oldest first.
	slices.SortFunc(out, func(a, b store.Delivery) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// DeliveryDone implements store.Store.
func (s *Store) DeliveryDone(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, s.sql("delivery_done"), id); err != nil {
		return s.wrap("delivery done", err)
	}
	return nil
}

// DeliveryRetry implements store.Store.
func (s *Store) DeliveryRetry(ctx context.Context, id string, next time.Time) error {
	tag, err := s.pool.Exec(ctx, s.sql("delivery_retry"), id, next)
	if err != nil {
		return s.wrap("delivery retry", err)
	}
	if tag.RowsAffected() == 0 {
		return s.wrap("delivery retry", fmt.Errorf("delivery %s: %w", id, store.ErrNotFound))
	}
	return nil
}
