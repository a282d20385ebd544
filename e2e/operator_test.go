//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOperatorRunbook walks the README's operations runbook with the release binary: start,
// ready, status and metrics from the running daemon, a backfill while it runs, stop, backfill
// with cursor reset --since, start again, and exactly the emails that had not gone out go out.
func TestOperatorRunbook(t *testing.T) {
	f := startFakes(t)
	end := watchEnd(f.wos)
	hour := time.Now().Add(time.Hour)
	backfillFrom := time.Now().Add(-time.Second).UTC().Truncate(time.Second)
	for i := range 5 {
		f.wos.AddCode("magic_auth", fmt.Sprintf("before%d@example.com", i), "user_01A", hour)
	}
	last := f.wos.EventIDs()[len(f.wos.EventIDs())-1]

	dir := t.TempDir()
	admin := freeAddr(t)
	cfg := config{WorkOSURL: f.wosURL, SESURL: f.sesURL, StorePath: filepath.Join(dir, "state.db")}.write(t, dir)
	// config.write disables the admin listener; the runbook needs it.
	setAdmin(t, cfg, admin)
	// cli runs a command to the end; out is its stdout, or stdout and stderr when it fails.
	cli := func(args ...string) (int, string) {
		cmd := exec.Command(releaseBin, append(args, "--config", cfg)...)
		cmd.Env = daemonEnv()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return cmd.ProcessState.ExitCode(), string(out) + stderr.String()
		}
		return 0, string(out)
	}

	end.expect(last)
	d := start(t, releaseBin, daemonEnv(), "run", "--config", cfg)
	waitUntil(t, 30*time.Second, "/readyz to answer 200", func() bool { return httpStatus("http://"+admin+"/readyz") == http.StatusOK })
	waitUntil(t, 30*time.Second, "the first five emails", end.done)

	code, out := cli("status", "--json")
	var status struct {
		Source string
		States map[string]int
	}
	if err := json.Unmarshal([]byte(out), &status); code != 0 || err != nil || status.Source != "daemon" || status.States["sent"] != 5 {
		t.Fatalf("status while running: exit %d, %v:\n%s", code, err, out)
	}
	metrics := httpBody(t, "http://"+admin+"/metrics")
	if !strings.Contains(metrics, `workos_emailer_emails_total{kind="magic_auth",reason="none",state="sent"} 5`) {
		t.Errorf("/metrics does not count the five sent emails:\n%s", grepLines(metrics, "workos_emailer_emails_total"))
	}
	// A backfill while it runs goes through its control socket: it reads the stream again from
	// --since at once, and what it recorded is not sent again.
	if code, out := cli("cursor", "reset", "--since", backfillFrom.Format(time.RFC3339)); code != 0 ||
		!strings.Contains(out, "the running daemon now reads events from") {
		t.Errorf("cursor reset while running: exit %d:\n%s", code, out)
	}
	waitUntil(t, 30*time.Second, "the live backfill to pass the five events again", func() bool {
		code, out := cli("cursor", "show")
		return code == 0 && strings.Contains(out, "cursor "+last)
	})
	if n := len(f.ses.Messages()); n != 5 {
		t.Errorf("%d emails after a live backfill over five sent ones, want 5", n)
	}

	// Stop; meanwhile two more events arrive, and one code expires before anyone sends it.
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(); code != 0 {
		t.Fatalf("stop: exit %d:\n%s", code, tail(d.output(), 10))
	}
	f.wos.AddCode("magic_auth", "during0@example.com", "user_01B", hour)
	f.wos.AddPasswordReset("during1@example.com", "user_01C", hour)
	f.wos.AddCode("magic_auth", "expired@example.com", "user_01D", time.Now().Add(-time.Second))
	ids := f.wos.EventIDs()
	last = ids[len(ids)-1]

	// Backfill from before the first event: only what never went out goes out.
	if code, out := cli("cursor", "reset", "--since", backfillFrom.Format(time.RFC3339)); code != 0 {
		t.Fatalf("cursor reset: exit %d:\n%s", code, out)
	}
	if code, out := cli("cursor", "show"); code != 0 || !strings.Contains(out, "no cursor") {
		t.Errorf("cursor show after reset: exit %d:\n%s", code, out)
	}
	end.expect(last)
	d = start(t, releaseBin, daemonEnv(), "run", "--config", cfg)
	waitUntil(t, 30*time.Second, "the backfill to reach the end of the stream", end.done)
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(); code != 0 {
		t.Fatalf("stop: exit %d:\n%s", code, tail(d.output(), 10))
	}

	sent := map[string]int{}
	for _, m := range f.ses.Messages() {
		sent[m.To[0]]++
	}
	want := map[string]int{"during0@example.com": 1, "during1@example.com": 1}
	for i := range 5 {
		want[fmt.Sprintf("before%d@example.com", i)] = 1
	}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Errorf("emails per recipient after the backfill:\n got %v\nwant %v", sent, want)
	}
	code, out = cli("status", "--json")
	if err := json.Unmarshal([]byte(out), &status); code != 0 || err != nil || status.Source != "store" ||
		status.States["sent"] != 7 || status.States["skipped"] != 1 {
		t.Errorf("status when stopped: exit %d, %v:\n%s", code, err, out)
	}
	if code, out := cli("dead", "list"); code != 0 {
		t.Errorf("dead list: exit %d:\n%s", code, out)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func setAdmin(t *testing.T, cfgPath, addr string) {
	t.Helper()
	b := readFile(t, cfgPath)
	b = strings.Replace(b, "admin:\n  listen: \"\"", "admin:\n  listen: \""+addr+"\"", 1)
	writeText(t, cfgPath, b)
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
