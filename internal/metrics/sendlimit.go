package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
)

// WatchLimiter adds the metrics of the SES send limiter, read from status at scrape time: the
// pace, the 24-hour quota stop, the time spent waiting for permits and the throttling answers.
func (m *Metrics) WatchLimiter(status func() sendlimit.Status) {
	f := factory{m.reg}
	gauge := func(name, help string, v func(sendlimit.Status) float64) {
		f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help},
			func() float64 { return v(status()) }))
	}
	counter := func(name, help string, v func(sendlimit.Status) float64) {
		f.register(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help},
			func() float64 { return v(status()) }))
	}
	gauge("ses_rate_limit", "Emails per second sends are paced at now: mailer.ses.max_send_rate or the account's MaxSendRate, "+
		"lower for a while after SES throttled.", func(s sendlimit.Status) float64 { return s.Rate })
	gauge("ses_quota_exhausted", "1 while the SES 24-hour quota is used up and events wait pending, else 0.",
		func(s sendlimit.Status) float64 { return boolFloat(s.QuotaExhausted) })
	gauge("ses_sent_since_quota_read", "Emails sent since the SES quota was last read, added to its SentLast24Hours.",
		func(s sendlimit.Status) float64 { return float64(s.SentSinceQuotaRead) })
	counter("ses_rate_wait_seconds_total", "Time emails waited for a send permit, summed over all emails.",
		func(s sendlimit.Status) float64 { return s.Waited.Seconds() })
	counter("ses_throttled_total", "SES answers that throttled a send (each slows the pace).",
		func(s sendlimit.Status) float64 { return float64(s.Throttles) })
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
