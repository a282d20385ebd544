package worker

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/store"
)

type seeded struct {
	eventID, email, secret, kind string
}

// seedAll adds one live event of each core kind and returns them with their secrets.
func seedAll(h *harness) []seeded {
	now := time.Now()
	org := h.wos.AddOrganization("Globex")
	inviter := h.wos.AddUser("Hank", "Scorpio", "hank@globex.example")
	var out []seeded
	ev, _, tok := h.wos.AddInvitation(fakeworkos.Invitation{Email: "inv@example.com", ExpiresAt: now.Add(72 * time.Hour), OrganizationID: org, InviterUserID: inviter})
	out = append(out, seeded{ev, "inv@example.com", tok, "invitation"})
	ev, _, code := h.wos.AddCode("magic_auth", "magic@example.com", "user_01A", now.Add(10*time.Minute))
	out = append(out, seeded{ev, "magic@example.com", code, "magic_auth"})
	ev, _, code = h.wos.AddCode("email_verification", "verify@example.com", "user_01B", now.Add(time.Hour))
	out = append(out, seeded{ev, "verify@example.com", code, "email_verification"})
	ev, _, tok = h.wos.AddPasswordReset("reset@example.com", "user_01C", now.Add(time.Hour))
	out = append(out, seeded{ev, "reset@example.com", tok, "password_reset"})
	return out
}

func TestEachKindSentOnceToTheRightRecipient(t *testing.T) {
	h := newHarness(t)
	events := seedAll(h)
	h.run()

	for _, e := range events {
		msgs := h.sentTo(e.email)
		if len(msgs) != 1 {
			t.Fatalf("%s: %d messages to %s, want 1", e.kind, len(msgs), e.email)
		}
		m := msgs[0]
		if !strings.Contains(m.HTML, e.secret) || !strings.Contains(m.Text, e.secret) {
			t.Errorf("%s: secret missing from a body", e.kind)
		}
		if strings.Contains(m.Subject, e.secret) {
			t.Errorf("%s: secret in the subject", e.kind)
		}
		if m.Tags["event_id"] != e.eventID || m.Tags["kind"] != e.kind {
			t.Errorf("%s: tags %v", e.kind, m.Tags)
		}
		if m.From != "Acme <no-reply@acme.example>" || len(m.ReplyTo) != 1 || m.ConfigurationSet != "transactional" {
			t.Errorf("%s: from %q reply-to %v config set %q", e.kind, m.From, m.ReplyTo, m.ConfigurationSet)
		}
		d := h.delivery(e.eventID)
		if d.State != store.Sent || d.MessageID != m.MessageID || d.Attempts != 1 || d.MaybeDuplicate {
			t.Errorf("%s: record %+v, want sent with message id %s", e.kind, d, m.MessageID)
		}
	}
	inv := h.sentTo("inv@example.com")[0]
	if !strings.Contains(inv.Text, "Hank Scorpio") || !strings.Contains(inv.Text, "Globex") {
		t.Errorf("invitation does not name inviter and organization:\n%s", inv.Text)
	}
	if got := h.cursor(); got != events[len(events)-1].eventID {
		t.Errorf("cursor %q, want the last event", got)
	}

	// A restart over the same events sends nothing again.
	requests := h.ses.SendRequests()
	h.restart()
	h.run()
	if got := h.ses.SendRequests(); got != requests {
		t.Errorf("restart made %d more SendEmail requests", got-requests)
	}
	// Even after a cursor reset (backfill), recorded events are not sent again.
	if err := h.store.ResetCursor(time.Time{}); err != nil {
		t.Fatal(err)
	}
	h.run()
	if got := h.ses.SendRequests(); got != requests {
		t.Errorf("backfill made %d more SendEmail requests", got-requests)
	}
}

func TestConfiguredLinkGetsTheQueryEscapedToken(t *testing.T) {
	h := newHarness(t)
	h.opts.Links = map[string]*template.Template{"invitation_url": mustTemplate(t, "https://app.example.com/invite?token={{.Token}}")}
	_, inv, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "a@example.com", ExpiresAt: time.Now().Add(time.Hour)})
	h.wos.Update(inv, map[string]any{"token": "a b&c=d"})
	h.run()
	m := h.sentTo("a@example.com")
	if len(m) != 1 || !strings.Contains(m[0].Text, "https://app.example.com/invite?token=a+b%26c%3Dd") {
		t.Fatalf("link not built from the escaped token: %+v", m)
	}
}

// The expiry is checked again right before the send: the name lookups of an invitation (and a
// wait for the send rate) can take long enough for the link to expire meanwhile.
func TestExpiryIsCheckedAgainRightBeforeTheSend(t *testing.T) {
	h := newHarness(t)
	var offset atomic.Int64
	h.opts.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	orgID := h.wos.AddOrganization("Globex")
	ev, _, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "a@example.com", ExpiresAt: time.Now().Add(time.Hour), OrganizationID: orgID})
	h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/organizations/") {
			offset.Store(int64(2 * time.Hour)) // the lookup outlasts the invitation
		}
		return false
	}
	h.run()

	assertState(t, h, ev, store.Skipped, "before it could be sent")
	if n := h.ses.SendRequests(); n != 0 {
		t.Errorf("%d SES requests for an expired invitation", n)
	}
	if n := h.wos.Requests("/organizations/"); n != 1 {
		t.Errorf("%d organization reads, want 1", n)
	}
}

func TestSkipsExpiredRevokedAndMissing(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	expired, _, _ := h.wos.AddCode("magic_auth", "late@example.com", "user_01", now.Add(-time.Second))
	revokedEv, revoked, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "rev@example.com", ExpiresAt: now.Add(time.Hour)})
	h.wos.Update(revoked, map[string]any{"state": "revoked"})
	acceptedEv, accepted, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "acc@example.com", ExpiresAt: now.Add(time.Hour)})
	h.wos.Update(accepted, map[string]any{"state": "accepted"})
	goneEv, gone, _ := h.wos.AddPasswordReset("gone@example.com", "user_02", now.Add(time.Hour))
	h.wos.Update(gone, nil)
	expiredInvEv, _, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "old@example.com", ExpiresAt: now.Add(-time.Minute)})
	live, _, _ := h.wos.AddCode("magic_auth", "live@example.com", "user_03", now.Add(time.Minute))
	h.run()

	for _, tc := range []struct {
		event, reason string
	}{
		{expired, "expired"},
		{revokedEv, "invitation is revoked"},
		{acceptedEv, "invitation is accepted"},
		{goneEv, "not found"},
		{expiredInvEv, "expired"},
	} {
		d := h.delivery(tc.event)
		if d.State != store.Skipped || !strings.Contains(d.Reason, tc.reason) {
			t.Errorf("%s: %s %q, want skipped with %q", tc.event, d.State, d.Reason, tc.reason)
		}
	}
	if msgs := h.ses.Messages(); len(msgs) != 1 || msgs[0].To[0] != "live@example.com" {
		t.Errorf("sent %+v, want only the live code", msgs)
	}
	if h.cursor() != live {
		t.Errorf("cursor did not move past skipped events")
	}
}

func TestInvalidRecipientAndMismatchAreDead(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	crlf, obj, _ := h.wos.AddCode("magic_auth", "ok@example.com", "user_01", now.Add(time.Minute))
	// The object (not the event) carries the hostile address.
	h.wos.Update(obj, map[string]any{"email": "victim@example.com\r\nBcc: all@example.com"})
	list, obj2, _ := h.wos.AddCode("magic_auth", "a@example.com, b@example.com", "user_02", now.Add(time.Minute))
	_ = obj2
	mismatch, obj3, _ := h.wos.AddCode("magic_auth", "owner@example.com", "user_03", now.Add(time.Minute))
	h.wos.Update(obj3, map[string]any{"email": "someone-else@example.com"})
	h.run()
	for _, id := range []string{crlf, list, mismatch} {
		if d := h.delivery(id); d.State != store.Dead || d.Reason == "" {
			t.Errorf("%s: %s %q, want dead with a reason", id, d.State, d.Reason)
		}
	}
	if n := h.ses.SendRequests(); n != 0 {
		t.Errorf("%d SendEmail requests, want none", n)
	}
}

func TestSameRecipientKeepsEventOrder(t *testing.T) {
	h := newHarness(t)
	h.opts.Concurrency = 8
	var codes []string
	for i := 0; i < 5; i++ {
		_, _, code := h.wos.AddCode("magic_auth", "same@example.com", "user_01", time.Now().Add(time.Minute))
		codes = append(codes, code)
		h.wos.AddCode("magic_auth", "other"+string(rune('a'+i))+"@example.com", "user_02", time.Now().Add(time.Minute))
	}
	h.run()
	msgs := h.sentTo("same@example.com")
	if len(msgs) != len(codes) {
		t.Fatalf("%d messages, want %d", len(msgs), len(codes))
	}
	for i, m := range msgs {
		if !strings.Contains(m.Text, codes[i]) {
			t.Errorf("message %d does not carry code %d: order broken", i, i)
		}
	}
}

// A failing send holds the cursor at the last event before it, while later events still go
// out; once the failure clears the event is sent and the cursor moves on.
func TestFailingEventHoldsCursorUntilRetried(t *testing.T) {
	h := newHarness(t)
	h.opts.MaxAttempts = 1000
	now := time.Now()
	first, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", now.Add(time.Hour))
	failing, _, _ := h.wos.AddCode("magic_auth", "fail@example.com", "user_02", now.Add(time.Hour))
	last, _, _ := h.wos.AddCode("magic_auth", "c@example.com", "user_03", now.Add(time.Hour))
	var failOn atomic.Bool
	failOn.Store(true)
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if failOn.Load() && strings.Contains(string(body), "fail@example.com") {
			fakeses.WriteError(w, http.StatusInternalServerError, "InternalFailure", "try again")
			return true
		}
		return false
	}
	stop := h.runBackground()
	defer stop()
	eventually(t, "the event after the failing one is sent", func() bool { return len(h.sentTo("c@example.com")) == 1 })
	eventually(t, "the failing event is retried", func() bool {
		d, _, _ := h.store.Delivery(failing)
		return d.Attempts >= 3
	})
	if c := h.cursor(); c != first {
		t.Fatalf("cursor %q, want %q (held before the failing event)", c, first)
	}
	if d := h.delivery(failing); d.State.Final() {
		t.Errorf("failing event is final while it is being retried: %+v", d)
	}
	if !strings.Contains(h.logs.String(), "InternalFailure") {
		t.Error("the retried failure was not logged")
	}
	failOn.Store(false)
	eventually(t, "the cursor moves past the recovered event", func() bool { return h.cursor() == last })
	if len(h.sentTo("fail@example.com")) != 1 || len(h.sentTo("c@example.com")) != 1 {
		t.Errorf("want one message each")
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	h := newHarness(t)
	h.opts.MaxAttempts = 3
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	after, _, _ := h.wos.AddCode("magic_auth", "b@example.com", "user_02", time.Now().Add(time.Hour))
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		fakeses.WriteError(w, http.StatusInternalServerError, "InternalFailure", "internal error")
		return true
	}
	h.run()
	d := h.delivery(ev)
	if d.State != store.Dead || d.Attempts != 3 || !strings.Contains(d.Reason, "gave up after 3 attempts") {
		t.Errorf("record %+v, want dead after 3 attempts", d)
	}
	if h.cursor() != after {
		t.Errorf("cursor did not move past dead events")
	}
	if got := h.ses.SendRequests(); got != 6 {
		t.Errorf("%d SendEmail requests, want 6 (3 per event, none by the SDK)", got)
	}
}

func TestPermanentRejectionIsDeadWithoutRetry(t *testing.T) {
	h := newHarness(t)
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", "Illegal address")
		return true
	}
	h.run()
	if d := h.delivery(ev); d.State != store.Dead || !strings.Contains(d.Reason, "MessageRejected") {
		t.Errorf("record %+v", d)
	}
	if got := h.ses.SendRequests(); got != 1 {
		t.Errorf("%d SendEmail requests, want 1", got)
	}
}

func TestSendingPausedStopsAndResumes(t *testing.T) {
	h := newHarness(t)
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	var paused atomic.Bool
	paused.Store(true)
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if paused.Load() {
			fakeses.WriteError(w, http.StatusBadRequest, "SendingPausedException", "Sending is paused for this account.")
			return true
		}
		return false
	}
	h.opts.MaxAttempts = 2
	w := h.worker()
	h.opts.StopWhenIdle = false
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	eventually(t, "several paused tries", func() bool { return h.ses.SendRequests() >= 4 })
	if !w.Paused() {
		t.Error("worker does not report paused")
	}
	// More tries than max_attempts, yet the event is not dead: the account, not the message, failed.
	if d := h.delivery(ev); d.State.Final() || d.Attempts > 1 {
		t.Errorf("paused account made the event %s after %d attempts; attempts must not be charged", d.State, d.Attempts)
	}
	paused.Store(false)
	eventually(t, "sent after the account recovers", func() bool { return len(h.ses.Messages()) == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.Paused() {
		t.Error("still paused after a successful send")
	}
}

func TestWorkOS429HonoursRetryAfter(t *testing.T) {
	h := newHarness(t)
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	var mu sync.Mutex
	var gets []time.Time
	h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/user_management/magic_auth/") {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		gets = append(gets, time.Now())
		if len(gets) == 1 {
			w.Header().Set("Retry-After", "1")
			fakeworkos.WriteError(w, http.StatusTooManyRequests, "rate_limit_exceeded", "Too many requests")
			return true
		}
		return false
	}
	h.run()
	// Throttling is not the event's fault: the wait is not charged as an attempt.
	if d := h.delivery(ev); d.State != store.Sent || d.Attempts != 1 {
		t.Fatalf("record %+v, want sent with 1 charged attempt", d)
	}
	mu.Lock()
	defer mu.Unlock()
	// RetryBase is 1ms: only Retry-After explains a wait of a second.
	if len(gets) != 2 || gets[1].Sub(gets[0]) < time.Second {
		t.Errorf("second Get came %v after the 429, want >= Retry-After (1s)", gets[1].Sub(gets[0]))
	}
}

func TestPollFailuresBackOffAndLoseNothing(t *testing.T) {
	h := newHarness(t)
	h.opts.RetryBase = 10 * time.Millisecond
	h.opts.RetryMax = 40 * time.Millisecond
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	var failures atomic.Int32
	h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/events" && failures.Add(1) <= 5 {
			status := []int{500, 502, 503, 500, 503}[failures.Load()-1]
			fakeworkos.WriteError(w, status, "", "upstream trouble")
			return true
		}
		return false
	}
	h.run()
	if d := h.delivery(ev); d.State != store.Sent {
		t.Errorf("record %+v", d)
	}
	// 5 failures, 1 page with the event, 1 empty page: a spinning loop would make many more.
	if n := h.wos.Requests("/events"); n != 7 {
		t.Errorf("%d list requests, want 7", n)
	}
}

// A record left in "sending" by a crash is ambiguous: hold marks it and never resends; resend
// sends it again.
func TestInterruptedSendHoldVersusResend(t *testing.T) {
	for _, mode := range []string{OnAmbiguousHold, OnAmbiguousResend} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t)
			h.opts.OnAmbiguous = mode
			ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
			crashed := store.Delivery{EventID: ev, Kind: "magic_auth", State: store.Sending, Attempts: 1}
			if err := h.store.Save(crashed, "", time.Now()); err != nil {
				t.Fatal(err)
			}
			h.restart()
			h.run()
			d := h.delivery(ev)
			switch mode {
			case OnAmbiguousHold:
				if d.State != store.Ambiguous || h.ses.SendRequests() != 0 {
					t.Errorf("hold: record %s, %d sends; want ambiguous and no send", d.State, h.ses.SendRequests())
				}
			case OnAmbiguousResend:
				if d.State != store.Sent || !d.MaybeDuplicate || len(h.ses.Messages()) != 1 || d.Attempts != 2 {
					t.Errorf("resend: record %+v, %d messages; want sent once more", d, len(h.ses.Messages()))
				}
			}
			if !strings.Contains(h.logs.String(), `"level":"warn"`) {
				t.Error("the interrupted send was not logged at warn")
			}
		})
	}
}

// A connection that drops after SES read the request is ambiguous at run time too, and the SDK
// must not resend it on its own.
func TestDroppedConnectionAfterSendIsAmbiguous(t *testing.T) {
	for _, mode := range []string{OnAmbiguousHold, OnAmbiguousResend} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t)
			h.opts.OnAmbiguous = mode
			ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
			var drops atomic.Int32
			h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodPost && drops.Add(1) == 1 {
					_, _ = io.ReadAll(r.Body)
					conn, _, err := w.(http.Hijacker).Hijack()
					if err == nil {
						_ = conn.Close()
					}
					return true
				}
				return false
			}
			h.run()
			d := h.delivery(ev)
			switch mode {
			case OnAmbiguousHold:
				if d.State != store.Ambiguous || h.ses.SendRequests() != 1 {
					t.Errorf("record %s after %d requests; want ambiguous after exactly 1", d.State, h.ses.SendRequests())
				}
			case OnAmbiguousResend:
				if d.State != store.Sent || !d.MaybeDuplicate || h.ses.SendRequests() != 2 {
					t.Errorf("record %+v after %d requests; want sent, marked maybe-duplicate, after 2", d, h.ses.SendRequests())
				}
			}
		})
	}
}

func TestNoSecretInLogsOrStore(t *testing.T) {
	h := newHarness(t)
	events := seedAll(h)
	// Exercise failure paths too: one transient error per kind of call.
	var n atomic.Int32
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if n.Add(1) == 1 {
			fakeses.WriteError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "busy")
			return true
		}
		return false
	}
	h.run()
	if len(h.ses.Messages()) != len(events) {
		t.Fatalf("sent %d, want %d", len(h.ses.Messages()), len(events))
	}
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := h.logs.String()
	secrets := []string{testAPIKey, "invitation_token=", "reset-password?token="}
	for _, e := range events {
		secrets = append(secrets, e.secret)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("secret %q in the logs", s)
		}
		if strings.Contains(string(raw), s) {
			t.Errorf("secret %q in the store file", s)
		}
	}
	if !strings.Contains(logs, events[0].eventID) {
		t.Error("logs were not captured")
	}
	if !strings.Contains(string(raw), events[0].eventID) {
		t.Error("store bytes not readable (the check would be empty)")
	}
	h.openStore()
}

// Shutdown stops polling but lets a send already handed to SES finish and be recorded.
func TestShutdownLetsInFlightSendFinish(t *testing.T) {
	h := newHarness(t)
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	// Same recipient: the second event waits for the first, so the first is the one in flight.
	h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	inSend := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		once.Do(func() { close(inSend); <-release })
		return false
	}
	h.opts.StopWhenIdle = false
	w := h.worker()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	<-inSend
	cancel() // shutdown begins while SES holds the request
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := h.delivery(ev); d.State != store.Sent {
		t.Errorf("in-flight send recorded as %s, want sent", d.State)
	}
	if n := h.ses.SendRequests(); n != 1 {
		t.Errorf("%d sends after shutdown began, want only the one in flight", n)
	}
}

// An outage of either side longer than max_attempts tries loses nothing: service-level failures
// are waited out without charging the event.
func TestOutageLongerThanMaxAttemptsLosesNothing(t *testing.T) {
	h := newHarness(t)
	h.opts.MaxAttempts = 2
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	var wosDown, sesDown atomic.Int32
	h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/user_management/") && wosDown.Add(1) <= 5 {
			fakeworkos.WriteError(w, []int{503, 502, 401, 429, 504}[wosDown.Load()-1], "", "down")
			return true
		}
		return false
	}
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if sesDown.Add(1) <= 5 {
			fakeses.WriteError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "down")
			return true
		}
		return false
	}
	h.run()
	if d := h.delivery(ev); d.State != store.Sent {
		t.Fatalf("record %+v, want sent after the outage", d)
	}
	if wosDown.Load() < 6 || sesDown.Load() < 6 {
		t.Errorf("outage not exercised: %d WorkOS, %d SES requests", wosDown.Load(), sesDown.Load())
	}
}

// Events of a kind that is not enabled are recorded as skipped, so the cursor never passes an
// event without a final record.
func TestDisabledKindIsRecordedSkipped(t *testing.T) {
	h := newHarness(t)
	h.opts.Kinds = []string{"magic_auth"}
	reset, _, _ := h.wos.AddPasswordReset("a@example.com", "user_01", time.Now().Add(time.Hour))
	code, _, _ := h.wos.AddCode("magic_auth", "b@example.com", "user_02", time.Now().Add(time.Hour))
	h.run()
	if d := h.delivery(reset); d.State != store.Skipped || !strings.Contains(d.Reason, "not enabled") {
		t.Errorf("disabled kind: %+v", d)
	}
	if h.delivery(code).State != store.Sent || h.cursor() != code {
		t.Error("enabled kind not sent or cursor not moved")
	}
	if n := h.wos.Requests("/user_management/password_reset/"); n != 0 {
		t.Errorf("%d Gets for a kind that is not enabled, want 0", n)
	}
}

// A code or link whose expiry the event itself shows has passed is skipped without a Get: the
// app's sign-ins share WorkOS's limits with us. One the event shows alive is read and checked
// again, since WorkOS may have changed it since.
func TestExpiredInTheEventCostsNoGet(t *testing.T) {
	h := newHarness(t)
	expired, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(-time.Minute))
	_, inv, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "b@example.com", ExpiresAt: time.Now().Add(-time.Hour)})
	resent := h.wos.ResendInvitation(inv, time.Now().Add(time.Hour)) // a resend gives the invitation a new expiry
	alive, obj, _ := h.wos.AddCode("magic_auth", "c@example.com", "user_03", time.Now().Add(time.Hour))
	h.wos.Update(obj, map[string]any{"expires_at": time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)})
	h.run()
	assertState(t, h, expired, store.Skipped, "as the event shows; not read from WorkOS")
	assertState(t, h, resent, store.Sent, "")
	assertState(t, h, alive, store.Skipped, "expired at")
	if n := h.wos.Requests("/user_management/magic_auth/"); n != 1 {
		t.Errorf("%d Gets of Magic Auth codes, want 1: none for the one the event shows expired", n)
	}
	if n := h.wos.Requests("/user_management/invitations/"); n != 1 {
		t.Errorf("%d Gets of the invitation, want 1: for the resend only", n)
	}
}

// With on_ambiguous: resend, an interrupted send that can no longer be resent (its code expired)
// stays ambiguous rather than looking like it never went out.
func TestResendThatCannotHappenStaysAmbiguous(t *testing.T) {
	h := newHarness(t)
	h.opts.OnAmbiguous = OnAmbiguousResend
	ev, obj, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	if err := h.store.Save(store.Delivery{EventID: ev, Kind: "magic_auth", State: store.Sending, Attempts: 1}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	h.wos.Update(obj, map[string]any{"expires_at": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)})
	h.restart()
	h.run()
	if d := h.delivery(ev); d.State != store.Ambiguous || !strings.Contains(d.Reason, "expired") {
		t.Errorf("record %+v, want ambiguous mentioning the expiry", d)
	}
	if h.ses.SendRequests() != 0 {
		t.Error("an expired code was sent")
	}
}

// A cursor WorkOS no longer accepts is reported, retried with backoff, and never skipped over.
func TestRejectedCursorIsReportedNotSkipped(t *testing.T) {
	h := newHarness(t)
	h.opts.RetryBase, h.opts.RetryMax = 10*time.Millisecond, 20*time.Millisecond
	if err := h.store.SetCursor("event_01GONE", time.Now()); err != nil {
		t.Fatal(err)
	}
	h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	stop := h.runBackground()
	eventually(t, "several rejected polls", func() bool { return h.wos.Requests("/events") >= 3 })
	stop()
	if !strings.Contains(h.logs.String(), "rejects the stored cursor") {
		t.Error("rejected cursor not reported")
	}
	if h.cursor() != "event_01GONE" || h.ses.SendRequests() != 0 {
		t.Error("the worker moved the cursor or sent on its own")
	}
}

// WorkOS's spec defaults the events list to newest-first. The worker asks for oldest-first, and
// refuses a page that is not: following a newest-first page would jump the cursor past events.
func TestEventsAreListedOldestFirst(t *testing.T) {
	h := newHarness(t)
	h.opts.RetryBase, h.opts.RetryMax = 10*time.Millisecond, 20*time.Millisecond
	clock := time.Now()
	h.wos.Now = func() time.Time { clock = clock.Add(time.Second); return clock }
	for _, to := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		h.wos.AddCode("magic_auth", to, "user_01", time.Now().Add(time.Hour))
	}
	var orders []string
	var mu sync.Mutex
	h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/events" {
			mu.Lock()
			orders = append(orders, r.URL.Query().Get("order"))
			mu.Unlock()
			q := r.URL.Query()
			q.Set("order", "desc") // an API that ignores the request's order
			r.URL.RawQuery = q.Encode()
		}
		return false
	}
	stop := h.runBackground()
	eventually(t, "several refused pages", func() bool { return h.wos.Requests("/events") >= 3 })
	stop()
	if h.cursor() != "" || h.ses.SendRequests() != 0 {
		t.Fatalf("a newest-first page moved the cursor to %q or sent %d emails", h.cursor(), h.ses.SendRequests())
	}
	mu.Lock()
	for _, o := range orders {
		if o != "asc" {
			t.Errorf("listed events with order=%q, want asc", o)
		}
	}
	mu.Unlock()

	h.wos.Intercept = nil
	h.opts.StopWhenIdle = true
	h.run()
	if len(h.ses.Messages()) != 3 {
		t.Errorf("%d emails after the API behaved, want 3", len(h.ses.Messages()))
	}
}

// Deliveries in flight reuse their connections to WorkOS instead of opening one per request.
func TestWorkOSConnectionsAreReused(t *testing.T) {
	h := newHarness(t)
	h.opts.Concurrency = 8
	var conns atomic.Int32
	// workos-go decodes one JSON value and closes the body: whatever follows it (a newline, the
	// end of a chunked answer) is left unread if it has not arrived yet, and net/http closes a
	// connection whose body was not read to its end. Here the end of each page comes late: after
	// the client hung up, or 20 ms.
	lateEndOfPages := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/events" {
			h.wos.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.wos.ServeHTTP(rec, r)
		maps.Copy(w.Header(), rec.Header())
		w.Header().Set("Content-Length", strconv.Itoa(rec.Body.Len()+1))
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Millisecond):
		}
		_, _ = w.Write([]byte("\n"))
	})
	srv := httptest.NewUnstartedServer(lateEndOfPages)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	h.wosURL = srv.URL
	h.opts.PageSize = 20
	const events = 300
	for i := range events {
		h.wos.AddCode("magic_auth", fmt.Sprintf("u%d@example.com", i), "user_01", time.Now().Add(time.Hour))
	}
	h.run()
	if len(h.ses.Messages()) != events {
		t.Fatalf("%d sent", len(h.ses.Messages()))
	}
	if n := conns.Load(); n > int32(h.opts.Concurrency)+2 {
		t.Errorf("%d connections to WorkOS for %d events at concurrency %d; want them reused", n, events, h.opts.Concurrency)
	}
}

// Invitations show their organization's and inviter's names: a batch of invitations to one
// organization reads each once, not once per email, and a name is read again after nameTTL.
func TestInvitationNamesAreReadOncePerBatch(t *testing.T) {
	h := newHarness(t)
	org := h.wos.AddOrganization("Globex")
	inviter := h.wos.AddUser("Hank", "Scorpio", "hank@globex.example")
	for i := range 5 {
		h.wos.AddInvitation(fakeworkos.Invitation{Email: fmt.Sprintf("i%d@example.com", i), ExpiresAt: time.Now().Add(time.Hour),
			OrganizationID: org, InviterUserID: inviter})
	}
	h.run()
	if n := len(h.ses.Messages()); n != 5 {
		t.Fatalf("%d sent, want 5", n)
	}
	for _, m := range h.ses.Messages() {
		if !strings.Contains(m.Text, "Globex") || !strings.Contains(m.Text, "Hank Scorpio") {
			t.Errorf("an invitation lacks the names:\n%s", m.Text)
		}
	}
	if o, u := h.wos.Requests("/organizations/"), h.wos.Requests("/user_management/users/"); o != 1 || u != 1 {
		t.Errorf("%d organization and %d user reads for 5 invitations, want 1 each", o, u)
	}
}
