package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// What `status` and `dead list` show, and the /status and /dead documents the daemon's admin
// listener serves: the CLI prints the same document whether it came from the daemon or, when
// no daemon answers, from the store file itself (then without the live fields).

// liveInfo is what only the running daemon knows. The admin server provides it to
// statusHandler.
type liveInfo struct {
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
	SESQuota *sesQuota
	// SendLimit is the SES send limiter's state; nil for other mailer drivers.
	SendLimit *sendlimit.Status
	// Budget is the WorkOS request budget's state; nil when unknown.
	Budget *workosapi.BudgetStatus
	// Backlog is how far the event stream is behind, and the live reader.
	Backlog worker.Backlog
}

// sesQuota mirrors SES GetAccount's SendQuota.
type sesQuota struct {
	MaxSendRate     float64 `json:"max_send_rate"`
	Max24HourSend   float64 `json:"max_24_hour_send"`
	SentLast24Hours float64 `json:"sent_last_24_hours"`
}

// Sources of a document.
const (
	sourceDaemon = "daemon"
	sourceStore  = "store"
)

// statusDoc is the JSON of `status --json` and GET /status. Every key is always present; a value
// that is not known is null. Times are RFC 3339 in UTC; ages are seconds at generated_at.
type statusDoc struct {
	// Source is "daemon" (served by the running daemon) or "store" (read from the file).
	Source      string    `json:"source"`
	GeneratedAt time.Time `json:"generated_at"`
	StorePath   string    `json:"store_path"`
	Cursor      cursorDoc `json:"cursor"`
	// Records is the number of delivery records; States counts them per state and Kinds per
	// kind and state (records of unhandled event types under kind ""). Every state key is
	// present, zero or not.
	Records     int                       `json:"records"`
	States      map[string]int            `json:"states"`
	Kinds       map[string]map[string]int `json:"kinds"`
	Dead        int                       `json:"dead"`
	Ambiguous   int                       `json:"ambiguous"`
	RetryQueued int                       `json:"retry_queued"`
	// Live is null when read from the store.
	Live *liveDoc `json:"live"`
}

type cursorDoc struct {
	// EventID is the event polling resumes after; "" when there is none.
	EventID    string     `json:"event_id"`
	SetAt      *time.Time `json:"set_at"`
	AgeSeconds *float64   `json:"age_seconds"`
	// Since is where polling starts while there is no cursor; null means the oldest event.
	Since *time.Time `json:"since"`
	// Initialized is false until the daemon first ran (workos.start then decides).
	Initialized bool `json:"initialized"`
}

type liveDoc struct {
	LastPollAt         *time.Time `json:"last_poll_at"`
	LastPollAgeSeconds *float64   `json:"last_poll_age_seconds"`
	SESPaused          bool       `json:"ses_paused"`
	// SESPauseReason says why sending is paused; null when it is not.
	SESPauseReason *string `json:"ses_pause_reason"`
	// WorkOSKeyRejected: WorkOS refused the API key on its last answer about it.
	WorkOSKeyRejected bool      `json:"workos_key_rejected"`
	SESQuota          *sesQuota `json:"ses_quota"`
	// SESQuotaExhausted: the 24-hour quota is used up; events wait pending until it frees up.
	SESQuotaExhausted bool `json:"ses_quota_exhausted"`
	// SESSentSinceQuotaRead counts emails sent since ses_quota was read; null without SES.
	SESSentSinceQuotaRead *uint64 `json:"ses_sent_since_quota_read"`
	// SESRateLimit is the pace of SES sends; null without SES.
	SESRateLimit *rateLimitDoc `json:"ses_rate_limit"`
	// WorkOSBudget is the budget every WorkOS call shares (workos.max_requests_per_second).
	WorkOSBudget *budgetDoc `json:"workos_budget"`
	Backlog      backlogDoc `json:"backlog"`
}

// backlogDoc is how far the main reader is behind, and the live reader.
type backlogDoc struct {
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

// budgetDoc is the WorkOS request budget.
type budgetDoc struct {
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

// rateLimitDoc is the pace of SES sends.
type rateLimitDoc struct {
	// PerSecond is the pace now: TargetPerSecond, or less after SES throttled.
	PerSecond       float64 `json:"per_second"`
	TargetPerSecond float64 `json:"target_per_second"`
	// Source of the target: "config" (mailer.ses.max_send_rate), "account" (GetAccount
	// MaxSendRate) or "initial" (no reading yet).
	Source    string `json:"source"`
	Throttled bool   `json:"throttled"`
}

// deadDoc is the JSON of `dead list --json` and GET /dead.
type deadDoc struct {
	Source      string      `json:"source"`
	GeneratedAt time.Time   `json:"generated_at"`
	Count       int         `json:"count"`
	Deliveries  []deadEntry `json:"deliveries"`
}

type deadEntry struct {
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

var allStates = []store.State{store.Pending, store.Sending, store.Sent, store.Skipped, store.Dead, store.Ambiguous}

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

// buildStatus reads the store; live is nil when the daemon is not the one asking.
func buildStatus(st *store.Store, enabled []string, now time.Time, source string, live *liveInfo) (statusDoc, error) {
	s, err := st.Stats()
	if err != nil {
		return statusDoc{}, err
	}
	doc := statusDoc{
		Source: source, GeneratedAt: now.UTC(), StorePath: st.Path(),
		Cursor: cursorDoc{EventID: s.Cursor, SetAt: timePtr(s.CursorSetAt), AgeSeconds: agePtr(s.CursorSetAt, now),
			Since: timePtr(s.Since), Initialized: s.Initialized},
		Records: s.Records, States: map[string]int{}, Kinds: map[string]map[string]int{},
		Dead: s.ByState[store.Dead], Ambiguous: s.ByState[store.Ambiguous], RetryQueued: s.RetryQueued,
	}
	for _, state := range allStates {
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
		for _, state := range allStates {
			m[string(state)] = 0
		}
		for state, n := range s.ByKind[kind] {
			m[string(state)] = n
		}
		doc.Kinds[kind] = m
	}
	if live != nil {
		doc.Live = &liveDoc{LastPollAt: timePtr(live.LastPoll), LastPollAgeSeconds: agePtr(live.LastPoll, now),
			SESPaused: live.SESPaused, WorkOSKeyRejected: live.KeyRejected, SESQuota: live.SESQuota}
		if live.SESPaused && live.PauseReason != "" {
			doc.Live.SESPauseReason = &live.PauseReason
		}
		if l := live.SendLimit; l != nil {
			doc.Live.SESQuotaExhausted = l.QuotaExhausted
			doc.Live.SESSentSinceQuotaRead = &l.SentSinceQuotaRead
			doc.Live.SESRateLimit = &rateLimitDoc{PerSecond: l.Rate, TargetPerSecond: l.TargetRate, Source: l.RateSource,
				Throttled: l.Throttled}
		}
		bl := live.Backlog
		doc.Live.Backlog = backlogDoc{BehindSeconds: bl.Behind.Seconds(), LiveReader: bl.LiveRunning,
			LiveSince: timePtr(bl.LiveSince), LiveLagSeconds: bl.LiveLag.Seconds()}
		if bl.CatchUp > 0 {
			s := bl.CatchUp.Seconds()
			doc.Live.Backlog.CatchUpSeconds = &s
		}
		if b := live.Budget; b != nil {
			doc.Live.WorkOSBudget = &budgetDoc{PerSecond: b.Rate, MaxPerSecond: b.Max, Lowered: b.Limited,
				PausedUntil: timePtr(b.PausedUntil), Throttled: b.Throttled, PausedSeconds: b.Paused.Seconds()}
		}
	}
	return doc, nil
}

func buildDead(st *store.Store, now time.Time, source string) (deadDoc, error) {
	recs, err := st.Problems()
	if err != nil {
		return deadDoc{}, err
	}
	doc := deadDoc{Source: source, GeneratedAt: now.UTC(), Count: len(recs), Deliveries: []deadEntry{}}
	for _, d := range recs {
		doc.Deliveries = append(doc.Deliveries, deadEntry{EventID: d.EventID, Kind: d.Kind, State: string(d.State),
			Reason: d.Reason, Attempts: d.Attempts, UpdatedAt: d.UpdatedAt.UTC(), EventCreatedAt: d.EventCreatedAt.UTC(),
			ObjectID: d.ObjectID, Retryable: d.ObjectID != ""})
	}
	return doc, nil
}

// statusHandler serves GET /status: the statusDoc of the running daemon. live may be nil.
func statusHandler(st *store.Store, enabled []string, live func() liveInfo) http.Handler {
	return jsonHandler(func() (any, error) {
		var l *liveInfo
		if live != nil {
			info := live()
			l = &info
		}
		return buildStatus(st, enabled, time.Now(), sourceDaemon, l)
	})
}

// deadHandler serves GET /dead: the dead and ambiguous deliveries as a deadDoc.
func deadHandler(st *store.Store) http.Handler {
	return jsonHandler(func() (any, error) { return buildDead(st, time.Now(), sourceDaemon) })
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

const statusJSONHelp = `
With --json it prints one JSON object (the same the daemon serves at GET /status on admin.listen):
  source           "daemon" or "store" (daemon not reachable: read from the store file)
  generated_at     RFC 3339 time
  store_path       the store file
  cursor           {event_id ("" if none), set_at, age_seconds, since (null: oldest), initialized}
  records          number of delivery records
  states           {pending, sending, sent, skipped, dead, ambiguous: count}, every key present
  kinds            {KIND: {STATE: count}} for every kind with records plus the core kinds
  dead, ambiguous  counts of the deliveries that need an operator (see: dead list)
  retry_queued     deliveries queued by dead retry, not yet settled
  live             null from the store; else {last_poll_at, last_poll_age_seconds,
                   workos_key_rejected (true: WorkOS refuses WORKOS_API_KEY),
                   ses_paused, ses_pause_reason: null or why sending is paused,
                   ses_quota: null or {max_send_rate, max_24_hour_send, sent_last_24_hours},
                   ses_quota_exhausted (true: events wait for the 24-hour quota to free up),
                   ses_sent_since_quota_read: null or a count,
                   ses_rate_limit: null or {per_second, target_per_second,
                   source ("config", "account", "initial"), throttled}}
Unknown values are null; keys are never omitted. New keys may be added.`

func newStatusCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cursor, counts per state and kind, dead and ambiguous counts, last poll",
		Long: "Show the cursor and its age, delivery counts per state and kind, dead and ambiguous counts and, while\n" +
			"the daemon runs, its last successful poll and SES quota. It asks the running daemon at admin.listen\n" +
			"first; when none answers it reads the store file (then the live fields are unknown).\n" + statusJSONHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, note, err := currentStatus(cmd, load)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(stderr, "note:", note, "(last poll and SES state are known only to the running daemon)")
			}
			if asJSON {
				return writeJSON(stdout, doc)
			}
			return printStatus(stdout, doc)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (keys listed above)")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// human formats a time and its age for people.
func human(t *time.Time, at time.Time) string {
	if t == nil {
		return "never"
	}
	age := at.Sub(*t).Round(time.Second)
	if age < 0 {
		return t.Format(time.RFC3339) + " (in the future)"
	}
	return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), age)
}

// startsAt says where polling begins without a cursor.
func startsAt(c cursorDoc) string {
	switch {
	case !c.Initialized:
		return "workos.start (the daemon has not run yet)"
	case c.Since == nil:
		return "the oldest event WorkOS keeps"
	}
	return c.Since.Format(time.RFC3339)
}

func printStatus(w io.Writer, d statusDoc) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	source := "daemon (admin listener)"
	if d.Source == sourceStore {
		source = "store file (daemon not reachable)"
	}
	fmt.Fprintf(tw, "source\t%s\n", source)
	fmt.Fprintf(tw, "store\t%s\n", d.StorePath)
	if d.Cursor.EventID != "" {
		fmt.Fprintf(tw, "cursor\t%s, set %s\n", d.Cursor.EventID, human(d.Cursor.SetAt, d.GeneratedAt))
	} else {
		fmt.Fprintf(tw, "cursor\tnone; polling starts at %s\n", startsAt(d.Cursor))
	}
	if l := d.Live; l != nil {
		fmt.Fprintf(tw, "last poll\t%s\n", human(l.LastPollAt, d.GeneratedAt))
		if l.WorkOSKeyRejected {
			fmt.Fprintf(tw, "WorkOS\tAPI KEY REJECTED: WorkOS answers 401/403; set a valid WORKOS_API_KEY\n")
		}
		if b := l.WorkOSBudget; b != nil {
			fmt.Fprintf(tw, "WorkOS budget\t%s\n", budgetLine(b, d.GeneratedAt))
		}
		fmt.Fprintf(tw, "backlog\t%s\n", backlogLine(l.Backlog))
		ses := "not paused"
		if l.SESPaused {
			reason := "SES refuses to send for the account"
			if l.SESPauseReason != nil {
				reason = *l.SESPauseReason
			}
			ses = "PAUSED: " + reason + " (see the daemon's log)"
		}
		if q := l.SESQuota; q != nil {
			ses += fmt.Sprintf("; quota %g/s, %g per 24h, %g sent in the last 24h", q.MaxSendRate, q.Max24HourSend, q.SentLast24Hours)
		} else {
			ses += "; quota unknown"
		}
		if l.SESSentSinceQuotaRead != nil {
			ses += fmt.Sprintf(" (+%d since)", *l.SESSentSinceQuotaRead)
		}
		if l.SESQuotaExhausted {
			ses += "; 24-HOUR QUOTA USED UP: events wait pending until it frees up"
		}
		fmt.Fprintf(tw, "SES\t%s\n", ses)
		if r := l.SESRateLimit; r != nil {
			pace := fmt.Sprintf("%.3g/s (%s)", r.PerSecond, r.Source)
			if r.Throttled {
				pace = fmt.Sprintf("%.3g/s, slowed down from %.3g/s (%s) after SES throttled", r.PerSecond, r.TargetPerSecond, r.Source)
			}
			fmt.Fprintf(tw, "SES pace\t%s\n", pace)
		}
	} else {
		fmt.Fprintf(tw, "last poll\tunknown (only the running daemon knows)\n")
	}
	fmt.Fprintf(tw, "records\t%d\n", d.Records)
	fmt.Fprintf(tw, "dead\t%d\n", d.Dead)
	fmt.Fprintf(tw, "ambiguous\t%d\n", d.Ambiguous)
	if d.RetryQueued > 0 {
		fmt.Fprintf(tw, "retry queued\t%d\n", d.RetryQueued)
	}
	if d.Dead+d.Ambiguous > 0 {
		fmt.Fprintf(tw, "\t(see: workos-emailer dead list)\n")
	}
	fmt.Fprintln(tw)
	header := []string{"KIND"}
	for _, s := range allStates {
		header = append(header, strings.ToUpper(string(s)))
	}
	fmt.Fprintln(tw, strings.Join(append(header, "TOTAL"), "\t"))
	kinds := slices.Sorted(maps.Keys(d.Kinds))
	row := func(name string, counts map[string]int) {
		cells, total := []string{name}, 0
		for _, s := range allStates {
			cells = append(cells, fmt.Sprint(counts[string(s)]))
			total += counts[string(s)]
		}
		fmt.Fprintln(tw, strings.Join(append(cells, fmt.Sprint(total)), "\t"))
	}
	for _, k := range kinds {
		name := k
		if name == "" {
			name = "(unhandled)"
		}
		row(name, d.Kinds[k])
	}
	row("all", d.States)
	return tw.Flush()
}

// backlogLine says how far behind the event stream is, in a few words.
func backlogLine(b backlogDoc) string {
	if b.BehindSeconds == 0 {
		return "none: the main reader is caught up"
	}
	line := fmt.Sprintf("the main reader is %s behind", (time.Duration(b.BehindSeconds) * time.Second).Round(time.Second))
	if b.CatchUpSeconds != nil {
		line += fmt.Sprintf(", catching up in about %s", (time.Duration(*b.CatchUpSeconds) * time.Second).Round(time.Second))
	}
	if b.LiveReader && b.LiveSince != nil {
		line += fmt.Sprintf("; a live reader sends new events meanwhile (those since %s, %s behind)",
			b.LiveSince.UTC().Format(time.RFC3339), (time.Duration(b.LiveLagSeconds) * time.Second).Round(time.Second))
	}
	return line
}

// budgetLine is the WorkOS request budget in a few words.
func budgetLine(b *budgetDoc, now time.Time) string {
	if b.MaxPerSecond == 0 {
		return "unlimited"
	}
	line := fmt.Sprintf("%.3g requests/s", b.PerSecond)
	if b.Lowered {
		line = fmt.Sprintf("%.3g of %.3g requests/s, lowered after WorkOS answered 429", b.PerSecond, b.MaxPerSecond)
	}
	if b.PausedUntil != nil {
		line += fmt.Sprintf("; PAUSED for %s (429 or failing answers)", b.PausedUntil.Sub(now).Round(100*time.Millisecond))
	}
	if b.Throttled > 0 {
		line += fmt.Sprintf("; %d 429s so far, %.0f s paused in all", b.Throttled, b.PausedSeconds)
	}
	return line
}

func newDeadListCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead and ambiguous deliveries with their reason",
		Long: "List the deliveries that need an operator: dead (failed for good) and ambiguous (SES may or may not\n" +
			"have accepted the email). Like status, it asks the running daemon first, else reads the store file.\n\n" +
			"With --json it prints one JSON object (the same the daemon serves at GET /dead):\n" +
			"  {source: \"daemon\"|\"store\", generated_at, count, deliveries: [{event_id, kind, state (dead|ambiguous),\n" +
			"   reason, attempts, updated_at, event_created_at, object_id, retryable}]}\n" +
			"retryable is false for records without an object id, which dead retry cannot fetch again.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			var doc deadDoc
			note, err := fromDaemonOrStore(cmd.Context(), cfg, "/dead", &doc, func(st *store.Store) error {
				doc, err = buildDead(st, time.Now(), sourceStore)
				return err
			})
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(stderr, "note:", note)
			}
			if asJSON {
				return writeJSON(stdout, doc)
			}
			return printDead(stdout, doc)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (keys listed above)")
	return cmd
}

func printDead(w io.Writer, d deadDoc) error {
	if d.Count == 0 {
		_, err := fmt.Fprintln(w, "no dead or ambiguous deliveries")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT ID\tKIND\tSTATE\tATTEMPTS\tUPDATED\tREASON")
	notRetryable := 0
	for _, e := range d.Deliveries {
		reason := e.Reason
		if !e.Retryable {
			reason = "[cannot be retried: no object id] " + reason
			notRetryable++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.EventID, e.Kind, e.State, e.Attempts,
			e.UpdatedAt.Format(time.RFC3339), oneLine(reason, 160))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d deliveries; to send them again: stop the service, run `workos-emailer dead retry EVENT_ID...` "+
		"(or --all), start it\n", d.Count)
	return err
}

// oneLine keeps table cells on one line and bounded; --json has the full text.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "..."
	}
	return s
}

// currentStatus asks the running daemon for its status document, or builds it from the store
// file when no daemon answers; note then says why the live fields are missing.
func currentStatus(cmd *cobra.Command, load loadFunc) (statusDoc, string, error) {
	cfg, err := load(cmd)
	if err != nil {
		return statusDoc{}, "", err
	}
	var doc statusDoc
	note, err := fromDaemonOrStore(cmd.Context(), cfg, "/status", &doc, func(st *store.Store) error {
		var buildErr error
		doc, buildErr = buildStatus(st, cfg.Events.Enabled, time.Now(), sourceStore, nil)
		return buildErr
	})
	return doc, note, err
}
