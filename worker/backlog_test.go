package worker

import (
	"testing"
	"time"
)

// The backlog and the time to catch up come from the main reader's pages: full pages whose
// newest events gain on the clock, over the last minute.
func TestBacklogEstimatesTheCatchUp(t *testing.T) {
	var b backlog
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	eventAt := now.Add(-2 * time.Hour)
	// Three seconds of events per second of the clock, two hours behind: the gap closes by two
	// seconds a second, so in about an hour.
	for range 30 {
		b.listed(now, true, eventAt)
		now, eventAt = now.Add(time.Second), eventAt.Add(3*time.Second)
	}
	s := b.status(now)
	if s.Behind < 119*time.Minute || s.Behind > 2*time.Hour || s.CatchUp < 59*time.Minute || s.CatchUp > time.Hour {
		t.Errorf("behind %v, catch up in %v; want about 2h and 1h", s.Behind, s.CatchUp)
	}
	if fullFor, _ := b.listed(now, true, eventAt); fullFor != 30*time.Second {
		t.Errorf("full pages for %v, want 30s", fullFor)
	}
	// A short page: caught up.
	b.listed(now, false, eventAt)
	if s := b.status(now); s.Behind != 0 || s.CatchUp != 0 {
		t.Errorf("after a short page: %+v", s)
	}
	// Not gaining on the clock: no estimate.
	for range 20 {
		b.listed(now, true, eventAt)
		now, eventAt = now.Add(time.Second), eventAt.Add(time.Second/2)
	}
	if s := b.status(now); s.Behind == 0 || s.CatchUp != 0 {
		t.Errorf("falling behind: %+v, want a backlog without an estimate", s)
	}
	b.liveStarted(now.Add(-time.Minute))
	b.liveListed(now.Add(-3 * time.Second))
	if s := b.status(now); !s.LiveRunning || s.LiveLag != 3*time.Second || !s.LiveSince.Equal(now.Add(-time.Minute)) {
		t.Errorf("live reader: %+v", s)
	}
	b.liveStopped()
	if s := b.status(now); s.LiveRunning || !s.LiveSince.IsZero() {
		t.Errorf("stopped live reader: %+v", s)
	}
}
