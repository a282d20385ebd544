package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testKinds are kinds.Names(), which the daemon passes as Options.Kinds.
var testKinds = []string{"invitation", "magic_auth", "email_verification", "password_reset", "welcome", "password_changed"}

// schema1Record is a record as schema 1 wrote it, kept as it was by the move to schema 2.
const schema1Record = `{"event_id":"event_01H","kind":"magic_auth","state":"sent","attempts":1,"message_id":"m-1",` +
	`"object_id":"magic_auth_01H","event_created_at":"2026-02-28T10:00:00.123456789Z","first_seen_at":"2026-02-28T10:00:01Z",` +
	`"updated_at":"2026-02-28T10:00:02Z"}`

// mixedStore writes a store holding a record in every state, a welcome holding its once key and
// a record schema 1 wrote, with the cursor and the derived buckets current, and returns its path.
func mixedStore(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{Kinds: testKinds})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.InitPosition(t0.Add(-24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	mk := func(id, kind string, state State, objectID string) Delivery {
		return Delivery{EventID: id, Kind: kind, State: state, ObjectID: objectID, Attempts: 1, Reason: "because " + id,
			EventCreatedAt: t0.Add(-time.Minute), FirstSeenAt: t0, UpdatedAt: t0.Add(5 * time.Second)}
	}
	sent := mk("event_01A", "magic_auth", Sent, "magic_auth_01ABC")
	sent.Attempts, sent.MessageID, sent.MaybeDuplicate = 12, "0100018f-0000-0000-0000-000000000000-000000", true
	skipped := mk("event_01B", "", Skipped, "")
	skipped.Reason = `event type "user.deleted" is not handled`
	welcome := mk("event_01G", "welcome", Sent, "user_01G")
	welcome.OnceKey, welcome.MessageID = "welcome:user_01G", "file:event_01G.eml"
	for _, d := range []Delivery{sent, skipped, mk("event_01C", "invitation", Dead, "invitation_01C"),
		mk("event_01D", "password_reset", Ambiguous, "password_reset_01D"), mk("event_01E", "email_verification", Pending, "email_verification_01E"),
		mk("event_01F", "magic_auth", Sending, "magic_auth_01F"), welcome} {
		if err := s.Save(d, d.EventID, d.UpdatedAt); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDeliveries).Put([]byte("event_01H"), []byte(schema1Record))
	})
	s = open(t, path) // counts event_01H in
	checkDerived(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// raw changes the file behind the store's back, as damage does.
func raw(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(fn)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

func rawGet(t *testing.T, path string, bucket []byte, key string) []byte {
	t.Helper()
	var v []byte
	raw(t, path, func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucket).Get([]byte(key)))
		return nil
	})
	if v == nil {
		t.Fatalf("no %s in %s", key, bucket)
	}
	return v
}

func rawGetTx(tx *bolt.Tx, bucket []byte, key string) []byte {
	return bytes.Clone(tx.Bucket(bucket).Get([]byte(key)))
}

func copyStore(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return cp
}

// Every single-byte change of a stored record either stops the open as damage naming the file
// and the record, or leaves what decides a send as it was: a flip inside a reason, a message id
// or a low digit of a time passes, and changes nothing that matters. Issue 12: "sent" read as
// "sant" was counted as sent, hidden from dead list and sent again by a backfill.
func TestEveryByteFlipOfARecordIsCaughtOrHarmless(t *testing.T) {
	path := mixedStore(t)
	rng := rand.New(rand.NewPCG(12, 7))
	for _, tc := range []struct {
		name   string
		bucket []byte
		key    string
	}{
		{"sent", bucketDeliveries, "event_01A"},
		{"sending", bucketSending, "event_01F"},
		{"schema 1 sent", bucketDeliveries, "event_01H"},
		{"welcome", bucketDeliveries, "event_01G"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := rawGet(t, path, tc.bucket, tc.key)
			ro, err := Open(path, Options{ReadOnly: true, Kinds: testKinds})
			if err != nil {
				t.Fatal(err)
			}
			before, _, err := ro.Delivery(tc.key)
			_ = ro.Close()
			if err != nil {
				t.Fatal(err)
			}
			caught, passed := 0, 0
			for i := range orig {
				for _, b := range []byte{orig[i] ^ 0x01, byte(rng.IntN(256))} {
					if b == orig[i] {
						continue
					}
					v := bytes.Clone(orig)
					v[i] = b
					raw(t, path, func(tx *bolt.Tx) error { return tx.Bucket(tc.bucket).Put([]byte(tc.key), v) })
					// Read-write, as the daemon opens it: verify is the same, and a record that
					// passes is counted into the rebuilt counters.
					s, err := Open(path, Options{Kinds: testKinds})
					if err != nil {
						caught++
						if msg := err.Error(); !errors.Is(err, ErrDamaged) || !strings.Contains(msg, path) || !strings.Contains(msg, tc.key) {
							t.Errorf("byte %d %q -> %q: %v; want ErrDamaged naming the file and the record", i, orig[i], b, err)
						}
						continue
					}
					passed++
					d, ok, err := s.Delivery(tc.key)
					_ = s.Close()
					// Only whether a record holds a once key is read back (worker noticeChecks
					// takes the key from the object id again): a letter of it may change.
					onceKeyKept := d.OnceKey == before.OnceKey || d.OnceKey != "" && onceKeyShape(d.OnceKey)
					if err != nil || !ok || d.State != before.State || d.Kind != before.Kind || d.MaybeDuplicate != before.MaybeDuplicate ||
						!onceKeyKept || objectIDShape(d.ObjectID) != objectIDShape(before.ObjectID) {
						t.Errorf("byte %d %q -> %q passed as %+v (%v); was %+v", i, orig[i], b, d, err, before)
					}
				}
			}
			raw(t, path, func(tx *bolt.Tx) error { return tx.Bucket(tc.bucket).Put([]byte(tc.key), orig) })
			t.Logf("%d bytes: %d changes caught, %d harmless", len(orig), caught, passed)
		})
	}
	// The last open saw every record restored.
	s := open(t, path)
	checkDerived(t, s)
}

// Named damage, each opened read-write and read-only: the open fails with ErrDamaged naming the
// file, the record and what is wrong, and writes nothing.
func TestDamagedRecordStopsTheOpen(t *testing.T) {
	base := mixedStore(t)
	sent := rawGet(t, base, bucketDeliveries, "event_01A")
	sending := rawGet(t, base, bucketSending, "event_01F")
	// flip replaces the first old in the sent record with new.
	flip := func(old, new string) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			if !bytes.Contains(sent, []byte(old)) {
				return fmt.Errorf("%s not in %s", old, sent)
			}
			return tx.Bucket(bucketDeliveries).Put([]byte("event_01A"), bytes.Replace(sent, []byte(old), []byte(new), 1))
		}
	}
	// digit changes digit i of the record's time field to d: a high digit is years.
	digit := func(field string, i int, d byte) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			at := bytes.Index(sent, []byte(`"`+field+`":`)) + len(field) + 3 + i
			v := bytes.Clone(sent)
			v[at] = d
			return tx.Bucket(bucketDeliveries).Put([]byte("event_01A"), v)
		}
	}
	put := func(bucket []byte, key string, v []byte) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(key), v) }
	}
	ms := []byte(fmt.Sprint(t0.UnixMilli())) // 1772366400000
	for _, tc := range []struct {
		name   string
		damage func(tx *bolt.Tx) error
		kinds  []string
		want   string
	}{
		{"sent read as sant", flip(`"sent"`, `"sant"`), testKinds, `delivery record "event_01A": unknown state "sant"`},
		{"state key renamed", flip(`"state"`, `"stbte"`), testKinds, `delivery record "event_01A": json: unknown field "stbte"`},
		{"kind flipped", flip(`"magic_auth"`, `"magic_auuh"`), testKinds, `unknown kind "magic_auuh"`},
		{"kind flipped, no kinds given", flip(`"magic_auth"`, `"magic_Auth"`), nil, `kind "magic_Auth" is not a kind name`},
		{"updated_at years before first_seen_at", digit("updated_at", 1, ms[1]^0x01), testKinds, "more than 24h0m0s before first_seen_at"},
		{"updated_at years ahead", digit("updated_at", 1, '9'), testKinds, "updated_at 2032"},
		{"event_created_at before 2020", digit("event_created_at", 1, '4'), testKinds, "event_created_at 2016"},
		{"first_seen_at years ahead", digit("first_seen_at", 0, '2'), testKinds, "first_seen_at 2057"},
		{"time not a number", digit("first_seen_at", 4, 'e'), testKinds, "neither Unix milliseconds"},
		{"attempts negative", flip(`"attempts":12`, `"attempts":-2`), testKinds, "attempts -2 is out of range"},
		{"attempts huge", flip(`"attempts":12`, `"attempts":12000000`), testKinds, "attempts 12000000 is out of range"},
		{"object id damaged", flip(`magic_auth_01ABC`, `magic_auth_01A"C`), testKinds, "invalid character"},
		{"object id not a WorkOS id", flip(`magic_auth_01ABC`, `magic_auth_01A.C`), testKinds, `object_id "magic_auth_01A.C" is not a WorkOS id`},
		{"once key damaged", func(tx *bolt.Tx) error {
			v := rawGetTx(tx, bucketDeliveries, "event_01G")
			return tx.Bucket(bucketDeliveries).Put([]byte("event_01G"), bytes.Replace(v, []byte("welcome:"), []byte("welcome;"), 1))
		}, testKinds, `once_key "welcome;user_01G" is not a kind and a WorkOS id`},
		{"maybe_duplicate damaged", flip(`true`, `trud`), testKinds, "invalid character"},
		{"trailing garbage", put(bucketDeliveries, "event_01A", append(bytes.Clone(sent), 'x')), testKinds, "data after the record (1 bytes)"},
		{"a second object", put(bucketDeliveries, "event_01A", append(bytes.Clone(sent), "{}"...)), testKinds, "data after the record (2 bytes)"},
		{"not an object", put(bucketDeliveries, "event_01A", []byte(`"sent"`)), testKinds, "cannot unmarshal string"},
		{"empty value", put(bucketDeliveries, "event_01A", nil), testKinds, `delivery record "event_01A": the value is empty`},
		{"sending record in deliveries", put(bucketDeliveries, "event_01Z", sending), testKinds,
			`delivery record "event_01Z" is sending but not in the sending bucket`},
		{"sent record in the sending bucket", put(bucketSending, "event_01Z", sent), testKinds,
			`delivery record "event_01Z" in the sending bucket is sent`},
		{"record in both buckets", put(bucketSending, "event_01A", sending), testKinds,
			`delivery record "event_01A" is in both the sending and the deliveries bucket`},
		{"schema 1 event_id differs from the key", put(bucketDeliveries, "event_01H", []byte(strings.Replace(schema1Record, "event_01H", "event_01I", 1))),
			testKinds, `event_id "event_01I" differs from the key`},
		{"key not an event id", put(bucketDeliveries, "event_01A\x00", sent), testKinds, "the key is not an event id"},
		{"key too long", put(bucketDeliveries, "event_"+strings.Repeat("1", 200), sent), testKinds, "the key is not an event id"},
		{"cursor unprintable", put(bucketMeta, string(keyCursor), []byte("event\x1e01G")), testKinds, `the cursor "event\x1e01G" is not an event id`},
		{"cursor with a space", put(bucketMeta, string(keyCursor), []byte("event 01G")), testKinds, "is not an event id"},
		{"cursor_set_at damaged", func(tx *bolt.Tx) error {
			v := bytes.Replace(tx.Bucket(bucketMeta).Get(keyCursorSetAt), []byte("T"), []byte("U"), 1)
			return tx.Bucket(bucketMeta).Put(keyCursorSetAt, v)
		}, testKinds, "decode cursor_set_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := copyStore(t, base)
			raw(t, path, tc.damage)
			before, _ := os.ReadFile(path)
			for _, ro := range []bool{false, true} {
				s, err := Open(path, Options{ReadOnly: ro, Kinds: tc.kinds})
				if err == nil {
					_ = s.Close()
					t.Fatalf("read-only %v: opened", ro)
				}
				if msg := err.Error(); !errors.Is(err, ErrDamaged) || !strings.Contains(msg, path) || !strings.Contains(msg, tc.want) ||
					!strings.Contains(msg, "backup") {
					t.Errorf("read-only %v: %v\nwant ErrDamaged naming the file and %q", ro, err, tc.want)
				}
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("Open changed the damaged file")
			}
		})
	}
}

// What the code writes at the edges of the rules opens.
func TestRecordsAtTheEdgesOfTheRulesOpen(t *testing.T) {
	now := time.Now()
	for _, d := range []Delivery{
		{EventID: "event_zero_times", Kind: "magic_auth", State: Sending, Attempts: 1}, // what worker tests write
		{EventID: "event_unhandled", State: Skipped, FirstSeenAt: now, UpdatedAt: now},
		{EventID: "event_clock_stepped_back", Kind: "invitation", State: Pending, FirstSeenAt: now, UpdatedAt: now.Add(-23 * time.Hour)},
		{EventID: "event_clock_ahead", Kind: "invitation", State: Sent, EventCreatedAt: now.Add(6 * 24 * time.Hour), FirstSeenAt: now,
			UpdatedAt: now.Add(6 * 24 * time.Hour)},
		{EventID: "event_no_created_at", Kind: "welcome", State: Dead, FirstSeenAt: now, UpdatedAt: now, OnceKey: "welcome:user_1"},
		{EventID: "event_" + strings.Repeat("A", maxEventIDLen-6), Kind: "password_changed", State: Ambiguous, Attempts: maxAttempts - 1,
			ObjectID: "user_" + strings.Repeat("z", 64), UpdatedAt: now},
		{EventID: "event_01/../x", Kind: "magic_auth", State: Sent, MessageID: "file:event_01_.._x.eml", Reason: "Grüße ✓\n\"q\""},
	} {
		t.Run(d.EventID[:min(len(d.EventID), 30)], func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			s := open(t, path)
			if err := s.Save(d, d.EventID, now); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
			for _, ro := range []bool{false, true} {
				s, err := Open(path, Options{ReadOnly: ro, Kinds: testKinds})
				if err != nil {
					t.Fatalf("read-only %v: %v", ro, err)
				}
				got, ok, err := s.Delivery(d.EventID)
				_ = s.Close()
				if err != nil || !ok || got.State != d.State || got.Reason != d.Reason {
					t.Errorf("read-only %v: %+v %v %v", ro, got, ok, err)
				}
			}
		})
	}
}

// A record that would not read back is refused when written, not at the next start, after its
// email went out.
func TestSaveRefusesARecordThatWouldNotReadBack(t *testing.T) {
	for name, d := range map[string]Delivery{
		"unknown state":    {EventID: "event_1", State: "sant"},
		"object id":        {EventID: "event_1", State: Sent, ObjectID: "magic_auth_01/.."},
		"key with space":   {EventID: "event 1", State: Sent},
		"negative tries":   {EventID: "event_1", State: Pending, Attempts: -1},
		"time before 2020": {EventID: "event_1", State: Sent, UpdatedAt: time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC)},
		"kind":             {EventID: "event_1", State: Sent, Kind: "Magic"},
		"once key":         {EventID: "event_1", State: Sending, Kind: "welcome", OnceKey: "user_1"},
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t, filepath.Join(t.TempDir(), "state.db"))
			if err := s.Save(d, "", t0); err == nil || !strings.Contains(err.Error(), "delivery record") {
				t.Errorf("saved: %v", err)
			}
		})
	}
}

// A cursor the next open would refuse is not written either.
func TestSetCursorRefusesWhatIsNotAnEventID(t *testing.T) {
	for _, c := range []string{"", "event 1", "event_\x01", strings.Repeat("e", maxEventIDLen+1)} {
		s := open(t, filepath.Join(t.TempDir(), "state.db"))
		if err := s.SetCursor(c, t0); err == nil || !strings.Contains(err.Error(), "not an event id") {
			t.Errorf("SetCursor(%q): %v", c, err)
		}
	}
}

// The counters, the problem index and the retry queue are derived from the records: damage there
// is repaired by a read-write open, and a read-only open (status while the daemon runs), which
// cannot repair it, counts from the records instead. Bit flips do not go through transactions, so
// the damage keeps the derived buckets' stamp current.
func TestDamagedDerivedDataIsRecomputed(t *testing.T) {
	base := mixedStore(t)
	for _, tc := range []struct {
		name   string
		damage func(tx *bolt.Tx) error
	}{
		{"counter high bit", func(tx *bolt.Tx) error {
			k := countKey("magic_auth", Sent)
			n := binary.BigEndian.Uint64(tx.Bucket(bucketCounts).Get(k))
			return tx.Bucket(bucketCounts).Put(k, binary.BigEndian.AppendUint64(nil, n^1<<40))
		}},
		{"counter low bit", func(tx *bolt.Tx) error {
			k := countKey("invitation", Dead)
			return tx.Bucket(bucketCounts).Put(k, binary.BigEndian.AppendUint64(nil, 0))
		}},
		{"counter key", func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketCounts)
			v := bytes.Clone(b.Get(countKey("magic_auth", Sent)))
			if err := b.Delete(countKey("magic_auth", Sent)); err != nil {
				return err
			}
			return b.Put(countKey("magic_auth", "sant"), v)
		}},
		{"counter truncated", func(tx *bolt.Tx) error { return tx.Bucket(bucketCounts).Put(countKey("welcome", Sent), []byte{1}) }},
		{"problem lost", func(tx *bolt.Tx) error { return tx.Bucket(bucketProblems).Delete([]byte("event_01C")) }},
		{"problem key flipped", func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketProblems)
			if err := b.Delete([]byte("event_01C")); err != nil {
				return err
			}
			return b.Put([]byte("event_01B"), nil)
		}},
		{"retry of a final record", func(tx *bolt.Tx) error { return tx.Bucket(bucketRetry).Put([]byte("event_01A"), nil) }},
		{"retry of no record", func(tx *bolt.Tx) error { return tx.Bucket(bucketRetry).Put([]byte("event_01Q"), nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := copyStore(t, base)
			raw(t, path, func(tx *bolt.Tx) error {
				if err := tc.damage(tx); err != nil {
					return err
				}
				return stampDerived(tx)
			})
			ro, err := Open(path, Options{ReadOnly: true, Kinds: testKinds})
			if err != nil {
				t.Fatal(err)
			}
			checkDerived(t, ro) // RetryQueued, which it does not check, is read as stored
			_ = ro.Close()

			s, err := Open(path, Options{Kinds: testKinds})
			if err != nil {
				t.Fatal(err)
			}
			st := checkDerived(t, s)
			if st.Records != 8 || st.ByKind["magic_auth"][Sent] != 2 || st.RetryQueued != 0 {
				t.Errorf("after the rebuild %+v", st)
			}
			_ = s.Close()
			// Repaired on disk: the next open finds nothing to redo.
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			s2 := &Store{db: db, path: path, kinds: testKinds}
			ok, err := s2.verify()
			_ = db.Close()
			if err != nil || !ok {
				t.Errorf("after the rebuild verify says %v, %v", ok, err)
			}
		})
	}
}

// A store of a newer schema is refused for its schema, not as damage: its records may hold
// fields this build does not know.
func TestNewerSchemaRecordsAreNotJudged(t *testing.T) {
	path := mixedStore(t)
	raw(t, path, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(keySchema, []byte("4")); err != nil {
			return err
		}
		return tx.Bucket(bucketDeliveries).Put([]byte("event_01A"), []byte(`{"kind":"magic_auth","state":"delivered","locale":"de"}`))
	})
	for _, ro := range []bool{false, true} {
		if _, err := Open(path, Options{ReadOnly: ro, Kinds: testKinds}); err == nil || errors.Is(err, ErrDamaged) ||
			!strings.Contains(err.Error(), `schema "4"`) {
			t.Errorf("read-only %v: %v, want a schema error", ro, err)
		}
	}
}

// objectIDShape is the worker's regexp, spelled out.
func TestObjectIDShapeIsTheWorkersRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[a-z][a-z_]*_[0-9A-Za-z]{1,64}$`)
	ids := []string{"", "_", "a_", "a_1", "_a_1", "A_1", "a__1", "a_b_1", "ab_1_", "a_1_2", "a_" + strings.Repeat("Z", 64),
		"a_" + strings.Repeat("Z", 65), "magic_auth_01ABC", "user_01", "event_01/../x", "a_1\n", "é_1", "a-b_1", "1a_1"}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ab_Z09-. é"
	for range 20000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		ids = append(ids, string(b))
	}
	for _, id := range ids {
		if got, want := objectIDShape(id), re.MatchString(id); got != want {
			t.Errorf("objectIDShape(%q) = %v, the regexp says %v", id, got, want)
		}
	}
}

// One decoder reads record after record, and a bad one does not spoil the next.
func TestRecordDecoderReadsOneRecordAfterAnother(t *testing.T) {
	good := mustEncode(t, rec("event_1", "magic_auth", Sent, "magic_auth_1", t0))
	var rd recordDecoder
	for i, tc := range []struct {
		v    []byte
		want string
	}{
		{good, ""},
		{append(bytes.Clone(good), ' '), "data after the record"},
		{good, ""},
		{good[:len(good)-1], "unexpected EOF"},
		{good, ""},
		{[]byte(`{"kind":"magic_auth","state":"sent","x":1}`), `unknown field "x"`},
		{[]byte(` {"state":"sent"}`), ""},
		{[]byte(`{"state":"sent"}{"state":"sent"}`), "data after the record"},
		{good, ""},
	} {
		d, err := rd.delivery([]byte("event_1"), tc.v, rulesNow(nil))
		if tc.want == "" && (err != nil || d.State != Sent) || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%d: %+v, %v; want %q", i, d, err, tc.want)
		}
	}
}
