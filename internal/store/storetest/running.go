package storetest

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

func testHeartbeat(t *testing.T, o opener) {
	h := o.h(t)
	j := h.addOne(newJob("q"))
	j = h.claimID("q", j.ID, time.Minute)
	before := time.Now()
	hb, err := h.s.Heartbeat(h.ctx, j.ID, j.LeaseToken, longLease)
	after := time.Now()
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	between(t, "LeaseExpiresAt after Heartbeat", hb.LeaseExpiresAt, before.Add(longLease), after.Add(longLease))
	if !hb.LeaseExpiresAt.After(j.LeaseExpiresAt) {
		t.Errorf("Heartbeat did not extend the lease: %v, was %v", hb.LeaseExpiresAt, j.LeaseExpiresAt)
	}
	if hb.State != job.Running || hb.LeaseToken != j.LeaseToken || hb.Worker != j.Worker || hb.Attempt != j.Attempt {
		t.Errorf("Heartbeat changed state %s token %q worker %q attempt %d", hb.State, hb.LeaseToken, hb.Worker, hb.Attempt)
	}
	if hb.Version < j.Version {
		t.Errorf("Heartbeat: version %d went back from %d", hb.Version, j.Version)
	}
	h.stored("Heartbeat", hb)
}

func testProgress(t *testing.T, o opener) {
	h := o.h(t)
	j := h.in(job.Running)
	prev := j
	for _, p := range []job.Progress{
		{Current: 3, Total: 10, Message: "three of ten"},
		{Current: 10, Total: 0},
	} {
		got, err := h.s.Progress(h.ctx, j.ID, j.LeaseToken, p)
		if err != nil {
			t.Fatalf("Progress(%+v): %v", p, err)
		}
		if got.Progress != p {
			t.Errorf("Progress = %+v, want %+v", got.Progress, p)
		}
		if got.State != job.Running || got.LeaseToken != j.LeaseToken || got.Attempt != 1 {
			t.Errorf("Progress changed state %s token %q attempt %d", got.State, got.LeaseToken, got.Attempt)
		}
		nearTime(t, "LeaseExpiresAt after Progress", got.LeaseExpiresAt, j.LeaseExpiresAt)
		newer(t, "Progress", got, prev)
		h.stored("Progress", got)
		prev = got
	}
}

// tokenOp is one call made under a lease token.
type tokenOp struct {
	name string
	call func(h *harness, id, token string) (*job.Job, error)
}

var tokenOps = []tokenOp{
	{"Heartbeat", func(h *harness, id, token string) (*job.Job, error) {
		return h.s.Heartbeat(h.ctx, id, token, longLease)
	}},
	{"Progress", func(h *harness, id, token string) (*job.Job, error) {
		return h.s.Progress(h.ctx, id, token, job.Progress{Current: 1, Total: 2})
	}},
	{"Complete", func(h *harness, id, token string) (*job.Job, error) {
		return h.s.Complete(h.ctx, id, token, outcome())
	}},
	{"Fail", func(h *harness, id, token string) (*job.Job, error) {
		return h.s.Fail(h.ctx, id, token, store.Failure{Error: job.Error{Message: "late"}, Retryable: true})
	}},
	{"Release", func(h *harness, id, token string) (*job.Job, error) {
		return h.s.Release(h.ctx, id, token, job.Error{Message: "late", Code: job.CodeShutdown})
	}},
	{"CompleteKnown", func(h *harness, id, token string) (*job.Job, error) {
		o := outcome()
		if j, err := h.s.Get(h.ctx, id); err == nil {
			j.LeaseToken = token
			o.Known = j
		}
		return h.s.Complete(h.ctx, id, token, o)
	}},
}

// testRelease checks that a released job is queued again at once and that
// the attempt it lost is not counted.
func testRelease(t *testing.T, o opener) {
	h := o.h(t)
	j := h.in(job.Running, withMaxAttempts(1))
	p := job.Progress{Current: 2, Total: 5, Message: "two"}
	if _, err := h.s.Progress(h.ctx, j.ID, j.LeaseToken, p); err != nil {
		t.Fatalf("Progress: %v", err)
	}
	e := job.Error{Message: "interrupted by shutdown", Code: job.CodeShutdown}
	d, err := h.s.Release(h.ctx, j.ID, j.LeaseToken, e)
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if d.State != job.Queued || d.Attempt != 0 || d.Error == nil || *d.Error != e || d.Progress != p {
		t.Fatalf("released job: state %s attempt %d error %s progress %+v", d.State, d.Attempt, fmtPtr(d.Error), d.Progress)
	}
	noLease(t, d)
	zeroTime(t, "FinishedAt", d.FinishedAt)
	h.stored("Release", d)
	// Runnable at once, and with its only attempt still to come.
	again := h.claim(j.Queue, 1, longLease)
	if len(again) != 1 || again[0].ID != j.ID || again[0].Attempt != 1 {
		t.Fatalf("claim after Release = %v", ids(again))
	}
	wantCounts(t, h, map[string]map[job.State]int64{j.Queue: {job.Running: 1}})
	if _, err := h.s.Release(h.ctx, j.ID, j.LeaseToken, e); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("Release with the first token: %v, want ErrLeaseLost", err)
	}
}

// testCompleteKnown checks that Complete gives the same outcome whether the
// caller's view of the job is current or stale.
func testCompleteKnown(t *testing.T, o opener) {
	for _, stale := range []bool{false, true} {
		name := map[bool]string{false: "Current", true: "Stale"}[stale]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			j := h.in(job.Running)
			known := *j
			p := job.Progress{Current: 1, Total: 3, Message: "one"}
			stored, err := h.s.Progress(h.ctx, j.ID, j.LeaseToken, p)
			if err != nil {
				t.Fatalf("Progress: %v", err)
			}
			if !stale {
				known = *stored
			}
			d, err := h.s.Complete(h.ctx, j.ID, j.LeaseToken, store.Outcome{
				Result: &store.Data{Blob: job.Blob{ContentType: "text/plain"}, Bytes: []byte("ok")}, Retention: time.Hour, Known: &known,
			})
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if d.State != job.Succeeded || d.Progress != p || d.Version <= stored.Version || d.Attempt != 1 {
				t.Fatalf("completed: state %s progress %+v version %d (progress at %d) attempt %d",
					d.State, d.Progress, d.Version, stored.Version, d.Attempt)
			}
			h.stored("Complete", d)
			_, body := h.result(j.ID)
			wantBytes(t, "result", body, []byte("ok"))
			wantCounts(t, h, map[string]map[job.State]int64{j.Queue: {job.Succeeded: 1}})
		})
	}
}

// testLeaseLost checks that every call made under a token the caller no
// longer holds is refused and changes nothing.
func testLeaseLost(t *testing.T, o opener) {
	type scenario struct {
		name string
		// setup returns the job, the token to use, and whether the job is
		// still there (and must be left unchanged).
		setup func(h *harness) (id, token string, exists bool)
		want  []error
	}
	scenarios := []scenario{
		{"WrongToken", func(h *harness) (string, string, bool) {
			j := h.in(job.Running)
			return j.ID, job.NewID(), true
		}, []error{store.ErrLeaseLost}},
		{"EmptyToken", func(h *harness) (string, string, bool) {
			j := h.in(job.Running)
			return j.ID, "", true
		}, []error{store.ErrLeaseLost}},
		{"Canceled", func(h *harness) (string, string, bool) {
			j := h.in(job.Running)
			h.cancel(j.ID)
			return j.ID, j.LeaseToken, true
		}, []error{store.ErrLeaseLost}},
		{"Rescued", func(h *harness) (string, string, bool) {
			j := h.addOne(newJob("q"))
			j = h.claimID("q", j.ID, time.Millisecond)
			h.expire(j)
			return j.ID, j.LeaseToken, true
		}, []error{store.ErrLeaseLost}},
		{"RescuedAndClaimedAgain", func(h *harness) (string, string, bool) {
			j := h.addOne(newJob("q"))
			j = h.claimID("q", j.ID, time.Millisecond)
			h.expire(j)
			again := h.claimID("q", j.ID, longLease)
			if again.LeaseToken == j.LeaseToken {
				h.t.Fatalf("a new claim reused the lease token %q", j.LeaseToken)
			}
			return j.ID, j.LeaseToken, true
		}, []error{store.ErrLeaseLost}},
		{"Deleted", func(h *harness) (string, string, bool) {
			j := h.in(job.Running)
			if _, err := h.s.Delete(h.ctx, j.ID); err != nil {
				h.t.Fatalf("Delete: %v", err)
			}
			return j.ID, j.LeaseToken, false
		}, []error{store.ErrLeaseLost, store.ErrNotFound}},
		{"UnknownID", func(h *harness) (string, string, bool) {
			h.in(job.Running)
			return job.NewID(), job.NewID(), false
		}, []error{store.ErrNotFound, store.ErrLeaseLost}},
	}
	for _, sc := range scenarios {
		for _, op := range tokenOps {
			t.Run(sc.name+"/"+op.name, func(t *testing.T) {
				t.Parallel()
				h := o.h(t)
				id, token, exists := sc.setup(h)
				var before *job.Job
				if exists {
					before = h.get(id)
				}
				_, err := op.call(h, id, token)
				wantErr(t, op.name, err, sc.want...)
				if !exists {
					_, err := h.s.Get(h.ctx, id)
					wantErr(t, "Get after "+op.name, err, store.ErrNotFound)
					return
				}
				after := h.get(id)
				sameJob(t, "job after a refused "+op.name, after, before)
				if after.State != job.Succeeded {
					_, rc, err := h.s.OpenResult(h.ctx, id)
					closeIf(rc)
					wantErr(t, "OpenResult after a refused "+op.name, err, store.ErrState, store.ErrNotFound)
				}
			})
		}
	}
}

// artifactsIn is the artifacts of the Complete tests, not sorted by name.
func artifactsIn(t *testing.T) ([]store.Data, map[string][]byte) {
	zeta := []byte("zeta artifact\n")
	data := []store.Data{
		{Blob: job.Blob{Name: "zeta.log", ContentType: "text/plain", Size: int64(len(zeta))}, Path: tempFile(t, zeta)},
		{Blob: job.Blob{Name: "alpha.bin", ContentType: "application/octet-stream", Size: 512}, Bytes: allBytes()},
		{Blob: job.Blob{Name: "Mid_1.json", ContentType: "application/json", Size: 2}, Bytes: []byte("{}")},
		{Blob: job.Blob{Name: "empty", ContentType: "text/plain", Size: 0}, Bytes: []byte{}},
	}
	return data, map[string][]byte{"zeta.log": zeta, "alpha.bin": allBytes(), "Mid_1.json": []byte("{}"), "empty": {}}
}

func testComplete(t *testing.T, o opener) {
	for _, viaPath := range []bool{false, true} {
		name := "Bytes"
		if viaPath {
			name = "Path"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			j := h.in(job.Running)
			body := append([]byte(`{"result":"`), allBytes()...)
			res := &store.Data{Blob: job.Blob{ContentType: "application/json", Size: int64(len(body))}, Bytes: body}
			if viaPath {
				res.Bytes, res.Path = nil, tempFile(t, body)
			}
			arts, artBytes := artifactsIn(t)
			prog := &job.Progress{Current: 7, Total: 7, Message: "done"}
			before := time.Now()
			d, err := h.s.Complete(h.ctx, j.ID, j.LeaseToken, store.Outcome{
				Result: res, Artifacts: arts, Progress: prog, Retention: 2 * time.Hour,
			})
			after := time.Now()
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if d.State != job.Succeeded || d.Attempt != 1 || d.Error != nil {
				t.Errorf("state %s attempt %d error %v, want succeeded, 1, none", d.State, d.Attempt, d.Error)
			}
			between(t, "FinishedAt", d.FinishedAt, before, after)
			nearTime(t, "ExpiresAt", d.ExpiresAt, d.FinishedAt.Add(2*time.Hour))
			nearTime(t, "StartedAt", d.StartedAt, j.StartedAt)
			noLease(t, d)
			wantResult := job.Blob{ContentType: "application/json", Size: int64(len(body))}
			if d.Result == nil || *d.Result != wantResult {
				t.Errorf("Result = %s, want %+v", fmtPtr(d.Result), wantResult)
			}
			if d.Artifacts != len(arts) {
				t.Errorf("Artifacts = %d, want %d", d.Artifacts, len(arts))
			}
			if d.Progress != *prog {
				t.Errorf("Progress = %+v, want %+v", d.Progress, *prog)
			}
			newer(t, "Complete", d, j)
			h.stored("Complete", d)

			blob, got := h.result(j.ID)
			if blob != wantResult {
				t.Errorf("OpenResult blob = %+v, want %+v", blob, wantResult)
			}
			wantBytes(t, "OpenResult", got, body)

			list, err := h.s.Artifacts(h.ctx, j.ID)
			if err != nil {
				t.Fatalf("Artifacts: %v", err)
			}
			var want []job.Blob
			for _, a := range arts {
				want = append(want, a.Blob)
			}
			slices.SortFunc(want, func(a, b job.Blob) int {
				return cmp.Compare(a.Name, b.Name)
			})
			if !slices.Equal(list, want) {
				t.Errorf("Artifacts = %+v, want %+v (sorted by name)", list, want)
			}
			for _, a := range want {
				b, data := h.artifact(j.ID, a.Name)
				if b != a {
					t.Errorf("OpenArtifact(%s) blob = %+v, want %+v", a.Name, b, a)
				}
				wantBytes(t, "OpenArtifact("+a.Name+")", data, artBytes[a.Name])
			}
			_, rc, err := h.s.OpenArtifact(h.ctx, j.ID, "missing.txt")
			closeIf(rc)
			wantErr(t, "OpenArtifact of an unknown name", err, store.ErrNotFound)
			_, rc, err = h.s.OpenArtifact(h.ctx, job.NewID(), "alpha.bin")
			closeIf(rc)
			wantErr(t, "OpenArtifact of an unknown job", err, store.ErrNotFound)

			// The input is still there.
			wantBytes(t, "OpenInput after Complete", h.input(j.ID), []byte("input of "+j.Queue))
		})
	}

	t.Run("NoResult", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		j := h.in(job.Running)
		d := h.complete(j, store.Outcome{Retention: retention})
		if d.State != job.Succeeded || d.Result != nil || d.Artifacts != 0 {
			t.Errorf("state %s result %s artifacts %d, want succeeded, nil, 0", d.State, fmtPtr(d.Result), d.Artifacts)
		}
		if d.Progress != (job.Progress{}) {
			t.Errorf("Progress = %+v, want none reported", d.Progress)
		}
		h.stored("Complete", d)
		list, err := h.s.Artifacts(h.ctx, j.ID)
		if err != nil || len(list) != 0 {
			t.Errorf("Artifacts = %v, %v, want none and no error", list, err)
		}
	})

	t.Run("KeepsProgress", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		j := h.in(job.Running)
		p := job.Progress{Current: 4, Total: 9, Message: "last report"}
		if _, err := h.s.Progress(h.ctx, j.ID, j.LeaseToken, p); err != nil {
			t.Fatalf("Progress: %v", err)
		}
		d := h.complete(j, store.Outcome{Retention: retention})
		if d.Progress != p {
			t.Errorf("Progress after Complete without one = %+v, want the last report %+v", d.Progress, p)
		}
	})

	// OpenResult of a job that has not succeeded.
	for _, s := range []job.State{job.Queued, job.Running, job.Failed, job.Canceled} {
		t.Run("OpenResult/"+string(s), func(t *testing.T) {
			t.Parallel()
			h := o.h(t)
			j := h.in(s)
			_, rc, err := h.s.OpenResult(h.ctx, j.ID)
			closeIf(rc)
			wantErr(t, "OpenResult of a "+string(s)+" job", err, store.ErrState, store.ErrNotFound)
		})
	}

	t.Run("OpenResult/unknown", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		_, rc, err := h.s.OpenResult(h.ctx, job.NewID())
		closeIf(rc)
		wantErr(t, "OpenResult of an unknown job", err, store.ErrNotFound)
	})
}

// stream is a deterministic byte generator (xorshift64*), so that large
// data can be written and checked without holding it in memory.
type stream struct{ x uint64 }

// Read fills p with the next bytes of the stream.
func (s *stream) Read(p []byte) (int, error) {
	var w [8]byte
	for i := 0; i < len(p); i += 8 {
		s.x ^= s.x >> 12
		s.x ^= s.x << 25
		s.x ^= s.x >> 27
		binary.LittleEndian.PutUint64(w[:], s.x*2685821657736338717)
		copy(p[i:], w[:])
	}
	return len(p), nil
}

func testLargeResult(t *testing.T, o opener) {
	if testing.Short() {
		t.Skip("100 MiB result: skipped in short mode")
	}
	const size = 100<<20 + 1 // past the 100 MiB a store must take
	h := o.h(t)
	j := h.in(job.Running)

	path := filepath.Join(t.TempDir(), "result")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, sum), 1<<20)
	if _, err := io.CopyN(w, &stream{x: 0x9e3779b97f4a7c15}, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := sum.Sum(nil)

	d := h.complete(j, store.Outcome{
		Result:    &store.Data{Blob: job.Blob{ContentType: "application/octet-stream", Size: size}, Path: path},
		Retention: retention,
	})
	if d.Result == nil || d.Result.Size != size {
		t.Fatalf("Result = %s, want %d bytes", fmtPtr(d.Result), size)
	}
	blob, rc, err := h.s.OpenResult(h.ctx, j.ID)
	if err != nil {
		t.Fatalf("OpenResult: %v", err)
	}
	defer rc.Close()
	if blob.Size != size {
		t.Errorf("OpenResult blob size %d, want %d", blob.Size, size)
	}
	sum.Reset()
	n, err := io.Copy(sum, rc)
	if err != nil {
		t.Fatalf("reading the result: %v", err)
	}
	if n != size || string(sum.Sum(nil)) != string(want) {
		t.Errorf("result read back: %d bytes, sha256 %x; want %d bytes, sha256 %x", n, sum.Sum(nil), size, want)
	}
}

func testFail(t *testing.T, o opener) {
	boom := job.Error{Message: "boom: exit status 3", Code: job.CodeHandler}

	t.Run("Requeue", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		j := h.in(job.Running)
		p := &job.Progress{Current: 1, Total: 4, Message: "a quarter"}
		backoff := 30 * time.Minute
		before := time.Now()
		d, err := h.s.Fail(h.ctx, j.ID, j.LeaseToken, store.Failure{
			Error: boom, Retryable: true, Backoff: backoff, Progress: p, Retention: retention,
		})
		after := time.Now()
		if err != nil {
			t.Fatalf("Fail: %v", err)
		}
		if d.State != job.Queued || d.Attempt != 1 {
			t.Errorf("state %s attempt %d, want queued, 1", d.State, d.Attempt)
		}
		if d.Error == nil || *d.Error != boom {
			t.Errorf("Error = %s, want %+v", fmtPtr(d.Error), boom)
		}
		if d.Progress != *p {
			t.Errorf("Progress = %+v, want %+v", d.Progress, *p)
		}
		between(t, "RunAt", d.RunAt, before.Add(backoff), after.Add(backoff))
		zeroTime(t, "FinishedAt", d.FinishedAt)
		zeroTime(t, "ExpiresAt", d.ExpiresAt)
		nearTime(t, "StartedAt", d.StartedAt, j.StartedAt)
		noLease(t, d)
		newer(t, "Fail", d, j)
		h.stored("Fail", d)
		if got := h.claim(j.Queue, 1, longLease); len(got) != 0 {
			t.Errorf("Claim during the backoff = %v, want none", ids(got))
		}
		next, err := h.s.NextRunAt(h.ctx, j.Queue)
		if err != nil {
			t.Fatalf("NextRunAt: %v", err)
		}
		nearTime(t, "NextRunAt", next, d.RunAt)
	})

	t.Run("LastAttempt", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		j := h.in(job.Running, withMaxAttempts(2))
		q := h.fail(j, store.Failure{Error: boom, Retryable: true, Retention: retention})
		if q.State != job.Queued {
			t.Fatalf("first failure of 2 attempts: state %s, want queued", q.State)
		}
		j2 := h.claimID(j.Queue, j.ID, longLease)
		if j2.Attempt != 2 {
			t.Errorf("second claim: attempt %d, want 2", j2.Attempt)
		}
		nearTime(t, "StartedAt of the second attempt", j2.StartedAt, j.StartedAt)
		last := job.Error{Message: "still broken"}
		before := time.Now()
		d, err := h.s.Fail(h.ctx, j2.ID, j2.LeaseToken, store.Failure{Error: last, Retryable: true, Backoff: time.Hour, Retention: 3 * time.Hour})
		after := time.Now()
		if err != nil {
			t.Fatalf("Fail: %v", err)
		}
		if d.State != job.Failed || d.Attempt != 2 {
			t.Errorf("state %s attempt %d, want failed, 2", d.State, d.Attempt)
		}
		if d.Error == nil || *d.Error != last {
			t.Errorf("Error = %s, want %+v", fmtPtr(d.Error), last)
		}
		between(t, "FinishedAt", d.FinishedAt, before, after)
		nearTime(t, "ExpiresAt", d.ExpiresAt, d.FinishedAt.Add(3*time.Hour))
		noLease(t, d)
		newer(t, "Fail", d, j2)
		h.stored("Fail", d)
		if got := h.claim(j.Queue, 1, longLease); len(got) != 0 {
			t.Errorf("Claim of a failed job's queue = %v, want none", ids(got))
		}
	})

	t.Run("NotRetryable", func(t *testing.T) {
		t.Parallel()
		h := o.h(t)
		j := h.in(job.Running, withMaxAttempts(5))
		before := time.Now()
		d, err := h.s.Fail(h.ctx, j.ID, j.LeaseToken, store.Failure{Error: boom, Retryable: false, Backoff: time.Second, Retention: retention})
		after := time.Now()
		if err != nil {
			t.Fatalf("Fail: %v", err)
		}
		if d.State != job.Failed || d.Attempt != 1 {
			t.Errorf("state %s attempt %d, want failed, 1", d.State, d.Attempt)
		}
		if d.Error == nil || *d.Error != boom {
			t.Errorf("Error = %s, want %+v", fmtPtr(d.Error), boom)
		}
		between(t, "FinishedAt", d.FinishedAt, before, after)
		nearTime(t, "ExpiresAt", d.ExpiresAt, d.FinishedAt.Add(retention))
		noLease(t, d)
		h.stored("Fail", d)
	})
}
