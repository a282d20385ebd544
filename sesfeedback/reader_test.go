package sesfeedback

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/workos-emailer/workos-emailer/internal/fakesqs"
)

// memStore records events by message id, failing the first failFirst attempts.
type memStore struct {
	mu        sync.Mutex
	known     map[string]Recorded
	got       map[string][]Event
	failFirst int
}

func (m *memStore) RecordFeedback(ev Event) (Recorded, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failFirst > 0 {
		m.failFirst--
		return Recorded{}, false, errors.New("disk full")
	}
	rec, ok := m.known[ev.MessageID]
	if ok {
		m.got[ev.MessageID] = append(m.got[ev.MessageID], ev)
	}
	return rec, ok, nil
}

func (m *memStore) events(id string) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.got[id]...)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The real SQS client against the fake queue: SES events in both envelopes are recorded, then
// deleted; foreign messages are logged and deleted; a failed record stays in the queue and is
// recorded when it comes back; an SQS outage is retried and shows in Status.
func TestReaderRecordsThenDeletes(t *testing.T) {
	q := fakesqs.New()
	q.Visibility = 200 * time.Millisecond
	url := q.Start()
	defer q.Close()
	st := &memStore{known: map[string]Recorded{sampleID: {EventID: "event_01EXAMPLE", Kind: "magic_auth"}}, got: map[string][]Event{},
		failFirst: 1}
	core, logs := observer.New(zapcore.DebugLevel)
	r, err := New(context.Background(), Options{QueueURL: q.QueueURL(), Region: "us-east-1", Endpoint: url,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""), Store: st, Log: zap.New(core),
		Wait: time.Second, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	q.Fail(6) // the SDK retries each receive twice: two receives fail
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	eventually(t, "the outage in Status", func() bool { ok, why, _ := r.Status(); return !ok && why != "" })
	q.Send(string(read(t, "sns-bounce.json")))
	q.Send(string(read(t, "eventbridge-delivery.json")))
	q.Send(string(read(t, "foreign-s3.json")))
	q.Send(string(read(t, "sns-send.json")))
	eventually(t, "every message handled and deleted", func() bool { left, _ := q.Left(); return left == 0 })
	got := st.events(sampleID)
	// The bounce failed to record once and came back: recorded once, plus the delivery.
	if len(got) != 2 {
		t.Fatalf("recorded %+v, want the bounce and the delivery", got)
	}
	if ok, _, last := r.Status(); !ok || last.IsZero() {
		t.Error("Status does not show the queue answering again")
	}
	if logs.FilterMessageSnippet("not an SES event notification").Len() != 1 {
		t.Error("the foreign message was not logged")
	}
	if e := logs.FilterMessageSnippet("sign-in email bounced for good").All(); len(e) != 1 || e[0].Level != zapcore.WarnLevel ||
		e[0].ContextMap()["event_id"] != "event_01EXAMPLE" {
		t.Errorf("the permanent bounce of a Magic Auth code: %+v", e)
	}
	if logs.FilterMessageSnippet("recording SES feedback failed; the message stays in the queue").Len() != 1 {
		t.Error("the failed record was not logged")
	}
	for _, e := range logs.All() {
		for _, v := range e.ContextMap() {
			if s, ok := v.(string); ok && (contains(s, "recipient@example.com") || contains(s, "SECRET")) {
				t.Errorf("a log line holds an address or a secret: %+v", e)
			}
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
