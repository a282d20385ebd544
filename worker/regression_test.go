package worker

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// memWorkOS: in-memory WorkOS with magic_auth events; every object valid for a week.
type memWorkOS struct {
	events   []workosapi.Event
	failFor  map[string]bool // object ids whose Get fails (retryable 503)
	mu       sync.Mutex
	resolved map[string]int
}

func (m *memWorkOS) add(evID, objID, email string) {
	data, _ := json.Marshal(map[string]string{"id": objID, "email": email})
	m.events = append(m.events, workosapi.Event{ID: evID, Type: "magic_auth.created", CreatedAt: time.Now(), Data: data})
}

func (m *memWorkOS) ListEvents(ctx context.Context, req workosapi.ListRequest) (workosapi.Page, error) {
	start := 0
	if req.After != "" {
		for i, e := range m.events {
			if e.ID == req.After {
				start = i + 1
			}
		}
	}
	end := min(len(m.events), start+req.Limit)
	return workosapi.Page{Events: append([]workosapi.Event(nil), m.events[start:end]...)}, nil
}

func (m *memWorkOS) Get(ctx context.Context, object, id string) (workosapi.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.resolved == nil {
		m.resolved = map[string]int{}
	}
	m.resolved[id]++
	if m.failFor[id] {
		return workosapi.Object{}, &workosapi.APIError{Status: 503, Err: errors.New("503")}
	}
	for _, e := range m.events {
		var r struct{ ID, Email string }
		_ = json.Unmarshal(e.Data, &r)
		if r.ID == id {
			return workosapi.Object{Type: object, ID: id, Email: r.Email, ExpiresAt: time.Now().Add(7 * 24 * time.Hour), Code: "123456"}, nil
		}
	}
	return workosapi.Object{}, &workosapi.APIError{Status: 404, Err: errors.New("404")}
}
func (m *memWorkOS) OrganizationName(context.Context, string) (string, error) { return "", nil }
func (m *memWorkOS) User(context.Context, string) (workosapi.Person, error) {
	return workosapi.Person{}, nil
}

// scriptSender answers each send with the next scripted error (nil: accepted) and counts sends
// per recipient.
type scriptSender struct {
	mu     sync.Mutex
	script []error
	sent   map[string]int
	onSend func()
}

func (s *scriptSender) Send(ctx context.Context, m mailer.Message) (string, error) {
	s.mu.Lock()
	var err error
	if len(s.script) > 0 {
		err, s.script = s.script[0], s.script[1:]
	}
	if s.sent == nil {
		s.sent = map[string]int{}
	}
	s.sent[m.To]++
	f := s.onSend
	s.mu.Unlock()
	if f != nil {
		f()
	}
	return "msg-1", err
}

type nopRenderer struct{}

func (nopRenderer) Render(mailer.Data) (mailer.Rendered, error) {
	return mailer.Rendered{Subject: "s", HTML: "h", Text: "t"}, nil
}

func openTestStore(t *testing.T, path string) *store.Store {
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A retention shorter than WorkOS keeps events would let the prune at start delete the final
// record of an event the cursor has not passed yet (finished out of order on a page whose earlier
// event was still pending when the process stopped); the page is listed again and that email
// goes out a second time. The worker never prunes younger than MinRetention, whatever it is told.
func TestPruneNeverOutrunsWorkOSRetention(t *testing.T) {
	path := t.TempDir() + "/s.db"
	wos := &memWorkOS{failFor: map[string]bool{"magic_auth_A": true}}
	wos.add("event_01A", "magic_auth_A", "a@example.com") // stuck: WorkOS 503 for its object
	wos.add("event_01B", "magic_auth_B", "b@example.com") // sent
	snd := &scriptSender{}
	opts := Options{PageSize: 100, RetryBase: time.Hour, RetryMax: time.Hour, Retention: 24 * time.Hour}

	// Run 1: B is sent, A waits in backoff; then the process is stopped (or crashes).
	st := openTestStore(t, path)
	w := New(opts, wos, st, snd, nopRenderer{}, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	eventually(t, "B sent", func() bool { d, ok, _ := st.Delivery("event_01B"); return ok && d.State == store.Sent })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = st.Close()

	// Run 2, a day and a bit later (the daemon was down, or restarted after SES was paused).
	wos.failFor = nil
	st = openTestStore(t, path)
	defer st.Close()
	if p, _ := st.Position(); p.Cursor != "" {
		t.Fatalf("cursor %q moved past the pending event", p.Cursor)
	}
	opts.Now = func() time.Time { return time.Now().Add(25 * time.Hour) }
	opts.StopWhenIdle = true
	if err := New(opts, wos, st, snd, nopRenderer{}, zap.NewNop()).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := snd.sent["b@example.com"]; n != 1 {
		t.Errorf("b@example.com got %d emails for one event: its sent record was pruned while the cursor was still before it", n)
	}
}

// on_ambiguous: resend. A send with an unknown outcome is followed by a retry; the pending record
// written for that retry must keep the "maybe sent" fact, so that after a restart during the
// backoff the resend is recorded as a possible second copy.
func TestResendRemembersUnknownOutcomeAcrossRestart(t *testing.T) {
	path := t.TempDir() + "/s.db"
	wos := &memWorkOS{}
	wos.add("event_01A", "magic_auth_A", "a@example.com")
	ctx, cancel := context.WithCancel(context.Background())
	snd := &scriptSender{script: []error{errors.New("connection reset after the request was written")}}
	snd.onSend = func() { cancel() } // SIGTERM arrives during the ambiguous send
	opts := Options{PageSize: 100, RetryBase: time.Hour, RetryMax: time.Hour, OnAmbiguous: OnAmbiguousResend}

	st := openTestStore(t, path)
	if err := New(opts, wos, st, snd, nopRenderer{}, zap.NewNop()).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _, _ := st.Delivery("event_01A"); d.State != store.Pending || !d.MaybeDuplicate {
		t.Errorf("after the stop: record %s maybe_duplicate=%v, want pending and maybe_duplicate", d.State, d.MaybeDuplicate)
	}
	_ = st.Close()

	st = openTestStore(t, path)
	defer st.Close()
	snd.onSend = nil
	opts.StopWhenIdle = true
	if err := New(opts, wos, st, snd, nopRenderer{}, zap.NewNop()).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	d, _, _ := st.Delivery("event_01A")
	if snd.sent["a@example.com"] != 2 {
		t.Fatalf("sends %d", snd.sent["a@example.com"])
	}
	if d.State != store.Sent || !d.MaybeDuplicate {
		t.Errorf("record %s maybe_duplicate=%v after two sends, the first of unknown outcome; want sent + maybe_duplicate", d.State, d.MaybeDuplicate)
	}
}
