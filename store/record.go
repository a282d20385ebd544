package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
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

// storedDelivery is Delivery on disk.
type storedDelivery struct {
	EventID        string `json:"event_id,omitempty"` // schema 1 only: the key says it
	Kind           string `json:"kind"`
	State          State  `json:"state"`
	Attempts       int    `json:"attempts,omitempty"`
	Reason         string `json:"reason,omitempty"`
	MessageID      string `json:"message_id,omitempty"`
	ObjectID       string `json:"object_id,omitempty"`
	MaybeDuplicate bool   `json:"maybe_duplicate,omitempty"`
	OnceKey        string `json:"once_key,omitempty"`
	EventCreatedAt msTime `json:"event_created_at"`
	FirstSeenAt    msTime `json:"first_seen_at"`
	UpdatedAt      msTime `json:"updated_at"`
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
		return fmt.Errorf("time %s is neither Unix milliseconds nor RFC 3339", b)
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
		ObjectID: d.ObjectID, MaybeDuplicate: d.MaybeDuplicate, OnceKey: d.OnceKey, EventCreatedAt: msTime{d.EventCreatedAt},
		FirstSeenAt: msTime{d.FirstSeenAt}, UpdatedAt: msTime{d.UpdatedAt},
	})
}

// decodeDelivery reads a stored record.
func decodeDelivery(key, v []byte) (Delivery, error) {
	var s storedDelivery
	if err := json.Unmarshal(v, &s); err != nil {
		return Delivery{}, fmt.Errorf("decode delivery %s: %w", key, err)
	}
	return Delivery{
		EventID: string(key), Kind: s.Kind, State: s.State, Attempts: s.Attempts, Reason: s.Reason,
		MessageID: s.MessageID, ObjectID: s.ObjectID, MaybeDuplicate: s.MaybeDuplicate, OnceKey: s.OnceKey,
		EventCreatedAt: s.EventCreatedAt.Time, FirstSeenAt: s.FirstSeenAt.Time, UpdatedAt: s.UpdatedAt.Time,
	}, nil
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
