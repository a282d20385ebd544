package worker

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
)

// countingLimiter gives every permit at once (or after wait) and counts them.
type countingLimiter struct {
	mu                     sync.Mutex
	wait                   time.Duration
	onReserve              func(outstanding int)
	reserved, sent, unsent int
	throttled, outstanding int
}

func (l *countingLimiter) Reserve() (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.onReserve != nil {
		l.onReserve(l.outstanding)
	}
	l.reserved++
	l.outstanding++
	return l.wait, true
}

func (l *countingLimiter) Done(sent, throttled bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.outstanding--
	if sent {
		l.sent++
	} else {
		l.unsent++
	}
	if throttled {
		l.throttled++
	}
}

func (l *countingLimiter) counts() (reserved, sent, unsent, throttled, outstanding int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reserved, l.sent, l.unsent, l.throttled, l.outstanding
}

// Every SES call holds a permit taken before its `sending` record was written, and every permit
// ends; events that are skipped take none.
func TestEverySendHoldsAPermitTakenBeforeSending(t *testing.T) {
	h := newHarness(t)
	lim := &countingLimiter{}
	lim.onReserve = func(int) {
		// One event at a time: a `sending` record of an email SES has not accepted yet, while a
		// permit is asked for, would mean the record came first. (The email before may still be
		// `sending` on disk: its final record is written while the next event starts.)
		accepted := map[string]bool{}
		for _, m := range h.ses.Messages() {
			accepted[m.Tags["event_id"]] = true
		}
		recs, err := h.store.Interrupted()
		if err != nil {
			t.Error(err)
		}
		for _, r := range recs {
			if !accepted[r.EventID] {
				t.Errorf("%s is recorded as sending before it has a permit", r.EventID)
			}
		}
	}
	h.opts.Limiter = lim
	h.opts.Concurrency = 1
	now := time.Now()
	for i := range 30 {
		h.wos.AddCode("magic_auth", fmt.Sprintf("u%d@example.com", i), "user_01", now.Add(time.Hour))
	}
	h.wos.AddCode("magic_auth", "late@example.com", "user_02", now.Add(-time.Minute)) // skipped: no permit
	var failed atomic.Int32
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		switch n := failed.Add(1); {
		case n <= 2:
			fakeses.WriteError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Maximum sending rate exceeded.")
			return true
		case n == 3:
			fakeses.WriteError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "try later")
			return true
		}
		return false
	}
	h.run()

	reserved, sent, unsent, throttled, outstanding := lim.counts()
	if msgs, reqs := len(h.ses.Messages()), h.ses.SendRequests(); msgs != 30 || reqs != 33 {
		t.Fatalf("%d messages in %d requests, want 30 in 33", msgs, reqs)
	}
	if reserved != 33 || sent != 30 || unsent != 3 || throttled != 2 || outstanding != 0 {
		t.Errorf("permits: %d reserved, %d sent, %d unsent, %d throttled, %d outstanding; want 33, 30, 3, 2, 0",
			reserved, sent, unsent, throttled, outstanding)
	}
}

// frozenClock stands still unless moved: permits taken at one instant queue up at the rate.
type frozenClock struct{ ns atomic.Int64 }

func newFrozenClock() *frozenClock {
	c := &frozenClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *frozenClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *frozenClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// With the real limiter at 50/s (burst 2) on a clock that stands still, 20 emails get permits
// 1/50 s apart after the first two: the waits add up to exactly 3.42 s, whatever the schedule.
func TestWorkerIsPacedByTheLimiter(t *testing.T) {
	h := newHarness(t)
	clk := newFrozenClock()
	lim := sendlimit.New(sendlimit.Options{Rate: 50, Now: clk.Now})
	h.opts.Limiter = lim
	now := time.Now()
	for i := range 20 {
		h.wos.AddCode("magic_auth", fmt.Sprintf("u%d@example.com", i), "user_01", now.Add(time.Hour))
	}
	h.run()

	if n := len(h.ses.Messages()); n != 20 {
		t.Fatalf("%d sent, want 20", n)
	}
	st := lim.Status()
	want := time.Duration(0)
	for k := 1; k <= 18; k++ {
		want += time.Duration(float64(k) / 50 * float64(time.Second))
	}
	if (st.Waited-want).Abs() > time.Millisecond || st.InFlight != 0 || st.SentSinceQuotaRead != 20 {
		t.Errorf("waited %v (want %v), in flight %d, sent %d", st.Waited, want, st.InFlight, st.SentSinceQuotaRead)
	}
}

// SES throttling halves the pace; the events throttled are retried without being charged, and
// after a quiet spell the pace is back.
func TestThrottlingSlowsTheWorkerDownAndItRecovers(t *testing.T) {
	h := newHarness(t)
	clk := newFrozenClock()
	lim := sendlimit.New(sendlimit.Options{Rate: 100, Now: clk.Now})
	h.opts.Limiter = lim
	now := time.Now()
	var ids []string
	for i := range 3 {
		ev, _, _ := h.wos.AddCode("magic_auth", fmt.Sprintf("u%d@example.com", i), "user_01", now.Add(time.Hour))
		ids = append(ids, ev)
	}
	var n atomic.Int32
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPost && n.Add(1) <= 2 {
			fakeses.WriteError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Maximum sending rate exceeded.")
			return true
		}
		return false
	}
	h.run()

	for _, id := range ids {
		if d := h.delivery(id); d.State != store.Sent || d.Attempts != 1 {
			t.Errorf("%s: %s after %d attempts, want sent after 1 (throttling is not charged)", id, d.State, d.Attempts)
		}
	}
	// Both throttles came at one instant of the clock: one episode, one halving.
	if st := lim.Status(); st.Rate != 50 || !st.Throttled || st.Throttles != 2 {
		t.Errorf("after throttling: %+v", st)
	}
	clk.Advance(10*time.Second + 10*time.Second) // quiet, then +5 /s per second from 50
	if st := lim.Status(); st.Rate != 100 || st.Throttled {
		t.Errorf("after a quiet spell: %+v", st)
	}
}

// quotaSource is an SES account whose 24-hour counter the test sets.
type quotaSource struct{ sent atomic.Int64 }

func (q *quotaSource) Quota(context.Context) (mailer.SendQuota, error) {
	return mailer.SendQuota{MaxSendRate: 14, Max24HourSend: 5, SentLast24Hours: float64(q.sent.Load()), SendingEnabled: true}, nil
}

// When the 24-hour quota is used up, events stay pending without being charged an attempt and
// SES sees no more sends; a reading that shows room lets them go.
func TestQuotaUsedUpLeavesEventsPendingThenResumes(t *testing.T) {
	h := newHarness(t)
	lim := sendlimit.New(sendlimit.Options{Rate: 1000, ReadEvery: 20 * time.Millisecond})
	src := &quotaSource{}
	src.sent.Store(2) // 3 left
	reader := lim.Source(src)
	if _, err := reader.Quota(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.opts.Limiter = lim
	now := time.Now()
	var ids []string
	for i := range 6 {
		ev, _, _ := h.wos.AddCode("magic_auth", fmt.Sprintf("u%d@example.com", i), "user_01", now.Add(time.Hour))
		ids = append(ids, ev)
	}
	stop := h.runBackground()
	defer stop()

	held := func() (n int) {
		for _, id := range ids {
			if d, ok, _ := h.store.Delivery(id); ok && d.State == store.Pending && d.Reason == quotaReason && d.Attempts == 0 {
				n++
			}
		}
		return n
	}
	// SES counts a message when it accepts it; the limiter when the worker has the answer.
	eventually(t, "3 sent and 3 held pending, uncharged", func() bool {
		st := lim.Status()
		return len(h.ses.Messages()) == 3 && held() == 3 && st.SentSinceQuotaRead == 3 && st.InFlight == 0
	})
	if st := lim.Status(); !st.QuotaExhausted {
		t.Errorf("limiter: %+v", st)
	}
	if n := h.ses.SendRequests(); n != 3 {
		t.Errorf("%d SES requests while the quota is used up, want 3", n)
	}
	if h.cursor() == ids[5] {
		t.Error("the cursor moved past held events")
	}

	// The rolling window frees up: the next reading shows room.
	src.sent.Store(0)
	if _, err := reader.Quota(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "all 6 sent", func() bool { return len(h.ses.Messages()) == 6 && h.cursor() == ids[5] })
	for _, id := range ids {
		if d := h.delivery(id); d.State != store.Sent || d.Attempts != 1 {
			t.Errorf("%s: %s after %d attempts, want sent after 1", id, d.State, d.Attempts)
		}
	}
	if n := h.ses.SendRequests(); n != 6 {
		t.Errorf("%d SES requests, want 6", n)
	}
	if st := lim.Status(); st.QuotaExhausted || st.InFlight != 0 {
		t.Errorf("limiter after: %+v", st)
	}
}

// A code that expires while its email waits for a permit is skipped, not sent.
func TestCodeExpiringDuringThePermitWaitIsSkipped(t *testing.T) {
	h := newHarness(t)
	var offset atomic.Int64
	h.opts.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	lim := &countingLimiter{wait: time.Millisecond}
	lim.onReserve = func(int) { offset.Store(int64(time.Hour)) } // the wait outlasts the code
	h.opts.Limiter = lim
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(10*time.Minute))
	h.run()

	d := h.delivery(ev)
	if d.State != store.Skipped || !strings.Contains(d.Reason, "before it could be sent") {
		t.Errorf("record %s %q", d.State, d.Reason)
	}
	if reserved, _, unsent, _, outstanding := lim.counts(); reserved != 1 || unsent != 1 || outstanding != 0 {
		t.Errorf("permits: %d reserved, %d ended unsent, %d out", reserved, unsent, outstanding)
	}
	if n := h.ses.SendRequests(); n != 0 {
		t.Errorf("%d SES requests for an expired code", n)
	}
}

// Shutdown ends a long wait for a permit at once, gives the permit back and leaves the event
// pending, never `sending`; the heartbeat keeps beating while it waits.
func TestShutdownEndsTheWaitForAPermit(t *testing.T) {
	h := newHarness(t)
	h.opts.HeartbeatEvery = time.Millisecond
	lim := &countingLimiter{wait: time.Hour}
	h.opts.Limiter = lim
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	h.opts.StopWhenIdle = false
	w := h.worker()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	eventually(t, "a permit is asked for", func() bool { r, _, _, _, _ := lim.counts(); return r == 1 })
	beat := w.Heartbeat()
	eventually(t, "the heartbeat to move during the wait", func() bool { return w.Heartbeat().After(beat) })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return while waiting for a permit")
	}
	if _, _, unsent, _, outstanding := lim.counts(); unsent != 1 || outstanding != 0 {
		t.Errorf("permit not given back: %d unsent, %d out", unsent, outstanding)
	}
	if d, ok, err := h.store.Delivery(ev); err != nil || ok && d.State != store.Pending {
		t.Errorf("record after shutdown: %+v %v %v", d, ok, err)
	}
	if n := h.ses.SendRequests(); n != 0 {
		t.Errorf("%d SES requests", n)
	}
}
