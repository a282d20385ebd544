package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
)

func TestLimiterMetricsReadTheStatus(t *testing.T) {
	m := New(Options{})
	st := sendlimit.Status{Rate: 7, QuotaExhausted: true, SentSinceQuotaRead: 12, Waited: 1500 * time.Millisecond, Throttles: 3}
	m.WatchLimiter(func() sendlimit.Status { return st })
	want := `
# HELP workos_emailer_ses_quota_exhausted 1 while the SES 24-hour quota is used up and events wait pending, else 0.
# TYPE workos_emailer_ses_quota_exhausted gauge
workos_emailer_ses_quota_exhausted 1
# HELP workos_emailer_ses_rate_wait_seconds_total Time emails waited for a send permit, summed over all emails.
# TYPE workos_emailer_ses_rate_wait_seconds_total counter
workos_emailer_ses_rate_wait_seconds_total 1.5
# HELP workos_emailer_ses_sent_since_quota_read Emails sent since the SES quota was last read, added to its SentLast24Hours.
# TYPE workos_emailer_ses_sent_since_quota_read gauge
workos_emailer_ses_sent_since_quota_read 12
# HELP workos_emailer_ses_throttled_total SES answers that throttled a send (each slows the pace).
# TYPE workos_emailer_ses_throttled_total counter
workos_emailer_ses_throttled_total 3
`
	names := []string{"workos_emailer_ses_quota_exhausted", "workos_emailer_ses_rate_wait_seconds_total",
		"workos_emailer_ses_sent_since_quota_read", "workos_emailer_ses_throttled_total"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	st.QuotaExhausted = false
	if n, err := testutil.GatherAndCount(m.Registry(), "workos_emailer_ses_rate_limit"); err != nil || n != 1 {
		t.Errorf("ses_rate_limit: %d series, %v", n, err)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "workos_emailer_ses_quota_exhausted":
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 0 {
				t.Errorf("quota exhausted %v after it freed up", v)
			}
		case "workos_emailer_ses_rate_limit":
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 7 {
				t.Errorf("rate limit %v, want 7", v)
			}
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
