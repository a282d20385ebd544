package main

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// relay is emersion/go-smtp's server on loopback, without TLS (mailer.smtp.tls: none is for
// loopback relays), keeping what it receives.
type relay struct {
	mu   sync.Mutex
	msgs []string
}

func (r *relay) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return relaySession{r}, nil }

type relaySession struct{ r *relay }

func (relaySession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (relaySession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (s relaySession) Data(rd io.Reader) error {
	b, err := io.ReadAll(rd)
	s.r.mu.Lock()
	s.r.msgs = append(s.r.msgs, string(b))
	s.r.mu.Unlock()
	return err
}
func (relaySession) Reset()        {}
func (relaySession) Logout() error { return nil }

func startRelay(t *testing.T) (*relay, int) {
	t.Helper()
	r := &relay{}
	srv := gosmtp.NewServer(r)
	srv.Domain, srv.ReadTimeout, srv.WriteTimeout = "relay.test", 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r, ln.Addr().(*net.TCPAddr).Port
}

// mailer.driver: smtp from the configuration to a relay: send test puts the email there.
func TestSMTPDriverFromConfig(t *testing.T) {
	isolate(t)
	r, port := startRelay(t)
	cfg := writeConfig(t, "mailer:\n  driver: smtp\n  from: \"Acme <no-reply@acme.example>\"\n  smtp:\n    host: 127.0.0.1\n    port: "+
		strconv.Itoa(port)+"\n    tls: none\n")
	code, stdout, stderr := cli(t, context.Background(), "send", "test", "invitation", "--to", "me@example.com", "--config", cfg)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) != 1 || !strings.Contains(r.msgs[0], "Subject: [Test]") || !strings.Contains(stdout, "through smtp") {
		t.Errorf("%d messages; stdout %q", len(r.msgs), stdout)
	}
}

func TestSMTPConfigErrors(t *testing.T) {
	isolate(t)
	for _, tc := range []struct{ yaml, key string }{
		{"mailer:\n  driver: smtp\n  from: a@acme.example\n", "mailer.smtp.host"},
		{"mailer:\n  driver: smtp\n  smtp:\n    host: smtp.example.net\n", "mailer.from"},
		{"mailer:\n  driver: smtp\n  from: a@acme.example\n  smtp:\n    host: smtp.example.net\n    tls: none\n", "mailer.smtp.tls"},
		{"mailer:\n  driver: smtp\n  from: a@acme.example\n  smtp:\n    host: smtp.example.net\n    tls: ssl\n", "mailer.smtp.tls"},
		{"mailer:\n  driver: smtp\n  from: a@acme.example\n  smtp:\n    host: smtp.example.net\n    password: hunter2-secret\n", "mailer.smtp.username"},
		{"mailer:\n  driver: smtp\n  from: a@acme.example\n  smtp:\n    host: smtp.example.net\n    password_file: /nonexistent/pw\n", "mailer.smtp.password_file"},
	} {
		code, _, stderr := cli(t, context.Background(), "send", "test", "invitation", "--to", "me@example.com", "--config", writeConfig(t, tc.yaml))
		if code != exitUsage || !strings.Contains(stderr, tc.key) || strings.Contains(stderr, "hunter2") {
			t.Errorf("%q: exit %d, %q; want 2 naming %s", tc.yaml, code, stderr, tc.key)
		}
	}
}
