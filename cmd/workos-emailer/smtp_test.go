package main

import (
	"context"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/smtpsink"
)

// startRelay serves internal/smtpsink (emersion/go-smtp's server) on loopback, without TLS or
// AUTH (mailer.smtp.tls: none is for loopback relays).
func startRelay(t *testing.T) (*smtpsink.Server, int) {
	t.Helper()
	r := smtpsink.New(smtpsink.Options{})
	port, err := r.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, port
}

// relayed is the data of each message the relay accepted.
func relayed(r *smtpsink.Server) []string {
	var out []string
	for _, m := range r.Messages() {
		out = append(out, string(m.Raw))
	}
	return out
}

// mailer.driver: smtp from the configuration to a relay: send test puts the email there.
func TestSMTPDriverFromConfig(t *testing.T) {
	isolate(t)
	r, port := startRelay(t)
	cfg := writeConfig(t, "mailer:\n  driver: smtp\n  from: \"Acme <no-reply@acme.test>\"\n  smtp:\n    host: 127.0.0.1\n    port: "+
		strconv.Itoa(port)+"\n    tls: none\n")
	code, stdout, stderr := cli(t, context.Background(), "send", "test", "invitation", "--to", "me@example.com", "--config", cfg)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if msgs := relayed(r); len(msgs) != 1 || !strings.Contains(msgs[0], "Subject: [Test]") || !strings.Contains(stdout, "through smtp") {
		t.Errorf("%d messages; stdout %q", len(msgs), stdout)
	}
}

func TestSMTPConfigErrors(t *testing.T) {
	isolate(t)
	for _, tc := range []struct{ yaml, key string }{
		{"mailer:\n  driver: smtp\n  from: a@acme.test\n", "mailer.smtp.host"},
		{"mailer:\n  driver: smtp\n  smtp:\n    host: smtp.example.net\n", "mailer.from"},
		{"mailer:\n  driver: smtp\n  from: a@acme.test\n  smtp:\n    host: smtp.example.net\n    tls: none\n", "mailer.smtp.tls"},
		{"mailer:\n  driver: smtp\n  from: a@acme.test\n  smtp:\n    host: smtp.example.net\n    tls: ssl\n", "mailer.smtp.tls"},
		{"mailer:\n  driver: smtp\n  from: a@acme.test\n  smtp:\n    host: smtp.example.net\n    password: hunter2-secret\n", "mailer.smtp.username"},
		{"mailer:\n  driver: smtp\n  from: a@acme.test\n  smtp:\n    host: smtp.example.net\n    password_file: /nonexistent/pw\n", "mailer.smtp.password_file"},
	} {
		code, _, stderr := cli(t, context.Background(), "send", "test", "invitation", "--to", "me@example.com", "--config", writeConfig(t, tc.yaml))
		if code != exitUsage || !strings.Contains(stderr, tc.key) || strings.Contains(stderr, "hunter2") {
			t.Errorf("%q: exit %d, %q; want 2 naming %s", tc.yaml, code, stderr, tc.key)
		}
	}
}

// An organization with its own sender gets its emails from it, in its locale; the others from
// mailer.from. render and send test say so too.
func TestOrganizationSender(t *testing.T) {
	isolate(t)
	r, port := startRelay(t)
	cfg := writeConfig(t, "mailer:\n  driver: smtp\n  from: \"Acme <no-reply@acme.test>\"\n  smtp:\n    host: 127.0.0.1\n    port: "+
		strconv.Itoa(port)+"\n    tls: none\norganizations:\n  org_01H5JQDV7R7ATEYZDEG0W5PRYS:\n    locale: de\n"+
		"    from: \"Müller GmbH <no-reply@mueller.test>\"\n    reply_to: hilfe@mueller.test\n")
	code, _, stderr := cli(t, context.Background(), "render", "invitation", "--org", "org_01H5JQDV7R7ATEYZDEG0W5PRYS", "--config", cfg)
	if code != exitOK || !strings.Contains(stderr, "from: Müller GmbH <no-reply@mueller.test>") || !strings.Contains(stderr, "locale: de") {
		t.Errorf("render --org: exit %d, %q", code, stderr)
	}
	for _, org := range []string{"org_01H5JQDV7R7ATEYZDEG0W5PRYS", ""} {
		args := []string{"send", "test", "invitation", "--to", "me@example.com", "--config", cfg}
		if org != "" {
			args = append(args, "--org", org)
		}
		if code, _, stderr := cli(t, context.Background(), args...); code != exitOK {
			t.Fatalf("send test --org %q: exit %d: %s", org, code, stderr)
		}
	}
	msgs := relayed(r)
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if m := msgs[0]; !strings.Contains(m, "no-reply@mueller.test>") || !strings.Contains(m, "Reply-To: hilfe@mueller.test") ||
		!strings.Contains(m, "Einladung") {
		t.Errorf("the organization's email:\n%s", m[:min(len(m), 600)])
	}
	if m := msgs[1]; !strings.Contains(m, "From: Acme <no-reply@acme.test>") || strings.Contains(m, "mueller") {
		t.Errorf("the default email:\n%s", m[:min(len(m), 600)])
	}
	bad := writeConfig(t, "mailer:\n  driver: log\norganizations:\n  org_01H5JQDV7R7ATEYZDEG0W5PRYS:\n    from: \"x@y.z\\r\\nBcc: e@vil.example\"\n")
	if code, _, stderr := cli(t, context.Background(), "render", "invitation", "--config", bad); code != exitUsage || !strings.Contains(stderr, ".from") {
		t.Errorf("a From with CR/LF: exit %d, %q", code, stderr)
	}
	clash := writeConfig(t, "mailer:\n  driver: log\ntemplates:\n  org_locales:\n    org_01ABC: fr\norganizations:\n  org_01ABC:\n    locale: de\n")
	if code, _, stderr := cli(t, context.Background(), "render", "invitation", "--config", clash); code != exitUsage || !strings.Contains(stderr, "org_locales") {
		t.Errorf("two locales for one organization: exit %d, %q", code, stderr)
	}
}

// mailer.smtp.max_send_rate paces SMTP sends through the send limiter; 0 leaves them unpaced.
func TestSMTPPacing(t *testing.T) {
	isolate(t)
	for _, rate := range []float64{0, 5} {
		cfg, err := config.Load(writeConfig(t, "mailer:\n  driver: smtp\n  from: a@acme.test\n  smtp:\n    host: 127.0.0.1\n    tls: none\n    max_send_rate: "+
			strconv.FormatFloat(rate, 'f', -1, 64)+"\n"), true)
		if err != nil {
			t.Fatal(err)
		}
		sender, err := newSender(context.Background(), cfg, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		opts, obs := workerOptions(cfg), &daemonObs{}
		paceSends(cfg, sender, &opts, obs, zap.NewNop())
		switch {
		case rate == 0 && opts.Limiter != nil:
			t.Error("max_send_rate 0 paced the sends")
		case rate > 0 && (opts.Limiter == nil || obs.limitStatus().Rate != rate):
			t.Errorf("max_send_rate %v: limiter %v", rate, obs.limitStatus())
		}
	}
}
