package admin

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// Store is what the status and dead documents read; *store.Store has it.
type Store interface {
	Stats() (store.Stats, error)
	FeedbackStats(now time.Time, recent int) (day, last store.FeedbackCounts, err error)
	Problems() ([]store.Delivery, error)
	Path() string
}

// leaseReader is a store whose lease can be read (the PostgreSQL store); the bbolt store has
// none.
type leaseReader interface {
	Lease() (store.Lease, error)
}

// What `status` and `dead list` show, and the /status and /dead documents the daemon's admin
// listener serves: the CLI prints the same document whether it came from the daemon or, when
// no daemon answers, from the store file itself (then without the live fields).

// Live is what only the running daemon knows. The admin server provides it to
// StatusHandler.
type Live struct {
	// Role is leader, standby or none (worker.Role); "": leader.
	Role string
	// LastPoll is when the last ListEvents call succeeded; zero: none yet.
	LastPoll time.Time
	// SESPaused: SES refused to send for the whole account on the last try; PauseReason says
	// why ("AWS credentials cannot be resolved", "SES refuses to send for the account (...)").
	SESPaused   bool
	PauseReason string
	// KeyRejected: WorkOS refused the API key on its last answer about it.
	KeyRejected bool
	// SESQuota is the account's sending quota from SES GetAccount; nil when unknown (other
	// mailer drivers, or not read yet).
	SESQuota *SESQuota
	// SendLimit is the SES send limiter's state; nil for other mailer drivers.
	SendLimit *sendlimit.Status
	// Budget is the WorkOS request budget's state; nil when unknown.
	Budget *workosapi.BudgetStatus
	// Backlog is how far the event stream is behind, and the live reader.
	Backlog worker.Backlog
	// Reload is the last reload of the configuration; nil: none since the start.
	Reload *Reload
	// FeedbackQueue is the SES feedback reader's state; nil when it is off.
	FeedbackQueue *FeedbackQueue
}

// FeedbackQueue is the SES feedback reader's state (mailer.ses.feedback_queue_url).
type FeedbackQueue struct {
	OK bool `json:"ok"`
	// Error says why the last receive failed; LastOKAt is the last good one.
	Error    string     `json:"error,omitempty"`
	LastOKAt *time.Time `json:"last_ok_at"`
}

// Reload is how the last reload of the configuration (SIGHUP) went.
type Reload struct {
	At time.Time `json:"at"`
	// OK false: it was refused, Error says why, and the configuration of before stays in force.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// RestartNeeded names the changed sections that take effect only at a restart.
	RestartNeeded []string `json:"restart_needed,omitempty"`
}

// SESQuota mirrors SES GetAccount's SendQuota.
type SESQuota struct {
	MaxSendRate     float64 `json:"max_send_rate"`
	Max24HourSend   float64 `json:"max_24_hour_send"`
	SentLast24Hours float64 `json:"sent_last_24_hours"`
	// Sandbox: the account has no production access; only verified recipients receive mail.
	Sandbox bool `json:"sandbox"`
}

// Sources of a document.
const (
	SourceDaemon = "daemon"
	SourceStore  = "store"
)

// Status is the JSON of `status --json` and GET /status. Every key is always present; a value
// that is not known is null. Times are RFC 3339 in UTC; ages are seconds at generated_at.
type Status struct {
	// Source is "daemon" (served by the running daemon) or "store" (read from the file).
	Source      string    `json:"source"`
	GeneratedAt time.Time `json:"generated_at"`
	StorePath   string    `json:"store_path"`
	Cursor      Cursor    `json:"cursor"`
	// Records is the number of delivery records; States counts them per state and Kinds per
	// kind and state (records of unhandled event types under kind ""). Every state key is
	// present, zero or not.
	Records     int                       `json:"records"`
	States      map[string]int            `json:"states"`
	Kinds       map[string]map[string]int `json:"kinds"`
	Dead        int                       `json:"dead"`
	Ambiguous   int                       `json:"ambiguous"`
	RetryQueued int                       `json:"retry_queued"`
	// Feedback is what SES reported about the emails sent in the last 24 hours and the last
	// 10,000 (mailer.ses.feedback_queue_url), with the rates SES judges the account by.
	Feedback FeedbackDoc `json:"feedback"`
	// Lease, with a store several daemons share (PostgreSQL), is who leads: the same from
	// every host. Null with the bbolt store.
	Lease *store.Lease `json:"lease"`
	// Live is null when read from the store.
	Live *LiveStatus `json:"live"`
}

type Cursor struct {
	// EventID is the event polling resumes after; "" when there is none.
	EventID    string     `json:"event_id"`
	SetAt      *time.Time `json:"set_at"`
	AgeSeconds *float64   `json:"age_seconds"`
	// Since is where polling starts while there is no cursor; null means the oldest event.
	Since *time.Time `json:"since"`
	// Initialized is false until the daemon first ran (workos.start then decides).
	Initialized bool `json:"initialized"`
}

type LiveStatus struct {
	// Role is this instance's: leader, standby or none (the store cannot be reached); with
	// the bbolt store always leader.
	Role               string     `json:"role"`
	LastPollAt         *time.Time `json:"last_poll_at"`
	LastPollAgeSeconds *float64   `json:"last_poll_age_seconds"`
	SESPaused          bool       `json:"ses_paused"`
	// SESPauseReason says why sending is paused; null when it is not.
	SESPauseReason *string `json:"ses_pause_reason"`
	// WorkOSKeyRejected: WorkOS refused the API key on its last answer about it.
	WorkOSKeyRejected bool      `json:"workos_key_rejected"`
	SESQuota          *SESQuota `json:"ses_quota"`
	// SESQuotaExhausted: the 24-hour quota is used up; events wait pending until it frees up.
	SESQuotaExhausted bool `json:"ses_quota_exhausted"`
	// SESSentSinceQuotaRead counts emails sent since ses_quota was read; null without SES.
	SESSentSinceQuotaRead *uint64 `json:"ses_sent_since_quota_read"`
	// SESRateLimit is the pace of SES sends; null without SES.
	SESRateLimit *RateLimit `json:"ses_rate_limit"`
	// WorkOSBudget is the budget every WorkOS call shares (workos.max_requests_per_second).
	WorkOSBudget *Budget `json:"workos_budget"`
	Backlog      Backlog `json:"backlog"`
	// ConfigReload is the last reload (SIGHUP) since the start; null: none.
	ConfigReload *Reload `json:"config_reload"`
	// SESFeedbackQueue is the SES feedback reader's state; null when it is off.
	SESFeedbackQueue *FeedbackQueue `json:"ses_feedback_queue"`
}

// FeedbackDoc is SES's feedback over the two windows SES judges an account's rates by.
type FeedbackDoc struct {
	Last24Hours FeedbackWindow `json:"last_24_hours"`
	Last10000   FeedbackWindow `json:"last_10000_sends"`
	// Warnings name a rate nearing what makes SES review the account (bounces 5%, complaints
	// 0.1%); they come at half of it.
	Warnings []string `json:"warnings"`
}

// FeedbackWindow counts one window's emails and what SES said of them.
type FeedbackWindow struct {
	store.FeedbackCounts
	// BounceRate is permanent bounces over sent; ComplaintRate complaints over sent; null with
	// nothing sent.
	BounceRate    *float64 `json:"bounce_rate"`
	ComplaintRate *float64 `json:"complaint_rate"`
}

// Where SES reviews an account, and where status warns: at half of that.
const (
	sesBounceReview    = 0.05
	sesComplaintReview = 0.001
	feedbackRecent     = 10_000
)

func feedbackWindow(c store.FeedbackCounts) FeedbackWindow {
	w := FeedbackWindow{FeedbackCounts: c}
	if c.Sent > 0 {
		b, k := float64(c.Bounced)/float64(c.Sent), float64(c.Complained)/float64(c.Sent)
		w.BounceRate, w.ComplaintRate = &b, &k
	}
	return w
}

func buildFeedback(st Store, now time.Time) (FeedbackDoc, error) {
	day, last, err := st.FeedbackStats(now, feedbackRecent)
	if err != nil {
		return FeedbackDoc{}, err
	}
	doc := FeedbackDoc{Last24Hours: feedbackWindow(day), Last10000: feedbackWindow(last), Warnings: []string{}}
	for _, w := range []struct {
		name string
		win  FeedbackWindow
	}{{"the last 24 hours", doc.Last24Hours}, {"the last 10,000 sends", doc.Last10000}} {
		if r := w.win.BounceRate; r != nil && *r >= sesBounceReview/2 {
			doc.Warnings = append(doc.Warnings, fmt.Sprintf("bounce rate %.2f%% over %s: SES reviews the account at 5%% and may "+
				"pause sending at 10%%; find the bounced addresses (trace) and stop sending to them", *r*100, w.name))
		}
		if r := w.win.ComplaintRate; r != nil && *r >= sesComplaintReview/2 {
			doc.Warnings = append(doc.Warnings, fmt.Sprintf("complaint rate %.3f%% over %s: SES reviews the account at 0.1%% and "+
				"may pause sending at 0.5%%", *r*100, w.name))
		}
	}
	return doc, nil
}

// Backlog is how far the main reader is behind, and the live reader.
type Backlog struct {
	// BehindSeconds is the age of the newest event on the main reader's last full page; 0 once
	// it has caught up. CatchUpSeconds estimates when it catches up; null when unknown.
	BehindSeconds  float64  `json:"behind_seconds"`
	CatchUpSeconds *float64 `json:"catch_up_seconds"`
	// LiveReader: new events go out through a live reader meanwhile, those since LiveSince.
	LiveReader bool       `json:"live_reader"`
	LiveSince  *time.Time `json:"live_since"`
	// LiveLagSeconds is the age of the newest event the live reader listed.
	LiveLagSeconds float64 `json:"live_lag_seconds"`
}

// Budget is the WorkOS request budget.
type Budget struct {
	// PerSecond is the rate allowed now: MaxPerSecond, or less for a while after 429s.
	PerSecond    float64 `json:"per_second"`
	MaxPerSecond float64 `json:"max_per_second"`
	// Lowered: WorkOS answered 429 and the rate has not climbed back in full yet.
	Lowered bool `json:"lowered"`
	// PausedUntil, while every WorkOS call waits out a 429 or a run of failed answers; else null.
	PausedUntil *time.Time `json:"paused_until"`
	// Throttled counts the 429s since the start; PausedSeconds the time every call was held.
	Throttled     int64   `json:"throttled"`
	PausedSeconds float64 `json:"paused_seconds"`
}

// RateLimit is the pace of SES sends.
type RateLimit struct {
	// PerSecond is the pace now: TargetPerSecond, or less after SES throttled.
	PerSecond       float64 `json:"per_second"`
	TargetPerSecond float64 `json:"target_per_second"`
	// Source of the target: "config" (mailer.ses.max_send_rate), "account" (GetAccount
	// MaxSendRate) or "initial" (no reading yet).
	Source    string `json:"source"`
	Throttled bool   `json:"throttled"`
}

// Dead is the JSON of `dead list --json` and GET /dead.
type Dead struct {
	Source      string         `json:"source"`
	GeneratedAt time.Time      `json:"generated_at"`
	StorePath   string         `json:"store_path"`
	Count       int            `json:"count"`
	Deliveries  []DeadDelivery `json:"deliveries"`
}

type DeadDelivery struct {
	EventID string `json:"event_id"`
	Kind    string `json:"kind"`
	// State is "dead" or "ambiguous".
	State          string    `json:"state"`
	Reason         string    `json:"reason"`
	Attempts       int       `json:"attempts"`
	UpdatedAt      time.Time `json:"updated_at"`
	EventCreatedAt time.Time `json:"event_created_at"`
	// ObjectID is the WorkOS object the event named; Retryable is false without one (records
	// written before object ids were kept), since `dead retry` must fetch it again.
	ObjectID  string `json:"object_id"`
	Retryable bool   `json:"retryable"`
}

var AllStates = []store.State{store.Pending, store.Sending, store.Sent, store.Skipped, store.Dead, store.Ambiguous}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func agePtr(t, now time.Time) *float64 {
	if t.IsZero() {
		return nil
	}
	age := now.Sub(t).Seconds()
	return &age
}

// BuildStatus reads the store; live is nil when the daemon is not the one asking.
func BuildStatus(st Store, enabled []string, now time.Time, source string, live *Live) (Status, error) {
	s, err := st.Stats()
	if err != nil {
		return Status{}, err
	}
	doc := Status{
		Source: source, GeneratedAt: now.UTC(), StorePath: absPath(st.Path()),
		Cursor: Cursor{EventID: s.Cursor, SetAt: timePtr(s.CursorSetAt), AgeSeconds: agePtr(s.CursorSetAt, now),
			Since: timePtr(s.Since), Initialized: s.Initialized},
		Records: s.Records, States: map[string]int{}, Kinds: map[string]map[string]int{},
		Dead: s.ByState[store.Dead], Ambiguous: s.ByState[store.Ambiguous], RetryQueued: s.RetryQueued,
	}
	if doc.Feedback, err = buildFeedback(st, now); err != nil {
		return Status{}, err
	}
	if lr, ok := st.(leaseReader); ok {
		l, err := lr.Lease()
		if err != nil {
			return Status{}, err
		}
		doc.Lease = &l
	}
	for _, state := range AllStates {
		doc.States[string(state)] = 0
	}
	for state, n := range s.ByState {
		doc.States[string(state)] = n
	}
	// Every enabled kind, with or without records, and every kind that has records.
	shown := slices.Collect(maps.Keys(s.ByKind))
	for _, k := range enabled {
		if !slices.Contains(shown, k) {
			shown = append(shown, k)
		}
	}
	for _, kind := range shown {
		m := map[string]int{}
		for _, state := range AllStates {
			m[string(state)] = 0
		}
		for state, n := range s.ByKind[kind] {
			m[string(state)] = n
		}
		doc.Kinds[kind] = m
	}
	if live != nil {
		doc.Live = &LiveStatus{Role: cmp.Or(live.Role, RoleLeader), LastPollAt: timePtr(live.LastPoll), LastPollAgeSeconds: agePtr(live.LastPoll, now),
			SESPaused: live.SESPaused, WorkOSKeyRejected: live.KeyRejected, SESQuota: live.SESQuota}
		if live.SESPaused && live.PauseReason != "" {
			doc.Live.SESPauseReason = &live.PauseReason
		}
		if l := live.SendLimit; l != nil {
			doc.Live.SESQuotaExhausted = l.QuotaExhausted
			doc.Live.SESSentSinceQuotaRead = &l.SentSinceQuotaRead
			doc.Live.SESRateLimit = &RateLimit{PerSecond: l.Rate, TargetPerSecond: l.TargetRate, Source: l.RateSource,
				Throttled: l.Throttled}
		}
		doc.Live.ConfigReload, doc.Live.SESFeedbackQueue = live.Reload, live.FeedbackQueue
		bl := live.Backlog
		doc.Live.Backlog = Backlog{BehindSeconds: bl.Behind.Seconds(), LiveReader: bl.LiveRunning,
			LiveSince: timePtr(bl.LiveSince), LiveLagSeconds: bl.LiveLag.Seconds()}
		if bl.CatchUp > 0 {
			s := bl.CatchUp.Seconds()
			doc.Live.Backlog.CatchUpSeconds = &s
		}
		if b := live.Budget; b != nil {
			doc.Live.WorkOSBudget = &Budget{PerSecond: b.Rate, MaxPerSecond: b.Max, Lowered: b.Limited,
				PausedUntil: timePtr(b.PausedUntil), Throttled: b.Throttled, PausedSeconds: b.Paused.Seconds()}
		}
	}
	return doc, nil
}

func BuildDead(st Store, now time.Time, source string) (Dead, error) {
	recs, err := st.Problems()
	if err != nil {
		return Dead{}, err
	}
	doc := Dead{Source: source, GeneratedAt: now.UTC(), StorePath: absPath(st.Path()), Count: len(recs), Deliveries: []DeadDelivery{}}
	for _, d := range recs {
		doc.Deliveries = append(doc.Deliveries, DeadDelivery{EventID: d.EventID, Kind: d.Kind, State: string(d.State),
			Reason: d.Reason, Attempts: d.Attempts, UpdatedAt: d.UpdatedAt.UTC(), EventCreatedAt: d.EventCreatedAt.UTC(),
			ObjectID: d.ObjectID, Retryable: d.ObjectID != ""})
	}
	return doc, nil
}

// StatusHandler serves GET /status: the Status of the running daemon, with the kinds enabled now
// (a reload changes them). live may be nil.
func StatusHandler(st Store, enabled func() []string, live func() Live) http.Handler {
	return jsonHandler(func() (any, error) {
		var l *Live
		if live != nil {
			info := live()
			l = &info
		}
		return BuildStatus(st, enabled(), time.Now(), SourceDaemon, l)
	})
}

// DeadHandler serves GET /dead: the dead and ambiguous deliveries as a Dead.
func DeadHandler(st Store) http.Handler {
	return jsonHandler(func() (any, error) { return BuildDead(st, time.Now(), SourceDaemon) })
}

func jsonHandler(build func() (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		doc, err := build()
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(doc)
	})
}

// absPath names a store the same way whoever asks: the daemon and a CLI run elsewhere.
func absPath(p string) string {
	if strings.Contains(p, "://") {
		return p // a database, not a file
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// Origin says who built the document (SourceDaemon, SourceStore) and about which store.
func (d *Status) Origin() (source, storePath string) { return d.Source, d.StorePath }

// Origin says who built the document (SourceDaemon, SourceStore) and about which store.
func (d *Dead) Origin() (source, storePath string) { return d.Source, d.StorePath }
