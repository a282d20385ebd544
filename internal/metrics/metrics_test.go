package metrics

import (
	"context"
	"errors"
	"github.com/workos-emailer/workos-emailer/sesfeedback"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

type fakeWorker struct {
	paused   atomic.Bool
	lastPoll atomic.Int64
}

func (f *fakeWorker) Paused() bool { return f.paused.Load() }
func (f *fakeWorker) Backlog() worker.Backlog {
	return worker.Backlog{Behind: time.Hour, LiveRunning: true, LiveLag: time.Second}
}
func (f *fakeWorker) LastSuccessfulPoll() time.Time {
	if n := f.lastPoll.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func TestNamesPassPromlint(t *testing.T) {
	m := New(Options{Version: "test", Kinds: kinds.Defaults()})
	m.WatchWorker(&fakeWorker{})
	m.WatchBudget(workosapi.NewBudget(workosapi.BudgetOptions{PerSecond: 50}))
	m.WorkOSRequest("get_magic_auth", "429")
	m.Finished("magic_auth", "skipped", "expired")
	m.SendAttempt("magic_auth", "sent", time.Millisecond)
	m.EventLag("magic_auth", time.Second)
	m.CursorMoved(time.Now())
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// Labels come from fixed sets: anything else, such as an id or an address, becomes "other".
func TestLabelsStayInFixedSets(t *testing.T) {
	m := New(Options{})
	m.Finished("magic_auth", "sent", "a@example.com")
	m.Finished("evt_01ABC", "weird", "none")
	m.Finished("", "skipped", "unhandled_type")
	if got := testutil.ToFloat64(m.emails.WithLabelValues("magic_auth", "sent", "other")); got != 1 {
		t.Errorf("free-text reason counted as %v under other", got)
	}
	if got := testutil.ToFloat64(m.emails.WithLabelValues("other", "other", "none")); got != 1 {
		t.Errorf("unknown kind/state counted as %v under other", got)
	}
	if got := testutil.ToFloat64(m.emails.WithLabelValues("none", "skipped", "unhandled_type")); got != 1 {
		t.Errorf("event without kind counted as %v", got)
	}
	m.WorkOSRequest("get_radar_challenge", "ok")
	m.WorkOSRequest("/user_management/users/user_01X", "418")
	if got := testutil.ToFloat64(m.workosRequests.WithLabelValues("get_radar_challenge", "ok")); got != 1 {
		t.Errorf("a Get of a known object counted as %v", got)
	}
	if got := testutil.ToFloat64(m.workosRequests.WithLabelValues("other", "other")); got != 1 {
		t.Errorf("an unknown endpoint and result counted as %v under other", got)
	}
	m.Feedback("magic_auth", sesfeedback.Bounced)
	m.Feedback("magic_auth", sesfeedback.Bounced)
	m.Feedback("user@example.com", "Open")
	if got := testutil.ToFloat64(m.feedback.WithLabelValues("magic_auth", "bounced")); got != 2 {
		t.Errorf("SES bounces of magic_auth counted as %v", got)
	}
	if got := testutil.ToFloat64(m.feedback.WithLabelValues("other", "other")); got != 1 {
		t.Errorf("an unknown kind and outcome counted as %v under other", got)
	}
}

// The backlog, the live reader and the WorkOS budget are read at scrape time.
func TestBacklogAndBudgetGauges(t *testing.T) {
	m := New(Options{})
	m.WatchWorker(&fakeWorker{})
	b := workosapi.NewBudget(workosapi.BudgetOptions{PerSecond: 40})
	m.WatchBudget(b)
	body := scrape(t, m)
	for _, want := range []string{"workos_emailer_backlog_seconds 3600", "workos_emailer_live_reader_running 1",
		"workos_emailer_live_reader_lag_seconds 1", "workos_emailer_workos_request_budget 40",
		"workos_emailer_workos_request_budget_max 40", "workos_emailer_workos_paused 0", "workos_emailer_workos_paused_seconds_total 0"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

func TestOptionalGaugesAppearOnceKnown(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := New(Options{Now: func() time.Time { return now }})
	w := &fakeWorker{}
	m.WatchWorker(w)
	count := func(name string) int {
		n, err := testutil.GatherAndCount(m.Registry(), name)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if count("workos_emailer_cursor_age_seconds") != 0 || count("workos_emailer_last_successful_poll_timestamp_seconds") != 0 {
		t.Error("unknown times are exposed")
	}
	m.CursorMoved(now.Add(-90 * time.Second))
	w.lastPoll.Store(now.UnixNano())
	w.paused.Store(true)
	want := `
# HELP workos_emailer_cursor_age_seconds Seconds since the stored event cursor last moved (absent until there is a cursor). It grows while no new events arrive, too.
# TYPE workos_emailer_cursor_age_seconds gauge
workos_emailer_cursor_age_seconds 90
# HELP workos_emailer_last_successful_poll_timestamp_seconds When the WorkOS Events API last answered a poll (Unix time; absent before the first answer).
# TYPE workos_emailer_last_successful_poll_timestamp_seconds gauge
workos_emailer_last_successful_poll_timestamp_seconds 1.7e+09
# HELP workos_emailer_sending_paused 1 while SES refuses to send for the whole account and sending is paused, else 0.
# TYPE workos_emailer_sending_paused gauge
workos_emailer_sending_paused 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"workos_emailer_cursor_age_seconds", "workos_emailer_last_successful_poll_timestamp_seconds", "workos_emailer_sending_paused"); err != nil {
		t.Error(err)
	}
}

type quotaFunc func(context.Context) (mailer.SendQuota, error)

func (f quotaFunc) Quota(ctx context.Context) (mailer.SendQuota, error) { return f(ctx) }

// A failed quota read is counted and keeps the last values.
func TestPollQuotaToleratesFailures(t *testing.T) {
	m := New(Options{})
	var calls atomic.Int32
	reads := make(chan struct{}, 10)
	src := quotaFunc(func(context.Context) (mailer.SendQuota, error) {
		defer func() { reads <- struct{}{} }()
		if calls.Add(1) == 1 {
			return mailer.SendQuota{MaxSendRate: 14, Max24HourSend: 50000, SentLast24Hours: 3, SendingEnabled: true}, nil
		}
		return mailer.SendQuota{}, errors.New("GetAccount failed")
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.PollQuota(ctx, src, time.Millisecond, zap.NewNop()); close(done) }()
	// Four reads: the errors of the second and third are counted before the fourth starts (a
	// read signals as it returns, before PollQuota counts its error).
	for range 4 {
		<-reads
	}
	cancel()
	<-done
	if got := testutil.ToFloat64(m.sesMaxSendRate); got != 14 {
		t.Errorf("max send rate %v after failures, want the last good 14", got)
	}
	if got := testutil.ToFloat64(m.sesSent24Hours); got != 3 {
		t.Errorf("sent last 24h %v", got)
	}
	if got := testutil.ToFloat64(m.sesQuotaErrors); got < 2 {
		t.Errorf("%v errors counted, want at least 2", got)
	}
}

func TestLeadershipMetrics(t *testing.T) {
	m := New(Options{})
	if body := scrape(t, m); !strings.Contains(body, "workos_emailer_leader 1\n") {
		t.Error("with the bbolt store the one daemon always leads")
	}
	m.Standby()
	m.Leading(7, true)
	m.Leading(7, false)
	m.Leading(9, true)
	body := scrape(t, m)
	for _, want := range []string{"workos_emailer_leader 1", "workos_emailer_lease_epoch 9",
		`workos_emailer_leadership_changes_total{change="acquired"} 2`, `workos_emailer_leadership_changes_total{change="lost"} 1`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	m.Leading(9, false)
	if body := scrape(t, m); !strings.Contains(body, "workos_emailer_leader 0\n") {
		t.Error("a standby reports itself leading")
	}
}
