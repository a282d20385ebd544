package store

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The newest code sent per key survives a restart; an older one, or one that did not go out,
// does not replace it; the marks go with the records' age; a key that is no hash is refused.
func TestLatestSent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	now := time.Now().UTC().Truncate(time.Millisecond)
	key := "magic_auth:" + strings.Repeat("ab", 16)
	rec := func(id string, state State, created time.Time) Delivery {
		return Delivery{EventID: id, Kind: "magic_auth", State: state, SupersedeKey: key, EventCreatedAt: created,
			FirstSeenAt: now, UpdatedAt: now}
	}
	for _, d := range []Delivery{
		rec("event_02", Sent, now.Add(-time.Minute)),
		rec("event_01", Sent, now.Add(-2*time.Minute)),   // older: not the newest
		rec("event_03", Dead, now),                       // did not go out
		rec("event_04", Sending, now.Add(time.Second)),   // not yet out
		rec("event_05", Skipped, now.Add(2*time.Second)), // not sent
	} {
		if err := s.Save(d, "", now); err != nil {
			t.Fatal(err)
		}
	}
	if id, at, ok, err := s.LatestSent(key); err != nil || !ok || id != "event_02" || !at.Equal(now.Add(-time.Minute)) {
		t.Errorf("LatestSent = %q %v %v %v, want event_02", id, at, ok, err)
	}
	if err := s.Save(rec("event_04", Ambiguous, now.Add(time.Second)), "", now); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open(t, path)
	if id, _, ok, _ := s.LatestSent(key); !ok || id != "event_04" {
		t.Errorf("after a restart: %q %v, want event_04 (ambiguous: it may have gone out)", id, ok)
	}
	if _, _, ok, _ := s.LatestSent("magic_auth:" + strings.Repeat("cd", 16)); ok {
		t.Error("a key never sent has a latest event")
	}
	bad := rec("event_06", Sent, now)
	bad.SupersedeKey = "magic_auth:ada@example.com"
	if err := s.Save(bad, "", now); err == nil {
		t.Error("a supersede key holding an address was stored")
	}
	if _, err := s.Prune(now.Add(time.Hour), 100); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := s.LatestSent(key); ok {
		t.Error("the mark outlived the prune of its age")
	}
}
