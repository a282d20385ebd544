// Package metrics exposes the daemon's Prometheus metrics from its own registry. It implements
// worker.Observer. Labels take values from small fixed sets only (kinds, states, reason codes,
// outcomes): never an event id, an address or free text, so neither secrets nor unbounded series
// can reach a scrape.
package metrics

import (
	"context"
	"github.com/workos-emailer/workos-emailer/sesfeedback"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
)

const namespace = "workos_emailer"

// Options describes the build and what to pre-initialise.
type Options struct {
	Version string
	Commit  string
	// Kinds are the enabled kinds: their series start at zero instead of appearing on first use.
	Kinds []string
	// Now is the clock for ages; default time.Now.
	Now func() time.Time
}

// Metrics holds the collectors. Create it with New.
type Metrics struct {
	lastQuota atomic.Pointer[mailer.SendQuota] // for the status command
	reg       *prometheus.Registry
	now       func() time.Time

	eventsPolled prometheus.Counter
	polls        *prometheus.CounterVec
	emails       *prometheus.CounterVec
	sendAttempts *prometheus.CounterVec
	sendDuration *prometheus.HistogramVec
	eventLag     *prometheus.HistogramVec

	cursorMovedAt atomic.Int64 // unix nanoseconds; 0: unknown

	sesMaxSendRate  prometheus.Gauge
	sesMax24Hour    prometheus.Gauge
	sesSent24Hours  prometheus.Gauge
	sesEnabled      prometheus.Gauge
	sesQuotaUpdated prometheus.Gauge
	sesQuotaErrors  prometheus.Counter

	workosRequests *prometheus.CounterVec
	apiRequests    *prometheus.CounterVec

	feedback         *prometheus.CounterVec
	reloads          *prometheus.CounterVec
	reloadSuccessful prometheus.Gauge
	reloadAt         prometheus.Gauge

	leader      prometheus.Gauge
	leaseEpoch  prometheus.Gauge
	leaderTerms *prometheus.CounterVec
}

var _ worker.Observer = (*Metrics)(nil)

// Label values the metrics accept; anything else becomes "other".
var (
	knownKinds  = kinds.Names()
	finalStates = []string{string(store.Sent), string(store.Skipped), string(store.Dead), string(store.Ambiguous)}
)

func oneOf(v string, allowed []string) string {
	if slices.Contains(allowed, v) {
		return v
	}
	if v == "" {
		return "none"
	}
	return "other"
}

// New builds the registry with the daemon's metrics plus the Go runtime and process collectors.
func New(opts Options) *Metrics {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Metrics{reg: prometheus.NewRegistry(), now: opts.Now}
	f := factory{m.reg}

	f.register(prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Build of the running daemon; always 1.",
	}, []string{"version", "commit", "goversion"})).(*prometheus.GaugeVec).
		WithLabelValues(opts.Version, opts.Commit, runtime.Version()).Set(1)

	m.leader = f.register(prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "leader",
		Help: "1 while this instance leads (sends); 0 while it stands by. Always 1 with the bbolt store.",
	})).(prometheus.Gauge)
	m.leaseEpoch = f.register(prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "lease_epoch",
		Help: "Epoch of the PostgreSQL store's lease this instance last held (its fencing token).",
	})).(prometheus.Gauge)
	m.leaderTerms = f.register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "leadership_changes_total",
		Help: "Times this instance began (acquired) or ended (lost) leading with the PostgreSQL store.",
	}, []string{"change"})).(*prometheus.CounterVec)
	m.leader.Set(1) // until a shared store says otherwise (Standby)

	m.eventsPolled = f.register(prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "events_polled_total",
		Help: "Events returned by the WorkOS Events API.",
	})).(prometheus.Counter)
	m.polls = f.register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "polls_total",
		Help: "Calls of the WorkOS Events API by result (ok, error).",
	}, []string{"result"})).(*prometheus.CounterVec)
	m.emails = f.register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "emails_total",
		Help: "Events that reached a final state in this process, by kind, state (sent, skipped, dead, ambiguous) and reason code.",
	}, []string{"kind", "state", "reason"})).(*prometheus.CounterVec)
	m.workosRequests = f.register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "workos_requests_total",
		Help: "WorkOS API requests by endpoint and result (ok, 429, 4xx, 5xx, no_answer).",
	}, []string{"endpoint", "result"})).(*prometheus.CounterVec)
	m.apiRequests = f.register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "api_requests_total",
		Help: "Send API requests by route and HTTP status (202 accepted, 401, 4xx refused, 429 limited, 503).",
	}, []string{"route", "status"})).(*prometheus.CounterVec)
	m.sendAttempts = f.register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "send_attempts_total",
		Help: "SES SendEmail calls by kind and outcome (sent, rejected, failed, unavailable, paused, unknown).",
	}, []string{"kind", "outcome"})).(*prometheus.CounterVec)
	m.sendDuration = f.register(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "send_duration_seconds",
		Help:    "Duration of SES SendEmail calls by outcome.",
		Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"outcome"})).(*prometheus.HistogramVec)
	m.eventLag = f.register(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "event_lag_seconds",
		Help:    "Time from a WorkOS event's creation to its email being accepted by SES, by kind.",
		Buckets: []float64{.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 24 * 3600},
	}, []string{"kind"})).(*prometheus.HistogramVec)
	f.register(optionalGauge(prometheus.NewDesc(namespace+"_cursor_age_seconds",
		"Seconds since the stored event cursor last moved (absent until there is a cursor). It grows while no new events arrive, too.",
		nil, nil), func() (float64, bool) {
		n := m.cursorMovedAt.Load()
		if n == 0 {
			return 0, false
		}
		return m.now().Sub(time.Unix(0, n)).Seconds(), true
	}))

	m.sesMaxSendRate = f.gauge("ses_max_send_rate", "SES account quota: recipients per second (GetAccount MaxSendRate).")
	m.sesMax24Hour = f.gauge("ses_max_24h_send", "SES account quota: recipients per rolling 24 hours (GetAccount Max24HourSend).")
	m.sesSent24Hours = f.gauge("ses_sent_last_24h", "Recipients SES sent to in the last 24 hours, for the whole account (GetAccount SentLast24Hours).")
	m.sesEnabled = f.gauge("ses_sending_enabled", "1 if GetAccount says sending is enabled for the SES account, else 0.")
	m.sesQuotaUpdated = f.gauge("ses_quota_last_success_timestamp_seconds", "When the SES quota was last read successfully (Unix time).")
	m.sesQuotaErrors = f.register(prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "ses_quota_errors_total",
		Help: "Failed reads of the SES quota (GetAccount).",
	})).(prometheus.Counter)

	m.feedback = f.register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "ses_feedback_total",
		Help: "SES feedback recorded on delivery records, by kind and outcome (delivered, bounced, complaint, delayed, rejected).",
	}, []string{"kind", "outcome"})).(*prometheus.CounterVec)
	m.reloads = f.register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "config_reloads_total",
		Help: "Reloads of the configuration (SIGHUP) by result (ok, failed: the running configuration stays).",
	}, []string{"result"})).(*prometheus.CounterVec)
	m.reloadSuccessful = f.gauge("config_last_reload_successful", "1 if the last reload of the configuration (or the start) succeeded, else 0.")
	m.reloadAt = f.gauge("config_last_reload_success_timestamp_seconds", "When the configuration was last loaded successfully, at start or by a reload (Unix time).")
	m.reloadSuccessful.Set(1)
	m.reloadAt.Set(float64(opts.Now().Unix()))
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("failed")

	f.register(collectors.NewGoCollector())
	f.register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	for _, r := range []string{"ok", "error"} {
		m.polls.WithLabelValues(r)
	}
	for _, k := range opts.Kinds {
		k = oneOf(k, knownKinds)
		m.emails.WithLabelValues(k, string(store.Sent), worker.ReasonNone)
		for _, o := range worker.SendOutcomes {
			m.sendAttempts.WithLabelValues(k, o)
		}
	}
	return m
}

type factory struct{ reg *prometheus.Registry }

func (f factory) register(c prometheus.Collector) prometheus.Collector {
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	return f.register(prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})).(prometheus.Gauge)
}

// apiRoutes are the send API's route labels (sendapi.API.Routes); anything else is "other".
var apiRoutes = []string{"/v1/magic_link"}

// APIRequest counts a send API answer (sendapi.Observer).
func (m *Metrics) APIRequest(route string, status int) {
	m.apiRequests.WithLabelValues(oneOf(route, apiRoutes), strconv.Itoa(status)).Inc()
}

// Feedback counts SES feedback recorded for an email of kind (sesfeedback.Observer).
func (m *Metrics) Feedback(kind string, outcome sesfeedback.Outcome) {
	m.feedback.WithLabelValues(oneOf(kind, knownKinds), oneOf(string(outcome), feedbackOutcomes)).Inc()
}

var feedbackOutcomes = []string{string(sesfeedback.Delivered), string(sesfeedback.Bounced), string(sesfeedback.Complaint),
	string(sesfeedback.Delayed), string(sesfeedback.Rejected)}

// Reloaded counts a reload of the configuration; ok false: it was refused and the running one stays.
func (m *Metrics) Reloaded(ok bool) {
	if !ok {
		m.reloads.WithLabelValues("failed").Inc()
		m.reloadSuccessful.Set(0)
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
	m.reloadSuccessful.Set(1)
	m.reloadAt.Set(float64(m.now().Unix()))
}

// Standby marks this instance as one that leads only in terms (the PostgreSQL store).
func (m *Metrics) Standby() {
	m.leader.Set(0)
	m.leaderTerms.WithLabelValues("acquired")
	m.leaderTerms.WithLabelValues("lost")
}

// Leading reports a term's start or end (worker.LeadershipObserver).
func (m *Metrics) Leading(epoch int64, leading bool) {
	m.leaseEpoch.Set(float64(epoch))
	if leading {
		m.leader.Set(1)
		m.leaderTerms.WithLabelValues("acquired").Inc()
		return
	}
	m.leader.Set(0)
	m.leaderTerms.WithLabelValues("lost").Inc()
}

// Registry is the registry the metrics live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// WorkerState is what the metrics read from the running worker at scrape time.
type WorkerState interface {
	Paused() bool
	LastSuccessfulPoll() time.Time
	Backlog() worker.Backlog
}

// WatchWorker adds the gauges read from w at scrape time: sending paused and last successful
// poll.
func (m *Metrics) WatchWorker(w WorkerState) {
	f := factory{m.reg}
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sending_paused",
		Help: "1 while SES refuses to send for the whole account and sending is paused, else 0.",
	}, func() float64 {
		if w.Paused() {
			return 1
		}
		return 0
	}))
	f.register(optionalGauge(prometheus.NewDesc(namespace+"_last_successful_poll_timestamp_seconds",
		"When the WorkOS Events API last answered a poll (Unix time; absent before the first answer).", nil, nil),
		func() (float64, bool) {
			t := w.LastSuccessfulPoll()
			return float64(t.UnixNano()) / 1e9, !t.IsZero()
		}))
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "backlog_seconds",
		Help: "How far the main reader is behind: the age of the newest event on its last full page; 0 once it has caught up.",
	}, func() float64 { return w.Backlog().Behind.Seconds() }))
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "live_reader_running",
		Help: "1 while a live reader delivers new events because the main reader is behind, else 0.",
	}, func() float64 {
		if w.Backlog().LiveRunning {
			return 1
		}
		return 0
	}))
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "live_reader_lag_seconds",
		Help: "Age of the newest event the live reader listed (0 when it is not running or has listed none).",
	}, func() float64 { return w.Backlog().LiveLag.Seconds() }))
}

// Polled implements worker.Observer.
func (m *Metrics) Polled(n int, err error) {
	if err != nil {
		m.polls.WithLabelValues("error").Inc()
		return
	}
	m.polls.WithLabelValues("ok").Inc()
	m.eventsPolled.Add(float64(n))
}

// Finished implements worker.Observer.
func (m *Metrics) Finished(kind, state, reason string) {
	m.emails.WithLabelValues(oneOf(kind, knownKinds), oneOf(state, finalStates), oneOf(reason, worker.Reasons)).Inc()
}

// SendAttempt implements worker.Observer.
func (m *Metrics) SendAttempt(kind, outcome string, d time.Duration) {
	outcome = oneOf(outcome, worker.SendOutcomes)
	m.sendAttempts.WithLabelValues(oneOf(kind, knownKinds), outcome).Inc()
	m.sendDuration.WithLabelValues(outcome).Observe(d.Seconds())
}

// EventLag implements worker.Observer.
func (m *Metrics) EventLag(kind string, d time.Duration) {
	m.eventLag.WithLabelValues(oneOf(kind, knownKinds)).Observe(max(d.Seconds(), 0))
}

// CursorMoved implements worker.Observer.
func (m *Metrics) CursorMoved(at time.Time) {
	if !at.IsZero() {
		m.cursorMovedAt.Store(at.UnixNano())
	}
}

// QuotaSource reads the SES quota; *mailer.SES is one.
type QuotaSource interface {
	Quota(ctx context.Context) (mailer.SendQuota, error)
}

// SetQuota records a quota read.
func (m *Metrics) SetQuota(q mailer.SendQuota) {
	m.lastQuota.Store(&q)
	m.sesMaxSendRate.Set(q.MaxSendRate)
	m.sesMax24Hour.Set(q.Max24HourSend)
	m.sesSent24Hours.Set(q.SentLast24Hours)
	if q.SendingEnabled {
		m.sesEnabled.Set(1)
	} else {
		m.sesEnabled.Set(0)
	}
	m.sesQuotaUpdated.Set(float64(m.now().UnixNano()) / 1e9)
}

// LastQuota is the last SES quota read; false before the first successful read.
func (m *Metrics) LastQuota() (mailer.SendQuota, bool) {
	q := m.lastQuota.Load()
	if q == nil {
		return mailer.SendQuota{}, false
	}
	return *q, true
}

// PollQuota reads the SES quota now and then every interval until ctx ends. A failed read is
// counted and logged; the last values stay.
func (m *Metrics) PollQuota(ctx context.Context, src QuotaSource, every time.Duration, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		q, err := src.Quota(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			m.sesQuotaErrors.Inc()
			log.Warn("reading the SES send quota failed; metrics keep the last values", zap.Error(err))
		default:
			m.SetQuota(q)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// optionalGauge is a gauge computed at scrape time that is left out while fn reports no value,
// so an unknown time does not show as the Unix epoch.
type optionalGaugeCollector struct {
	desc *prometheus.Desc
	fn   func() (float64, bool)
}

func optionalGauge(desc *prometheus.Desc, fn func() (float64, bool)) prometheus.Collector {
	return optionalGaugeCollector{desc, fn}
}

func (c optionalGaugeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c optionalGaugeCollector) Collect(ch chan<- prometheus.Metric) {
	if v, ok := c.fn(); ok {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v)
	}
}
