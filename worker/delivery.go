package worker

import (
	"fmt"
	"time"

	"github.com/workos-emailer/workos-emailer/store"
)

// delivery is one event's record on its way to a final state: every change of the record's
// state is one method here, and each rule about it is stated once.
type delivery struct {
	rec store.Delivery
	// maybeSent: an earlier send of this event may have been accepted (on_ambiguous: resend,
	// or an operator's retry of an ambiguous record). If the event then ends other than sent,
	// it is ambiguous, so nobody retries it blindly.
	maybeSent bool
	// uncharged counts this delivery's tries that failed for an outage: they cost no attempt,
	// but the backoff grows with them as with any failure, or a long outage would be asked
	// about once a second by every event waiting on it.
	uncharged int
	// set is the settings this try runs with (settings.go): taken once per try, so a reload
	// never mixes old and new templates or kinds within one email.
	set *settings
}

// resume starts a delivery from a record that is not final, found in the store.
func resume(rec store.Delivery) *delivery {
	return &delivery{rec: rec, maybeSent: rec.State == store.Sending || rec.MaybeDuplicate}
}

// begin starts the delivery of an event seen for the first time.
func begin(ev Event, kind string, now time.Time) *delivery {
	rec := store.Delivery{EventID: ev.ID, Kind: kind, State: store.Pending, EventCreatedAt: ev.CreatedAt, FirstSeenAt: now}
	if !store.StorableTime(ev.CreatedAt) {
		// WorkOS's clock, not ours: a created_at decades off must not keep the record out of
		// the store (the store refuses implausible times as damage).
		rec.EventCreatedAt = time.Time{}
	}
	return &delivery{rec: rec}
}

// exhausted reports whether the delivery has used up maxAttempts.
func (d *delivery) exhausted(maxAttempts int) bool { return d.rec.Attempts >= maxAttempts }

// charge counts one try against max_attempts; requeue gives it back when the try failed for an
// outage.
func (d *delivery) charge() { d.rec.Attempts++ }

// sending marks the record right before the send; it must be durable before the send starts.
func (d *delivery) sending(now time.Time) {
	d.rec.State, d.rec.Reason, d.rec.UpdatedAt = store.Sending, "", now
}

// requeue leaves the record pending for another try after res, a retry or a pause. A try that
// failed for an outage or a paused account is not charged. An unknown outcome stays on the
// record, so that after a restart during the wait a resend is still marked as a possible
// second copy.
func (d *delivery) requeue(res result, now time.Time) {
	d.maybeSent = d.maybeSent || res.maybeSent
	if res.unavailable || res.outcome == paused {
		d.rec.Attempts--
		d.uncharged++
	}
	d.rec.State, d.rec.Reason, d.rec.UpdatedAt = store.Pending, res.reason, now
	d.rec.MaybeDuplicate = d.rec.MaybeDuplicate || d.maybeSent
}

// tries counts every failed try of this delivery, charged or not, for the backoff.
func (d *delivery) tries() int { return d.rec.Attempts + d.uncharged }

// gaveUp ends a delivery that used up its attempts.
func (d *delivery) gaveUp() result {
	return d.end(store.Dead, ReasonMaxAttempts, fmt.Sprintf("gave up after %d attempts: %s", d.rec.Attempts, d.rec.Reason))
}

// end sets the final state state, with a Reason* code and the reason.
func (d *delivery) end(state store.State, code, reason string) result {
	d.rec.State, d.rec.Reason = state, reason
	return result{outcome: final, code: code}
}

// finish settles a final outcome: a sent email after a send whose outcome was unknown may be a
// second copy; any other end after one is ambiguous, since the earlier send may have gone out.
// It returns the Reason* code for the metrics.
func (d *delivery) finish(res result, now time.Time) string {
	d.maybeSent = d.maybeSent || res.maybeSent
	d.rec.UpdatedAt = now
	code := res.code
	switch {
	case d.maybeSent && d.rec.State == store.Sent:
		d.rec.MaybeDuplicate = true
		d.rec.Reason = "sent again after a send whose outcome was unknown (on_ambiguous: resend); the recipient may have two copies"
		code = ReasonMaybeDuplicate
	case d.maybeSent && d.rec.State != store.Ambiguous:
		d.rec.Reason = "an earlier send may have been accepted by SES; then: " + d.rec.Reason
		d.rec.State = store.Ambiguous
		code = ReasonMaybeSent
	}
	if d.rec.State != store.Sent {
		d.rec.MaybeDuplicate = false // only a sent record says it may be a second copy
	}
	return code
}
