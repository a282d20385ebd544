package worker

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// backlogScenario fills the fake WorkOS with an hour-old backlog, one event of which hangs in
// its Get until unblock is called, so the main reader is stuck behind it.
type backlogScenario struct {
	old     []string // the backlog's events, oldest first
	oldAda  string   // a code to ada in the backlog, still valid
	blocked string   // the backlog event whose Get hangs
	unblock func()
}

func newBacklog(t *testing.T, h *harness) *backlogScenario {
	t.Helper()
	s := &backlogScenario{}
	hourAgo := time.Now().Add(-time.Hour)
	h.wos.Now = func() time.Time { return hourAgo }
	var blockedObj string
	for i := range 12 {
		to := "old" + string(rune('a'+i)) + "@example.com"
		if i == 3 {
			to = "ada@example.com"
		}
		ev, obj, _ := h.wos.AddCode("magic_auth", to, "user_01OLD", time.Now().Add(time.Hour))
		s.old = append(s.old, ev)
		switch i {
		case 1:
			s.blocked, blockedObj = ev, obj
		case 3:
			s.oldAda = ev
		}
	}
	h.wos.Now = time.Now
	release := make(chan struct{})
	var once atomic.Bool
	s.unblock = func() {
		if once.CompareAndSwap(false, true) {
			close(release)
		}
	}
	t.Cleanup(s.unblock)
	h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/"+blockedObj) {
			<-release
		}
		return false
	}
	h.opts.PageSize = 4
	h.opts.Concurrency = 1 // the main reader is stuck on the blocked event
	return s
}

// While the main reader is stuck in an hour-old backlog, a code created now goes out at once
// through the live reader; the cursor stays behind the unfinished event; when the readers meet
// nothing goes out twice; and the backlog's older code to the same person, coming after the
// new one, is superseded.
func TestLiveReaderSendsNewEventsDuringABacklog(t *testing.T) {
	h := newHarness(t)
	s := newBacklog(t, h)
	stop := h.runBackground()
	defer stop()

	fresh, _, code := h.wos.AddCode("magic_auth", "ada@example.com", "user_01ADA", time.Now().Add(10*time.Minute))
	other, _, _ := h.wos.AddCode("magic_auth", "grace@example.com", "user_01GRACE", time.Now().Add(10*time.Minute))
	eventually(t, "the new codes go out during the backlog", func() bool {
		d1, ok1, _ := h.store.Delivery(fresh)
		d2, ok2, _ := h.store.Delivery(other)
		return ok1 && ok2 && d1.State == store.Sent && d2.State == store.Sent
	})
	if c := h.cursor(); c != s.old[0] && c != "" {
		t.Errorf("cursor %q passed the unfinished event %s", c, s.blocked)
	}
	if !strings.Contains(h.logs.String(), "a live reader delivers new events") {
		t.Error("no live reader was started")
	}
	s.unblock()
	eventually(t, "the main reader catches up", func() bool { return h.cursor() == other })

	want := map[string]string{fresh: "ada@example.com", other: "grace@example.com"}
	for i, ev := range s.old {
		if ev != s.oldAda {
			want[ev] = "old" + string(rune('a'+i)) + "@example.com"
		}
	}
	assertSent(t, h, want)
	assertState(t, h, s.oldAda, store.Skipped, "a newer magic_auth email to the same address replaces it (event "+fresh+")")
	if m := h.sentTo("ada@example.com"); len(m) != 1 || !strings.Contains(m[0].Text, code) {
		t.Errorf("ada got %d emails, want the new code only", len(m))
	}
	eventually(t, "the live reader stops once the main reader caught up", func() bool {
		return strings.Contains(h.logs.String(), "live reader stopped")
	})
}

// A restart in the middle of a backlog, with the live reader running: the next process starts
// its own live reader, and every event still goes out exactly once.
func TestLiveReaderAcrossARestart(t *testing.T) {
	h := newHarness(t)
	s := newBacklog(t, h)
	stop := h.runBackground()
	first, _, _ := h.wos.AddCode("magic_auth", "new1@example.com", "user_01N1", time.Now().Add(10*time.Minute))
	eventually(t, "the first new code goes out", func() bool {
		d, ok, _ := h.store.Delivery(first)
		return ok && d.State == store.Sent
	})
	s.unblock() // lets the stuck Get answer, so the stop does not wait for its timeout
	stop()
	h.restart()

	second, _, _ := h.wos.AddCode("magic_auth", "new2@example.com", "user_01N2", time.Now().Add(10*time.Minute))
	h.opts.StopWhenIdle = true
	h.run()
	want := map[string]string{first: "new1@example.com", second: "new2@example.com"}
	for i, ev := range s.old {
		if ev != s.oldAda {
			want[ev] = "old" + string(rune('a'+i)) + "@example.com"
		}
	}
	want[s.oldAda] = "ada@example.com" // no newer code to ada this time
	assertSent(t, h, want)
	if c := h.cursor(); c != second {
		t.Errorf("cursor %q, want the last event %s", c, second)
	}
}

// The live reader leaves to the main reader what it reaches within two minutes, and takes no
// more than the last ten.
func TestLiveStart(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ behind, want time.Duration }{
		{30 * time.Second, 0},              // a burst: from now
		{5 * time.Minute, 3 * time.Minute}, // a short outage: what the main reader does not reach soon
		{time.Hour, 10 * time.Minute},      // a long one: a code's life
		{30 * 24 * time.Hour, 10 * time.Minute},
	} {
		if got := now.Sub(liveStart(now, now.Add(-tc.behind))); got != tc.want {
			t.Errorf("%v behind: the live reader starts %v back, want %v", tc.behind, got, tc.want)
		}
	}
}

// Only a newer code that went out supersedes: one SES refused leaves the older code to go.
func TestARefusedNewerCodeSupersedesNothing(t *testing.T) {
	h := newHarness(t)
	older, _, olderCode := h.wos.AddCode("magic_auth", "ada@example.com", "user_01ADA", time.Now().Add(time.Hour))
	newer, _, _ := h.wos.AddCode("magic_auth", "ada@example.com", "user_01ADA", time.Now().Add(time.Hour))
	var refused atomic.Int64
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if refused.Load() == 0 && strings.Contains(r.URL.Path, "/outbound-emails") {
			refused.Add(1)
			fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", "Illegal address")
			return true
		}
		return false
	}
	// The newer code first, as the live reader would send it.
	w := h.worker()
	page, err := workosapi.New(testAPIKey, h.wosURL, 2*time.Second, nil).ListEvents(context.Background(), workosapi.ListRequest{Limit: 10})
	if err != nil || len(page.Events) != 2 || page.Events[1].ID != newer {
		t.Fatalf("events %+v, %v", page.Events, err)
	}
	e := page.Events[1]
	rec, err := w.deliver(context.Background(), Event{ID: e.ID, Type: e.Type, CreatedAt: e.CreatedAt, Data: e.Data})
	if err != nil || rec == nil || rec.State != store.Dead {
		t.Fatalf("the newer code: %+v, %v; want dead (refused)", rec, err)
	}
	if err := h.store.Save(*rec, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := w.Run(context.Background()); err != nil { // the same worker: what it knows of the newer code counts
		t.Fatal(err)
	}
	assertState(t, h, older, store.Sent, "")
	if m := h.sentTo("ada@example.com"); len(m) != 1 || !strings.Contains(m[0].Text, olderCode) {
		t.Errorf("ada got %d emails, want the older code", len(m))
	}
}

// What went out is known to the next process too: after a restart, an older code does not
// follow the newer one the previous process (its live reader) sent.
func TestSupersededAcrossARestart(t *testing.T) {
	h := newHarness(t)
	older, _, _ := h.wos.AddCode("magic_auth", "ada@example.com", "user_01ADA", time.Now().Add(time.Hour))
	newer, _, newerCode := h.wos.AddCode("magic_auth", "ada@example.com", "user_01ADA", time.Now().Add(time.Hour))
	page, err := workosapi.New(testAPIKey, h.wosURL, 2*time.Second, nil).ListEvents(context.Background(), workosapi.ListRequest{Limit: 10})
	if err != nil || len(page.Events) != 2 || page.Events[1].ID != newer {
		t.Fatalf("events %+v, %v", page.Events, err)
	}
	e := page.Events[1]
	// The previous process sends the newer code first, as its live reader would, and stops.
	if !h.worker().deliverClaimed(context.Background(), Event{ID: e.ID, Type: e.Type, CreatedAt: e.CreatedAt, Data: e.Data}) {
		t.Fatal("the newer code was not delivered")
	}
	h.restart()
	h.run()
	assertState(t, h, older, store.Skipped, "a newer magic_auth email to the same address replaces it (event "+newer+")")
	if m := h.sentTo("ada@example.com"); len(m) != 1 || !strings.Contains(m[0].Text, newerCode) {
		t.Errorf("ada got %d emails, want the newer code only", len(m))
	}
	// The store holds a keyed hash of the address, never the address.
	raw, err := os.ReadFile(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "ada@example.com") {
		t.Error("the store file holds the address")
	}
}
