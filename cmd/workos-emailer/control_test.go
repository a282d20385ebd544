package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/syncbuf"
)

// instance is one `run` in this process, found by its control socket's log line.
type instance struct {
	cfg, store string
	stderr     *syncbuf.Buffer
	stop       func() int
}

// runInstance starts the daemon with a config like daemonConfig's, store in its own directory,
// and admin.listen as given ("" disables the admin listener).
func runInstance(t *testing.T, wosURL, sesURL, adminListen string) *instance {
	t.Helper()
	return runInstanceWith(t, wosURL, sesURL, adminListen, "")
}

// runInstanceWith is runInstance with extra YAML appended to the config.
func runInstanceWith(t *testing.T, wosURL, sesURL, adminListen, extra string) *instance {
	t.Helper()
	in := &instance{cfg: daemonConfig(t, wosURL, sesURL, adminListen), stderr: &syncbuf.Buffer{}}
	if extra != "" {
		f, err := os.OpenFile(in.cfg, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(extra); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- execute(ctx, []string{"run", "--config", in.cfg}, &bytes.Buffer{}, in.stderr) }()
	var once atomic.Bool
	code := 0
	in.stop = func() int {
		cancel()
		if once.CompareAndSwap(false, true) {
			code = <-done
		}
		return code
	}
	t.Cleanup(func() { in.stop() })
	eventually(t, "the control socket in the log", func() bool {
		select {
		case c := <-done:
			once.Store(true)
			t.Fatalf("daemon exited %d:\n%s", c, in.stderr.String())
		default:
		}
		sc := bufio.NewScanner(strings.NewReader(in.stderr.String()))
		for sc.Scan() {
			var line struct{ Msg, Socket string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "control socket listening" {
				in.store = strings.TrimSuffix(line.Socket, ".sock")
				return true
			}
		}
		return false
	})
	return in
}

func (in *instance) statusJSON(t *testing.T) admin.Status {
	t.Helper()
	out, _ := mustCLI(t, 0, "status", "--json", "--config", in.cfg)
	return decode[admin.Status](t, out)
}

// With the admin listener off, an operator still reads and changes the running daemon through
// its control socket: status, dead list, dead retry (delivered without a restart), cursor set and
// reset (applied between events, nothing sent twice).
func TestControlSocketWhileTheDaemonRuns(t *testing.T) {
	daemonEnv(t)
	wos, wosURL, ses, sesURL := fakes(t)
	var reject atomic.Bool
	reject.Store(true)
	ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if reject.Load() && r.URL.Path == "/v2/email/outbound-emails" {
			fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", "Illegal address")
			return true
		}
		return false
	}
	now := time.Now()
	rejected, _, _ := wos.AddCode("magic_auth", "first@customer.test", "user_01", now.Add(time.Hour))
	in := runInstance(t, wosURL, sesURL, "")

	fi, err := os.Stat(in.store + ".sock")
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v, want a socket with mode 0600", fi, err)
	}
	eventually(t, "the rejected code dead", func() bool { return in.statusJSON(t).Dead == 1 })
	doc := in.statusJSON(t)
	if doc.Source != admin.SourceDaemon || doc.Live == nil || doc.StorePath != in.store {
		t.Fatalf("status through the socket: %+v", doc)
	}
	out, _ := mustCLI(t, 0, "status", "--config", in.cfg)
	if !strings.Contains(out, "daemon (control socket "+in.store+".sock)") || !strings.Contains(out, in.store) {
		t.Errorf("status does not say it asked the daemon's socket:\n%s", out)
	}
	out, _ = mustCLI(t, 0, "dead", "list", "--config", in.cfg)
	if !strings.Contains(out, rejected) || !strings.Contains(out, "store "+in.store) {
		t.Errorf("dead list:\n%s", out)
	}

	// dead retry goes through the daemon, which sends it before its next poll.
	reject.Store(false)
	out, _ = mustCLI(t, 0, "dead", "retry", rejected, "--config", in.cfg)
	if !strings.Contains(out, "queued 1 deliveries") || !strings.Contains(out, "the running daemon delivers them before its next poll") {
		t.Errorf("dead retry: %q", out)
	}
	eventually(t, "the retried code sent", func() bool {
		d := in.statusJSON(t)
		return d.States["sent"] == 1 && d.Dead == 0 && d.RetryQueued == 0
	})
	// A refusal changes nothing and exits 2.
	_, errOut := mustCLI(t, exitUsage, "dead", "retry", rejected, "--config", in.cfg)
	if !strings.Contains(errOut, rejected) {
		t.Errorf("retry of a sent delivery: %q", errOut)
	}

	// cursor reset: the daemon reads the stream again from --since; what is recorded is not sent again.
	second, _, _ := wos.AddCode("magic_auth", "second@customer.test", "user_02", now.Add(time.Hour))
	eventually(t, "the second code sent", func() bool { return in.statusJSON(t).Cursor.EventID == second })
	sent := len(ses.Messages())
	since := now.Add(-time.Hour).UTC().Format(time.RFC3339)
	out, _ = mustCLI(t, 0, "cursor", "reset", "--since", since, "--config", in.cfg)
	if !strings.Contains(out, "cursor reset (was "+second+"); the running daemon now reads events from "+since) {
		t.Errorf("cursor reset: %q", out)
	}
	eventually(t, "the backfill to pass both events", func() bool { return in.statusJSON(t).Cursor.EventID == second })
	if !strings.Contains(in.stderr.String(), "polling WorkOS events again after an operator's change") {
		t.Error("the daemon did not log its new term")
	}
	// cursor set: polling resumes after the given event.
	out, _ = mustCLI(t, 0, "cursor", "set", rejected, "--config", in.cfg)
	if !strings.Contains(out, "cursor set to "+rejected+" (was "+second+"); the running daemon now resumes after it") {
		t.Errorf("cursor set: %q", out)
	}
	eventually(t, "the stream passed again", func() bool { return in.statusJSON(t).Cursor.EventID == second })
	if got := len(ses.Messages()); got != sent {
		t.Errorf("%d emails after the backfill and cursor set, want %d: recorded events were sent again", got, sent)
	}
	// Refused input names the problem and changes nothing.
	_, errOut = mustCLI(t, exitUsage, "cursor", "reset", "--since", now.Add(-60*24*time.Hour).UTC().Format(time.RFC3339), "--config", in.cfg)
	if !strings.Contains(errOut, "further back than store.retention (45d)") {
		t.Errorf("reset past retention: %q", errOut)
	}
	if code := in.stop(); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, in.stderr.String())
	}
	if _, err := os.Stat(in.store + ".sock"); !os.IsNotExist(err) {
		t.Errorf("the control socket outlived the daemon: %v", err)
	}
}

// Two instances on one host: each CLI reaches the daemon of the store its config names, and an
// admin.listen that names the other instance is refused, not shown as this one.
func TestControlSocketTwoInstancesOnOneHost(t *testing.T) {
	daemonEnv(t)
	_, wosURL, _, sesURL := fakes(t)
	a := runInstance(t, wosURL, sesURL, "")
	b := runInstance(t, wosURL, sesURL, "127.0.0.1:0")
	if a.store == b.store {
		t.Fatal("one store for two instances")
	}
	for _, in := range []*instance{a, b} {
		if got := in.statusJSON(t).StorePath; got != in.store {
			t.Errorf("status with %s's config describes %s", in.store, got)
		}
	}
	// A third config names a store no daemon holds, with admin.listen at instance b.
	var bAdmin string
	eventually(t, "b's admin listener", func() bool { bAdmin = adminAddrFromLog(b.stderr.String()); return bAdmin != "" })
	other := writeConfig(t, "mailer:\n  driver: log\nstore:\n  path: "+filepath.Join(t.TempDir(), "c.db")+"\nadmin:\n  listen: "+bAdmin+"\n")
	_, errOut := mustCLI(t, exitFailure, "status", "--config", other)
	if !strings.Contains(errOut, "runs with the store "+b.store) || !strings.Contains(errOut, "another instance") {
		t.Errorf("status against another instance's admin listener: %q", errOut)
	}
}

// An admin.socket two instances share is never taken over, and a command whose config names
// another store than the answering daemon's is refused, not applied to the wrong store.
func TestSharedControlSocketIsRefused(t *testing.T) {
	daemonEnv(t)
	_, wosURL, _, sesURL := fakes(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	a := runInstanceWith(t, wosURL, sesURL, "", "  socket: "+sock+"\n") // under admin:, the config's last section
	second := daemonConfig(t, wosURL, sesURL, "")
	appendTo(t, second, "  socket: "+sock+"\n")
	code, _, stderr := cli(t, context.Background(), "run", "--config", second)
	if code != exitFailure || !strings.Contains(stderr, "another process answers there") {
		t.Fatalf("a second daemon on the same socket: exit %d:\n%s", code, stderr)
	}
	if d := a.statusJSON(t); d.Source != admin.SourceDaemon {
		t.Errorf("the first daemon lost its socket: %+v", d)
	}
	// A config naming another store, with admin.socket at a's.
	other := writeConfig(t, "mailer:\n  driver: log\nstore:\n  path: "+filepath.Join(t.TempDir(), "c.db")+"\nadmin:\n  listen: \"\"\n  socket: "+sock+"\n")
	_, errOut := mustCLI(t, exitFailure, "status", "--config", other)
	if !strings.Contains(errOut, "runs with the store ") || !strings.Contains(errOut, "another instance") {
		t.Errorf("status for another store: %q", errOut)
	}
	_, errOut = mustCLI(t, exitUsage, "cursor", "set", "event_01ZZZ", "--config", other)
	if !strings.Contains(errOut, "nothing was changed") {
		t.Errorf("cursor set for another store: %q", errOut)
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
