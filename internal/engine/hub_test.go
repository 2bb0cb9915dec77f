package engine_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/docket/docket/internal/engine"
)

// A function subscription to a job sees its versions in increasing order,
// never a stale one, always its deletion, and nothing once closed.
func TestSubscribeJobFunc(t *testing.T) {
	h := engine.NewHub()
	var mu sync.Mutex
	var got []string
	sub := h.SubscribeJobFunc("a", func(ev engine.Event) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprintf("%d%v", ev.Version, map[bool]string{true: "x"}[ev.Deleted]))
	})
	other := h.SubscribeJob("a")
	all := h.Subscribe(nil)
	if n := h.Subscribers(); n != 3 {
		t.Fatalf("%d subscribers, want 3", n)
	}
	for _, v := range []int64{2, 1, 3, 3, 5, 4} {
		h.Publish(engine.Event{JobID: "a", Version: v})
	}
	h.Publish(engine.Event{JobID: "b", Version: 9})
	h.Publish(engine.Event{JobID: "a", Version: 5, Deleted: true})
	sub.Close()
	h.Publish(engine.Event{JobID: "a", Version: 6})
	mu.Lock()
	if fmt.Sprint(got) != "[2 3 5 5x]" {
		t.Fatalf("delivered %v, want [2 3 5 5x]", got)
	}
	mu.Unlock()
	other.Close()
	all.Close()
	if n := h.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after Close, want 0", n)
	}
}

// Publishers racing on one job call a function subscription one at a
// time, in increasing version.
func TestSubscribeJobFuncConcurrent(t *testing.T) {
	h := engine.NewHub()
	var last int64
	calls := 0
	inside := false
	sub := h.SubscribeJobFunc("a", func(ev engine.Event) {
		if inside {
			t.Error("called while another call runs")
		}
		inside = true
		if ev.Version <= last {
			t.Errorf("version %d after %d", ev.Version, last)
		}
		last = ev.Version
		calls++
		inside = false
	})
	defer sub.Close()
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for v := int64(p); v < 4000; v += 4 {
				h.Publish(engine.Event{JobID: "a", Version: v + 1})
			}
		})
	}
	wg.Wait()
	if calls == 0 || last != 4000 {
		t.Fatalf("%d calls, last version %d; want the last one, 4000", calls, last)
	}
}
