package store

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Snapshot is everything a store holds, for moving an installation to another backend (`store
// import --from-bolt`): switching must send nothing twice, so the records, the marks and keys
// that stop a send, and the address secret their hashes are keyed by all go along.
type Snapshot struct {
	Position Position
	// AddressSecret keys Recipient and the supersede keys' hashes: without it, trace and
	// supersession would not recognize earlier emails.
	AddressSecret []byte
	Records       []Delivery
	// Once maps a Delivery.OnceKey to the event holding it.
	Once map[string]string
	// Latest maps a supersede key to the newest event sent of it.
	Latest      map[string]LatestMark
	RetryQueue  []string
	Requests    map[string][]byte // request id -> sealed content
	Idempotency []IdempotencyEntry
}

// LatestMark is the newest email of a supersede key that went out, or may have.
type LatestMark struct {
	EventID   string
	CreatedAt time.Time
}

// IdempotencyEntry is one Idempotency-Key's answer.
type IdempotencyEntry struct {
	Key, Fingerprint []byte
	RequestID        string
	AcceptedAt       time.Time
}

// Snapshot reads the whole store in one read transaction.
func (s *Store) Snapshot() (Snapshot, error) {
	snap := Snapshot{AddressSecret: s.AddressSecret(), Once: map[string]string{}, Latest: map[string]LatestMark{},
		Requests: map[string][]byte{}}
	if len(snap.AddressSecret) != 32 {
		return Snapshot{}, fmt.Errorf("store %s has no address secret (it was never opened by a daemon): nothing to move", s.path)
	}
	var rd recordDecoder
	r := rulesNow(s.kinds)
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if snap.Position, err = readPosition(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		if err := forEachRecord(tx, func(k, v []byte) error {
			d, err := rd.delivery(k, v, r)
			if err != nil {
				return err
			}
			snap.Records = append(snap.Records, d)
			return nil
		}); err != nil {
			return err
		}
		each := func(name []byte, fn func(k, v []byte)) error {
			if b := tx.Bucket(name); b != nil {
				return b.ForEach(func(k, v []byte) error { fn(bytes.Clone(k), bytes.Clone(v)); return nil })
			}
			return nil
		}
		if err := each(bucketOnce, func(k, v []byte) { snap.Once[string(k)] = string(v) }); err != nil {
			return err
		}
		if err := each(bucketLatest, func(k, v []byte) {
			if id, at, ok := decodeLatest(v); ok {
				snap.Latest[string(k)] = LatestMark{id, at}
			}
		}); err != nil {
			return err
		}
		if err := each(bucketRetry, func(k, _ []byte) { snap.RetryQueue = append(snap.RetryQueue, string(k)) }); err != nil {
			return err
		}
		if err := each(bucketRequests, func(k, v []byte) { snap.Requests[string(k)] = v }); err != nil {
			return err
		}
		return each(bucketIdempotency, func(k, v []byte) {
			if at, fp, id, ok := decodeIdempotency(v); ok {
				snap.Idempotency = append(snap.Idempotency, IdempotencyEntry{Key: k, Fingerprint: bytes.Clone(fp), RequestID: id, AcceptedAt: at})
			}
		})
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("read store %s: %w", s.path, err)
	}
	return snap, nil
}
