package postgres

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/workos-emailer/workos-emailer/internal/tcpproxy"
	"github.com/workos-emailer/workos-emailer/store"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func done(term *Term) bool {
	select {
	case <-term.Done():
		return true
	default:
		return false
	}
}

// proxied is dsn through a TCP proxy the test controls.
func proxied(t *testing.T, dsn string) (string, *tcpproxy.Proxy) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.Listen(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	return u.String(), p
}

func sample(i int, state store.State) store.Delivery {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return store.Delivery{EventID: "event_" + strings.Repeat("0", 25) + string(rune('0'+i)), Kind: "magic_auth", State: state,
		ObjectID: "magic_auth_01", EventCreatedAt: now, FirstSeenAt: now, UpdatedAt: now}
}

func TestSecondDaemonWaitsAndResignHandsOver(t *testing.T) {
	dsn := newDB(t)
	a := openStore(t, dsn, Options{Daemon: true, Holder: "a"})
	b := openStore(t, dsn, Options{Daemon: true, Holder: "b"})
	ta := acquire(t, a)
	if _, ok, err := b.TryAcquire(context.Background()); ok || err != nil {
		t.Fatalf("a second daemon took a held lease (ok %v, err %v)", ok, err)
	}
	if err := b.Save(sample(1, store.Pending), "", time.Now()); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a standby's write: %v, want ErrFenced", err)
	}
	l, err := b.Lease()
	if err != nil || l.Holder != "a" || !l.Live || l.Epoch != ta.Epoch() {
		t.Fatalf("leader %+v (%v)", l, err)
	}
	ta.Release()
	// Resigning frees the lease at once: the standby's next try (every second) takes it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*AcquireInterval)
	defer cancel()
	tb, err := b.Acquire(ctx, nil)
	if err != nil {
		t.Fatalf("after a resign the standby did not take over within %s: %v", 3*AcquireInterval, err)
	}
	defer tb.Release()
	if tb.Epoch() <= ta.Epoch() {
		t.Fatalf("epoch %d after %d: epochs must grow", tb.Epoch(), ta.Epoch())
	}
	if err := a.Save(sample(1, store.Pending), "", time.Now()); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("the old leader's write after its term: %v, want ErrFenced", err)
	}
}

func TestExpiryHandsOverToAStandbyAndFencesTheOldLeader(t *testing.T) {
	dsn := newDB(t)
	viaProxy, proxy := proxied(t, dsn)
	ttl := 2 * time.Second
	a := openStore(t, viaProxy, Options{Daemon: true, Holder: "a", LeaseTTL: ttl})
	b := openStore(t, dsn, Options{Daemon: true, Holder: "b", LeaseTTL: ttl})
	ta := acquire(t, a)
	if err := a.Save(sample(1, store.Sending), "", time.Now()); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole() // a partition: a's packets go nowhere
	cut := time.Now()
	waitFor(t, 2*ttl, "the partitioned leader stops trusting its lease", func() bool { return !ta.Trusted() })
	if since := time.Since(cut); since > ttl {
		t.Errorf("trusted the lease %s after the partition, longer than the TTL %s", since, ttl)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*ttl)
	defer cancel()
	tb, err := b.Acquire(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Release()
	if tb.Epoch() <= ta.Epoch() {
		t.Fatalf("epoch %d after %d", tb.Epoch(), ta.Epoch())
	}
	// The interrupted send is the new leader's to settle; the old one's writes are fenced once
	// it reaches the database again.
	interrupted, err := b.Interrupted()
	if err != nil || len(interrupted) != 1 {
		t.Fatalf("interrupted %v (%v)", interrupted, err)
	}
	proxy.Restore()
	waitFor(t, 3*ttl, "the old leader's term ends", func() bool { return done(ta) })
	settle := sample(1, store.Sent)
	settle.MessageID = "late"
	err = a.Save(settle, "event_late", time.Now())
	if !errors.Is(err, store.ErrFenced) && !strings.Contains(err.Error(), "earlier write") {
		t.Fatalf("the old leader's late write: %v, want it fenced", err)
	}
	d, _, err := b.Delivery(settle.EventID)
	if err != nil || d.State != store.Sending || d.MessageID != "" {
		t.Fatalf("the old leader's fenced write changed the record: %+v (%v)", d, err)
	}
	if p, _ := b.Position(); p.Cursor != "" {
		t.Fatalf("the old leader's fenced write moved the cursor to %q", p.Cursor)
	}
}

// TestOperatorCursorChangeIsNotOverwritten: an operator's cursor change while a daemon leads
// ends nothing; the leader's own cursor moves are dropped from then on (its records still
// commit), and the term hears of the change to poll from the new cursor.
func TestOperatorCursorChangeIsNotOverwritten(t *testing.T) {
	dsn := newDB(t)
	a := openStore(t, dsn, Options{Daemon: true, Holder: "a", LeaseTTL: 2 * time.Second})
	op := openStore(t, dsn, Options{})
	ta := acquire(t, a)
	defer ta.Release()
	if _, err := a.InitPosition(time.Time{}); err != nil { // the pipeline's term starts
		t.Fatal(err)
	}
	if err := a.Save(sample(1, store.Sent), "event_1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := op.SetCursor("event_from_the_operator", time.Now()); err != nil {
		t.Fatal(err)
	}
	// The pipeline, still on its old cursor, records an event and moves past it.
	if err := a.Save(sample(2, store.Sent), "event_2", time.Now()); err != nil {
		t.Fatalf("the leader's record after an operator's change: %v", err)
	}
	if d, ok, _ := a.Delivery(sample(2, store.Sent).EventID); !ok || d.State != store.Sent {
		t.Fatal("the leader's record was not kept")
	}
	if p, _ := op.Position(); p.Cursor != "event_from_the_operator" {
		t.Fatalf("the leader overwrote the operator's cursor with %q", p.Cursor)
	}
	select {
	case <-ta.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("the term did not hear of the change")
	}
	if done(ta) {
		t.Fatalf("an operator's change ended the term: %v", ta.Err())
	}
	// The next pipeline term follows the new position.
	p, err := a.InitPosition(time.Time{})
	if err != nil || p.Cursor != "event_from_the_operator" {
		t.Fatalf("position %+v (%v)", p, err)
	}
	if err := a.Save(sample(3, store.Sent), "event_3", time.Now()); err != nil {
		t.Fatal(err)
	}
	if p, _ := op.Position(); p.Cursor != "event_3" {
		t.Fatalf("the leader's cursor after it followed the change: %q", p.Cursor)
	}
	// An idle leader hears of a change at its next renewal.
	if err := op.ResetCursor(time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ta.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("an idle term did not hear of the reset")
	}
}

func TestClaimsAreCompareAndSet(t *testing.T) {
	dsn := newDB(t)
	a := openStore(t, dsn, Options{Daemon: true, Holder: "a"})
	b := openStore(t, dsn, Options{Daemon: true, Holder: "b"})
	ta := acquire(t, a)
	claim := sample(1, store.Sending)
	if err := a.Save(claim, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(claim, "", time.Now()); !errors.Is(err, ErrClaimed) {
		t.Fatalf("a second claim in one term: %v, want ErrClaimed", err)
	}
	ta.Release()
	tb := acquire(t, b)
	defer tb.Release()
	// A newer term may take an interrupted claim over (on_ambiguous: resend)...
	resend := claim
	resend.MaybeDuplicate = true
	if err := b.Save(resend, "", time.Now()); err != nil {
		t.Fatalf("a new term's claim of an interrupted send: %v", err)
	}
	sent := resend
	sent.State = store.Sent
	if err := b.Save(sent, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	// ...but never claim what is final.
	if err := b.Save(resend, "", time.Now()); !errors.Is(err, ErrClaimed) {
		t.Fatalf("claiming a sent record: %v, want ErrClaimed", err)
	}
}

// TestPartitionMidTransaction: a leader cut off in the middle of a write holds the share lock
// the takeover needs; the server's idle_in_transaction_session_timeout ends it, the takeover
// goes through, and the half-done write is rolled back.
func TestPartitionMidTransaction(t *testing.T) {
	dsn := newDB(t)
	viaProxy, proxy := proxied(t, dsn)
	ttl := 2 * time.Second
	a := openStore(t, viaProxy, Options{Daemon: true, Holder: "a", LeaseTTL: ttl})
	b := openStore(t, dsn, Options{Daemon: true, Holder: "b", LeaseTTL: ttl})
	ta := acquire(t, a)
	inTx := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var writeErr error
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 4*ttl)
		defer cancel()
		writeErr = a.write(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "UPDATE position SET cursor = 'event_half_done'"); err != nil {
				return err
			}
			close(inTx)
			<-ctx.Done() // partitioned before the commit
			return ctx.Err()
		})
	}()
	<-inTx
	proxy.Blackhole()
	ctx, cancel := context.WithTimeout(context.Background(), 4*ttl)
	defer cancel()
	tb, err := b.Acquire(ctx, nil)
	if err != nil {
		t.Fatalf("the takeover did not get past the partitioned leader's open transaction: %v", err)
	}
	defer tb.Release()
	if tb.Epoch() <= ta.Epoch() {
		t.Fatalf("epoch %d after %d", tb.Epoch(), ta.Epoch())
	}
	p, err := b.Position()
	if err != nil || p.Cursor != "" {
		t.Fatalf("the half-done write is visible: cursor %q (%v)", p.Cursor, err)
	}
	proxy.Cut()
	wg.Wait()
	if writeErr == nil {
		t.Fatal("the partitioned write committed")
	}
}

func TestConnectionsGiveUpWithinHalfTheLease(t *testing.T) {
	dsn := newDB(t)
	s := openStore(t, dsn, Options{LeaseTTL: 6 * time.Second})
	for _, setting := range []string{"idle_in_transaction_session_timeout", "statement_timeout"} {
		var v string
		if err := s.pool.QueryRow(context.Background(), "SHOW "+setting).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != "3s" {
			t.Errorf("%s = %s, want 3s (half of store.lease_ttl)", setting, v)
		}
	}
}

func TestMigrationsRunOnceAndANewerSchemaIsRefused(t *testing.T) {
	dsn := newDB(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 { // daemons starting together apply the migrations once, under the lock
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(context.Background(), dsn, Options{})
			if err == nil {
				_ = s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := openStore(t, dsn, Options{})
	if _, err := s.pool.Exec(context.Background(), "UPDATE workos_emailer_schema SET version = 99"); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), dsn, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer version") {
		t.Fatalf("a newer schema: %v", err)
	}
}

func TestBadDSNIsNotEchoed(t *testing.T) {
	_, err := Open(context.Background(), "postgres://u:hunter2@[::1", Options{})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v", err)
	}
	s, err := Open(context.Background(), "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=1", Options{})
	if err == nil {
		_ = s.Close()
		t.Fatal("connected to nothing")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("the password is in the error: %v", err)
	}
}

// TestFinalRecordSurvivesADatabaseBlip: the leader's connection dies while SES has accepted an
// email; the final record is written once the database answers again, within the lease, so the
// send is not left ambiguous (or sent twice under resend).
func TestFinalRecordSurvivesADatabaseBlip(t *testing.T) {
	dsn := newDB(t)
	viaProxy, proxy := proxied(t, dsn)
	a := openStore(t, viaProxy, Options{Daemon: true, Holder: "a", LeaseTTL: 4 * time.Second})
	ta := acquire(t, a)
	defer ta.Release()
	claim := sample(1, store.Sending)
	if err := a.Save(claim, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	proxy.Cut() // every connection reset; new ones refused
	sent := claim
	sent.State, sent.MessageID = store.Sent, "ses-1"
	wait := a.SaveAsync(sent, "", time.Now())
	time.Sleep(300 * time.Millisecond) // the outage the write must outlast
	proxy.Restore()
	if err := wait(); err != nil {
		t.Fatalf("the final record after a 300 ms outage: %v", err)
	}
	if d, _, err := a.Delivery(claim.EventID); err != nil || d.State != store.Sent || d.MessageID != "ses-1" {
		t.Fatalf("record %+v (%v)", d, err)
	}
}

// TestARefusedWriteFailsOnlyItselfAndLaterOnes: writes queued before a refused one are recorded,
// whichever transaction they shared with it.
func TestARefusedWriteFailsOnlyItselfAndLaterOnes(t *testing.T) {
	dsn := newDB(t)
	a := openStore(t, dsn, Options{Daemon: true, Holder: "a"})
	ta := acquire(t, a)
	defer ta.Release()
	final := sample(9, store.Sent)
	if err := a.Save(final, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	var waits []func() error
	for i := range 8 {
		waits = append(waits, a.SaveAsync(sample(i, store.Pending), "", time.Now()))
	}
	refused := final
	refused.State = store.Sending // a claim of a final record
	waits = append(waits, a.SaveAsync(refused, "", time.Now()))
	after := a.SaveAsync(sample(8, store.Pending), "", time.Now())
	for i, w := range waits[:8] {
		if err := w(); err != nil {
			t.Errorf("write %d, queued before the refused one: %v", i, err)
		}
	}
	if err := waits[8](); !errors.Is(err, ErrClaimed) {
		t.Errorf("the refused claim: %v, want ErrClaimed", err)
	}
	if err := after(); err == nil {
		t.Error("a write queued after a refused one was recorded: a cursor could pass a record that was not")
	}
	for i := range 8 {
		if _, ok, _ := a.Delivery(sample(i, store.Pending).EventID); !ok {
			t.Errorf("record %d is missing", i)
		}
	}
}
