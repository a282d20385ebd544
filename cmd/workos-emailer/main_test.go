package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/internal/syncbuf"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
)

func cli(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncbuf.Buffer
	code = execute(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// isolate keeps the developer's environment out of config tests.
func isolate(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "WORKOS_") || strings.HasPrefix(k, "AWS_") || k == "STATE_DIRECTORY" {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Chdir(t.TempDir())
}

func TestConfigErrorsExit2AndNameTheKey(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		name, yaml, env, key string
	}{
		{"missing api key", "mailer:\n  driver: log\n", "", "workos.api_key"},
		{"unknown key", "workos:\n  api_key: k\n  pol_interval: 1s\n", "", "workos.pol_interval: did you mean workos.poll_interval?"},
		{"bad duration", "workos:\n  api_key: k\n  poll_interval: soon\n", "", "poll_interval"},
		{"page size", "workos:\n  api_key: k\n  page_size: 500\n", "", "workos.page_size"},
		{"start", "workos:\n  api_key: k\n  start: yesterday\n", "", "workos.start"},
		{"ses needs from", "workos:\n  api_key: k\n", "", "mailer.from"},
		{"placeholder sender", "workos:\n  api_key: k\nmailer:\n  from: \"Acme <no-reply@acme.example>\"\n", "", "mailer.from: acme.example is a placeholder domain"},
		{"placeholder sender, example.com", "workos:\n  api_key: k\nmailer:\n  driver: smtp\n  from: no-reply@mail.example.com\n  smtp:\n    host: smtp.acme.test\n", "", "mailer.from: mail.example.com is a placeholder"},
		{"placeholder organization sender", "workos:\n  api_key: k\nmailer:\n  from: a@acme.test\norganizations:\n  org_01H5JQDV7R7ATEYZDEG0W5PRYS:\n    from: b@globex.example\n", "", "organizations.org_01h5jqdv7r7ateyzdeg0w5prys.from: globex.example is a placeholder"},
		{"retention printed as written", "workos:\n  api_key: k\nmailer:\n  driver: log\nstore:\n  retention: 1d12h\n", "", "store.retention: must be at least 31d, got 1d12h"},
		{"from with CRLF", "workos:\n  api_key: k\nmailer:\n  from: \"a@b.c\\r\\nBcc: x@y.z\"\n", "", "mailer.from"},
		{"driver", "workos:\n  api_key: k\nmailer:\n  driver: sendmail\n", "", "mailer.driver"},
		{"on_ambiguous", "workos:\n  api_key: k\nmailer:\n  driver: log\ndelivery:\n  on_ambiguous: maybe\n", "", "delivery.on_ambiguous"},
		{"kind", "workos:\n  api_key: k\nmailer:\n  driver: log\nevents:\n  enabled: [sms]\n", "", "events.enabled"},
		{"http link", "workos:\n  api_key: k\nmailer:\n  driver: log\nlinks:\n  invitation_url: http://app.example.com/i?t={{.Token}}\n", "", "links.invitation_url"},
		{"link without token", "workos:\n  api_key: k\nmailer:\n  driver: log\nlinks:\n  password_reset_url: https://app.example.com/r\n", "", "links.password_reset_url"},
		{"retention shorter than WorkOS keeps events", "workos:\n  api_key: k\nmailer:\n  driver: log\nstore:\n  retention: 30d\n", "", "store.retention"},
		{"color", "workos:\n  api_key: k\nmailer:\n  driver: log\nbrand:\n  primary_color: red;x\n", "", "brand.primary_color"},
		{"env override", "workos:\n  api_key: k\nmailer:\n  driver: log\n", "WORKOS_EMAILER_DELIVERY_CONCURRENCY=0", "delivery.concurrency"},
		{"WorkOS over plain http", "workos:\n  api_key: k\n  base_url: http://workos-proxy.internal/\nmailer:\n  driver: log\n", "", "workos.base_url"},
		{"WorkOS base URL not a URL", "workos:\n  api_key: k\n  base_url: api.workos.com\nmailer:\n  driver: log\n", "", "workos.base_url"},
		{"http app link", "workos:\n  api_key: k\nmailer:\n  driver: log\nlinks:\n  app_url: http://app.example.com/\n", "", "links.app_url"},
		{"time zone", "workos:\n  api_key: k\nmailer:\n  driver: log\ntemplates:\n  time_zone: Mars/Olympus\n", "", "templates.time_zone"},
		{"default locale without messages", "workos:\n  api_key: k\nmailer:\n  driver: log\ntemplates:\n  default_locale: tlh\n", "", "templates.default_locale"},
		{"organization locale without messages", "workos:\n  api_key: k\nmailer:\n  driver: log\ntemplates:\n  org_locales:\n    org_01: xx\n", "", "templates.org_locales"},
		{"no WorkOS budget", "workos:\n  api_key: k\n  max_requests_per_second: 0\nmailer:\n  driver: log\n", "", "workos.max_requests_per_second"},
		{"WorkOS budget past the limits", "workos:\n  api_key: k\nmailer:\n  driver: log\n", "WORKOS_EMAILER_WORKOS_MAX_REQUESTS_PER_SECOND=20000", "workos.max_requests_per_second"},
		{"missing template directory", "workos:\n  api_key: k\nmailer:\n  driver: log\ntemplates:\n  dir: /nonexistent/templates\n", "", "templates.dir"},
		{"send API without a token", "workos:\n  api_key: k\nmailer:\n  driver: log\napi:\n  listen: 127.0.0.1:9465\n", "", "api.token"},
		{"send API token too short", "workos:\n  api_key: k\nmailer:\n  driver: log\napi:\n  listen: 127.0.0.1:9465\n", "WORKOS_EMAILER_API_TOKEN=short", "api.token"},
		{"send API token file missing", "workos:\n  api_key: k\nmailer:\n  driver: log\napi:\n  listen: 127.0.0.1:9465\n  token_file: /nonexistent/token\n", "", "api.token_file"},
		{"send API on the admin port", "workos:\n  api_key: k\nmailer:\n  driver: log\napi:\n  listen: 127.0.0.1:9464\n", "WORKOS_EMAILER_API_TOKEN=" + testAPIToken, "api.listen"},
		{"send API listen", "workos:\n  api_key: k\nmailer:\n  driver: log\napi:\n  listen: localhost\n", "WORKOS_EMAILER_API_TOKEN=" + testAPIToken, "api.listen"},
		{"previous token is the token", "workos:\n  api_key: k\nmailer:\n  driver: log\napi:\n  listen: 127.0.0.1:9465\n  previous_token: " + testAPIToken + "\n", "WORKOS_EMAILER_API_TOKEN=" + testAPIToken, "api.previous_token"},
		{"a bare number as a duration", "workos:\n  api_key: k\n  poll_interval: 1\nmailer:\n  driver: log\n", "", "has no unit"},
		{"a bare number as an age", "workos:\n  api_key: k\nmailer:\n  driver: log\ndelivery:\n  max_event_age: 10\n", "", "max_event_age"},
		{"misspelt environment variable", "workos:\n  api_key: k\nmailer:\n  driver: log\n", "WORKOS_EMAILER_MAILER_SES_ENDPONT=http://127.0.0.1:1", "did you mean WORKOS_EMAILER_MAILER_SES_ENDPOINT"},
		{"unquoted date", "workos:\n  api_key: k\n  start: 2026-11-01T00:00:00Z\nmailer:\n  driver: log\n", "", "quote the time"},
		{"API key and its file", "workos:\n  api_key: k\n  api_key_file: /etc/hostname\nmailer:\n  driver: log\n", "", "workos.api_key_file: set workos.api_key (WORKOS_API_KEY) or workos.api_key_file, not both"},
		{"API key file missing", "mailer:\n  driver: log\n", "WORKOS_API_KEY_FILE=/nonexistent/key", "workos.api_key_file"},
		{"control socket path too long", "workos:\n  api_key: k\nmailer:\n  driver: log\nadmin:\n  socket: /tmp/" + strings.Repeat("s", 120) + "\n", "", "admin.socket"},
		{"store driver", "workos:\n  api_key: k\nmailer:\n  driver: log\nstore:\n  driver: sqlite\n", "", "store.driver: must be bolt or postgres"},
		{"postgres without a DSN", "workos:\n  api_key: k\nmailer:\n  driver: log\nstore:\n  driver: postgres\n", "", "store.dsn: must be set"},
		{"DSN that does not parse, not echoed", "workos:\n  api_key: k\nmailer:\n  driver: log\nstore:\n  driver: postgres\n", "WORKOS_EMAILER_STORE_DSN=postgres://u:hunter2@[::1", "store.dsn: not a PostgreSQL connection string"},
		{"DSN file missing", "workos:\n  api_key: k\nmailer:\n  driver: log\nstore:\n  driver: postgres\n  dsn_file: /nonexistent/dsn\n", "", "store.dsn_file"},
		{"lease TTL", "workos:\n  api_key: k\nmailer:\n  driver: log\nstore:\n  driver: postgres\n  lease_ttl: 1s\n", "WORKOS_EMAILER_STORE_DSN=postgres://u@db.internal/emailer", "store.lease_ttl"},
		{"magic_link without the send API", "workos:\n  api_key: k\nmailer:\n  driver: log\nevents:\n  enabled: [magic_auth, magic_link]\n", "", "api.listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, v, ok := strings.Cut(tc.env, "="); ok {
				t.Setenv(k, v)
			}
			code, _, stderr := cli(t, context.Background(), "run", "--config", writeConfig(t, tc.yaml))
			if code != exitUsage || !strings.Contains(stderr, tc.key) {
				t.Errorf("exit %d, stderr %q; want 2 naming %s", code, stderr, tc.key)
			}
			if strings.Contains(stderr, "hunter2") {
				t.Errorf("the error quotes the DSN's password: %s", stderr)
			}
			// Nothing started: no store, no control socket.
			for _, f := range []string{"workos-emailer.db", "workos-emailer.db.sock"} {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("%s exists after a refused start", f)
					os.Remove(f)
				}
			}
		})
	}
}

// A template that does not parse stops `run` with exit 2 before the store is opened, naming the
// file and the line; `render` says the same.
func TestBrokenTemplateExits2WithFileAndLine(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "de"), 0o755); err != nil {
		t.Fatal(err)
	}
	tmpl := filepath.Join(dir, "de", "invitation.html")
	if err := os.WriteFile(tmpl, []byte("{{define \"content\"}}\n<p>Hallo\n{{if .OrganizationName}}\n{{end}"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(t.TempDir(), "state.db")
	cfg := writeConfig(t, "workos:\n  api_key: k\nmailer:\n  driver: log\nstore:\n  path: "+store+"\ntemplates:\n  dir: "+dir+"\n")
	for _, args := range [][]string{{"run"}, {"render", "invitation"}} {
		code, _, stderr := cli(t, context.Background(), append(args, "--config", cfg)...)
		if code != exitUsage || !strings.Contains(stderr, tmpl+":4") {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming %s:4", args, code, stderr, tmpl)
		}
	}
	if _, err := os.Stat(store); err == nil {
		t.Error("run opened (created) the store before checking the templates")
	}
}

// render prints one email with sample data, HTML or text, in a locale, with an
// organization's templates; --all writes a gallery with every kind in every locale.
func TestRender(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "org_01ACME"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "org_01ACME", "magic_auth.txt"), []byte(`{{define "content"}}ACME CODE {{.Code}}{{end}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "brand:\n  name: Robodesk\ntemplates:\n  dir: "+dir+"\n") // no mailer.from: render sends nothing
	for _, tc := range []struct {
		args     []string
		want     string
		inStderr string
	}{
		{[]string{"render", "magic_auth"}, "<!DOCTYPE html>", "subject: Your sign-in code for Robodesk"},
		{[]string{"render", "magic_auth", "--text", "--locale", "de"}, "Geben Sie diesen Code ein", "locale: de"},
		{[]string{"render", "password_changed", "--text", "--locale", "ja"}, "パスワードが変更されました", "locale: ja"},
		{[]string{"render", "magic_auth", "--text", "--org", "org_01ACME"}, "ACME CODE 123456", filepath.Join(dir, "org_01ACME", "magic_auth.txt")},
		{[]string{"render", "invitation", "--variant", "reminder", "--text"}, "This is a reminder of an invitation", "subject: Reminder:"},
		{[]string{"render", "magic_auth", "--text", "--locale", "de-DE"}, "Ihr Anmeldecode", "locale: de"},
		{[]string{"render", "radar_challenge", "--text", "--locale", "de-DE"}, "Anmeldeversuch", "locale: de"},
	} {
		code, stdout, stderr := cli(t, context.Background(), append(tc.args, "--config", cfg)...)
		if code != exitOK || !strings.Contains(stdout, tc.want) || !strings.Contains(stderr, tc.inStderr) {
			t.Errorf("%v: exit %d, stdout %.200q, stderr %q; want %q and %q", tc.args, code, stdout, stderr, tc.want, tc.inStderr)
		}
	}
	for _, args := range [][]string{{"render"}, {"render", "sms"}, {"render", "magic_auth", "--locale", "tlh"}, {"render", "--all"}, {"render", "magic_auth", "--all", "--out", dir},
		{"render", "magic_auth", "--variant", "reminder"}, {"render", "--all", "--out", dir, "--variant", "reminder"}} {
		if code, _, stderr := cli(t, context.Background(), append(args, "--config", cfg)...); code != exitUsage {
			t.Errorf("%v: exit %d (%s), want 2", args, code, stderr)
		}
	}
	out := t.TempDir()
	code, stdout, stderr := cli(t, context.Background(), "render", "--all", "--out", out, "--config", cfg)
	if code != exitOK {
		t.Fatalf("render --all: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "108 previews") || !strings.Contains(stdout, "1 organization with") {
		t.Errorf("render --all: %s", stdout)
	}
	index, err := os.ReadFile(filepath.Join(out, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"default/ja/welcome.html", "default/pt-BR/invitation.txt", "org_01ACME/de/magic_auth.html",
		"default/fr/invitation.reminder.html", "default/es/radar_challenge.txt", "default/de/magic_link.html"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("gallery lacks %s", f)
		}
		if !strings.Contains(string(index), f) {
			t.Errorf("index.html does not show %s", f)
		}
	}
}

func TestConfigDefaultsEnvAndDays(t *testing.T) {
	isolate(t)
	t.Setenv("WORKOS_API_KEY", "sk_from_env")
	t.Setenv("WORKOS_EMAILER_STORE_RETENTION", "60d")
	t.Setenv("WORKOS_EMAILER_MAILER_SES_ENDPOINT", "http://127.0.0.1:4566")
	t.Setenv("WORKOS_EMAILER_EVENTS_ENABLED", "magic_auth,invitation")
	cfg, err := config.Load(writeConfig(t, "mailer:\n  from: a@acme.test\ndelivery:\n  max_event_age: 1d12h\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WorkOS.APIKey != "sk_from_env" || cfg.Store.Retention != 60*24*time.Hour ||
		cfg.Mailer.SES.Endpoint != "http://127.0.0.1:4566" || cfg.Delivery.MaxEventAge != 36*time.Hour ||
		strings.Join(cfg.Events.Enabled, ",") != "magic_auth,invitation" || cfg.WorkOS.PollInterval != time.Second ||
		cfg.Delivery.OnAmbiguous != "hold" || cfg.Store.Path != "./workos-emailer.db" || cfg.Delivery.Concurrency != 16 {
		t.Errorf("config %+v", cfg)
	}
	t.Setenv("STATE_DIRECTORY", "/var/lib/workos-emailer")
	t.Setenv("WORKOS_EMAILER_MAILER_FROM", "a@acme.test")
	cfg, err = config.Load("", false)
	if err != nil || cfg.Store.Path != "/var/lib/workos-emailer/state.db" {
		t.Errorf("store path under systemd: %q (%v)", cfg.Store.Path, err)
	}
}

func TestMissingExplicitConfigFileExits2(t *testing.T) {
	isolate(t)
	code, _, stderr := cli(t, context.Background(), "run", "--config", "/nonexistent/config.yaml")
	if code != exitUsage || !strings.Contains(stderr, "/nonexistent/config.yaml") {
		t.Errorf("exit %d %q", code, stderr)
	}
}

func TestRunEndToEndAndLockedStore(t *testing.T) {
	isolate(t)
	wos := fakeworkos.New("sk_test_cli")
	wosURL := wos.Start()
	defer wos.Close()
	ses := fakeses.New()
	sesURL := ses.Start()
	defer ses.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("WORKOS_API_KEY", "sk_test_cli")
	dbPath := filepath.Join(t.TempDir(), "state.db")
	cfgPath := writeConfig(t, `
workos:
  base_url: `+wosURL+`
  poll_interval: 20ms
  start: oldest
store:
  path: `+dbPath+`
mailer:
  from: "Acme <no-reply@acme.test>"
  ses:
    region: us-east-1
    endpoint: `+sesURL+`
admin:
  listen: "`+freeLoopbackAddr(t)+`"
`)
	_, _, code := wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr syncbuf.Buffer
	go func() { done <- execute(ctx, []string{"run", "--config", cfgPath}, &bytes.Buffer{}, &stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(ses.Messages()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(ses.Messages()) != 1 || !strings.Contains(ses.Messages()[0].Text, code) {
		t.Fatalf("messages %d; stderr:\n%s", len(ses.Messages()), stderr.String())
	}

	// A second instance on the same store exits 3 and names the file.
	start := time.Now()
	exit, _, errOut := cli(t, context.Background(), "run", "--config", cfgPath)
	if exit != exitLocked || !strings.Contains(errOut, dbPath) || time.Since(start) > 10*time.Second {
		t.Errorf("second instance: exit %d after %v, %q", exit, time.Since(start), errOut)
	}

	// status asks the running daemon, which holds the store, over the admin listener.
	exit, out, errOut := cli(t, context.Background(), "status", "--json", "--config", cfgPath)
	var doc struct {
		Source string
		States map[string]int
		Live   *struct {
			LastPollAt *time.Time `json:"last_poll_at"`
		}
	}
	if err := json.Unmarshal([]byte(out), &doc); exit != exitOK || err != nil {
		t.Fatalf("status: exit %d, %v: %s %s", exit, err, out, errOut)
	}
	if doc.Source != "daemon" || doc.States["sent"] != 1 || doc.Live == nil || doc.Live.LastPollAt == nil {
		t.Errorf("status from the running daemon: %s", out)
	}

	cancel()
	if exit := <-done; exit != exitOK {
		t.Fatalf("run exit %d; stderr:\n%s", exit, stderr.String())
	}
	logs := stderr.String()
	if strings.Contains(logs, code) || strings.Contains(logs, "sk_test_cli") {
		t.Error("a secret reached the log")
	}
	st, err := store.Open(dbPath, store.Options{})
	if err != nil {
		t.Fatalf("store not released after shutdown: %v", err)
	}
	defer st.Close()
	if p, _ := st.Position(); p.Cursor == "" {
		t.Error("cursor not saved")
	}
}

func TestDemo(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	code, stdout, stderr := cli(t, context.Background(), "demo", "--dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"sent=11 skipped=5 dead=0 ambiguous=0", "magic_link", "expired at", "invitation is revoked",
		"the welcome email went out already", "radar_challenge", filepath.Join(dir, "outbox")} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout)
		}
	}
	emls, _ := filepath.Glob(filepath.Join(dir, "outbox", "*.eml"))
	if len(emls) != 11 {
		t.Errorf("%d .eml files, want 11", len(emls))
	}
	var all string
	for _, f := range emls {
		b, _ := os.ReadFile(f)
		all += string(b)
	}
	// The organization that reads German and its reminder, the user whose metadata says
	// French, the user whose WorkOS locale is de-DE, and the Radar challenge.
	for _, want := range []string{"Einladung", "Dies ist eine Erinnerung", "Bienvenue", "mot de passe",
		"Geben Sie diesen Code ein", "sign-in attempt", "https://auth.workos.com/passwordless/"} {
		if !strings.Contains(all, want) {
			t.Errorf("no demo email contains %q", want)
		}
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := cli(t, context.Background(), "version")
	if code != 0 || !strings.HasPrefix(stdout, "workos-emailer ") || !strings.Contains(stdout, "go1") {
		t.Errorf("version: %d %q", code, stdout)
	}
}

func TestBadUsageExits2(t *testing.T) {
	for _, args := range [][]string{{"run", "--nope"}, {"frobnicate"}, {"run", "extra"}} {
		if code, _, _ := cli(t, context.Background(), args...); code != exitUsage {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// The documented sample must stay valid.
func TestSampleConfigIsValid(t *testing.T) {
	sample, err := filepath.Abs("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	isolate(t)
	t.Setenv("WORKOS_API_KEY", "sk_test_sample")
	// Its sender is a placeholder, refused until the operator names their own.
	if _, err := config.Load(sample, true); err == nil || !strings.Contains(err.Error(), "mailer.from: acme.example is a placeholder domain") {
		t.Fatalf("the sample's placeholder sender is not refused: %v", err)
	}
	t.Setenv("WORKOS_EMAILER_MAILER_FROM", "Acme <no-reply@acme.test>")
	cfg, err := config.Load(sample, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.RequireAPIKey(); err != nil {
		t.Fatal(err)
	}
	// The sample says what the defaults are.
	isolate(t)
	t.Setenv("WORKOS_EMAILER_MAILER_FROM", "a@acme.test")
	defaults, err := config.Load("", false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Delivery != defaults.Delivery || cfg.WorkOS.PageSize != defaults.WorkOS.PageSize ||
		cfg.WorkOS.PollInterval != defaults.WorkOS.PollInterval {
		t.Errorf("the sample's delivery %+v and polling differ from the defaults %+v", cfg.Delivery, defaults.Delivery)
	}
	// The keys this sample shows commented out or at their defaults: the send API off, SMTP on
	// 587 with STARTTLS required and unpaced, no List-Unsubscribe, no organizations.
	if cfg.Mailer.SMTP != defaults.Mailer.SMTP || cfg.Mailer.SMTP.Port != 587 || cfg.Mailer.SMTP.TLS != mailer.SMTPStartTLS ||
		cfg.API != defaults.API || cfg.API.Listen != "" || cfg.Mailer.ListUnsubscribe != "" || len(cfg.Organizations) != 0 ||
		slices.Contains(cfg.Events.Enabled, kinds.MagicLink) {
		t.Errorf("the sample's smtp %+v, api listen %q, list_unsubscribe %q, organizations %v differ from the defaults %+v",
			cfg.Mailer.SMTP, cfg.API.Listen, cfg.Mailer.ListUnsubscribe, cfg.Organizations, defaults.Mailer.SMTP)
	}
	if cfg.Admin != defaults.Admin || cfg.Mailer.SES.FeedbackQueueURL != "" || cfg.WorkOS.APIKeyFile != "" {
		t.Errorf("the sample's admin %+v, feedback queue %q or API key file %q differ from the defaults", cfg.Admin,
			cfg.Mailer.SES.FeedbackQueueURL, cfg.WorkOS.APIKeyFile)
	}
	// The keys the sample shows commented out are keys: uncommented, none is unknown.
	raw, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	// The store: bbolt by default, the PostgreSQL keys shown commented out with their defaults.
	if cfg.Store.Driver != defaults.Store.Driver || cfg.Store.Driver != config.StoreBolt || cfg.Store.LeaseTTL != defaults.Store.LeaseTTL ||
		!strings.Contains(text, "# lease_ttl: "+config.FormatDuration(defaults.Store.LeaseTTL)+"\n") || cfg.Store.DSN != "" {
		t.Errorf("the sample's store driver %q and lease %s differ from the defaults %q, %s", cfg.Store.Driver, cfg.Store.LeaseTTL,
			defaults.Store.Driver, defaults.Store.LeaseTTL)
	}
	for _, key := range []string{"api_key_file", "feedback_queue_url", "previous_token_file", "socket", "driver", "dsn", "dsn_file", "lease_ttl"} {
		if !strings.Contains(text, "# "+key+": ") && !strings.Contains(text, "  "+key+": ") {
			t.Errorf("the sample does not show %s", key)
		}
		text = strings.ReplaceAll(text, "# "+key+": ", key+": ")
	}
	if _, err := config.Load(writeConfig(t, text), true); err != nil && strings.Contains(err.Error(), "invalid keys") {
		t.Errorf("the sample's commented keys are not all keys: %v", err)
	}
	if cfg.WorkOS.MaxRequestsPerSecond != defaults.WorkOS.MaxRequestsPerSecond || cfg.WorkOS.MaxRequestsPerSecond != 50 ||
		!slices.Equal(cfg.Events.Enabled, defaults.Events.Enabled) || cfg.Templates.DefaultLocale != defaults.Templates.DefaultLocale {
		t.Errorf("the sample's budget %v, kinds %v and default locale %q differ from the defaults %v, %v, %q",
			cfg.WorkOS.MaxRequestsPerSecond, cfg.Events.Enabled, cfg.Templates.DefaultLocale,
			defaults.WorkOS.MaxRequestsPerSecond, defaults.Events.Enabled, defaults.Templates.DefaultLocale)
	}
}

// templates.default_locale takes a regional variant, as README and config.yaml say; every kind,
// radar_challenge included, can be enabled.
func TestConfigTakesRegionalDefaultLocaleAndEveryKind(t *testing.T) {
	isolate(t)
	t.Setenv("WORKOS_EMAILER_API_TOKEN", testAPIToken)
	cfgPath := writeConfig(t, "workos:\n  api_key: k\nmailer:\n  driver: log\ntemplates:\n  default_locale: de-DE\napi:\n  listen: 127.0.0.1:9465\nevents:\n  enabled: ["+
		strings.Join(kinds.Names(), ", ")+"]\n")
	cfg, err := config.Load(cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := cfg.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	if got := tm.LocaleFor(""); got != "de" {
		t.Errorf("default_locale de-DE writes in %q, want de", got)
	}
	if !slices.Equal(cfg.Events.Enabled, kinds.Names()) {
		t.Errorf("events.enabled %v, want every kind", cfg.Events.Enabled)
	}
}

const testAPIToken = "api-token-for-cli-tests-0123456789abcdefgh"

// api.listen turns the send API on, which enables the kinds sent on request; the token comes
// from the environment or a file (a systemd credential), and a rotation keeps the old one.
func TestSendAPIConfig(t *testing.T) {
	isolate(t)
	tokenFile := filepath.Join(t.TempDir(), "api_token")
	if err := os.WriteFile(tokenFile, []byte(testAPIToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(writeConfig(t, "mailer:\n  driver: log\napi:\n  listen: 127.0.0.1:9465\n  token_file: "+tokenFile+
		"\n  previous_token: "+strings.Repeat("p", 40)+"\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.APITokens(), []string{testAPIToken, strings.Repeat("p", 40)}) || !slices.Contains(cfg.Events.Enabled, kinds.MagicLink) {
		t.Errorf("tokens %d, kinds %v", len(cfg.APITokens()), cfg.Events.Enabled)
	}
	off, err := config.Load(writeConfig(t, "mailer:\n  driver: log\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(off.Events.Enabled, kinds.MagicLink) || len(off.APITokens()) != 0 {
		t.Errorf("without api.listen: kinds %v", off.Events.Enabled)
	}
	// A token never shows in an error.
	t.Setenv("WORKOS_EMAILER_API_TOKEN", "sh0rt-secret")
	_, err = config.Load(writeConfig(t, "mailer:\n  driver: log\napi:\n  listen: 127.0.0.1:9465\n"), true)
	if err == nil || strings.Contains(err.Error(), "sh0rt-secret") {
		t.Errorf("short token: %v", err)
	}
}

// freeLoopbackAddr is a loopback address with a port that was free a moment ago; the CLI
// needs a fixed admin.listen to find the daemon, so port 0 will not do.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// With no config file anywhere, an error says where it looked.
func TestNoConfigFileSaysWhereItLooked(t *testing.T) {
	isolate(t)
	code, _, stderr := cli(t, context.Background(), "run")
	if code != exitUsage || !strings.Contains(stderr, "no config file: none at ./config.yaml or /etc/workos-emailer/config.yaml") {
		t.Errorf("exit %d, %q", code, stderr)
	}
}

// run --help is where an operator without the README looks: config lookup, environment, secrets,
// exit codes.
func TestRunHelpSaysWhereConfigComesFromAndTheExitCodes(t *testing.T) {
	code, out, _ := cli(t, context.Background(), "run", "--help")
	for _, want := range []string{"/etc/workos-emailer/config.yaml", "WORKOS_EMAILER_", "WORKOS_API_KEY_FILE", "$CREDENTIALS_DIRECTORY",
		"SIGHUP reloads", "control socket", "Exit codes:", "2  invalid configuration", "3  the store is locked"} {
		if !strings.Contains(out, want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
	if code != exitOK {
		t.Errorf("exit %d", code)
	}
}
