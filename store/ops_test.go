package store

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func rec(id, kind string, state State, objectID string, updated time.Time) Delivery {
	return Delivery{EventID: id, Kind: kind, State: state, ObjectID: objectID, Attempts: 3,
		Reason: "because " + id, EventCreatedAt: updated.Add(-time.Minute), FirstSeenAt: updated, UpdatedAt: updated}
}

func save(t *testing.T, s *Store, ds ...Delivery) {
	t.Helper()
	for _, d := range ds {
		if err := s.Save(d, "", d.UpdatedAt); err != nil {
			t.Fatal(err)
		}
	}
}

// scanned counts the records the slow way, to check the counters against.
func scanned(t *testing.T, s *Store) (byKind map[string]map[State]int, problems []string) {
	t.Helper()
	byKind = map[string]map[State]int{}
	err := s.ForEach(func(d Delivery) error {
		if byKind[d.Kind] == nil {
			byKind[d.Kind] = map[State]int{}
		}
		byKind[d.Kind][d.State]++
		if d.State == Dead || d.State == Ambiguous {
			problems = append(problems, d.EventID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return byKind, problems
}

func checkDerived(t *testing.T, s *Store) Stats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want, wantProblems := scanned(t, s)
	if !maps.EqualFunc(st.ByKind, want, maps.Equal) {
		t.Errorf("counters %v, records say %v", st.ByKind, want)
	}
	total := 0
	for _, states := range want {
		for state, n := range states {
			total += n
			if st.ByState[state] < n {
				t.Errorf("state %s counted %d, want at least %d", state, st.ByState[state], n)
			}
		}
	}
	if st.Records != total {
		t.Errorf("records %d, want %d", st.Records, total)
	}
	got, err := s.Problems()
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, d := range got {
		gotIDs = append(gotIDs, d.EventID)
	}
	if !slices.Equal(gotIDs, wantProblems) {
		t.Errorf("problems %v, want %v", gotIDs, wantProblems)
	}
	return st
}

func TestStatsFollowEveryWrite(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	if _, err := s.InitPosition(t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"new records", func() error {
			save(t, s, rec("event_1", "magic_auth", Pending, "magic_auth_1", t0), rec("event_2", "invitation", Sending, "invitation_2", t0),
				rec("event_3", "invitation", Dead, "invitation_3", t0), rec("event_4", "", Skipped, "", t0))
			return nil
		}},
		{"state changes", func() error {
			save(t, s, rec("event_1", "magic_auth", Sent, "magic_auth_1", t0), rec("event_2", "invitation", Ambiguous, "invitation_2", t0))
			return nil
		}},
		{"cursor moves with a record", func() error { return s.Save(rec("event_5", "magic_auth", Sent, "magic_auth_5", t0), "event_5", t0) }},
		{"retry", func() error { _, err := s.RequestRetry(t0, "event_2", "event_3"); return err }},
		{"retried sent", func() error { save(t, s, rec("event_3", "invitation", Sent, "invitation_3", t0)); return nil }},
		{"prune", func() error { _, err := s.Prune(t0.Add(time.Second), 2); return err }},
	}
	for _, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		checkDerived(t, s)
		if t.Failed() {
			t.Fatalf("after %s", step.name)
		}
	}
	st := checkDerived(t, s)
	if st.Cursor != "event_5" || !st.Since.Equal(t0.Add(-time.Hour)) || !st.CursorSetAt.Equal(t0) || st.RetryQueued != 1 {
		t.Errorf("stats %+v", st)
	}
	// Counters survive a reopen unchanged.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, s.Path())
	if again := checkDerived(t, s); !maps.EqualFunc(again.ByKind, st.ByKind, maps.Equal) {
		t.Errorf("after reopen %v, before %v", again.ByKind, st.ByKind)
	}
}

// A build that does not know the counters (a rollback) may write records behind their back:
// readers then count the slow way, and the next read-write open rebuilds them.
func TestCountersRebuiltAfterAWriteThatSkippedThem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	save(t, s, rec("event_1", "magic_auth", Sent, "magic_auth_1", t0), rec("event_2", "magic_auth", Dead, "magic_auth_2", t0))
	if _, err := s.RequestRetry(t0, "event_2"); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { // what an older build's Save does
		all := tx.Bucket(bucketDeliveries)
		if err := all.Put([]byte("event_3"), []byte(`{"event_id":"event_3","kind":"invitation","state":"dead"}`)); err != nil {
			return err
		}
		return all.Put([]byte("event_2"), []byte(`{"event_id":"event_2","kind":"magic_auth","state":"sent"}`))
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}

	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	checkDerived(t, ro)
	_ = ro.Close()

	s = open(t, path)
	st := checkDerived(t, s)
	if st.ByKind["magic_auth"][Sent] != 2 || st.ByKind["invitation"][Dead] != 1 || st.RetryQueued != 0 {
		t.Errorf("after rebuild %+v", st)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if !derivedCurrent(tx) {
			return errors.New("counters not current after a read-write open")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestProblemsListsDeadAndAmbiguous(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	save(t, s,
		rec("event_a", "invitation", Dead, "invitation_a", t0),
		rec("event_b", "magic_auth", Sent, "magic_auth_b", t0),
		rec("event_c", "password_reset", Ambiguous, "password_reset_c", t0.Add(time.Minute)),
		rec("event_d", "magic_auth", Pending, "magic_auth_d", t0))
	got, err := s.Problems()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].EventID != "event_a" || got[1].EventID != "event_c" {
		t.Fatalf("problems %+v", got)
	}
	if c := got[1]; c.State != Ambiguous || c.Kind != "password_reset" || c.Reason != "because event_c" ||
		c.Attempts != 3 || !c.UpdatedAt.Equal(t0.Add(time.Minute)) || c.ObjectID != "password_reset_c" {
		t.Errorf("record %+v", c)
	}
}

func TestRequestRetry(t *testing.T) {
	fixture := []Delivery{
		rec("event_dead", "invitation", Dead, "invitation_1", t0),
		rec("event_amb", "magic_auth", Ambiguous, "magic_auth_1", t0),
		rec("event_sent", "magic_auth", Sent, "magic_auth_2", t0),
		rec("event_pending", "magic_auth", Pending, "magic_auth_3", t0),
		rec("event_noobj", "magic_auth", Dead, "", t0),
	}
	later := t0.Add(time.Hour)
	for _, tc := range []struct {
		name    string
		ids     []string
		refused map[string]string // id -> part of the reason
	}{
		{"dead", []string{"event_dead"}, nil},
		{"dead and ambiguous, one twice", []string{"event_dead", "event_amb", "event_dead"}, nil},
		{"unknown", []string{"event_nope"}, map[string]string{"event_nope": "no delivery record"}},
		{"sent", []string{"event_sent"}, map[string]string{"event_sent": "it is sent"}},
		{"pending", []string{"event_pending"}, map[string]string{"event_pending": "it is pending"}},
		{"no object id", []string{"event_noobj"}, map[string]string{"event_noobj": "no WorkOS object id"}},
		{"one bad among good", []string{"event_dead", "event_amb", "event_sent", "event_nope"},
			map[string]string{"event_sent": "only dead or ambiguous", "event_nope": "no delivery record"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, filepath.Join(t.TempDir(), "state.db"))
			save(t, s, fixture...)
			before, _ := scanned(t, s)
			got, err := s.RequestRetry(later, tc.ids...)
			queue, qerr := s.RetryQueue(0)
			if qerr != nil {
				t.Fatal(qerr)
			}
			if tc.refused != nil {
				var refused *RetryRefusedError
				if !errors.As(err, &refused) || len(refused.Refused) != len(tc.refused) {
					t.Fatalf("err %v, want refusal of %v", err, tc.refused)
				}
				for id, why := range tc.refused {
					if !strings.Contains(refused.Refused[id], why) || !strings.Contains(err.Error(), id) {
						t.Errorf("refusal of %s: %q (message %q), want %q", id, refused.Refused[id], err, why)
					}
				}
				if !strings.Contains(err.Error(), "nothing was queued") {
					t.Errorf("message %q does not say nothing changed", err)
				}
				after, _ := scanned(t, s)
				if !maps.EqualFunc(before, after, maps.Equal) || len(queue) != 0 {
					t.Errorf("a refused request changed the store: %v -> %v, queue %v", before, after, queue)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Compact(slices.Sorted(slices.Values(tc.ids)))
			if !slices.Equal(queue, want) || len(got) != len(want) {
				t.Fatalf("queue %v, returned %d, want %v", queue, len(got), want)
			}
			for _, old := range got {
				if old.State != Dead && old.State != Ambiguous {
					t.Errorf("returned %+v, want the record as it was", old)
				}
				d, _, _ := s.Delivery(old.EventID)
				if d.State != Pending || d.Attempts != 0 || d.Reason != RetryReason || !d.UpdatedAt.Equal(later) ||
					d.ObjectID != old.ObjectID || !d.FirstSeenAt.Equal(old.FirstSeenAt) || d.MaybeDuplicate != (old.State == Ambiguous) {
					t.Errorf("queued record %+v", d)
				}
			}
			checkDerived(t, s)
		})
	}
}

func TestRequestRetryAllAndTheQueue(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	save(t, s,
		rec("event_1", "invitation", Dead, "invitation_1", t0),
		rec("event_2", "magic_auth", Ambiguous, "magic_auth_2", t0),
		rec("event_3", "magic_auth", Dead, "", t0),
		rec("event_4", "magic_auth", Sent, "magic_auth_4", t0))
	queued, skipped, err := s.RequestRetryAll(t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 2 || queued[0].EventID != "event_1" || queued[1].EventID != "event_2" ||
		len(skipped) != 1 || skipped[0].EventID != "event_3" {
		t.Fatalf("queued %v, not retryable %v", queued, skipped)
	}
	if q, _ := s.RetryQueue(1); !slices.Equal(q, []string{"event_1"}) {
		t.Errorf("first of the queue %v", q)
	}
	// A retry that fails again for a while stays queued; a final record leaves the queue in the
	// same transaction.
	d := rec("event_1", "invitation", Pending, "invitation_1", t0)
	save(t, s, d)
	if q, _ := s.RetryQueue(0); !slices.Equal(q, []string{"event_1", "event_2"}) {
		t.Errorf("queue %v", q)
	}
	d.State = Skipped
	save(t, s, d)
	if err := s.DropRetry("event_2"); err != nil {
		t.Fatal(err)
	}
	if q, _ := s.RetryQueue(0); len(q) != 0 {
		t.Errorf("queue %v, want empty", q)
	}
	if queued, _, err := s.RequestRetryAll(t0); err != nil || len(queued) != 0 {
		t.Errorf("second retry-all queued %v (%v); only the record without an object id is left", queued, err)
	}
}

func TestPruneDeletesOnlyOldFinalUnqueuedRecords(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	old, young := t0.Add(-50*24*time.Hour), t0.Add(-time.Hour)
	cutoff := t0.Add(-45 * 24 * time.Hour)
	keep := map[string]bool{}
	for i, tc := range []struct {
		state State
		at    time.Time
		gone  bool
	}{
		{Sent, old, true}, {Skipped, old, true}, {Dead, old, true}, {Ambiguous, old, true},
		{Pending, old, false}, {Sending, old, false},
		{Sent, young, false}, {Dead, young, false}, {Sent, cutoff, false},
	} {
		d := rec(fmt.Sprintf("event_%02d", i), "magic_auth", tc.state, "magic_auth_x", tc.at)
		save(t, s, d)
		if !tc.gone {
			keep[d.EventID] = true
		}
	}
	// A final record in the retry queue (the worker has not settled it yet) is never pruned.
	queuedOld := rec("event_99", "invitation", Dead, "invitation_x", old)
	save(t, s, queuedOld)
	err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRetry).Put([]byte(queuedOld.EventID), nil) })
	if err != nil {
		t.Fatal(err)
	}
	keep[queuedOld.EventID] = true

	n, err := s.Prune(cutoff, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("pruned %d, want 4", n)
	}
	got := map[string]bool{}
	_ = s.ForEach(func(d Delivery) error { got[d.EventID] = true; return nil })
	if !maps.Equal(got, keep) {
		t.Errorf("left %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(keep)))
	}
	checkDerived(t, s)
	if n, err := s.Prune(cutoff, 2); err != nil || n != 0 {
		t.Errorf("second prune: %d, %v", n, err)
	}
}

// fill writes n final records quickly (many per transaction), updated at the given time.
func fill(tb testing.TB, s *Store, from, n int, at time.Time) {
	tb.Helper()
	kinds := []string{"invitation", "magic_auth", "email_verification", "password_reset"}
	states := []State{Sent, Sent, Sent, Skipped, Sent, Dead, Sent, Ambiguous}
	for start := from; start < from+n; start += 5000 {
		err := s.update(func(tx *bolt.Tx) error {
			for i := start; i < min(start+5000, from+n); i++ {
				d := Delivery{EventID: fmt.Sprintf("event_%08d", i), Kind: kinds[i%len(kinds)], State: states[i%len(states)],
					ObjectID: fmt.Sprintf("magic_auth_%08d", i), Attempts: 1, MessageID: "0100018f-0000-0000-0000-000000000000-000000",
					Reason: "expired at 2026-01-01T00:00:00Z", EventCreatedAt: at, FirstSeenAt: at, UpdatedAt: at}
				if err := putDelivery(tx, d); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func TestPruneIsBoundedPerTransaction(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	fill(t, s, 0, 2500, t0.Add(-time.Hour))
	fill(t, s, 2500, 300, t0.Add(time.Hour)) // young: kept
	var perTx []int
	pruneTxHook = func(n int) { perTx = append(perTx, n) }
	defer func() { pruneTxHook = nil }()
	n, err := s.Prune(t0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2500 || len(perTx) < 25 || slices.Max(perTx) > 100 {
		t.Errorf("pruned %d in %d write transactions of at most %d; want 2500 in >= 25 of <= 100", n, len(perTx), slices.Max(perTx))
	}
	if st := checkDerived(t, s); st.Records != 300 {
		t.Errorf("%d records left, want 300", st.Records)
	}
}

// PruneWith reports progress after each write transaction and stops when told; the rest is
// pruned by the next call.
func TestPruneWithStopsWhenTold(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	fill(t, s, 0, 1000, t0.Add(-time.Hour))
	var seen []int
	n, err := s.PruneWith(t0, 100, func(pruned int) bool { seen = append(seen, pruned); return pruned < 300 })
	if err != nil || n != 300 || !slices.Equal(seen, []int{100, 200, 300}) {
		t.Fatalf("pruned %d (%v), progress %v; want 300 after 100, 200, 300", n, err, seen)
	}
	if n, err := s.PruneWith(t0, 100, nil); err != nil || n != 700 {
		t.Errorf("the next prune took %d (%v), want the remaining 700", n, err)
	}
}

// Under steady load (records arrive, records age out) the file reaches a size and stays there:
// bbolt reuses the pages pruning frees.
func TestFileStopsGrowingUnderInsertAndPrune(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	const perCycle, keptCycles, cycles = 500, 3, 16
	highWater := func() (logical, file int64) {
		_ = s.db.View(func(tx *bolt.Tx) error { logical = tx.Size(); return nil })
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return logical, fi.Size()
	}
	var sizes, files []int64
	for c := range cycles {
		at := t0.Add(time.Duration(c) * time.Hour)
		fill(t, s, c*perCycle, perCycle, at)
		if _, err := s.Prune(at.Add(-time.Duration(keptCycles-1)*time.Hour), 500); err != nil {
			t.Fatal(err)
		}
		l, f := highWater()
		sizes, files = append(sizes, l), append(files, f)
	}
	if st := checkDerived(t, s); st.Records != perCycle*keptCycles {
		t.Fatalf("%d records kept, want %d", st.Records, perCycle*keptCycles)
	}
	// After warming up for twice the kept window the file does not grow, and the used part
	// grows by less than a tenth of one cycle's data (a page here and there as free space
	// fragments), where without pruning it would grow by a whole cycle each time.
	warm := 2 * keptCycles
	if slices.Max(files[warm:]) > files[warm] || sizes[len(sizes)-1]-sizes[warm] > sizes[0]/10 {
		t.Errorf("store kept growing under steady load:\nused %v\nfile %v", sizes, files)
	}
	t.Logf("used bytes per cycle %v; file %d bytes", sizes, files[len(files)-1])
}

func benchStore(b *testing.B, n int) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	fill(b, s, 0, n, t0)
	return s
}

// BenchmarkStats is what status and the admin listener pay per call on 100k records.
func BenchmarkStats(b *testing.B) {
	s := benchStore(b, 100_000)
	b.ResetTimer()
	for b.Loop() {
		if st, err := s.Stats(); err != nil || st.Records != 100_000 {
			b.Fatal(st.Records, err)
		}
	}
}

// BenchmarkStatsFullScan is the same answer computed by decoding every record, as a store
// without counters would have to.
func BenchmarkStatsFullScan(b *testing.B) {
	s := benchStore(b, 100_000)
	b.ResetTimer()
	for b.Loop() {
		if err := s.db.View(func(tx *bolt.Tx) error { _, err := scanDerived(tx); return err }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProblems lists the dead and ambiguous records of 100k (a quarter of them here).
func BenchmarkProblems(b *testing.B) {
	s := benchStore(b, 100_000)
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Problems(); err != nil {
			b.Fatal(err)
		}
	}
}
