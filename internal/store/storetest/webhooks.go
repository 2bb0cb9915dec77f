package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/docket/docket/internal/store"
)

// testWebhookJob: a job's webhook survives every transition and every way
// of reading the job back, since deliveries are decided from whichever copy
// the caller has at hand.
func testWebhookJob(t *testing.T, o opener) {
	h := o.h(t)
	q := h.queue()
	nj := newJob(q)
	nj.Webhook = "https://example.com/hook?x=1"
	nj.WebhookEvents = []string{"started", "completed"}
	j := h.addOne(nj)
	if j.Webhook != nj.Webhook || !slices.Equal(j.WebhookEvents, nj.WebhookEvents) {
		t.Fatalf("Insert: webhook %q %v, want %q %v", j.Webhook, j.WebhookEvents, nj.Webhook, nj.WebhookEvents)
	}
	sameJob(t, "Get after insert", h.get(j.ID), j)
	c := h.claimID(q, j.ID, longLease)
	if c.Webhook != nj.Webhook || !slices.Equal(c.WebhookEvents, nj.WebhookEvents) {
		t.Errorf("Claim: webhook %q %v", c.Webhook, c.WebhookEvents)
	}
	done := h.complete(c, outcome())
	if done.Webhook != nj.Webhook || !slices.Equal(done.WebhookEvents, nj.WebhookEvents) {
		t.Errorf("Complete: webhook %q %v", done.Webhook, done.WebhookEvents)
	}
	if l := h.list(store.Filter{Queue: q}); len(l) != 1 || l[0].Webhook != nj.Webhook {
		t.Errorf("List: %v", l)
	}
	plain := h.addOne(newJob(q))
	if plain.Webhook != "" || plain.WebhookEvents != nil {
		t.Errorf("job without webhook: %q %v", plain.Webhook, plain.WebhookEvents)
	}
	if g := h.get(plain.ID); g.Webhook != "" || g.WebhookEvents != nil {
		t.Errorf("Get of a job without webhook: %q %v", g.Webhook, g.WebhookEvents)
	}
}

// testDeliveries: deliveries come out when due, in creation order, with
// their bytes intact; a retry counts the attempt and delays; done removes.
func testDeliveries(t *testing.T, o opener) {
	h := o.h(t)
	ctx := h.ctx
	before := time.Now()
	later := before.Add(time.Hour)
	ds := []store.Delivery{
		{JobID: "j1", URL: "http://a/", Event: "completed", Body: []byte(`{"id":"j1"}`)},
		{JobID: "j2", URL: "http://b/", Event: "failed", Body: []byte{0, 1, 2}},
		{JobID: "j3", URL: "http://c/", Event: "progress", Body: []byte("x"), NextAt: later},
	}
	if err := h.s.AddDeliveries(ctx, ds); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.ID == "" {
			t.Fatalf("AddDeliveries left an empty id")
		}
	}
	if ds[0].ID == ds[1].ID {
		t.Fatalf("two deliveries share id %s", ds[0].ID)
	}
	if err := h.s.AddDeliveries(ctx, nil); err != nil {
		t.Fatalf("AddDeliveries(nil): %v", err)
	}
	now := time.Now()
	got, err := h.s.DueDeliveries(ctx, now, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != ds[0].ID || got[1].ID != ds[1].ID {
		t.Fatalf("DueDeliveries = %v, want the first two", got)
	}
	for i, d := range got {
		want := ds[i]
		if d.JobID != want.JobID || d.URL != want.URL || d.Event != want.Event || string(d.Body) != string(want.Body) || d.Attempt != 0 {
			t.Errorf("delivery %d = %+v, want %+v", i, d, want)
		}
		between(t, "CreatedAt", d.CreatedAt, before, now)
	}
	// Handed out: not due again within the lease.
	if again, err := h.s.DueDeliveries(ctx, now, 10, time.Minute); err != nil || len(again) != 0 {
		t.Fatalf("DueDeliveries during the lease = %v, %v; want none", again, err)
	}
	if err := h.s.DeliveryRetry(ctx, got[0].ID, now); err != nil {
		t.Fatal(err)
	}
	if err := h.s.DeliveryDone(ctx, got[1].ID); err != nil {
		t.Fatal(err)
	}
	if err := h.s.DeliveryDone(ctx, got[1].ID); err != nil {
		t.Errorf("DeliveryDone of a removed delivery: %v", err)
	}
	if err := h.s.DeliveryRetry(ctx, got[1].ID, now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeliveryRetry of a removed delivery: %v, want ErrNotFound", err)
	}
	got, err = h.s.DueDeliveries(ctx, now.Add(time.Millisecond), 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != ds[0].ID || got[0].Attempt != 1 {
		t.Fatalf("after retry: %+v, want %s at attempt 1", got, ds[0].ID)
	}
	got, err = h.s.DueDeliveries(ctx, later.Add(2*time.Minute), 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != ds[0].ID {
		t.Fatalf("limit 1 much later: %+v, want the oldest, %s", got, ds[0].ID)
	}
	if n, err := h.s.DueDeliveries(ctx, now, 0, time.Minute); err != nil || len(n) != 0 {
		t.Errorf("limit 0: %v, %v", n, err)
	}
}

// testDeliveryLease: a delivery handed out and never settled (its sender
// died) is due again once its lease ran out.
func testDeliveryLease(t *testing.T, o opener) {
	h := o.h(t)
	d := []store.Delivery{{JobID: "j", URL: "http://a/", Event: "completed", Body: []byte("{}")}}
	if err := h.s.AddDeliveries(h.ctx, d); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if got, err := h.s.DueDeliveries(h.ctx, now, 5, time.Second); err != nil || len(got) != 1 {
		t.Fatalf("first: %v, %v", got, err)
	}
	if got, err := h.s.DueDeliveries(h.ctx, now.Add(500*time.Millisecond), 5, time.Second); err != nil || len(got) != 0 {
		t.Fatalf("within the lease: %v, %v", got, err)
	}
	got, err := h.s.DueDeliveries(h.ctx, now.Add(2*time.Second), 5, time.Second)
	if err != nil || len(got) != 1 || got[0].ID != d[0].ID || got[0].Attempt != 0 {
		t.Fatalf("after the lease: %+v, %v", got, err)
	}
}
