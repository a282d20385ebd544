package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/failpoint"
	"github.com/workos-emailer/workos-emailer/store"
)

// The delivery pipeline runs in four parts, so that no stage waits for another without need:
//
//   - the fetcher lists pages of events (and the operator's retry queue) and hands them over,
//     asking for the next page while the current one is still being delivered;
//   - the dispatcher (Run's goroutine) keeps the window: the events listed and not yet behind
//     the cursor, in stream order. It starts an event when no earlier event it must follow is
//     unfinished, moves the cursor over the finished prefix, and queues the final records;
//   - delivery.concurrency pool goroutines resolve, render and send; long-lived, so their
//     stacks, grown deep by the SDKs, are not grown again for every event;
//   - the syncer waits for final records and cursor moves to be durable, so a delivery does
//     not hold its slot through a commit that other deliveries can share.
//
// Order: an event follows every earlier event of the same recipient (two Magic Auth codes to
// one person arrive in the order they were created) and every earlier occurrence of the same
// event id (an event listed twice), because both are queued in per-key FIFOs and an event
// starts only at the head of all of its queues. All queues share one arrival order, so no two
// events wait for each other. The retries an operator queued run alone, between the stream's
// events (their records name no recipient to queue behind).
//
// Durability: a final record is queued before any cursor that passes it (the store applies
// writes in queue order), so a crash never leaves the cursor ahead of an unrecorded event. Until
// a final record is durable the worker remembers it (unsynced), so a later occurrence of the
// same event sees it as final instead of reading the older `sending` record.

// windowFor is how many listed events may wait in the window: enough that the pool never runs
// dry while the next page is fetched or an event at the head is retried, small enough that a
// stuck event holds back a bounded amount of memory.
func windowFor(o Options) int { return max(3*o.PageSize, 8*o.Concurrency) }

// entry is one event (or one operator-queued retry) in the dispatcher.
type entry struct {
	ev   Event
	keys []string // order queues this entry waits in
	// retry: an operator's retry (retryOne), outside the window and the cursor.
	retry   *retryGroup
	started bool
	done    bool
	rec     *store.Delivery // final record to save; nil: nothing to save
}

// retryGroup is one read of the operator's retry queue; done closes when all of it is delivered.
type retryGroup struct {
	left int
	done chan struct{}
}

// finished is a pool goroutine's report.
type finished struct {
	e   *entry
	rec *store.Delivery
	err error
}

// fetched is the fetcher's report: a page, a retry batch, or the end of the stream (idle with
// StopWhenIdle, or stopped).
type fetched struct {
	events  []Event
	retries []string
	batch   *retryGroup
	end     bool
}

// pendingWrite is a queued store write whose durability the syncer awaits.
type pendingWrite struct {
	wait     func() error
	eventID  string // a final record's event, forgotten by unsynced once durable; "" if none
	cursorAt time.Time
}

// unsynced holds final records queued but not yet durable, by event id.
type unsynced struct {
	mu   sync.Mutex
	recs map[string]store.Delivery
}

func (u *unsynced) put(d store.Delivery) {
	u.mu.Lock()
	if u.recs == nil {
		u.recs = map[string]store.Delivery{}
	}
	u.recs[d.EventID] = d
	u.mu.Unlock()
}

func (u *unsynced) get(id string) (store.Delivery, bool) {
	u.mu.Lock()
	d, ok := u.recs[id]
	u.mu.Unlock()
	return d, ok
}

func (u *unsynced) forget(id string) {
	u.mu.Lock()
	delete(u.recs, id)
	u.mu.Unlock()
}

// record reads eventID's delivery: a final record still on its way to disk, else the store's.
func (w *Worker) record(eventID string) (store.Delivery, bool, error) {
	if d, ok := w.unsynced.get(eventID); ok {
		return d, true, nil
	}
	return w.store.Delivery(eventID)
}

type dispatcher struct {
	w    *Worker
	ctx  context.Context // cancelled on shutdown and on a store failure
	stop context.CancelFunc

	window []*entry // listed events not yet behind the cursor, oldest first
	queues map[string][]*entry
	ready  []*entry
	// retries waits for the pool to run them alone; retrying of them are in flight.
	retries  []*entry
	retrying int
	// inflight counts entries handed to the pool and not yet reported back.
	inflight int

	jobs    chan *entry
	results chan finished
	pages   chan fetched
	want    chan struct{} // asks the fetcher for the next page
	asked   bool          // a page has been asked for and not yet received
	ended   bool          // the fetcher is done

	writes   chan pendingWrite
	syncErr  chan error
	syncDone chan struct{}
	err      error // the first failure; errStopped when only stopping
}

// dispatch runs the pipeline from pos until ctx ends, the stream is drained (StopWhenIdle) or
// the store fails.
func (w *Worker) dispatch(ctx context.Context, pos store.Position) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	window := windowFor(w.opts)
	d := &dispatcher{
		w: w, ctx: ctx, stop: stop,
		queues:  map[string][]*entry{},
		jobs:    make(chan *entry),
		results: make(chan finished, w.opts.Concurrency),
		pages:   make(chan fetched),
		want:    make(chan struct{}, 1),
		// One write per finished event at the most: with this room the dispatcher never waits
		// for the disk unless the disk is far behind.
		writes:   make(chan pendingWrite, window+w.opts.Concurrency),
		syncErr:  make(chan error, 1),
		syncDone: make(chan struct{}),
	}
	var pool sync.WaitGroup
	for range w.opts.Concurrency {
		pool.Go(d.work)
	}
	fetcherDone := make(chan struct{})
	go func() {
		defer close(fetcherDone)
		w.fetch(ctx, pos, d.want, d.pages)
	}()
	go d.sync()

	d.loop(window)

	close(d.jobs)
	pool.Wait()
	stop()
	<-fetcherDone
	close(d.writes)
	<-d.syncDone
	select {
	case err := <-d.syncErr:
		d.fail(err)
	default:
	}
	if d.err != nil && !errors.Is(d.err, errStopped) {
		return d.err
	}
	return nil
}

// loop is the dispatcher. It returns once nothing is in flight and no more work will come.
func (d *dispatcher) loop(window int) {
	done := d.ctx.Done()
	for {
		stopping := d.err != nil
		if stopping && d.inflight == 0 {
			return
		}
		if !stopping && d.ended && d.inflight == 0 && len(d.ready) == 0 && len(d.retries) == 0 {
			// Drained: what remains in the window waits for nothing that can still happen.
			return
		}
		if !stopping && !d.asked && !d.ended && len(d.window)+d.w.opts.PageSize <= window {
			d.want <- struct{}{}
			d.asked = true
		}
		var jobs chan *entry
		next := d.next()
		if next != nil {
			jobs = d.jobs
		}
		var pages chan fetched
		if !d.ended {
			pages = d.pages
		}
		select {
		case jobs <- next:
			if next.retry != nil {
				d.retries, d.retrying = d.retries[1:], d.retrying+1
			} else {
				d.ready = d.ready[1:]
			}
			d.inflight++
		case f := <-d.results:
			d.inflight--
			d.finish(f)
		case f := <-pages:
			d.add(f)
		case err := <-d.syncErr:
			d.fail(err)
		case <-done:
			done = nil
			d.fail(errStopped)
		}
	}
}

// next is the entry to hand to the pool next, or nil.
func (d *dispatcher) next() *entry {
	switch {
	case d.err != nil:
		return nil
	case len(d.retries) > 0 || d.retrying > 0:
		// A retry batch runs alone: a record holds no address, so a retry cannot queue behind
		// the stream's emails to its recipient; it waits until none is in flight.
		if len(d.retries) > 0 && d.inflight == d.retrying {
			return d.retries[0]
		}
		return nil
	case len(d.ready) > 0:
		return d.ready[0]
	}
	return nil
}

// fail stops the pipeline: no new event starts, in-flight ones finish. A real failure outranks
// errStopped, so a store error that happens while shutting down is still reported.
func (d *dispatcher) fail(err error) {
	if d.err == nil || errors.Is(d.err, errStopped) && !errors.Is(err, errStopped) {
		d.err = err
	}
	d.stop()
}

// add takes what the fetcher delivered into the window (or, for retries, beside it).
func (d *dispatcher) add(f fetched) {
	if f.batch == nil {
		d.asked = false // a page or the end is the answer to want; a retry batch is not
	}
	if f.end {
		d.ended = true
		return
	}
	for _, ev := range f.events {
		e := &entry{ev: ev}
		e.keys = orderKeys(&e.ev)
		d.window = append(d.window, e)
		d.enqueue(e)
	}
	for _, id := range f.retries {
		d.retries = append(d.retries, &entry{ev: Event{ID: id}, retry: f.batch})
	}
}

func (d *dispatcher) enqueue(e *entry) {
	for _, k := range e.keys {
		d.queues[k] = append(d.queues[k], e)
	}
	d.readyIfFirst(e)
}

// readyIfFirst makes e ready once it heads every queue it waits in.
func (d *dispatcher) readyIfFirst(e *entry) {
	if e.started {
		return
	}
	for _, k := range e.keys {
		if d.queues[k][0] != e {
			return
		}
	}
	e.started = true
	d.ready = append(d.ready, e)
}

// finish takes a pool report: the entry's queues move on, and the cursor over the finished
// prefix of the window, with the final record in the same write.
func (d *dispatcher) finish(f finished) {
	e := f.e
	d.w.beat()
	if e.retry != nil {
		d.retrying--
	}
	if f.err != nil {
		// Not done: the cursor must not pass it, and what waits behind it stays waiting.
		d.fail(f.err)
		return
	}
	e.done, e.rec = true, f.rec
	for _, k := range e.keys {
		q := d.queues[k][1:]
		if len(q) == 0 {
			delete(d.queues, k)
			continue
		}
		d.queues[k] = q
		d.readyIfFirst(q[0])
	}
	if e.retry != nil {
		// retryOne saved what it had to; the batch ends when all of it has.
		if e.retry.left--; e.retry.left == 0 {
			close(e.retry.done)
		}
		return
	}
	cursor := ""
	for len(d.window) > 0 && d.window[0].done {
		cursor = d.window[0].ev.ID
		d.window[0] = nil
		d.window = d.window[1:]
	}
	if e.rec == nil && cursor == "" {
		return
	}
	now := d.w.opts.Now()
	pw := pendingWrite{}
	if cursor != "" {
		pw.cursorAt = now
	}
	if e.rec != nil {
		d.w.unsynced.put(*e.rec)
		pw.eventID = e.rec.EventID
		pw.wait = d.w.store.SaveAsync(*e.rec, cursor, now)
	} else {
		pw.wait = d.w.store.SetCursorAsync(cursor, now)
	}
	d.writes <- pw
}

// work is a pool goroutine: it delivers the entries handed to it.
func (d *dispatcher) work() {
	for e := range d.jobs {
		var f finished
		f.e = e
		if e.retry != nil {
			f.err = d.w.retryOne(d.ctx, e.ev.ID)
		} else if release, ok := d.w.claims.acquire(d.ctx, e.ev.ID); !ok {
			f.err = errStopped
		} else {
			f.rec, f.err = d.w.deliver(d.ctx, e.ev)
			if f.rec != nil {
				// Before the claim goes: the live reader must find it final, not `sending`.
				d.w.unsynced.put(*f.rec)
			}
			release()
		}
		d.results <- f
	}
}

// sync waits for queued writes in order. After a failure every later write fails too (the
// store applies nothing after a failed write), so only the first is reported.
func (d *dispatcher) sync() {
	defer close(d.syncDone)
	failed := false
	for pw := range d.writes {
		err := pw.wait()
		if pw.eventID != "" {
			d.w.unsynced.forget(pw.eventID)
		}
		switch {
		case err != nil && !failed:
			failed = true
			d.syncErr <- err
		case err == nil && !pw.cursorAt.IsZero():
			d.w.obs.CursorMoved(pw.cursorAt)
		}
		if err == nil && pw.eventID != "" {
			failpoint.Hit("after-record")
		}
	}
}
