package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/docket/docket/internal/store/postgres/pgtest"
)

// The Go benchmarks run the same measurements as `docket bench`, sized by
// b.N, and report the figures docs/BENCHMARKS.md records.

func BenchmarkDrain(b *testing.B) {
	r, err := Drain(context.Background(), Options{Dir: b.TempDir(), Workers: 100}, max(b.N, 1000), 1000)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.InsertPerSec, "inserted/s")
	b.ReportMetric(r.DrainedPerSec, "drained/s")
}

func BenchmarkConcurrentInsert(b *testing.B) {
	r, err := Concurrent(context.Background(), Options{Dir: b.TempDir(), Workers: 100}, max(b.N, 1000), 50)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.InsertPerSec, "inserted/s")
	b.ReportMetric(r.EndToEndPerSec, "completed/s")
}

func BenchmarkLatency(b *testing.B) {
	r, err := Latency(context.Background(), Options{Dir: b.TempDir(), Workers: 10}, max(b.N, 100))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(r.StartP50.Microseconds()), "start-p50-µs")
	b.ReportMetric(float64(r.StartP99.Microseconds()), "start-p99-µs")
	b.ReportMetric(float64(r.DoneP50.Microseconds()), "done-p50-µs")
	b.ReportMetric(float64(r.DoneP99.Microseconds()), "done-p99-µs")
}

// TestMeasurementsRun keeps the measurement code working in the test
// suite, at a small size; the figures themselves are not asserted.
func TestMeasurementsRun(t *testing.T) {
	ctx := context.Background()
	if r, err := Drain(ctx, Options{Dir: t.TempDir(), Workers: 10}, 500, 100); err != nil || r.Jobs != 500 {
		t.Fatal(r, err)
	}
	if r, err := Concurrent(ctx, Options{Dir: t.TempDir(), Workers: 10}, 300, 5); err != nil || r.Jobs != 300 {
		t.Fatal(r, err)
	}
	if r, err := Latency(ctx, Options{Dir: t.TempDir(), Workers: 2}, 20); err != nil || r.DoneP50 <= 0 {
		t.Fatal(r, err)
	}
	if r, err := Memory(ctx, Options{Dir: t.TempDir(), Workers: 2}, 2000, 500); err != nil || r.PeakRSS <= 0 {
		t.Fatal(r, err)
	}
}

// TestMeasurementsRunPostgres runs every measurement, small, on PostgreSQL,
// and checks that each left no schema behind.
func TestMeasurementsRunPostgres(t *testing.T) {
	ctx := context.Background()
	// pgtest skips (or, under CI, fails) when the server is unreachable;
	// the measurements replace its search_path with schemas of their own.
	url := pgtest.URL(t)
	o := Options{Store: url, Dir: t.TempDir(), Workers: 10}
	before := benchSchemas(t)
	if r, err := Drain(ctx, o, 500, 100); err != nil || r.Jobs != 500 {
		t.Fatal(r, err)
	}
	if r, err := Concurrent(ctx, o, 300, 5); err != nil || r.Jobs != 300 {
		t.Fatal(r, err)
	}
	o.Workers = 2
	if r, err := Latency(ctx, o, 20); err != nil || r.DoneP50 <= 0 || r.StartP50 <= 0 {
		t.Fatal(r, err)
	}
	if r, err := Memory(ctx, o, 2000, 500); err != nil || r.PeakRSS <= 0 {
		t.Fatal(r, err)
	}
	for s := range benchSchemas(t) {
		if !before[s] {
			t.Errorf("schema %s left behind", s)
		}
	}
}

// benchSchemas lists the docket_bench_ schemas of the test server; other
// runs may hold some of their own meanwhile, so only new ones count.
func benchSchemas(t *testing.T) map[string]bool {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pgtest.BaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'docket\_bench\_%'`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out
}

func TestOtherStoresRefused(t *testing.T) {
	for _, u := range []string{"host=localhost dbname=x", "mysql://u:secret@h/db"} {
		_, err := NewSchema(context.Background(), u, "x")
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("NewSchema(%q): %v", u, err)
		}
	}
	if _, err := Drain(context.Background(), Options{Store: "mysql://h/db", Workers: 1}, 1, 1); err == nil {
		t.Error("a mysql:// store was accepted")
	}
}
