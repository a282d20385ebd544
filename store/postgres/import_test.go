package postgres

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/store"
)

// TestImportFromBolt moves a bbolt store with every kind of state into PostgreSQL and reads it
// back through the same interface: nothing that stops a send is left behind.
func TestImportFromBolt(t *testing.T) {
	dsn := newDB(t)
	bolt, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := bolt.InitPosition(now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	hash := bolt.RecipientHash("ada@example.com")
	sent := sample(1, store.Sent)
	sent.MessageID, sent.Recipient, sent.SupersedeKey = "ses-1", hash, "magic_auth:"+strings.Repeat("ab", 16)
	welcome := sample(2, store.Sent)
	welcome.Kind, welcome.OnceKey = "welcome", "welcome:user_01"
	interrupted := sample(3, store.Sending)
	dead := sample(4, store.Dead)
	for _, d := range []store.Delivery{sent, welcome, interrupted, dead} {
		if err := bolt.Save(d, d.EventID, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bolt.RequestRetry(now, dead.EventID); err != nil {
		t.Fatal(err)
	}
	key, fp := []byte("k0123456789abcdef0123456789abcde"), []byte("0123456789abcdef")
	if _, _, err := bolt.AcceptRequest(store.Request{ID: store.RequestIDPrefix + "01", Kind: "magic_link", Sealed: []byte("sealed"),
		AcceptedAt: now, IdempotencyKey: key, Fingerprint: fp}); err != nil {
		t.Fatal(err)
	}
	snap, err := bolt.Snapshot()
	if err != nil {
		t.Fatal(err)
	}

	pg := openStore(t, dsn, Options{})
	n, err := pg.Import(snap)
	if err != nil || n != 5 {
		t.Fatalf("imported %d (%v), want 5 records", n, err)
	}
	if _, err := pg.Import(snap); err == nil || !strings.Contains(err.Error(), "in use already") {
		t.Fatalf("a second import: %v", err)
	}
	pg = openStore(t, dsn, Options{}) // as a daemon would open it next
	wantPos, _ := bolt.Position()
	if p, err := pg.Position(); err != nil || p.Cursor != wantPos.Cursor || !p.Since.Equal(wantPos.Since) || !p.Initialized {
		t.Fatalf("position %+v (%v), want %+v", p, err, wantPos)
	}
	if pg.RecipientHash("ada@example.com") != hash {
		t.Fatal("the address secret did not move: trace would not find earlier emails")
	}
	var all []string
	if err := pg.ForEach(func(d store.Delivery) error {
		b, _, _ := bolt.Delivery(d.EventID)
		if d.State != b.State || d.MessageID != b.MessageID || d.Recipient != b.Recipient || !d.UpdatedAt.Equal(b.UpdatedAt) {
			t.Errorf("%s: %+v, bolt had %+v", d.EventID, d, b)
		}
		all = append(all, d.EventID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 {
		t.Fatalf("records %v", all)
	}
	if h, _ := pg.OnceHolder("welcome:user_01"); h != welcome.EventID {
		t.Fatalf("once key holder %q", h)
	}
	if id, _, ok, _ := pg.LatestSent(sent.SupersedeKey); !ok || id != sent.EventID {
		t.Fatalf("latest %q %v", id, ok)
	}
	if q, _ := pg.RetryQueue(0); !slices.Equal(q, []string{dead.EventID}) {
		t.Fatalf("retry queue %v", q)
	}
	if got, _ := pg.Interrupted(); len(got) != 1 || got[0].EventID != interrupted.EventID {
		t.Fatalf("interrupted %v", got)
	}
	if c, ok, _ := pg.RequestContent(store.RequestIDPrefix + "01"); !ok || string(c) != "sealed" {
		t.Fatalf("request content %q %v", c, ok)
	}
	if id, ok, err := pg.IdempotentRequest(key, fp, now); err != nil || !ok || id != store.RequestIDPrefix+"01" {
		t.Fatalf("idempotency key: %q %v %v", id, ok, err)
	}
	// The first leader after the move settles the interrupted send like after a crash.
	daemon := openStore(t, dsn, Options{Daemon: true})
	term, _, err := daemon.TryAcquire(context.Background())
	if err != nil || term == nil {
		t.Fatalf("acquire after the import: %v", err)
	}
	defer term.Release()
	interrupted.State = store.Ambiguous
	if err := daemon.Save(interrupted, "", now); err != nil {
		t.Fatalf("settling an imported interrupted send: %v", err)
	}
}
