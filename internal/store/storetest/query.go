package storetest

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// with returns a harness on the same store bound to another test.
func (h *harness) with(t *testing.T) *harness {
	return &harness{t: t, s: h.s, ctx: t.Context()}
}

// matches tells whether j passes f (cursor and limit aside).
func matches(f store.Filter, j *job.Job) bool {
	if f.Owner != "" && j.Owner != f.Owner || f.Queue != "" && j.Queue != f.Queue {
		return false
	}
	if len(f.States) > 0 && !slices.Contains(f.States, j.State) {
		return false
	}
	for k, v := range f.Labels {
		if w, ok := j.Labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// newestFirst sorts jobs by id, descending.
func newestFirst(js []*job.Job) {
	slices.SortFunc(js, func(a, b *job.Job) int { return cmp.Compare(b.ID, a.ID) })
}

func testList(t *testing.T, o opener) {
	t.Run("Filters", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		driven := map[int]job.State{1: job.Running, 4: job.Succeeded, 7: job.Canceled, 10: job.Failed}
		var all []*job.Job
		for i := range 12 {
			owner := "alice"
			if i%2 == 1 {
				owner = "bob"
			}
			queue := "q"
			if i%3 == 0 {
				queue = "r"
			}
			env := "prod"
			if i%4 >= 2 {
				env = "dev"
			}
			opts := []opt{withQueue(queue), withOwner(owner), withLabels("env", env, "team", fmt.Sprint("t", i%3))}
			if s, ok := driven[i]; ok {
				// Priority 1 makes the claim in h.in take this job.
				all = append(all, h.in(s, append(opts, withPriority(1))...))
			} else {
				all = append(all, h.in(job.Queued, opts...))
			}
		}
		for i, j := range all {
			all[i] = h.get(j.ID)
		}
		newestFirst(all)

		filters := []struct {
			name string
			f    store.Filter
		}{
			{"All", store.Filter{}},
			{"Owner", store.Filter{Owner: "alice"}},
			{"Queue", store.Filter{Queue: "r"}},
			{"State", store.Filter{States: []job.State{job.Queued}}},
			{"States", store.Filter{States: []job.State{job.Succeeded, job.Failed, job.Canceled}}},
			{"Label", store.Filter{Labels: map[string]string{"env": "prod"}}},
			{"Labels", store.Filter{Labels: map[string]string{"env": "prod", "team": "t1"}}},
			{"LabelNoMatch", store.Filter{Labels: map[string]string{"env": "none"}}},
			{"OwnerQueueStates", store.Filter{Owner: "bob", Queue: "q", States: []job.State{job.Queued, job.Running}}},
			{"OwnerNoMatch", store.Filter{Owner: "nobody"}},
			{"QueueLabelState", store.Filter{Queue: "r", Labels: map[string]string{"team": "t0"}, States: []job.State{job.Queued}}},
		}
		for _, c := range filters {
			var want []string
			for _, j := range all {
				if matches(c.f, j) {
					want = append(want, j.ID)
				}
			}
			for _, limit := range []int{1000, 1, 2, 3, 5} {
				t.Run(fmt.Sprintf("%s/limit=%d", c.name, limit), func(t *testing.T) {
					g := c.f
					g.Limit = limit
					got := ids(h.with(t).list(g))
					if !slices.Equal(got, want) {
						t.Errorf("List(%+v) walked %v, want %v", g, got, want)
					}
				})
			}
		}

		// The listed records are the stored jobs, in full.
		listed := h.list(store.Filter{Limit: 1000})
		for i, j := range listed {
			if i < len(all) {
				sameJob(t, "listed job", j, all[i])
			}
		}
	})

	t.Run("DefaultLimit", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		njs := make([]store.NewJob, 55)
		for i := range njs {
			njs[i] = newJob("q")
		}
		js := h.add(njs...)
		newestFirst(js)
		p, err := h.s.List(h.ctx, store.Filter{})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(p.Jobs) != 50 || p.Next == "" {
			t.Fatalf("List without a limit: %d jobs, Next %q; want 50 and a cursor", len(p.Jobs), p.Next)
		}
		if !slices.Equal(ids(p.Jobs), ids(js[:50])) {
			t.Errorf("first page = %v, want the 50 newest %v", ids(p.Jobs), ids(js[:50]))
		}
		p, err = h.s.List(h.ctx, store.Filter{After: p.Next})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if !slices.Equal(ids(p.Jobs), ids(js[50:])) || p.Next != "" {
			t.Errorf("second page = %v, Next %q; want %v and no cursor", ids(p.Jobs), p.Next, ids(js[50:]))
		}
	})

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		p, err := h.s.List(h.ctx, store.Filter{})
		if err != nil || len(p.Jobs) != 0 || p.Next != "" {
			t.Errorf("List of an empty store = %v, %q, %v; want nothing", ids(p.Jobs), p.Next, err)
		}
	})
}

func testQueueCounts(t *testing.T, o opener) {
	h := o.h(t)
	wantCounts(t, h, map[string]map[job.State]int64{})

	// Each job that runs is claimed while its queue holds nothing else
	// queued, so that the claim takes it.
	h.in(job.Running, withQueue("a"))
	h.in(job.Succeeded, withQueue("a"))
	failed := h.in(job.Failed, withQueue("a"))
	h.in(job.Canceled, withQueue("a"))
	runningB := h.in(job.Running, withQueue("b"))
	queuedA := h.add(newJob("a"), newJob("a"), newJob("a", withRunAt(time.Now().Add(time.Hour))))
	queuedB := h.add(newJob("b"), newJob("b"))
	wantCounts(t, h, map[string]map[job.State]int64{
		"a": {job.Queued: 3, job.Running: 1, job.Succeeded: 1, job.Failed: 1, job.Canceled: 1},
		"b": {job.Queued: 2, job.Running: 1},
	})

	if _, err := h.s.Retry(h.ctx, failed.ID); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if _, err := h.s.Delete(h.ctx, queuedB[0].ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	h.complete(runningB, store.Outcome{Retention: retention})
	h.cancel(queuedA[0].ID)
	wantCounts(t, h, map[string]map[job.State]int64{
		"a": {job.Queued: 3, job.Running: 1, job.Succeeded: 1, job.Canceled: 2},
		"b": {job.Queued: 1, job.Succeeded: 1},
	})
}

func testNextRunAt(t *testing.T, o opener) {
	h := o.h(t)
	next := func(queue string) time.Time {
		t.Helper()
		at, err := h.s.NextRunAt(h.ctx, queue)
		if err != nil {
			t.Fatalf("NextRunAt(%s): %v", queue, err)
		}
		return at
	}
	zeroTime(t, "NextRunAt of an empty store", next("q"))

	base := time.Now().Truncate(time.Second)
	// Jobs that are not queued do not count, however early their run_at.
	h.in(job.Running, withQueue("q"), withRunAt(base.Add(-time.Hour)))
	h.in(job.Canceled, withQueue("q"), withRunAt(base.Add(-2*time.Hour)))
	zeroTime(t, "NextRunAt with no queued job", next("q"))

	later := h.addOne(newJob("q", withRunAt(base.Add(2*time.Hour))))
	sooner := h.addOne(newJob("q", withRunAt(base.Add(time.Hour))))
	h.addOne(newJob("other", withRunAt(base.Add(time.Minute))))
	nearTime(t, "NextRunAt", next("q"), sooner.RunAt)
	nearTime(t, "NextRunAt of another queue", next("other"), base.Add(time.Minute))
	zeroTime(t, "NextRunAt of an unknown queue", next("none"))

	h.cancel(sooner.ID)
	nearTime(t, "NextRunAt after canceling the earliest", next("q"), later.RunAt)

	// A runnable job is the earliest.
	now := h.addOne(newJob("q"))
	nearTime(t, "NextRunAt with a runnable job", next("q"), now.RunAt)
}

func testVersions(t *testing.T, o opener) {
	// step is one change and the job it returned.
	type step struct {
		what string
		do   func(h *harness, j *job.Job) *job.Job
	}
	claim := step{"Claim", func(h *harness, j *job.Job) *job.Job { return h.claimID(j.Queue, j.ID, longLease) }}
	progress := step{"Progress", func(h *harness, j *job.Job) *job.Job {
		d, err := h.s.Progress(h.ctx, j.ID, j.LeaseToken, job.Progress{Current: j.Progress.Current + 1})
		if err != nil {
			h.t.Fatalf("Progress: %v", err)
		}
		return d
	}}
	requeue := step{"Fail (requeue)", func(h *harness, j *job.Job) *job.Job {
		return h.fail(j, store.Failure{Error: job.Error{Message: "x"}, Retryable: true, Retention: retention})
	}}
	complete := step{"Complete", func(h *harness, j *job.Job) *job.Job { return h.complete(j, outcome()) }}
	cancel := step{"Cancel", func(h *harness, j *job.Job) *job.Job { return h.cancel(j.ID) }}
	retry := step{"Retry", func(h *harness, j *job.Job) *job.Job {
		d, err := h.s.Retry(h.ctx, j.ID)
		if err != nil {
			h.t.Fatalf("Retry: %v", err)
		}
		return d
	}}
	shortClaim := step{"Claim (short lease)", func(h *harness, j *job.Job) *job.Job { return h.claimID(j.Queue, j.ID, time.Millisecond) }}
	rescue := step{"Rescue", func(h *harness, j *job.Job) *job.Job {
		// A zero backoff from the present time leaves the job claimable.
		waitUntil(j.LeaseExpiresAt.Add(tol))
		got, err := h.s.Rescue(h.ctx, time.Now(),
			func(int) time.Duration { return 0 }, func(string) time.Duration { return retention })
		if err != nil || len(got) != 1 || got[0].ID != j.ID {
			h.t.Fatalf("Rescue = %v, %v, want job %s", ids(got), err, j.ID)
		}
		return got[0]
	}}
	fail := step{"Fail (last)", func(h *harness, j *job.Job) *job.Job {
		return h.fail(j, store.Failure{Error: job.Error{Message: "x"}, Retention: retention})
	}}

	for _, c := range []struct {
		name  string
		steps []step
	}{
		{"Success", []step{claim, progress, progress, requeue, claim, progress, complete}},
		{"CancelRetry", []step{cancel, retry, claim, cancel, retry, claim, fail, retry}},
		{"Rescue", []step{shortClaim, rescue, claim, progress, complete}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			j := h.addOne(newJob("q"))
			if j.Version != 1 {
				t.Errorf("version after Insert = %d, want 1", j.Version)
			}
			for _, st := range c.steps {
				d := st.do(h, j)
				newer(t, st.what, d, j)
				h.stored(st.what, d)
				j = d
			}
			if j.State == job.Running {
				hb, err := h.s.Heartbeat(h.ctx, j.ID, j.LeaseToken, longLease)
				if err != nil {
					t.Fatalf("Heartbeat: %v", err)
				}
				if hb.Version < j.Version {
					t.Errorf("Heartbeat: version %d went back from %d", hb.Version, j.Version)
				}
				j = hb
			}
			d, err := h.s.Delete(h.ctx, j.ID)
			if err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if d.Version != j.Version {
				t.Errorf("Delete returned version %d, want the version as it was, %d", d.Version, j.Version)
			}
		})
	}
}

func testTimes(t *testing.T, o opener) {
	t.Run("Precision", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		zone := time.FixedZone("east", 5*3600+1800)
		runAt := time.Date(2031, 5, 6, 7, 8, 9, 123456789, zone)
		j := h.addOne(newJob("q", withRunAt(runAt)))
		nearTime(t, "RunAt from Insert", j.RunAt, runAt)
		g := h.stored("Insert", j)
		nearTime(t, "RunAt from Get", g.RunAt, runAt)
		if d := g.RunAt.Sub(runAt); d > time.Microsecond || d < -time.Microsecond {
			t.Logf("RunAt kept to %v (within tolerance)", d)
		}
		at, err := h.s.NextRunAt(h.ctx, "q")
		if err != nil {
			t.Fatalf("NextRunAt: %v", err)
		}
		nearTime(t, "NextRunAt", at, runAt)

		old := time.Date(2001, 2, 3, 4, 5, 6, 987654321, time.UTC)
		k := h.addOne(newJob("p", withRunAt(old)))
		nearTime(t, "RunAt in the past", h.get(k.ID).RunAt, old)
		c := h.claimID("p", k.ID, longLease)
		nearTime(t, "RunAt after Claim", c.RunAt, old)
		d := h.complete(c, outcome())
		h.stored("Complete", d)
		listed := h.list(store.Filter{Queue: "p"})
		if len(listed) != 1 {
			t.Fatalf("List(queue p) = %v, want %s", ids(listed), d.ID)
		}
		sameJob(t, "List after Complete", listed[0], d)
	})

	// Times compare as instants, whatever zone they were given in.
	t.Run("Zones", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		east := time.FixedZone("east", 14*3600)
		west := time.FixedZone("west", -12*3600)
		now := time.Now()
		due := h.addOne(newJob("q", withRunAt(now.Add(-10*time.Minute).In(east))))
		notDue := h.addOne(newJob("q", withRunAt(now.Add(10*time.Minute).In(west)), withPriority(1)))
		got := h.claim("q", 10, longLease)
		if !slices.Equal(ids(got), []string{due.ID}) {
			t.Errorf("Claim = %v, want only the due job %s (not %s)", ids(got), due.ID, notDue.ID)
		}

		first := h.addOne(newJob("n", withRunAt(now.Add(time.Hour).In(east))))
		h.addOne(newJob("n", withRunAt(now.Add(2*time.Hour).In(west))))
		at, err := h.s.NextRunAt(h.ctx, "n")
		if err != nil {
			t.Fatalf("NextRunAt: %v", err)
		}
		nearTime(t, "NextRunAt across zones", at, first.RunAt)

		// Purge and Rescue take now in any zone too.
		r := h.addOne(newJob("r"))
		r = h.claimID("r", r.ID, time.Millisecond)
		rescued, err := h.s.Rescue(h.ctx, time.Now().Add(time.Second).In(west),
			func(int) time.Duration { return 0 }, func(string) time.Duration { return retention })
		if err != nil || !slices.Equal(ids(rescued), []string{r.ID}) {
			t.Errorf("Rescue with now in another zone = %v, %v, want %s", ids(rescued), err, r.ID)
		}
		s := h.in(job.Succeeded)
		n, err := h.s.Purge(h.ctx, s.ExpiresAt.Add(-time.Minute).In(east), 10)
		if err != nil || n != 0 {
			t.Errorf("Purge a minute before expiry = %d, %v, want 0", n, err)
		}
		n, err = h.s.Purge(h.ctx, s.ExpiresAt.Add(time.Minute).In(west), 10)
		if err != nil || n != 1 {
			t.Errorf("Purge a minute after expiry = %d, %v, want 1", n, err)
		}
	})
}
