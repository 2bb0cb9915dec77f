package job

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func base(s State) Job {
	return Job{ID: NewID(), Queue: "q", State: s, Attempt: 1, MaxAttempts: 3, RunAt: t0.Add(-time.Second),
		LeaseExpiresAt: t0.Add(-time.Millisecond), Version: 5}
}

// apply runs action a on j with fixed arguments.
func apply(a Action, j Job) (Job, error) {
	switch a {
	case ActClaim:
		return onCopy(j, func(j *Job) error { return Claim(j, t0, "w", "tok", time.Minute) })
	case ActProgress:
		return onCopy(j, func(j *Job) error { return SetProgress(j, t0, Progress{Current: 1, Total: 2}) })
	case ActComplete:
		return onCopy(j, func(j *Job) error { return Complete(j, t0, &Blob{ContentType: "text/plain", Size: 2}, 1, time.Hour) })
	case ActFail:
		return onCopy(j, func(j *Job) error { return Fail(j, t0, Error{Message: "boom"}, true, time.Second, time.Hour) })
	case ActRescue:
		return onCopy(j, func(j *Job) error { return Rescue(j, t0, time.Second, time.Hour) })
	case ActRelease:
		return onCopy(j, func(j *Job) error { return Release(j, t0, Error{Message: "shutdown", Code: CodeShutdown}) })
	case ActCancel:
		return onCopy(j, func(j *Job) error { return Cancel(j, t0, time.Hour) })
	case ActRetry:
		return onCopy(j, func(j *Job) error { return Retry(j, t0) })
	case ActDelete:
		return j, CanDo(j.State, ActDelete)
	}
	panic(a)
}

// TestTransitionMatrix checks every (state, action) pair against the table
// of DESIGN §1, and the state each legal one lands in.
func TestTransitionMatrix(t *testing.T) {
	type want struct {
		ok bool
		to State
	}
	matrix := map[State]map[Action]want{
		Queued: {ActClaim: {true, Running}, ActProgress: {}, ActComplete: {}, ActFail: {}, ActRescue: {}, ActRelease: {},
			ActCancel: {true, Canceled}, ActRetry: {}, ActDelete: {true, Queued}},
		Running: {ActClaim: {}, ActProgress: {true, Running}, ActComplete: {true, Succeeded},
			ActFail: {true, Queued}, ActRescue: {true, Queued}, ActRelease: {true, Queued}, ActCancel: {true, Canceled}, ActRetry: {},
			ActDelete: {true, Running}},
		Succeeded: {ActClaim: {}, ActProgress: {}, ActComplete: {}, ActFail: {}, ActRescue: {}, ActRelease: {}, ActCancel: {},
			ActRetry: {}, ActDelete: {true, Succeeded}},
		Failed: {ActClaim: {}, ActProgress: {}, ActComplete: {}, ActFail: {}, ActRescue: {}, ActRelease: {}, ActCancel: {},
			ActRetry: {true, Queued}, ActDelete: {true, Failed}},
		Canceled: {ActClaim: {}, ActProgress: {}, ActComplete: {}, ActFail: {}, ActRescue: {}, ActRelease: {}, ActCancel: {},
			ActRetry: {true, Queued}, ActDelete: {true, Canceled}},
	}
	for _, s := range States {
		for _, a := range Actions {
			w, ok := matrix[s][a]
			if !ok {
				t.Fatalf("matrix lacks %s/%s", s, a)
			}
			t.Run(string(s)+"/"+string(a), func(t *testing.T) {
				j := base(s)
				got, err := apply(a, j)
				if !w.ok {
					if !errors.Is(err, ErrTransition) {
						t.Fatalf("want ErrTransition, got %v", err)
					}
					if got.Version != j.Version || got.State != s {
						t.Fatalf("refused transition changed the job: %+v", got)
					}
					return
				}
				if err != nil {
					t.Fatalf("legal transition refused: %v", err)
				}
				if got.State != w.to {
					t.Fatalf("state = %s, want %s", got.State, w.to)
				}
				if a != ActDelete && got.Version != j.Version+1 {
					t.Fatalf("version = %d, want %d", got.Version, j.Version+1)
				}
			})
		}
	}
}

func TestClaim(t *testing.T) {
	j := base(Queued)
	j.Attempt = 0
	got, err := onCopy(j, func(j *Job) error { return Claim(j, t0, "w1", "tok", time.Minute) })
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempt != 1 || got.LeaseToken != "tok" || !got.LeaseExpiresAt.Equal(t0.Add(time.Minute)) ||
		!got.StartedAt.Equal(t0) || got.Worker != "w1" {
		t.Fatalf("claim: %+v", got)
	}
	// A second attempt keeps the first start time.
	again, _ := onCopy(Job{State: Queued, StartedAt: t0.Add(-time.Hour), RunAt: t0}, func(j *Job) error { return Claim(j, t0, "w", "t", time.Minute) })
	if !again.StartedAt.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("started_at moved: %v", again.StartedAt)
	}
	// A delayed job is not claimable yet.
	j.RunAt = t0.Add(time.Second)
	if _, err := onCopy(j, func(j *Job) error { return Claim(j, t0, "w", "t", time.Minute) }); !errors.Is(err, ErrTransition) {
		t.Fatalf("delayed claim: %v", err)
	}
}

func TestFail(t *testing.T) {
	cases := []struct {
		name      string
		attempt   int
		max       int
		retryable bool
		want      State
	}{
		{"first of three", 1, 3, true, Queued},
		{"second of three", 2, 3, true, Queued},
		{"last attempt", 3, 3, true, Failed},
		{"single attempt", 1, 1, true, Failed},
		{"not retryable", 1, 3, false, Failed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := base(Running)
			j.Attempt, j.MaxAttempts, j.LeaseToken = c.attempt, c.max, "tok"
			got, err := onCopy(j, func(j *Job) error {
				return Fail(j, t0, Error{Message: "boom", Code: CodeHandler}, c.retryable, 5*time.Second, time.Hour)
			})
			if err != nil {
				t.Fatal(err)
			}
			if got.State != c.want {
				t.Fatalf("state %s, want %s", got.State, c.want)
			}
			if got.Error == nil || got.Error.Message != "boom" || got.LeaseToken != "" {
				t.Fatalf("error/lease not recorded: %+v", got)
			}
			switch c.want {
			case Queued:
				if !got.RunAt.Equal(t0.Add(5*time.Second)) || !got.FinishedAt.IsZero() {
					t.Fatalf("requeue: run_at %v finished %v", got.RunAt, got.FinishedAt)
				}
			case Failed:
				if !got.FinishedAt.Equal(t0) || !got.ExpiresAt.Equal(t0.Add(time.Hour)) {
					t.Fatalf("failed: finished %v expires %v", got.FinishedAt, got.ExpiresAt)
				}
			}
		})
	}
}

func TestRescueNeedsExpiredLease(t *testing.T) {
	j := base(Running)
	j.LeaseExpiresAt = t0.Add(time.Second)
	if _, err := onCopy(j, func(j *Job) error { return Rescue(j, t0, time.Second, time.Hour) }); !errors.Is(err, ErrTransition) {
		t.Fatalf("rescue of live lease: %v", err)
	}
	j.LeaseExpiresAt = t0.Add(-time.Second)
	got, err := onCopy(j, func(j *Job) error { return Rescue(j, t0, time.Second, time.Hour) })
	if err != nil || got.State != Queued || got.Error.Code != CodeLease {
		t.Fatalf("rescue: %+v %v", got, err)
	}
	j.Attempt = j.MaxAttempts
	got, _ = onCopy(j, func(j *Job) error { return Rescue(j, t0, time.Second, time.Hour) })
	if got.State != Failed {
		t.Fatalf("rescue after last attempt: %s", got.State)
	}
}

func TestReleaseDoesNotCountAttempt(t *testing.T) {
	j := base(Running)
	j.Attempt, j.MaxAttempts, j.LeaseToken, j.RunAt = 3, 3, "tok", t0.Add(-time.Hour)
	got, err := onCopy(j, func(j *Job) error {
		return Release(j, t0, Error{Message: "interrupted by shutdown", Code: CodeShutdown})
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != Queued || got.Attempt != 2 || got.LeaseToken != "" || !got.RunAt.Equal(t0) ||
		got.Error.Code != CodeShutdown || !got.FinishedAt.IsZero() {
		t.Fatalf("release: %+v", got)
	}
}

func TestRetryResets(t *testing.T) {
	j := base(Failed)
	j.Attempt = 3
	j.Error = &Error{Message: "x"}
	j.Result = &Blob{Size: 1}
	j.FinishedAt, j.ExpiresAt = t0, t0
	got, err := onCopy(j, func(j *Job) error { return Retry(j, t0) })
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempt != 0 || got.Error != nil || got.Result != nil || !got.FinishedAt.IsZero() ||
		!got.ExpiresAt.IsZero() || !got.RunAt.Equal(t0) {
		t.Fatalf("retry did not reset: %+v", got)
	}
}

func TestPercent(t *testing.T) {
	cases := []struct {
		p    Progress
		want float64
	}{
		{Progress{3, 17, ""}, 300.0 / 17},
		{Progress{0, 0, ""}, -1},
		{Progress{5, 0, ""}, -1},
		{Progress{20, 10, ""}, 100},
		{Progress{-1, 10, ""}, 0},
	}
	for _, c := range cases {
		if got := c.p.Percent(); got != c.want {
			t.Errorf("%+v: %v, want %v", c.p, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for attempt := 1; attempt <= 12; attempt++ {
		for range 50 {
			d := Backoff(attempt, time.Second, time.Minute)
			ceil := min(time.Second<<(attempt-1), time.Minute)
			if d < ceil/2 || d > ceil {
				t.Fatalf("attempt %d: %v not in [%v, %v]", attempt, d, ceil/2, ceil)
			}
		}
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	a := NewID()
	time.Sleep(2 * time.Millisecond)
	b := NewID()
	if !(a < b) {
		t.Fatalf("ids not time-ordered: %s !< %s", a, b)
	}
}

// onCopy runs a transition on a copy of j, as the stores do.
func onCopy(j Job, f func(*Job) error) (Job, error) {
	err := f(&j)
	return j, err
}
