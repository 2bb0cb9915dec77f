package bench

import (
	"context"
	"testing"
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
