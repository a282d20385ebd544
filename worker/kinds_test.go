package worker

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
)

// Every kind in the table goes through the real pipeline: its event listed, its object read,
// its email rendered and sent. A kind added to the table without a way to seed it here fails.
func TestEveryKindIsSentThroughThePipeline(t *testing.T) {
	// seed adds one event of the kind to a fake WorkOS (or, for a kind sent on request, makes the
	// request) and returns the event (request) and its recipient.
	seeds := map[string]func(h *harness) (event, to string){
		kinds.Invitation: func(h *harness) (string, string) {
			ev, _, _ := h.wos.AddInvitation(fakeworkosInvitation("inv@example.com", h.wos.AddOrganization("Globex")))
			return ev, "inv@example.com"
		},
		kinds.MagicAuth: func(h *harness) (string, string) {
			ev, _, _ := h.wos.AddCode("magic_auth", "ma@example.com", h.wos.AddUser("M", "A", "ma@example.com"), time.Now().Add(time.Hour))
			return ev, "ma@example.com"
		},
		kinds.EmailVerification: func(h *harness) (string, string) {
			ev, _, _ := h.wos.AddCode("email_verification", "ev@example.com", h.wos.AddUser("E", "V", "ev@example.com"), time.Now().Add(time.Hour))
			return ev, "ev@example.com"
		},
		kinds.PasswordReset: func(h *harness) (string, string) {
			ev, _, _ := h.wos.AddPasswordReset("pr@example.com", h.wos.AddUser("P", "R", "pr@example.com"), time.Now().Add(time.Hour))
			return ev, "pr@example.com"
		},
		kinds.Welcome: func(h *harness) (string, string) {
			ev, _ := h.wos.SignUp("W", "E", "we@example.com", true, nil)
			return ev, "we@example.com"
		},
		kinds.PasswordChanged: func(h *harness) (string, string) {
			_, user := h.wos.SignUp("P", "C", "pc@example.com", false, nil)
			return h.wos.ChangePassword(user), "pc@example.com"
		},
		kinds.RadarChallenge: func(h *harness) (string, string) {
			ev, _, _ := h.wos.AddRadarChallenge("rc@example.com", h.wos.AddUser("R", "C", "rc@example.com"), time.Now().Add(10*time.Minute))
			return ev, "rc@example.com"
		},
		kinds.MagicLink: func(h *harness) (string, string) {
			h.enableRequests() // a request, not an event
			return h.accept(h.worker(), Request{Email: "ml@example.com"}, "").ID, "ml@example.com"
		},
	}
	for _, k := range kinds.All {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			seed := seeds[k.Name]
			if seed == nil {
				t.Fatalf("kind %s has no seed in this test: add one", k.Name)
			}
			h := newHarness(t)
			h.enableNotices()
			ev, to := seed(h)
			h.run()
			d := assertState(t, h, ev, store.Sent, "")
			if d.Kind != k.Name {
				t.Errorf("recorded as kind %q, want %q", d.Kind, k.Name)
			}
			assertSent(t, h, map[string]string{ev: to})
		})
	}
}

// An invitation.resent sends the invitation again, as a reminder, with what the invitation is
// now; each click of Resend is one email; a resend of an invitation that is no longer pending
// is skipped; and a cursor reset over it all sends nothing twice.
func TestInvitationResendsAreReminders(t *testing.T) {
	h := newHarness(t)
	org := h.wos.AddOrganization("Globex")
	created, inv, token := h.wos.AddInvitation(fakeworkosInvitation("grace@example.com", org))
	resent1 := h.wos.ResendInvitation(inv, time.Now().Add(7*24*time.Hour))
	h.run()
	// A second click, after WorkOS gave the invitation a new token.
	newToken := "tokNEWTOKENAFTERRESENDinv"
	h.wos.Update(inv, map[string]any{"token": newToken, "accept_invitation_url": "https://auth.example.com/invite?invitation_token=" + newToken})
	resent2 := h.wos.ResendInvitation(inv, time.Now().Add(7*24*time.Hour))
	// A resend that was followed by a revoke, before we saw it.
	revokedCreated, revoked, _ := h.wos.AddInvitation(fakeworkosInvitation("revoked@example.com", org))
	revokedResent := h.wos.ResendInvitation(revoked, time.Now().Add(7*24*time.Hour))
	h.wos.Update(revoked, map[string]any{"state": "revoked", "revoked_at": time.Now().UTC().Format(time.RFC3339)})
	h.run()

	msgs := h.sentTo("grace@example.com")
	if len(msgs) != 3 {
		t.Fatalf("%d emails to the invitee, want the invitation and two reminders", len(msgs))
	}
	byEvent := map[string]int{}
	for i, m := range msgs {
		byEvent[m.Tags["event_id"]] = i
	}
	first, r1, r2 := msgs[byEvent[created]], msgs[byEvent[resent1]], msgs[byEvent[resent2]]
	if strings.Contains(first.Subject, "Reminder") || strings.Contains(first.Text, "reminder") {
		t.Errorf("the first invitation reads as a reminder: %q", first.Subject)
	}
	for _, m := range []struct {
		name  string
		msg   string
		token string
	}{{"first reminder", r1.Subject + "\n" + r1.Text, token}, {"second reminder", r2.Subject + "\n" + r2.Text, newToken}} {
		if !strings.HasPrefix(m.msg, "Reminder: ") || !strings.Contains(m.msg, "This is a reminder of an invitation") {
			t.Errorf("%s does not read as a reminder:\n%s", m.name, m.msg)
		}
		if !strings.Contains(m.msg, "invitation_token="+m.token) {
			t.Errorf("%s lacks the invitation's current link:\n%s", m.name, m.msg)
		}
	}
	for _, ev := range []string{created, resent1, resent2} {
		if d := assertState(t, h, ev, store.Sent, ""); d.Kind != kinds.Invitation {
			t.Errorf("event %s recorded as kind %q", ev, d.Kind)
		}
	}
	assertState(t, h, revokedCreated, store.Skipped, "invitation is revoked, not pending")
	assertState(t, h, revokedResent, store.Skipped, "invitation is revoked, not pending")
	if n := len(h.sentTo("revoked@example.com")); n != 0 {
		t.Errorf("%d emails for the revoked invitation", n)
	}

	// A backfill over the same events: nothing goes out again.
	h.restart()
	if err := h.store.ResetCursor(time.Time{}); err != nil {
		t.Fatal(err)
	}
	h.run()
	if n := len(h.ses.Messages()); n != 3 {
		t.Errorf("%d emails after the cursor reset, want the 3 from before", n)
	}
}

// Radar email challenges go out only when radar_challenge is enabled, and only for email
// challenges.
func TestRadarChallenges(t *testing.T) {
	t.Run("disabled: not even listed", func(t *testing.T) {
		h := newHarness(t)
		ev, _, _ := h.wos.AddRadarChallenge("rc@example.com", "user_01RC", time.Now().Add(10*time.Minute))
		last, _, _ := h.wos.AddCode("magic_auth", "ma@example.com", "user_01MA", time.Now().Add(time.Hour))
		h.run()
		if _, ok, _ := h.store.Delivery(ev); ok {
			t.Error("a radar challenge was recorded though radar_challenge is not enabled")
		}
		assertSent(t, h, map[string]string{last: "ma@example.com"})
	})
	t.Run("enabled", func(t *testing.T) {
		h := newHarness(t)
		h.opts.Kinds = append(kinds.Defaults(), kinds.RadarChallenge)
		user := h.wos.AddUser("Ada", "Lovelace", "ada@example.com")
		ev, _, code := h.wos.AddRadarChallenge("ada@example.com", user, time.Now().Add(10*time.Minute))
		expired, _, _ := h.wos.AddRadarChallenge("ada@example.com", user, time.Now().Add(-time.Minute))
		sms := h.wos.AddRawEvent("radar.challenge_created", json.RawMessage(
			`{"type":"sms","radar_challenge_id":"radar_challenge_01SMS","user_id":"`+user+`","email":"ada@example.com"}`))
		h.run()
		assertSent(t, h, map[string]string{ev: "ada@example.com"})
		m := h.sentTo("ada@example.com")[0]
		if m.Subject != "Confirm your sign-in to Acme" || !strings.Contains(m.Text, code) || !strings.Contains(m.Text, "sign-in attempt") ||
			!strings.Contains(m.Text, "If you did not try to sign in") {
			t.Errorf("radar challenge email: %q\n%s", m.Subject, m.Text)
		}
		assertState(t, h, expired, store.Skipped, "expired at")
		assertState(t, h, sms, store.Skipped, "only email challenges are sent by email")
		if n := h.wos.Requests("/user_management/radar_challenges/"); n != 2 {
			t.Errorf("%d challenge reads, want 2 (none for the sms challenge)", n)
		}
	})
}

// Each reader gets their own language: the user's WorkOS locale first, then their metadata's,
// then the organization's, then the default; regional variants match the base language.
func TestLocalePerReader(t *testing.T) {
	h := newHarness(t)
	h.opts.UserLocaleKey = "lang"
	h.opts.Kinds = kinds.Names()
	h.opts.AppURL = "https://app.acme.example/"
	spanishOrg := h.wos.AddOrganization("Globex")
	h.templates = mustTemplates(t, mailer.TemplateOptions{Brand: mailer.Brand{Name: "Acme"}, DefaultLocale: "pt",
		OrgLocales: map[string]string{spanishOrg: "es"}})
	// user adds a user with a WorkOS locale and a metadata locale ("" for none).
	user := func(email, locale, meta string) string {
		id := h.wos.AddUser("Reader", "One", email)
		fields := map[string]any{"metadata": map[string]any{}}
		if locale != "" {
			fields["locale"] = locale
		}
		if meta != "" {
			fields["metadata"] = map[string]any{"lang": meta}
		}
		h.wos.Update(id, fields)
		return id
	}
	magic := func(email, locale, meta string) {
		h.wos.AddCode("magic_auth", email, user(email, locale, meta), time.Now().Add(time.Hour))
	}
	magic("workos-de@example.com", "de-DE", "fr")                                               // the WorkOS locale, before the metadata
	magic("meta-fr@example.com", "", "fr")                                                      // the metadata
	magic("unknown@example.com", "it-IT", "tlh")                                                // neither has messages: the default, pt -> pt-BR
	magic("regional@example.com", "ja-JP", "")                                                  // a regional variant
	h.wos.AddCode("magic_auth", "nouser@example.com", "user_01GONE", time.Now().Add(time.Hour)) // no such user: the default
	h.wos.AddInvitation(fakeworkosInvitation("org-es@example.com", spanishOrg))                 // no user yet: the organization
	h.wos.AddInvitation(fakeworkosInvitation("no-org@example.com", ""))                         // nor an organization: the default
	h.wos.AddRadarChallenge("radar-de@example.com", user("radar-de@example.com", "de-AT", ""), time.Now().Add(time.Hour))
	_, welcomed := h.wos.SignUp("W", "E", "welcome-fr@example.com", false, map[string]string{"lang": "fr-CA"})
	h.wos.VerifyEmail(welcomed) // the object is the user itself
	h.run()

	for to, want := range map[string]string{
		"workos-de@example.com":  "Ihr Anmeldecode",
		"meta-fr@example.com":    "Votre code de connexion",
		"unknown@example.com":    "Seu código de acesso",
		"regional@example.com":   "ログインコード",
		"nouser@example.com":     "Seu código de acesso",
		"org-es@example.com":     "Únete a Globex en Acme",
		"no-org@example.com":     "Junte-se a Acme",
		"radar-de@example.com":   "Bestätigen Sie Ihre Anmeldung",
		"welcome-fr@example.com": "Bienvenue",
	} {
		msgs := h.sentTo(to)
		if len(msgs) != 1 {
			t.Errorf("%s: %d emails, want 1", to, len(msgs))
			continue
		}
		if !strings.Contains(msgs[0].Text, want) {
			t.Errorf("%s: want %q in\n%s", to, want, msgs[0].Text)
		}
	}
	// One read of each user the codes name, none for the invitations; the welcome's object is
	// the user.
	if n := h.wos.Requests("/user_management/users/"); n != 7 {
		t.Errorf("%d user reads, want 7", n)
	}
}

// The reader's locale is read through the name cache: many codes for one user cost one read.
func TestUserLocaleIsCached(t *testing.T) {
	h := newHarness(t)
	id := h.wos.AddUser("Ada", "Lovelace", "ada@example.com")
	h.wos.Update(id, map[string]any{"locale": "de-DE"})
	for range 5 {
		h.wos.AddCode("magic_auth", "ada@example.com", id, time.Now().Add(time.Hour))
	}
	h.run()
	if n := len(h.sentTo("ada@example.com")); n != 5 {
		t.Fatalf("%d emails, want 5", n)
	}
	for _, m := range h.sentTo("ada@example.com") {
		if !strings.Contains(m.Text, "Ihr Anmeldecode") {
			t.Errorf("not in German:\n%s", m.Text)
		}
	}
	if n := h.wos.Requests("/user_management/users/"); n != 1 {
		t.Errorf("%d user reads for 5 codes of one user, want 1", n)
	}
}

// A trigger's own skip code is one of the reason codes the metrics know.
func TestTriggerSkipCodesAreReasons(t *testing.T) {
	for _, k := range kinds.All {
		for _, tr := range k.Triggers {
			if tr.SkipCode != "" && !slices.Contains(Reasons, tr.SkipCode) {
				t.Errorf("%s: skip code %q is not a Reason* code", tr.Event, tr.SkipCode)
			}
		}
	}
}
