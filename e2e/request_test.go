//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
)

const apiToken = "e2e-send-api-token-0123456789abcdefghijk"

// A Magic Link request survives the daemon being killed at each point between its acceptance
// and the record of its send: the app retries with its Idempotency-Key, as it does after an
// error, and gets the same request, and the email goes out once, or as on_ambiguous says for a
// send whose outcome is unknown. The link is never in the store file.
func TestMagicLinkRequestSurvivesKills(t *testing.T) {
	for _, c := range []struct {
		failpoint, onAmbiguous string
		emails                 int
		state                  string
	}{
		{"after-accept", "hold", 1, "sent"},
		{"before-send", "hold", 0, "ambiguous"}, // SES never called, but nobody can know that
		{"before-send", "resend", 1, "sent"},
		{"after-send", "hold", 1, "ambiguous"},
		{"after-send", "resend", 2, "sent"}, // recorded as a possible second copy
	} {
		t.Run(c.failpoint+"/"+c.onAmbiguous, func(t *testing.T) {
			wos, ses := fakeworkos.New(apiKey), fakeses.New()
			wosURL, sesURL := wos.Start(), ses.Start()
			t.Cleanup(wos.Close)
			t.Cleanup(ses.Close)
			dir := t.TempDir()
			storePath := filepath.Join(dir, "state.db")
			addr := freeAddr(t)
			cfg := config{WorkOSURL: wosURL, SESURL: sesURL, StorePath: storePath, OnAmbiguous: c.onAmbiguous,
				Extra: "api:\n  listen: " + addr + "\n"}.write(t, dir)
			env := daemonEnv("WORKOS_EMAILER_API_TOKEN=" + apiToken)
			body := `{"email":"ada@example.com","redirect_uri":"https://app.example.com/cb","locale":"ja"}`

			d := start(t, failpointBin, append(env, "WORKOS_EMAILER_FAILPOINTS="+c.failpoint+"=1"), "run", "--config", cfg)
			waitUntil(t, 10*time.Second, "the send API", func() bool { return strings.Contains(d.stderr.String(), "send API listening") || d.exited(0) })
			first, _ := postMagicLink(addr, body, "app-retry-1") // may fail: the daemon dies before answering
			if !d.exited(10 * time.Second) {
				t.Fatalf("the %s failpoint did not kill the daemon:\n%s", c.failpoint, tail(d.stderr.String(), 10))
			}
			if out := d.output(); !d.killedBySignal() || !strings.Contains(out, "failpoint: "+c.failpoint) {
				t.Fatalf("not killed at %s:\n%s", c.failpoint, tail(out, 10))
			}

			d = start(t, failpointBin, env, "run", "--config", cfg)
			var got magicLinkAnswer
			waitUntil(t, 20*time.Second, "the retried request to be final", func() bool {
				a, err := postMagicLink(addr, body, "app-retry-1")
				got = a
				return err == nil && (a.State == "sent" || a.State == "ambiguous" || a.State == "dead")
			})
			if first.ID != "" && got.ID != first.ID {
				t.Errorf("the retry names request %s, the first answer %s", got.ID, first.ID)
			}
			if got.State != c.state {
				t.Errorf("state %s, want %s", got.State, c.state)
			}
			// The daemon has nothing more to do: stop it cleanly and count.
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			if code := d.exitCode(); code != 0 {
				t.Fatalf("exit %d after SIGTERM:\n%s", code, tail(d.output(), 10))
			}
			msgs := ses.Messages()
			if len(msgs) != c.emails {
				t.Errorf("%d emails, want %d", len(msgs), c.emails)
			}
			sessions := wos.Sessions()
			for _, m := range msgs {
				if m.To[0] != "ada@example.com" || !strings.Contains(m.Text, "15") {
					t.Errorf("email to %v:\n%s", m.To, m.Text)
				}
			}
			raw, err := os.ReadFile(storePath)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sessions {
				if bytes.Contains(raw, []byte(s.Link)) {
					t.Error("the store file holds a link")
				}
			}
			if bytes.Contains(raw, []byte("ada@example.com")) {
				t.Error("the store file holds the address in clear")
			}
			fmt.Printf("magic link request (kill at %s, on_ambiguous=%s): emails=%d sessions=%d state=%s\n",
				c.failpoint, c.onAmbiguous, len(msgs), len(sessions), got.State)
		})
	}
}

type magicLinkAnswer struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

func postMagicLink(addr, body, key string) (magicLinkAnswer, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/magic_link", strings.NewReader(body))
	if err != nil {
		return magicLinkAnswer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return magicLinkAnswer{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusAccepted {
		return magicLinkAnswer{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	var a magicLinkAnswer
	return a, json.NewDecoder(resp.Body).Decode(&a)
}
