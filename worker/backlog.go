package worker

import (
	"sync"
	"time"
)

// Backlog is how far the event stream is behind, for status and metrics.
type Backlog struct {
	// Behind is how old the newest event the main reader listed was when it was listed on a
	// full page; zero once a page came back short (caught up).
	Behind time.Duration
	// CatchUp estimates when the main reader catches up, from its pace over the last minute;
	// zero when unknown or caught up.
	CatchUp time.Duration
	// LiveRunning: a live reader delivers new events meanwhile, those created since LiveSince;
	// LiveLag is how old the newest event it listed is (zero before its first).
	LiveRunning bool
	LiveSince   time.Time
	LiveLag     time.Duration
}

// backlog follows the main reader's pace and the live reader. The fetcher and the live
// reader write it; status and metrics read it.
type backlog struct {
	mu sync.Mutex
	// samples are (when, event time) of the main reader's full pages, oldest first, over the
	// last paceWindow.
	samples  []paceSample
	behind   time.Duration
	live     bool
	since    time.Time
	liveAt   time.Time // created_at of the newest event the live reader listed
	fullFrom time.Time // the first of the current run of full pages; zero after a short one
}

type paceSample struct{ at, eventAt time.Time }

const paceWindow = time.Minute

// listed records a page of the main reader: full or not, and the created_at of its newest
// event. It returns how long full pages have kept coming and how old that event is.
func (b *backlog) listed(now time.Time, full bool, newest time.Time) (fullFor, behind time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !full {
		b.samples, b.behind, b.fullFrom = b.samples[:0], 0, time.Time{}
		return 0, 0
	}
	if b.fullFrom.IsZero() {
		b.fullFrom = now
	}
	b.behind = max(now.Sub(newest), 0)
	b.samples = append(b.samples, paceSample{now, newest})
	for len(b.samples) > 2 && now.Sub(b.samples[1].at) > paceWindow {
		b.samples = b.samples[1:]
	}
	return now.Sub(b.fullFrom), b.behind
}

// restartFull counts the current run of full pages from now.
func (b *backlog) restartFull(now time.Time) {
	b.mu.Lock()
	b.fullFrom = now
	b.mu.Unlock()
}

func (b *backlog) liveStarted(since time.Time) {
	b.mu.Lock()
	b.live, b.since, b.liveAt = true, since, time.Time{}
	b.mu.Unlock()
}

func (b *backlog) liveStopped() {
	b.mu.Lock()
	b.live = false
	b.mu.Unlock()
}

func (b *backlog) liveListed(newest time.Time) {
	b.mu.Lock()
	b.liveAt = newest
	b.mu.Unlock()
}

// status is the Backlog at now.
func (b *backlog) status(now time.Time) Backlog {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Backlog{Behind: b.behind, LiveRunning: b.live}
	if b.live {
		s.LiveSince = b.since
		if !b.liveAt.IsZero() {
			s.LiveLag = max(now.Sub(b.liveAt), 0)
		}
	}
	if n := len(b.samples); n >= 2 && b.behind > 0 {
		first, last := b.samples[0], b.samples[n-1]
		// Event time gained per second; new events keep arriving at one second per second.
		if wall := last.at.Sub(first.at); wall >= 10*time.Second {
			pace := last.eventAt.Sub(first.eventAt).Seconds() / wall.Seconds()
			if pace > 1 {
				s.CatchUp = time.Duration(float64(b.behind) / (pace - 1))
			}
		}
	}
	return s
}

// Backlog reports how far the event stream is behind and whether a live reader runs.
func (w *Worker) Backlog() Backlog { return w.backlog.status(time.Now()) }
