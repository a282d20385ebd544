package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"github.com/workos-emailer/workos-emailer/internal/admin"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"

	"github.com/workos-emailer/workos-emailer/internal/syncbuf"
)

const adminTestKey = "sk_test_admin_SECRET_7e2b"

// daemonUnderTest is `workos-emailer run` in this process against a fake WorkOS and a fake SES,
// with the admin listener on a free loopback port.
type daemonUnderTest struct {
	t      *testing.T
	wos    *fakeworkos.Server
	ses    *fakeses.Server
	stderr *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan int
	admin  string // base URL of the admin listener
}

func fakes(t *testing.T) (*fakeworkos.Server, string, *fakeses.Server, string) {
	t.Helper()
	wos := fakeworkos.New(adminTestKey)
	wosURL := wos.Start()
	t.Cleanup(wos.Close)
	ses := fakeses.New()
	sesURL := ses.Start()
	t.Cleanup(ses.Close)
	return wos, wosURL, ses, sesURL
}

func daemonConfig(t *testing.T, wosURL, sesURL, admin string) string {
	t.Helper()
	return writeConfig(t, `
workos:
  base_url: `+wosURL+`
  poll_interval: 50ms
  start: oldest
store:
  path: `+filepath.Join(t.TempDir(), "state.db")+`
mailer:
  from: "Acme <no-reply@acme.test>"
  ses:
    region: us-east-1
    endpoint: `+sesURL+`
admin:
  listen: "`+admin+`"
`)
}

func daemonEnv(t *testing.T) {
	t.Helper()
	isolate(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("WORKOS_API_KEY", adminTestKey)
}

// startDaemon starts the daemon; setup, if not nil, prepares the fakes first (their Intercept
// hooks must be set before they serve).
func startDaemon(t *testing.T, setup func(d *daemonUnderTest)) *daemonUnderTest {
	t.Helper()
	daemonEnv(t)
	d := &daemonUnderTest{t: t, stderr: &syncbuf.Buffer{}, done: make(chan int, 1)}
	var wosURL, sesURL string
	d.wos, wosURL, d.ses, sesURL = fakes(t)
	if setup != nil {
		setup(d)
	}
	cfg := daemonConfig(t, wosURL, sesURL, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- execute(ctx, []string{"run", "--config", cfg}, &bytes.Buffer{}, d.stderr) }()
	t.Cleanup(func() {
		cancel()
		<-d.done
	})
	eventually(t, "the admin listener address in the log", func() bool {
		select {
		case code := <-d.done:
			d.done <- code // for the cleanup
			t.Fatalf("daemon exited %d:\n%s", code, d.stderr.String())
		default:
		}
		d.admin = adminAddrFromLog(d.stderr.String())
		return d.admin != ""
	})
	d.admin = "http://" + d.admin
	return d
}

// stop ends the daemon like SIGTERM and returns its exit code.
func (d *daemonUnderTest) stop() int {
	d.cancel()
	code := <-d.done
	d.done <- code // for the cleanup
	return code
}

func adminAddrFromLog(logs string) string {
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "admin listener started" {
			return line.Addr
		}
	}
	return ""
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// status reads the daemon's /status document.
func (d *daemonUnderTest) status() admin.Status {
	d.t.Helper()
	code, body := get(d.t, d.admin+"/status")
	var doc admin.Status
	if err := json.Unmarshal([]byte(body), &doc); code != http.StatusOK || err != nil {
		d.t.Fatalf("/status: %d %v %s", code, err, body)
	}
	return doc
}

func (d *daemonUnderTest) scrape() (map[string]*dto.MetricFamily, string) {
	d.t.Helper()
	code, body := get(d.t, d.admin+"/metrics")
	if code != http.StatusOK {
		d.t.Fatalf("/metrics: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		d.t.Fatalf("/metrics does not parse: %v", err)
	}
	return mfs, body
}

// value returns the value of the sample of family name whose labels include want (counter,
// gauge, or a histogram's count); -1 when there is none.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	mf, ok := mfs[name]
	if !ok {
		return -1
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestMetricsMoveAsEventsFlow(t *testing.T) {
	d := startDaemon(t, nil)
	eventually(t, "ready", func() bool { c, _ := get(t, d.admin+"/readyz"); return c == http.StatusOK })

	mfs, _ := d.scrape()
	sentCodes := map[string]string{"kind": "magic_auth", "state": "sent", "reason": "none"}
	if v := value(mfs, "workos_emailer_emails_total", sentCodes); v != 0 {
		t.Errorf("sent magic_auth before any event: %v, want a series at 0", v)
	}
	if v := value(mfs, "workos_emailer_events_polled_total", nil); v != 0 {
		t.Errorf("events polled before any event: %v", v)
	}

	now := time.Now()
	_, _, code1 := d.wos.AddCode("magic_auth", "a@example.com", "user_01", now.Add(time.Hour))
	_, _, code2 := d.wos.AddCode("magic_auth", "b@example.com", "user_02", now.Add(time.Hour))
	d.wos.AddCode("magic_auth", "late@example.com", "user_03", now.Add(-time.Second))
	_, revoked, _ := d.wos.AddInvitation(fakeworkos.Invitation{Email: "rev@example.com", ExpiresAt: now.Add(time.Hour)})
	d.wos.Update(revoked, map[string]any{"state": "revoked"})

	var body string
	eventually(t, "the metrics to count the four events", func() bool {
		mfs, body = d.scrape()
		return value(mfs, "workos_emailer_emails_total", sentCodes) == 2 &&
			value(mfs, "workos_emailer_emails_total", map[string]string{"kind": "magic_auth", "state": "skipped", "reason": "expired"}) == 1 &&
			value(mfs, "workos_emailer_emails_total", map[string]string{"kind": "invitation", "state": "skipped", "reason": "not_pending"}) == 1 &&
			value(mfs, "workos_emailer_cursor_age_seconds", nil) >= 0 // the cursor moves right after the final record
	})
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"workos_emailer_events_polled_total", nil, 4},
		{"workos_emailer_send_attempts_total", map[string]string{"kind": "magic_auth", "outcome": "sent"}, 2},
		{"workos_emailer_send_attempts_total", map[string]string{"kind": "magic_auth", "outcome": "rejected"}, 0},
		{"workos_emailer_send_duration_seconds", map[string]string{"outcome": "sent"}, 2},
		{"workos_emailer_event_lag_seconds", map[string]string{"kind": "magic_auth"}, 2},
		{"workos_emailer_polls_total", map[string]string{"result": "error"}, 0},
		{"workos_emailer_sending_paused", nil, 0},
		{"workos_emailer_build_info", map[string]string{"version": version}, 1},
	} {
		if got := value(mfs, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, name := range []string{"workos_emailer_cursor_age_seconds", "workos_emailer_last_successful_poll_timestamp_seconds",
		"go_goroutines", "process_resident_memory_bytes"} {
		if value(mfs, name, nil) < 0 {
			t.Errorf("%s missing", name)
		}
	}
	// The SES quota is read at start, from GetAccount.
	eventually(t, "the SES quota", func() bool {
		mfs, _ := d.scrape()
		return value(mfs, "workos_emailer_ses_max_send_rate", nil) == 14 &&
			value(mfs, "workos_emailer_ses_max_24h_send", nil) == 50000
	})

	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	_, health := get(t, d.admin+"/healthz")
	_, ready := get(t, d.admin+"/readyz")
	for where, text := range map[string]string{"metrics": body, "healthz": health, "readyz": ready, "log": d.stderr.String()} {
		for _, secret := range []string{adminTestKey, code1, code2} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret reached the %s", where)
			}
		}
		if where != "log" && strings.Contains(text, "@example.com") {
			t.Errorf("an address reached the %s", where)
		}
	}
	if code := d.stop(); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, d.stderr.String())
	}
}

func TestReadinessFollowsPollingAndSES(t *testing.T) {
	floor := admin.ReadyPollAgeFloor
	admin.ReadyPollAgeFloor = 0 // 3 × poll_interval (150ms) instead of 30s
	t.Cleanup(func() { admin.ReadyPollAgeFloor = floor })
	var wosDown, keyRejected, sesPaused atomic.Bool
	d := startDaemon(t, func(d *daemonUnderTest) {
		d.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
			if wosDown.Load() && r.URL.Path == "/events" {
				fakeworkos.WriteError(w, http.StatusServiceUnavailable, "", "down for maintenance")
				return true
			}
			if keyRejected.Load() {
				fakeworkos.WriteError(w, http.StatusUnauthorized, "", "Unauthorized")
				return true
			}
			return false
		}
		d.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
			if sesPaused.Load() && r.URL.Path == "/v2/email/outbound-emails" {
				fakeses.WriteError(w, http.StatusBadRequest, "SendingPausedException", "Sending is paused for this account.")
				return true
			}
			return false
		}
	})
	readyz := func(wantCode int, wantText string) func() bool {
		return func() bool {
			code, body := get(t, d.admin+"/readyz")
			return code == wantCode && strings.Contains(body, wantText)
		}
	}
	eventually(t, "ready", readyz(http.StatusOK, "ready"))

	wosDown.Store(true)
	eventually(t, "not ready while WorkOS fails", readyz(http.StatusServiceUnavailable, "last successful poll of WorkOS events"))
	if code, _ := get(t, d.admin+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d while WorkOS fails; the process is alive", code)
	}
	wosDown.Store(false)
	eventually(t, "ready again once WorkOS answers", readyz(http.StatusOK, "ready"))

	keyRejected.Store(true)
	eventually(t, "not ready while WorkOS rejects the key", readyz(http.StatusServiceUnavailable,
		"WorkOS rejects the API key (WORKOS_API_KEY, sk_test_...): set a valid one"))
	if doc := d.status(); doc.Live == nil || !doc.Live.WorkOSKeyRejected {
		t.Errorf("status does not say the key is rejected: %+v", doc.Live)
	}
	keyRejected.Store(false)
	eventually(t, "ready again once WorkOS takes the key", readyz(http.StatusOK, "ready"))

	sesPaused.Store(true)
	d.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	eventually(t, "not ready while SES is paused", readyz(http.StatusServiceUnavailable,
		"sending is paused: SES refuses to send for the account (SendingPausedException)"))
	if doc := d.status(); doc.Live == nil || !doc.Live.SESPaused || doc.Live.SESPauseReason == nil ||
		*doc.Live.SESPauseReason != "SES refuses to send for the account (SendingPausedException)" || doc.Live.WorkOSKeyRejected {
		t.Errorf("status while paused: %+v", doc.Live)
	}
	mfs, _ := d.scrape()
	if v := value(mfs, "workos_emailer_sending_paused", nil); v != 1 {
		t.Errorf("sending_paused %v while paused", v)
	}
	if v := value(mfs, "workos_emailer_send_attempts_total", map[string]string{"kind": "magic_auth", "outcome": "paused"}); v < 1 {
		t.Errorf("paused send attempts %v", v)
	}
	if v := value(mfs, "workos_emailer_polls_total", map[string]string{"result": "error"}); v < 1 {
		t.Errorf("failed polls %v", v)
	}
	if code := d.stop(); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, d.stderr.String())
	}
}

func TestAdminListenInUseFailsAtStart(t *testing.T) {
	daemonEnv(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notify := listenNotify(t)
	_, wosURL, _, sesURL := fakes(t)
	code, _, stderr := cli(t, context.Background(), "run", "--config", daemonConfig(t, wosURL, sesURL, busy.Addr().String()))
	if code != exitFailure || !strings.Contains(stderr, "admin.listen") || !strings.Contains(stderr, busy.Addr().String()) {
		t.Errorf("exit %d, stderr %q; want 1 naming admin.listen and the address", code, stderr)
	}
	if msgs := notify.drain(); len(msgs) != 0 {
		t.Errorf("told systemd %q although the start failed", msgs)
	}
}

// notifySocket is a stand-in for systemd's notification socket.
type notifySocket struct {
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	s := &notifySocket{conn: conn, msgs: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s
}

// next waits for the next message that is not in skip.
func (s *notifySocket) next(t *testing.T, skip ...string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-s.msgs:
			if !slices.Contains(skip, m) {
				return m
			}
		case <-timeout:
			t.Fatal("timed out waiting for an sd_notify message")
		}
	}
}

// drain returns the messages received so far: it sends itself a marker datagram, which is
// read after everything sent before it.
func (s *notifySocket) drain() []string {
	mark := "TEST_MARK=1"
	c, err := net.DialUnix("unixgram", nil, s.conn.LocalAddr().(*net.UnixAddr))
	if err == nil {
		_, _ = c.Write([]byte(mark))
		c.Close()
	}
	var out []string
	for m := range s.msgs {
		if m == mark {
			break
		}
		out = append(out, m)
	}
	return out
}

func TestSystemdNotifications(t *testing.T) {
	daemonEnv(t)
	notify := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000") // pings every 100ms
	_, wosURL, _, sesURL := fakes(t)
	cfg := daemonConfig(t, wosURL, sesURL, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var stderr syncbuf.Buffer
	go func() { done <- execute(ctx, []string{"run", "--config", cfg}, &bytes.Buffer{}, &stderr) }()

	if m := notify.next(t); m != "READY=1" {
		t.Fatalf("first message %q, want READY=1", m)
	}
	// READY comes after the admin listener is bound.
	addr := adminAddrFromLog(stderr.String())
	if addr == "" {
		t.Fatal("READY=1 before the admin listener started")
	}
	if code, _ := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d after READY", code)
	}
	if m := notify.next(t); m != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", m)
	}
	cancel()
	if m := notify.next(t, "WATCHDOG=1"); m != "STOPPING=1" {
		t.Fatalf("got %q on shutdown, want STOPPING=1", m)
	}
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	for _, m := range notify.drain() {
		if m != "WATCHDOG=1" {
			t.Errorf("unexpected message after STOPPING=1: %q", m)
		}
	}
}

// The watchdog pings while the heartbeat is fresh and withholds pings while it is stale.
func TestWatchdogWithholdsPingsWhileHeartbeatIsStale(t *testing.T) {
	beats := make(chan time.Time) // the heartbeat each check sees, in order
	heartbeat := func() time.Time { return <-beats }
	pings := make(chan struct{}, 10)
	ticks := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		watchdogLoop(ctx, ticks, heartbeat, time.Hour, func() { pings <- struct{}{} }, zap.NewNop())
		close(done)
	}()
	beats <- time.Now() // the first check, at once: fresh
	<-pings
	ticks <- time.Now()
	beats <- time.Now().Add(-2 * time.Hour) // stale: no ping
	ticks <- time.Now()                     // received only after the stale check finished
	beats <- time.Now()                     // fresh again
	cancel()
	<-done
	if n := len(pings); n != 1 {
		t.Errorf("%d pings after the stale and the fresh check, want 1 (the fresh one)", n)
	}
}
