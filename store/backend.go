package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Backend is the daemon's durable state, whichever database keeps it: *Store here (a bbolt file:
// one host, whose file lock is the leadership) or *postgres.Store (package store/postgres:
// several daemons on several hosts, one of which leads at a time). The contract suite in
// store/storetest holds every backend to the same behaviour, and the rules a record follows
// are stated once, in this package (CheckRecord, QueueRetry, ApplyFeedback, CountFeedback).
type Backend interface {
	// Path names where the state lives: the file, or the database (its DSN without the password).
	Path() string
	Close() error

	Position() (Position, error)
	InitPosition(since time.Time) (Position, error)
	ResetCursor(since time.Time) error
	SetCursor(eventID string, now time.Time) error
	SetCursorAsync(eventID string, now time.Time) (wait func() error)

	Delivery(eventID string) (Delivery, bool, error)
	Save(d Delivery, cursor string, now time.Time) error
	SaveAsync(d Delivery, cursor string, now time.Time) (wait func() error)
	Interrupted() ([]Delivery, error)
	ForEach(fn func(Delivery) error) error
	OnceHolder(key string) (string, error)
	LatestSent(key string) (eventID string, createdAt time.Time, ok bool, err error)
	AddressSecret() []byte
	RecipientHash(address string) string

	Stats() (Stats, error)
	Problems() ([]Delivery, error)
	RequestRetry(now time.Time, ids ...string) ([]Delivery, error)
	RequestRetryAll(now time.Time) (queued, notRetryable []Delivery, err error)
	RetryQueue(limit int) ([]string, error)
	DropRetry(eventID string) error
	PruneWith(olderThan time.Time, batch int, keepGoing func(pruned int) bool) (int, error)

	AcceptRequest(r Request) (id string, replayed bool, err error)
	IdempotentRequest(key, fingerprint []byte, now time.Time) (id string, ok bool, err error)
	RequestContent(id string) (sealed []byte, ok bool, err error)
	OpenRequests() ([]string, error)

	RecordFeedback(messageID string, r FeedbackReport) (eventID, kind string, found bool, err error)
	Trace(recipient string) ([]Delivery, error)
	FeedbackStats(now time.Time, recent int) (day, last FeedbackCounts, err error)
}

var _ Backend = (*Store)(nil)

// Lease is who leads a store several daemons share (the PostgreSQL store's lease row): Holder
// ("" when nobody does), its epoch, and when its lease ends by the database's clock.
type Lease struct {
	Holder    string    `json:"holder"`
	Epoch     int64     `json:"epoch"`
	ExpiresAt time.Time `json:"expires_at"`
	Live      bool      `json:"live"`
}

// ErrFenced means a write was refused because this daemon no longer leads (a multi-instance
// backend: another daemon took over, or an import moved the epoch on). Nothing of the refused
// transaction was written. The worker ends its term and waits to lead again.
var ErrFenced = errors.New("fenced: this daemon no longer leads (another instance took over the lease)")

// CheckRecord checks that d is a record the store may hold: what would not read back is not
// written. kinds, when set, are the kinds a record may have.
func CheckRecord(d Delivery, kinds []string) error {
	if err := checkDelivery([]byte(d.EventID), "", d, rulesNow(kinds)); err != nil {
		return fmt.Errorf("delivery record %q: %w", clip([]byte(d.EventID), 80), err)
	}
	if d.SupersedeKey != "" && (d.State == Sent || d.State == Ambiguous) && !supersedeKeyShape(d.SupersedeKey) {
		return fmt.Errorf("supersede key %q is not a kind and a hash", clip([]byte(d.SupersedeKey), 80))
	}
	return nil
}

// CheckCursor checks an event id the cursor may be set to.
func CheckCursor(eventID string) error {
	if !plausibleEventID([]byte(eventID)) {
		return fmt.Errorf("the cursor %q is not an event id", clip([]byte(eventID), 80))
	}
	return nil
}

// HoldsOnce reports what a record in d's state does with its OnceKey: take it (sending, sent,
// ambiguous: it sent or may have), let go of it (skipped, dead: it ended without sending), or
// neither (pending).
func HoldsOnce(s State) (take, release bool) {
	switch s {
	case Sending, Sent, Ambiguous:
		return true, false
	case Skipped, Dead:
		return false, true
	}
	return false, false
}

// MarksLatest reports whether a saved d becomes a candidate for the newest email of its
// SupersedeKey.
func MarksLatest(d Delivery) bool {
	return d.SupersedeKey != "" && (d.State == Sent || d.State == Ambiguous)
}

// NewerThanLatest reports whether d is newer than the mark (eventID, at) of its key.
func NewerThanLatest(d Delivery, eventID string, at time.Time) bool {
	return d.EventCreatedAt.After(at) || d.EventCreatedAt.Equal(at) && d.EventID > eventID
}

// WhyNotRetryable says why d cannot be queued for retry, or "" when it can.
func WhyNotRetryable(d Delivery) string { return whyNotRetryable(d) }

// QueueRetry is d as a retry request leaves it: pending, attempts reset, keeping that an
// ambiguous send may have reached the recipient.
func QueueRetry(d Delivery, now time.Time) Delivery {
	wasAmbiguous := d.State == Ambiguous
	d.State, d.Reason, d.Attempts, d.MessageID = Pending, RetryReason, 0, ""
	d.MaybeDuplicate = wasAmbiguous
	d.UpdatedAt = now
	return d
}

// SelectRetries picks the records a retry request names (each once, in order), reading each with
// get: all can be retried, or the error is a *RetryRefusedError naming each that cannot, and
// why.
func SelectRetries(ids []string, get func(id string) (d Delivery, found bool, err error)) ([]Delivery, error) {
	var out []Delivery
	refused := map[string]string{}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		d, found, err := get(id)
		switch {
		case err != nil:
			return nil, err
		case !found:
			refused[id] = "no delivery record with this event id"
		case whyNotRetryable(d) != "":
			refused[id] = whyNotRetryable(d)
		default:
			out = append(out, d)
		}
	}
	if len(refused) > 0 {
		return nil, &RetryRefusedError{Refused: refused}
	}
	return out, nil
}

// CleanFeedbackDetail drops SES's free text when it is too long or could name an address.
func CleanFeedbackDetail(r FeedbackReport) FeedbackReport {
	if len(r.Detail) > maxFeedbackText || strings.ContainsAny(r.Detail, "\r\n@") {
		r.Detail = ""
	}
	return r
}

// ApplyFeedback records r on d, each outcome once, at its first report; changed is false when d
// had it already.
func ApplyFeedback(d *Delivery, r FeedbackReport) (changed bool, err error) {
	f := Feedback{}
	if d.Feedback != nil {
		f = *d.Feedback
	}
	at := r.At
	if !StorableTime(at) || at.IsZero() {
		at = time.Now()
	}
	switch r.Outcome {
	case "delivered":
		changed = f.DeliveredAt.IsZero()
		if changed {
			f.DeliveredAt = at
		}
	case "bounced":
		changed = f.BouncedAt.IsZero()
		if changed {
			f.BouncedAt, f.Bounce, f.BouncePermanent = at, r.Detail, r.Permanent
		}
	case "complaint":
		changed = f.ComplainedAt.IsZero()
		if changed {
			f.ComplainedAt, f.Complaint = at, r.Detail
		}
	case "delayed":
		changed = f.DelayedAt.IsZero()
		if changed {
			f.DelayedAt, f.Delay = at, r.Detail
		}
	case "rejected":
		changed = f.RejectedAt.IsZero()
		if changed {
			f.RejectedAt, f.Reject = at, r.Detail
		}
	default:
		return false, fmt.Errorf("unknown feedback outcome %q", r.Outcome)
	}
	if changed {
		d.Feedback = &f
	}
	return changed, nil
}

// SentEmail is one email SES accepted, for CountFeedback: when it was recorded sent, and what SES
// reported about it.
type SentEmail struct {
	At       time.Time
	Feedback *Feedback
}

// CountsForFeedback reports whether d is an email CountFeedback counts.
func CountsForFeedback(d Delivery) bool {
	return d.MessageID != "" && (d.State == Sent || d.State == Ambiguous)
}

// CountFeedback counts SES's feedback over the emails sent in the 24 hours before now and over
// the last recent sent, the windows SES judges an account's bounce and complaint rates by.
func CountFeedback(all []SentEmail, now time.Time, recent int) (day, last FeedbackCounts) {
	slices.SortFunc(all, func(a, b SentEmail) int { return b.At.Compare(a.At) })
	add := func(c *FeedbackCounts, f *Feedback) {
		c.Sent++
		if f == nil {
			return
		}
		c.Reported++
		switch {
		case !f.BouncedAt.IsZero() && f.BouncePermanent:
			c.Bounced++
		case !f.BouncedAt.IsZero():
			c.TransientBounces++
		}
		for _, x := range []struct {
			at time.Time
			n  *int
		}{{f.DeliveredAt, &c.Delivered}, {f.ComplainedAt, &c.Complained}, {f.DelayedAt, &c.Delayed}, {f.RejectedAt, &c.Rejected}} {
			if !x.at.IsZero() {
				*x.n++
			}
		}
	}
	for i, e := range all {
		if !e.At.Before(now.Add(-24 * time.Hour)) {
			add(&day, e.Feedback)
		}
		if i < recent {
			add(&last, e.Feedback)
		}
	}
	return day, last
}

// EncodeRecord is d as the stores keep it: lean JSON without the event id (the key says it),
// times in Unix milliseconds. It checks d first (CheckRecord).
func EncodeRecord(d Delivery) ([]byte, error) {
	if err := CheckRecord(d, nil); err != nil {
		return nil, err
	}
	return encodeDelivery(d)
}

// DecodeRecord reads what EncodeRecord wrote for eventID, checking it as every read does: a
// record this code could not have written is damage.
func DecodeRecord(eventID string, v []byte, kinds []string) (Delivery, error) {
	return decodeDelivery([]byte(eventID), v, rulesNow(kinds))
}
