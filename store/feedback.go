package store

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// What SES reported about sent emails (SES feedback through SQS, package sesfeedback), and the
// recipient's keyed hash that lets an operator find one person's emails (`trace`) while the store
// holds no address.

// bucketMessages maps an SES message id to the event whose email it is, for the feedback that
// names only the message. putDelivery writes it with a record that has a message id; pruning
// deletes it with the record.
var bucketMessages = []byte("messages")

// Feedback is what SES said happened to a sent email. Each outcome is kept once, at its first
// report: SQS delivers at least once, so the same report may come again.
type Feedback struct {
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	BouncedAt   time.Time `json:"bounced_at,omitzero"`
	// Bounce is SES's bounce type and subtype, "Permanent/General"; BouncePermanent says SES will
	// not retry: the address does not take mail.
	Bounce          string    `json:"bounce,omitempty"`
	BouncePermanent bool      `json:"bounce_permanent,omitempty"`
	ComplainedAt    time.Time `json:"complained_at,omitzero"`
	Complaint       string    `json:"complaint,omitempty"`
	DelayedAt       time.Time `json:"delayed_at,omitzero"`
	Delay           string    `json:"delay,omitempty"`
	RejectedAt      time.Time `json:"rejected_at,omitzero"`
	Reject          string    `json:"reject,omitempty"`
}

// FeedbackReport is one report to record.
type FeedbackReport struct {
	// Outcome is delivered, bounced, complaint, delayed or rejected.
	Outcome string
	At      time.Time
	Detail  string
	// Permanent: a bounce SES will not retry.
	Permanent bool
}

// storedFeedback is Feedback on disk, times in Unix milliseconds.
type storedFeedback struct {
	DeliveredAt     msTime `json:"delivered_at"`
	BouncedAt       msTime `json:"bounced_at"`
	Bounce          string `json:"bounce,omitempty"`
	BouncePermanent bool   `json:"bounce_permanent,omitempty"`
	ComplainedAt    msTime `json:"complained_at"`
	Complaint       string `json:"complaint,omitempty"`
	DelayedAt       msTime `json:"delayed_at"`
	Delay           string `json:"delay,omitempty"`
	RejectedAt      msTime `json:"rejected_at"`
	Reject          string `json:"reject,omitempty"`
}

func storeFeedback(f *Feedback) *storedFeedback {
	if f == nil {
		return nil
	}
	return &storedFeedback{DeliveredAt: msTime{f.DeliveredAt}, BouncedAt: msTime{f.BouncedAt}, Bounce: f.Bounce,
		BouncePermanent: f.BouncePermanent, ComplainedAt: msTime{f.ComplainedAt}, Complaint: f.Complaint,
		DelayedAt: msTime{f.DelayedAt}, Delay: f.Delay, RejectedAt: msTime{f.RejectedAt}, Reject: f.Reject}
}

func (s *storedFeedback) feedback() *Feedback {
	if s == nil {
		return nil
	}
	return &Feedback{DeliveredAt: s.DeliveredAt.Time, BouncedAt: s.BouncedAt.Time, Bounce: s.Bounce,
		BouncePermanent: s.BouncePermanent, ComplainedAt: s.ComplainedAt.Time, Complaint: s.Complaint,
		DelayedAt: s.DelayedAt.Time, Delay: s.Delay, RejectedAt: s.RejectedAt.Time, Reject: s.Reject}
}

// maxFeedbackText bounds SES's words kept on a record.
const maxFeedbackText = 200

func checkFeedback(f *Feedback, latest time.Time) error {
	if f == nil {
		return nil
	}
	for _, t := range []time.Time{f.DeliveredAt, f.BouncedAt, f.ComplainedAt, f.DelayedAt, f.RejectedAt} {
		if !t.IsZero() && (t.Before(earliestTime) || t.After(latest)) {
			return fmt.Errorf("feedback time %s is out of range", t.UTC().Format(time.RFC3339Nano))
		}
	}
	for _, s := range []string{f.Bounce, f.Complaint, f.Delay, f.Reject} {
		if len(s) > maxFeedbackText || strings.ContainsAny(s, "\r\n@") {
			return errors.New("feedback text is too long or holds a line break or an address")
		}
	}
	return nil
}

// recipientShape: 32 lowercase hex digits.
func recipientShape(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// HashRecipient is the keyed hash of an address kept on records: HMAC-SHA-256 with the store's
// address secret (created at random with the store) of the address trimmed and in lower case,
// cut to 128 bits. Without the secret it cannot be reversed or tested against a guess; with the
// store file, which holds the secret, a guessed address can be checked.
func HashRecipient(secret []byte, address string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("recipient\x00" + strings.ToLower(strings.TrimSpace(address))))
	return hex.EncodeToString(mac.Sum(nil)[:16])
}

// RecipientHash is HashRecipient with this store's secret.
func (s *Store) RecipientHash(address string) string { return HashRecipient(s.addressSecret, address) }

// indexMessage points d's SES message id at d.
func indexMessage(tx *bolt.Tx, d Delivery) error {
	if d.MessageID == "" || len(d.MessageID) > 200 {
		return nil
	}
	return tx.Bucket(bucketMessages).Put([]byte(d.MessageID), []byte(d.EventID))
}

// unindexMessage drops a pruned record's message id.
func unindexMessage(tx *bolt.Tx, key []byte, messageID string) error {
	b := tx.Bucket(bucketMessages)
	if messageID == "" || b == nil {
		return nil
	}
	if id := b.Get([]byte(messageID)); id != nil && string(id) == string(key) {
		return b.Delete([]byte(messageID))
	}
	return nil
}

// RecordFeedback records a report on the delivery whose email has SES message id messageID. found
// is false when no record has it (another sender's email, one pruned, or sent before schema 3).
// A report already recorded changes nothing.
func (s *Store) RecordFeedback(messageID string, r FeedbackReport) (eventID, kind string, found bool, err error) {
	r = CleanFeedbackDetail(r)
	err = s.update(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketMessages).Get([]byte(messageID))
		if id == nil {
			return nil
		}
		v := getRecord(tx, id)
		if v == nil {
			return nil
		}
		d, err := decodeDelivery(id, v, rulesNow(nil))
		if err != nil {
			return err
		}
		eventID, kind, found = d.EventID, d.Kind, true
		if changed, err := ApplyFeedback(&d, r); err != nil || !changed {
			return err
		}
		return putDelivery(tx, d)
	})
	if err != nil {
		return "", "", false, fmt.Errorf("record SES feedback for message %s: %w", messageID, err)
	}
	return eventID, kind, found, nil
}

// Trace returns every delivery to the recipient with hash recipient (RecipientHash), newest first.
func (s *Store) Trace(recipient string) ([]Delivery, error) {
	var out []Delivery
	err := s.db.View(func(tx *bolt.Tx) error {
		var rd recordDecoder
		return forEachRecord(tx, func(k, v []byte) error {
			// Cheap test before decoding: the hash is in the JSON as written.
			if !strings.Contains(string(v), recipient) {
				return nil
			}
			d, err := rd.delivery(k, v, rulesNow(nil))
			if err != nil {
				return err
			}
			if d.Recipient == recipient {
				out = append(out, d)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	slices.SortStableFunc(out, func(a, b Delivery) int { return b.FirstSeenAt.Compare(a.FirstSeenAt) })
	return out, nil
}

// FeedbackCounts are the SES feedback about the emails sent in a window.
type FeedbackCounts struct {
	// Sent counts the emails SES accepted (records with an SES message id); Reported those SES
	// reported anything about.
	Sent      int `json:"sent"`
	Reported  int `json:"reported"`
	Delivered int `json:"delivered"`
	// Bounced counts permanent bounces (SES's bounce rate); TransientBounces the others.
	Bounced          int `json:"bounced"`
	TransientBounces int `json:"transient_bounces"`
	Complained       int `json:"complained"`
	Delayed          int `json:"delayed"`
	Rejected         int `json:"rejected"`
}

// FeedbackStats counts SES's feedback over the emails sent in the 24 hours before now and over
// the last recent sent, the windows SES judges an account's bounce and complaint rates by.
func (s *Store) FeedbackStats(now time.Time, recent int) (day, last FeedbackCounts, err error) {
	var all []SentEmail
	err = s.db.View(func(tx *bolt.Tx) error {
		var rd recordDecoder
		return tx.Bucket(bucketDeliveries).ForEach(func(k, v []byte) error {
			if !strings.Contains(string(v), `"message_id"`) {
				return nil
			}
			d, err := rd.delivery(k, v, rulesNow(nil))
			if err != nil {
				return err
			}
			if CountsForFeedback(d) {
				all = append(all, SentEmail{d.UpdatedAt, d.Feedback})
			}
			return nil
		})
	})
	if err != nil {
		return day, last, fmt.Errorf("count SES feedback: %w", err)
	}
	day, last = CountFeedback(all, now, recent)
	return day, last, nil
}
