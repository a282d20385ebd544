package worker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/workos-emailer/workos-emailer/mailer"
)

// Observer sees what the worker does, for metrics. Every label it is handed comes from a small
// fixed set (kinds, states, the Reason* and Send* constants): never an event id, an address or
// free text. Methods are called from many goroutines and must not block.
type Observer interface {
	// Polled reports one call of the Events API: n events on success, or the error.
	Polled(n int, err error)
	// Finished reports an event reaching a final state (store.Sent, Skipped, Dead, Ambiguous)
	// in this process, with one of the Reason* codes.
	Finished(kind, state, reason string)
	// SendAttempt reports one call of the Sender: its Send* outcome and how long it took.
	SendAttempt(kind, outcome string, d time.Duration)
	// EventLag reports, for an email just sent, how long after the event's creation it went.
	EventLag(kind string, d time.Duration)
	// CursorMoved reports that the stored cursor was set at the given time (also called once at
	// start with the stored cursor's time, when there is one).
	CursorMoved(at time.Time)
}

// NopObserver ignores everything; it is the default.
type NopObserver struct{}

func (NopObserver) Polled(int, error)                         {}
func (NopObserver) Finished(string, string, string)           {}
func (NopObserver) SendAttempt(string, string, time.Duration) {}
func (NopObserver) EventLag(string, time.Duration)            {}
func (NopObserver) CursorMoved(time.Time)                     {}

// Reason codes: why an event ended in its final state, as a metric label.
const (
	ReasonNone           = "none"            // sent
	ReasonMaybeDuplicate = "maybe_duplicate" // sent again after a send whose outcome was unknown
	// skipped
	ReasonUnhandled  = "unhandled_type" // an event type this version does not send
	ReasonDisabled   = "disabled"       // kind not in events.enabled
	ReasonTooOld     = "too_old"        // older than delivery.max_event_age
	ReasonNotFound   = "not_found"      // the object is gone (404)
	ReasonNotPend    = "not_pending"    // invitation accepted or revoked
	ReasonExpired    = "expired"        // code or link expired
	ReasonSuperseded = "superseded"     // a newer code or link to the same address replaces it
	// welcome
	ReasonNotVerified = "not_verified" // the address is not verified (yet)
	ReasonAlreadySent = "already_sent" // sent once already (a welcome), by another event
	// the event's data does not say what the kind's trigger requires; a trigger may name a
	// code of its own (kinds.Trigger.SkipCode)
	ReasonNotApplicable = "not_applicable"
	// dead
	ReasonInvalidEvent     = "invalid_event"     // event data without a valid object id
	ReasonMismatch         = "mismatch"          // WorkOS returned another object or address
	ReasonInvalidRecipient = "invalid_recipient" // the address cannot be sent to safely
	ReasonInvalidObject    = "invalid_object"    // no code, token or usable link
	ReasonRenderFailed     = "render_failed"     // template error
	ReasonWorkOSRejected   = "workos_rejected"   // a WorkOS 4xx that retrying cannot fix
	ReasonRejected         = "rejected"          // SES refused the message for good
	ReasonMaxAttempts      = "max_attempts"      // delivery.max_attempts failures
	// ambiguous
	ReasonUnknownOutcome = "unknown_outcome" // SES may have accepted it (on_ambiguous: hold)
	ReasonInterrupted    = "interrupted"     // the previous process stopped during the send
	ReasonMaybeSent      = "maybe_sent"      // resent after an unknown outcome, then not sent

	ReasonUnreadableRequest = "unreadable_request" // a requested email's sealed content does not open
)

// Reasons lists every Reason* code.
var Reasons = []string{ReasonNone, ReasonMaybeDuplicate, ReasonUnhandled, ReasonDisabled, ReasonTooOld,
	ReasonNotFound, ReasonNotPend, ReasonExpired, ReasonSuperseded, ReasonNotVerified, ReasonAlreadySent, ReasonNotApplicable, ReasonInvalidEvent, ReasonMismatch, ReasonInvalidRecipient,
	ReasonInvalidObject, ReasonRenderFailed, ReasonWorkOSRejected, ReasonRejected, ReasonMaxAttempts,
	ReasonUnknownOutcome, ReasonInterrupted, ReasonMaybeSent, ReasonUnreadableRequest}

// Send outcomes, as a metric label.
const (
	SendSent        = "sent"        // accepted, MessageId returned
	SendRejected    = "rejected"    // permanent refusal
	SendFailed      = "failed"      // not accepted; retried, counts as an attempt
	SendUnavailable = "unavailable" // throttled, gateway error, not reached: retried free
	SendPaused      = "paused"      // the account cannot send
	SendUnknown     = "unknown"     // may have been accepted
)

// SendOutcomes lists every Send* outcome.
var SendOutcomes = []string{SendSent, SendRejected, SendFailed, SendUnavailable, SendPaused, SendUnknown}

// sendOutcome maps a Sender's error to a Send* outcome.
func sendOutcome(err error) string {
	if err == nil {
		return SendSent
	}
	switch mailer.ClassOf(err) {
	case mailer.Permanent:
		return SendRejected
	case mailer.Retry:
		if mailer.Unavailable(err) {
			return SendUnavailable
		}
		return SendFailed
	case mailer.Paused:
		return SendPaused
	}
	return SendUnknown
}

// observed is the worker's state for observers, health checks and the systemd watchdog.
type observed struct {
	obs      Observer
	lastPoll atomic.Int64 // unix nanoseconds of the last successful poll; 0: none yet
	// heartbeat is nanoseconds since epoch, on the monotonic clock: a wall-clock jump must
	// neither keep a stuck loop looking alive nor make a live one look stuck.
	heartbeat atomic.Int64
	epoch     time.Time
	beatEvery time.Duration
}

func (o *observed) initObserved(obs Observer, beatEvery time.Duration) {
	if obs == nil {
		obs = NopObserver{}
	}
	if beatEvery <= 0 {
		beatEvery = 5 * time.Second
	}
	o.obs, o.beatEvery = obs, beatEvery
	o.epoch = time.Now()
	o.beat()
}

// beat records that the worker is alive: it made progress or is waiting on purpose.
func (o *observed) beat() { o.heartbeat.Store(int64(time.Since(o.epoch))) }

// Heartbeat is when the worker last showed it was alive: the poll loop turned, an event made
// progress, or a deliberate wait (idle poll interval, backoff, paused sending) ticked. A worker
// stuck in a deadlock stops beating; one waiting out a long backoff does not.
func (o *observed) Heartbeat() time.Time { return o.epoch.Add(time.Duration(o.heartbeat.Load())) }

// LastSuccessfulPoll is when the Events API last answered; zero before the first answer.
func (o *observed) LastSuccessfulPoll() time.Time {
	if n := o.lastPoll.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// polled reports a ListEvents call.
func (o *observed) polled(n int, err error) {
	o.beat()
	if err == nil {
		o.lastPoll.Store(time.Now().UnixNano())
	}
	o.obs.Polled(n, err)
}

// wait waits d or until ctx ends, beating the heartbeat meanwhile; it reports whether the full
// wait happened.
func (o *observed) wait(ctx context.Context, d time.Duration) bool {
	o.beat()
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(o.beatEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.C:
			o.beat()
			return true
		case <-tick.C:
			o.beat()
		case <-ctx.Done():
			return false
		}
	}
}
