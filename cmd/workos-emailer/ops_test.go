package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/workos-emailer/workos-emailer/internal/admin"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

var (
	opsSince = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	opsNow   = time.Now().UTC().Truncate(time.Second)
)

// opsStore writes a store with one delivery of each interesting kind and returns its path.
func opsStore(t *testing.T) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "state.db")
	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.InitPosition(opsSince); err != nil {
		t.Fatal(err)
	}
	at := opsNow.Add(-time.Hour)
	for _, d := range []store.Delivery{
		{EventID: "event_01A", Kind: "magic_auth", State: store.Sent, ObjectID: "magic_auth_01A", Attempts: 1, MessageID: "m-1"},
		{EventID: "event_01B", Kind: "invitation", State: store.Dead, ObjectID: "invitation_01B", Attempts: 1,
			Reason: "SES MessageRejected: Email address is not verified."},
		{EventID: "event_01C", Kind: "magic_auth", State: store.Ambiguous, ObjectID: "magic_auth_01C", Attempts: 1,
			Reason: "outcome unknown, SES may have accepted it"},
		{EventID: "event_01D", Kind: "password_reset", State: store.Dead, Attempts: 10, Reason: "gave up after 10 attempts"},
		{EventID: "event_01E", Kind: "email_verification", State: store.Skipped, ObjectID: "email_verification_01E", Reason: "expired"},
	} {
		d.EventCreatedAt, d.FirstSeenAt, d.UpdatedAt = at, at, at
		if err := st.Save(d, d.EventID, at); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// opsConfig writes a config for the store at db and admin.listen adminAddr ("" disables).
func opsConfig(t *testing.T, db, adminAddr string) string {
	t.Helper()
	return writeConfig(t, fmt.Sprintf("mailer:\n  driver: log\nstore:\n  path: %s\nadmin:\n  listen: %q\n", db, adminAddr))
}

// recently is a valid --since for cursor reset.
var recently = time.Now().Add(-24 * time.Hour).UTC().Format(time.RFC3339)

func opsSetup(t *testing.T) {
	t.Helper()
	isolate(t)
	old := opsLockTimeout
	opsLockTimeout = 100 * time.Millisecond
	t.Cleanup(func() { opsLockTimeout = old })
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func lockStore(t *testing.T, db string) *store.Store {
	t.Helper()
	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func mustCLI(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := cli(t, context.Background(), args...)
	if code != want {
		t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, stdout, stderr)
	}
	return stdout, stderr
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
	return v
}

func TestStatusReadsTheStoreWhenNoDaemonAnswers(t *testing.T) {
	opsSetup(t)
	db := opsStore(t)
	for _, adminAddr := range []string{"", closedPort(t)} {
		cfg := opsConfig(t, db, adminAddr)
		out, errOut := mustCLI(t, 0, "status", "--config", cfg)
		for _, want := range []string{"store file", db, "event_01E", "last poll  unknown", "dead       2", "ambiguous  1",
			"KIND", "invitation", "all                 0        0        1     1        2     1          5"} {
			if !strings.Contains(out, want) {
				t.Errorf("adminAddr %q: status lacks %q:\n%s", adminAddr, want, out)
			}
		}
		if !strings.Contains(errOut, "read the store file") {
			t.Errorf("adminAddr %q: no note that the store was read: %q", adminAddr, errOut)
		}

		out, _ = mustCLI(t, 0, "status", "--json", "--config", cfg)
		doc := decode[admin.Status](t, out)
		if doc.Source != admin.SourceStore || doc.StorePath != db || doc.Records != 5 || doc.Dead != 2 || doc.Ambiguous != 1 ||
			doc.Live != nil || doc.Cursor.EventID != "event_01E" || doc.Cursor.Since == nil || !doc.Cursor.Since.Equal(opsSince) ||
			doc.Cursor.AgeSeconds == nil || *doc.Cursor.AgeSeconds < 3600 || doc.Kinds["invitation"]["dead"] != 1 ||
			doc.Kinds["magic_auth"]["sent"] != 1 || doc.States["pending"] != 0 || !doc.Cursor.Initialized {
			t.Errorf("adminAddr %q: status --json %+v", adminAddr, doc)
		}
		// Every documented key is there, unknowns as null.
		raw := decode[map[string]json.RawMessage](t, out)
		for _, k := range []string{"source", "generated_at", "store_path", "cursor", "records", "states", "kinds", "dead", "ambiguous", "retry_queued", "live"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("status --json lacks %q", k)
			}
		}
		if string(raw["live"]) != "null" || len(decode[map[string]int](t, string(raw["states"]))) != 6 {
			t.Errorf("live %s, states %s", raw["live"], raw["states"])
		}
	}
}

// While the daemon runs it holds the store; status, dead list and cursor show ask it instead.
func TestReadersAskTheDaemonWhileItHoldsTheStore(t *testing.T) {
	opsSetup(t)
	db := opsStore(t)
	st := lockStore(t, db)
	lastPoll := time.Now().Add(-2 * time.Second)
	mux := http.NewServeMux()
	mux.Handle("/status", admin.StatusHandler(st, kinds.Defaults, func() admin.Live {
		return admin.Live{LastPoll: lastPoll, SESQuota: &admin.SESQuota{MaxSendRate: 14, Max24HourSend: 50000, SentLast24Hours: 3}}
	}))
	mux.Handle("/dead", admin.DeadHandler(st))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cfg := opsConfig(t, db, srv.Listener.Addr().String())

	out, errOut := mustCLI(t, 0, "status", "--json", "--config", cfg)
	doc := decode[admin.Status](t, out)
	if doc.Source != admin.SourceDaemon || doc.Live == nil || doc.Live.LastPollAt == nil || !doc.Live.LastPollAt.Equal(lastPoll.UTC()) ||
		doc.Live.SESQuota == nil || doc.Live.SESQuota.MaxSendRate != 14 || doc.Live.SESPaused || doc.Records != 5 || doc.Dead != 2 {
		t.Errorf("status --json from the daemon: %+v (live %+v)", doc, doc.Live)
	}
	if errOut != "" {
		t.Errorf("stderr %q", errOut)
	}
	out, _ = mustCLI(t, 0, "status", "--config", cfg)
	for _, want := range []string{"daemon (admin listener ", "last poll  " + lastPoll.UTC().Format(time.RFC3339), "not paused; quota 14/s, 50000 per 24h, 3 sent"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	out, _ = mustCLI(t, 0, "dead", "list", "--json", "--config", cfg)
	dead := decode[admin.Dead](t, out)
	var ids []string
	for _, e := range dead.Deliveries {
		ids = append(ids, e.EventID)
	}
	if dead.Source != admin.SourceDaemon || dead.Count != 3 || !slices.Equal(ids, []string{"event_01B", "event_01C", "event_01D"}) {
		t.Errorf("dead list --json from the daemon: %+v", dead)
	}
	out, _ = mustCLI(t, 0, "cursor", "show", "--config", cfg)
	if !strings.HasPrefix(out, "cursor event_01E, set ") {
		t.Errorf("cursor show: %q", out)
	}

	// The daemon's admin listener is down (or admin.listen is wrong): the store cannot be read
	// either, and the message says both.
	for _, adminAddr := range []string{closedPort(t), ""} {
		cfg := opsConfig(t, db, adminAddr)
		for _, args := range [][]string{{"status"}, {"dead", "list"}, {"cursor", "show"}} {
			_, errOut := mustCLI(t, exitLocked, append(args, "--config", cfg)...)
			if !strings.Contains(errOut, "holds the store") || !strings.Contains(errOut, "admin.listen") {
				t.Errorf("%v with adminAddr %q: %q", args, adminAddr, errOut)
			}
		}
	}
}

func TestStatusAndDeadHandlers(t *testing.T) {
	opsSetup(t)
	st := lockStore(t, opsStore(t))
	srv := httptest.NewServer(admin.StatusHandler(st, kinds.Defaults, nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var doc admin.Status
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || doc.Source != admin.SourceDaemon || doc.Live != nil {
		t.Errorf("GET /status: %d %q %+v %v", resp.StatusCode, resp.Header.Get("Content-Type"), doc, err)
	}
	resp, err = http.Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d", resp.StatusCode)
	}
}

// cursor set, cursor reset and dead retry change the store through the daemon that holds it; a
// process that holds it without answering on the control socket (an older daemon, another user's)
// is never written under.
func TestWritersRefuseWhileAnotherProcessHoldsTheStore(t *testing.T) {
	opsSetup(t)
	db := opsStore(t)
	lockStore(t, db)
	cfg := opsConfig(t, db, "")
	for _, args := range [][]string{
		{"cursor", "set", "event_01Z"},
		{"cursor", "reset", "--since", recently},
		{"dead", "retry", "event_01B"},
		{"dead", "retry", "--all"},
	} {
		_, errOut := mustCLI(t, exitLocked, append(args, "--config", cfg)...)
		if !strings.Contains(errOut, "does not answer at the control socket "+db+".sock") || !strings.Contains(errOut, "stop the service") ||
			!strings.Contains(errOut, db) {
			t.Errorf("%v: %q", args, errOut)
		}
	}
}

func TestCursorCommands(t *testing.T) {
	opsSetup(t)
	db := opsStore(t)
	cfg := opsConfig(t, db, "")
	out, _ := mustCLI(t, 0, "cursor", "show", "--config", cfg)
	if !strings.HasPrefix(out, "cursor event_01E, set ") || !strings.Contains(out, "ago)") {
		t.Errorf("cursor show: %q", out)
	}

	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"cursor", "set"}, "exactly one EVENT_ID"},
		{[]string{"cursor", "set", "event_01A", "event_01B"}, "exactly one EVENT_ID"},
		{[]string{"cursor", "set", "invitation_01A"}, "not a WorkOS event id"},
		{[]string{"cursor", "set", "event_01A/../x"}, "not a WorkOS event id"},
		{[]string{"cursor", "reset"}, "--since is required"},
		{[]string{"cursor", "reset", "--since", "yesterday"}, `--since "yesterday" is not an RFC 3339 time`},
		{[]string{"cursor", "reset", "--since", "2026-01-02"}, "--since"},
		{[]string{"cursor", "reset", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, "in the future"},
		{[]string{"cursor", "frob"}, "unknown command"},
		{[]string{"cursor", "reset", "--since", time.Now().Add(-50 * 24 * time.Hour).UTC().Format(time.RFC3339)}, "store.retention"},
	} {
		_, errOut := mustCLI(t, exitUsage, append(tc.args, "--config", cfg)...)
		if !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: stderr %q, want %q", tc.args, errOut, tc.want)
		}
	}
	if _, errOut := mustCLI(t, exitUsage, "cursor", "reset", "--config", cfg, "--since"); !strings.Contains(errOut, "--since") {
		t.Errorf("--since without a value: %q", errOut)
	}

	out, _ = mustCLI(t, 0, "cursor", "set", "event_01Z", "--config", cfg)
	if !strings.Contains(out, "cursor set to event_01Z (was event_01E)") {
		t.Errorf("cursor set: %q", out)
	}
	out, _ = mustCLI(t, 0, "cursor", "show", "--config", cfg)
	if !strings.HasPrefix(out, "cursor event_01Z, set ") {
		t.Errorf("cursor show after set: %q", out)
	}

	since := time.Now().Add(-72 * time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	out, _ = mustCLI(t, 0, "cursor", "reset", "--since", since, "--config", cfg)
	if !strings.Contains(out, "cursor reset (was event_01Z)") || !strings.Contains(out, since) || !strings.Contains(out, "not sent again") {
		t.Errorf("cursor reset: %q", out)
	}
	out, _ = mustCLI(t, 0, "cursor", "show", "--config", cfg)
	if out != "no cursor; next run starts at "+since+"\n" {
		t.Errorf("cursor show after reset: %q", out)
	}
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.Position()
	_ = st.Close()
	if err != nil || p.Cursor != "" || p.Since.Format(time.RFC3339) != since {
		t.Errorf("position after reset %+v %v", p, err)
	}
}

func TestCursorShowWithoutACursor(t *testing.T) {
	opsSetup(t)
	for name, tc := range map[string]struct {
		init func(*store.Store) error
		want string
	}{
		"never ran":      {func(*store.Store) error { return nil }, "no cursor; next run starts at workos.start"},
		"start: oldest":  {func(s *store.Store) error { _, err := s.InitPosition(time.Time{}); return err }, "no cursor; next run starts at the oldest event"},
		"start: at time": {func(s *store.Store) error { _, err := s.InitPosition(opsSince); return err }, "no cursor; next run starts at 2026-02-01T00:00:00Z"},
	} {
		db := filepath.Join(t.TempDir(), "state.db")
		st, err := store.Open(db, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = tc.init(st)
		_ = st.Close()
		if err != nil {
			t.Fatal(err)
		}
		out, _ := mustCLI(t, 0, "cursor", "show", "--config", opsConfig(t, db, ""))
		if !strings.HasPrefix(out, tc.want) {
			t.Errorf("%s: %q, want %q", name, out, tc.want)
		}
	}
}

func TestDeadListAndRetry(t *testing.T) {
	opsSetup(t)
	db := opsStore(t)
	cfg := opsConfig(t, db, "")
	out, _ := mustCLI(t, 0, "dead", "list", "--config", cfg)
	for _, want := range []string{"EVENT ID", "event_01B  invitation", "dead", "MessageRejected", "event_01C", "ambiguous",
		"[cannot be retried: no object id] gave up", "3 deliveries", "dead retry"} {
		if !strings.Contains(out, want) {
			t.Errorf("dead list lacks %q:\n%s", want, out)
		}
	}
	out, _ = mustCLI(t, 0, "dead", "list", "--json", "--config", cfg)
	dead := decode[admin.Dead](t, out)
	if dead.Source != admin.SourceStore || dead.Count != 3 || dead.Deliveries[0].Reason != "SES MessageRejected: Email address is not verified." ||
		dead.Deliveries[0].State != "dead" || dead.Deliveries[0].Kind != "invitation" || dead.Deliveries[0].Attempts != 1 ||
		!dead.Deliveries[0].Retryable || dead.Deliveries[2].Retryable || dead.Deliveries[0].UpdatedAt.IsZero() {
		t.Errorf("dead list --json: %+v", dead)
	}

	unchanged := func() {
		t.Helper()
		out, _ := mustCLI(t, 0, "status", "--json", "--config", cfg)
		if doc := decode[admin.Status](t, out); doc.Dead != 2 || doc.Ambiguous != 1 || doc.RetryQueued != 0 {
			t.Fatalf("a refused retry changed the store: %+v", doc)
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"dead", "retry"}, []string{"EVENT_IDs", "--all"}},
		{[]string{"dead", "retry", "--all", "event_01B"}, []string{"not both"}},
		{[]string{"dead", "retry", "event 01B"}, []string{`"event 01B"`, "not WorkOS event ids"}},
		{[]string{"dead", "retry", "event_01B", "event_01A", "event_01X"}, []string{"nothing was queued",
			"event_01A: it is sent", "event_01X: no delivery record"}},
		{[]string{"dead", "retry", "event_01D"}, []string{"event_01D", "no WorkOS object id"}},
	} {
		_, errOut := mustCLI(t, exitUsage, append(tc.args, "--config", cfg)...)
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%v: stderr %q lacks %q", tc.args, errOut, w)
			}
		}
		unchanged()
	}

	out, _ = mustCLI(t, 0, "dead", "retry", "event_01B", "--config", cfg)
	if !strings.Contains(out, "queued 1 deliveries") || !strings.Contains(out, "event_01B  invitation  dead") {
		t.Errorf("dead retry: %q", out)
	}
	out, errOut := mustCLI(t, 0, "dead", "retry", "--all", "--config", cfg)
	if !strings.Contains(out, "queued 1 deliveries") || !strings.Contains(out, "event_01C") ||
		!strings.Contains(errOut, "cannot be retried") || !strings.Contains(errOut, "event_01D") ||
		!strings.Contains(errOut, "were ambiguous") {
		t.Errorf("dead retry --all: %q / %q", out, errOut)
	}
	out, _ = mustCLI(t, 0, "status", "--json", "--config", cfg)
	if doc := decode[admin.Status](t, out); doc.Dead != 1 || doc.Ambiguous != 0 || doc.RetryQueued != 2 || doc.States["pending"] != 2 {
		t.Errorf("after retries: %+v", doc)
	}
	out, _ = mustCLI(t, 0, "dead", "retry", "--all", "--config", cfg)
	if !strings.Contains(out, "nothing to retry") {
		t.Errorf("second dead retry --all: %q", out)
	}
}

// A wrong store.path must not create an empty store behind the operator's back.
func TestOpsCommandsNeedAnExistingStore(t *testing.T) {
	opsSetup(t)
	db := filepath.Join(t.TempDir(), "missing", "state.db")
	cfg := opsConfig(t, db, "")
	for _, args := range [][]string{{"status"}, {"dead", "list"}, {"cursor", "show"}, {"cursor", "set", "event_01A"},
		{"cursor", "reset", "--since", recently}, {"dead", "retry", "--all"}} {
		_, errOut := mustCLI(t, exitFailure, append(args, "--config", cfg)...)
		if !strings.Contains(errOut, "no store at "+db) || !strings.Contains(errOut, "store.path") {
			t.Errorf("%v: %q", args, errOut)
		}
	}
	if _, err := os.Stat(filepath.Dir(db)); !os.IsNotExist(err) {
		t.Errorf("a command created the store directory: %v", err)
	}
}

// status lists every enabled kind, with or without records, and no kind that is neither
// enabled nor recorded.
func TestStatusListsTheEnabledKinds(t *testing.T) {
	opsSetup(t)
	st := lockStore(t, opsStore(t))
	for _, tc := range []struct {
		enabled []string
		welcome bool
	}{{kinds.Defaults(), false}, {append(kinds.Defaults(), kinds.Welcome), true}} {
		doc, err := admin.BuildStatus(st, tc.enabled, time.Now(), admin.SourceStore, nil)
		if err != nil {
			t.Fatal(err)
		}
		counts, ok := doc.Kinds[kinds.Welcome]
		if ok != tc.welcome || ok && counts["sent"] != 0 {
			t.Errorf("enabled %v: welcome in status %v (%v), want %v", tc.enabled, ok, counts, tc.welcome)
		}
		for _, k := range kinds.Defaults() {
			if _, ok := doc.Kinds[k]; !ok {
				t.Errorf("enabled %v: status lacks %s", tc.enabled, k)
			}
		}
	}
}

// The running daemon's status shows the WorkOS request budget: its rate, whether it was
// lowered after 429s, and a pause in progress.
func TestStatusShowsTheWorkOSBudget(t *testing.T) {
	opsSetup(t)
	st := lockStore(t, opsStore(t))
	now := time.Now()
	live := &admin.Live{LastPoll: now, Budget: &workosapi.BudgetStatus{Max: 50, Rate: 12.5, Limited: true,
		PausedUntil: now.Add(2 * time.Second), Throttled: 3, Paused: 4 * time.Second}}
	doc, err := admin.BuildStatus(st, kinds.Defaults(), now, admin.SourceDaemon, live)
	if err != nil {
		t.Fatal(err)
	}
	b := doc.Live.WorkOSBudget
	if b == nil || b.PerSecond != 12.5 || b.MaxPerSecond != 50 || !b.Lowered || b.PausedUntil == nil || b.Throttled != 3 || b.PausedSeconds != 4 {
		t.Fatalf("workos_budget %+v", b)
	}
	var out strings.Builder
	if err := printStatus(&out, doc, "daemon"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "12.5 of 50 requests/s, lowered after WorkOS answered 429; PAUSED for 2s") {
		t.Errorf("status does not show the budget:\n%s", out.String())
	}
	live.Budget = &workosapi.BudgetStatus{Max: 50, Rate: 50}
	if doc, _ = admin.BuildStatus(st, kinds.Defaults(), now, admin.SourceDaemon, live); doc.Live.WorkOSBudget.PausedUntil != nil || doc.Live.WorkOSBudget.Lowered {
		t.Errorf("a budget in full: %+v", doc.Live.WorkOSBudget)
	}
	if !strings.Contains(out.String(), "backlog        none: the main reader is caught up") {
		t.Errorf("status does not say there is no backlog:\n%s", out.String())
	}

	// Behind, with a live reader.
	since := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	live.Backlog = worker.Backlog{Behind: 2 * time.Hour, CatchUp: 5 * time.Minute, LiveRunning: true, LiveSince: since, LiveLag: time.Second}
	doc, _ = admin.BuildStatus(st, kinds.Defaults(), now, admin.SourceDaemon, live)
	if bl := doc.Live.Backlog; bl.BehindSeconds != 7200 || bl.CatchUpSeconds == nil || *bl.CatchUpSeconds != 300 || !bl.LiveReader || !bl.LiveSince.Equal(since) {
		t.Errorf("backlog %+v", bl)
	}
	out.Reset()
	_ = printStatus(&out, doc, "daemon")
	if !strings.Contains(out.String(), "the main reader is 2h0m0s behind, catching up in about 5m0s; a live reader sends new events meanwhile (those since 2026-12-02T12:00:00Z, 1s behind)") {
		t.Errorf("status does not show the backlog:\n%s", out.String())
	}
}
