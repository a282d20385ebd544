package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// How a record is stored. A record is JSON, so an operator can read the file with bbolt's own
// tools, but lean: the event id is the key and not repeated, and times are Unix milliseconds.
// 100,000 records then fit in about 30 MiB (see BENCHMARKS.md). Records written by schema 1
// (with event_id, and RFC 3339 times) read the same.
//
// Where a record is kept: a record in state Sending lives in bucketSending, every other one in
// bucketDeliveries, never both. Nearly every record is written twice, `sending` right before
// the send and final right after; the final one is larger (its SES message id), and bbolt splits
// a full page a grown record no longer fits in, which left the append-only deliveries bucket a
// third empty. Kept apart, the deliveries bucket receives each record once, at its final size,
// and stays nearly full; bucketSending holds only the sends in flight.
//
// Schema 1 kept every record in bucketDeliveries and only an empty index entry in
// bucketSending. Read paths understand both; a read-write open moves schema 1's sending
// records over and stamps schema 2, which earlier builds refuse to open.

// storedDelivery is Delivery on disk. A field it does not name makes a record unreadable
// (decodeDelivery), so a new field needs a new schema version: an older build would refuse the
// file as damaged rather than name the newer schema.
type storedDelivery struct {
	EventID        string          `json:"event_id,omitempty"` // schema 1 only: the key says it
	Kind           string          `json:"kind"`
	State          State           `json:"state"`
	Attempts       int             `json:"attempts,omitempty"`
	Reason         string          `json:"reason,omitempty"`
	MessageID      string          `json:"message_id,omitempty"`
	ObjectID       string          `json:"object_id,omitempty"`
	MaybeDuplicate bool            `json:"maybe_duplicate,omitempty"`
	OnceKey        string          `json:"once_key,omitempty"`
	Recipient      string          `json:"recipient,omitempty"` // schema 3
	Feedback       *storedFeedback `json:"feedback,omitempty"`  // schema 3
	EventCreatedAt msTime          `json:"event_created_at"`
	FirstSeenAt    msTime          `json:"first_seen_at"`
	UpdatedAt      msTime          `json:"updated_at"`
}

// msTime is a time stored as Unix milliseconds (0: the zero time). It also reads the RFC 3339
// strings schema 1 wrote.
type msTime struct{ time.Time }

func (t msTime) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("0"), nil
	}
	return strconv.AppendInt(nil, t.UnixMilli(), 10), nil
}

func (t *msTime) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return t.Time.UnmarshalJSON(b)
	}
	ms, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("time %s is neither Unix milliseconds nor RFC 3339", clip(b, 40))
	}
	if ms == 0 {
		t.Time = time.Time{}
	} else {
		t.Time = time.UnixMilli(ms).UTC()
	}
	return nil
}

func encodeDelivery(d Delivery) ([]byte, error) {
	return json.Marshal(storedDelivery{
		Kind: d.Kind, State: d.State, Attempts: d.Attempts, Reason: d.Reason, MessageID: d.MessageID,
		ObjectID: d.ObjectID, MaybeDuplicate: d.MaybeDuplicate, OnceKey: d.OnceKey, Recipient: d.Recipient,
		Feedback: storeFeedback(d.Feedback), EventCreatedAt: msTime{d.EventCreatedAt},
		FirstSeenAt: msTime{d.FirstSeenAt}, UpdatedAt: msTime{d.UpdatedAt},
	})
}

// What a stored record must be. The store trusts what it reads: a state nobody knows is counted
// as nothing, never listed as dead and backfilled as if never sent, so a record this code could
// not have written is damage, reported like a damaged page. Each rule holds for every record the
// worker, the operator commands and earlier schemas write; what a flipped byte can change without
// breaking one (a letter of a reason, a low digit of a time) changes nothing that decides a send.
const (
	maxEventIDLen = 200
	maxAttempts   = 1_000_000
	// maxClockAhead is how far past this host's clock a time may lie: clocks are stepped, and a
	// record may come from a host whose clock ran a little ahead.
	maxClockAhead = 7 * 24 * time.Hour
	// maxClockBack is how much earlier than first_seen_at updated_at may be: a clock stepped back
	// between two writes of one record.
	maxClockBack = 24 * time.Hour
)

// earliestTime is before anything this daemon (or WorkOS's events API) ever recorded.
var earliestTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// StorableTime reports whether a record may hold t: zero, or from earliestTime to a week past
// this host's clock (the range Open accepts). A time from outside (an event's created_at) that
// is not must be stored as zero, or the record could not be saved.
func StorableTime(t time.Time) bool {
	return t.IsZero() || !t.Before(earliestTime) && !t.After(time.Now().Add(maxClockAhead))
}

// objectIDShape is the worker's ValidObjectID, `^[a-z][a-z_]*_[0-9A-Za-z]{1,64}$` (the worker
// records only ids it accepted), spelled out: the regexp took about 6% of verify's time. The id
// is split at its last underscore, as the part after it has none.
func objectIDShape(id string) bool {
	i := strings.LastIndexByte(id, '_')
	if i < 1 || len(id)-i-1 < 1 || len(id)-i-1 > 64 || id[0] < 'a' || id[0] > 'z' {
		return false
	}
	for j := 1; j < i; j++ {
		if c := id[j]; (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	for j := i + 1; j < len(id); j++ {
		if c := id[j]; (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// rules are what a record is checked against besides itself.
type rules struct {
	// kinds, when set, are the kinds a record may have besides "" (Options.Kinds).
	kinds []string
	// latest is the latest time a record may hold.
	latest time.Time
}

func rulesNow(kinds []string) rules {
	return rules{kinds: kinds, latest: time.Now().Add(maxClockAhead)}
}

// decodeDelivery reads a stored record and checks that it is one this code writes. Every read of
// a record goes through it, so damage is an error wherever it is met.
func decodeDelivery(key, v []byte, r rules) (Delivery, error) {
	var rd recordDecoder
	return rd.delivery(key, v, r)
}

// recordDecoder decodes records one after another with one json.Decoder: a decoder and its
// buffer per record were most of what verify allocated.
type recordDecoder struct {
	src bytes.Reader
	dec *json.Decoder
}

func (rd *recordDecoder) delivery(key, v []byte, r rules) (Delivery, error) {
	var s storedDelivery
	if err := rd.decode(v, &s); err != nil {
		return Delivery{}, fmt.Errorf("delivery record %q: %w", clip(key, 80), err)
	}
	d := Delivery{
		EventID: string(key), Kind: s.Kind, State: s.State, Attempts: s.Attempts, Reason: s.Reason,
		MessageID: s.MessageID, ObjectID: s.ObjectID, MaybeDuplicate: s.MaybeDuplicate, OnceKey: s.OnceKey,
		Recipient: s.Recipient, Feedback: s.Feedback.feedback(), EventCreatedAt: s.EventCreatedAt.Time, FirstSeenAt: s.FirstSeenAt.Time, UpdatedAt: s.UpdatedAt.Time,
	}
	if err := checkDelivery(key, s.EventID, d, r); err != nil {
		return Delivery{}, fmt.Errorf("delivery record %q: %w", clip(key, 80), err)
	}
	return d, nil
}

// decode decodes v, one JSON object and nothing after it, into s. Unknown fields are an error:
// a key renamed by a flipped byte ("stbte") would otherwise be skipped and its field read as
// empty.
func (rd *recordDecoder) decode(v []byte, s *storedDelivery) error {
	if len(v) == 0 {
		return errors.New("the value is empty")
	}
	if rd.dec == nil {
		rd.dec = json.NewDecoder(&rd.src)
		rd.dec.DisallowUnknownFields()
	}
	rd.src.Reset(v)
	start := rd.dec.InputOffset()
	err := rd.dec.Decode(s)
	if n := rd.dec.InputOffset() - start; err == nil && n != int64(len(v)) {
		err = fmt.Errorf("data after the record (%d bytes)", int64(len(v))-n)
	}
	if err != nil {
		// The decoder keeps its error and whatever it buffered: the next record needs a new one.
		rd.dec = nil
	}
	return err
}

func checkDelivery(key []byte, storedID string, d Delivery, r rules) error {
	switch {
	case !plausibleEventID(key):
		return errors.New("the key is not an event id")
	case storedID != "" && storedID != string(key):
		return fmt.Errorf("event_id %q differs from the key", clip([]byte(storedID), 80))
	}
	switch d.State {
	case Pending, Sending, Sent, Skipped, Dead, Ambiguous:
	default:
		return fmt.Errorf("unknown state %q", clip([]byte(d.State), 40))
	}
	switch {
	case d.Kind == "":
	case len(r.kinds) > 0 && !slices.Contains(r.kinds, d.Kind):
		return fmt.Errorf("unknown kind %q (kinds: %s)", clip([]byte(d.Kind), 40), strings.Join(r.kinds, ", "))
	case !kindShape(d.Kind):
		return fmt.Errorf("kind %q is not a kind name", clip([]byte(d.Kind), 40))
	}
	if d.Attempts < 0 || d.Attempts >= maxAttempts {
		return fmt.Errorf("attempts %d is out of range", d.Attempts)
	}
	if d.ObjectID != "" && !objectIDShape(d.ObjectID) {
		return fmt.Errorf("object_id %q is not a WorkOS id", clip([]byte(d.ObjectID), 80))
	}
	if d.OnceKey != "" && !onceKeyShape(d.OnceKey) {
		return fmt.Errorf("once_key %q is not a kind and a WorkOS id", clip([]byte(d.OnceKey), 80))
	}
	if d.Recipient != "" && !recipientShape(d.Recipient) {
		return fmt.Errorf("recipient %q is not a recipient hash", clip([]byte(d.Recipient), 80))
	}
	if err := checkFeedback(d.Feedback, r.latest); err != nil {
		return err
	}
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"event_created_at", d.EventCreatedAt}, {"first_seen_at", d.FirstSeenAt}, {"updated_at", d.UpdatedAt}} {
		if !t.at.IsZero() && (t.at.Before(earliestTime) || t.at.After(r.latest)) {
			return fmt.Errorf("%s %s is out of range (%s to a week from now)", t.name, t.at.UTC().Format(time.RFC3339Nano),
				earliestTime.Format(time.DateOnly))
		}
	}
	if !d.FirstSeenAt.IsZero() && !d.UpdatedAt.IsZero() && d.UpdatedAt.Before(d.FirstSeenAt.Add(-maxClockBack)) {
		return fmt.Errorf("updated_at %s is more than %s before first_seen_at %s", d.UpdatedAt.UTC().Format(time.RFC3339Nano),
			maxClockBack, d.FirstSeenAt.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// kindShape: a kind is a short snake_case name (mailer's kinds).
func kindShape(kind string) bool {
	if len(kind) == 0 || len(kind) > 40 || kind[0] < 'a' || kind[0] > 'z' {
		return false
	}
	for i := 1; i < len(kind); i++ {
		if c := kind[i]; (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

// onceKeyShape: a once key names a kind and the WorkOS object it is once for (the worker's
// welcomeKey, "welcome:" and the user id).
func onceKeyShape(key string) bool {
	kind, id, ok := strings.Cut(key, ":")
	return ok && kindShape(kind) && objectIDShape(id)
}

// plausibleEventID: event ids (the record keys and the cursor) are short printable ASCII without
// spaces (WorkOS's are event_ and a ULID).
func plausibleEventID(id []byte) bool {
	if len(id) == 0 || len(id) > maxEventIDLen {
		return false
	}
	for _, c := range id {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// clip shortens b to at most n bytes for an error message.
func clip(b []byte, n int) string {
	return string(b[:min(len(b), n)])
}

// getRecord returns the stored record for key wherever it lives, or nil.
func getRecord(tx *bolt.Tx, key []byte) []byte {
	if v := tx.Bucket(bucketSending).Get(key); len(v) > 0 {
		return v
	}
	return tx.Bucket(bucketDeliveries).Get(key)
}

// forEachRecord calls fn for every record in key order, from both buckets.
func forEachRecord(tx *bolt.Tx, fn func(k, v []byte) error) error {
	all, sending := tx.Bucket(bucketDeliveries).Cursor(), tx.Bucket(bucketSending).Cursor()
	ka, va := all.First()
	ks, vs := sending.First()
	for ka != nil || ks != nil {
		if ks != nil && len(vs) == 0 { // schema 1's index entry: the record is in deliveries
			ks, vs = sending.Next()
			continue
		}
		if ka == nil || ks != nil && bytes.Compare(ks, ka) < 0 {
			if err := fn(ks, vs); err != nil {
				return err
			}
			ks, vs = sending.Next()
			continue
		}
		if err := fn(ka, va); err != nil {
			return err
		}
		ka, va = all.Next()
	}
	return nil
}

// migrateSchema1 moves schema 1's sending records into bucketSending.
func migrateSchema1(tx *bolt.Tx) error {
	all, sending := tx.Bucket(bucketDeliveries), tx.Bucket(bucketSending)
	var keys [][]byte
	err := sending.ForEach(func(k, v []byte) error {
		if len(v) == 0 {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		v := all.Get(k)
		if h, err := decodeHead(k, v); v == nil || err != nil || h.State != Sending {
			// A stale index entry (no record, or one that has moved on): only a record that is
			// sending belongs in the sending bucket.
			if err := sending.Delete(k); err != nil {
				return err
			}
			continue
		}
		v = bytes.Clone(v)
		if err := sending.Put(k, v); err != nil {
			return err
		}
		if err := all.Delete(k); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, []byte(schemaVersion))
}
