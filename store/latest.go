package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketLatest maps a Delivery.SupersedeKey to the newest event whose email of that kind to
// that address went out, or may have: 8 bytes of its created_at in Unix milliseconds, then
// its id. An older code to the same person is then not sent after it, also after a restart.
// Older builds leave the bucket alone, so it needs no schema of its own.
var bucketLatest = []byte("latest")

// supersedeKeyShape: a kind, a colon and 32 hex digits (a keyed hash of the address, never the
// address).
func supersedeKeyShape(key string) bool {
	kind, sum, ok := strings.Cut(key, ":")
	if !ok || !kindShape(kind) || len(sum) != 32 {
		return false
	}
	_, err := hex.DecodeString(sum)
	return err == nil
}

// markLatest records d as the newest sent email of its SupersedeKey when it is newer than the
// one recorded.
func markLatest(tx *bolt.Tx, d Delivery) error {
	if !MarksLatest(d) {
		return nil
	}
	if !supersedeKeyShape(d.SupersedeKey) {
		return fmt.Errorf("supersede key %q is not a kind and a hash", clip([]byte(d.SupersedeKey), 80))
	}
	b := tx.Bucket(bucketLatest)
	if b == nil {
		return nil // a file opened by an older build's layout; the key is kept from the next start on
	}
	k := []byte(d.SupersedeKey)
	if id, at, ok := decodeLatest(b.Get(k)); ok && !NewerThanLatest(d, id, at) {
		return nil
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(d.EventCreatedAt.UnixMilli()))
	return b.Put(k, append(v, d.EventID...))
}

// decodeLatest reads a mark. Damage reads as none: a mark must never supersede what it should
// not, and a time from the future would supersede every code to the address.
func decodeLatest(v []byte) (eventID string, at time.Time, ok bool) {
	if len(v) <= 8 || !plausibleEventID(v[8:]) {
		return "", time.Time{}, false
	}
	at = time.UnixMilli(int64(binary.BigEndian.Uint64(v[:8]))).UTC()
	if at.Before(earliestTime) || at.After(time.Now().Add(maxClockAhead)) {
		return "", time.Time{}, false
	}
	return string(v[8:]), at, true
}

// LatestSent returns the newest event whose email of key went out, or may have; ok is false
// when there is none.
func (s *Store) LatestSent(key string) (eventID string, createdAt time.Time, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketLatest); b != nil {
			eventID, createdAt, ok = decodeLatest(b.Get([]byte(key)))
		}
		return nil
	})
	if err != nil {
		return "", time.Time{}, false, fmt.Errorf("read %s: %w", key, err)
	}
	return eventID, createdAt, ok, nil
}

// pruneLatest drops the marks of events created before olderThan: codes that old have
// expired, so nothing they could supersede would be sent anyway.
func pruneLatest(tx *bolt.Tx, olderThan time.Time) error {
	b := tx.Bucket(bucketLatest)
	if b == nil {
		return nil
	}
	var old [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if _, at, ok := decodeLatest(v); !ok || at.Before(olderThan) {
			old = append(old, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// keyAddressSecret is the meta key of the random secret that keys the hashes of addresses, so
// that the file holds no hash a dictionary of addresses could match without it.
var keyAddressSecret = []byte("address_secret")

func ensureAddressSecret(meta *bolt.Bucket) ([]byte, error) {
	if v := meta.Get(keyAddressSecret); len(v) == 32 {
		return bytes.Clone(v), nil
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return secret, meta.Put(keyAddressSecret, secret)
}

// AddressSecret is the key for hashing addresses into supersede keys (Delivery.SupersedeKey);
// nil when the store was opened read-only and has none.
func (s *Store) AddressSecret() []byte { return bytes.Clone(s.addressSecret) }
