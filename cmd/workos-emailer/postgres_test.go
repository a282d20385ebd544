package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/internal/pgtest"
	"github.com/workos-emailer/workos-emailer/internal/syncbuf"
	"github.com/workos-emailer/workos-emailer/store"
)

// pgConfig writes a configuration for the PostgreSQL store; the DSN, a secret, comes from the
// environment as in production.
func pgConfig(t *testing.T, dsn, body string) string {
	t.Helper()
	t.Setenv("WORKOS_EMAILER_STORE_DSN", dsn)
	return writeConfig(t, "store:\n  driver: postgres\n  lease_ttl: 2s\n"+body)
}

// TestOperatorCommandsOnPostgres moves a bbolt store into PostgreSQL and runs every operator
// command against the database, as a new user switching would.
func TestOperatorCommandsOnPostgres(t *testing.T) {
	opsSetup(t)
	cluster := pgtest.Start(t)
	dsn := cluster.CreateDB(t)
	cfg := pgConfig(t, dsn, "mailer:\n  driver: log\nadmin:\n  listen: \"\"\n  socket: "+filepath.Join(t.TempDir(), "ctl.sock")+"\n")
	bolt := opsStore(t)

	out, _ := mustCLI(t, exitOK, "store", "import", "--from-bolt", bolt, "--config", cfg)
	if !strings.Contains(out, "imported 5 delivery records") || strings.Contains(out, "password") {
		t.Fatalf("import: %s", out)
	}
	_, errOut := mustCLI(t, exitFailure, "store", "import", "--from-bolt", bolt, "--config", cfg)
	if !strings.Contains(errOut, "in use already") {
		t.Fatalf("a second import: %s", errOut)
	}

	out, _ = mustCLI(t, exitOK, "status", "--json", "--config", cfg)
	doc := decode[admin.Status](t, out)
	if doc.Records != 5 || doc.Dead != 2 || doc.Ambiguous != 1 || doc.Lease == nil || doc.Lease.Live ||
		!strings.HasPrefix(doc.StorePath, "postgres://postgres@127.0.0.1:") || doc.Cursor.EventID != "event_01E" {
		t.Fatalf("status after the import: %s", out)
	}
	out, _ = mustCLI(t, exitOK, "status", "--config", cfg)
	if !strings.Contains(out, "leader") || !strings.Contains(out, "NONE") {
		t.Errorf("status does not say that nobody leads:\n%s", out)
	}

	out, _ = mustCLI(t, exitOK, "dead", "list", "--json", "--config", cfg)
	if dead := decode[admin.Dead](t, out); len(dead.Deliveries) != 3 {
		t.Fatalf("dead list: %s", out)
	}
	mustCLI(t, exitUsage, "dead", "retry", "event_01A", "--config", cfg) // sent: refused, nothing queued
	out, _ = mustCLI(t, exitOK, "dead", "retry", "event_01B", "--config", cfg)
	if !strings.Contains(out, "event_01B") || !strings.Contains(out, "leading daemon") {
		t.Fatalf("dead retry: %s", out)
	}
	out, _ = mustCLI(t, exitOK, "cursor", "set", "event_01Z", "--config", cfg)
	if !strings.Contains(out, "was event_01E") || !strings.Contains(out, "leading daemon") {
		t.Fatalf("cursor set: %s", out)
	}
	out, _ = mustCLI(t, exitOK, "cursor", "show", "--config", cfg)
	if !strings.Contains(out, "event_01Z") {
		t.Fatalf("cursor show: %s", out)
	}
	mustCLI(t, exitOK, "cursor", "reset", "--since", recently, "--config", cfg)
	out, _ = mustCLI(t, exitOK, "status", "--json", "--config", cfg)
	if doc := decode[admin.Status](t, out); doc.Cursor.EventID != "" || doc.RetryQueued != 1 || doc.Lease.Epoch != 1 {
		t.Fatalf("after retry, cursor set and reset: %s", out)
	}
	mustCLI(t, exitOK, "trace", "a@example.com", "--config", cfg)
}

// TestTwoDaemonsOnPostgres runs two daemons on one database, as on two hosts: one sends, the
// other stands by and takes over when the first stops; every email goes out once.
func TestTwoDaemonsOnPostgres(t *testing.T) {
	isolate(t)
	cluster := pgtest.Start(t)
	dsn := cluster.CreateDB(t)
	wos := fakeworkos.New("sk_test_cli")
	wosURL := wos.Start()
	defer wos.Close()
	ses := fakeses.New()
	sesURL := ses.Start()
	defer ses.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("WORKOS_API_KEY", "sk_test_cli")
	config := func(host string) string {
		return pgConfig(t, dsn, fmt.Sprintf(`workos:
  base_url: %s
  poll_interval: 20ms
  start: oldest
mailer:
  from: "Acme <no-reply@acme.test>"
  ses:
    region: us-east-1
    endpoint: %s
admin:
  listen: "%s"
  socket: %s
`, wosURL, sesURL, freeLoopbackAddr(t), filepath.Join(t.TempDir(), host+".sock")))
	}
	type daemon struct {
		cancel context.CancelFunc
		done   chan struct{} // closed when run returned, with code
		code   int
		log    *syncbuf.Buffer
		cfg    string
	}
	run := func(host string) *daemon {
		d := &daemon{done: make(chan struct{}), log: &syncbuf.Buffer{}, cfg: config(host)}
		var ctx context.Context
		ctx, d.cancel = context.WithCancel(context.Background())
		go func() {
			defer close(d.done)
			d.code = execute(ctx, []string{"run", "--config", d.cfg}, &bytes.Buffer{}, d.log)
		}()
		t.Cleanup(func() { d.cancel(); <-d.done })
		return d
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	roleOf := func(d *daemon) string {
		code, out, _ := cli(t, context.Background(), "status", "--json", "--config", d.cfg)
		if code != exitOK {
			return ""
		}
		doc := decode[admin.Status](t, out)
		if doc.Live == nil {
			return ""
		}
		return doc.Live.Role
	}

	a := run("a")
	_, _, first := wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	waitFor("the first email", func() bool { return len(ses.Messages()) == 1 })
	b := run("b")
	waitFor("a leads and b stands by", func() bool { return roleOf(a) == "leader" && roleOf(b) == "standby" })

	// A backfill asked on b's host while a leads: a polls from it, and sends nothing twice.
	var last string
	waitFor("the cursor to pass the first event", func() bool {
		_, out, _ := cli(t, context.Background(), "cursor", "show", "--config", b.cfg)
		last = strings.Fields(strings.TrimPrefix(out, "cursor "))[0]
		return strings.HasPrefix(last, "event_")
	})
	mustCLI(t, exitOK, "cursor", "reset", "--since", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "--config", b.cfg)
	waitFor("a to poll from the operator's cursor", func() bool {
		return strings.Contains(a.log.String(), "an operator changed the cursor in the store")
	})
	waitFor("a to pass the first event again", func() bool {
		_, out, _ := cli(t, context.Background(), "cursor", "show", "--config", b.cfg)
		return strings.Contains(out, last)
	})
	if n := len(ses.Messages()); n != 1 {
		t.Fatalf("the backfill sent %d emails, want the one of before", n)
	}

	a.cancel() // a graceful stop hands over
	<-a.done
	if a.code != exitOK {
		t.Fatalf("a exited %d:\n%s", a.code, a.log.String())
	}
	waitFor("b takes over", func() bool { return roleOf(b) == "leader" })
	_, _, second := wos.AddCode("magic_auth", "b@example.com", "user_02", time.Now().Add(time.Hour))
	waitFor("the second email", func() bool { return len(ses.Messages()) == 2 })
	msgs := ses.Messages()
	if !strings.Contains(msgs[0].Text, first) || !strings.Contains(msgs[1].Text, second) {
		t.Fatalf("messages: %+v", msgs)
	}
	for _, want := range []string{"leading: took the lease", "stopped leading: shutting down"} {
		if !strings.Contains(a.log.String(), want) {
			t.Errorf("a's log lacks %q:\n%s", want, a.log.String())
		}
	}
	if !strings.Contains(b.log.String(), "standing by") || !strings.Contains(b.log.String(), "leading: took the lease") {
		t.Errorf("b's log:\n%s", b.log.String())
	}
	for _, l := range []string{a.log.String(), b.log.String()} {
		if strings.Contains(l, first) || strings.Contains(l, second) || strings.Contains(l, dsn) {
			t.Error("a secret (a code or the DSN) reached the log")
		}
	}
	var st store.Backend
	st, err := openOperatorStore(mustLoad(t, b.cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if s, _ := st.Stats(); s.ByState[store.Sent] != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func mustLoad(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestDaemonWaitsForTheDatabase: a daemon that starts while PostgreSQL is down waits for it, and
// leads once it answers, rather than exiting.
func TestDaemonWaitsForTheDatabase(t *testing.T) {
	isolate(t)
	cluster := pgtest.Start(t)
	dsn := cluster.CreateDB(t)
	t.Setenv("WORKOS_API_KEY", "sk_test_cli")
	wos := fakeworkos.New("sk_test_cli")
	defer wos.Close()
	cfg := pgConfig(t, dsn, "mailer:\n  driver: log\nworkos:\n  base_url: "+wos.Start()+
		"\nadmin:\n  listen: \"\"\n  socket: "+filepath.Join(t.TempDir(), "ctl.sock")+"\n")
	cluster.Stop(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() { done <- execute(ctx, []string{"run", "--config", cfg}, &bytes.Buffer{}, logs) }()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			select {
			case code := <-done:
				t.Fatalf("the daemon exited %d while %s:\n%s", code, what, logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20s:\n%s", what, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait("waiting for the database", func() bool {
		return strings.Contains(logs.String(), "cannot reach the PostgreSQL store; waiting for it")
	})
	cluster.Start(t)
	wait("taking the lease", func() bool { return strings.Contains(logs.String(), "leading: took the lease") })
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d:\n%s", code, logs.String())
	}
}
