package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/workosapi"
)

// The live reader. While the main reader works through a backlog (after an outage, or a
// backfill from a reset cursor), an event created now would wait behind all of it, and a Magic
// Auth code lives 10 minutes. So when the main reader is behind, a second reader lists events
// from about now and delivers them at once. It has no cursor of its own and moves none: the
// main reader still passes every event and moves the cursor over a finished prefix. Records are
// keyed by event id and both readers claim an event before delivering it (claims), so whichever
// comes second finds the record final and sends nothing. The live reader ends when the main
// reader reaches the point where it began. After a restart it is simply started again, from a
// point recomputed the same way: nothing depends on where the last one was.

const (
	// liveAfterFull and liveAfterLag say when the main reader is behind: full pages for this
	// long, or a full page whose newest event is this old.
	liveAfterFull = 5 * time.Second
	liveAfterLag  = 2 * time.Minute
	// liveLookback is how far back the live reader starts at most: a Magic Auth code's life,
	// so codes created while the daemon was down go out first too (liveStart).
	liveLookback = 10 * time.Minute
)

// liveRun is a running live reader.
type liveRun struct {
	since  time.Time
	cancel context.CancelFunc
	done   chan struct{}
}

// liveConcurrency is how many of the live reader's deliveries run at once: new events arrive
// at the app's pace, not a backlog's.
func liveConcurrency(o Options) int { return max(2, o.Concurrency/4) }

// steerLive starts or ends the live reader after a page of the main reader: it starts when
// the main reader is behind, and ends when a page of the main reader comes back short (caught
// up) or reaches where the live reader began.
func (w *Worker) steerLive(ctx context.Context, live *liveRun, page workosapi.Page) *liveRun {
	now := time.Now()
	full := len(page.Events) == w.opts.PageSize && len(page.Events) > 0
	var newest time.Time
	if len(page.Events) > 0 {
		newest = page.Events[len(page.Events)-1].CreatedAt
	}
	fullFor, behind := w.backlog.listed(now, full, newest)
	switch {
	case live != nil && !full:
		w.stopLive(live, "the main reader has caught up")
		return nil
	case live != nil && !newest.Before(live.since):
		w.stopLive(live, "the main reader has reached where it began")
		w.backlog.restartFull(now) // another only after full pages for liveAfterFull again
		return nil
	case live == nil && full && (fullFor >= liveAfterFull || behind >= liveAfterLag):
		return w.startLive(ctx, liveStart(now, newest), behind)
	}
	return live
}

// liveStart is where a live reader begins when the main reader's newest event is newest:
// events the main reader reaches within liveAfterLag are left to it, and none older than
// liveLookback is taken, so a live reader begins at now after a burst, and up to 10 minutes
// back after an outage.
func liveStart(now, newest time.Time) time.Time {
	since := newest.Add(liveAfterLag)
	if lb := now.Add(-liveLookback); since.Before(lb) {
		since = lb
	}
	if since.After(now) {
		since = now
	}
	return since
}

// startLive starts a live reader that delivers the events created since since.
func (w *Worker) startLive(ctx context.Context, since time.Time, behind time.Duration) *liveRun {
	ctx, cancel := context.WithCancel(ctx)
	lr := &liveRun{since: since, cancel: cancel, done: make(chan struct{})}
	w.backlog.liveStarted(since)
	w.log.Info("the event stream is behind; a live reader delivers new events meanwhile",
		zap.Duration("behind", behind.Round(time.Second)), zap.Time("live_since", since))
	go func() {
		defer close(lr.done)
		w.readLive(ctx, since)
	}()
	return lr
}

// stopLive stops a live reader and waits until its deliveries have stopped: sends already
// handed to the provider finish and are recorded, the others stay pending for the main reader.
func (w *Worker) stopLive(lr *liveRun, why string) {
	if lr == nil {
		return
	}
	lr.cancel()
	<-lr.done
	w.backlog.liveStopped()
	w.log.Info("live reader stopped: "+why, zap.Time("live_since", lr.since))
}

// readLive pages from since and delivers each page before listing the next. Its WorkOS calls
// go ahead of the main reader's in the request budget.
func (w *Worker) readLive(ctx context.Context, since time.Time) {
	ctx = workosapi.Urgent(ctx)
	after, failures := "", 0
	for ctx.Err() == nil {
		page, err := w.workos.ListEvents(ctx, workosapi.ListRequest{After: after, Since: since, Limit: w.opts.PageSize, Types: w.cur().types})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			// The main reader's own list fails alike and says so in the log.
			if !sleepCtx(ctx, w.backoff(failures, retryAfterOf(err))) {
				return
			}
			continue
		}
		failures = 0
		if len(page.Events) > 0 {
			after = page.Events[len(page.Events)-1].ID
			events := make([]Event, len(page.Events))
			for i, e := range page.Events {
				events[i] = Event{ID: e.ID, Type: e.Type, CreatedAt: e.CreatedAt, Data: e.Data}
			}
			w.deliverLive(ctx, events)
			w.backlog.liveListed(events[len(events)-1].CreatedAt)
		}
		if len(page.Events) < w.opts.PageSize && !sleepCtx(ctx, w.opts.PollInterval) {
			return
		}
	}
}

// sleepCtx waits d or until ctx ends and reports whether the full wait happened. Unlike
// Worker.wait it does not beat the heartbeat: the live reader idling must not keep a stuck main
// reader looking alive to the watchdog.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// deliverLive delivers a page: the events of one address in their order, different addresses
// side by side.
func (w *Worker) deliverLive(ctx context.Context, events []Event) {
	var order []string
	groups := map[string][]Event{}
	for _, ev := range events {
		ref, _ := ev.parsed()
		key := recipientKey(ref)
		if key == "" {
			key = "id:" + ev.ID
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], ev)
	}
	slots := make(chan struct{}, liveConcurrency(w.opts))
	var wg sync.WaitGroup
	for _, key := range order {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			for _, ev := range groups[key] {
				if !w.deliverClaimed(ctx, ev) {
					return
				}
			}
		})
	}
	wg.Wait()
}

// liveDeliveryTimeout bounds one delivery by the live reader: an event that fails and waits
// out retries is left, pending, to the main reader, so it does not hold up the new events
// behind it.
const liveDeliveryTimeout = 30 * time.Second

// deliverClaimed delivers one event for the live reader and saves its final record before
// giving up the claim. It reports false when the reader should stop.
func (w *Worker) deliverClaimed(ctx context.Context, ev Event) bool {
	release, ok := w.claims.acquire(ctx, ev.ID)
	if !ok {
		return false
	}
	defer release()
	one, cancel := context.WithTimeout(ctx, liveDeliveryTimeout)
	defer cancel()
	rec, err := w.deliver(one, ev)
	if err == nil && rec != nil {
		err = w.store.Save(*rec, "", w.opts.Now())
	}
	if errors.Is(err, errStopped) && ctx.Err() == nil {
		w.log.Info("the live reader leaves a delivery that keeps failing to the main reader", zap.String("event_id", ev.ID))
		return true
	}
	if err != nil {
		if ctx.Err() == nil {
			// A store failure: the main reader meets it too, and stops the daemon.
			w.log.Error("the live reader could not record a delivery; it stops", zap.String("event_id", ev.ID), zap.Error(err))
		}
		return false
	}
	return true
}

// claims lets one reader at a time deliver an event: the other waits, then finds the record
// final.
type claims struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

// acquire waits until id is free and takes it; ok is false when ctx ended first.
func (c *claims) acquire(ctx context.Context, id string) (release func(), ok bool) {
	for {
		c.mu.Lock()
		if c.held == nil {
			c.held = map[string]chan struct{}{}
		}
		busy, taken := c.held[id]
		if !taken {
			ch := make(chan struct{})
			c.held[id] = ch
			c.mu.Unlock()
			return func() {
				c.mu.Lock()
				delete(c.held, id)
				c.mu.Unlock()
				close(ch)
			}, true
		}
		c.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, false
		}
	}
}
