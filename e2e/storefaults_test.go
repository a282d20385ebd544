//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
)

// Exit codes from CONTRACT.md.
const (
	exitFailure = 1
	exitLocked  = 3
)

type fakes struct {
	wos    *fakeworkos.Server
	ses    *fakeses.Server
	wosURL string
	sesURL string
}

func startFakes(t *testing.T) *fakes {
	f := &fakes{wos: fakeworkos.New(apiKey), ses: fakeses.New()}
	f.wosURL, f.sesURL = f.wos.Start(), f.ses.Start()
	t.Cleanup(f.wos.Close)
	t.Cleanup(f.ses.Close)
	return f
}

// A second daemon on the same store must not wait forever or run beside the first: it exits 3
// within seconds and says what to do.
func TestSecondInstanceExits3(t *testing.T) {
	f := startFakes(t)
	dir := t.TempDir()
	cfg := config{WorkOSURL: f.wosURL, SESURL: f.sesURL, StorePath: filepath.Join(dir, "state.db")}.write(t, dir)
	first := start(t, releaseBin, daemonEnv(), "run", "--config", cfg)
	waitUntil(t, 30*time.Second, "the first daemon to poll", func() bool { return f.wos.Requests("/events") > 0 })

	second := start(t, releaseBin, daemonEnv(), "run", "--config", cfg)
	if !second.exited(15 * time.Second) {
		t.Fatal("the second instance did not exit within 15s")
	}
	if code := second.exitCode(); code != exitLocked {
		t.Fatalf("second instance exit %d, want %d:\n%s", code, exitLocked, tail(second.output(), 10))
	}
	if out := second.output(); !strings.Contains(out, "locked") || !strings.Contains(out, "stop it first") {
		t.Errorf("the message does not say the store is locked and what to do:\n%s", tail(out, 5))
	}
	_ = first.cmd.Process.Signal(syscall.SIGTERM)
	if code := first.exitCode(); code != 0 {
		t.Errorf("first daemon exit %d:\n%s", code, tail(first.output(), 10))
	}
}

// A store the daemon cannot trust or cannot write stops it at once with exit 1 and a message
// that names the file and the next step; it never starts afresh, and it never sends.
func TestUnusableStoreStopsBeforeSending(t *testing.T) {
	page := os.Getpagesize()
	cases := []struct {
		name    string
		prepare func(t *testing.T, dir string) string // returns the store path
		asUser  bool                                  // run as an unprivileged user (root ignores modes)
		want    []string
	}{
		{"garbage file", func(t *testing.T, dir string) string {
			return writeFile(t, dir, bytes.Repeat([]byte("not a store "), page))
		}, false, []string{"damaged", "backup"}},
		{"empty file", func(t *testing.T, dir string) string {
			return writeFile(t, dir, nil)
		}, false, []string{"damaged", "empty", "backup"}},
		{"damaged pages", func(t *testing.T, dir string) string {
			good := filledStoreFile(t)
			for i := 2 * page; i < len(good); i++ {
				good[i] ^= 0x5a
			}
			return writeFile(t, dir, good)
		}, false, []string{"damaged", "backup"}},
		{"read-only directory", func(t *testing.T, dir string) string {
			ro := filepath.Join(dir, "ro")
			if err := os.Mkdir(ro, 0o555); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(ro, "state.db")
		}, true, []string{"permission denied", "StateDirectory"}},
		{"store path is a directory", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.db")
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			return p
		}, false, []string{"is a directory"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakes(t)
			dir := worldReadableDir(t)
			storePath := tc.prepare(t, dir)
			before, _ := os.ReadFile(storePath)
			cfg := config{WorkOSURL: f.wosURL, SESURL: f.sesURL, StorePath: storePath}.write(t, dir)
			_ = os.Chmod(cfg, 0o644)
			cmd := exec.Command(releaseBin, "run", "--config", cfg)
			cmd.Env = daemonEnv()
			if tc.asUser && os.Geteuid() == 0 {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			}
			out, err := runWithTimeout(cmd, 30*time.Second)
			code := cmd.ProcessState.ExitCode()
			if err != nil && code < 0 {
				t.Fatalf("run: %v\n%s", err, out)
			}
			if code != exitFailure {
				t.Fatalf("exit %d, want %d:\n%s", code, exitFailure, tail(out, 10))
			}
			for _, w := range append(tc.want, storePath) {
				if !strings.Contains(out, w) {
					t.Errorf("the message does not contain %q:\n%s", w, tail(out, 5))
				}
			}
			if n := f.wos.Requests("/"); n != 0 {
				t.Errorf("it called WorkOS %d times before giving up", n)
			}
			if n := f.ses.SendRequests(); n != 0 {
				t.Errorf("it sent %d emails", n)
			}
			if after, _ := os.ReadFile(storePath); !bytes.Equal(before, after) {
				t.Error("the store file was changed")
			}
		})
	}
}

func writeFile(t *testing.T, dir string, content []byte) string {
	t.Helper()
	p := filepath.Join(dir, "state.db")
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// worldReadableDir is a temporary directory another user can enter.
func worldReadableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "workos-emailer-e2e-store-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// filledStoreFile runs the daemon over a few hundred events and returns the store it leaves.
func filledStoreFile(t *testing.T) []byte {
	t.Helper()
	f := startFakes(t)
	for range 300 {
		f.wos.AddCode("magic_auth", "someone@example.com", "user_01X", time.Now().Add(time.Hour))
	}
	dir := t.TempDir()
	storePath := filepath.Join(dir, "state.db")
	cfg := config{WorkOSURL: f.wosURL, SESURL: f.sesURL, StorePath: storePath}.write(t, dir)
	d := start(t, releaseBin, daemonEnv(), "run", "--config", cfg)
	waitUntil(t, time.Minute, "300 emails", func() bool { return len(f.ses.Messages()) == 300 })
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, tail(d.output(), 10))
	}
	raw, err := os.ReadFile(storePath)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func runWithTimeout(cmd *exec.Cmd, timeout time.Duration) (string, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), os.ErrDeadlineExceeded
	}
}
