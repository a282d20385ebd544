package worker

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/workos-emailer/workos-emailer/mailer"
)

// What each kind of email needs from its event.

// EventKinds maps the WorkOS event types the worker handles to the kind of email they cause.
var EventKinds = map[string]string{
	"invitation.created":         mailer.KindInvitation,
	"magic_auth.created":         mailer.KindMagicAuth,
	"email_verification.created": mailer.KindEmailVerification,
	"password_reset.created":     mailer.KindPasswordReset,
	// A user is welcomed when their address is verified: by the verification, or at creation
	// when the address was verified already (a social or SSO sign-up). Once per user.
	"authentication.email_verification_succeeded": mailer.KindWelcome,
	"user.created":             mailer.KindWelcome,
	"password_reset.succeeded": mailer.KindPasswordChanged,
}

// optionalKinds are off unless events.enabled names them. Their events are listed only then:
// every sign-up and sign-in would otherwise leave a skipped record behind. The core kinds'
// events are listed either way, so a disabled core kind's events are recorded as skipped rather
// than passed over unseen.
var optionalKinds = []string{mailer.KindWelcome, mailer.KindPasswordChanged}

// listedTypes are the event types to ask WorkOS for, sorted.
func listedTypes(enabled map[string]bool) []string {
	var types []string
	for typ, kind := range EventKinds {
		if !slices.Contains(optionalKinds, kind) || enabled[kind] {
			types = append(types, typ)
		}
	}
	slices.Sort(types)
	return types
}

// isNotice: a kind that tells of something that happened (no code, no link, no expiry).
func isNotice(kind string) bool {
	return kind == mailer.KindWelcome || kind == mailer.KindPasswordChanged
}

// noticeMaxAge: a notice for an older event is not sent. A welcome days late, after an outage
// or a backfill that reached back a month, would puzzle more than please, and a late
// password notice would ring false alarms about a change long settled.
const noticeMaxAge = 72 * time.Hour

// objectOf is the WorkOS object an event's email is built from: the invitation, magic auth,
// email verification or password reset itself, and for the notices the user.
func objectOf(kind, eventType string, ref eventRef) string {
	switch {
	case kind == mailer.KindWelcome && eventType == "user.created":
		return ref.ID
	case isNotice(kind):
		return ref.UserID
	}
	return ref.ID
}

// welcomeKey is the once-key of a user's welcome email (store.Delivery.OnceKey).
func welcomeKey(userID string) string { return "welcome:" + userID }

// retryEvent rebuilds the event behind a record an operator queued for retry, from its kind and
// object: enough for the same checks as the first time. It has no email, so the check of the
// object's email against the event's is skipped.
func retryEvent(kind, objectID string) (eventType string, data json.RawMessage) {
	fields := map[string]string{"id": objectID}
	switch kind {
	case mailer.KindWelcome:
		eventType = "authentication.email_verification_succeeded"
		fields = map[string]string{"user_id": objectID, "status": "succeeded"}
	case mailer.KindPasswordChanged:
		eventType = "password_reset.succeeded"
		fields = map[string]string{"user_id": objectID}
	default:
		for typ, k := range EventKinds {
			if k == kind {
				eventType = typ
			}
		}
	}
	data, _ = json.Marshal(fields)
	return eventType, data
}
