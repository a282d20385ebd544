//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/workos-emailer/workos-emailer/internal/pgtest"
	"github.com/workos-emailer/workos-emailer/internal/tcpproxy"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/store/postgres"
)

// The HA suite: three daemons (the real binary, each in its own directory, as on three hosts)
// share one PostgreSQL store, each through a TCP proxy the test controls, against the fake WorkOS
// and SES. The test keeps injecting faults into whichever daemon leads: SIGKILL, SIGSTOP past
// the lease then SIGCONT, its database connection cut, failpoints after `sending` and after SES
// accepted (armed in every daemon: whichever leads meets its own), and a PostgreSQL restart.
// Oracle: the crash suite's (nothing lost under resend, nothing twice unless recorded ambiguous
// or maybe-duplicate, nothing expired sent), every failover within the lease + 2 s, a graceful
// stop handed over within a second, and `status` the same from every host.

const haLeaseTTL = 3 * time.Second

type haNode struct {
	name   string
	dir    string
	cfg    string
	proxy  *tcpproxy.Proxy
	d      *daemon
	fp     string // the failpoint armed in this run ("" none)
	paused bool
}

func TestHASuite(t *testing.T) {
	seed := uint64(envInt("E2E_SEED", int(time.Now().UnixNano()%1_000_000_000)))
	t.Logf("seed=%d (replay: E2E_SEED=%d make e2e)", seed, seed)
	cluster := pgtest.Start(t)
	for _, mode := range []string{"resend", "hold"} {
		t.Run(mode, func(t *testing.T) {
			events, rounds := envInt("E2E_HA_EVENTS", 1500), envInt("E2E_HA_ROUNDS", 12)
			if mode == "hold" {
				events, rounds = events/2, rounds/2
			}
			haRun(t, cluster, seed, mode, events, rounds)
		})
	}
}

func haRun(t *testing.T, cluster *pgtest.Cluster, seed uint64, onAmbiguous string, nEvents, rounds int) {
	rng := rand.New(rand.NewPCG(seed, uint64(len(onAmbiguous))+7))
	dsn := cluster.CreateDB(t)
	world := newFakeWorld(t, rng, 2*time.Millisecond)
	ses, end, wosURL, sesURL, wl := world.ses, world.end, world.wosURL, world.sesURL, world.wl
	wl.add(nEvents / 3)

	watch := lease(t, dsn)
	nodes := make([]*haNode, 3)
	for i := range nodes {
		n := &haNode{name: fmt.Sprintf("host%d", i+1), dir: filepath.Join(t.TempDir(), fmt.Sprintf("host%d", i+1))}
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		p, err := tcpproxy.Listen(fmt.Sprintf("127.0.0.1:%d", cluster.Port()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		n.proxy = p
		n.cfg = config{WorkOSURL: wosURL, SESURL: sesURL, StorePath: filepath.Join(n.dir, "unused.db"), OnAmbiguous: onAmbiguous,
			PageSize: 25}.write(t, n.dir)
		b := readFile(t, n.cfg)
		b = strings.Replace(b, "store:\n", fmt.Sprintf("store:\n  driver: postgres\n  lease_ttl: %s\n", haLeaseTTL), 1)
		b = strings.Replace(b, "admin:\n  listen: \"\"\n", "admin:\n  listen: \"\"\n  socket: "+filepath.Join(n.dir, "control.sock")+"\n", 1)
		writeText(t, n.cfg, b)
		nodes[i] = n
	}
	nodeDSN := func(n *haNode) string {
		return strings.Replace(dsn, fmt.Sprintf("127.0.0.1:%d", cluster.Port()), n.proxy.Addr(), 1)
	}
	startNode := func(n *haNode, armed bool) {
		env := daemonEnv("WORKOS_EMAILER_STORE_DSN=" + nodeDSN(n))
		n.fp = ""
		if armed && rng.IntN(3) > 0 {
			n.fp = []string{"before-send", "after-send"}[rng.IntN(2)]
			env = append(env, fmt.Sprintf("WORKOS_EMAILER_FAILPOINTS=%s=%d", n.fp, 20+rng.IntN(150)))
		}
		n.d = start(t, failpointBin, env, "run", "--config", n.cfg)
	}
	for _, n := range nodes {
		startNode(n, true)
	}

	var failovers []time.Duration
	byFault := map[string]int{}
	var logs strings.Builder
	collect := func(n *haNode, why string) {
		fmt.Fprintf(&logs, "--- %s (%s)\n%s", n.name, why, n.d.output())
	}
	// leaderOf waits for a live lease held by a running node, and returns that node and epoch.
	leaderOf := func() (*haNode, int64) {
		var leader *haNode
		var epoch int64
		waitUntil(t, 4*haLeaseTTL, "a leader", func() bool {
			// A node that died by its failpoint meanwhile is restarted.
			for _, n := range nodes {
				select {
				case <-n.d.done:
					if !n.d.killedBySignal() {
						t.Fatalf("%s exited by itself (code %d):\n%s", n.name, n.d.exitCode(), tail(n.d.output(), 20))
					}
					byFault["failpoint "+n.fp]++
					collect(n, "failpoint "+n.fp)
					startNode(n, true)
				default:
				}
			}
			l, ok := watch()
			if !ok || !l.Live {
				return false
			}
			for _, n := range nodes {
				if strings.Contains(l.Holder, fmt.Sprintf(":%d:", n.d.cmd.Process.Pid)) {
					leader, epoch = n, l.Epoch
					return true
				}
			}
			return false
		})
		return leader, epoch
	}
	// takenOver measures how long after a fault at since a live lease of at least epoch is held
	// (newer than epoch, unless sameLeaderOK: a leader that rode out a short database restart
	// keeps its term).
	takenOver := func(fault string, epoch int64, since time.Time, sameLeaderOK bool) {
		waitUntil(t, 4*haLeaseTTL, "a takeover after "+fault, func() bool {
			l, ok := watch()
			return ok && l.Live && (l.Epoch > epoch || sameLeaderOK && l.Epoch == epoch)
		})
		d := time.Since(since)
		failovers = append(failovers, d)
		if d > haLeaseTTL+2*time.Second {
			t.Errorf("%s: failover took %s, more than the lease (%s) + 2s", fault, d.Round(time.Millisecond), haLeaseTTL)
		}
	}
	sent := func() int { return len(ses.Messages()) }

	faults := []string{"sigkill", "sigstop", "cut", "sigkill", "postgres-restart", "sigstop", "cut"}
	for round := range rounds {
		// Events keep arriving while it fails over, and every round has some to send: let the
		// leader send a little first, so the fault lands with sends in flight.
		before := sent()
		wl.add(max(1, (nEvents-len(wl.events))/(rounds-round)))
		leader, epoch := leaderOf()
		waitUntil(t, time.Minute, "the leader to send", func() bool { return sent() > before || end.done() })
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		fault := faults[round%len(faults)]
		byFault[fault]++
		at := time.Now()
		switch fault {
		case "sigkill":
			leader.d.kill()
			takenOver(fault, epoch, at, false)
			collect(leader, fault)
			startNode(leader, true)
		case "sigstop":
			_ = leader.d.cmd.Process.Signal(syscall.SIGSTOP)
			takenOver(fault, epoch, at, false)
			time.Sleep(haLeaseTTL / 2) // frozen well past its lease
			_ = leader.d.cmd.Process.Signal(syscall.SIGCONT)
		case "cut":
			leader.proxy.Cut()
			takenOver(fault, epoch, at, false)
			leader.proxy.Restore()
		case "postgres-restart":
			cluster.Stop(t)
			time.Sleep(time.Second)
			cluster.Start(t)
			// Leading again within the lease + 2 s of the database's return, and sending.
			takenOver(fault, epoch, time.Now(), true)
			restarted := sent()
			wl.add(5)
			waitUntil(t, 4*haLeaseTTL, "sending after a PostgreSQL restart", func() bool { return sent() > restarted })
		}
	}

	// Drain: no more faults or failpoints; every daemon up.
	for _, n := range nodes {
		select {
		case <-n.d.done:
			collect(n, "failpoint "+n.fp)
			byFault["failpoint "+n.fp]++
		default:
			if n.fp == "" {
				continue
			}
			_ = n.d.cmd.Process.Signal(syscall.SIGTERM)
			// A daemon that just started may not handle signals yet: SIGTERM then ends it.
			if code := n.d.exitCode(); code > 0 {
				t.Fatalf("%s exited %d after SIGTERM:\n%s", n.name, code, tail(n.d.output(), 20))
			}
			collect(n, "stopped to disarm")
		}
		startNode(n, false)
	}
	last := wl.events[len(wl.events)-1].eventID
	end.expect(last)
	op, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	waitUntil(t, 3*time.Minute, "the stream to be drained", func() bool {
		p, err := op.Position()
		return err == nil && end.done() && p.Cursor == last
	})

	// Every host tells the same truth.
	var docs []map[string]any
	for _, n := range nodes[:2] {
		cmd := exec.Command(releaseBin, "status", "--json", "--config", n.cfg)
		cmd.Env = daemonEnv("WORKOS_EMAILER_STORE_DSN=" + nodeDSN(n))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("status on %s: %v\n%s", n.name, err, stderr.String())
		}
		var doc map[string]any
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, doc)
	}
	for _, doc := range docs {
		delete(doc["cursor"].(map[string]any), "age_seconds") // the moment each was asked
		if l, ok := doc["lease"].(map[string]any); ok {
			delete(l, "expires_at") // renewed between the two asks
		} else {
			t.Errorf("status has no lease: %v", doc["lease"])
		}
	}
	for _, k := range []string{"records", "states", "cursor", "dead", "ambiguous", "lease"} {
		a, _ := json.Marshal(docs[0][k])
		b, _ := json.Marshal(docs[1][k])
		if string(a) != string(b) {
			t.Errorf("status %s differs between hosts: %s vs %s", k, a, b)
		}
	}

	// A graceful stop of the leader hands over in under a second (a standby tries every half).
	leader, epoch := leaderOf()
	at := time.Now()
	_ = leader.d.cmd.Process.Signal(syscall.SIGTERM)
	waitUntil(t, 4*haLeaseTTL, "a takeover after a graceful stop", func() bool {
		l, ok := watch()
		return ok && l.Live && l.Epoch > epoch
	})
	handover := time.Since(at)
	if code := leader.d.exitCode(); code != 0 {
		t.Errorf("the leader exited %d after SIGTERM", code)
	}
	if handover > time.Second {
		t.Errorf("a graceful stop handed over in %s", handover.Round(time.Millisecond))
	}
	for _, n := range nodes {
		_ = n.d.cmd.Process.Signal(syscall.SIGTERM)
		if code := n.d.exitCode(); code != 0 {
			t.Errorf("%s exited %d after SIGTERM:\n%s", n.name, code, tail(n.d.output(), 20))
		}
		collect(n, "final")
	}
	if t.Failed() || os.Getenv("E2E_KEEP_LOGS") != "" {
		_ = os.WriteFile(filepath.Join(os.TempDir(), fmt.Sprintf("ha-%s-%d.log", onAmbiguous, seed)), []byte(logs.String()), 0o600)
	}

	var dump strings.Builder
	_ = op.ForEach(func(d store.Delivery) error { fmt.Fprintf(&dump, "%+v\n", d); return nil })
	r := check(t, wl, ses.Messages(), op, []byte(dump.String()), onAmbiguous)
	slices.Sort(failovers)
	worst := time.Duration(0)
	if len(failovers) > 0 {
		worst = failovers[len(failovers)-1]
	}
	var causes []string
	for _, f := range []string{"sigkill", "sigstop", "cut", "postgres-restart", "failpoint before-send", "failpoint after-send"} {
		causes = append(causes, fmt.Sprintf("%s=%d", strings.ReplaceAll(f, " ", ":"), byFault[f]))
	}
	summary := fmt.Sprintf("faults: %s; failovers=%d worst=%s (lease %s) handover=%s; delivered=%d duplicates=%d ambiguous=%d superseded=%d lost=%d",
		strings.Join(causes, " "), len(failovers), worst.Round(time.Millisecond), haLeaseTTL, handover.Round(time.Millisecond),
		r.delivered, r.duplicates, r.ambiguous, r.superseded, r.lost)
	if onAmbiguous == "hold" {
		summary += fmt.Sprintf(" held=%d", r.held)
	}
	fmt.Printf("HA suite (3 daemons, PostgreSQL, on_ambiguous=%s, seed=%d): %s\n", onAmbiguous, seed, summary)
	if r.lost > 0 || r.unexplained > 0 {
		t.Errorf("%s: %d lost, %d duplicates not recorded as ambiguous (replay with E2E_SEED=%d)", summary, r.lost, r.unexplained, seed)
	}
}

// lease returns a reader of the lease row, straight from the database (no proxy); ok is false
// while the database cannot be reached.
func lease(t *testing.T, dsn string) func() (store.Lease, bool) {
	return func() (store.Lease, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return store.Lease{}, false
		}
		defer conn.Close(context.Background())
		var l store.Lease
		err = conn.QueryRow(ctx, "SELECT holder, epoch, expires_at > clock_timestamp() FROM leader WHERE name = $1", postgres.DefaultName).
			Scan(&l.Holder, &l.Epoch, &l.Live)
		return l, err == nil
	}
}
