package worker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/mailer"
)

// A reload while Run runs puts new templates and kinds in force for the next tries: a newly enabled
// kind goes out for events from then on, every email after it is rendered with the new
// templates, and what was recorded before it stays as it was.
func TestReloadWhileRunning(t *testing.T) {
	h := newHarness(t)
	h.opts.Kinds = []string{"magic_auth"}
	h.opts.StopWhenIdle = false
	w := h.worker()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	now := time.Now()
	before, _, _ := h.wos.AddCode("email_verification", "early@example.com", "user_01", now.Add(time.Hour))
	h.wos.AddCode("magic_auth", "first@example.com", "user_02", now.Add(time.Hour))
	eventually(t, "the magic auth code sent", func() bool { return len(h.sentTo("first@example.com")) == 1 })

	w.Reload(Settings{Renderer: mustTemplates(t, mailer.TemplateOptions{Brand: mailer.Brand{Name: "Globex"}}),
		Kinds: []string{"magic_auth", "email_verification"}})
	h.wos.AddCode("email_verification", "later@example.com", "user_03", now.Add(time.Hour))
	h.wos.AddCode("magic_auth", "second@example.com", "user_04", now.Add(time.Hour))
	eventually(t, "both new emails sent", func() bool {
		return len(h.sentTo("later@example.com")) == 1 && len(h.sentTo("second@example.com")) == 1
	})
	for _, to := range []string{"later@example.com", "second@example.com"} {
		if m := h.sentTo(to)[0]; !strings.Contains(m.HTML, "Globex") || strings.Contains(m.HTML, "Acme") {
			t.Errorf("to %s: rendered with the old templates", to)
		}
	}
	if m := h.sentTo("first@example.com")[0]; !strings.Contains(m.HTML, "Acme") {
		t.Error("the email before the reload was not rendered with the templates then in force")
	}
	// Listed before the reload, while its kind was off: recorded skipped then, not sent now.
	if d := h.delivery(before); d.State != "skipped" || len(h.sentTo("early@example.com")) != 0 {
		t.Errorf("an event of a kind enabled later, from before the cursor: %s, %d emails", d.State, len(h.sentTo("early@example.com")))
	}

	// Interrupt, once Run has returned, fails at once.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if err := w.Interrupt(context.Background(), func() error { return nil }); !errors.Is(err, ErrNotRunning) {
		t.Errorf("interrupt of a stopped worker: %v, want ErrNotRunning", err)
	}
}
