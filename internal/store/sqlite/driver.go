package sqlite

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
)

// The writer talks to the SQLite driver directly rather than through
// database/sql: every job passes through it two or three times, and the
// locking and value conversion of database/sql cost a sizeable share of its
// time. rows and row give the few database/sql methods the store uses.

func namedArgs(args []any) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case int:
			a = int64(v)
		case bool:
			a = int64(0)
			if v {
				a = int64(1)
			}
		}
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}

type rows struct {
	r    driver.Rows
	vals []driver.Value
	err  error
	done bool
}

func newRows(r driver.Rows) *rows {
	return &rows{r: r, vals: make([]driver.Value, len(r.Columns()))}
}

func (r *rows) Next() bool {
	if r.done {
		return false
	}
	if err := r.r.Next(r.vals); err != nil {
		if !errors.Is(err, io.EOF) {
			r.err = err
		}
		r.Close()
		return false
	}
	return true
}

func (r *rows) Err() error { return r.err }

func (r *rows) Close() error {
	if r.done {
		return nil
	}
	r.done = true
	return r.r.Close()
}

func (r *rows) Scan(dest ...any) error {
	if len(dest) != len(r.vals) {
		return fmt.Errorf("sqlite: scan: %d destinations for %d columns", len(dest), len(r.vals))
	}
	for i, d := range dest {
		if err := assign(d, r.vals[i]); err != nil {
			return fmt.Errorf("sqlite: scan column %d: %w", i, err)
		}
	}
	return nil
}

// row is the first row of a query, like *sql.Row.
type row struct {
	rows *rows
	err  error
}

func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if r.rows.err != nil {
			return r.rows.err
		}
		return sql.ErrNoRows
	}
	return r.rows.Scan(dest...)
}

// assign stores a driver value in one of the destination types the store
// scans into.
func assign(dest any, v driver.Value) error {
	switch d := dest.(type) {
	case *string:
		switch x := v.(type) {
		case string:
			*d = x
		case []byte:
			*d = string(x)
		case nil:
			*d = ""
		default:
			return fmt.Errorf("%T into string", v)
		}
	case *int64:
		x, ok := v.(int64)
		if !ok && v != nil {
			return fmt.Errorf("%T into int64", v)
		}
		*d = x
	case *int:
		x, ok := v.(int64)
		if !ok && v != nil {
			return fmt.Errorf("%T into int", v)
		}
		*d = int(x)
	case *[]byte:
		switch x := v.(type) {
		case []byte:
			*d = append([]byte(nil), x...)
		case string:
			*d = []byte(x)
		case nil:
			*d = nil
		default:
			return fmt.Errorf("%T into []byte", v)
		}
	case *sql.NullString:
		if v == nil {
			*d = sql.NullString{}
			return nil
		}
		var s string
		if err := assign(&s, v); err != nil {
			return err
		}
		*d = sql.NullString{String: s, Valid: true}
	case *sql.NullInt64:
		if v == nil {
			*d = sql.NullInt64{}
			return nil
		}
		x, ok := v.(int64)
		if !ok {
			return fmt.Errorf("%T into NullInt64", v)
		}
		*d = sql.NullInt64{Int64: x, Valid: true}
	default:
		return fmt.Errorf("unsupported destination %T", dest)
	}
	return nil
}
