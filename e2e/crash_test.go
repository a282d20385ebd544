//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/store"
)

// Failpoints compiled into the test binary (see internal/failpoint and worker.attempt):
//   - before-send: the sending record is durable, SES has not been called
//   - after-send: SES accepted the message, the store has not recorded it
//   - after-record: the final record and cursor are durable
var failpoints = []string{"before-send", "after-send", "after-record"}

// workloadEvent is one generated event and what must become of it.
type workloadEvent struct {
	index    int
	eventID  string
	kind     string
	email    string
	secret   string // code or token
	eligible bool   // false: expired or revoked, must never be sent
}

type workload struct {
	wos    *fakeworkos.Server
	rng    *rand.Rand
	events []workloadEvent
	byID   map[string]*workloadEvent
	orgs   []string
	users  []string
}

// add appends n events of every kind; a fifth go to a few shared recipients so per-recipient
// ordering is exercised, and about one in ten can no longer be sent.
func (w *workload) add(n int) {
	now := time.Now()
	valid, expired := now.Add(2*time.Hour), now.Add(-time.Minute)
	for range n {
		i := len(w.events)
		email := fmt.Sprintf("user%05d@example.com", i)
		if w.rng.IntN(5) == 0 {
			email = fmt.Sprintf("shared%02d@example.com", w.rng.IntN(40))
		}
		ev := workloadEvent{index: i, email: email, eligible: w.rng.IntN(10) != 0}
		exp := valid
		if !ev.eligible {
			exp = expired
		}
		switch w.rng.IntN(4) {
		case 0:
			ev.kind = "invitation"
			inv := fakeworkos.Invitation{Email: email, ExpiresAt: valid}
			if w.rng.IntN(2) == 0 {
				inv.OrganizationID = w.orgs[w.rng.IntN(len(w.orgs))]
				inv.InviterUserID = w.users[w.rng.IntN(len(w.users))]
			}
			var objID string
			if ev.eligible {
				ev.eventID, _, ev.secret = w.wos.AddInvitation(inv)
			} else if w.rng.IntN(2) == 0 {
				inv.ExpiresAt = expired
				ev.eventID, _, ev.secret = w.wos.AddInvitation(inv)
			} else {
				// Revoked after the event was emitted: the event still says pending.
				ev.eventID, objID, ev.secret = w.wos.AddInvitation(inv)
				w.wos.Update(objID, map[string]any{"state": "revoked", "revoked_at": now.UTC().Format(time.RFC3339)})
			}
		case 1, 2:
			ev.kind = []string{"magic_auth", "email_verification"}[w.rng.IntN(2)]
			ev.eventID, _, ev.secret = w.wos.AddCode(ev.kind, email, "user_01E2E", exp)
		default:
			ev.kind = "password_reset"
			ev.eventID, _, ev.secret = w.wos.AddPasswordReset(email, "user_01E2E", exp)
		}
		w.events = append(w.events, ev)
	}
	// byID points into the slice, which append may have moved.
	for i := range w.events {
		w.byID[w.events[i].eventID] = &w.events[i]
	}
}

// fakeWorld is the fake WorkOS and SES a suite runs the daemons against, with its workload.
type fakeWorld struct {
	wos            *fakeworkos.Server
	ses            *fakeses.Server
	wosURL, sesURL string
	end            *endWatch
	wl             *workload
}

// newFakeWorld serves a fake WorkOS with five organizations and inviters, and a fake SES that
// takes sesLatency per request, so that sends stay in flight when a kill or fault lands.
func newFakeWorld(t *testing.T, rng *rand.Rand, sesLatency time.Duration) *fakeWorld {
	f := &fakeWorld{wos: fakeworkos.New(apiKey), ses: fakeses.New()}
	f.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		time.Sleep(sesLatency)
		return false
	}
	f.end = watchEnd(f.wos)
	f.wosURL, f.sesURL = f.wos.Start(), f.ses.Start()
	t.Cleanup(f.wos.Close)
	t.Cleanup(f.ses.Close)
	f.wl = &workload{wos: f.wos, rng: rng, byID: map[string]*workloadEvent{}}
	for i := range 5 {
		f.wl.orgs = append(f.wl.orgs, f.wos.AddOrganization(fmt.Sprintf("Org %d", i)))
		f.wl.users = append(f.wl.users, f.wos.AddUser("Inviter", strconv.Itoa(i), fmt.Sprintf("inviter%d@example.com", i)))
	}
	return f
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestCrashSuite kills the daemon with SIGKILL at random points and at the failpoints around
// the send, restarts it each time, then lets one clean run finish, and checks what SES got
// against what the store says: nothing lost, nothing sent twice without a record saying it
// may have been.
func TestCrashSuite(t *testing.T) {
	seed := uint64(envInt("E2E_SEED", int(time.Now().UnixNano()%1_000_000_000)))
	t.Logf("seed=%d (replay: E2E_SEED=%d make e2e)", seed, seed)
	for _, mode := range []string{"resend", "hold"} {
		t.Run(mode, func(t *testing.T) {
			events, kills := envInt("E2E_EVENTS", 3000), envInt("E2E_KILLS", 60)
			if mode == "hold" {
				events, kills = events/2, kills*5/6
			}
			crashRun(t, seed, mode, events, kills, false)
		})
	}
	// The SMTP driver makes the same promise: a shorter run through a real SMTP server.
	t.Run("smtp-resend", func(t *testing.T) {
		crashRun(t, seed, "resend", envInt("E2E_EVENTS", 3000)/3, envInt("E2E_KILLS", 60)/3, true)
	})
}

func crashRun(t *testing.T, seed uint64, onAmbiguous string, nEvents, nKills int, viaSMTP bool) {
	rng := rand.New(rand.NewPCG(seed, uint64(len(onAmbiguous))))
	world := newFakeWorld(t, rng, time.Millisecond)
	ses, end, wosURL, sesURL, wl := world.ses, world.end, world.wosURL, world.sesURL, world.wl
	wl.add(nEvents * 2 / 3)

	dir := t.TempDir()
	storePath := filepath.Join(dir, "state.db")
	received := ses.Messages
	smtpPort := 0
	if viaSMTP {
		received, smtpPort = startSMTPSink(t)
	}
	cfg := config{WorkOSURL: wosURL, SESURL: sesURL, StorePath: storePath, OnAmbiguous: onAmbiguous, PageSize: 25, SMTPPort: smtpPort}.write(t, dir)

	byCause := map[string]int{}
	var logs strings.Builder
	for k := range nKills {
		if k == nKills/2 {
			wl.add(nEvents - len(wl.events)) // events keep arriving while it crashes
		}
		env := daemonEnv()
		cause := "timer"
		// Timed kills land anywhere, startup included; failpoints hit the exact windows around
		// the send, which timed kills reach only by luck.
		if r := rng.IntN(10); r < 6 {
			fp := failpoints[r%len(failpoints)]
			env = append(env, fmt.Sprintf("WORKOS_EMAILER_FAILPOINTS=%s=%d", fp, 1+rng.IntN(30)))
			cause = fp
		}
		d := start(t, failpointBin, env, "run", "--config", cfg)
		limit := time.Duration(rng.IntN(300)) * time.Millisecond
		if cause != "timer" {
			limit = 3 * time.Second // a failpoint not reached in time falls back to a timed kill
		}
		if !d.exited(limit) {
			d.kill()
			cause = "timer"
		}
		out := d.output()
		if !d.killedBySignal() {
			t.Fatalf("kill %d: the daemon exited by itself (code %d) instead of being killed:\n%s", k, d.exitCode(), tail(out, 20))
		}
		if cause != "timer" && !strings.Contains(out, "failpoint: "+cause) {
			t.Fatalf("kill %d: killed by SIGKILL but the %s failpoint did not report:\n%s", k, cause, tail(out, 5))
		}
		byCause[cause]++
		fmt.Fprintf(&logs, "--- run %d (%s)\n%s", k, cause, out)
	}

	// One clean run finishes the stream: it has asked for the events after the last one, and
	// its cursor, which moves only over final records, has reached it. (The ask alone is not
	// enough: the next page is asked for while the last is still being delivered.)
	last := wl.events[len(wl.events)-1].eventID
	end.expect(last)
	admin := freeAddr(t)
	setAdmin(t, cfg, admin)
	d := start(t, failpointBin, daemonEnv(), "run", "--config", cfg)
	waitUntil(t, 2*time.Minute, "the final run to reach the end of the stream", func() bool {
		select {
		case <-d.done:
			t.Fatalf("the final run exited early (code %d):\n%s", d.exitCode(), tail(d.stderr.String(), 20))
		default:
		}
		return end.done() && cursorAt(admin) == last
	})
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(); code != 0 {
		t.Fatalf("the final run exited %d after SIGTERM:\n%s", code, tail(d.output(), 20))
	}
	fmt.Fprintf(&logs, "--- final run\n%s", d.output())
	if t.Failed() || os.Getenv("E2E_KEEP_LOGS") != "" {
		_ = os.WriteFile(filepath.Join(os.TempDir(), fmt.Sprintf("crash-%s-%d.log", onAmbiguous, seed)), []byte(logs.String()), 0o600)
	}

	st, err := store.Open(storePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(storePath)
	if err != nil {
		t.Fatal(err)
	}
	r := check(t, wl, received(), st, raw, onAmbiguous)
	_ = st.Close()
	causes := []string{}
	for _, c := range append([]string{"timer"}, failpoints...) {
		causes = append(causes, fmt.Sprintf("%s=%d", c, byCause[c]))
	}
	t.Logf("on_ambiguous=%s seed=%d events=%d eligible=%d kills by cause: %s", onAmbiguous, seed, len(wl.events), r.eligible, strings.Join(causes, " "))
	summary := fmt.Sprintf("kills=%d delivered=%d duplicates=%d ambiguous=%d superseded=%d lost=%d", nKills, r.delivered, r.duplicates, r.ambiguous, r.superseded, r.lost)
	if onAmbiguous == "hold" {
		summary += fmt.Sprintf(" held=%d", r.held)
	}
	driver := "ses"
	if viaSMTP {
		driver = "smtp"
	}
	fmt.Printf("crash suite (mailer=%s, on_ambiguous=%s, seed=%d): %s\n", driver, onAmbiguous, seed, summary)
	if r.lost > 0 || r.unexplained > 0 {
		t.Errorf("%s: %d lost, %d duplicates not recorded as ambiguous (replay with E2E_SEED=%d)", summary, r.lost, r.unexplained, seed)
	}
	if byCause["after-send"] == 0 {
		t.Error("no kill landed between SES accepting a message and the store recording it")
	}
}

type report struct {
	eligible, delivered, duplicates, unexplained, ambiguous, lost, held, superseded int
}

// supersededBy returns the event a skipped record names as superseding ev, when that is a
// newer event of the same kind to the same person that SES got; else "".
func supersededBy(wl *workload, ev workloadEvent, reason string, got map[string][]fakeses.Message) string {
	_, rest, ok := strings.Cut(reason, "replaces it (event ")
	if !ok {
		return ""
	}
	id := strings.TrimSuffix(rest, ")")
	newer, ok := wl.byID[id]
	if !ok || newer.kind != ev.kind || newer.email != ev.email || newer.index <= ev.index || len(got[id]) == 0 {
		return ""
	}
	return id
}

// check compares what SES received with the store and the workload.
// raw is the store's bytes (the file, or a dump of the database), which must hold no token.
func check(t *testing.T, wl *workload, msgs []fakeses.Message, st store.Backend, raw []byte, onAmbiguous string) report {
	t.Helper()

	got := map[string][]fakeses.Message{}
	var order []string // event ids in the order SES first saw them
	for _, m := range msgs {
		id := m.Tags["event_id"]
		ev, ok := wl.byID[id]
		if !ok {
			t.Errorf("SES got a message for unknown event %q", id)
			continue
		}
		if len(m.To) != 1 || m.To[0] != ev.email {
			t.Errorf("%s: sent to %v, want %s", id, m.To, ev.email)
		}
		if !strings.Contains(m.HTML, ev.secret) || !strings.Contains(m.Text, ev.secret) || strings.Contains(m.Subject, ev.secret) {
			t.Errorf("%s (%s): the secret is not in both bodies, or is in the subject", id, ev.kind)
		}
		if len(got[id]) == 0 {
			order = append(order, id)
		}
		got[id] = append(got[id], m)
	}

	var r report
	for _, ev := range wl.events {
		rec, found, err := st.Delivery(ev.eventID)
		if err != nil {
			t.Fatal(err)
		}
		n := len(got[ev.eventID])
		switch {
		case !found:
			t.Errorf("%s (%s): no delivery record", ev.eventID, ev.kind)
			continue
		case !rec.State.Final():
			t.Errorf("%s (%s): record left %s after the final run", ev.eventID, ev.kind, rec.State)
		}
		maybeTwice := rec.State == store.Ambiguous || rec.MaybeDuplicate
		if maybeTwice {
			r.ambiguous++
		}
		if !ev.eligible {
			if n > 0 || rec.State != store.Skipped {
				t.Errorf("%s (%s): expired or revoked, but sent %d times (record %s)", ev.eventID, ev.kind, n, rec.State)
			}
			continue
		}
		r.eligible++
		switch {
		case n == 0 && onAmbiguous == "hold" && rec.State == store.Ambiguous:
			r.held++ // killed after "sending" was recorded, before SES got it: held, as configured
		case n == 0 && rec.State == store.Skipped && supersededBy(wl, ev, rec.Reason, got) != "":
			// The live reader sent a newer code to the same person first.
			r.superseded++
		case n == 0:
			r.lost++
			t.Errorf("%s (%s): never sent; record %+v", ev.eventID, ev.kind, rec)
		default:
			r.delivered++
		}
		if n > 1 {
			r.duplicates++
			if !maybeTwice {
				r.unexplained++
				t.Errorf("%s (%s): sent %d times, but the record (%s) does not say it may have been", ev.eventID, ev.kind, n, rec.State)
			}
			if onAmbiguous == "hold" {
				t.Errorf("%s (%s): sent %d times under on_ambiguous: hold", ev.eventID, ev.kind, n)
			}
		}
		if rec.State == store.Sent && !slices.ContainsFunc(got[ev.eventID], func(m fakeses.Message) bool {
			return m.MessageID == rec.MessageID || strings.HasPrefix(rec.MessageID, m.MessageID+" ") // SMTP: the relay's answer follows
		}) {
			t.Errorf("%s: recorded message id %q is not one SES issued", ev.eventID, rec.MessageID)
		}
	}

	// Two emails of one kind to one person arrive in event order. (Of different kinds they may
	// not: the live reader sends new events while the main reader is still behind.)
	lastIndex := map[string]int{}
	for _, id := range order {
		ev := wl.byID[id]
		key := ev.kind + " " + ev.email
		if prev, ok := lastIndex[key]; ok && prev > ev.index {
			t.Errorf("%s got %s event %d after event %d", ev.email, ev.kind, ev.index, prev)
		}
		lastIndex[key] = ev.index
	}

	if pos, err := st.Position(); err != nil || pos.Cursor != wl.events[len(wl.events)-1].eventID {
		t.Errorf("cursor %q (%v), want the last event", pos.Cursor, err)
	}
	// Tokens only: a six-digit code can occur by chance among a timestamp's digits.
	for _, ev := range wl.events {
		if len(ev.secret) > 6 && bytes.Contains(raw, []byte(ev.secret)) {
			t.Errorf("the store file contains the token of %s", ev.eventID)
			break
		}
	}
	return r
}

// cursorAt is the running daemon's cursor, as its admin listener's /status says; "" when it
// does not answer.
func cursorAt(admin string) string {
	resp, err := http.Get("http://" + admin + "/status")
	if err != nil {
		return ""
	}
	defer func() { _ = resp.Body.Close() }()
	var doc struct {
		Cursor struct {
			EventID string `json:"event_id"`
		} `json:"cursor"`
	}
	if json.NewDecoder(resp.Body).Decode(&doc) != nil {
		return ""
	}
	return doc.Cursor.EventID
}
