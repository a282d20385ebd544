package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestFileModeAndSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	open(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	start := time.Now()
	_, err = Open(path, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("second open took %v", elapsed)
	}
	if got := err.Error(); !strings.Contains(got, path) {
		t.Errorf("error %q does not name the file", got)
	}
}

// filledStore writes a store large enough to have branch, leaf and freelist pages and returns
// its bytes.
func filledStore(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	if _, err := s.InitPosition(time.Time{}); err != nil {
		t.Fatal(err)
	}
	for batch := range 20 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := batch * 100; i < (batch+1)*100; i++ {
				id := fmt.Sprintf("event_%06d", i)
				if err := putDelivery(tx, Delivery{EventID: id, Kind: "magic_auth", State: Sent}); err != nil {
					return err
				}
				if err := putCursor(tx.Bucket(bucketMeta), id, time.Now()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func scribble(b []byte, from, to int) []byte {
	c := append([]byte(nil), b...)
	for i := from; i < to && i < len(c); i++ {
		c[i] = byte(i*7 + 3)
	}
	return c
}

// A damaged file must stop the daemon with ErrDamaged, never panic and never be replaced by a
// fresh store, which would forget what was sent. Open must not write to it either.
func TestDamagedFileIsAnErrorNotAFreshStart(t *testing.T) {
	good := filledStore(t)
	page := pageSize // a new store's
	cases := map[string][]byte{
		"not a bbolt file":    []byte("this is not a bbolt file, but it is long enough to look like one........"),
		"empty":               {},
		"truncated to half":   good[:len(good)/2],
		"truncated to a page": good[:page],
		"both meta pages":     scribble(good, 0, 2*page),
		"one data page":       scribble(good, 5*page, 6*page),
		"all data pages":      scribble(good, 2*page, len(good)),
		"one record's bytes":  bytes.Replace(good, []byte(`"kind":"magic_auth"`), []byte("\"kind\":\"magic_\x00\x01th\""), 1),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				_ = s.Close()
				t.Fatal("opened a damaged file")
			}
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "backup") {
				t.Errorf("error %q: want ErrDamaged naming the file and what to do", err)
			}
			if after, _ := os.ReadFile(path); string(after) != string(content) {
				t.Error("Open changed the damaged file")
			}
			// Another file: a bbolt open that panicked leaves its lock held in this process.
			again := filepath.Join(t.TempDir(), "copy.db")
			if err := os.WriteFile(again, content, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(again, Options{ReadOnly: true}); !errors.Is(err, ErrDamaged) {
				t.Errorf("read-only open: %v, want ErrDamaged", err)
			}
		})
	}
}

// bbolt keeps two meta pages so that one torn by a power cut is survivable: that must not be
// mistaken for damage.
func TestOneTornMetaPageIsSurvivable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, scribble(filledStore(t), 0, os.Getpagesize()), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	p, err := s.Position()
	if err != nil || p.Cursor != "event_001999" {
		t.Fatalf("position %+v, %v; want the cursor kept", p, err)
	}
	if d, ok, err := s.Delivery("event_000042"); err != nil || !ok || d.State != Sent {
		t.Errorf("record %+v %v %v; want it kept", d, ok, err)
	}
}

// A bbolt file of another program is refused and left alone.
func TestForeignBboltFileIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("theirs")); return err }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	_, err = Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "not a workos-emailer store") {
		t.Fatalf("error %v, want a refusal naming the problem", err)
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) != nil {
			t.Error("Open wrote its buckets into another program's file")
		}
		return nil
	})
}

// A first start killed after bbolt wrote the empty database but before our buckets existed
// leaves a file that holds nothing; opening it again simply finishes the setup.
func TestInterruptedFirstStartIsFinished(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	s := open(t, path)
	if p, err := s.Position(); err != nil || p.Initialized {
		t.Fatalf("position %+v, %v", p, err)
	}
}

func TestPositionLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	first := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p, err := s.InitPosition(first)
	if err != nil || !p.Since.Equal(first) || p.Cursor != "" || !p.Initialized {
		t.Fatalf("init: %+v %v", p, err)
	}
	// A later start (e.g. start: now on a restart) does not move the recorded start.
	if p, _ = s.InitPosition(first.Add(time.Hour)); !p.Since.Equal(first) {
		t.Errorf("start moved to %v", p.Since)
	}
	d := Delivery{EventID: "event_1", Kind: "magic_auth", State: Sent, MessageID: "m1"}
	if err := s.Save(d, "event_1", first); err != nil {
		t.Fatal(err)
	}
	if p, _ = s.Position(); p.Cursor != "event_1" || !p.CursorSetAt.Equal(first) {
		t.Errorf("after save: %+v", p)
	}
	since := first.Add(-24 * time.Hour)
	if err := s.ResetCursor(since); err != nil {
		t.Fatal(err)
	}
	if p, _ = s.Position(); p.Cursor != "" || !p.Since.Equal(since) {
		t.Errorf("after reset: %+v", p)
	}
	got, ok, err := s.Delivery("event_1")
	if err != nil || !ok || got.State != Sent || got.MessageID != "m1" {
		t.Errorf("records must survive a cursor reset: %+v %v %v", got, ok, err)
	}
}

func TestInterruptedIndexFollowsState(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	now := time.Now()
	for _, d := range []Delivery{
		{EventID: "event_a", State: Sending},
		{EventID: "event_b", State: Sending},
		{EventID: "event_c", State: Pending},
	} {
		if err := s.Save(d, "", now); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Save(Delivery{EventID: "event_a", State: Sent}, "", now); err != nil {
		t.Fatal(err)
	}
	got, err := s.Interrupted()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].EventID != "event_b" {
		t.Errorf("interrupted = %+v, want only event_b", got)
	}
}

func TestReadOnlyOpenOfMissingFileFails(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing.db"), Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only open created a store")
	}
}

func TestFinalStates(t *testing.T) {
	for s, final := range map[State]bool{Pending: false, Sending: false, Sent: true, Skipped: true, Dead: true, Ambiguous: true} {
		if s.Final() != final {
			t.Errorf("%s.Final() = %v", s, !final)
		}
	}
}

// BenchmarkOpen100k is the start-up cost of a store of 100k records: every record is read and
// checked once (verify) before the daemon sends anything.
func BenchmarkOpen100k(b *testing.B) {
	s := benchStore(b, 100_000)
	path := s.Path()
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		b.Run(map[bool]string{false: "read-write", true: "read-only"}[ro], func(b *testing.B) {
			for b.Loop() {
				s, err := Open(path, Options{ReadOnly: ro})
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A new store is made only in a directory that exists: a typo in store.path must not start a
// fresh store that forgets what was sent.
func TestNewStoreNeedsAnExistingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	_, err := Open(filepath.Join(dir, "state.db"), Options{})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("open in a missing directory: %v", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("the directory was created")
	}
}
