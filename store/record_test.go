package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A record reads back as it was written, but for times, which keep milliseconds, and its value
// does not repeat the key.
func TestRecordRoundTripsLean(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 30, 15, 123456789, time.UTC)
	d := Delivery{EventID: "event_01JDZ8XK9Y1QW7V3N0F4B6C2M5", Kind: "magic_auth", State: Sent, Attempts: 2,
		Reason: "r", MessageID: "0100018f-a", ObjectID: "magic_auth_01", MaybeDuplicate: true,
		EventCreatedAt: at, FirstSeenAt: at.Add(time.Second), UpdatedAt: at.Add(2 * time.Second)}
	v, err := encodeDelivery(d)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(v), d.EventID) || !json.Valid(v) {
		t.Errorf("stored value %s: want JSON without the key", v)
	}
	got, err := decodeDelivery([]byte(d.EventID), v, rulesNow(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := d
	want.EventCreatedAt = at.Truncate(time.Millisecond)
	want.FirstSeenAt = want.EventCreatedAt.Add(time.Second)
	want.UpdatedAt = want.EventCreatedAt.Add(2 * time.Second)
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	zero, err := decodeDelivery([]byte("event_1"), mustEncode(t, Delivery{EventID: "event_1", State: Pending}), rulesNow(nil))
	if err != nil || !zero.UpdatedAt.IsZero() || !zero.EventCreatedAt.IsZero() {
		t.Errorf("zero times: %+v, %v", zero, err)
	}
	if _, err := decodeDelivery([]byte("event_1"), []byte(`{"updated_at":"soon"}`), rulesNow(nil)); err == nil {
		t.Error("a time that is neither milliseconds nor RFC 3339 was accepted")
	}
}

func mustEncode(t *testing.T, d Delivery) []byte {
	t.Helper()
	v, err := encodeDelivery(d)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// schema1Store writes a store as schema 1 did: every record in deliveries with its event id
// and RFC 3339 times, an empty index entry in sending for a record in state sending.
func schema1Store(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketDeliveries, bucketSending, bucketCounts, bucketProblems, bucketRetry} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keySchema, []byte("1")); err != nil {
			return err
		}
		if err := putCursor(meta, "event_02", t0); err != nil {
			return err
		}
		all := tx.Bucket(bucketDeliveries)
		for id, v := range map[string]string{
			"event_01": `{"event_id":"event_01","kind":"magic_auth","state":"sent","attempts":1,"message_id":"m-1","object_id":"magic_auth_1","event_created_at":"2026-11-20T10:00:00.123456789Z","first_seen_at":"2026-11-20T10:00:01Z","updated_at":"2026-11-20T10:00:02Z"}`,
			"event_02": `{"event_id":"event_02","kind":"invitation","state":"dead","attempts":3,"reason":"rejected","object_id":"invitation_2","event_created_at":"2026-11-20T10:00:00Z","first_seen_at":"2026-11-20T10:00:00Z","updated_at":"2026-11-20T10:00:00Z"}`,
			"event_03": `{"event_id":"event_03","kind":"magic_auth","state":"sending","attempts":1,"object_id":"magic_auth_3","event_created_at":"2026-11-20T10:00:00Z","first_seen_at":"2026-11-20T10:00:00Z","updated_at":"2026-11-20T10:00:00Z"}`,
		} {
			if err := all.Put([]byte(id), []byte(v)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketProblems).Put([]byte("event_02"), nil); err != nil {
			return err
		}
		return tx.Bucket(bucketSending).Put([]byte("event_03"), nil)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// A store written by schema 1 reads the same before it is moved over (status of a stopped
// daemon right after an upgrade) and after (the first start of the new build), and the move
// puts the interrupted send where schema 2 keeps it.
func TestSchema1StoreIsReadAndMovedOver(t *testing.T) {
	path := schema1Store(t)
	check := func(s *Store) {
		t.Helper()
		d, ok, err := s.Delivery("event_01")
		if err != nil || !ok || d.State != Sent || d.MessageID != "m-1" || d.EventID != "event_01" ||
			!d.EventCreatedAt.Equal(time.Date(2026, 11, 20, 10, 0, 0, 123456789, time.UTC)) {
			t.Errorf("event_01: %+v, %v, %v", d, ok, err)
		}
		recs, err := s.Interrupted()
		if err != nil || len(recs) != 1 || recs[0].EventID != "event_03" || recs[0].State != Sending {
			t.Errorf("interrupted: %+v, %v", recs, err)
		}
		var ids []string
		if err := s.ForEach(func(d Delivery) error { ids = append(ids, d.EventID); return nil }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids) != "[event_01 event_02 event_03]" {
			t.Errorf("ForEach visited %v", ids)
		}
		if p, err := s.Problems(); err != nil || len(p) != 1 || p[0].EventID != "event_02" {
			t.Errorf("problems: %+v, %v", p, err)
		}
	}
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	check(ro)
	_ = ro.Close()

	s := open(t, path)
	check(s)
	st := checkDerived(t, s)
	if st.Records != 3 || st.ByKind["magic_auth"][Sending] != 1 || st.Cursor != "event_02" {
		t.Errorf("stats after the move: %+v", st)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bucketMeta).Get(keySchema)); v != schemaVersion {
			t.Errorf("schema %q after a read-write open, want %q", v, schemaVersion)
		}
		if tx.Bucket(bucketDeliveries).Get([]byte("event_03")) != nil || len(tx.Bucket(bucketSending).Get([]byte("event_03"))) == 0 {
			t.Error("the sending record was not moved to the sending bucket")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The interrupted send settles as usual and leaves the sending bucket.
	d, _, _ := s.Delivery("event_03")
	d.State, d.UpdatedAt = Ambiguous, d.FirstSeenAt.Add(time.Hour)
	save(t, s, d)
	if recs, _ := s.Interrupted(); len(recs) != 0 {
		t.Errorf("still interrupted: %+v", recs)
	}
	checkDerived(t, s)
}

// Records are written twice, `sending` then final and larger; the deliveries bucket still ends
// up nearly full, so the file stays close to its data.
func TestDeliveriesStayDenselyPacked(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	const n, inFlight = 5000, 16
	base := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	mk := func(i int, state State) Delivery {
		d := Delivery{EventID: fmt.Sprintf("event_01JDZ8XK9Y%016d", i), Kind: "magic_auth", State: state, Attempts: 1,
			ObjectID: fmt.Sprintf("magic_auth_01JDZ8XK9Y%016d", i), EventCreatedAt: base, FirstSeenAt: base, UpdatedAt: base}
		if state == Sent {
			d.MessageID = fmt.Sprintf("010001936c1e4f3e-%08d-4d3f-4a2b-9c1e-6f5a4b3c2d1e-000000", i)
		}
		return d
	}
	// A window of sends in flight, finishing in order, each write its own transaction.
	for i := 0; i < n+inFlight; i++ {
		if i < n {
			save(t, s, mk(i, Sending))
		}
		if j := i - inFlight; j >= 0 {
			save(t, s, mk(j, Sent))
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketDeliveries).Stats()
		fill := float64(st.LeafInuse) / float64(st.LeafAlloc)
		if st.KeyN != n || fill < 0.9 {
			t.Errorf("%d records, leaf pages %.0f%% full; want %d and at least 90%%", st.KeyN, 100*fill, n)
		}
		if k := tx.Bucket(bucketSending).Stats().KeyN; k != 0 {
			t.Errorf("%d records left in the sending bucket", k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A once key is held by the delivery that sends (or may have sent), for good, and let go by one
// that ends without sending, so another event can take it.
func TestOnceKeyIsHeldBySendsOnly(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	holder := func() string {
		t.Helper()
		h, err := s.OnceHolder("welcome:user_1")
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	d := Delivery{EventID: "event_1", Kind: "welcome", OnceKey: "welcome:user_1", UpdatedAt: t0}
	for _, tc := range []struct {
		id    string
		state State
		want  string
	}{
		{"event_1", Pending, ""},
		{"event_1", Sending, "event_1"},
		{"event_1", Dead, ""}, // rejected: never sent
		{"event_2", Sending, "event_2"},
		{"event_1", Sending, "event_2"}, // held by another: unchanged
		{"event_1", Skipped, "event_2"}, // not its own: unchanged
		{"event_2", Sent, "event_2"},
		{"event_2", Ambiguous, "event_2"},
	} {
		d.EventID, d.State = tc.id, tc.state
		save(t, s, d)
		if got := holder(); got != tc.want {
			t.Errorf("after %s %s: holder %q, want %q", tc.id, tc.state, got, tc.want)
		}
	}
	// Pruning the records keeps the key: "once" is forever.
	if n, err := s.Prune(t0.Add(time.Hour), 10); err != nil || n == 0 {
		t.Fatalf("pruned %d (%v)", n, err)
	}
	if got := holder(); got != "event_2" {
		t.Errorf("after pruning: holder %q, want event_2", got)
	}
}

// A store written by a newer build is refused without a write: its counters and indexes may
// follow rules this build does not know.
func TestNewerSchemaIsRefusedUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	save(t, s, rec("event_1", "magic_auth", Sent, "magic_auth_1", t0))
	if err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("4")) }); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	before, _ := os.ReadFile(path)
	for _, ro := range []bool{false, true} {
		if _, err := Open(path, Options{ReadOnly: ro}); err == nil || !strings.Contains(err.Error(), `schema "4"`) {
			t.Errorf("read-only %v: %v, want a schema error", ro, err)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("opening a newer schema changed the file")
	}
}

// Moving schema 1 over puts only sending records in the sending bucket: an index entry whose
// record moved on is dropped.
func TestSchema1StaleIndexEntryIsDropped(t *testing.T) {
	path := schema1Store(t)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSending).Put([]byte("event_01"), nil) }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	s := open(t, path)
	if d, _, _ := s.Delivery("event_01"); d.State != Sent {
		t.Errorf("event_01 is %s, want sent", d.State)
	}
	if recs, _ := s.Interrupted(); len(recs) != 1 || recs[0].EventID != "event_03" {
		t.Errorf("interrupted %+v, want only event_03", recs)
	}
}
