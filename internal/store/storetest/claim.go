package storetest

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// claimOrder sorts jobs the way Claim must take them: priority desc, run_at
// asc, then id (age) asc.
func claimOrder(js []*job.Job) {
	slices.SortFunc(js, func(a, b *job.Job) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := a.RunAt.Compare(b.RunAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// orderedJobs inserts into queue q a set of runnable jobs whose claim order
// differs from their insertion order: by priority first, then run_at (the
// older run_at inserted later), then id for equal priority and run_at. It
// returns them in the order Claim must hand them out.
func orderedJobs(h *harness, q string) []*job.Job {
	h.t.Helper()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	js := h.add(
		newJob(q, withRunAt(base.Add(-3*time.Second))),                  // tie on run_at, older id
		newJob(q, withRunAt(base.Add(-1*time.Second)), withPriority(5)), // highest priority, latest run_at
		newJob(q, withRunAt(base.Add(-5*time.Second))),                  // earliest run_at of priority 0
		newJob(q, withRunAt(base.Add(-3*time.Second))),                  // tie on run_at, newer id
		newJob(q, withRunAt(base.Add(-9*time.Second)), withPriority(-1)),
		newJob(q, withRunAt(base.Add(-2*time.Second)), withPriority(5)),
	)
	claimOrder(js)
	return js
}

func testGet(t *testing.T, o opener) {
	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		h.addOne(newJob("q"))
		_, err := h.s.Get(h.ctx, job.NewID())
		wantErr(t, "Get of an unknown id", err, store.ErrNotFound)
	})

	t.Run("Position", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		order := orderedJobs(h, "q")
		other := h.addOne(newJob("other", withPriority(100)))
		positions := func(what string, js []*job.Job) {
			t.Helper()
			for i, j := range js {
				if g := h.get(j.ID); g.Position != int64(i) {
					t.Errorf("%s: Position of job %d of the claim order = %d, want %d", what, i, g.Position, i)
				}
			}
		}
		positions("before claims", order)
		if g := h.get(other.ID); g.Position != 0 {
			t.Errorf("Position of the only job of another queue = %d, want 0", g.Position)
		}

		// Claiming the head moves everyone up; the running job is at 0.
		h.claimID("q", order[0].ID, longLease)
		positions("after one claim", order[1:])
		if g := h.get(order[0].ID); g.Position != 0 {
			t.Errorf("Position of a running job = %d, want 0", g.Position)
		}
		r := h.claimID("q", order[1].ID, longLease)
		h.complete(r, store.Outcome{Retention: retention})
		if g := h.get(r.ID); g.Position != 0 {
			t.Errorf("Position of a succeeded job = %d, want 0", g.Position)
		}
		h.cancel(order[2].ID)
		if g := h.get(order[2].ID); g.Position != 0 {
			t.Errorf("Position of a canceled job = %d, want 0", g.Position)
		}
		positions("after a claim, a success and a cancel", order[3:])
	})
}

func testClaim(t *testing.T, o opener) {
	t.Run("Order", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		order := orderedJobs(h, "q")
		// One at a time, the claims follow the order exactly. (The order
		// within one multi-job claim is not part of the contract.)
		for i, want := range order {
			got := h.claim("q", 1, longLease)
			if len(got) != 1 || got[0].ID != want.ID {
				t.Fatalf("claim %d = %v, want %s (priority %d, run_at %v)", i, ids(got), want.ID, want.Priority, want.RunAt)
			}
		}
		if got := h.claim("q", 1, longLease); len(got) != 0 {
			t.Errorf("claim of a drained queue = %v, want none", ids(got))
		}
	})

	t.Run("Limit", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		order := orderedJobs(h, "q")
		got := h.claim("q", 2, longLease)
		gotIDs := ids(got)
		slices.Sort(gotIDs)
		wantIDs := ids(order[:2])
		slices.Sort(wantIDs)
		if !slices.Equal(gotIDs, wantIDs) {
			t.Fatalf("Claim with Limit 2 = %v, want the first two in order %v", gotIDs, wantIDs)
		}
		got = h.claim("q", 100, longLease)
		if len(got) != len(order)-2 {
			t.Errorf("Claim with Limit 100 took %d jobs, want the %d left", len(got), len(order)-2)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		h.addOne(newJob("other"))
		got, err := h.s.Claim(h.ctx, store.Claim{Queue: "q", Limit: 10, Worker: "w1", Lease: longLease})
		if err != nil || len(got) != 0 {
			t.Errorf("Claim of an empty queue = %v, %v, want no jobs and no error", ids(got), err)
		}
	})

	t.Run("Queues", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		mine := h.add(newJob("q"), newJob("q"))
		others := h.add(newJob("r", withPriority(100)), newJob("s"))
		got := h.claim("q", 10, longLease)
		if len(got) != 2 {
			t.Fatalf("Claim(q) = %v, want q's 2 jobs %v", ids(got), ids(mine))
		}
		for _, j := range got {
			if j.Queue != "q" {
				t.Errorf("Claim(q) returned job %s of queue %q", j.ID, j.Queue)
			}
		}
		for _, j := range others {
			sameJob(t, "job of another queue after Claim(q)", h.get(j.ID), j)
		}
	})

	t.Run("Delayed", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		later := h.addOne(newJob("q", withRunAt(time.Now().Add(time.Hour)), withPriority(10)))
		soon := h.addOne(newJob("q", withRunAt(time.Now().Add(50*time.Millisecond))))
		now := h.addOne(newJob("q"))
		// The delayed jobs do not block the runnable one, whatever their
		// priority.
		got := h.claim("q", 10, longLease)
		checked := time.Now()
		for _, j := range got {
			switch j.ID {
			case now.ID:
			case soon.ID:
				if checked.Before(soon.RunAt) {
					t.Errorf("job due at %v claimed before %v", soon.RunAt, checked)
				}
			default:
				t.Errorf("Claim returned %s (run_at %v), not due", j.ID, j.RunAt)
			}
		}
		if !slices.Contains(ids(got), now.ID) {
			t.Errorf("Claim = %v, want the runnable job %s", ids(got), now.ID)
		}
		if !slices.Contains(ids(got), soon.ID) {
			// Once due, it is claimed; the one due in an hour is not.
			waitUntil(soon.RunAt.Add(tol))
			h.claimID("q", soon.ID, longLease)
		}
		if got := h.claim("q", 10, longLease); len(got) != 0 {
			t.Errorf("Claim = %v, want nothing until %v", ids(got), later.RunAt)
		}
		sameJob(t, "delayed job", h.get(later.ID), later)
	})

	t.Run("Fields", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		ins := h.add(newJob("q"), newJob("q"), newJob("q"))
		lease := 10 * time.Minute
		before := time.Now()
		got, err := h.s.Claim(h.ctx, store.Claim{Queue: "q", Limit: 3, Worker: "worker-7", Lease: lease})
		after := time.Now()
		if err != nil || len(got) != 3 {
			t.Fatalf("Claim = %v, %v, want 3 jobs", ids(got), err)
		}
		byID := map[string]*job.Job{}
		for _, j := range ins {
			byID[j.ID] = j
		}
		tokens := map[string]bool{}
		for _, j := range got {
			was := byID[j.ID]
			if was == nil {
				t.Fatalf("Claim returned unknown job %s", j.ID)
			}
			delete(byID, j.ID)
			if j.State != job.Running || j.Attempt != 1 || j.Worker != "worker-7" {
				t.Errorf("claimed job: state %s attempt %d worker %q, want running, 1, worker-7", j.State, j.Attempt, j.Worker)
			}
			if j.LeaseToken == "" || tokens[j.LeaseToken] {
				t.Errorf("claimed job %s: lease token %q empty or shared", j.ID, j.LeaseToken)
			}
			tokens[j.LeaseToken] = true
			between(t, "LeaseExpiresAt", j.LeaseExpiresAt, before.Add(lease), after.Add(lease))
			between(t, "StartedAt", j.StartedAt, before, after)
			between(t, "UpdatedAt", j.UpdatedAt, before, after)
			nearTime(t, "CreatedAt", j.CreatedAt, was.CreatedAt)
			nearTime(t, "RunAt", j.RunAt, was.RunAt)
			zeroTime(t, "FinishedAt", j.FinishedAt)
			newer(t, "Claim", j, was)
			h.stored("Claim", j)
		}
	})
}

func testClaimConcurrent(t *testing.T, o opener) {
	const (
		jobs     = 500
		claimers = 8
		batch    = 100
	)
	h := o.h(t)
	for i := 0; i < jobs; i += batch {
		njs := make([]store.NewJob, batch)
		for k := range njs {
			njs[k] = newJob("q", withInput(fmt.Appendf(nil, "job %d", i+k)))
		}
		h.add(njs...)
	}
	h.addOne(newJob("other"))

	var (
		mu     sync.Mutex
		counts = map[string]int{}
		tokens = map[string]bool{}
		wg     sync.WaitGroup
	)
	start := make(chan struct{})
	for w := range claimers {
		wg.Go(func() {
			<-start
			worker := fmt.Sprintf("w%d", w)
			for {
				got, err := h.s.Claim(h.ctx, store.Claim{Queue: "q", Limit: 1 + w%4, Worker: worker, Lease: longLease})
				if err != nil {
					t.Errorf("%s: Claim: %v", worker, err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, j := range got {
					counts[j.ID]++
					if tokens[j.LeaseToken] {
						t.Errorf("lease token %q handed out twice", j.LeaseToken)
					}
					tokens[j.LeaseToken] = true
					if j.State != job.Running || j.Worker != worker || j.Queue != "q" {
						t.Errorf("%s claimed job %s: state %s worker %q queue %q", worker, j.ID, j.State, j.Worker, j.Queue)
					}
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(counts) != jobs {
		t.Errorf("%d distinct jobs claimed, want %d", len(counts), jobs)
	}
	for id, n := range counts {
		if n != 1 {
			t.Errorf("job %s claimed %d times", id, n)
		}
	}
	wantCounts(t, h, map[string]map[job.State]int64{
		"q":     {job.Running: jobs},
		"other": {job.Queued: 1},
	})
}
