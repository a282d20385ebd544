package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/workos/workos-go/v4/pkg/events"
)

// The public examples from the WorkOS docs and OpenAPI spec parse as the worker expects.
func TestWorkOSPublicExamples(t *testing.T) {
	f, err := os.Open("../testdata/workos-examples/events-from-docs.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	handled := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev events.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("SDK cannot decode %s: %v", sc.Text(), err)
		}
		if _, ok := EventKinds[ev.Event]; !ok {
			continue
		}
		handled++
		ref, err := parseEventData(ev.Data)
		kind := EventKinds[ev.Event]
		if err != nil || ref.Email == "" || objectOf(kind, ev.Event, ref) == "" {
			t.Errorf("%s: %+v %v", ev.Event, ref, err)
		}
		for _, secret := range []string{`"code"`, `"token"`, `"password_reset_token"`} {
			if strings.Contains(string(ev.Data), secret) {
				t.Errorf("%s: event carries %s; the docs say events have no secrets", ev.Event, secret)
			}
		}
	}
	// The four core kinds, the two welcome triggers and password_reset.succeeded.
	if handled != 7 {
		t.Errorf("handled %d example events, want 7", handled)
	}

	// Serve each Get example as WorkOS would and resolve it through the real SDK.
	raw, err := os.ReadFile("../testdata/workos-examples/get-responses-from-spec.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	objects := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var o struct{ Object, ID string }
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			t.Fatal(err)
		}
		objects[o.ID] = line
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(objects[id]))
	}))
	defer srv.Close()
	c := NewWorkOSClient("sk_test", srv.URL, time.Second)
	for id := range objects {
		kind := id[:strings.LastIndexByte(id, '_')]
		r, err := c.Resolve(context.Background(), kind, id)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if r.Email == "" || r.ExpiresAt.IsZero() || r.Code == "" && r.Token == "" {
			t.Errorf("%s: incomplete %+v", kind, r)
		}
		if (kind == "invitation" || kind == "password_reset") && !strings.HasPrefix(r.Link, "https://") {
			t.Errorf("%s: no link", kind)
		}
		if strings.Contains(r.String(), "123456") || strings.Contains(r.String(), "Z1uX3") {
			t.Errorf("String() leaks a secret: %s", r)
		}
	}
}

func FuzzParseEventData(f *testing.F) {
	for _, s := range []string{
		`{"id":"magic_auth_01HWWSVXCRMA5481VK9601SKQX","email":"todd@example.com"}`,
		`{"id":"../../users/user_1","email":"x"}`,
		`{"id":"invitation_1?x=y"}`, `[]`, `null`, `{"id":1}`, `{"id":"a_b","email":"\r\n"}`,
		`{"user_id":"user_01/../x","status":"succeeded"}`, `{"type":"email_verification","user_id":"user_01E4ZCR3C5A4QZ2Z2JQXGKZJ9E"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ref, err := parseEventData(data)
		if err != nil {
			return
		}
		for _, id := range []string{ref.ID, ref.UserID} {
			if id != "" && (strings.ContainsAny(id, "/?#%.\\ \r\n") || !validObjectID.MatchString(id)) {
				t.Fatalf("accepted id %q", id)
			}
		}
		for typ, kind := range EventKinds {
			if id := objectOf(kind, typ, ref); id != "" && !validObjectID.MatchString(id) {
				t.Fatalf("%s: object %q", typ, id)
			}
			_ = orderKeys(&Event{ID: "event_1", Type: typ, Data: data})
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"5", 5 * time.Second},
		{" 0 ", 0},
		{"-3", 0},
		{"abc", 0},
		{"999999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestBackoffGrowsIsCappedAndHonoursHint(t *testing.T) {
	w := New(Options{RetryBase: time.Second, RetryMax: time.Minute}, nil, nil, nil, nil, nil)
	for attempt, max := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 10: time.Minute, 100: time.Minute} {
		for i := 0; i < 50; i++ {
			d := w.backoff(attempt, 0)
			if d < max/2 || d > max {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", attempt, d, max/2, max)
			}
		}
	}
	if d := w.backoff(1, 30*time.Second); d != 30*time.Second {
		t.Errorf("Retry-After not honoured: %v", d)
	}
}
