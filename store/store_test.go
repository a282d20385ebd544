package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

func TestCorruptFileIsAnErrorNotAFreshStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, []byte("this is not a bbolt file, but it is long enough to look like one........"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil {
		t.Fatal("opened a corrupt file")
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
