package postgres

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/postgres/pgtest"
)

// noop is the job of the benchmarks: a tiny JSON input, as a no-op job
// submitted through the API would have.
func noop(queue string) store.NewJob {
	return store.NewJob{Queue: queue, Input: store.Data{Blob: job.Blob{ContentType: "application/json"}, Bytes: []byte(`{}`)}}
}

func batchOf(n int) []store.NewJob {
	b := make([]store.NewJob, n)
	for i := range b {
		b[i] = noop("bench")
	}
	return b
}

func jobsPerSec(b *testing.B, jobs int) {
	b.ReportMetric(float64(jobs)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkInsertBatch inserts batches of 1000 jobs, one Insert each.
func BenchmarkInsertBatch(b *testing.B) {
	s := open(b, pgtest.URL(b))
	ctx := context.Background()
	batch := batchOf(1000)
	n := 0
	for b.Loop() {
		if _, err := s.Insert(ctx, batch); err != nil {
			b.Fatal(err)
		}
		n += len(batch)
	}
	jobsPerSec(b, n)
}

// BenchmarkInsertParallel inserts one job per Insert from many goroutines,
// as API submissions do; concurrent inserts share statements.
func BenchmarkInsertParallel(b *testing.B) {
	s := open(b, pgtest.URL(b))
	ctx := context.Background()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		one := batchOf(1)
		for pb.Next() {
			if _, err := s.Insert(ctx, one); err != nil {
				b.Error(err)
				return
			}
		}
	})
	jobsPerSec(b, b.N)
}

// gatherWait is how long the engine waits, once a worker is free, for
// half of them to be.
const gatherWait = 500 * time.Microsecond

// BenchmarkDrain drains b.N queued no-op jobs the way the engine runs a
// queue of 100 workers: one loop claims as many jobs as there are free
// workers, and each job completes on its own goroutine with the job it was
// given as Known.
func BenchmarkDrain(b *testing.B) {
	const workers = 100
	s := open(b, pgtest.URL(b))
	ctx := context.Background()
	for left := b.N; left > 0; left -= 1000 {
		if _, err := s.Insert(ctx, batchOf(min(left, 1000))); err != nil {
			b.Fatal(err)
		}
	}
	free := make(chan struct{}, workers)
	for range workers {
		free <- struct{}{}
	}
	var wg sync.WaitGroup
	b.ResetTimer()
	for done := 0; done < b.N; {
		// Wait for a free worker, then, as the engine does, a moment more
		// for half the pool, so that one claim fills many.
		<-free
		n := 1
		deadline := time.After(gatherWait)
	gather:
		for n < workers {
			select {
			case <-free:
				n++
				continue
			default:
			}
			if n >= workers/2 {
				break
			}
			select {
			case <-free:
				n++
			case <-deadline:
				break gather
			}
		}
		js, err := s.Claim(ctx, store.Claim{Queue: "bench", Limit: n, Worker: "bench", Lease: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		for range n - len(js) {
			free <- struct{}{}
		}
		if len(js) == 0 {
			b.Fatalf("queue empty after %d of %d jobs", done, b.N)
		}
		done += len(js)
		for _, j := range js {
			wg.Go(func() {
				defer func() { free <- struct{}{} }()
				if _, err := s.Complete(ctx, j.ID, j.LeaseToken, store.Outcome{Retention: time.Hour, Known: j}); err != nil {
					b.Error(err)
				}
			})
		}
	}
	wg.Wait()
	b.StopTimer()
	jobsPerSec(b, b.N)
}
