//go:build e2e

// Package e2e runs the built daemon as a separate process against the in-repo fakes and a
// third-party SES emulator: crash recovery under SIGKILL, store faults, and the real wire
// format end to end. Run it with `make e2e`; it is not part of `go test ./...`.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
)

// binaries built once by TestMain.
var (
	failpointBin string // -tags failpoint: WORKOS_EMAILER_FAILPOINTS can kill it mid-send
	releaseBin   string // as `make build` makes it
)

const apiKey = "sk_test_e2e_0123456789"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "workos-emailer-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Other users need to reach the binaries (the read-only store test runs one as nobody).
	_ = os.Chmod(dir, 0o755)
	failpointBin = filepath.Join(dir, "workos-emailer-failpoint")
	releaseBin = filepath.Join(dir, "workos-emailer")
	for _, b := range []struct{ out, tags string }{{failpointBin, "failpoint"}, {releaseBin, ""}} {
		cmd := exec.Command(goTool(), "build", "-tags", b.tags, "-trimpath", "-o", b.out, "../cmd/workos-emailer")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.out, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// config is the daemon configuration the tests write; fields map to CONTRACT.md keys.
type config struct {
	WorkOSURL   string
	SESURL      string
	StorePath   string
	OnAmbiguous string
	PageSize    int
	Concurrency int
	// SMTPPort, when set, sends through an SMTP relay on loopback instead of SESURL.
	SMTPPort int
	Extra    string // more YAML, appended
}

func (c config) write(t *testing.T, dir string) string {
	t.Helper()
	if c.OnAmbiguous == "" {
		c.OnAmbiguous = "hold"
	}
	if c.PageSize == 0 {
		c.PageSize = 50
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	yaml := fmt.Sprintf(`workos:
  api_key: %s
  base_url: %s
  poll_interval: 50ms
  page_size: %d
  start: oldest
  # The fake WorkOS has no limits to share with an app; the crash suite makes thousands of
  # requests.
  max_requests_per_second: 5000
store:
  path: %s
mailer:
  driver: ses
  from: "Acme <no-reply@acme.test>"
  ses:
    region: us-east-1
    endpoint: %s
    # The fakes' GetAccount says 14/s; the crash suite sends thousands of emails.
    max_send_rate: 2000
delivery:
  concurrency: %d
  on_ambiguous: %s
admin:
  listen: ""
log:
  level: info
%s`, apiKey, c.WorkOSURL, c.PageSize, c.StorePath, c.SESURL, c.Concurrency, c.OnAmbiguous, c.Extra)
	if c.SMTPPort != 0 {
		yaml = strings.Replace(yaml, "mailer:\n  driver: ses\n", fmt.Sprintf("mailer:\n  driver: smtp\n  smtp:\n    host: 127.0.0.1\n    port: %d\n    tls: none\n", c.SMTPPort), 1)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// daemon is one run of the binary.
type daemon struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan struct{}
	err    error
}

// daemonEnv is the environment of a daemon process: AWS credentials for the emulators and
// nothing else of ours, so a stray WORKOS_EMAILER_* in the caller's shell cannot change a run.
func daemonEnv(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(),
		"AWS_ACCESS_KEY_ID=AKIDE2E", "AWS_SECRET_ACCESS_KEY=e2e-secret", "AWS_EC2_METADATA_DISABLED=true"}
	return append(env, extra...)
}

func start(t *testing.T, bin string, env []string, args ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(bin, args...), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	d.cmd.Env = env
	d.cmd.Stdout = d.stderr
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
	})
	return d
}

// exited waits up to timeout for the process to end by itself.
func (d *daemon) exited(timeout time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (d *daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// exitCode is the process's exit code, or -1 when a signal ended it.
func (d *daemon) exitCode() int {
	<-d.done
	var exitErr *exec.ExitError
	if d.err == nil {
		return 0
	}
	if errors.As(d.err, &exitErr) {
		return exitErr.ExitCode()
	}
	return -2
}

func (d *daemon) killedBySignal() bool {
	<-d.done
	var exitErr *exec.ExitError
	if errors.As(d.err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok {
			return ws.Signaled() && ws.Signal() == syscall.SIGKILL
		}
	}
	return false
}

func (d *daemon) output() string {
	<-d.done
	return d.stderr.String()
}

// tail is the end of a process's output, for failure messages.
func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// The failpoints must not exist in a release build: a stray environment variable must never be
// able to kill a production daemon mid-send.
func TestReleaseBuildHasNoFailpoints(t *testing.T) {
	for bin, want := range map[string]bool{failpointBin: true, releaseBin: false} {
		raw, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(raw, []byte("WORKOS_EMAILER_FAILPOINTS")); got != want {
			t.Errorf("%s: contains the failpoint switch: %v, want %v", filepath.Base(bin), got, want)
		}
	}
}

// endWatch tells when the daemon has asked WorkOS for the events after a given one. The worker
// lists a page only after every event of the previous page is recorded final, so by then all
// events up to that one are settled.
type endWatch struct {
	target  atomic.Value
	reached atomic.Bool
}

func watchEnd(wos *fakeworkos.Server) *endWatch {
	e := &endWatch{}
	e.target.Store("(not armed)")
	wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/events" && r.URL.Query().Get("after") == e.target.Load().(string) {
			e.reached.Store(true)
		}
		return false
	}
	return e
}

// expect arms the watch for the events after eventID.
func (e *endWatch) expect(eventID string) {
	e.reached.Store(false)
	e.target.Store(eventID)
}

func (e *endWatch) done() bool { return e.reached.Load() }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeText(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
