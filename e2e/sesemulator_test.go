//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/store"
)

// toolPath finds a file of the npm tools `make tools` installs into .tools/node_modules. A test
// that needs a missing tool skips, unless REQUIRE_E2E_TOOLS=1 (as in `make e2e`) makes it fail.
func toolPath(t *testing.T, env, rel string) string {
	t.Helper()
	path := os.Getenv(env)
	if path == "" {
		path = filepath.Join("..", ".tools", "node_modules", rel)
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("REQUIRE_E2E_TOOLS") == "1" {
			t.Fatalf("%s not found (%v); run `make tools`", rel, err)
		}
		t.Skipf("%s not found; run `make tools` (or set %s)", rel, env)
	}
	return path
}

// startSESEmulator runs aws-ses-v2-local on a free loopback port and returns its base URL.
func startSESEmulator(t *testing.T) string {
	t.Helper()
	cli := toolPath(t, "SES_EMULATOR_CLI", filepath.Join("aws-ses-v2-local", "dist", "cli.js"))
	cmd := exec.Command("node", cli, "--host", "127.0.0.1", "--port", "0")
	// GetAccount answers only with an account configured.
	cmd.Env = append(os.Environ(), `AWS_SES_ACCOUNT={"DedicatedIpAutoWarmupEnabled":false,"Details":{"AdditionalContactEmailAddresses":[],"ContactLanguage":"EN","MailType":"TRANSACTIONAL","ReviewDetails":{"CaseId":"1","Status":"GRANTED"},"UseCaseDescription":"e2e","WebsiteURL":"https://acme.example"},"EnforcementStatus":"HEALTHY","ProductionAccessEnabled":true,"SendingEnabled":true,"SendQuota":{"Max24HourSend":50000,"MaxSendRate":14,"SentLast24Hours":0},"SuppressionAttributes":{"SuppressedReasons":[]}}`)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start aws-ses-v2-local: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// It prints "server running at http://localhost:PORT" (localhost even when bound to 127.0.0.1).
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`server running at https?://[^:]+:(\d+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				port <- m[1]
			}
		}
		close(port)
	}()
	select {
	case p, ok := <-port:
		if !ok {
			t.Fatal("aws-ses-v2-local exited without printing its address")
		}
		return "http://127.0.0.1:" + p
	case <-time.After(30 * time.Second):
		t.Fatal("aws-ses-v2-local did not print its address within 30s")
	}
	return ""
}

type emulatedEmail struct {
	MessageID   string   `json:"messageId"`
	From        string   `json:"from"`
	ReplyTo     []string `json:"replyTo"`
	Destination struct {
		To, Cc, Bcc []string
	} `json:"destination"`
	Subject string `json:"subject"`
	Body    struct {
		HTML string `json:"html"`
		Text string `json:"text"`
	} `json:"body"`
}

func emulatorStore(t *testing.T, base string) []emulatedEmail {
	t.Helper()
	resp, err := http.Get(base + "/store")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st struct{ Emails []emulatedEmail }
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET /store: %v: %s", err, body)
	}
	return st.Emails
}

// TestAgainstSESEmulator runs the daemon against aws-ses-v2-local, a third-party SES v2
// emulator, so the request our SDK client builds is read by code we did not write.
func TestAgainstSESEmulator(t *testing.T) {
	sesURL := startSESEmulator(t)
	wos := fakeworkos.New(apiKey)
	end := watchEnd(wos)
	wosURL := wos.Start()
	t.Cleanup(wos.Close)

	hostileOrg := `<script>alert("org")</script> Zoë & Søn's 日本 👋`
	org := wos.AddOrganization(hostileOrg)
	inviter := wos.AddUser(`<img src=x onerror=alert(1)>`, "O'Brien \"Q\"", "inviter@example.com")
	hour := time.Now().Add(time.Hour)
	type want struct{ eventID, kind, to, secret string }
	var wants []want
	add := func(kind, to string, f func() (string, string, string)) {
		ev, _, secret := f()
		wants = append(wants, want{eventID: ev, kind: kind, to: to, secret: secret})
	}
	add("invitation", "invitee@example.com", func() (string, string, string) {
		return wos.AddInvitation(fakeworkos.Invitation{Email: "invitee@example.com", ExpiresAt: hour, OrganizationID: org, InviterUserID: inviter})
	})
	add("magic_auth", "magic@example.com", func() (string, string, string) {
		return wos.AddCode("magic_auth", "magic@example.com", "user_01A", hour)
	})
	add("email_verification", "verify@example.com", func() (string, string, string) {
		return wos.AddCode("email_verification", "verify@example.com", "user_01B", hour)
	})
	add("password_reset", "reset@example.com", func() (string, string, string) {
		return wos.AddPasswordReset("reset@example.com", "user_01C", hour)
	})
	// Never sent: expired, revoked, a header-injection attempt, two recipients.
	expiredEv, _, expiredCode := wos.AddCode("magic_auth", "late@example.com", "user_01D", time.Now().Add(-time.Minute))
	revokedEv, revokedID, revokedToken := wos.AddInvitation(fakeworkos.Invitation{Email: "revoked@example.com", ExpiresAt: hour})
	wos.Update(revokedID, map[string]any{"state": "revoked"})
	injectEv, _, _ := wos.AddCode("magic_auth", "victim@example.com\r\nBcc: evil@example.net", "user_01E", hour)
	listEv, _, _ := wos.AddCode("magic_auth", "a@example.com, evil@example.net", "user_01F", hour)
	end.expect(listEv)

	dir := t.TempDir()
	storePath := filepath.Join(dir, "state.db")
	cfg := config{WorkOSURL: wosURL, SESURL: sesURL, StorePath: storePath,
		Extra: "links:\n  password_reset_url: https://app.acme.example/reset?token={{.Token}}\nbrand:\n  name: Acme\n"}.write(t, dir)
	d := start(t, releaseBin, daemonEnv(), "run", "--config", cfg)
	waitUntil(t, time.Minute, "the daemon to reach the end of the stream", end.done)
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, tail(d.output(), 20))
	}
	logs := d.output()

	emails := emulatorStore(t, sesURL)
	if len(emails) != len(wants) {
		t.Fatalf("the emulator stored %d emails, want %d", len(emails), len(wants))
	}
	byTo := map[string]emulatedEmail{}
	for _, e := range emails {
		if len(e.Destination.To) != 1 || len(e.Destination.Cc)+len(e.Destination.Bcc) != 0 {
			t.Errorf("destination %+v: want exactly one To address", e.Destination)
			continue
		}
		byTo[e.Destination.To[0]] = e
		if e.From != "Acme <no-reply@acme.test>" {
			t.Errorf("from %q", e.From)
		}
		if strings.ContainsAny(e.Subject, "\r\n") || e.Subject == "" {
			t.Errorf("subject %q", e.Subject)
		}
		if !strings.Contains(e.Body.HTML, "<html") || strings.Contains(e.Body.Text, "<td") {
			t.Errorf("to %s: want an HTML body and a plain-text body", e.Destination.To[0])
		}
	}
	raw, err := os.ReadFile(storePath)
	if err != nil {
		t.Fatal(err)
	}
	subjects := map[string]string{
		"invitation":         "You're invited to join " + hostileOrg,
		"magic_auth":         "Your sign-in code for Acme",
		"email_verification": "Verify your email address for Acme",
		"password_reset":     "Reset your Acme password",
	}
	for _, w := range wants {
		e, ok := byTo[w.to]
		if !ok {
			t.Errorf("%s: nothing sent to %s", w.kind, w.to)
			continue
		}
		// The secret is in its own email's bodies and nowhere else.
		if !strings.Contains(e.Body.HTML, w.secret) || !strings.Contains(e.Body.Text, w.secret) {
			t.Errorf("%s: the secret is missing from a body", w.kind)
		}
		if strings.Contains(e.Subject, w.secret) {
			t.Errorf("%s: the secret is in the subject", w.kind)
		}
		if want := subjects[w.kind]; !strings.HasPrefix(e.Subject, want) {
			t.Errorf("%s: subject %q, want it to start with %q", w.kind, e.Subject, want)
		}
		for _, other := range emails {
			if other.MessageID != e.MessageID && strings.Contains(other.Body.HTML+other.Body.Text+other.Subject, w.secret) {
				t.Errorf("%s: the secret is also in the email to %v", w.kind, other.Destination.To)
			}
		}
		if strings.Contains(logs, w.secret) {
			t.Errorf("%s: the secret is in the daemon's log", w.kind)
		}
		if len(w.secret) > 6 && strings.Contains(string(raw), w.secret) {
			t.Errorf("%s: the secret is in the store file", w.kind)
		}
	}
	if e := byTo["reset@example.com"]; !strings.Contains(e.Body.HTML, "https://app.acme.example/reset?token=") {
		t.Error("password reset: the configured link is not used")
	}
	inv := byTo["invitee@example.com"]
	if strings.Contains(inv.Body.HTML, "<script") || strings.Contains(inv.Body.HTML, "<img src=x") {
		t.Error("invitation: organization or inviter name not escaped in HTML")
	}
	if !strings.Contains(inv.Body.HTML, "&lt;script&gt;") || !strings.Contains(inv.Body.Text, "Zoë & Søn's 日本 👋") {
		t.Errorf("invitation: the organization name is not shown (escaped in HTML, as is in text):\n%s", inv.Body.Text)
	}
	for _, secret := range []string{expiredCode, revokedToken} {
		for _, e := range emails {
			if strings.Contains(e.Body.HTML+e.Body.Text, secret) {
				t.Errorf("an expired or revoked secret went out to %v", e.Destination.To)
			}
		}
	}

	st, err := store.Open(storePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for ev, state := range map[string]store.State{expiredEv: store.Skipped, revokedEv: store.Skipped, injectEv: store.Dead, listEv: store.Dead} {
		if d, _, err := st.Delivery(ev); err != nil || d.State != state {
			t.Errorf("%s: record %+v (%v), want %s", ev, d, err, state)
		}
	}
	for _, w := range wants {
		if d, _, _ := st.Delivery(w.eventID); d.State != store.Sent || d.MessageID != byTo[w.to].MessageID {
			t.Errorf("%s: record %+v, want sent with the emulator's message id %s", w.kind, d, byTo[w.to].MessageID)
		}
	}
	fmt.Printf("SES emulator: %d emails checked, %d refused or skipped\n", len(emails), 4)
}
