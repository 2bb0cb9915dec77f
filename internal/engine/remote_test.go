package engine_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// claimCountingStore counts the claims and run-time reads of waiting
// claimers, to tell a long poll from a busy loop.
type claimCountingStore struct {
	store.Store
	claims, nexts atomic.Int64
}

func (c *claimCountingStore) Claim(ctx context.Context, cl store.Claim) ([]*job.Job, error) {
	c.claims.Add(1)
	return c.Store.Claim(ctx, cl)
}

func (c *claimCountingStore) NextRunAt(ctx context.Context, queue string) (time.Time, error) {
	c.nexts.Add(1)
	return c.Store.NextRunAt(ctx, queue)
}

func TestRemoteClaimWaitsWithoutSpinning(t *testing.T) {
	tests := []struct {
		name   string
		paused bool
		runAt  time.Duration // a job due this far ahead; 0 for none
	}{
		{name: "empty queue"},
		{name: "job due later", runAt: time.Hour},
		{name: "paused queue with a job due", paused: true, runAt: -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &claimCountingStore{Store: openStore(t, t.TempDir())}
			e := start(t, st, engine.Options{Poll: 200 * time.Millisecond}, engine.Queue{Name: "remote"})
			if tt.runAt != 0 {
				submit(t, e, store.NewJob{Queue: "remote", Input: store.Data{Bytes: []byte("x")}, RunAt: time.Now().Add(tt.runAt)})
			}
			if tt.paused {
				e.SetPaused("remote", true)
			}
			st.claims.Store(0)
			st.nexts.Store(0)
			const waits = 3
			var wg sync.WaitGroup
			for range waits {
				wg.Go(func() {
					l, err := e.ClaimRemote(context.Background(), engine.RemoteClaim{Queue: "remote", Wait: time.Second})
					if l != nil || err != nil {
						t.Errorf("claim: %+v, %v; want nothing", l, err)
					}
				})
			}
			wg.Wait()
			// Each claimer looks once at the start and once per poll.
			limit := int64(waits * (1 + time.Second/(200*time.Millisecond) + 1))
			if n := st.claims.Load() + st.nexts.Load(); n > 2*limit {
				t.Fatalf("%d claims and %d reads in one second of waiting: a busy loop", st.claims.Load(), st.nexts.Load())
			}
			if tt.paused && st.claims.Load() != 0 {
				t.Fatalf("%d claims of a paused queue", st.claims.Load())
			}
		})
	}
}

func TestRemoteClaimStops(t *testing.T) {
	e := start(t, openStore(t, t.TempDir()), engine.Options{}, engine.Queue{Name: "remote"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan time.Duration, 2)
	begin := time.Now()
	go func() {
		e.ClaimRemote(ctx, engine.RemoteClaim{Queue: "remote", Wait: time.Minute})
		done <- time.Since(begin)
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if d := <-done; d > 5*time.Second {
		t.Fatalf("a canceled claim returned after %v", d)
	}

	go func() {
		e.ClaimRemote(context.Background(), engine.RemoteClaim{Queue: "remote", Wait: time.Minute})
		done <- time.Since(begin)
	}()
	time.Sleep(50 * time.Millisecond)
	stop, cancelStop := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelStop()
	e.Stop(stop)
	if d := <-done; d > 10*time.Second {
		t.Fatalf("a claim returned %v after the engine stopped", d)
	}
	if _, err := e.ClaimRemote(context.Background(), engine.RemoteClaim{Queue: "nope"}); !errors.Is(err, engine.ErrUnknownQueue) {
		t.Fatalf("claim of an unknown queue: %v", err)
	}
}

// Claimers waiting together each get their own job of a batch, and the
// wake-up passed from one to the next reaches all of them.
func TestRemoteClaimersShareABatch(t *testing.T) {
	e := start(t, openStore(t, t.TempDir()), engine.Options{Poll: time.Minute}, engine.Queue{Name: "remote"})
	const n = 6
	got := make(chan *engine.Lease, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			l, err := e.ClaimRemote(context.Background(), engine.RemoteClaim{Queue: "remote", Wait: 10 * time.Second})
			if err != nil || l == nil {
				t.Errorf("claim: %v, %v", l, err)
				return
			}
			got <- l
		})
	}
	time.Sleep(100 * time.Millisecond) // all waiting, with a poll too far off to help
	var batch []store.NewJob
	for range n {
		batch = append(batch, store.NewJob{Queue: "remote", Input: store.Data{Bytes: []byte("x")}})
	}
	if _, err := e.Submit(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(got)
	seen := map[string]bool{}
	for l := range got {
		if seen[l.Job.ID] || l.Job.State != job.Running || l.Token == "" {
			t.Fatalf("claimed %+v twice or not running", l.Job)
		}
		seen[l.Job.ID] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct jobs claimed, want %d", len(seen), n)
	}
}
