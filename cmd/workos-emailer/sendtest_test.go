package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
)

// send test puts every kind's sample email, and each variant, in the configured mailer (here
// SES, through the real SDK against the fake), marked as a test, and records nothing.
func TestSendTestEveryKind(t *testing.T) {
	daemonEnv(t)
	_, wosURL, ses, sesURL := fakes(t)
	cfg := daemonConfig(t, wosURL, sesURL, "")
	sent := 0
	for _, kind := range kinds.Names() {
		for _, variant := range append([]string{""}, mailer.Variants(kind)...) {
			args := []string{"send", "test", kind, "--to", " Me@Example.com ", "--locale", "de-DE", "--config", cfg}
			if variant != "" {
				args = append(args, "--variant", variant)
			}
			code, stdout, stderr := cli(t, context.Background(), args...)
			if code != exitOK || !strings.Contains(stdout, "sent a test "+kind) || !strings.Contains(stdout, "locale de") {
				t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
			}
			sent++
			msgs := ses.Messages()
			if len(msgs) != sent {
				t.Fatalf("%d messages at SES, want %d", len(msgs), sent)
			}
			m := msgs[sent-1]
			if !strings.HasPrefix(m.Subject, "[Test] ") || len(m.To) != 1 || m.To[0] != "Me@Example.com" ||
				m.Tags["kind"] != kind || !strings.HasPrefix(m.Tags["event_id"], "test-") || m.Text == "" || m.HTML == "" {
				t.Errorf("%s %q: %q to %v, tags %v", kind, variant, m.Subject, m.To, m.Tags)
			}
			if variant == "reminder" && !strings.Contains(m.Text, "Erinnerung") {
				t.Errorf("the German reminder does not read as one:\n%s", m.Text)
			}
		}
	}
	// Nothing recorded: the store was never created.
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg), "state.db")); !os.IsNotExist(err) {
		t.Errorf("send test touched the store: %v", err)
	}
	for _, args := range [][]string{
		{"send", "test", "magic_auth"}, // no --to
		{"send", "test", "magic_auth", "--to", "a@example.com\r\nBcc: x@evil.example"},
		{"send", "test", "magic_auth", "--to", "a@example.com, b@example.com"},
		{"send", "test", "sms", "--to", "a@example.com"},
		{"send", "test", "--to", "a@example.com"},
		{"send", "test", "magic_auth", "--to", "a@example.com", "--variant", "reminder"},
		{"send", "test", "magic_auth", "--to", "a@example.com", "--locale", "tlh"},
	} {
		if code, _, stderr := cli(t, context.Background(), append(args, "--config", cfg)...); code != exitUsage {
			t.Errorf("%v: exit %d (%s), want 2", args, code, stderr)
		}
	}
	if n := len(ses.Messages()); n != sent {
		t.Errorf("a refused send test reached SES: %d messages, want %d", n, sent)
	}
}
