package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
)

// recorder is an Observer that keeps what it saw.
type recorder struct {
	mu       sync.Mutex
	polls    int
	pollErrs int
	polled   int
	finished []string // kind/state/reason
	sends    []string // kind/outcome
	lags     []time.Duration
	cursor   []time.Time
}

func (r *recorder) Polled(n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.polls++
	r.polled += n
	if err != nil {
		r.pollErrs++
	}
}

func (r *recorder) Finished(kind, state, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = append(r.finished, kind+"/"+state+"/"+reason)
}

func (r *recorder) SendAttempt(kind, outcome string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends = append(r.sends, kind+"/"+outcome)
}

func (r *recorder) EventLag(kind string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lags = append(r.lags, d)
}

func (r *recorder) CursorMoved(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cursor = append(r.cursor, at)
}

func (r *recorder) sorted(s []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func TestObserverSeesPollsSendsAndLowCardinalityReasons(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	h.opts.Observer = rec
	now := time.Now()
	h.wos.AddCode("magic_auth", "live@example.com", "user_01", now.Add(time.Hour))
	h.wos.AddCode("magic_auth", "late@example.com", "user_02", now.Add(-time.Second))
	_, revoked, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "rev@example.com", ExpiresAt: now.Add(time.Hour)})
	h.wos.Update(revoked, map[string]any{"state": "revoked"})
	_, gone, _ := h.wos.AddPasswordReset("gone@example.com", "user_03", now.Add(time.Hour))
	h.wos.Update(gone, nil)
	_, mism, _ := h.wos.AddCode("email_verification", "owner@example.com", "user_04", now.Add(time.Hour))
	h.wos.Update(mism, map[string]any{"email": "other@example.com"})
	h.wos.AddCode("email_verification", "rejected@example.com", "user_05", now.Add(time.Hour))
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/email/outbound-emails" && strings.Contains(readBody(r), "rejected@example.com") {
			fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", "Illegal address")
			return true
		}
		return false
	}
	h.run()

	want := []string{
		"email_verification/dead/mismatch",
		"email_verification/dead/rejected",
		"invitation/skipped/not_pending",
		"magic_auth/sent/none",
		"magic_auth/skipped/expired",
		"password_reset/skipped/not_found",
	}
	if got := rec.sorted(rec.finished); !slices.Equal(got, want) {
		t.Errorf("finished:\n got %q\nwant %q", got, want)
	}
	if got := rec.sorted(rec.sends); !slices.Equal(got, []string{"email_verification/rejected", "magic_auth/sent"}) {
		t.Errorf("send attempts %q", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.polled != 6 || rec.polls < 1 || rec.pollErrs != 0 {
		t.Errorf("polls %d with %d events and %d errors; want 6 events", rec.polls, rec.polled, rec.pollErrs)
	}
	if len(rec.lags) != 1 || rec.lags[0] < 0 {
		t.Errorf("event lags %v, want one for the sent email", rec.lags)
	}
	if len(rec.cursor) == 0 {
		t.Error("cursor moves not reported")
	}
	for _, f := range rec.finished {
		if strings.Contains(f, "@") || strings.Contains(f, "_01") {
			t.Errorf("label carries an address or id: %q", f)
		}
	}
}

func readBody(r *http.Request) string {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return string(b)
}

func TestObserverSeesInterruptedAndFailedPolls(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	h.opts.Observer = rec
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	if err := h.store.Save(store.Delivery{EventID: ev, Kind: "magic_auth", State: store.Sending, Attempts: 1}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	var fail atomic.Int32
	fail.Store(2)
	h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/events" && fail.Add(-1) >= 0 {
			fakeworkos.WriteError(w, http.StatusServiceUnavailable, "", "down")
			return true
		}
		return false
	}
	h.run()
	if got := rec.sorted(rec.finished); !slices.Equal(got, []string{"magic_auth/ambiguous/interrupted"}) {
		t.Errorf("finished %q", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.pollErrs != 2 {
		t.Errorf("%d failed polls reported, want 2", rec.pollErrs)
	}
}

func TestSendOutcomeLabels(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, SendSent},
		{&mailer.SendError{Class: mailer.Permanent}, SendRejected},
		{&mailer.SendError{Class: mailer.Retry}, SendFailed},
		{&mailer.SendError{Class: mailer.Retry, Unavailable: true}, SendUnavailable},
		{&mailer.SendError{Class: mailer.Paused}, SendPaused},
		{&mailer.SendError{Class: mailer.Ambiguous}, SendUnknown},
		{errors.New("anything else"), SendUnknown},
	} {
		if got := sendOutcome(tc.err); got != tc.want {
			t.Errorf("sendOutcome(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// beatsTwice waits until the heartbeat has moved twice. Called once the worker has nothing left
// to do but wait, only the ticker of that deliberate wait can beat twice.
func beatsTwice(t *testing.T, w *Worker) {
	t.Helper()
	seen := []time.Time{w.Heartbeat()}
	eventually(t, "the heartbeat to move twice during a wait", func() bool {
		if hb := w.Heartbeat(); hb.After(seen[len(seen)-1]) {
			seen = append(seen, hb)
		}
		return len(seen) >= 3
	})
}

// A long idle wait and a long paused-SES wait keep the heartbeat fresh, so the systemd watchdog
// is fed while the worker waits on purpose.
func TestHeartbeatBeatsDuringLongWaits(t *testing.T) {
	t.Run("idle poll interval", func(t *testing.T) {
		h := newHarness(t)
		h.opts.PollInterval = time.Hour
		h.opts.HeartbeatEvery = time.Millisecond
		h.opts.StopWhenIdle = false
		w := h.worker()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		eventually(t, "the first poll", func() bool { return !w.LastSuccessfulPoll().IsZero() })
		beatsTwice(t, w)
		if n := h.wos.Requests("/events"); n != 1 {
			t.Errorf("%d polls; the beats must come from the wait, not from polling", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("paused SES", func(t *testing.T) {
		h := newHarness(t)
		h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
		h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
			fakeses.WriteError(w, http.StatusBadRequest, "SendingPausedException", "Sending is paused for this account.")
			return true
		}
		h.opts.PausedRetry = time.Hour
		h.opts.HeartbeatEvery = time.Millisecond
		h.opts.StopWhenIdle = false
		w := h.worker()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		eventually(t, "paused", w.Paused)
		beatsTwice(t, w)
		if n := h.ses.SendRequests(); n != 1 {
			t.Errorf("%d sends; the beats must come from the wait", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

var _ Observer = NopObserver{}

// Only an SES answer ends the pause: an event skipped meanwhile says nothing about SES, so
// readiness and the sending_paused gauge stay put.
func TestSkippedEventDoesNotEndPause(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	h.wos.AddCode("magic_auth", "a@example.com", "user_01", now.Add(time.Hour))
	expiredEv, expired, _ := h.wos.AddCode("magic_auth", "b@example.com", "user_02", now.Add(-time.Second))
	release := make(chan struct{})
	h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/"+expired) {
			<-release // resolve the expired code only once SES has paused sending
		}
		return false
	}
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		fakeses.WriteError(w, http.StatusBadRequest, "SendingPausedException", "Sending is paused for this account.")
		return true
	}
	h.opts.PausedRetry = time.Hour
	h.opts.StopWhenIdle = false
	w := h.worker()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	eventually(t, "paused", w.Paused)
	close(release)
	eventually(t, "the expired code skipped", func() bool {
		d, ok, _ := h.store.Delivery(expiredEv)
		return ok && d.State == store.Skipped
	})
	if !w.Paused() {
		t.Error("a skipped event ended the pause")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
