package workosapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
)

// The public Get examples of WorkOS's OpenAPI spec, served as WorkOS would, read through the
// real SDK.
func TestGetReadsThePublicExamples(t *testing.T) {
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
	c := New("sk_test", srv.URL, time.Second, nil)
	for id := range objects {
		kind := id[:strings.LastIndexByte(id, '_')]
		r, err := c.Get(context.Background(), kind, id)
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

func TestNameCacheExpires(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	c := newNameCache(time.Minute, func() time.Time { return now })
	c.put("org_1", Person{Name: "Globex"})
	if p, ok := c.get("org_1"); !ok || p.Name != "Globex" {
		t.Fatalf("fresh entry: %v %v", p, ok)
	}
	now = now.Add(time.Minute)
	if _, ok := c.get("org_1"); ok {
		t.Error("an entry a TTL old is still served")
	}
	for i := range nameCacheSize + 1 {
		c.put(fmt.Sprint("user_", i), Person{})
	}
	if n := len(c.entries); n > nameCacheSize {
		t.Errorf("%d entries, want at most %d", n, nameCacheSize)
	}
}

// What the SDK lacks, read from the answers themselves: a Radar challenge (no SDK call) and a
// user's locale (dropped by the SDK's User), in the shapes of WorkOS's spec v0.61 examples.
func TestReadsWhatTheSDKLacks(t *testing.T) {
	answers := map[string]string{
		"/user_management/radar_challenges/radar_challenge_01HWZBQZY2M3AMQW166Q22K88F": `{"object":"radar_challenge",` +
			`"id":"radar_challenge_01HWZBQZY2M3AMQW166Q22K88F","type":"email","user_id":"user_01E4ZCR3C56J083X43JQXF3JK5",` +
			`"email":"marcelina.davis@example.com","expires_at":"2026-01-15T12:00:00.000Z","created_at":"2026-01-15T12:00:00.000Z",` +
			`"updated_at":"2026-01-15T12:00:00.000Z","code":"123456"}`,
		"/user_management/users/user_01E4ZCR3C56J083X43JQXF3JK5": `{"object":"user","id":"user_01E4ZCR3C56J083X43JQXF3JK5",` +
			`"first_name":"Marcelina","last_name":"Davis","profile_picture_url":null,"email":"marcelina.davis@example.com",` +
			`"email_verified":true,"external_id":null,"metadata":{"lang":"fr"},"last_sign_in_at":null,"locale":"de-DE",` +
			`"created_at":"2026-01-15T12:00:00.000Z","updated_at":"2026-01-15T12:00:00.000Z"}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := answers[r.URL.Path]
		if !ok || r.Header.Get("Authorization") != "Bearer sk_test" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"message":"not found"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	c := New("sk_test", srv.URL, time.Second, nil)
	ctx := context.Background()

	rc, err := c.Get(ctx, "radar_challenge", "radar_challenge_01HWZBQZY2M3AMQW166Q22K88F")
	if err != nil {
		t.Fatal(err)
	}
	if rc.Code != "123456" || rc.Email != "marcelina.davis@example.com" || rc.UserID != "user_01E4ZCR3C56J083X43JQXF3JK5" ||
		!rc.ExpiresAt.Equal(time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)) || rc.Type != "radar_challenge" {
		t.Errorf("radar challenge: %+v", rc)
	}
	if _, err := c.Get(ctx, "radar_challenge", "radar_challenge_01MISSING"); !isNotFound(err) {
		t.Errorf("a missing challenge: %v, want a 404", err)
	}
	p, err := c.User(ctx, "user_01E4ZCR3C56J083X43JQXF3JK5")
	if err != nil {
		t.Fatal(err)
	}
	if p.Locale != "de-DE" || p.Metadata["lang"] != "fr" || p.Name != "Marcelina Davis" {
		t.Errorf("user: %+v", p)
	}
	u, err := c.Get(ctx, "user", "user_01E4ZCR3C56J083X43JQXF3JK5")
	if err != nil || u.Locale != "de-DE" || !u.EmailVerified || u.FirstName != "Marcelina" {
		t.Errorf("user object: %+v %v", u, err)
	}
}

func isNotFound(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.NotFound()
}

// Callers sharing one name read are not failed by the one that started it stopping: the live
// reader ending must not cost the main reader's email its inviter's name or its language.
func TestASharedReadOutlivesItsFirstCaller(t *testing.T) {
	arrived, release := make(chan struct{}, 4), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"object":"user","id":"user_01SHARED","first_name":"Ada","last_name":"Lovelace","email":"ada@example.com",` +
			`"email_verified":true,"profile_picture_url":null,"external_id":null,"metadata":{},"last_sign_in_at":null,"locale":"de-DE",` +
			`"created_at":"2026-01-15T12:00:00.000Z","updated_at":"2026-01-15T12:00:00.000Z"}`))
	}))
	defer srv.Close()
	c := New("sk_test", srv.URL, 5*time.Second, nil)
	first, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() { _, err := c.User(first, "user_01SHARED"); firstErr <- err }()
	<-arrived // the first caller's read is at WorkOS
	second := make(chan error, 1)
	var got Person
	go func() {
		var err error
		got, err = c.User(context.Background(), "user_01SHARED")
		second <- err
	}()
	cancel()
	if err := <-firstErr; err == nil {
		t.Error("the cancelled caller got an answer, want its cancellation")
	}
	close(release)
	if err := <-second; err != nil || got.Locale != "de-DE" {
		t.Fatalf("the second caller: %+v, %v; want the user", got, err)
	}
	if len(arrived) != 0 {
		t.Errorf("%d more reads, want the one shared", len(arrived))
	}
}

// A Magic Link is a Passwordless Session created through workos-go, in its wire shape, against
// the fake WorkOS; what WorkOS refuses is a definite answer.
func TestCreateMagicLink(t *testing.T) {
	f := fakeworkos.New("sk_test")
	base := f.Start()
	defer f.Close()
	c := New("sk_test", base, time.Second, nil)
	ml, err := c.CreateMagicLink(context.Background(), "ada@example.com", "https://app.example.com/callback", "s1")
	if err != nil {
		t.Fatal(err)
	}
	sessions := f.Sessions()
	if len(sessions) != 1 || ml.ID != sessions[0].ID || ml.Link != sessions[0].Link || ml.Email != "ada@example.com" ||
		sessions[0].RedirectURI != "https://app.example.com/callback" || sessions[0].State != "s1" ||
		ml.ExpiresAt.Sub(time.Now()) < 14*time.Minute {
		t.Errorf("magic link %+v, sessions %+v", ml, sessions)
	}
	var apiErr *APIError
	if _, err := c.CreateMagicLink(context.Background(), "not-an-address", "", ""); !errors.As(err, &apiErr) || apiErr.Status != 422 || apiErr.Retryable() {
		t.Errorf("a refused session: %v, want a 422 that is not retried", err)
	}
	if _, err := New("sk_wrong", base, time.Second, nil).CreateMagicLink(context.Background(), "ada@example.com", "", ""); !errors.As(err, &apiErr) || !apiErr.KeyRejected() {
		t.Errorf("a wrong key: %v, want it rejected", err)
	}
}
