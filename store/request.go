package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Requests are emails the app asked for through the send API (a Magic Link): no event stands
// behind them, so what the email needs is kept until its record is final, sealed by the caller
// (the address is PII, and the file holds nothing in clear). A request's record is a Delivery
// like an event's, keyed by its request id.
var (
	// bucketRequests maps a request id to its sealed content, from acceptance until its record
	// is final (putDelivery deletes it then).
	bucketRequests = []byte("requests")
	// bucketIdempotency maps a keyed hash of an Idempotency-Key to the request it created: the
	// acceptance time (8 bytes of Unix milliseconds), a 16-byte fingerprint of the request, and
	// the request id. Entries last IdempotencyTTL.
	bucketIdempotency = []byte("idempotency")
)

// RequestIDPrefix starts every request id: it tells a request's record from an event's.
const RequestIDPrefix = "request_"

// IdempotencyTTL is how long an Idempotency-Key keeps its answer: the send API promises 24 h.
const IdempotencyTTL = 48 * time.Hour

// ErrIdempotencyConflict: the Idempotency-Key was used for a different request.
var ErrIdempotencyConflict = errors.New("the Idempotency-Key was used for a different request")

// IsRequest reports whether a record id is a request's.
func IsRequest(id string) bool { return strings.HasPrefix(id, RequestIDPrefix) }

// Request is a request to accept.
type Request struct {
	ID, Kind   string
	Sealed     []byte
	AcceptedAt time.Time
	// IdempotencyKey (a keyed hash, never the key) and Fingerprint (a keyed hash of the
	// request), when the key is set, make a second request with the key answer as the first.
	IdempotencyKey []byte
	Fingerprint    []byte
}

// AcceptRequest records r durably: its pending record, its sealed content and its idempotency
// key, in one transaction. When the key is held already it writes nothing and returns the
// request holding it (replayed true), or ErrIdempotencyConflict when that request differs.
func (s *Store) AcceptRequest(r Request) (id string, replayed bool, err error) {
	if !IsRequest(r.ID) || len(r.Sealed) == 0 || len(r.Fingerprint) != 16 && len(r.IdempotencyKey) > 0 {
		return "", false, fmt.Errorf("accept request %q: malformed (the caller's mistake)", clip([]byte(r.ID), 80))
	}
	var held string
	var conflict bool
	// A key held is an answer, not a failure of the transaction: a failing write would stop
	// the store's group commit for everyone.
	wait := s.commits.enqueue(func(tx *bolt.Tx) error {
		held, conflict = "", false
		idem := tx.Bucket(bucketIdempotency)
		if len(r.IdempotencyKey) > 0 {
			if at, fp, holder, ok := decodeIdempotency(idem.Get(r.IdempotencyKey)); ok && r.AcceptedAt.Sub(at) < IdempotencyTTL {
				held, conflict = holder, !bytes.Equal(fp, r.Fingerprint)
				return nil
			}
		}
		d := Delivery{EventID: r.ID, Kind: r.Kind, State: Pending, EventCreatedAt: r.AcceptedAt, FirstSeenAt: r.AcceptedAt, UpdatedAt: r.AcceptedAt}
		if err := putDelivery(tx, d); err != nil {
			return err
		}
		if err := tx.Bucket(bucketRequests).Put([]byte(r.ID), r.Sealed); err != nil {
			return err
		}
		if len(r.IdempotencyKey) == 0 {
			return nil
		}
		v := binary.BigEndian.AppendUint64(nil, uint64(r.AcceptedAt.UnixMilli()))
		v = append(append(v, r.Fingerprint...), r.ID...)
		return idem.Put(r.IdempotencyKey, v)
	})
	if err := wait(); err != nil {
		return "", false, fmt.Errorf("record request %s: %w", r.ID, err)
	}
	switch {
	case conflict:
		return held, true, ErrIdempotencyConflict
	case held != "":
		return held, true, nil
	}
	return r.ID, false, nil
}

// IdempotentRequest returns the request an Idempotency-Key created within IdempotencyTTL of now,
// or ok false. A different fingerprint is ErrIdempotencyConflict.
func (s *Store) IdempotentRequest(key, fingerprint []byte, now time.Time) (id string, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdempotency)
		if b == nil {
			return nil
		}
		at, fp, holder, found := decodeIdempotency(b.Get(key))
		if !found || now.Sub(at) >= IdempotencyTTL {
			return nil
		}
		id, ok = holder, true
		if !bytes.Equal(fp, fingerprint) {
			return ErrIdempotencyConflict
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrIdempotencyConflict) {
		return "", false, fmt.Errorf("read idempotency key: %w", err)
	}
	return id, ok, err
}

func decodeIdempotency(v []byte) (at time.Time, fingerprint []byte, id string, ok bool) {
	if len(v) <= 8+16 || !plausibleEventID(v[24:]) {
		return time.Time{}, nil, "", false
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(v[:8]))), v[8:24], string(v[24:]), true
}

// RequestContent returns a request's sealed content; ok is false once its record is final.
func (s *Store) RequestContent(id string) (sealed []byte, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRequests); b != nil {
			if v := b.Get([]byte(id)); v != nil {
				sealed, ok = bytes.Clone(v), true
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read request %s: %w", id, err)
	}
	return sealed, ok, nil
}

// OpenRequests lists the requests whose records are not final yet, oldest first: after a
// restart they are delivered again.
func (s *Store) OpenRequests() ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRequests)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list open requests: %w", err)
	}
	return ids, nil
}

// dropRequestContent deletes a request's content once its record d is final: the address is
// kept no longer than the email needs it.
func dropRequestContent(tx *bolt.Tx, d Delivery) error {
	if !d.State.Final() || !IsRequest(d.EventID) {
		return nil
	}
	if b := tx.Bucket(bucketRequests); b != nil {
		return b.Delete([]byte(d.EventID))
	}
	return nil
}

// pruneIdempotency deletes the idempotency keys older than IdempotencyTTL.
func pruneIdempotency(tx *bolt.Tx, now time.Time) error {
	b := tx.Bucket(bucketIdempotency)
	if b == nil {
		return nil
	}
	var stale [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if at, _, _, ok := decodeIdempotency(v); !ok || now.Sub(at) >= IdempotencyTTL {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range stale {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
