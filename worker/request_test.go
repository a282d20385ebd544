package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/internal/sealed"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
)

const (
	testAPIToken     = "api-token-for-tests-0123456789abcdefghij"
	testAPITokenNext = "api-token-after-rotation-0123456789abcdef"
)

// enableRequests turns the send API's side of the worker on, as api.listen does, sealing with
// secrets (testAPIToken when none are given).
func (h *harness) enableRequests(secrets ...string) {
	h.t.Helper()
	if len(secrets) == 0 {
		secrets = []string{testAPIToken}
	}
	box, err := sealed.New(secrets...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.opts.Sealer = box
	h.opts.Kinds = append(kinds.Defaults(), kinds.MagicLink)
}

func (h *harness) accept(w *Worker, r Request, key string) Accepted {
	h.t.Helper()
	if r.Kind == "" {
		r.Kind = kinds.MagicLink
	}
	a, err := w.Accept(r, key)
	if err != nil {
		h.t.Fatalf("accept: %v", err)
	}
	return a
}

// The link reaches the person once, in the email, and nowhere else: not in the logs, not in
// the store file, and an Idempotency-Key retried before and after the send changes nothing.
func TestMagicLinkRequestIsSentOnce(t *testing.T) {
	h := newHarness(t)
	h.enableRequests()
	w := h.worker()
	r := Request{Kind: kinds.MagicLink, Email: "grace@example.com", RedirectURI: "https://app.example.com/callback", State: "s-42", Locale: "de"}
	first := h.accept(w, r, "key-1")
	if !store.IsRequest(first.ID) || first.State != store.Pending || first.Replayed {
		t.Fatalf("first answer %+v", first)
	}
	if again := h.accept(w, r, "key-1"); again.ID != first.ID || !again.Replayed {
		t.Fatalf("the same key gave %+v, want %s replayed", again, first.ID)
	}
	h.run()
	sessions := h.wos.Sessions()
	if len(sessions) != 1 || sessions[0].RedirectURI != r.RedirectURI || sessions[0].State != r.State || sessions[0].Email != r.Email {
		t.Fatalf("sessions %+v, want one for the request", sessions)
	}
	msgs := h.sentTo(r.Email)
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want 1", len(msgs))
	}
	link := sessions[0].Link
	if !strings.Contains(msgs[0].HTML, link) || !strings.Contains(msgs[0].Text, link) {
		t.Error("the email does not carry the link")
	}
	if msgs[0].Subject == "" || !strings.Contains(msgs[0].Text, "15") {
		t.Errorf("subject %q; the text does not say the link lasts 15 minutes", msgs[0].Subject)
	}
	d := h.delivery(first.ID)
	if d.State != store.Sent || d.Kind != kinds.MagicLink || d.MessageID == "" {
		t.Errorf("record %+v", d)
	}
	// Retried after the send: the same answer, now sent, and nothing more.
	w = h.worker()
	if a, ok, err := w.Replay(r, "key-1"); err != nil || !ok || a.ID != first.ID || a.State != store.Sent {
		t.Errorf("replay after the send: %+v %v %v", a, ok, err)
	}
	if again := h.accept(w, r, "key-1"); again.ID != first.ID || again.State != store.Sent {
		t.Errorf("accept after the send: %+v", again)
	}
	h.run()
	if n := len(h.sentTo(r.Email)); n != 1 || len(h.wos.Sessions()) != 1 {
		t.Errorf("%d emails and %d sessions after the retry, want 1 and 1", n, len(h.wos.Sessions()))
	}
	// Another request with the key is a conflict, not an email.
	if _, err := w.Accept(Request{Kind: kinds.MagicLink, Email: "other@example.com"}, "key-1"); !errors.Is(err, ErrIdempotencyConflict) {
		t.Errorf("another request with the key: %v, want ErrIdempotencyConflict", err)
	}
	h.restart() // flushes the file
	raw, err := os.ReadFile(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{link, sessions[0].ID[len("passwordless_session_"):] + "mlk", r.Email, r.State, r.RedirectURI} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the store file holds %q", secret)
		}
		if strings.Contains(h.logs.String(), secret) && secret != r.Email { // addresses only at debug
			t.Errorf("the log holds %q", secret)
		}
	}
	if strings.Contains(h.logs.String(), link) {
		t.Error("the link is in the log")
	}
}

// Many copies of one request at once, as an app's retries after a timeout: one email.
func TestConcurrentRequestsWithOneKeySendOnce(t *testing.T) {
	h := newHarness(t)
	h.enableRequests()
	h.opts.StopWhenIdle = false
	w := h.worker()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	r := Request{Kind: kinds.MagicLink, Email: "ada@example.com"}
	var wg sync.WaitGroup
	ids := make([]string, 16)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := w.Accept(r, "same-key")
			if err != nil {
				t.Error(err)
			}
			ids[i] = a.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("answers name different requests: %v", ids)
		}
	}
	eventually(t, "the request is sent", func() bool {
		d, ok, _ := h.store.Delivery(ids[0])
		return ok && d.State == store.Sent
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(h.sentTo(r.Email)); n != 1 {
		t.Errorf("%d emails, want 1", n)
	}
	// Without a key, each request is an email of its own.
	h.opts.StopWhenIdle = true
	w = h.worker()
	h.accept(w, r, "")
	h.accept(w, r, "")
	h.run()
	if n := len(h.sentTo(r.Email)); n != 3 {
		t.Errorf("%d emails after two requests without a key, want 3", n)
	}
}

// A request accepted but not delivered when the process stopped goes out after the restart; one
// stopped during its send follows on_ambiguous like an event's.
func TestOpenRequestsSurviveARestart(t *testing.T) {
	for _, policy := range []string{OnAmbiguousHold, OnAmbiguousResend} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t)
			h.enableRequests()
			h.opts.OnAmbiguous = policy
			w := h.worker() // never runs: the process "dies" after answering
			waiting := h.accept(w, Request{Email: "waiting@example.com"}, "")
			cut := h.accept(w, Request{Email: "cut@example.com"}, "")
			d := h.delivery(cut.ID)
			d.State, d.Attempts = store.Sending, 1
			if err := h.store.Save(d, "", time.Now()); err != nil {
				t.Fatal(err)
			}
			h.restart()
			h.run()
			if n := len(h.sentTo("waiting@example.com")); n != 1 || h.delivery(waiting.ID).State != store.Sent {
				t.Errorf("the waiting request: %d emails, record %+v", n, h.delivery(waiting.ID))
			}
			got := h.delivery(cut.ID)
			n := len(h.sentTo("cut@example.com"))
			switch policy {
			case OnAmbiguousHold:
				if got.State != store.Ambiguous || n != 0 {
					t.Errorf("hold: %d emails, record %+v; want none, ambiguous", n, got)
				}
			case OnAmbiguousResend:
				if got.State != store.Sent || !got.MaybeDuplicate || n != 1 {
					t.Errorf("resend: %d emails, record %+v; want one, sent, maybe a duplicate", n, got)
				}
			}
			if ids, _ := h.store.OpenRequests(); len(ids) != 0 {
				t.Errorf("requests left open: %v", ids)
			}
		})
	}
}

func TestRequestOutcomes(t *testing.T) {
	r := Request{Email: "lin@example.com"}
	t.Run("WorkOS refuses: dead", func(t *testing.T) {
		h := newHarness(t)
		h.enableRequests()
		h.wos.Intercept = func(w http.ResponseWriter, req *http.Request) bool {
			if req.URL.Path != "/passwordless/sessions" {
				return false
			}
			fakeworkos.WriteError(w, http.StatusUnprocessableEntity, "invalid_request_parameters", "Email is invalid.")
			return true
		}
		a := h.accept(h.worker(), r, "")
		h.run()
		if d := h.delivery(a.ID); d.State != store.Dead || len(h.ses.Messages()) != 0 {
			t.Errorf("record %+v, %d emails", d, len(h.ses.Messages()))
		}
	})
	t.Run("WorkOS fails once: retried with a new session", func(t *testing.T) {
		h := newHarness(t)
		h.enableRequests()
		var calls atomic.Int32
		h.wos.Intercept = func(w http.ResponseWriter, req *http.Request) bool {
			if req.URL.Path != "/passwordless/sessions" || calls.Add(1) > 1 {
				return false
			}
			fakeworkos.WriteError(w, http.StatusBadGateway, "", "Bad gateway")
			return true
		}
		a := h.accept(h.worker(), r, "")
		h.run()
		if d := h.delivery(a.ID); d.State != store.Sent || len(h.sentTo(r.Email)) != 1 {
			t.Errorf("record %+v, %d emails", d, len(h.sentTo(r.Email)))
		}
	})
	t.Run("too late: skipped, no session", func(t *testing.T) {
		h := newHarness(t)
		h.enableRequests()
		a := h.accept(h.worker(), r, "")
		h.opts.Now = func() time.Time { return time.Now().Add(kinds.RequestMaxAge + time.Minute) }
		h.run()
		if d := h.delivery(a.ID); d.State != store.Skipped || len(h.wos.Sessions()) != 0 {
			t.Errorf("record %+v, %d sessions", d, len(h.wos.Sessions()))
		}
	})
	t.Run("token rotated: the previous one still opens, none is dead", func(t *testing.T) {
		h := newHarness(t)
		h.enableRequests(testAPIToken)
		kept := h.accept(h.worker(), r, "")
		h.enableRequests(testAPITokenNext, testAPIToken)
		h.run()
		if d := h.delivery(kept.ID); d.State != store.Sent {
			t.Errorf("sealed with the previous token: %+v", d)
		}
		h.enableRequests(testAPIToken)
		lost := h.accept(h.worker(), Request{Email: "lost@example.com"}, "")
		h.enableRequests(testAPITokenNext)
		h.run()
		if d := h.delivery(lost.ID); d.State != store.Dead || !strings.Contains(d.Reason, "api.previous_token") {
			t.Errorf("sealed with a token no longer known: %+v", d)
		}
	})
	t.Run("refused without a sealer, or for another kind, or bad input", func(t *testing.T) {
		h := newHarness(t)
		if _, err := h.worker().Accept(Request{Kind: kinds.MagicLink, Email: "a@example.com"}, ""); !errors.Is(err, ErrRequestsOff) {
			t.Errorf("no sealer: %v", err)
		}
		h.enableRequests()
		w := h.worker()
		for _, c := range []struct {
			r     Request
			field string
		}{
			{Request{Kind: kinds.MagicAuth, Email: "a@example.com"}, "kind"},
			{Request{Kind: kinds.MagicLink}, "email"},
			{Request{Kind: kinds.MagicLink, Email: "a@example.com, b@example.com"}, "email"},
			{Request{Kind: kinds.MagicLink, Email: "a@example.com\r\nBcc: b@example.com"}, "email"},
			{Request{Kind: kinds.MagicLink, Email: "Ada <a@example.com>"}, "email"},
			{Request{Kind: kinds.MagicLink, Email: "a@example.com", RedirectURI: "http://app.example.com/cb"}, "redirect_uri"},
			{Request{Kind: kinds.MagicLink, Email: "a@example.com", RedirectURI: "/cb"}, "redirect_uri"},
			{Request{Kind: kinds.MagicLink, Email: "a@example.com", State: "x\ny"}, "state"},
			{Request{Kind: kinds.MagicLink, Email: "a@example.com", Locale: "../../etc"}, "locale"},
			{Request{Kind: kinds.MagicLink, Email: "a@example.com", OrganizationID: "user_01H"}, "organization_id"},
		} {
			var invalid *InvalidRequestError
			if _, err := w.Accept(c.r, ""); !errors.As(err, &invalid) || invalid.Field != c.field {
				t.Errorf("%+v: %v, want an error naming %s", c.r, err, c.field)
			}
		}
		for _, ok := range []Request{
			{Kind: kinds.MagicLink, Email: "a@example.com", RedirectURI: "http://localhost:3000/cb", Locale: "pt-BR", OrganizationID: "org_01HXYZ"},
			{Kind: kinds.MagicLink, Email: "a@example.com", RedirectURI: "http://127.0.0.1/cb"},
		} {
			if err := ok.Validate(); err != nil {
				t.Errorf("%+v: %v", ok, err)
			}
		}
		if ids, _ := h.store.OpenRequests(); len(ids) != 0 {
			t.Errorf("refused requests were stored: %v", ids)
		}
	})
}

// failingSaves is the store with Save failing for requested emails' records once they are
// final: a disk that fills up between the send and its record.
type failingSaves struct{ *store.Store }

func (f failingSaves) Save(d store.Delivery, cursor string, now time.Time) error {
	if store.IsRequest(d.EventID) && d.State.Final() {
		return errors.New("disk full")
	}
	return f.Store.Save(d, cursor, now)
}

// A store failure while a request is recorded stops the daemon at once, as one of an event's
// does (systemd restarts it), rather than leaving it polling with a store that cannot write.
func TestRequestStoreFailureStopsRun(t *testing.T) {
	h := newHarness(t)
	h.enableRequests()
	h.opts.StopWhenIdle = false
	base := h.worker()
	w := New(h.opts, base.workos, failingSaves{h.store}, base.sender, base.cur().Renderer, base.log)
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }() // never cancelled: only the failure ends it
	h.accept(w, Request{Email: "full@example.com"}, "")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("Run returned %v, want the store failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going after a request could not be recorded")
	}
}

// A session id WorkOS should never return is the request's failure, not the store's.
func TestMalformedSessionIDIsDeadNotAStoreFailure(t *testing.T) {
	h := newHarness(t)
	h.enableRequests()
	h.wos.Intercept = func(w http.ResponseWriter, req *http.Request) bool {
		if req.URL.Path != "/passwordless/sessions" {
			return false
		}
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		if !bytes.Contains(body, []byte("lin@example.com")) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"object":"passwordless_session","id":"passwordless_session_01-weird","email":"lin@example.com",` +
			`"expires_at":"` + time.Now().Add(15*time.Minute).UTC().Format(time.RFC3339) + `","link":"https://auth.workos.com/passwordless/x/confirm"}`))
		return true
	}
	w := h.worker()
	bad := h.accept(w, Request{Email: "lin@example.com"}, "")
	good := h.accept(w, Request{Email: "ok@example.com"}, "")
	h.run()
	if d := h.delivery(bad.ID); d.State != store.Dead || d.ObjectID != "" {
		t.Errorf("bad session id: %+v", d)
	}
	if d := h.delivery(good.ID); d.State != store.Sent {
		t.Errorf("the next request after it: %+v", d)
	}
}

// An organization's own sender goes with every email of the organization: an invitation (its
// event names the organization) and a Magic Link requested for it; others keep the mailer's.
func TestOrganizationSenders(t *testing.T) {
	h := newHarness(t)
	h.enableRequests()
	org := h.wos.AddOrganization("Globex")
	h.templates = mustTemplates(t, mailer.TemplateOptions{Brand: mailer.Brand{Name: "Acme"},
		Senders: map[string]mailer.Sender{strings.ToLower(org): {From: "Globex <no-reply@globex.example>", ReplyTo: "help@globex.example", ConfigurationSet: "globex"}}})
	inv, _, _ := h.wos.AddInvitation(fakeworkosInvitation("inv@example.com", org))
	other, _, _ := h.wos.AddInvitation(fakeworkosInvitation("plain@example.com", ""))
	h.accept(h.worker(), Request{Email: "ml@example.com", OrganizationID: org}, "")
	h.run()
	assertState(t, h, inv, store.Sent, "")
	assertState(t, h, other, store.Sent, "")
	for to, want := range map[string][3]string{
		"inv@example.com":   {"Globex <no-reply@globex.example>", "help@globex.example", "globex"},
		"ml@example.com":    {"Globex <no-reply@globex.example>", "help@globex.example", "globex"},
		"plain@example.com": {"Acme <no-reply@acme.example>", "help@acme.example", "transactional"},
	} {
		msgs := h.sentTo(to)
		if len(msgs) != 1 {
			t.Fatalf("%s: %d emails", to, len(msgs))
		}
		m := msgs[0]
		if m.From != want[0] || len(m.ReplyTo) != 1 || m.ReplyTo[0] != want[1] || m.ConfigurationSet != want[2] {
			t.Errorf("%s: from %q, reply-to %v, configuration set %q; want %v", to, m.From, m.ReplyTo, m.ConfigurationSet, want)
		}
	}
}
