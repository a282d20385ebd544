package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/workos-emailer/workos-emailer/internal/syncbuf"
)

// send magic-link asks the running daemon, as the app would: one email, also when repeated with
// its idempotency key; bad input exits 2 and sends nothing.
func TestSendMagicLinkThroughTheDaemon(t *testing.T) {
	daemonEnv(t)
	t.Setenv("WORKOS_EMAILER_API_TOKEN", testAPIToken)
	wos, wosURL, ses, sesURL := fakes(t)
	apiAddr := freeLoopbackAddr(t)
	cfg := daemonConfig(t, wosURL, sesURL, "127.0.0.1:0")
	if err := appendFile(cfg, "api:\n  listen: "+apiAddr+"\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	stderr := &syncbuf.Buffer{}
	go func() { done <- execute(ctx, []string{"run", "--config", cfg}, &bytes.Buffer{}, stderr) }()
	defer func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("daemon exited %d:\n%s", code, stderr.String())
		}
	}()
	eventually(t, "the send API listening", func() bool { return strings.Contains(stderr.String(), `"send API listening"`) })

	for i := 0; i < 2; i++ {
		code, stdout, errOut := cli(t, context.Background(), "send", "magic-link", "ada@example.com", "--locale", "de",
			"--redirect-uri", "https://app.acme.test/callback", "--idempotency-key", "cli-1", "--config", cfg)
		if code != exitOK || !strings.Contains(stdout, "request_") {
			t.Fatalf("send magic-link: exit %d, %q %q", code, stdout, errOut)
		}
	}
	eventually(t, "the Magic Link email", func() bool { return len(ses.Messages()) == 1 })
	msg, sessions := ses.Messages()[0], wos.Sessions()
	if len(sessions) != 1 || !strings.Contains(msg.Text, sessions[0].Link) || msg.To[0] != "ada@example.com" || !strings.Contains(msg.Text, "Minuten") {
		t.Errorf("%d sessions; the email to %v is not the German Magic Link:\n%s", len(sessions), msg.To, msg.Text)
	}
	if code, _, errOut := cli(t, context.Background(), "send", "magic-link", "ada@example.com, eve@example.com", "--config", cfg); code != exitUsage ||
		!strings.Contains(errOut, "email") {
		t.Errorf("two addresses: exit %d, %q", code, errOut)
	}
	if strings.Contains(stderr.String(), testAPIToken) || strings.Contains(stderr.String(), sessions[0].Link) {
		t.Error("the daemon's log holds the token or the link")
	}
	if len(ses.Messages()) != 1 {
		t.Errorf("%d emails, want 1", len(ses.Messages()))
	}
}

func TestSendMagicLinkNeedsTheSendAPI(t *testing.T) {
	isolate(t)
	code, _, errOut := cli(t, context.Background(), "send", "magic-link", "ada@example.com", "--config", writeConfig(t, "mailer:\n  driver: log\n"))
	if code != exitUsage || !strings.Contains(errOut, "api.listen") {
		t.Errorf("exit %d, %q", code, errOut)
	}
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
