package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// logEntry is one line of the harness's JSON log.
type logEntry struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Raw   string `json:"-"`
}

func (h *harness) logEntries() []logEntry {
	var out []logEntry
	sc := bufio.NewScanner(strings.NewReader(h.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			e.Raw = sc.Text()
			out = append(out, e)
		}
	}
	return out
}

// countLogs counts the lines at level whose message contains msg.
func (h *harness) countLogs(level, msg string) int {
	n := 0
	for _, e := range h.logEntries() {
		if e.Level == level && strings.Contains(e.Msg, msg) {
			n++
		}
	}
	return n
}

// tries records, per event, when each failed try reached the faulty server.
type tries struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func (t *tries) add(event string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.at == nil {
		t.at = map[string][]time.Time{}
	}
	t.at[event] = append(t.at[event], time.Now())
	return len(t.at[event])
}

func (t *tries) fewest(events []string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := -1
	for _, e := range events {
		if c := len(t.at[e]); n < 0 || c < n {
			n = c
		}
	}
	return n
}

// eventOfSend reads a SendEmail request's event_id tag and puts the body back.
func eventOfSend(r *http.Request) (string, bool) {
	if r.Method != http.MethodPost || r.URL.Path != "/v2/email/outbound-emails" {
		return "", false
	}
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	var in struct {
		EmailTags []struct{ Name, Value string }
	}
	if json.Unmarshal(b, &in) != nil {
		return "", false
	}
	for _, tag := range in.EmailTags {
		if tag.Name == "event_id" {
			return tag.Value, true
		}
	}
	return "", false
}

// A sustained outage that no event caused (throttling, gateway errors, a rejected key) costs
// each waiting email a handful of requests: the backoff doubles with every uncharged try, as it
// does with charged ones, and the log says when the outage starts and when it ends instead of
// a line per try.
func TestSustainedOutagesBackOff(t *testing.T) {
	const (
		base     = 20 * time.Millisecond
		maxWait  = 320 * time.Millisecond
		events   = 12
		minTries = 6 // the outage lasts until every event has failed this often
	)
	type outageCase struct {
		name string
		// ses: the outage is SES's (else WorkOS's Get endpoints'), answering status errType.
		ses        bool
		status     int
		errType    string
		name0      string // the dependency's name in the log
		startLevel string
	}
	cases := []outageCase{
		{name: "SES throttling", ses: true, status: 429, errType: "TooManyRequestsException", name0: "the mail provider", startLevel: "warn"},
		{name: "SES 503", ses: true, status: 503, errType: "ServiceUnavailable", name0: "the mail provider", startLevel: "warn"},
		{name: "WorkOS Get 503", status: 503, name0: "WorkOS", startLevel: "warn"},
		{name: "WorkOS Get 429", status: 429, name0: "WorkOS", startLevel: "warn"},
		{name: "WorkOS rejects the API key", status: 401, name0: "WorkOS", startLevel: "error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.opts.RetryBase, h.opts.RetryMax = base, maxWait
			h.opts.MaxAttempts = 1 // an outage charged as an attempt would make the event dead
			var ids []string
			objectEvent := map[string]string{}
			for i := range events {
				ev, obj, _ := h.wos.AddCode("magic_auth", "u"+string(rune('a'+i))+"@example.com", "user_01", time.Now().Add(time.Hour))
				ids = append(ids, ev)
				objectEvent[obj] = ev
			}
			var down atomic.Bool
			down.Store(true)
			var failed tries
			if tc.ses {
				h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
					ev, ok := eventOfSend(r)
					if !ok || !down.Load() {
						return false
					}
					failed.add(ev)
					fakeses.WriteError(w, tc.status, tc.errType, "injected")
					return true
				}
			} else {
				h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
					ev, ok := objectEvent[path.Base(r.URL.Path)]
					if !ok || !down.Load() {
						return false
					}
					failed.add(ev)
					fakeworkos.WriteError(w, tc.status, "", http.StatusText(tc.status))
					return true
				}
			}
			w := h.worker()
			wos := w.workos.(*workosapi.Client)
			h.opts.StopWhenIdle = false
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			eventually(t, "every event to fail a few times", func() bool { return failed.fewest(ids) >= minTries })
			if tc.status == 401 && !wos.KeyRejected() {
				t.Error("KeyRejected false while WorkOS answers 401")
			}
			down.Store(false)
			eventually(t, "every email sent once the outage ends", func() bool {
				for _, id := range ids {
					if d, ok, _ := h.store.Delivery(id); !ok || d.State != store.Sent {
						return false
					}
				}
				return true
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}

			if wos.KeyRejected() {
				t.Error("KeyRejected still true after WorkOS accepted the key")
			}
			for _, id := range ids {
				if d := h.delivery(id); d.Attempts != 1 {
					t.Errorf("%s: %d attempts charged for an outage", id, d.Attempts)
				}
			}
			if n := len(h.ses.Messages()); n != events {
				t.Errorf("%d emails, want %d", n, events)
			}
			// The waits between one event's tries grow as the backoff says: try k+1 comes at
			// least min(base·2^(k-1), max)/2 after try k (jitter halves at most). Only a lower
			// bound: a slow machine makes the gaps longer, never shorter.
			failed.mu.Lock()
			for ev, at := range failed.at {
				for k := 1; k < len(at); k++ {
					least := min(base<<(k-1), maxWait) / 2
					if gap := at[k].Sub(at[k-1]); gap < least {
						t.Errorf("event %s: try %d came %v after try %d, want at least %v", ev, k+1, gap, k, least)
						break
					}
				}
			}
			failed.mu.Unlock()
			// One line when the outage starts, one when it ends; the tries in between at debug.
			if n := h.countLogs(tc.startLevel, tc.name0+" is unavailable"); n != 1 {
				t.Errorf("%d %s lines that %s is unavailable, want 1", n, tc.startLevel, tc.name0)
			}
			if n := h.countLogs("warn", "will retry") + h.countLogs("warn", "unavailable") + h.countLogs("error", "unavailable"); n != 1 {
				t.Errorf("%d warn or error lines about retries, want the 1 that starts the outage", n)
			}
			if n := h.countLogs("info", tc.name0+" answers again"); n != 1 {
				t.Errorf("%d lines that %s answers again, want 1", n, tc.name0)
			}
		})
	}
}

// AWS credentials that cannot be resolved (an instance role, a container endpoint or STS
// failing) pause sending: nothing reaches SES, nothing is charged or held as ambiguous, and
// readiness can say why.
func TestCredentialFailurePausesSending(t *testing.T) {
	h := newHarness(t)
	h.opts.MaxAttempts = 1
	var failing atomic.Bool
	failing.Store(true)
	var calls atomic.Int64
	provider := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		calls.Add(1)
		if failing.Load() {
			return aws.Credentials{}, errors.New("container credentials endpoint answered 500")
		}
		return aws.Credentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "secret", CanExpire: true, Expires: time.Now().Add(time.Hour)}, nil
	})
	var err error
	h.ses2, err = mailer.NewSES(context.Background(), mailer.SESOptions{
		Region: "us-east-1", Endpoint: h.ses.URL(), From: "Acme <no-reply@acme.example>", Timeout: 2 * time.Second, Credentials: provider,
	})
	if err != nil {
		t.Fatal(err)
	}
	ev, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	w := h.worker()
	h.opts.StopWhenIdle = false
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	eventually(t, "sending paused", func() bool { return w.Paused() && calls.Load() >= 3 })
	if r := w.PauseReason(); r != "AWS credentials cannot be resolved" {
		t.Errorf("pause reason %q", r)
	}
	// Between tries the record is pending; during one it is sending, never more.
	if d := h.delivery(ev); d.State.Final() || d.Attempts > 1 {
		t.Errorf("record %s after %d attempts while paused, want pending or sending and uncharged", d.State, d.Attempts)
	}
	if n := h.ses.SendRequests(); n != 0 {
		t.Errorf("%d SES requests without credentials", n)
	}
	failing.Store(false)
	eventually(t, "sent once credentials resolve", func() bool { d, ok, _ := h.store.Delivery(ev); return ok && d.State == store.Sent })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.Paused() || w.PauseReason() != "" {
		t.Errorf("still paused (%q) after a send went through", w.PauseReason())
	}
	if d := h.delivery(ev); d.Attempts != 1 || d.MaybeDuplicate {
		t.Errorf("record %+v", d)
	}
	if n := h.countLogs("error", "sending is paused: AWS credentials cannot be resolved"); n != 1 {
		t.Errorf("%d error lines that sending is paused, want 1", n)
	}
}

// A try that began before an outage ended and fails after it is that outage's straggler: it
// starts no new outage (and no second pair of log lines).
func TestAStragglerStartsNoNewOutage(t *testing.T) {
	o := outage{name: "WorkOS"}
	log := zap.NewNop()
	before := time.Now()
	if !o.failed("503", before) {
		t.Fatal("the first failure did not start the outage")
	}
	o.recovered(log)
	if o.failed("503", before) {
		t.Error("a try begun before the recovery started a new outage")
	}
	if !o.failed("503", time.Now()) {
		t.Error("a try begun after the recovery did not start a new outage")
	}
}
