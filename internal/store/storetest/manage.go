package storetest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

func testCancel(t *testing.T, o opener) {
	for _, s := range []job.State{job.Queued, job.Running} {
		t.Run(string(s), func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			j := h.in(s)
			before := time.Now()
			d, err := h.s.Cancel(h.ctx, j.ID, 2*time.Hour)
			after := time.Now()
			if err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			if d.State != job.Canceled || d.Attempt != j.Attempt {
				t.Errorf("state %s attempt %d, want canceled, %d", d.State, d.Attempt, j.Attempt)
			}
			between(t, "FinishedAt", d.FinishedAt, before, after)
			nearTime(t, "ExpiresAt", d.ExpiresAt, d.FinishedAt.Add(2*time.Hour))
			nearTime(t, "StartedAt", d.StartedAt, j.StartedAt)
			noLease(t, d)
			if d.Result != nil || d.Artifacts != 0 {
				t.Errorf("canceled job has result %s, %d artifacts", fmtPtr(d.Result), d.Artifacts)
			}
			newer(t, "Cancel", d, j)
			h.stored("Cancel", d)
			if got := h.claim(j.Queue, 10, longLease); len(got) != 0 {
				t.Errorf("Claim after Cancel = %v, want none", ids(got))
			}
		})
	}

	for _, s := range []job.State{job.Succeeded, job.Failed, job.Canceled} {
		t.Run("Finished/"+string(s), func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			j := h.in(s)
			_, err := h.s.Cancel(h.ctx, j.ID, retention)
			wantErr(t, "Cancel of a "+string(s)+" job", err, store.ErrState)
			sameJob(t, "job after a refused Cancel", h.get(j.ID), j)
		})
	}

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		_, err := h.s.Cancel(h.ctx, job.NewID(), retention)
		wantErr(t, "Cancel of an unknown job", err, store.ErrNotFound)
	})
}

func testRetry(t *testing.T, o opener) {
	for _, c := range []struct {
		name  string
		setup func(h *harness) *job.Job
	}{
		{"Failed", func(h *harness) *job.Job {
			j := h.in(job.Running, withMaxAttempts(1))
			return h.fail(j, store.Failure{
				Error: job.Error{Message: "boom"}, Retryable: true, Retention: retention,
				Progress: &job.Progress{Current: 1, Total: 3},
			})
		}},
		{"CanceledQueued", func(h *harness) *job.Job {
			return h.in(job.Canceled)
		}},
		{"CanceledRunning", func(h *harness) *job.Job {
			j := h.in(job.Running)
			if _, err := h.s.Progress(h.ctx, j.ID, j.LeaseToken, job.Progress{Current: 2}); err != nil {
				h.t.Fatalf("Progress: %v", err)
			}
			return h.cancel(j.ID)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			j := c.setup(h)
			before := time.Now()
			d, err := h.s.Retry(h.ctx, j.ID)
			after := time.Now()
			if err != nil {
				t.Fatalf("Retry: %v", err)
			}
			if d.State != job.Queued || d.Attempt != 0 || d.MaxAttempts != j.MaxAttempts {
				t.Errorf("state %s attempt %d/%d, want queued, 0/%d", d.State, d.Attempt, d.MaxAttempts, j.MaxAttempts)
			}
			if d.Error != nil || d.Result != nil || d.Artifacts != 0 || d.Progress != (job.Progress{}) {
				t.Errorf("error %s result %s artifacts %d progress %+v, want all cleared",
					fmtPtr(d.Error), fmtPtr(d.Result), d.Artifacts, d.Progress)
			}
			between(t, "RunAt", d.RunAt, before, after)
			between(t, "UpdatedAt", d.UpdatedAt, before, after)
			zeroTime(t, "FinishedAt", d.FinishedAt)
			zeroTime(t, "ExpiresAt", d.ExpiresAt)
			noLease(t, d)
			newer(t, "Retry", d, j)
			h.stored("Retry", d)
			wantBytes(t, "OpenInput after Retry", h.input(j.ID), []byte("input of "+j.Queue))

			c := h.claimID(j.Queue, j.ID, longLease)
			if c.Attempt != 1 {
				t.Errorf("claim after Retry: attempt %d, want 1", c.Attempt)
			}
		})
	}

	for _, s := range []job.State{job.Queued, job.Running, job.Succeeded} {
		t.Run("Refused/"+string(s), func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			j := h.in(s)
			_, err := h.s.Retry(h.ctx, j.ID)
			wantErr(t, "Retry of a "+string(s)+" job", err, store.ErrState)
			sameJob(t, "job after a refused Retry", h.get(j.ID), j)
		})
	}

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		_, err := h.s.Retry(h.ctx, job.NewID())
		wantErr(t, "Retry of an unknown job", err, store.ErrNotFound)
	})
}

func testDelete(t *testing.T, o opener) {
	for _, s := range job.States {
		t.Run(string(s), func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			sibling := h.in(job.Succeeded)
			j := h.in(s)
			before := h.get(j.ID)
			d, err := h.s.Delete(h.ctx, j.ID)
			if err != nil {
				t.Fatalf("Delete: %v", err)
			}
			sameJob(t, "Delete returns the job as it was", d, before)
			h.gone(j.ID)
			_, err = h.s.Delete(h.ctx, j.ID)
			wantErr(t, "second Delete", err, store.ErrNotFound)
			if got := h.claim(j.Queue, 10, longLease); len(got) != 0 {
				t.Errorf("Claim after Delete = %v, want none", ids(got))
			}

			// Another job's data is untouched.
			sameJob(t, "other job", h.get(sibling.ID), sibling)
			wantBytes(t, "other job's input", h.input(sibling.ID), []byte("input of "+sibling.Queue))
			_, res := h.result(sibling.ID)
			wantBytes(t, "other job's result", res, result)
			_, art := h.artifact(sibling.ID, "a.txt")
			wantBytes(t, "other job's artifact", art, []byte("art"))
		})
	}

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		_, err := h.s.Delete(h.ctx, job.NewID())
		wantErr(t, "Delete of an unknown job", err, store.ErrNotFound)
	})
}

func testRescue(t *testing.T, o opener) {
	h := o.h(t)
	short := time.Millisecond

	// Expired leases, attempts left: back to queued.
	a := h.addOne(newJob("qa"))
	a = h.claimID("qa", a.ID, short)
	b := h.addOne(newJob("qb"))
	b = h.claimID("qb", b.ID, longLease)
	h.fail(b, store.Failure{Error: job.Error{Message: "first"}, Retryable: true, Retention: retention})
	b = h.claimID("qb", b.ID, short) // attempt 2 of 3
	// Expired leases on the last attempt: failed, with the queue's retention.
	c := h.addOne(newJob("fa", withMaxAttempts(1)))
	c = h.claimID("fa", c.ID, short)
	d := h.addOne(newJob("fb", withMaxAttempts(1)))
	d = h.claimID("fb", d.ID, short)
	// Untouched: a live lease, a queued job, a finished job.
	live := h.in(job.Running)
	queued := h.in(job.Queued)
	done := h.in(job.Succeeded)

	var (
		mu       sync.Mutex
		attempts []int
	)
	backoff := func(attempt int) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, attempt)
		return time.Duration(attempt) * time.Hour
	}
	retentionOf := func(queue string) time.Duration {
		switch queue {
		case "fa":
			return 5 * time.Hour
		case "fb":
			return 7 * time.Hour
		}
		return 11 * time.Hour
	}
	now := time.Now().Add(time.Second)
	got, err := h.s.Rescue(h.ctx, now, backoff, retentionOf)
	if err != nil {
		t.Fatalf("Rescue: %v", err)
	}
	gotIDs := ids(got)
	slices.Sort(gotIDs)
	wantIDs := []string{a.ID, b.ID, c.ID, d.ID}
	slices.Sort(wantIDs)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("Rescue returned %v, want the 4 expired jobs %v", gotIDs, wantIDs)
	}
	was := map[string]*job.Job{a.ID: a, b.ID: b, c.ID: c, d.ID: d}
	for _, j := range got {
		before := was[j.ID]
		if j.Error == nil || j.Error.Code != job.CodeLease {
			t.Errorf("job %s: Error = %s, want code %q", j.ID, fmtPtr(j.Error), job.CodeLease)
		}
		if j.Attempt != before.Attempt {
			t.Errorf("job %s: attempt %d, want %d", j.ID, j.Attempt, before.Attempt)
		}
		noLease(t, j)
		newer(t, "Rescue", j, before)
		h.stored("Rescue", j)
		switch j.ID {
		case a.ID, b.ID:
			if j.State != job.Queued {
				t.Errorf("job %s with attempts left: state %s, want queued", j.ID, j.State)
			}
			// backoff(attempt) is attempt hours.
			nearTime(t, "RunAt after Rescue", j.RunAt, now.Add(time.Duration(before.Attempt)*time.Hour))
			zeroTime(t, "FinishedAt", j.FinishedAt)
			zeroTime(t, "ExpiresAt", j.ExpiresAt)
		case c.ID, d.ID:
			if j.State != job.Failed {
				t.Errorf("job %s on its last attempt: state %s, want failed", j.ID, j.State)
			}
			nearTime(t, "FinishedAt", j.FinishedAt, now)
			nearTime(t, "ExpiresAt", j.ExpiresAt, now.Add(retentionOf(j.Queue)))
		}
	}
	mu.Lock()
	if !slices.Contains(attempts, 1) || !slices.Contains(attempts, 2) {
		t.Errorf("backoff called with attempts %v, want 1 and 2 among them", attempts)
	}
	mu.Unlock()
	for _, j := range []*job.Job{live, queued, done} {
		sameJob(t, "job Rescue must not touch", h.get(j.ID), j)
	}

	// Nothing is left to rescue.
	again, err := h.s.Rescue(h.ctx, now, backoff, retentionOf)
	if err != nil || len(again) != 0 {
		t.Errorf("second Rescue = %v, %v, want nothing", ids(again), err)
	}
	wantCounts(t, h, map[string]map[job.State]int64{
		"qa":         {job.Queued: 1},
		"qb":         {job.Queued: 1},
		"fa":         {job.Failed: 1},
		"fb":         {job.Failed: 1},
		live.Queue:   {job.Running: 1},
		queued.Queue: {job.Queued: 1},
		done.Queue:   {job.Succeeded: 1},
	})
}

func testPurge(t *testing.T, o opener) {
	h := o.h(t)
	// Finished, expiring after retention (1h).
	expired := []*job.Job{h.in(job.Succeeded), h.in(job.Failed), h.in(job.Canceled)}
	// Finished, expiring much later.
	j := h.in(job.Running)
	kept := h.complete(j, store.Outcome{Result: outcome().Result, Retention: 1000 * time.Hour})
	// Never purged, however old.
	queued := h.in(job.Queued)
	running := h.addOne(newJob("r"))
	running = h.claimID("r", running.ID, time.Millisecond)

	// Nothing has expired yet at the present time.
	if n, err := h.s.Purge(h.ctx, time.Now(), 10); err != nil || n != 0 {
		t.Errorf("Purge(now) = %d, %v, want 0", n, err)
	}

	now := time.Now().Add(2 * time.Hour)
	n, err := h.s.Purge(h.ctx, now, 2)
	if err != nil || n != 2 {
		t.Fatalf("Purge(limit 2) = %d, %v, want 2", n, err)
	}
	n, err = h.s.Purge(h.ctx, now, 10)
	if err != nil || n != 1 {
		t.Fatalf("second Purge = %d, %v, want the 1 left", n, err)
	}
	n, err = h.s.Purge(h.ctx, now, 10)
	if err != nil || n != 0 {
		t.Fatalf("third Purge = %d, %v, want 0", n, err)
	}
	for _, j := range expired {
		h.gone(j.ID)
	}
	for _, j := range []*job.Job{kept, queued, running} {
		sameJob(t, "job Purge must keep", h.get(j.ID), j)
		wantBytes(t, "input of a kept job", h.input(j.ID), []byte("input of "+j.Queue))
	}
	_, res := h.result(kept.ID)
	wantBytes(t, "result of a kept job", res, result)
}
