package api

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/metrics"
)

// A job's event stream spends nearly all its life waiting. Served through
// net/http it holds, for as long as it is open, the connection's goroutine
// running the handler, net/http's background reader goroutine, a buffered
// reader and writer of 4 KiB each, the parsed request, and the handler's
// tickers and subscription: some 24 KiB of heap and two goroutine stacks per
// watcher, most of the server's memory with thousands of watchers.
//
// So on HTTP/1.x the handler takes the connection over (Hijack), writes the
// response head and the first event itself, and hands the connection to the
// Server's stream server: a few writer goroutines for every such stream, fed
// by callbacks of the hub that only note the latest change; one loop that
// sends the heartbeats and notices clients that went away; one that rereads
// the jobs from the store now and then. The handler then returns, and with
// it go its goroutines, buffers and request: an open stream is left with a
// small struct, its socket and its hub subscription.
//
// The response is the one net/http would send but for its framing: it has
// Connection: close and no chunked encoding, so that its body ends where
// the connection does. The body is byte for byte the same.
//
// A write never waits for a client: a socket that cannot take an event now
// is left to a goroutine of its own until it can (the events meanwhile are
// coalesced to the latest), or until the stall timeout, when the client is
// dropped.

// streamWriters is how many goroutines write the taken-over streams.
// Writes do not wait for sockets, so a few are enough for any number.
const streamWriters = 4

// recheckBatch is how many jobs the recheck reads from the store in a row
// before it pauses: the rereads of thousands of streams are spread over
// half the recheck interval, not bunched up.
const recheckBatch = 64

// streamTimings are the intervals of a stream server, set when it is made
// (tests shorten them).
type streamTimings struct {
	heartbeat time.Duration // keep-alive comments
	recheck   time.Duration // rereads of the jobs from the store
	stall     time.Duration // how long a client may leave its socket full
	probe     time.Duration // checks of whether a client went away
	sweep     time.Duration // the heartbeat loop's tick, its precision
}

func defaultStreamTimings() streamTimings {
	return streamTimings{
		heartbeat: heartbeatEvery,
		recheck:   recheckEvery,
		// A client that reads nothing for a minute, heartbeats included,
		// is gone or stuck; until then it may be merely slow.
		stall: time.Minute,
		// A gone client costs its socket and subscription until noticed.
		probe: 5 * time.Second,
		sweep: time.Second,
	}
}

// streamServer writes the event streams taken over from net/http.
//
// Its goroutines run while it has streams: they start with the first and
// stop after the last, so that a Server that is never closed (in tests)
// leaves none behind.
type streamServer struct {
	e       *engine.Engine
	log     *slog.Logger
	metrics *metrics.Metrics // counts the streams; nil: none
	// ctx bounds the store reads of the streams; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	t       streamTimings
	streams map[*jobStream]struct{}
	stop    chan struct{} // closed to stop the goroutines; nil while none run
	closed  bool
	// wg counts every goroutine of the stream server's: its loops and the
	// writes of stalled streams.
	wg sync.WaitGroup
	// stalled counts the streams whose write waits for their client.
	stalled atomic.Int32

	// The streams that have something to write, in order.
	qmu   sync.Mutex
	queue []*jobStream
	qhead int
	wake  chan struct{}
}

func (s *Server) streamServer() *streamServer { return s.streams }

func newStreamServer(e *engine.Engine, log *slog.Logger) *streamServer {
	ss := &streamServer{e: e, log: log, t: defaultStreamTimings(), streams: map[*jobStream]struct{}{},
		wake: make(chan struct{}, streamWriters)}
	ss.ctx, ss.cancel = context.WithCancel(context.Background())
	return ss
}

// Close ends the job event streams that the server took over from
// net/http: http.Server's Shutdown and Close do not know them. Call it
// once the HTTP server has shut down (a stream opened after Close is
// served through net/http); it returns when their goroutines have ended.
func (s *Server) Close() {
	s.streamServer().close()
}

func (ss *streamServer) close() {
	ss.mu.Lock()
	ss.closed = true
	list := make([]*jobStream, 0, len(ss.streams))
	for st := range ss.streams {
		list = append(list, st)
	}
	ss.mu.Unlock()
	ss.cancel()
	for _, st := range list {
		st.close()
	}
	ss.wg.Wait()
}

func (ss *streamServer) isClosed() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.closed
}

func (ss *streamServer) timings() streamTimings {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.t
}

// open reports how many streams are open.
func (ss *streamServer) open() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.streams)
}

// add registers st, starting the goroutines if it is the first; false if
// the stream server is closed.
func (ss *streamServer) add(st *jobStream) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return false
	}
	ss.streams[st] = struct{}{}
	ss.metrics.Stream(st.format.kind(), 1)
	now := time.Now()
	st.nextBeat = now.Add(ss.t.heartbeat)
	st.nextProbe = now.Add(ss.t.probe)
	if ss.stop == nil {
		stop, t := make(chan struct{}), ss.t
		ss.stop = stop
		for range streamWriters {
			ss.wg.Go(func() { ss.writer(stop, t) })
		}
		ss.wg.Go(func() { ss.sweep(stop, t) })
		ss.wg.Go(func() { ss.recheck(stop, t) })
	}
	return true
}

// remove forgets st, stopping the goroutines after the last stream.
func (ss *streamServer) remove(st *jobStream) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.streams[st]; ok {
		ss.metrics.Stream(st.format.kind(), -1)
	}
	delete(ss.streams, st)
	if len(ss.streams) == 0 && ss.stop != nil {
		close(ss.stop)
		ss.stop = nil
	}
}

// snapshot appends the open streams to list, or returns nil once stop is
// no longer the current one: a loop of a stopped generation must not reach
// the streams of the next.
func (ss *streamServer) snapshot(list []*jobStream, stop chan struct{}) []*jobStream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.stop != stop {
		return nil
	}
	for st := range ss.streams {
		list = append(list, st)
	}
	return list
}

// enqueue queues st for a writer. It never blocks: it runs in the hub's
// callbacks.
func (ss *streamServer) enqueue(st *jobStream) {
	ss.qmu.Lock()
	if ss.qhead > 1024 && ss.qhead > len(ss.queue)/2 {
		// Under a steady load the queue may never run empty: reclaim
		// its consumed head now and then.
		n := copy(ss.queue, ss.queue[ss.qhead:])
		clear(ss.queue[n:])
		ss.queue, ss.qhead = ss.queue[:n], 0
	}
	ss.queue = append(ss.queue, st)
	ss.qmu.Unlock()
	select {
	case ss.wake <- struct{}{}:
	default: // every writer has a wake-up pending: one of them takes st
	}
}

func (ss *streamServer) dequeue() *jobStream {
	ss.qmu.Lock()
	defer ss.qmu.Unlock()
	if ss.qhead == len(ss.queue) {
		return nil
	}
	st := ss.queue[ss.qhead]
	ss.queue[ss.qhead] = nil
	ss.qhead++
	if ss.qhead == len(ss.queue) {
		ss.queue, ss.qhead = ss.queue[:0], 0
	}
	return st
}

// writer writes the queued streams until the goroutines stop. It does not
// watch the stop channel while the queue has streams: every stream then
// is closed, and flushing a closed one costs nothing.
func (ss *streamServer) writer(stop chan struct{}, t streamTimings) {
	var buf []byte
	for {
		select {
		case <-stop:
			return
		case <-ss.wake:
		}
		for st := ss.dequeue(); st != nil; st = ss.dequeue() {
			buf = st.flush(buf[:0], t)
			if cap(buf) > 1<<16 {
				buf = nil // one large job need not stay in memory
			}
		}
	}
}

// sweep sends the heartbeats, each stream's every t.heartbeat from its
// opening, and probes each stream's socket every t.probe for a client that
// went away: without a reader on the connection, nothing else would notice
// before the next write fails.
func (ss *streamServer) sweep(stop chan struct{}, t streamTimings) {
	tick := time.NewTicker(t.sweep)
	defer tick.Stop()
	var list []*jobStream
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			list = ss.snapshot(list[:0], stop)
			for _, st := range list {
				if !now.Before(st.nextBeat) {
					st.nextBeat = now.Add(t.heartbeat)
					st.heartbeat()
				}
				if !now.Before(st.nextProbe) {
					st.nextProbe = now.Add(t.probe)
					if clientGone(st.conn, st.raw) {
						st.close()
					}
				}
			}
			clear(list)
		}
	}
}

// recheck rereads every stream's job each t.recheck, to catch the changes
// that other processes sharing the store made without telling this one.
func (ss *streamServer) recheck(stop chan struct{}, t streamTimings) {
	tick := time.NewTicker(t.recheck)
	defer tick.Stop()
	pause := time.NewTimer(0)
	defer pause.Stop()
	var list []*jobStream
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		list = ss.snapshot(list[:0], stop)
		batches := (len(list) + recheckBatch - 1) / recheckBatch
		var gap time.Duration
		if batches > 1 {
			gap = t.recheck / 2 / time.Duration(batches)
		}
		for i := 0; i < len(list); i += recheckBatch {
			if i > 0 {
				pause.Reset(gap)
				select {
				case <-stop:
					clear(list)
					return
				case <-pause.C:
				}
			}
			for _, st := range list[i:min(i+recheckBatch, len(list))] {
				st.recheck(ss.ctx)
			}
		}
		clear(list)
	}
}

// jobStream is one job's event stream on a connection taken over from
// net/http.
type jobStream struct {
	srv    *streamServer
	conn   net.Conn
	raw    syscall.RawConn // nil where the conn has no descriptor (TLS)
	sub    *engine.Subscription
	id     string
	format streamFormat

	// Where the stream is: owned by whoever writes it, the handler until
	// the stream is added, then a writer or the goroutine of a stalled
	// write; the busy flag hands it from one to the next.
	sent     int64     // the version last sent
	state    job.State // the state last sent
	position int64     // the queue position last sent (json-array)
	n        int       // elements written (json-array)

	// Owned by the sweep.
	nextBeat, nextProbe time.Time

	mu sync.Mutex
	// next is the newest change not yet written; fresh if it was read
	// from the store, with the job's queue position.
	next   *job.Job
	fresh  bool
	beat   bool // a heartbeat is due
	ending bool // the job is gone: end the stream
	active bool // added to the stream server: changes go to its writers
	busy   bool // queued for a writer, being written, or stalled
	closed bool
}

// notify takes the hub's events. It must not block.
func (st *jobStream) notify(ev engine.Event) {
	st.mu.Lock()
	switch {
	case ev.Deleted:
		st.ending = true
	case ev.Job == nil:
		st.mu.Unlock()
		return
	case st.next == nil || ev.Version > st.next.Version:
		st.next, st.fresh = ev.Job, false
	}
	st.kickLocked()
}

// kickLocked queues the stream for a writer unless one has it already,
// and unlocks st.mu.
func (st *jobStream) kickLocked() {
	kick := st.active && !st.busy && !st.closed
	if kick {
		st.busy = true
	}
	st.mu.Unlock()
	if kick {
		st.srv.enqueue(st)
	}
}

func (st *jobStream) heartbeat() {
	if st.format == formatArray {
		return
	}
	st.mu.Lock()
	if st.busy {
		// Being written or stalled: no need to prove the connection
		// alive, and a stalled one must not be queued.
		st.mu.Unlock()
		return
	}
	st.beat = true
	st.kickLocked()
}

// recheck rereads the job from the store.
func (st *jobStream) recheck(ctx context.Context) {
	st.mu.Lock()
	closed := st.closed
	st.mu.Unlock()
	if closed {
		return
	}
	j, err := st.srv.e.Store().Get(ctx, st.id)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		// Deleted, or the store is gone: end the stream, as a stream
		// served through net/http does.
		st.mu.Lock()
		st.ending = true
		st.kickLocked()
		return
	}
	st.mu.Lock()
	if st.next == nil || j.Version >= st.next.Version {
		st.next, st.fresh = j, true
	}
	st.kickLocked()
}

// flush writes what st has pending; it runs on a writer, which reuses buf.
func (st *jobStream) flush(buf []byte, t streamTimings) []byte {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return buf
	}
	next, fresh, beat, ending := st.next, st.fresh, st.beat, st.ending
	st.next, st.fresh, st.beat = nil, false, false
	st.mu.Unlock()

	done := ending
	if next != nil {
		var end bool
		buf, end = st.appendChange(buf, next, fresh)
		done = done || end
	}
	if beat && !done {
		buf = appendHeartbeat(buf, st.format)
	}
	if done {
		buf = appendEnd(buf, st.format)
	}
	if len(buf) > 0 {
		n, err := writeNow(st.conn, st.raw, buf)
		if errors.Is(err, errWouldBlock) {
			st.stall(bytes.Clone(buf[n:]), done, t)
			return buf
		}
		if err != nil {
			st.close()
			return buf
		}
	}
	if done {
		st.close()
		return buf
	}
	st.release()
	return buf
}

// appendChange appends the event of a change to j, if it is one to send,
// and reports whether the stream ends with it. It decides as the loop of
// serveJobEvents does.
func (st *jobStream) appendChange(buf []byte, j *job.Job, fresh bool) ([]byte, bool) {
	switch {
	case j.Version > st.sent:
		if st.format == formatArray && j.State == job.Queued && !fresh {
			if got, err := st.srv.e.Store().Get(st.srv.ctx, j.ID); err == nil {
				j = got // with its position
			}
		}
		var err error
		buf, err = st.emit(buf, j)
		return buf, err != nil || j.State.Terminal()
	case fresh && st.format == formatArray && j.State == job.Queued && j.Position != st.position && j.Version == st.sent:
		// Only the array format reports the queue position as it
		// moves; the others follow versions.
		b, err := appendEvent(buf, st.format, "progress", j, st.n)
		st.n++
		st.position = j.Position
		return b, err != nil
	}
	return buf, false
}

// emit appends the event of j: a state event if the state changed.
func (st *jobStream) emit(buf []byte, j *job.Job) ([]byte, error) {
	kind := "progress"
	if j.State != st.state {
		kind = "state"
	}
	st.state, st.sent, st.position = j.State, j.Version, j.Position
	b, err := appendEvent(buf, st.format, kind, j, st.n)
	st.n++
	return b, err
}

// stall leaves the rest of a write that the socket could not take to a
// goroutine that waits for the client, at most t.stall: the writers go on
// with the other streams, and this one's changes are coalesced meanwhile.
func (st *jobStream) stall(rest []byte, done bool, t streamTimings) {
	st.srv.stalled.Add(1)
	st.srv.wg.Go(func() {
		defer st.srv.stalled.Add(-1)
		st.conn.SetWriteDeadline(time.Now().Add(t.stall))
		_, err := st.conn.Write(rest)
		st.conn.SetWriteDeadline(time.Time{})
		if err != nil {
			st.srv.log.Debug("event stream dropped: the client does not read", "job", st.id, "err", err)
		}
		if err != nil || done {
			st.close()
			return
		}
		st.release()
	})
}

// release ends a writer's turn: the stream goes back to the queue if
// something came meanwhile.
func (st *jobStream) release() {
	st.mu.Lock()
	more := !st.closed && (st.next != nil || st.beat || st.ending)
	if !more {
		st.busy = false
	}
	st.mu.Unlock()
	if more {
		st.srv.enqueue(st)
	}
}

// close ends the stream: its subscription, its connection, its place in
// the stream server (if it has one). It may be called more than once, from
// anywhere but the hub's callbacks.
func (st *jobStream) close() {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	st.closed = true
	st.next = nil
	st.mu.Unlock()
	st.sub.Close()
	closeConn(st.conn, st.raw)
	st.srv.remove(st)
}

// closeConn closes a taken-over connection, first reading what the client
// sent: closing a socket with unread input resets the connection, and the
// client might lose the end of the stream.
func closeConn(c net.Conn, raw syscall.RawConn) {
	if raw != nil {
		clientGone(c, raw)
	}
	c.Close()
}

// takeOver serves the stream of j on the connection of r, taken over from
// net/http, and reports whether it did; if not (HTTP/2, a ResponseWriter
// that cannot hijack, a closed stream server), nothing was written and
// the caller serves the stream through net/http.
func (s *Server) takeOver(w http.ResponseWriter, r *http.Request, j *job.Job, format streamFormat) bool {
	if r.ProtoMajor != 1 || r.Method != http.MethodGet || r.ContentLength != 0 {
		return false
	}
	ss := s.streamServer()
	if ss.isClosed() {
		return false
	}
	st := &jobStream{srv: ss, id: j.ID, format: format}
	st.sub = s.e.Hub().SubscribeJobFunc(j.ID, st.notify)
	// Read again now that changes are caught by the subscription.
	cur, err := s.e.Store().Get(r.Context(), j.ID)
	if err != nil {
		st.sub.Close()
		s.fail(w, r, err)
		return true
	}
	setStreamHeaders(w.Header(), format)
	head := responseHead(w.Header(), r)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		st.sub.Close()
		return false
	}
	// Nothing is left to net/http: what its writer may hold goes out now,
	// and its buffers are dropped with the handler's return.
	if brw.Writer.Buffered() > 0 {
		brw.Flush()
	}
	conn.SetDeadline(time.Time{})
	st.conn, st.raw = conn, rawConnOf(conn)
	// Added before the first write, so that the stream counts as open as
	// soon as its client sees it; it gets no writer until it is active. A
	// stream server closed meanwhile (the server is stopping) gets the
	// connection closed at once.
	if !cur.State.Terminal() && !ss.add(st) {
		st.close()
		return true
	}

	b := head
	if format == formatArray {
		b = append(b, '[')
	}
	// The first event, decided as serveJobEvents does.
	st.sent = lastEventID(r)
	done := cur.State.Terminal()
	if format == formatArray || cur.Version > st.sent || cur.State.Terminal() && st.sent < 0 {
		b, err = st.emit(b, cur)
		done = done || err != nil
	} else {
		st.state, st.position = cur.State, cur.Position
	}
	if done {
		b = appendEnd(b, format)
	}
	t := ss.timings()
	conn.SetWriteDeadline(time.Now().Add(t.stall))
	_, err = conn.Write(b)
	conn.SetWriteDeadline(time.Time{})
	if err != nil || done {
		st.close()
		return true
	}
	// The changes noted since the subscription now go to the writers.
	st.mu.Lock()
	st.active = true
	if st.next == nil && !st.ending && !st.beat {
		st.mu.Unlock()
		return true
	}
	st.kickLocked()
	return true
}

// responseHead is the status line and header of a taken-over stream's
// response: h, with the framing of a body that ends with the connection.
func responseHead(h http.Header, r *http.Request) []byte {
	h = h.Clone()
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	h.Set("Connection", "close")
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	var b bytes.Buffer
	if r.ProtoAtLeast(1, 1) {
		b.WriteString("HTTP/1.1 200 OK\r\n")
	} else {
		b.WriteString("HTTP/1.0 200 OK\r\n")
	}
	h.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// errWouldBlock is writeNow's answer when the socket is full.
var errWouldBlock = errors.New("api: the socket is full")

// rawConnOf returns access to c's descriptor, or nil.
func rawConnOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// writeNow writes as much of b as the socket takes at once: n, and
// errWouldBlock if that was not all. Without a descriptor it waits a
// moment, the least a write deadline allows.
func writeNow(c net.Conn, raw syscall.RawConn, b []byte) (int, error) {
	if raw != nil && haveRawIO {
		return rawWrite(raw, b)
	}
	c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	n, err := c.Write(b)
	c.SetWriteDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, errWouldBlock
	}
	return n, err
}

// clientGone reports whether the client closed its side of the
// connection, reading and dropping whatever it sent (a stream's client
// has nothing to say). Without a descriptor it cannot tell: a gone client
// is then noticed when a heartbeat fails.
func clientGone(c net.Conn, raw syscall.RawConn) bool {
	if raw == nil || !haveRawIO {
		return false
	}
	return rawGone(raw)
}
