package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// allBytes is an input holding every byte value.
func allBytes() []byte {
	b := make([]byte, 512)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func testInsert(t *testing.T, o opener) {
	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		before := time.Now()
		j := h.addOne(newJob("q"))
		after := time.Now()
		if !isUUIDv7(j.ID) {
			t.Errorf("ID %q is not a UUIDv7", j.ID)
		} else {
			between(t, "UUIDv7 time", uuidTime(j.ID), before.Truncate(time.Millisecond), after)
		}
		if j.Queue != "q" || j.Owner != "alice" {
			t.Errorf("queue, owner = %q, %q, want q, alice", j.Queue, j.Owner)
		}
		if j.State != job.Queued || j.Version != 1 || j.Attempt != 0 || j.MaxAttempts != 3 {
			t.Errorf("state %s version %d attempt %d/%d, want queued, 1, 0/3", j.State, j.Version, j.Attempt, j.MaxAttempts)
		}
		between(t, "CreatedAt", j.CreatedAt, before, after)
		between(t, "UpdatedAt", j.UpdatedAt, before, after)
		between(t, "RunAt (zero given: now)", j.RunAt, before, after)
		zeroTime(t, "StartedAt", j.StartedAt)
		zeroTime(t, "FinishedAt", j.FinishedAt)
		zeroTime(t, "ExpiresAt", j.ExpiresAt)
		noLease(t, j)
		if j.Error != nil || j.Result != nil || j.Artifacts != 0 || j.Progress != (job.Progress{}) {
			t.Errorf("error %v result %v artifacts %d progress %+v, want none", j.Error, j.Result, j.Artifacts, j.Progress)
		}
		if j.Unique || j.IdempotencyKey != "" || j.Priority != 0 || j.Timeout != 0 || len(j.Labels) != 0 {
			t.Errorf("unique %v key %q priority %d timeout %v labels %v, want zero values",
				j.Unique, j.IdempotencyKey, j.Priority, j.Timeout, j.Labels)
		}
		g := h.stored("Insert", j)
		if g.Position != 0 {
			t.Errorf("Position of the only queued job = %d, want 0", g.Position)
		}
	})

	t.Run("Fields", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		id := job.NewID()
		runAt := time.Now().Add(time.Hour).Truncate(time.Microsecond)
		labels := map[string]string{"env": "prod", "team": "data", "note": "a b/c=d é"}
		nj := newJob("media",
			withID(id), withOwner("bob"), withPriority(-7), withRunAt(runAt), withTimeout(90*time.Second),
			withMaxAttempts(5), withKey("order-42"), withUnique(), withInput(allBytes()),
			withLabels("env", "prod", "team", "data", "note", "a b/c=d é"))
		nj.Input.Name = "photo.raw"
		nj.Input.ContentType = "image/x-raw"
		j := h.addOne(nj)
		want := job.Job{
			ID: id, Queue: "media", Owner: "bob", State: job.Queued, Priority: -7, Timeout: 90 * time.Second,
			MaxAttempts: 5, IdempotencyKey: "order-42", Unique: true, InputDigest: digest(allBytes()),
			Input: job.Blob{Name: "photo.raw", ContentType: "image/x-raw", Size: 512}, Labels: labels,
			RunAt: runAt, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, Version: 1,
		}
		sameJob(t, "Insert with every field", j, &want)
		h.stored("Insert", j)
		wantBytes(t, "OpenInput", h.input(id), allBytes())
	})

	t.Run("Batch", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		given := job.NewID()
		res := h.insert(
			newJob("a", withLabels("n", "0")),
			newJob("b", withLabels("n", "1"), withID(given)),
			newJob("a", withLabels("n", "2"), withOwner("bob")),
		)
		seen := map[string]bool{}
		for i, r := range res {
			if r.Err != nil || r.Existing || r.Job == nil {
				t.Fatalf("result %d: Err=%v Existing=%v Job=%v", i, r.Err, r.Existing, r.Job)
			}
			if r.Job.Labels["n"] != string(rune('0'+i)) {
				t.Errorf("result %d is the job with labels %v: results out of input order", i, r.Job.Labels)
			}
			if seen[r.Job.ID] {
				t.Errorf("result %d: id %s given twice", i, r.Job.ID)
			}
			seen[r.Job.ID] = true
			if i == 1 {
				if r.Job.ID != given {
					t.Errorf("given ID %s came back as %s", given, r.Job.ID)
				}
			} else if !isUUIDv7(r.Job.ID) {
				t.Errorf("result %d: ID %q is not a UUIDv7", i, r.Job.ID)
			}
			h.stored("batch Insert", r.Job)
		}
		if res[0].Job.Queue != "a" || res[1].Job.Queue != "b" || res[2].Job.Owner != "bob" {
			t.Errorf("results out of input order: %+v", res)
		}
	})

	t.Run("Input", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name string
			data []byte
			path bool
		}{
			{"Bytes", allBytes(), false},
			{"Path", allBytes(), true},
			{"Empty", []byte{}, false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				h := o.h(t)
				nj := newJob("q", withInput(c.data))
				nj.Input.Name = "in.bin"
				nj.Input.ContentType = "application/x-test"
				if c.path {
					nj.Input.Bytes = nil
					nj.Input.Path = tempFile(t, c.data)
				}
				j := h.addOne(nj)
				want := job.Blob{Name: "in.bin", ContentType: "application/x-test", Size: int64(len(c.data))}
				if j.Input != want {
					t.Errorf("Input = %+v, want %+v", j.Input, want)
				}
				if j.InputDigest != digest(c.data) {
					t.Errorf("InputDigest = %q, want %q", j.InputDigest, digest(c.data))
				}
				h.stored("Insert", j)
				wantBytes(t, "OpenInput", h.input(j.ID), c.data)
				// Reading twice gives the same bytes: the input is kept,
				// not consumed.
				wantBytes(t, "second OpenInput", h.input(j.ID), c.data)
			})
		}
	})

	t.Run("OpenInputUnknown", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		rc, err := h.s.OpenInput(h.ctx, job.NewID())
		closeIf(rc)
		wantErr(t, "OpenInput of an unknown job", err, store.ErrNotFound)
	})
}

func testIdempotencyKey(t *testing.T, o opener) {
	// Whatever state the first job is in, the same owner and key find it.
	for _, s := range job.States {
		t.Run("SameOwner/"+string(s), func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			first := h.in(s, withKey("k1"))
			for _, q := range []string{first.Queue, "elsewhere"} {
				res := h.insert(newJob(q, withKey("k1"), withInput([]byte("other input"))))
				r := res[0]
				if r.Err != nil || !r.Existing || r.Job == nil {
					t.Fatalf("repeat in queue %s: Err=%v Existing=%v Job=%v, want the existing job", q, r.Err, r.Existing, r.Job)
				}
				sameJob(t, "repeat in queue "+q, r.Job, h.get(first.ID))
				if r.Job.State != s {
					t.Errorf("existing job state %s, want %s", r.Job.State, s)
				}
			}
		})
	}

	t.Run("OtherOwner", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		a := h.addOne(newJob("q", withKey("k1")))
		b := h.addOne(newJob("q", withKey("k1"), withOwner("bob")))
		if a.ID == b.ID {
			t.Fatalf("another owner's key returned the same job")
		}
		if b.Owner != "bob" || b.IdempotencyKey != "k1" {
			t.Errorf("new job owner %q key %q", b.Owner, b.IdempotencyKey)
		}
		// Each owner finds their own job again.
		for _, want := range []*job.Job{a, b} {
			r := h.insert(newJob("q", withKey("k1"), withOwner(want.Owner)))[0]
			if !r.Existing || r.Job == nil || r.Job.ID != want.ID {
				t.Errorf("owner %s: Existing=%v job %v, want existing %s", want.Owner, r.Existing, r.Job, want.ID)
			}
		}
		if n := countJobs(t, h, store.Filter{}); n != 2 {
			t.Errorf("%d jobs stored, want 2", n)
		}
	})

	t.Run("SameBatch", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		res := h.insert(
			newJob("q", withKey("k1")),
			newJob("q", withKey("k1"), withInput([]byte("again"))),
			newJob("q", withKey("k1"), withOwner("bob")),
		)
		for i, r := range res {
			if r.Err != nil || r.Job == nil {
				t.Fatalf("result %d: Err=%v Job=%v", i, r.Err, r.Job)
			}
		}
		if res[0].Existing || !res[1].Existing || res[2].Existing {
			t.Errorf("Existing = %v, %v, %v, want false, true, false", res[0].Existing, res[1].Existing, res[2].Existing)
		}
		if res[1].Job.ID != res[0].Job.ID {
			t.Errorf("second NewJob with the key got job %s, want %s", res[1].Job.ID, res[0].Job.ID)
		}
		if res[2].Job.ID == res[0].Job.ID {
			t.Errorf("another owner in the batch got the first owner's job")
		}
		if n := countJobs(t, h, store.Filter{}); n != 2 {
			t.Errorf("%d jobs stored, want 2", n)
		}
	})
}

func testUnique(t *testing.T, o opener) {
	input := []byte("same input")
	// The earlier unique job, in each state: does a new unique insert with
	// the same queue, owner and digest return it?
	for _, c := range []struct {
		state job.State
		dedup bool
	}{
		{job.Queued, true},
		{job.Running, true},
		{job.Succeeded, true},
		{job.Failed, false},
		{job.Canceled, false},
	} {
		t.Run("Earlier/"+string(c.state), func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			first := h.in(c.state, withUnique(), withInput(input))
			r := h.insert(newJob(first.Queue, withUnique(), withInput(input)))[0]
			if r.Err != nil || r.Job == nil {
				t.Fatalf("Err=%v Job=%v", r.Err, r.Job)
			}
			if c.dedup {
				if !r.Existing {
					t.Fatalf("earlier job %s: got a new job, want the existing one", c.state)
				}
				sameJob(t, "dedup", r.Job, h.get(first.ID))
				return
			}
			if r.Existing || r.Job.ID == first.ID {
				t.Fatalf("earlier job %s: got the existing job, want a new one", c.state)
			}
			if r.Job.State != job.Queued || r.Job.Version != 1 || !r.Job.Unique {
				t.Errorf("new job state %s version %d unique %v", r.Job.State, r.Job.Version, r.Job.Unique)
			}
			sameJob(t, "earlier job", h.get(first.ID), first)
		})
	}

	for _, c := range []struct {
		name string
		opts []opt
	}{
		{"OtherOwner", []opt{withUnique(), withOwner("bob")}},
		{"OtherQueue", []opt{withUnique(), withQueue("other")}},
		{"OtherInput", []opt{withUnique(), withInput([]byte("different input"))}},
		{"NotUnique", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			first := h.addOne(newJob("q", withUnique(), withInput(input)))
			j := h.addOne(newJob("q", append([]opt{withInput(input)}, c.opts...)...))
			if j.ID == first.ID {
				t.Fatalf("got the earlier job, want a new one")
			}
		})
	}

	t.Run("NeitherUnique", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		h.add(newJob("q", withInput(input)), newJob("q", withInput(input)))
		h.addOne(newJob("q", withInput(input)))
		if n := countJobs(t, h, store.Filter{}); n != 3 {
			t.Errorf("%d jobs stored, want 3", n)
		}
	})
}

func testMaxQueued(t *testing.T, o opener) {
	h := o.h(t)
	full := func(what string, r store.Inserted) {
		t.Helper()
		if !errors.Is(r.Err, store.ErrQueueFull) {
			t.Errorf("%s: Err = %v, want ErrQueueFull", what, r.Err)
		}
		if r.Existing {
			t.Errorf("%s: refused insert has Existing set", what)
		}
	}
	h.add(newJob("q", withMaxQueued(2)), newJob("q", withMaxQueued(2)))

	res := h.insert(
		newJob("q", withMaxQueued(2)),
		newJob("r", withMaxQueued(2)),
		newJob("r", withMaxQueued(2)),
		newJob("q"), // no limit asked: admitted
	)
	full("third job of q", res[0])
	for i := 1; i < 4; i++ {
		if res[i].Err != nil || res[i].Existing || res[i].Job == nil {
			t.Errorf("result %d: Err=%v Existing=%v, want a new job", i, res[i].Err, res[i].Existing)
		}
	}
	wantCounts(t, h, map[string]map[job.State]int64{
		"q": {job.Queued: 3},
		"r": {job.Queued: 2},
	})

	// Running jobs do not count: with two of q's three jobs running, one
	// more fits under a limit of 2, then the queue is full again.
	h.claim("q", 2, longLease)
	h.add(newJob("q", withMaxQueued(2)))
	full("q with 2 queued, 2 running", h.insert(newJob("q", withMaxQueued(2)))[0])

	// Finished jobs do not count either.
	for _, j := range h.claim("q", 2, longLease) {
		h.complete(j, store.Outcome{Retention: retention})
	}
	h.add(newJob("q", withMaxQueued(2)), newJob("q", withMaxQueued(2)))
	full("q with 2 queued, 2 running, 2 succeeded", h.insert(newJob("q", withMaxQueued(2)))[0])
	wantCounts(t, h, map[string]map[job.State]int64{
		"q": {job.Queued: 2, job.Running: 2, job.Succeeded: 2},
		"r": {job.Queued: 2},
	})
}
