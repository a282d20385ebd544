package worker

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/store"
)

// rejectSends makes SES refuse every message for good while on is set, so deliveries end dead.
func rejectSends(h *harness) *atomic.Bool {
	on := &atomic.Bool{}
	on.Store(true)
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if on.Load() && r.Method == http.MethodPost {
			fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", "Illegal address")
			return true
		}
		return false
	}
	return on
}

func (h *harness) retryQueue() []string {
	h.t.Helper()
	q, err := h.store.RetryQueue(0)
	if err != nil {
		h.t.Fatal(err)
	}
	return q
}

// A dead or ambiguous delivery an operator queues again goes through every check once more: what
// is still valid is sent exactly once, what was revoked, expired or deleted meanwhile is skipped.
func TestOperatorRetryRechecksTheObject(t *testing.T) {
	for _, tc := range []struct {
		name string
		// add creates the event; meanwhile changes the object after the delivery died.
		add       func(h *harness) (eventID, objectID, email, secret string)
		meanwhile map[string]any // nil: unchanged; deleteObject: gone
		ambiguous bool           // the record was ambiguous rather than dead
		want      store.State
		reason    string
	}{
		{name: "magic auth still valid is sent", want: store.Sent,
			add: func(h *harness) (string, string, string, string) {
				ev, obj, code := h.wos.AddCode("magic_auth", "m@example.com", "user_01", time.Now().Add(10*time.Minute))
				return ev, obj, "m@example.com", code
			}},
		{name: "invitation revoked meanwhile is skipped", want: store.Skipped, reason: "invitation is revoked",
			meanwhile: map[string]any{"state": "revoked"},
			add: func(h *harness) (string, string, string, string) {
				ev, obj, tok := h.wos.AddInvitation(fakeworkos.Invitation{Email: "i@example.com", ExpiresAt: time.Now().Add(time.Hour)})
				return ev, obj, "i@example.com", tok
			}},
		{name: "code expired meanwhile is skipped", want: store.Skipped, reason: "expired at",
			meanwhile: map[string]any{"expires_at": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)},
			add: func(h *harness) (string, string, string, string) {
				ev, obj, code := h.wos.AddCode("email_verification", "v@example.com", "user_02", time.Now().Add(time.Hour))
				return ev, obj, "v@example.com", code
			}},
		{name: "password reset deleted meanwhile is skipped", want: store.Skipped, reason: "not found",
			meanwhile: map[string]any{deleteObject: true},
			add: func(h *harness) (string, string, string, string) {
				ev, obj, tok := h.wos.AddPasswordReset("p@example.com", "user_03", time.Now().Add(time.Hour))
				return ev, obj, "p@example.com", tok
			}},
		{name: "ambiguous still valid is sent and marked a possible duplicate", ambiguous: true, want: store.Sent,
			reason: "operator's request",
			add: func(h *harness) (string, string, string, string) {
				ev, obj, code := h.wos.AddCode("magic_auth", "a@example.com", "user_04", time.Now().Add(10*time.Minute))
				return ev, obj, "a@example.com", code
			}},
		{name: "ambiguous revoked meanwhile stays ambiguous", ambiguous: true, want: store.Ambiguous,
			reason: "may have been accepted", meanwhile: map[string]any{"state": "revoked"},
			add: func(h *harness) (string, string, string, string) {
				ev, obj, tok := h.wos.AddInvitation(fakeworkos.Invitation{Email: "r@example.com", ExpiresAt: time.Now().Add(time.Hour)})
				return ev, obj, "r@example.com", tok
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ev, obj, email, secret := tc.add(h)
			rejecting := rejectSends(h)
			h.run()
			d := h.delivery(ev)
			if d.State != store.Dead || d.ObjectID != obj {
				t.Fatalf("record %+v, want dead with object id %s", d, obj)
			}
			if tc.ambiguous {
				d.State, d.Reason = store.Ambiguous, "outcome unknown"
				if err := h.store.Save(d, "", time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			rejecting.Store(false)
			switch {
			case tc.meanwhile[deleteObject] != nil:
				h.wos.Update(obj, nil)
			case tc.meanwhile != nil:
				h.wos.Update(obj, tc.meanwhile)
			}
			if _, err := h.store.RequestRetry(time.Now(), ev); err != nil {
				t.Fatal(err)
			}
			requests := h.ses.SendRequests()

			h.run()
			d = h.delivery(ev)
			if d.State != tc.want || !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("after retry %s %q, want %s with %q", d.State, d.Reason, tc.want, tc.reason)
			}
			if q := h.retryQueue(); len(q) != 0 {
				t.Errorf("retry queue %v after the retry settled", q)
			}
			sent := h.sentTo(email)
			wantSent := 0
			if tc.want == store.Sent {
				wantSent = 1
				if len(sent) == 1 && (!strings.Contains(sent[0].Text, secret) || d.MessageID != sent[0].MessageID) {
					t.Errorf("retried email lacks its secret or record %+v does not name message %s", d, sent[0].MessageID)
				}
				if d.Attempts != 1 || d.MaybeDuplicate != tc.ambiguous {
					t.Errorf("record %+v: want 1 attempt, maybe_duplicate %v", d, tc.ambiguous)
				}
			}
			if len(sent) != wantSent || h.ses.SendRequests()-requests != wantSent {
				t.Fatalf("%d emails accepted, %d send requests by the retry; want %d", len(sent), h.ses.SendRequests()-requests, wantSent)
			}

			// Neither a restart nor a backfill over the same events sends anything again.
			requests = h.ses.SendRequests()
			h.restart()
			h.run()
			if err := h.store.ResetCursor(time.Now().Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			h.run()
			if got := h.ses.SendRequests(); got != requests {
				t.Errorf("restart and backfill made %d more send requests", got-requests)
			}
		})
	}
}

const deleteObject = "\x00delete"

// The daemon picks up retries queued while it runs (in production by `dead retry` while it is
// stopped; here through the same store handle) before its next poll.
func TestQueuedRetryIsDeliveredBeforeTheNextPoll(t *testing.T) {
	h := newHarness(t)
	ev, _, code := h.wos.AddCode("magic_auth", "late@example.com", "user_01", time.Now().Add(10*time.Minute))
	rejecting := rejectSends(h)
	h.run()
	if d := h.delivery(ev); d.State != store.Dead {
		t.Fatalf("record %+v, want dead", d)
	}
	rejecting.Store(false)
	stop := h.runBackground()
	defer stop()
	if _, err := h.store.RequestRetry(time.Now(), ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the queued retry to be sent", func() bool { return len(h.sentTo("late@example.com")) == 1 })
	eventually(t, "the record to be final", func() bool {
		d, _, _ := h.store.Delivery(ev)
		return d.State == store.Sent && len(h.retryQueue()) == 0
	})
	if m := h.sentTo("late@example.com"); !strings.Contains(m[0].Text, code) {
		t.Error("retried email lacks its code")
	}
}

// A record in the queue that has no object id (not queued through RequestRetry) cannot be
// fetched again: it ends dead with a reason instead of looping.
func TestQueuedRetryWithoutObjectIDEndsDead(t *testing.T) {
	h := newHarness(t)
	ev, _, _ := h.wos.AddCode("magic_auth", "x@example.com", "user_01", time.Now().Add(10*time.Minute))
	rejecting := rejectSends(h)
	h.run()
	rejecting.Store(false)
	d := h.delivery(ev)
	if _, err := h.store.RequestRetry(time.Now(), ev); err != nil {
		t.Fatal(err)
	}
	d.State, d.ObjectID = store.Pending, "" // as if an older build had rewritten it
	if err := h.store.Save(d, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	requests := h.ses.SendRequests()
	h.run()
	if d := h.delivery(ev); d.State != store.Dead || !strings.Contains(d.Reason, "no WorkOS object") {
		t.Errorf("record %+v", d)
	}
	if len(h.retryQueue()) != 0 || h.ses.SendRequests() != requests {
		t.Errorf("queue %v, %d more sends", h.retryQueue(), h.ses.SendRequests()-requests)
	}
}

func TestPruneRunsWithRetention(t *testing.T) {
	h := newHarness(t)
	ev, _, _ := h.wos.AddCode("magic_auth", "old@example.com", "user_01", time.Now().Add(10*time.Minute))
	h.run()
	if d := h.delivery(ev); d.State != store.Sent {
		t.Fatalf("record %+v", d)
	}
	// A retention shorter than WorkOS keeps events counts as MinRetention.
	h.opts.Retention = time.Hour
	h.opts.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	h.run()
	if _, ok, _ := h.store.Delivery(ev); !ok {
		t.Fatal("a record younger than MinRetention was pruned")
	}
	h.opts.Retention = 40 * 24 * time.Hour
	h.opts.Now = func() time.Time { return time.Now().Add(41 * 24 * time.Hour) }
	h.restart() // a prune is due at start
	h.run()
	if _, ok, _ := h.store.Delivery(ev); ok {
		t.Error("a sent record older than the retention was kept")
	}
	if !strings.Contains(h.logs.String(), "pruned delivery records") {
		t.Error("pruning was not logged")
	}
}
