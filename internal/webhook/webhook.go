// Package webhook tells jobs' webhook URLs of their changes. It listens to
// the engine's hub, turns the events a job asked for into deliveries kept in
// the store, and sends them, signed, retrying with backoff until the
// receiver answers 2xx or the retry budget runs out. Because deliveries are
// stored before they are sent, one still pending when docket stops is sent
// after it starts again.
//
// A delivery is recorded when the hub announces the change, just after the
// store committed it. A crash in between (a few microseconds, in which the
// job's new state is committed but not yet announced) loses that delivery;
// the job itself is intact and can be read with GET /v1/jobs/{id}.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/metrics"
	"github.com/docket/docket/internal/store"
)

// Options configure a Worker. Zero values take the documented defaults.
type Options struct {
	Store store.Store
	Hub   *engine.Hub
	// Metrics counts the delivery attempts; nil keeps none.
	Metrics *metrics.Metrics
	// Marshal renders the body of a delivery: the job as the API shows it.
	Marshal func(*job.Job) ([]byte, error)
	Secret  []byte
	// AllowPrivate lets deliveries reach loopback, private, link-local and
	// other internal addresses.
	AllowPrivate bool
	Logger       *slog.Logger
	// MaxAttempts (default 20) and MaxAge (default 24h) bound the retries
	// of one delivery.
	MaxAttempts int
	MaxAge      time.Duration
	// ProgressEvery is the least time between two progress deliveries of
	// one job (default 500ms); reports in between are coalesced, the
	// latest wins.
	ProgressEvery time.Duration
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration
	// BackoffBase and BackoffMax bound the delay between attempts
	// (default 1s doubling up to 1m).
	BackoffBase, BackoffMax time.Duration
	// Poll is the longest a due delivery waits to be noticed (default 1s);
	// deliveries recorded here and retries scheduled here are noticed at
	// once.
	Poll time.Duration
	// Concurrency is how many deliveries are sent at once (default 8).
	Concurrency int
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 20
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 500 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
}

// maxResponse is how much of a receiver's answer is read: enough to reuse
// the connection, not enough for a hostile receiver to matter.
const maxResponse = 64 << 10

// Worker records and sends deliveries.
type Worker struct {
	o      Options
	log    *slog.Logger
	client *http.Client

	mu       sync.Mutex
	pending  []store.Delivery     // recorded, not yet written
	progress map[string]*progress // job id → coalescing state
	seen     map[string]seenJob   // job id → last version handled
	wake     chan struct{}        // to the writer
	poke     chan struct{}        // to the sender
	nextAt   time.Time            // earliest retry scheduled by this sender

	sub    *engine.Subscription
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type progress struct {
	last    time.Time       // when the last progress delivery was recorded
	pending *store.Delivery // the latest report not recorded yet
}

type seenJob struct {
	version int64
	ended   time.Time // set once terminal; the entry is dropped later
}

// New returns a worker; Start runs it.
func New(o Options) (*Worker, error) {
	if o.Store == nil || o.Hub == nil || o.Marshal == nil {
		return nil, errors.New("webhook: store, hub and marshal are required")
	}
	if len(o.Secret) == 0 {
		return nil, errors.New("webhook: empty secret")
	}
	o.defaults()
	w := &Worker{o: o, log: o.Logger, progress: map[string]*progress{}, seen: map[string]seenJob{},
		wake: make(chan struct{}, 1), poke: make(chan struct{}, 1)}
	dialer := &net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}
	if !o.AllowPrivate {
		dialer.Control = control
	}
	w.client = &http.Client{
		Transport: &http.Transport{
			// No proxy: the address checks must apply to the receiver, not
			// to a proxy that would then reach anything.
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   o.Timeout,
			ResponseHeaderTimeout: o.Timeout,
		},
		Timeout: o.Timeout,
		// A redirect is an answer that is not 2xx: followed, it could send
		// the signed body somewhere the submitter did not name.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return w, nil
}

// Start subscribes to the hub and starts sending, including deliveries left
// pending by a previous run.
func (w *Worker) Start() {
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.sub = w.o.Hub.Subscribe(func(e engine.Event) bool {
		// A change made by another node is that node's to report.
		return !e.Deleted && !e.Remote && e.Job != nil && e.Job.Webhook != ""
	})
	w.wg.Add(3)
	go w.collect()
	go w.write()
	go w.send()
}

// Stop stops listening, writes the deliveries recorded so far, and waits for
// the sends in flight (each bounded by the timeout). Those not sent stay
// stored for the next start. Stop the engine first, so that the changes of
// its last jobs are recorded.
func (w *Worker) Stop(ctx context.Context) error {
	w.once.Do(func() {
		if w.cancel == nil {
			return
		}
		w.sub.Close()
		// Events already in the subscription are still recorded.
		w.drainSub()
		w.cancel()
	})
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("webhook: stop: %w", ctx.Err())
	}
}

func (w *Worker) drainSub() {
	for {
		select {
		case e := <-w.sub.C():
			w.handle(e, time.Now())
		default:
			return
		}
	}
}

// eventOf maps a job's change to the webhook event it is, if any.
func eventOf(j *job.Job) string {
	switch j.State {
	case job.Running:
		// A claim sets started_at and updated_at together, the first
		// time only.
		if !j.StartedAt.IsZero() && j.UpdatedAt.Equal(j.StartedAt) {
			return EventStarted
		}
		return EventProgress
	case job.Succeeded:
		return EventCompleted
	case job.Failed:
		return EventFailed
	case job.Canceled:
		return EventCanceled
	}
	return ""
}

func wants(j *job.Job, event string) bool {
	if len(j.WebhookEvents) == 0 {
		return slices.Contains(DefaultEvents, event)
	}
	return slices.Contains(j.WebhookEvents, event)
}

func (w *Worker) collect() {
	defer w.wg.Done()
	for {
		select {
		case <-w.ctx.Done():
			return
		case e := <-w.sub.C():
			w.handle(e, time.Now())
		}
	}
}

// handle records what event e means for the job's webhook.
func (w *Worker) handle(e engine.Event, now time.Time) {
	j := e.Job
	event := eventOf(j)
	w.mu.Lock()
	defer w.mu.Unlock()
	// Publishers race, so events of one job may come out of order; an
	// older one than already handled would report a state that is gone.
	if s, ok := w.seen[j.ID]; ok && j.Version <= s.version {
		return
	}
	s := seenJob{version: j.Version}
	if j.State.Terminal() {
		s.ended = now
		delete(w.progress, j.ID)
	}
	w.seen[j.ID] = s
	if event == "" || !wants(j, event) {
		return
	}
	body, err := w.o.Marshal(j)
	if err != nil {
		w.log.Error("webhook: rendering the job", "job", j.ID, "event", event, "err", err)
		return
	}
	d := store.Delivery{JobID: j.ID, URL: j.Webhook, Event: event, Body: body}
	if event == EventProgress {
		p := w.progress[j.ID]
		if p == nil {
			p = &progress{}
			w.progress[j.ID] = p
		}
		p.pending = &d
	} else {
		if event == EventStarted {
			// Started covers the state at that moment; a progress
			// delivery right behind it would say nothing new.
			p := w.progress[j.ID]
			if p == nil {
				p = &progress{}
				w.progress[j.ID] = p
			}
			p.last, p.pending = now, nil
		}
		w.pending = append(w.pending, d)
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take returns the deliveries to write now and when to look again for
// coalesced progress.
func (w *Worker) take(now time.Time) ([]store.Delivery, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.pending
	w.pending = nil
	next := time.Duration(-1)
	for id, p := range w.progress {
		if p.pending == nil {
			if now.Sub(p.last) > w.o.ProgressEvery {
				delete(w.progress, id)
			}
			continue
		}
		if due := p.last.Add(w.o.ProgressEvery); !now.Before(due) {
			out = append(out, *p.pending)
			p.last, p.pending = now, nil
		} else if wait := due.Sub(now); next < 0 || wait < next {
			next = wait
		}
	}
	for id, s := range w.seen {
		// Late events of a finished job come within moments of its end.
		if !s.ended.IsZero() && now.Sub(s.ended) > time.Minute {
			delete(w.seen, id)
		}
	}
	return out, next
}

// write stores recorded deliveries, progress at its pace.
func (w *Worker) write() {
	defer w.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		stopping := false
		select {
		case <-w.ctx.Done():
			stopping = true
		case <-w.wake:
		case <-timer.C:
		}
		ds, next := w.take(time.Now())
		if len(ds) > 0 {
			// Not w.ctx: what was recorded is written even while stopping.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := w.o.Store.AddDeliveries(ctx, ds)
			cancel()
			if err != nil {
				w.log.Error("webhook: storing deliveries: they are lost", "count", len(ds), "err", err)
			} else {
				select {
				case w.poke <- struct{}{}:
				default:
				}
			}
		}
		if stopping {
			return
		}
		if next < 0 {
			next = time.Hour
		}
		timer.Reset(next)
	}
}

// lease is how long a delivery handed to this sender is not handed out
// again: longer than an attempt can take.
func (w *Worker) lease() time.Duration { return 3*w.o.Timeout + 5*time.Second }

func (w *Worker) send() {
	defer w.wg.Done()
	sem := make(chan struct{}, w.o.Concurrency)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	tails := map[string]chan struct{}{} // job id → its last delivery started, done when closed
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.poke:
		case <-timer.C:
		}
		// Take only what free senders can start, so that nothing waits
		// out its lease in this process's queue.
		free := w.o.Concurrency - len(sem)
		var ds []store.Delivery
		if free > 0 {
			var err error
			ds, err = w.o.Store.DueDeliveries(w.ctx, time.Now(), free, w.lease())
			if err != nil && w.ctx.Err() == nil {
				w.log.Error("webhook: reading due deliveries", "err", err)
			}
		}
		for id, done := range tails {
			select {
			case <-done:
				delete(tails, id)
			default:
			}
		}
		for _, d := range ds {
			// A job's deliveries go out in the order they were recorded
			// (started before completed): each waits for the one before
			// it of the same job, while other jobs' go out in parallel.
			prev := tails[d.JobID]
			done := make(chan struct{})
			tails[d.JobID] = done
			sem <- struct{}{}
			inflight.Add(1)
			go func() {
				defer func() {
					close(done)
					<-sem
					inflight.Done()
					select {
					case w.poke <- struct{}{}:
					default:
					}
				}()
				if prev != nil {
					<-prev
				}
				w.deliver(d)
			}()
		}
		wait := w.o.Poll
		w.mu.Lock()
		if !w.nextAt.IsZero() {
			if until := time.Until(w.nextAt); until < wait {
				wait = max(until, 0)
			}
			if !w.nextAt.After(time.Now()) {
				w.nextAt = time.Time{}
			}
		}
		w.mu.Unlock()
		if len(ds) == free && free > 0 {
			wait = 0 // there may be more due
		}
		timer.Reset(wait)
	}
}

// deliver makes one attempt and settles the delivery.
func (w *Worker) deliver(d store.Delivery) {
	err := w.post(d)
	// Settle even while stopping: the attempt was made.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := w.log.With("delivery", d.ID, "job", d.JobID, "event", d.Event, "url", redact(d.URL), "attempt", d.Attempt+1)
	if err == nil {
		w.o.Metrics.Webhook("delivered")
		if err := w.o.Store.DeliveryDone(ctx, d.ID); err != nil {
			log.Error("webhook: delivered, but not recorded so: it may be sent again", "err", err)
		}
		return
	}
	now := time.Now()
	if d.Attempt+1 >= w.o.MaxAttempts || now.Sub(d.CreatedAt) >= w.o.MaxAge {
		w.o.Metrics.Webhook("dropped")
		log.Warn("webhook: delivery failed for good, dropped", "err", err)
		if err := w.o.Store.DeliveryDone(ctx, d.ID); err != nil {
			log.Error("webhook: dropping a delivery", "err", err)
		}
		return
	}
	w.o.Metrics.Webhook("retry")
	next := now.Add(w.backoff(d.Attempt))
	var refused *RefusedError
	if errors.As(err, &refused) {
		log.Warn("webhook: delivery refused, not sent; will retry", "err", refused, "next", next)
	} else {
		log.Warn("webhook: delivery failed; will retry", "err", err, "next", next)
	}
	if err := w.o.Store.DeliveryRetry(ctx, d.ID, next); err != nil {
		log.Error("webhook: scheduling a retry", "err", err)
		return
	}
	w.mu.Lock()
	if w.nextAt.IsZero() || next.Before(w.nextAt) {
		w.nextAt = next
	}
	w.mu.Unlock()
}

func (w *Worker) backoff(attempt int) time.Duration {
	d := w.o.BackoffBase
	for range attempt {
		d *= 2
		if d >= w.o.BackoffMax {
			return w.o.BackoffMax
		}
	}
	return min(d, w.o.BackoffMax)
}

// post sends one attempt; nil means the receiver took it (2xx).
func (w *Worker) post(d store.Delivery) error {
	// Not w.ctx: an attempt under way at Stop is finished, not counted
	// as a failure for being cut short.
	ctx, cancel := context.WithTimeout(context.Background(), w.o.Timeout)
	defer cancel()
	if err := CheckURL(d.URL); err != nil {
		return fmt.Errorf("url: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "docket-webhook/1")
	req.Header.Set("Docket-Event", d.Event)
	req.Header.Set("Docket-Delivery", d.ID)
	req.Header.Set("Docket-Signature", Sign(w.o.Secret, time.Now(), d.Body))
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return nil
}

// redact keeps a URL's query, which may hold a receiver's token, out of
// logs.
func redact(raw string) string {
	for i := 0; i < len(raw); i++ {
		if raw[i] == '?' {
			return raw[:i] + "?…"
		}
	}
	return raw
}
