package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestReadinessReasons(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	r := &Readiness{
		Store:       func() error { return nil },
		LastPoll:    func() time.Time { return now.Add(-time.Second) },
		PauseReason: func() string { return "" },
		KeyRejected: func() bool { return false },
		KeyName:     "WORKOS_API_KEY, sk_live_...",
		MaxPollAge:  30 * time.Second,
		Now:         func() time.Time { return now },
	}
	if why := r.NotReady(); len(why) != 0 {
		t.Errorf("healthy daemon not ready: %q", why)
	}
	r.Store = func() error { return errors.New("database not open") }
	r.LastPoll = func() time.Time { return now.Add(-45 * time.Second) }
	r.PauseReason = func() string { return "AWS credentials cannot be resolved" }
	r.KeyRejected = func() bool { return true }
	r.Feedback = func() string { return "receiving from the SES feedback queue failed: access denied" }
	r.Stopping()
	got := strings.Join(r.NotReady(), "; ")
	want := "shutting down; store is not readable; last successful poll of WorkOS events 45s ago (limit 30s); " +
		"WorkOS rejects the API key (WORKOS_API_KEY, sk_live_...): set a valid one; sending is paused: AWS credentials cannot be resolved; " +
		"receiving from the SES feedback queue failed: access denied"
	if got != want {
		t.Errorf("reasons\n got %q\nwant %q", got, want)
	}
	r.LastPoll = func() time.Time { return time.Time{} }
	if got := strings.Join(r.NotReady(), "; "); !strings.Contains(got, "no successful poll") {
		t.Errorf("before the first poll: %q", got)
	}
	if ReadyPollAge(time.Second) != 30*time.Second || ReadyPollAge(20*time.Second) != time.Minute {
		t.Error("readyPollAge is not max(3 × poll_interval, 30s)")
	}
}

func TestReadinessNamesTheRole(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	role := RoleLeader
	r := &Readiness{
		Store:       func() error { return nil },
		LastPoll:    func() time.Time { return now.Add(-time.Second) },
		PauseReason: func() string { return "" },
		MaxPollAge:  30 * time.Second,
		Now:         func() time.Time { return now },
		Role:        func() string { return role },
	}
	ask := func(query string) (int, string) {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz"+query, nil))
		return rec.Code, rec.Body.String()
	}
	for _, tc := range []struct {
		role, query string
		code        int
		body        string
	}{
		{RoleLeader, "", 200, "ready: leader\n"},
		{RoleLeader, "?role=leader", 200, "ready: leader\n"},
		// A standby has not polled: it is ready to take over, which is its job.
		{RoleStandby, "", 200, "ready: standby\n"},
		{RoleStandby, "?role=leader", 503, "not ready: standby; this instance is standby, not leader\n"},
		{RoleNone, "", 503, "not ready: none; neither leader nor standby: the store cannot be reached to take the lease\n"},
	} {
		role = tc.role
		if tc.role != RoleLeader {
			r.LastPoll = func() time.Time { return time.Time{} }
		}
		if code, body := ask(tc.query); code != tc.code || body != tc.body {
			t.Errorf("%s%s: %d %q, want %d %q", tc.role, tc.query, code, body, tc.code, tc.body)
		}
	}
}
