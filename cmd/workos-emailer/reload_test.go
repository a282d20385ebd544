package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/admin"
)

// SIGHUP reloads templates and settings while the daemon runs; a broken template is refused
// and the running configuration stays in force, as status and the metrics say.
func TestReloadOnSIGHUP(t *testing.T) {
	daemonEnv(t)
	wos, wosURL, ses, sesURL := fakes(t)
	dir := t.TempDir()
	subject := filepath.Join(dir, "magic_auth.subject.txt")
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(subject, "Sign-in code, first templates")
	in := runInstanceWith(t, wosURL, sesURL, "127.0.0.1:0", "templates:\n  dir: "+dir+"\n")
	var adminURL string
	eventually(t, "the admin listener", func() bool {
		adminURL = "http://" + adminAddrFromLog(in.stderr.String())
		return adminURL != "http://"
	})
	subjectTo := func(addr string) string {
		for _, m := range ses.Messages() {
			if m.To[0] == addr {
				return m.Subject
			}
		}
		return ""
	}
	sendCode := func(addr string) string {
		t.Helper()
		wos.AddCode("magic_auth", addr, "user_01", time.Now().Add(time.Hour))
		eventually(t, "the code to "+addr, func() bool { return subjectTo(addr) != "" })
		return subjectTo(addr)
	}
	// reload sends SIGHUP and waits for its outcome in status.
	var last time.Time
	reload := func() *admin.Reload {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var r *admin.Reload
		eventually(t, "the reload in status", func() bool {
			r = in.statusJSON(t).Live.ConfigReload
			return r != nil && r.At.After(last)
		})
		last = r.At
		return r
	}
	if got := sendCode("a@customer.test"); got != "Sign-in code, first templates" {
		t.Fatalf("subject %q", got)
	}

	write(subject, "Sign-in code, reloaded")
	cfg, err := os.ReadFile(in.cfg)
	if err != nil {
		t.Fatal(err)
	}
	write(in.cfg, strings.Replace(string(cfg), "poll_interval: 50ms", "poll_interval: 60ms\n  max_requests_per_second: 20", 1)+
		"log:\n  level: debug\n")
	if r := reload(); !r.OK || strings.Join(r.RestartNeeded, ",") != "workos" {
		t.Fatalf("valid reload: %+v, want ok with workos (poll_interval) named for a restart", r)
	}
	if b := in.statusJSON(t).Live.WorkOSBudget; b == nil || b.MaxPerSecond != 20 {
		t.Errorf("the WorkOS budget after the reload: %+v, want 20/s", b)
	}
	if got := sendCode("b@customer.test"); got != "Sign-in code, reloaded" {
		t.Errorf("after the reload: subject %q", got)
	}
	if !strings.Contains(in.stderr.String(), `"level":"debug"`) {
		t.Error("log.level debug did not take effect with the reload")
	}

	write(subject, "Sign-in code {{if .Code}")
	r := reload()
	if r.OK || !strings.Contains(r.Error, subject) {
		t.Fatalf("broken template: %+v, want it refused naming %s", r, subject)
	}
	out, _ := mustCLI(t, 0, "status", "--config", in.cfg)
	if !strings.Contains(out, "RELOAD REFUSED") || !strings.Contains(out, "the configuration of before is in force") {
		t.Errorf("status does not show the refused reload:\n%s", out)
	}
	if !strings.Contains(in.stderr.String(), "reload refused: the running configuration stays in force") {
		t.Error("the refusal is not logged")
	}
	mfs, _ := (&daemonUnderTest{t: t, admin: adminURL}).scrape()
	if v := value(mfs, "workos_emailer_config_last_reload_successful", nil); v != 0 {
		t.Errorf("config_last_reload_successful = %v after a refused reload", v)
	}
	if v := value(mfs, "workos_emailer_config_reloads_total", map[string]string{"result": "failed"}); v != 1 {
		t.Errorf("failed reloads = %v", v)
	}
	if got := sendCode("c@customer.test"); got != "Sign-in code, reloaded" {
		t.Errorf("after a refused reload: subject %q, want the running templates'", got)
	}
	if code := in.stop(); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, in.stderr.String())
	}
}

// The API key rotates with a reload: from WORKOS_API_KEY_FILE, a wrong key shows in status, the
// right one written to the file and SIGHUP make polling work again, without a restart.
func TestAPIKeyRotatesWithAReload(t *testing.T) {
	daemonEnv(t)
	wos, wosURL, ses, sesURL := fakes(t)
	keyFile := filepath.Join(t.TempDir(), "workos_api_key")
	if err := os.WriteFile(keyFile, []byte("sk_test_revoked_SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Unsetenv("WORKOS_API_KEY")
	t.Setenv("WORKOS_API_KEY_FILE", keyFile)
	in := runInstance(t, wosURL, sesURL, "")
	eventually(t, "status to show the rejected key", func() bool { return in.statusJSON(t).Live.WorkOSKeyRejected })
	if !strings.Contains(in.stderr.String(), `"key":"WORKOS_API_KEY, sk_test_..."`) || strings.Contains(in.stderr.String(), "SECRET") {
		t.Errorf("the rejection is not logged naming the key's kind only:\n%s", in.stderr.String())
	}
	if err := os.WriteFile(keyFile, []byte(adminTestKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wos.AddCode("magic_auth", "after@customer.test", "user_01", time.Now().Add(time.Hour))
	eventually(t, "the code sent with the new key", func() bool { return len(ses.Messages()) == 1 })
	if d := in.statusJSON(t); d.Live.WorkOSKeyRejected || d.Live.ConfigReload == nil || !d.Live.ConfigReload.OK {
		t.Errorf("after the rotation: %+v", d.Live)
	}
}
