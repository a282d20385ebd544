package worker

import (
	"context"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/store"
)

// An event that ends in an error (shutdown during its backoff, a store failure) is not done:
// the cursor moved by a later event's record must stay before it, or the event would never be
// listed again.
func TestCursorStaysBeforeAnEventThatDidNotFinish(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &dispatcher{w: h.worker(), ctx: ctx, stop: cancel, queues: map[string][]*entry{},
		writes: make(chan pendingWrite, 4)}
	a := Event{ID: "event_01A", Type: "magic_auth.created", Data: []byte(`{"id":"magic_auth_01A","email":"a@example.com"}`)}
	b := Event{ID: "event_01B", Type: "magic_auth.created", Data: []byte(`{"id":"magic_auth_01B","email":"b@example.com"}`)}
	c := Event{ID: "event_01C", Type: "magic_auth.created", Data: []byte(`{"id":"magic_auth_01C","email":"a@example.com"}`)}
	d.add(fetched{events: []Event{a, b, c}})
	if len(d.ready) != 2 {
		t.Fatalf("%d ready, want a and b (c follows a to its recipient)", len(d.ready))
	}
	ea, eb := d.window[0], d.window[1]
	d.ready, d.inflight = nil, 2 // both handed to the pool
	d.finish(finished{e: ea, err: errStopped})
	sent := &store.Delivery{EventID: b.ID, Kind: "magic_auth", State: store.Sent, UpdatedAt: time.Now()}
	d.finish(finished{e: eb, rec: sent})
	close(d.writes)
	for pw := range d.writes {
		if !pw.cursorAt.IsZero() {
			t.Error("the cursor moved although the first event did not finish")
		}
		if err := pw.wait(); err != nil {
			t.Fatal(err)
		}
	}
	if cur := h.cursor(); cur != "" {
		t.Errorf("cursor %q, want none", cur)
	}
	if len(d.ready) != 0 {
		t.Errorf("the event behind the stopped one to its recipient was released: %v", d.ready)
	}
	if d.err == nil {
		t.Error("the stop was not noted")
	}
}

// An operator's retries run alone: not while an event of the stream is in flight (the retried
// email could overtake a newer one to the same person), and no stream event starts while
// they run.
func TestRetriesRunAloneBetweenTheStreamsEvents(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &dispatcher{w: h.worker(), ctx: ctx, stop: cancel, queues: map[string][]*entry{},
		writes: make(chan pendingWrite, 8)}
	dispatch := func() *entry {
		e := d.next()
		if e == nil {
			return nil
		}
		if e.retry != nil {
			d.retries, d.retrying = d.retries[1:], d.retrying+1
		} else {
			d.ready = d.ready[1:]
		}
		d.inflight++
		return e
	}
	done := func(e *entry) {
		d.inflight--
		d.finish(finished{e: e})
	}
	a := Event{ID: "event_01A", Type: "magic_auth.created", Data: []byte(`{"id":"magic_auth_01A","email":"a@example.com"}`)}
	b := Event{ID: "event_01B", Type: "magic_auth.created", Data: []byte(`{"id":"magic_auth_01B","email":"b@example.com"}`)}
	d.add(fetched{events: []Event{a}})
	ea := dispatch()
	batch := &retryGroup{left: 2, done: make(chan struct{})}
	d.add(fetched{retries: []string{"event_00X", "event_00Y"}, batch: batch})
	d.add(fetched{events: []Event{b}})
	if e := dispatch(); e != nil {
		t.Fatalf("%s started while a stream event is in flight and retries wait", e.ev.ID)
	}
	done(ea)
	rx, ry := dispatch(), dispatch()
	if rx == nil || ry == nil || rx.retry == nil || ry.retry == nil {
		t.Fatal("the retries did not start once the stream's event was done")
	}
	if e := dispatch(); e != nil {
		t.Fatalf("%s started while retries run", e.ev.ID)
	}
	done(rx)
	if e := dispatch(); e != nil {
		t.Fatalf("%s started while a retry runs", e.ev.ID)
	}
	done(ry)
	select {
	case <-batch.done:
	default:
		t.Error("the batch did not end")
	}
	if e := dispatch(); e == nil || e.ev.ID != b.ID {
		t.Errorf("after the retries: %v, want %s", e, b.ID)
	}
}
