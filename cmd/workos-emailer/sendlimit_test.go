package main

import (
	"encoding/json"
	"github.com/workos-emailer/workos-emailer/internal/admin"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
	"github.com/workos-emailer/workos-emailer/kinds"
)

// The status document carries the limiter's state: the 24-hour quota stop, what was sent since
// the reading and the pace; null (and false) without a limiter.
func TestStatusShowsTheSendLimiter(t *testing.T) {
	opsSetup(t)
	st := lockStore(t, opsStore(t))
	now := time.Now()
	live := &admin.Live{LastPoll: now, SESQuota: &admin.SESQuota{MaxSendRate: 14, Max24HourSend: 200, SentLast24Hours: 190},
		SendLimit: &sendlimit.Status{Rate: 7, TargetRate: 14, RateSource: sendlimit.SourceAccount, Throttled: true,
			QuotaExhausted: true, SentSinceQuotaRead: 10}}
	doc, err := admin.BuildStatus(st, kinds.Defaults(), now, admin.SourceDaemon, live)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct{ Live map[string]json.RawMessage }
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"ses_quota_exhausted":       "true",
		"ses_sent_since_quota_read": "10",
		"ses_rate_limit":            `{"per_second":7,"target_per_second":14,"source":"account","throttled":true}`,
	} {
		if got := string(raw.Live[k]); got != want {
			t.Errorf("live.%s = %s, want %s", k, got, want)
		}
	}
	var out strings.Builder
	if err := printStatus(&out, doc, "daemon"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"190 sent in the last 24h (+10 since); 24-HOUR QUOTA USED UP",
		"SES pace", "7/s, slowed down from 14/s (account) after SES throttled"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}

	live.SendLimit = nil // the file and log drivers
	doc, err = admin.BuildStatus(st, kinds.Defaults(), now, admin.SourceDaemon, live)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(doc)
	raw.Live = nil
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"ses_quota_exhausted": "false", "ses_sent_since_quota_read": "null", "ses_rate_limit": "null"} {
		if got := string(raw.Live[k]); got != want {
			t.Errorf("without a limiter live.%s = %s, want %s", k, got, want)
		}
	}
	out.Reset()
	_ = printStatus(&out, doc, "daemon")
	if strings.Contains(out.String(), "SES pace") || strings.Contains(out.String(), "QUOTA USED UP") {
		t.Errorf("status without a limiter:\n%s", out.String())
	}
}

// The daemon paces SES sends: one GetAccount reading feeds both the limiter and the quota
// metrics; a configured mailer.ses.max_send_rate wins over the account's rate.
func TestDaemonPacesSESFromOneQuotaReader(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		rate      float64
		source    string
	}{{"account", "", 14, sendlimit.SourceAccount}, {"configured", "40", 40, sendlimit.SourceConfig}} {
		t.Run(tc.name, func(t *testing.T) {
			var reads atomic.Int32
			d := startDaemon(t, func(d *daemonUnderTest) {
				if tc.env != "" {
					t.Setenv("WORKOS_EMAILER_MAILER_SES_MAX_SEND_RATE", tc.env)
				}
				d.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method == http.MethodGet && r.URL.Path == "/v2/email/account" {
						reads.Add(1)
					}
					return false
				}
			})
			d.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
			eventually(t, "the quota read and the email sent", func() bool {
				mfs, _ := d.scrape()
				return value(mfs, "workos_emailer_ses_max_send_rate", nil) == 14 &&
					value(mfs, "workos_emailer_ses_rate_limit", nil) == tc.rate &&
					len(d.ses.Messages()) == 1
			})
			mfs, body := d.scrape()
			for name, want := range map[string]float64{"workos_emailer_ses_quota_exhausted": 0,
				"workos_emailer_ses_throttled_total": 0} {
				if got := value(mfs, name, nil); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			// The email went out after the reading was asked for (1) or before (0, in the reading).
			if v := value(mfs, "workos_emailer_ses_sent_since_quota_read", nil); v != 0 && v != 1 {
				t.Errorf("workos_emailer_ses_sent_since_quota_read = %v", v)
			}
			if value(mfs, "workos_emailer_ses_rate_wait_seconds_total", nil) < 0 {
				t.Error("workos_emailer_ses_rate_wait_seconds_total missing")
			}
			_, status := get(t, d.admin+"/status")
			var doc admin.Status
			if err := json.Unmarshal([]byte(status), &doc); err != nil || doc.Live == nil || doc.Live.SESRateLimit == nil {
				t.Fatalf("status %s (%v)", status, err)
			}
			if r := doc.Live.SESRateLimit; r.PerSecond != tc.rate || r.Source != tc.source || doc.Live.SESQuotaExhausted {
				t.Errorf("status pace %+v, exhausted %v", r, doc.Live.SESQuotaExhausted)
			}
			// One by the sender check at start, one by the one quota reader.
			if n := reads.Load(); n != 2 {
				t.Errorf("%d GetAccount calls, want the start-up check's and one reader reading once", n)
			}
			if strings.Contains(body, "@example.com") {
				t.Error("an address reached the metrics")
			}
			if code := d.stop(); code != exitOK {
				t.Fatalf("exit %d", code)
			}
		})
	}
}
