package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/store"
)

// The delivery record's state transitions, each rule once: what a try costs, what an unknown
// outcome leaves behind, and how a final outcome is settled.
func TestDeliveryTransitions(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	ev := Event{ID: "event_01X", Type: "magic_auth.created", CreatedAt: now.Add(-time.Minute)}
	retried := result{outcome: retry, reason: "SES throttled"}
	outage := result{outcome: retry, reason: "WorkOS 503", unavailable: true}
	pausedRes := result{outcome: paused, reason: "account paused"}
	unknown := result{outcome: retry, reason: "outcome unknown: timeout", maybeSent: true}
	type want struct {
		state          store.State
		attempts       int
		tries          int
		maybeDuplicate bool
		code           string // after finish; "" when the delivery is not final
		reason         string // contained in the record's reason
	}
	cases := []struct {
		name  string
		start func() *delivery
		steps func(d *delivery) result // the last step's result, final or not
		want  want
	}{
		{"a failed try is charged", fresh(ev, now), func(d *delivery) result {
			d.charge()
			return retried
		}, want{state: store.Pending, attempts: 1, tries: 1, reason: "SES throttled"}},
		{"a try failed for an outage is not charged but counts for the backoff", fresh(ev, now), func(d *delivery) result {
			d.charge()
			return outage
		}, want{state: store.Pending, attempts: 0, tries: 1, reason: "WorkOS 503"}},
		{"a paused try is not charged", fresh(ev, now), func(d *delivery) result {
			d.charge()
			return pausedRes
		}, want{state: store.Pending, attempts: 0, tries: 1, reason: "account paused"}},
		{"an unknown outcome is kept on the pending record", fresh(ev, now), func(d *delivery) result {
			d.charge()
			d.sending(now)
			return unknown
		}, want{state: store.Pending, attempts: 1, tries: 1, maybeDuplicate: true, reason: "outcome unknown"}},
		{"sent", fresh(ev, now), func(d *delivery) result {
			d.charge()
			d.sending(now)
			return d.end(store.Sent, ReasonNone, "")
		}, want{state: store.Sent, attempts: 1, tries: 1, code: ReasonNone}},
		{"sent again after an unknown outcome may be a second copy", fresh(ev, now), func(d *delivery) result {
			d.charge()
			d.requeue(unknown, now)
			d.charge()
			return d.end(store.Sent, ReasonNone, "")
		}, want{state: store.Sent, attempts: 2, tries: 2, maybeDuplicate: true, code: ReasonMaybeDuplicate, reason: "may have two copies"}},
		{"skipped after an unknown outcome is ambiguous", fresh(ev, now), func(d *delivery) result {
			d.charge()
			d.requeue(unknown, now)
			d.charge()
			return d.end(store.Skipped, ReasonExpired, "expired at 12:00")
		}, want{state: store.Ambiguous, attempts: 2, tries: 2, code: ReasonMaybeSent, reason: "may have been accepted by SES; then: expired at 12:00"}},
		{"an ambiguous end stays as it is", fresh(ev, now), func(d *delivery) result {
			d.charge()
			d.requeue(unknown, now)
			d.charge()
			return d.end(store.Ambiguous, ReasonUnknownOutcome, "outcome unknown again")
		}, want{state: store.Ambiguous, attempts: 2, tries: 2, code: ReasonUnknownOutcome, reason: "outcome unknown again"}},
		{"a record found sending was maybe sent", found(store.Delivery{EventID: ev.ID, State: store.Sending, Attempts: 1}), func(d *delivery) result {
			d.charge()
			return d.end(store.Dead, ReasonRejected, "SES rejected it")
		}, want{state: store.Ambiguous, attempts: 2, tries: 2, code: ReasonMaybeSent, reason: "SES rejected it"}},
		{"a pending record marked maybe duplicate was maybe sent", found(store.Delivery{EventID: ev.ID, State: store.Pending, Attempts: 1, MaybeDuplicate: true}),
			func(d *delivery) result {
				d.charge()
				return d.end(store.Sent, ReasonNone, "")
			}, want{state: store.Sent, attempts: 2, tries: 2, maybeDuplicate: true, code: ReasonMaybeDuplicate}},
		{"used up attempts give up with the last reason", found(store.Delivery{EventID: ev.ID, State: store.Pending, Attempts: 3, Reason: "SES throttled"}),
			func(d *delivery) result {
				if !d.exhausted(3) || d.exhausted(4) {
					t.Error("exhausted does not compare attempts with max_attempts")
				}
				return d.gaveUp()
			}, want{state: store.Dead, attempts: 3, tries: 3, code: ReasonMaxAttempts, reason: "gave up after 3 attempts: SES throttled"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.start()
			res := tc.steps(d)
			code := ""
			if res.outcome == final {
				code = d.finish(res, now)
			} else {
				d.requeue(res, now)
			}
			got := want{state: d.rec.State, attempts: d.rec.Attempts, tries: d.tries(), maybeDuplicate: d.rec.MaybeDuplicate, code: code, reason: tc.want.reason}
			if got != tc.want || !strings.Contains(d.rec.Reason, tc.want.reason) {
				t.Errorf("got %+v reason %q, want %+v", got, d.rec.Reason, tc.want)
			}
			if !d.rec.UpdatedAt.Equal(now) {
				t.Errorf("updated at %v, want %v", d.rec.UpdatedAt, now)
			}
		})
	}
}

func TestDeliveryBegin(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	d := begin(Event{ID: "event_01X", CreatedAt: now.Add(-time.Minute)}, "magic_auth", now)
	if d.rec.State != store.Pending || d.rec.Kind != "magic_auth" || !d.rec.FirstSeenAt.Equal(now) || !d.rec.EventCreatedAt.Equal(now.Add(-time.Minute)) {
		t.Errorf("begin: %+v", d.rec)
	}
	// WorkOS's clock decades off must not keep the record out of the store.
	d = begin(Event{ID: "event_01X", CreatedAt: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)}, "magic_auth", now)
	if !d.rec.EventCreatedAt.IsZero() {
		t.Errorf("an implausible event time was kept: %v", d.rec.EventCreatedAt)
	}
	d.sending(now)
	if d.rec.State != store.Sending || d.rec.Reason != "" {
		t.Errorf("sending: %+v", d.rec)
	}
}

func fresh(ev Event, now time.Time) func() *delivery {
	return func() *delivery { return begin(ev, "magic_auth", now) }
}

func found(rec store.Delivery) func() *delivery {
	return func() *delivery { return resume(rec) }
}
