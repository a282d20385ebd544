// Package storetest is the contract every store.Backend keeps: each backend's tests call Run
// with a way to open a fresh store of theirs, and every behaviour below runs against it (the
// model is Litestream's replica client tests). A behaviour the worker, the operator commands or
// the send API rely on belongs here, not in one backend's tests.
package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/store"
)

// Opener opens the same store each time it is called (the previous handle closed first by the
// caller): a reopen must see everything committed before.
type Opener func(t *testing.T) store.Backend

// New makes a fresh, empty store and returns its Opener.
type New func(t *testing.T) Opener

// Run runs the contract against the backend new makes.
func Run(t *testing.T, newStore New) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, newStore(t))
		})
	}
}

var cases = []struct {
	name string
	run  func(t *testing.T, open Opener)
}{
	{"Position", testPosition},
	{"RecordRoundTrip", testRecordRoundTrip},
	{"SaveMovesCursorWithRecord", testSaveMovesCursor},
	{"GroupCommitKeepsOrder", testGroupCommit},
	{"Interrupted", testInterrupted},
	{"OnceKeys", testOnceKeys},
	{"LatestSent", testLatestSent},
	{"StatsAndProblems", testStatsAndProblems},
	{"RetryAllOrNone", testRetry},
	{"RetryAll", testRetryAll},
	{"Prune", testPrune},
	{"Requests", testRequests},
	{"FeedbackAndTrace", testFeedbackAndTrace},
	{"RefusesWhatWouldNotReadBack", testRefuses},
	{"AddressSecretIsKept", testAddressSecret},
}

// base is a time every record may hold, whole milliseconds (the stores keep milliseconds).
var base = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)

func id(i int) string { return fmt.Sprintf("event_%026d", i) }

func rec(i int, kind string, state store.State) store.Delivery {
	return store.Delivery{EventID: id(i), Kind: kind, State: state, ObjectID: fmt.Sprintf("user_%d", i),
		EventCreatedAt: base.Add(time.Duration(i) * time.Millisecond), FirstSeenAt: base, UpdatedAt: base.Add(time.Minute)}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func reopen(t *testing.T, st store.Backend, open Opener) store.Backend {
	t.Helper()
	must(t, st.Close())
	return open(t)
}

func testPosition(t *testing.T, open Opener) {
	st := open(t)
	p, err := st.Position()
	must(t, err)
	if p.Initialized || p.Cursor != "" {
		t.Fatalf("fresh store position %+v", p)
	}
	since := base.Add(-24 * time.Hour)
	p, err = st.InitPosition(since)
	must(t, err)
	if !p.Initialized || !p.Since.Equal(since) {
		t.Fatalf("after InitPosition: %+v", p)
	}
	// A second start keeps the first starting point.
	p, err = st.InitPosition(base)
	must(t, err)
	if !p.Since.Equal(since) {
		t.Fatalf("InitPosition moved the start to %v", p.Since)
	}
	must(t, st.SetCursor(id(7), base))
	st = reopen(t, st, open)
	p, err = st.Position()
	must(t, err)
	if p.Cursor != id(7) || !p.CursorSetAt.Equal(base) {
		t.Fatalf("after SetCursor and reopen: %+v", p)
	}
	must(t, st.ResetCursor(since.Add(time.Hour)))
	p, err = st.Position()
	must(t, err)
	if p.Cursor != "" || !p.CursorSetAt.IsZero() || !p.Since.Equal(since.Add(time.Hour)) || !p.Initialized {
		t.Fatalf("after ResetCursor: %+v", p)
	}
	must(t, st.Close())
}

func testRecordRoundTrip(t *testing.T, open Opener) {
	st := open(t)
	d := rec(1, "magic_auth", store.Sent)
	d.Attempts, d.Reason, d.MessageID, d.MaybeDuplicate = 2, "sent after a retry", "ses-1", true
	d.Recipient = st.RecipientHash("Ada@Example.com ")
	d.EventCreatedAt = d.EventCreatedAt.Add(123456 * time.Nanosecond) // kept to the millisecond
	must(t, st.Save(d, "", base))
	st = reopen(t, st, open)
	got, ok, err := st.Delivery(d.EventID)
	must(t, err)
	want := d
	want.EventCreatedAt = want.EventCreatedAt.Truncate(time.Millisecond)
	if !ok || !equal(got, want) {
		t.Fatalf("read back %+v, want %+v", got, want)
	}
	if _, ok, err := st.Delivery(id(2)); err != nil || ok {
		t.Fatalf("unknown record: ok %v err %v", ok, err)
	}
	var all []string
	must(t, st.Save(rec(0, "", store.Skipped), "", base))
	must(t, st.ForEach(func(d store.Delivery) error { all = append(all, d.EventID); return nil }))
	if !slices.Equal(all, []string{id(0), id(1)}) {
		t.Fatalf("ForEach: %v", all)
	}
	must(t, st.Close())
}

func equal(a, b store.Delivery) bool {
	ta := []time.Time{a.EventCreatedAt, a.FirstSeenAt, a.UpdatedAt}
	tb := []time.Time{b.EventCreatedAt, b.FirstSeenAt, b.UpdatedAt}
	for i := range ta {
		if !ta[i].Equal(tb[i]) {
			return false
		}
	}
	a.EventCreatedAt, a.FirstSeenAt, a.UpdatedAt = time.Time{}, time.Time{}, time.Time{}
	b.EventCreatedAt, b.FirstSeenAt, b.UpdatedAt = time.Time{}, time.Time{}, time.Time{}
	a.SupersedeKey, b.SupersedeKey = "", ""
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func testSaveMovesCursor(t *testing.T, open Opener) {
	st := open(t)
	_, err := st.InitPosition(time.Time{})
	must(t, err)
	must(t, st.Save(rec(3, "invitation", store.Sent), id(3), base))
	p, err := st.Position()
	must(t, err)
	if p.Cursor != id(3) {
		t.Fatalf("cursor %q after Save with cursor", p.Cursor)
	}
	// A record that would not read back is refused, and the cursor stays.
	bad := rec(4, "invitation", "lost")
	if err := st.Save(bad, id(4), base); err == nil {
		t.Fatal("a record in an unknown state was saved")
	}
	must(t, st.Close())
	st = open(t)
	p, err = st.Position()
	must(t, err)
	if p.Cursor != id(3) {
		t.Fatalf("cursor %q after a refused Save", p.Cursor)
	}
	must(t, st.Close())
}

func testGroupCommit(t *testing.T, open Opener) {
	st := open(t)
	_, err := st.InitPosition(time.Time{})
	must(t, err)
	const n = 200
	waits := make([]func() error, 0, 2*n)
	for i := range n {
		waits = append(waits, st.SaveAsync(rec(i, "magic_auth", store.Sending), "", base))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		d := rec(i, "magic_auth", store.Sent)
		d.MessageID = fmt.Sprintf("m-%d", i)
		waits = append(waits, st.SaveAsync(d, id(i), base))
	}
	for _, w := range waits {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- w() }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	st = reopen(t, st, open)
	p, err := st.Position()
	must(t, err)
	if p.Cursor != id(n-1) {
		t.Fatalf("cursor %q, want the last queued", p.Cursor)
	}
	s, err := st.Stats()
	must(t, err)
	if s.ByState[store.Sent] != n || s.Records != n {
		t.Fatalf("stats %+v, want %d sent", s, n)
	}
	must(t, st.Close())
}

func testInterrupted(t *testing.T, open Opener) {
	st := open(t)
	must(t, st.Save(rec(1, "magic_auth", store.Sending), "", base))
	must(t, st.Save(rec(2, "magic_auth", store.Sent), "", base))
	must(t, st.Save(rec(3, "password_reset", store.Sending), "", base))
	st = reopen(t, st, open)
	got, err := st.Interrupted()
	must(t, err)
	if len(got) != 2 || got[0].EventID != id(1) || got[1].EventID != id(3) {
		t.Fatalf("interrupted %v", got)
	}
	d := got[0]
	d.State = store.Ambiguous
	must(t, st.Save(d, "", base))
	got, err = st.Interrupted()
	must(t, err)
	if len(got) != 1 {
		t.Fatalf("interrupted after settling one: %v", got)
	}
	must(t, st.Close())
}

func testOnceKeys(t *testing.T, open Opener) {
	st := open(t)
	const key = "welcome:user_01"
	holder := func() string {
		t.Helper()
		h, err := st.OnceHolder(key)
		must(t, err)
		return h
	}
	a := rec(1, "welcome", store.Pending)
	a.OnceKey = key
	must(t, st.Save(a, "", base))
	if h := holder(); h != "" {
		t.Fatalf("a pending record holds the key: %q", h)
	}
	a.State = store.Sending
	must(t, st.Save(a, "", base))
	if h := holder(); h != a.EventID {
		t.Fatalf("sending: holder %q", h)
	}
	a.State = store.Dead
	must(t, st.Save(a, "", base))
	if h := holder(); h != "" {
		t.Fatalf("dead without sending: holder %q", h)
	}
	b := rec(2, "welcome", store.Sent)
	b.OnceKey = key
	must(t, st.Save(b, "", base))
	c := rec(3, "welcome", store.Sent)
	c.OnceKey = key
	must(t, st.Save(c, "", base)) // the caller's mistake: changes nothing
	st = reopen(t, st, open)
	if h := holder(); h != b.EventID {
		t.Fatalf("after a second sender: holder %q, want %q", h, b.EventID)
	}
	must(t, st.Close())
}

func testLatestSent(t *testing.T, open Opener) {
	st := open(t)
	key := "magic_auth:" + st.RecipientHash("ada@example.com")
	if _, _, ok, err := st.LatestSent(key); err != nil || ok {
		t.Fatalf("empty: ok %v err %v", ok, err)
	}
	newer, older := rec(5, "magic_auth", store.Sent), rec(4, "magic_auth", store.Ambiguous)
	newer.SupersedeKey, older.SupersedeKey = key, key
	must(t, st.Save(newer, "", base))
	must(t, st.Save(older, "", base))
	failed := rec(6, "magic_auth", store.Dead)
	failed.SupersedeKey = key
	must(t, st.Save(failed, "", base))
	st = reopen(t, st, open)
	got, at, ok, err := st.LatestSent(key)
	must(t, err)
	if !ok || got != newer.EventID || !at.Equal(newer.EventCreatedAt) {
		t.Fatalf("latest %q %v %v, want %q", got, at, ok, newer.EventID)
	}
	must(t, st.Close())
}

func testStatsAndProblems(t *testing.T, open Opener) {
	st := open(t)
	states := []store.State{store.Sent, store.Sent, store.Dead, store.Ambiguous, store.Skipped, store.Pending, store.Sending}
	for i, s := range states {
		must(t, st.Save(rec(i, "invitation", s), "", base))
	}
	must(t, st.Save(rec(20, "", store.Skipped), "", base))
	// A record that changes state is counted once, in its new state.
	d := rec(0, "invitation", store.Sent)
	d.Attempts = 1
	must(t, st.Save(d, "", base))
	s, err := st.Stats()
	must(t, err)
	if s.Records != 8 || s.ByState[store.Sent] != 2 || s.ByKind["invitation"][store.Dead] != 1 || s.ByKind[""][store.Skipped] != 1 ||
		s.ByState[store.Sending] != 1 || s.ByState[store.Pending] != 1 {
		t.Fatalf("stats %+v", s)
	}
	p, err := st.Problems()
	must(t, err)
	if len(p) != 2 || p[0].EventID != id(2) || p[1].EventID != id(3) {
		t.Fatalf("problems %v", p)
	}
	must(t, st.Close())
}

func testRetry(t *testing.T, open Opener) {
	st := open(t)
	must(t, st.Save(rec(1, "invitation", store.Dead), "", base))
	amb := rec(2, "invitation", store.Ambiguous)
	amb.MessageID = ""
	must(t, st.Save(amb, "", base))
	must(t, st.Save(rec(3, "invitation", store.Sent), "", base))
	noObject := rec(4, "invitation", store.Dead)
	noObject.ObjectID = ""
	must(t, st.Save(noObject, "", base))

	_, err := st.RequestRetry(base, id(1), id(3), id(9), id(4))
	var refused *store.RetryRefusedError
	if !errors.As(err, &refused) || len(refused.Refused) != 3 {
		t.Fatalf("retry of a sent, an unknown and an unfetchable record: %v", err)
	}
	if q, err := st.RetryQueue(0); err != nil || len(q) != 0 {
		t.Fatalf("a refused request queued %v (%v)", q, err)
	}
	before, err := st.RequestRetry(base.Add(time.Minute), id(1), id(2), id(1))
	must(t, err)
	if len(before) != 2 || before[0].State != store.Dead || before[1].State != store.Ambiguous {
		t.Fatalf("retry returned %v", before)
	}
	st = reopen(t, st, open)
	q, err := st.RetryQueue(0)
	must(t, err)
	if !slices.Equal(q, []string{id(1), id(2)}) {
		t.Fatalf("queue %v", q)
	}
	if q, _ := st.RetryQueue(1); len(q) != 1 {
		t.Fatalf("limited queue %v", q)
	}
	d, _, err := st.Delivery(id(2))
	must(t, err)
	if d.State != store.Pending || !d.MaybeDuplicate || d.Reason != store.RetryReason || d.Attempts != 0 {
		t.Fatalf("queued ambiguous record %+v", d)
	}
	s, err := st.Stats()
	must(t, err)
	if s.RetryQueued != 2 {
		t.Fatalf("RetryQueued %d", s.RetryQueued)
	}
	// A pending write keeps it queued; a final one leaves the queue.
	d.Attempts = 1
	must(t, st.Save(d, "", base))
	d.State = store.Sent
	must(t, st.Save(d, "", base))
	must(t, st.DropRetry(id(1)))
	if q, _ := st.RetryQueue(0); len(q) != 0 {
		t.Fatalf("queue after settling and dropping: %v", q)
	}
	must(t, st.Close())
}

func testRetryAll(t *testing.T, open Opener) {
	st := open(t)
	must(t, st.Save(rec(1, "invitation", store.Dead), "", base))
	noObject := rec(2, "invitation", store.Ambiguous)
	noObject.ObjectID = ""
	must(t, st.Save(noObject, "", base))
	must(t, st.Save(rec(3, "invitation", store.Sent), "", base))
	queued, not, err := st.RequestRetryAll(base)
	must(t, err)
	if len(queued) != 1 || queued[0].EventID != id(1) || len(not) != 1 || not[0].EventID != id(2) {
		t.Fatalf("queued %v, not retryable %v", queued, not)
	}
	must(t, st.Close())
}

func testPrune(t *testing.T, open Opener) {
	st := open(t)
	old := base.Add(-40 * 24 * time.Hour)
	for i := range 25 {
		d := rec(i, "magic_auth", store.Sent)
		d.FirstSeenAt, d.UpdatedAt = old, old
		d.MessageID = fmt.Sprintf("m-%d", i)
		must(t, st.Save(d, "", base))
	}
	young := rec(30, "magic_auth", store.Sent)
	must(t, st.Save(young, "", base))
	pending := rec(31, "magic_auth", store.Pending)
	pending.FirstSeenAt, pending.UpdatedAt = old, old
	must(t, st.Save(pending, "", base))
	queued := rec(32, "magic_auth", store.Dead)
	queued.FirstSeenAt = old
	must(t, st.Save(queued, "", base))
	_, err := st.RequestRetry(old, queued.EventID) // pending, and queued, with an old time
	must(t, err)
	calls := 0
	n, err := st.PruneWith(base.Add(-30*24*time.Hour), 10, func(int) bool { calls++; return true })
	must(t, err)
	if n != 25 || calls == 0 {
		t.Fatalf("pruned %d (keepGoing called %d times), want 25", n, calls)
	}
	s, err := st.Stats()
	must(t, err)
	if s.Records != 3 {
		t.Fatalf("%d records left, want the young, the pending and the queued one", s.Records)
	}
	if _, _, found, err := st.RecordFeedback("m-3", store.FeedbackReport{Outcome: "delivered", At: base}); err != nil || found {
		t.Fatalf("feedback for a pruned record found it (%v)", err)
	}
	// Stopping early leaves the rest for next time.
	for i := 40; i < 60; i++ {
		d := rec(i, "magic_auth", store.Skipped)
		d.FirstSeenAt, d.UpdatedAt = old, old
		must(t, st.Save(d, "", base))
	}
	n, err = st.PruneWith(base.Add(-30*24*time.Hour), 5, func(int) bool { return false })
	must(t, err)
	if n == 0 || n >= 20 {
		t.Fatalf("an early stop pruned %d of 20", n)
	}
	must(t, st.Close())
}

func testRequests(t *testing.T, open Opener) {
	st := open(t)
	key, fp := []byte("key-hash-0123456789abcdef0123456"), []byte("0123456789abcdef")
	r := store.Request{ID: store.RequestIDPrefix + "01", Kind: "magic_link", Sealed: []byte("sealed"), AcceptedAt: base,
		IdempotencyKey: key, Fingerprint: fp}
	got, replayed, err := st.AcceptRequest(r)
	must(t, err)
	if got != r.ID || replayed {
		t.Fatalf("accept: %q replayed %v", got, replayed)
	}
	again := r
	again.ID = store.RequestIDPrefix + "02"
	if got, replayed, err := st.AcceptRequest(again); err != nil || got != r.ID || !replayed {
		t.Fatalf("same key: %q %v %v", got, replayed, err)
	}
	other := again
	other.Fingerprint = []byte("fedcba9876543210")
	if _, _, err := st.AcceptRequest(other); !errors.Is(err, store.ErrIdempotencyConflict) {
		t.Fatalf("same key, other request: %v", err)
	}
	if id, ok, err := st.IdempotentRequest(key, fp, base.Add(time.Hour)); err != nil || !ok || id != r.ID {
		t.Fatalf("IdempotentRequest: %q %v %v", id, ok, err)
	}
	if _, ok, _ := st.IdempotentRequest(key, fp, base.Add(store.IdempotencyTTL)); ok {
		t.Fatal("an idempotency key outlived its TTL")
	}
	st = reopen(t, st, open)
	open1, err := st.OpenRequests()
	must(t, err)
	if !slices.Equal(open1, []string{r.ID}) {
		t.Fatalf("open requests %v", open1)
	}
	sealed, ok, err := st.RequestContent(r.ID)
	must(t, err)
	if !ok || string(sealed) != "sealed" {
		t.Fatalf("content %q %v", sealed, ok)
	}
	d, ok, err := st.Delivery(r.ID)
	must(t, err)
	if !ok || d.State != store.Pending || d.Kind != "magic_link" {
		t.Fatalf("request record %+v", d)
	}
	d.State = store.Sent
	must(t, st.Save(d, "", base))
	if _, ok, _ := st.RequestContent(r.ID); ok {
		t.Fatal("a final request kept its content")
	}
	if ids, _ := st.OpenRequests(); len(ids) != 0 {
		t.Fatalf("open requests after the send: %v", ids)
	}
	must(t, st.Close())
}

func testFeedbackAndTrace(t *testing.T, open Opener) {
	st := open(t)
	hash := st.RecipientHash("ada@example.com")
	for i := range 3 {
		d := rec(i, "magic_auth", store.Sent)
		d.MessageID, d.Recipient = fmt.Sprintf("m-%d", i), hash
		d.FirstSeenAt = base.Add(time.Duration(i) * time.Second)
		d.UpdatedAt = time.Now().UTC().Truncate(time.Millisecond)
		must(t, st.Save(d, "", base))
	}
	must(t, st.Save(rec(9, "magic_auth", store.Sent), "", base))
	report := store.FeedbackReport{Outcome: "bounced", At: base, Detail: "Permanent/General", Permanent: true}
	eventID, kind, found, err := st.RecordFeedback("m-1", report)
	must(t, err)
	if !found || eventID != id(1) || kind != "magic_auth" {
		t.Fatalf("feedback recorded on %q %q %v", eventID, kind, found)
	}
	// SQS delivers at least once: the same report again changes nothing.
	later := report
	later.At, later.Detail = base.Add(time.Hour), "Transient/General"
	_, _, _, err = st.RecordFeedback("m-1", later)
	must(t, err)
	_, _, _, err = st.RecordFeedback("m-2", store.FeedbackReport{Outcome: "delivered", At: base, Detail: "to ada@example.com"})
	must(t, err)
	if _, _, found, err := st.RecordFeedback("m-unknown", report); err != nil || found {
		t.Fatalf("unknown message: found %v err %v", found, err)
	}
	st = reopen(t, st, open)
	d, _, err := st.Delivery(id(1))
	must(t, err)
	if d.Feedback == nil || !d.Feedback.BouncedAt.Equal(base) || d.Feedback.Bounce != "Permanent/General" || !d.Feedback.BouncePermanent {
		t.Fatalf("feedback %+v", d.Feedback)
	}
	tr, err := st.Trace(hash)
	must(t, err)
	if len(tr) != 3 || tr[0].EventID != id(2) || tr[2].EventID != id(0) {
		t.Fatalf("trace %v", tr)
	}
	day, last, err := st.FeedbackStats(time.Now(), 2)
	must(t, err)
	if day.Sent != 3 || day.Bounced != 1 || day.Delivered != 1 || last.Sent != 2 {
		t.Fatalf("feedback stats day %+v last %+v", day, last)
	}
	d2, _, _ := st.Delivery(id(2))
	if d2.Feedback == nil || d2.Feedback.DeliveredAt.IsZero() {
		t.Fatalf("delivered not recorded: %+v", d2.Feedback)
	}
	must(t, st.Close())
}

func testRefuses(t *testing.T, open Opener) {
	st := open(t)
	for name, d := range map[string]store.Delivery{
		"unknown state":       rec(1, "magic_auth", "gone"),
		"kind not a name":     rec(2, "Magic Auth", store.Sent),
		"not an event id":     {EventID: "event with spaces", State: store.Sent, UpdatedAt: base},
		"object id malformed": func() store.Delivery { d := rec(3, "magic_auth", store.Sent); d.ObjectID = "x"; return d }(),
	} {
		if err := st.Save(d, "", base); err == nil {
			t.Errorf("%s: saved", name)
		}
		st = reopen(t, st, open) // a refused write may leave a backend's term ended
	}
	if err := st.SetCursor("not an id\n", base); err == nil {
		t.Error("a cursor that is not an event id was set")
	}
	st = reopen(t, st, open)
	if s, err := st.Stats(); err != nil || s.Records != 0 {
		t.Fatalf("after refusals: %+v %v", s, err)
	}
	must(t, st.Close())
}

func testAddressSecret(t *testing.T, open Opener) {
	st := open(t)
	secret := st.AddressSecret()
	h := st.RecipientHash("Ada@example.com")
	if len(secret) != 32 || h != store.HashRecipient(secret, " ada@EXAMPLE.com") {
		t.Fatalf("secret %d bytes, hash %q", len(secret), h)
	}
	st = reopen(t, st, open)
	if st.RecipientHash("ada@example.com") != h {
		t.Fatal("the address hash changed across a reopen: trace would not find earlier emails")
	}
	must(t, st.Close())
}
