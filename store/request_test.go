package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestRequestLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	now := time.Now().UTC().Truncate(time.Millisecond)
	key, fp := bytes.Repeat([]byte{7}, 20), bytes.Repeat([]byte{1}, 16)
	r := Request{ID: "request_01A", Kind: "magic_link", Sealed: []byte("sealed-1"), AcceptedAt: now, IdempotencyKey: key, Fingerprint: fp}
	if id, replayed, err := s.AcceptRequest(r); err != nil || replayed || id != r.ID {
		t.Fatalf("accept: %q %v %v", id, replayed, err)
	}
	// The same key again, concurrently or later: the first request's id, nothing written.
	again := r
	again.ID, again.Sealed = "request_01B", []byte("sealed-2")
	if id, replayed, err := s.AcceptRequest(again); err != nil || !replayed || id != r.ID {
		t.Fatalf("accept with the same key: %q %v %v, want the first request", id, replayed, err)
	}
	if _, found, _ := s.Delivery("request_01B"); found {
		t.Error("a replayed request left a record")
	}
	if id, ok, err := s.IdempotentRequest(key, fp, now.Add(time.Hour)); err != nil || !ok || id != r.ID {
		t.Errorf("IdempotentRequest: %q %v %v", id, ok, err)
	}
	other := again
	other.Fingerprint = bytes.Repeat([]byte{2}, 16)
	if _, _, err := s.AcceptRequest(other); !errors.Is(err, ErrIdempotencyConflict) {
		t.Errorf("same key, other request: %v, want ErrIdempotencyConflict", err)
	}
	if _, _, err := s.IdempotentRequest(key, other.Fingerprint, now); !errors.Is(err, ErrIdempotencyConflict) {
		t.Errorf("IdempotentRequest with another fingerprint: %v", err)
	}
	// The store still writes after the conflict (it is no failed transaction).
	plain := Request{ID: "request_01C", Kind: "magic_link", Sealed: []byte("sealed-3"), AcceptedAt: now}
	if _, _, err := s.AcceptRequest(plain); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.OpenRequests(); err != nil || !slices.Equal(ids, []string{"request_01A", "request_01C"}) {
		t.Fatalf("open requests %v %v", ids, err)
	}
	d, found, err := s.Delivery("request_01A")
	if err != nil || !found || d.State != Pending || d.Kind != "magic_link" {
		t.Fatalf("record %+v %v %v", d, found, err)
	}
	// Sending keeps the content (a restart resends it under on_ambiguous: resend); final drops it.
	d.State = Sending
	save(t, s, d)
	if c, ok, _ := s.RequestContent("request_01A"); !ok || string(c) != "sealed-1" {
		t.Fatalf("content while sending: %q %v", c, ok)
	}
	d.State = Sent
	save(t, s, d)
	if _, ok, _ := s.RequestContent("request_01A"); ok {
		t.Error("the content outlived the final record")
	}
	d.State = Dead
	save(t, s, d)
	if _, err := s.RequestRetry(now, "request_01A"); err == nil {
		t.Error("an operator's retry of a request was queued, though its content is gone")
	}
	// Reopening verifies the file with the new buckets in it.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	if ids, _ := s.OpenRequests(); !slices.Equal(ids, []string{"request_01C"}) {
		t.Errorf("after reopen: %v", ids)
	}
	// Keys expire: after the TTL the key is free and pruned.
	if _, ok, _ := s.IdempotentRequest(key, fp, now.Add(IdempotencyTTL)); ok {
		t.Error("a key older than IdempotencyTTL still answers")
	}
	if err := s.update(func(tx *bolt.Tx) error { return pruneIdempotency(tx, now.Add(IdempotencyTTL)) }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.IdempotentRequest(key, fp, now); ok {
		t.Error("pruning left the key")
	}
}
