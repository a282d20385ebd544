//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

// The release binary, attacked from outside the way issue 12 found it wanting: AWS credentials
// from a container endpoint that starts failing, an SES whose answers come in two flushes,
// throttles for seconds and rejects a recipient naming the address, recipients with
// internationalized domains. Checked as an operator would: the SES side, `status`, `dead list`
// and the log.

// storeStatus is the part of `status --json` these tests read.
type storeStatus struct {
	States map[string]int `json:"states"`
}

func runCLI(t *testing.T, env []string, cfg string, args ...string) string {
	t.Helper()
	cmd := exec.Command(releaseBin, append(args, "--config", cfg)...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s%s", args, err, out, stderr.String())
	}
	return string(out)
}

func TestCredentialEndpointFailingIsNeverAmbiguous(t *testing.T) {
	f := startFakes(t)
	var failing atomic.Bool
	var credRequests atomic.Int64
	creds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		credRequests.Add(1)
		if failing.Load() {
			http.Error(w, `{"code":"InternalError","message":"endpoint down"}`, http.StatusInternalServerError)
			return
		}
		// Valid for one minute, inside the SDK's five-minute refresh window: every use asks
		// again, as credentials about to expire do.
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"AccessKeyId": "AKIDCONTAINER", "SecretAccessKey": "container-secret",
			"Token": "container-token", "Expiration": time.Now().Add(time.Minute).UTC().Format(time.RFC3339)})
	}))
	t.Cleanup(creds.Close)
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI=" + creds.URL + "/v2/credentials"}

	dir := t.TempDir()
	admin := freeAddr(t)
	cfg := config{WorkOSURL: f.wosURL, SESURL: f.sesURL, StorePath: filepath.Join(dir, "state.db")}.write(t, dir)
	setAdmin(t, cfg, admin)
	d := start(t, releaseBin, env, "run", "--config", cfg)
	waitUntil(t, 30*time.Second, "ready", func() bool { return httpStatus("http://"+admin+"/readyz") == http.StatusOK })

	failing.Store(true)
	for i := range 5 {
		f.wos.AddCode("magic_auth", fmt.Sprintf("code%d@example.com", i), "user_01", time.Now().Add(time.Hour))
	}
	waitUntil(t, 30*time.Second, "readiness to say why sending is paused", func() bool {
		return strings.Contains(httpBody(t, "http://"+admin+"/readyz"), "sending is paused: AWS credentials cannot be resolved")
	})
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(); code != 0 {
		t.Fatalf("stop: exit %d:\n%s", code, tail(d.output(), 10))
	}
	if n := f.ses.SendRequests(); n != 0 {
		t.Fatalf("SES saw %d requests while the credentials failed", n)
	}
	var st storeStatus
	if err := json.Unmarshal([]byte(runCLI(t, env, cfg, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.States["ambiguous"] != 0 || st.States["sending"] != 0 || st.States["dead"] != 0 {
		t.Fatalf("after the outage: %v, want nothing ambiguous, sending or dead", st.States)
	}
	if out := d.output(); strings.Contains(out, "container-secret") || strings.Contains(out, "container-token") {
		t.Error("the log shows the credentials")
	}

	// The endpoint recovers; the restarted daemon sends each email once.
	failing.Store(false)
	d = start(t, releaseBin, env, "run", "--config", cfg)
	waitUntil(t, 30*time.Second, "the five emails", func() bool { return len(f.ses.Messages()) == 5 })
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(); code != 0 {
		t.Fatalf("stop: exit %d:\n%s", code, tail(d.output(), 10))
	}
	if err := json.Unmarshal([]byte(runCLI(t, env, cfg, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.States["sent"] != 5 || st.States["ambiguous"] != 0 || f.ses.SendRequests() != 5 {
		t.Errorf("after recovery: %v, %d SES requests; want 5 sent once each", st.States, f.ses.SendRequests())
	}
}

func TestHostileSESAndAddresses(t *testing.T) {
	const (
		events   = 400
		rejected = "jane.doe@customer.example"
		throttle = 3 * time.Second
	)
	f := startFakes(t)
	f.ses.BetweenHeadersAndBody = func(*http.Request) {} // every success answer in two flushes
	var mu sync.Mutex
	var throttleUntil time.Time
	var throttled atomic.Int64
	f.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/email/outbound-emails" {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		mu.Lock()
		if throttleUntil.IsZero() {
			throttleUntil = time.Now().Add(throttle)
		}
		inOutage := time.Now().Before(throttleUntil)
		mu.Unlock()
		switch {
		case inOutage:
			throttled.Add(1)
			fakeses.WriteError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Maximum sending rate exceeded.")
			return true
		case bytes.Contains(b, []byte(rejected)):
			fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected",
				"Illegal address: "+rejected)
			return true
		}
		return false
	}
	hour := time.Now().Add(time.Hour)
	f.wos.AddCode("magic_auth", rejected, "user_01", hour)
	f.wos.AddCode("magic_auth", "juergen@bücher.example", "user_02", hour)
	f.wos.AddCode("magic_auth", "用户@example.com", "user_03", hour)
	for i := range events - 3 {
		f.wos.AddCode("magic_auth", fmt.Sprintf("user%03d@example.com", i), "user_04", hour)
	}
	dir := t.TempDir()
	cfg := config{WorkOSURL: f.wosURL, SESURL: f.sesURL, StorePath: filepath.Join(dir, "state.db"), Concurrency: 16}.write(t, dir)
	d := start(t, releaseBin, daemonEnv(), "run", "--config", cfg)
	waitUntil(t, 2*time.Minute, "every email", func() bool { return len(f.ses.Messages()) == events-2 })
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(); code != 0 {
		t.Fatalf("stop: exit %d:\n%s", code, tail(d.output(), 10))
	}

	var st storeStatus
	if err := json.Unmarshal([]byte(runCLI(t, daemonEnv(), cfg, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.States["sent"] != events-2 || st.States["dead"] != 2 || st.States["ambiguous"] != 0 {
		t.Errorf("states %v, want %d sent, 2 dead, 0 ambiguous", st.States, events-2)
	}
	perRecipient := map[string]int{}
	for _, m := range f.ses.Messages() {
		perRecipient[strings.Join(m.To, ",")]++
	}
	if perRecipient["juergen@xn--bcher-kva.example"] != 1 {
		t.Error("the internationalized domain did not get its email in Punycode")
	}
	for to, n := range perRecipient {
		if n != 1 {
			t.Errorf("%s got %d emails", to, n)
		}
	}
	t.Logf("%d events: %d SES requests, %d of them throttled in %v", events, f.ses.SendRequests(), throttled.Load(), throttle)
	// The throttled seconds cost the emails in flight a few tries each, not one a second.
	if n := throttled.Load(); n > 16*6 {
		t.Errorf("%d throttled requests in %v with 16 in flight", n, throttle)
	}
	var list struct{ Deliveries []struct{ Reason string } }
	if err := json.Unmarshal([]byte(runCLI(t, daemonEnv(), cfg, "dead", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	var dead string
	for _, e := range list.Deliveries {
		dead += e.Reason + "\n"
	}
	if strings.Contains(dead, rejected) || !strings.Contains(dead, "Illegal address: <address>") || !strings.Contains(dead, "SMTPUTF8") {
		t.Errorf("dead list:\n%s", dead)
	}
	logs := d.output()
	for _, addr := range []string{rejected, "user001@example.com", "bücher", "用户"} {
		if strings.Contains(logs, addr) {
			t.Errorf("the info log names %s", addr)
		}
	}
	if n := strings.Count(logs, "the mail provider is unavailable"); n != 1 {
		t.Errorf("%d log lines that the mail provider is unavailable, want 1 for the whole outage", n)
	}
}
