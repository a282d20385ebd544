package store

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func lastWriteTx(t *testing.T, s *Store) uint64 {
	t.Helper()
	var id uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyDerivedTx); len(v) == 8 {
			id = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return id
}

// Queued writes share commits, take effect in the order they were queued, and each wait
// returns only once its write is durable.
func TestQueuedWritesShareCommitsAndKeepOrder(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	before := lastWriteTx(t, s)
	var waits []func() error
	const n = 300
	for i := range n {
		id := fmt.Sprintf("event_%04d", i)
		waits = append(waits, s.SaveAsync(Delivery{EventID: id, Kind: "magic_auth", State: Sent}, id, t0))
	}
	for _, w := range waits {
		if err := w(); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := s.Position(); p.Cursor != fmt.Sprintf("event_%04d", n-1) {
		t.Errorf("cursor %q: writes were applied out of order", p.Cursor)
	}
	commits := lastWriteTx(t, s) - before
	if commits == 0 || commits >= n {
		t.Errorf("%d writes took %d commits; want them shared", n, commits)
	}
	st, err := s.Stats()
	if err != nil || st.Records != n || st.ByState[Sent] != n {
		t.Errorf("stats %+v (%v)", st, err)
	}
}

// After a write fails, nothing queued after it is applied: a cursor queued behind a record that
// was not written must not be written either.
func TestFailedWriteStopsTheWritesQueuedAfterIt(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	if err := s.SetCursor("event_0001", t0); err != nil {
		t.Fatal(err)
	}
	bad := s.SaveAsync(Delivery{EventID: "", State: Sent}, "", t0) // bbolt refuses an empty key
	after := s.SaveAsync(Delivery{EventID: "event_0002", State: Sent}, "event_0002", t0)
	if err := bad(); err == nil {
		t.Fatal("a write with an empty key succeeded")
	}
	if err := after(); err == nil {
		t.Error("a write queued after a failed one was applied")
	}
	if p, _ := s.Position(); p.Cursor != "event_0001" {
		t.Errorf("cursor %q, want it left at event_0001", p.Cursor)
	}
	if err := s.Save(Delivery{EventID: "event_0003", State: Sent}, "", t0); err == nil {
		t.Error("the store accepted writes after a failed one")
	}
}

// Close applies what is queued before it returns; writes after Close fail.
func TestCloseAppliesQueuedWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	wait := s.SaveAsync(Delivery{EventID: "event_0001", Kind: "magic_auth", State: Sent}, "event_0001", t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("queued write: %v", err)
	}
	if err := s.SaveAsync(Delivery{EventID: "event_0002", State: Sent}, "", t0)(); err == nil {
		t.Error("a write after Close succeeded")
	}
	s = open(t, path)
	if d, ok, _ := s.Delivery("event_0001"); !ok || d.State != Sent {
		t.Error("the queued write was lost at Close")
	}
}
