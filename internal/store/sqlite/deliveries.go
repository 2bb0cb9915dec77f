package sqlite

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// AddDeliveries implements store.Store.
func (s *Store) AddDeliveries(ctx context.Context, ds []store.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	now := time.Now()
	err := s.writeMulti(ctx, func(w *wtx) error {
		for i := range ds {
			d := &ds[i]
			if d.ID == "" {
				d.ID = job.NewID()
			}
			next := d.NextAt
			if next.IsZero() {
				next = now
			}
			body := d.Body
			if body == nil {
				body = []byte{}
			}
			if _, err := w.exec(`INSERT INTO deliveries (id, job_id, url, event, body, attempt, next_at, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, d.ID, d.JobID, d.URL, d.Event, body, d.Attempt, us(next), us(now)); err != nil {
				return fmt.Errorf("delivery %s: %w", d.ID, err)
			}
		}
		return nil
	}, nil)
	if err != nil {
		return fmt.Errorf("sqlite: add deliveries: %w", err)
	}
	return nil
}

// DueDeliveries implements store.Store.
func (s *Store) DueDeliveries(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]store.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []store.Delivery
	err := s.write(ctx, func(w *wtx) error {
		out = out[:0]
		// The limit is in the text, as in Claim, so the statement is
		// prepared once.
		rows, err := w.query(`UPDATE deliveries SET next_at = ?
			WHERE id IN (SELECT id FROM deliveries WHERE next_at <= ? ORDER BY next_at, id LIMIT `+strconv.Itoa(limit)+`)
			RETURNING id, job_id, url, event, body, attempt, created_at`, us(now.Add(lease)), us(now))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d store.Delivery
			var created int64
			if err := rows.Scan(&d.ID, &d.JobID, &d.URL, &d.Event, &d.Body, &d.Attempt, &created); err != nil {
				return err
			}
			d.CreatedAt, d.NextAt = fromUS(created), fromUS(us(now.Add(lease)))
			out = append(out, d)
		}
		return rows.Err()
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: due deliveries: %w", err)
	}
	// RETURNING gives no order.
	sortDeliveries(out)
	return out, nil
}

func sortDeliveries(ds []store.Delivery) {
	slices.SortFunc(ds, func(a, b store.Delivery) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// DeliveryDone implements store.Store.
func (s *Store) DeliveryDone(ctx context.Context, id string) error {
	err := s.write(ctx, func(w *wtx) error {
		_, err := w.exec("DELETE FROM deliveries WHERE id = ?", id)
		return err
	}, nil)
	if err != nil {
		return fmt.Errorf("sqlite: delivery done: %w", err)
	}
	return nil
}

// DeliveryRetry implements store.Store.
func (s *Store) DeliveryRetry(ctx context.Context, id string, next time.Time) error {
	err := s.write(ctx, func(w *wtx) error {
		res, err := w.exec("UPDATE deliveries SET attempt = attempt + 1, next_at = ? WHERE id = ?", us(next), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("delivery %s: %w", id, store.ErrNotFound)
		}
		return nil
	}, nil)
	if err != nil {
		return fmt.Errorf("sqlite: delivery retry: %w", err)
	}
	return nil
}
