package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
)

func (h *harness) enableNotices() {
	h.opts.Kinds = kinds.Names()
	h.opts.AppURL = "https://app.acme.example/"
}

// A user is welcomed once, ever: at sign-up when the address was verified already, or when it
// is verified; not again for a second verification, nor after a backfill lists it all again.
func TestWelcomeGoesOutOncePerUserAcrossACursorReset(t *testing.T) {
	h := newHarness(t)
	h.enableNotices()
	_, sso := h.wos.SignUp("Grace", "Hopper", "grace@example.com", true, nil)
	eLater, pending := h.wos.SignUp("Alan", "Turing", "alan@example.com", false, nil)
	first := h.wos.VerifyEmail(pending)
	second := h.wos.VerifyEmail(pending)
	again := h.wos.VerifyEmail(sso)
	h.run()

	for addr, n := range map[string]int{"grace@example.com": 1, "alan@example.com": 1} {
		if msgs := h.sentTo(addr); len(msgs) != n {
			t.Fatalf("%d welcomes to %s, want %d", len(msgs), addr, n)
		}
	}
	if m := h.sentTo("alan@example.com")[0]; !strings.Contains(m.Subject, "Welcome") || !strings.Contains(m.Text, "Welcome, Alan!") ||
		!strings.Contains(m.Text, "https://app.acme.example/") {
		t.Errorf("welcome: %q\n%s", m.Subject, m.Text)
	}
	assertState(t, h, eLater, store.Skipped, "not verified at sign-up")
	assertState(t, h, first, store.Sent, "")
	assertState(t, h, second, store.Skipped, "the welcome email went out already")
	assertState(t, h, again, store.Skipped, "the welcome email went out already")

	// A backfill: the records of every event are gone (as after a long outage that outlived
	// their retention) and the cursor starts over; the once keys are still there.
	h.restart()
	if err := h.store.ResetCursor(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Prune(time.Now().Add(time.Hour), 100); err != nil {
		t.Fatal(err)
	}
	h.run()
	if n := len(h.sentTo("alan@example.com")) + len(h.sentTo("grace@example.com")); n != 2 {
		t.Errorf("%d welcomes after the backfill, want the 2 from before", n)
	}
	assertState(t, h, first, store.Skipped, "the welcome email went out already")
}

// A welcome that SES refuses for good lets go of the user: the next verification welcomes.
func TestRejectedWelcomeLetsTheNextOneThrough(t *testing.T) {
	h := newHarness(t)
	h.enableNotices()
	rejecting := rejectSends(h)
	_, user := h.wos.SignUp("Ada", "Lovelace", "ada@example.com", false, nil)
	first := h.wos.VerifyEmail(user)
	h.run()
	assertState(t, h, first, store.Dead, "")
	rejecting.Store(false)
	h.wos.VerifyEmail(user)
	h.run()
	if n := len(h.sentTo("ada@example.com")); n != 1 {
		t.Errorf("%d welcomes, want 1", n)
	}
}

// The password notice goes to the address the account had when the password changed, says
// when, and what to do if it was not them; in the user's language when their metadata says.
func TestPasswordChangedNotice(t *testing.T) {
	h := newHarness(t)
	h.enableNotices()
	h.opts.UserLocaleKey = "locale"
	_, user := h.wos.SignUp("Grace", "Hopper", "grace@example.com", true, map[string]string{"locale": "de-DE"})
	ev := h.wos.ChangePassword(user)
	h.wos.Update(user, map[string]any{"email": "attacker@example.com"}) // changed since
	h.run()
	msgs := h.sentTo("grace@example.com")
	if len(msgs) != 1 || !strings.Contains(msgs[0].Subject, "Passwort") {
		t.Fatalf("%d emails to the address at the time of the change, want the notice", len(msgs))
	}
	if w := h.sentTo("attacker@example.com"); len(w) != 1 || !strings.Contains(w[0].Subject, "Willkommen") {
		t.Errorf("the current address gets %d emails, want the welcome (sign-up verified)", len(w))
	}
	notice := msgs[0].Text
	for _, want := range []string{"Hallo Grace,", "wurde am", "Falls Sie Ihr Passwort nicht geändert haben", "https://app.acme.example/"} {
		if !strings.Contains(notice, want) {
			t.Errorf("notice lacks %q:\n%s", want, notice)
		}
	}
	assertState(t, h, ev, store.Sent, "")
}

// Notices of old events are not sent: a welcome or a password notice days late would puzzle.
func TestOldNoticesAreSkipped(t *testing.T) {
	h := newHarness(t)
	h.enableNotices()
	_, user := h.wos.SignUp("Grace", "Hopper", "grace@example.com", false, nil)
	ev := h.wos.VerifyEmail(user)
	h.opts.Now = func() time.Time { return time.Now().Add(72*time.Hour + time.Hour) }
	h.run()
	assertState(t, h, ev, store.Skipped, "after the event")
	if n := h.ses.SendRequests(); n != 0 {
		t.Errorf("%d sends, want none", n)
	}
}

// The opt-in kinds' events are not even listed unless enabled: every sign-up and sign-in would
// leave a record behind.
func TestDisabledNoticesAreNotListed(t *testing.T) {
	h := newHarness(t)
	_, user := h.wos.SignUp("Grace", "Hopper", "grace@example.com", true, nil)
	h.wos.VerifyEmail(user)
	h.wos.ChangePassword(user)
	h.wos.AddCode("magic_auth", "grace@example.com", user, time.Now().Add(10*time.Minute))
	h.run()
	st, err := h.store.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 1 || len(h.ses.Messages()) != 1 {
		t.Errorf("%d records and %d emails, want only the magic auth code's", st.Records, len(h.ses.Messages()))
	}
}

// With templates.user_locale_key, a code goes out in the user's language (a user read per
// email, best effort), an invitation in its organization's.
func TestLocalesFromTheUserAndTheOrganization(t *testing.T) {
	h := newHarness(t)
	h.opts.UserLocaleKey = "locale"
	_, fr := h.wos.SignUp("Marie", "Curie", "marie@example.com", true, map[string]string{"locale": "fr"})
	h.wos.AddCode("magic_auth", "marie@example.com", fr, time.Now().Add(10*time.Minute))
	h.wos.AddCode("magic_auth", "nobody@example.com", "user_01MISSING", time.Now().Add(10*time.Minute))
	org := h.wos.AddOrganization("Tanaka KK")
	h.templates = mustTemplates(t, mailer.TemplateOptions{Brand: mailer.Brand{Name: "Acme"}, OrgLocales: map[string]string{org: "ja"}})
	h.wos.AddInvitation(fakeworkosInvitation("jiro@example.com", org))
	h.run()
	for addr, want := range map[string]string{
		"marie@example.com":  "Saisissez ce code",
		"nobody@example.com": "Enter this code", // no such user: the default locale
		"jiro@example.com":   "招待",
	} {
		msgs := h.sentTo(addr)
		if len(msgs) != 1 || !strings.Contains(msgs[0].Text, want) {
			t.Errorf("%s: %d emails, want one with %q", addr, len(msgs), want)
		}
	}
	if n := h.wos.Requests("/user_management/users/"); n != 2 {
		t.Errorf("%d user reads, want 2 (one per code)", n)
	}
}
