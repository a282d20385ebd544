// Package worker is the delivery pipeline: it pages through WorkOS events by a durable cursor,
// fetches the secret parts of each, renders and sends the email, and records the outcome so
// each email goes out once.
package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// Store is the durable state the worker needs.
type Store interface {
	InitPosition(since time.Time) (store.Position, error)
	SetCursor(eventID string, now time.Time) error
	Delivery(eventID string) (store.Delivery, bool, error)
	Save(d store.Delivery, cursor string, now time.Time) error
	// SaveAsync and SetCursorAsync queue a write and return a wait for its commit; queued
	// writes take effect in order, and concurrent ones share a commit (and its fsync).
	SaveAsync(d store.Delivery, cursor string, now time.Time) (wait func() error)
	SetCursorAsync(eventID string, now time.Time) (wait func() error)
	Interrupted() ([]store.Delivery, error)
	// OnceHolder returns the event holding a store.Delivery.OnceKey, or "".
	OnceHolder(key string) (string, error)
	// LatestSent returns the newest event whose email of a store.Delivery.SupersedeKey went out;
	// AddressSecret keys the hash of the address in such a key.
	LatestSent(key string) (eventID string, createdAt time.Time, ok bool, err error)
	AddressSecret() []byte
}

// Sender delivers one message. Its errors carry a mailer.Class.
type Sender interface {
	Send(ctx context.Context, m mailer.Message) (messageID string, err error)
}

// Renderer turns template data into an email.
type Renderer interface {
	Render(mailer.Data) (mailer.Rendered, error)
}

// Ambiguous-send policies.
const (
	OnAmbiguousHold   = "hold"
	OnAmbiguousResend = "resend"
)

// DefaultConcurrency is delivery.concurrency's default: each event waits on about one WorkOS
// read and one SES send (some 0.1 s in all), so 16 in flight reach about 150 emails/s.
const DefaultConcurrency = 16

// Options tunes the worker. Zero values get the defaults of the configuration (README).
type Options struct {
	PageSize     int
	PollInterval time.Duration
	// StartSince is where a store without a cursor starts; zero means the oldest event.
	StartSince  time.Time
	Concurrency int
	MaxAttempts int
	MaxEventAge time.Duration
	OnAmbiguous string
	// Kinds enabled; empty means kinds.Defaults().
	Kinds []string
	// Links holds the URL templates of links.* by setting name (kinds.Kind.LinkSetting, e.g.
	// "invitation_url"): one that is set builds the link from {{.Token}} instead of using
	// WorkOS's URL.
	Links map[string]*template.Template
	// AppURL is the button of the welcome and password-changed emails (links.app_url); empty:
	// none.
	AppURL string
	// UserLocaleKey, when set, is the WorkOS user metadata key that holds a user's locale
	// (templates.user_locale_key), the second choice after the user's WorkOS locale.
	UserLocaleKey string
	// RetryBase and RetryMax bound the jittered exponential backoff between attempts.
	RetryBase time.Duration
	RetryMax  time.Duration
	// PausedRetry is how long sending waits after SES says the account cannot send.
	PausedRetry time.Duration
	// Retention: final records last updated longer ago are pruned (worker/prune.go); 0 keeps
	// all. Anything shorter than MinRetention counts as MinRetention.
	Retention time.Duration
	// StopWhenIdle makes Run return at the first empty page (demo, tests).
	StopWhenIdle bool
	Now          func() time.Time
	// Observer sees polls, sends and outcomes (metrics); nil: none.
	Observer Observer
	// HeartbeatEvery is how often a deliberate wait beats the heartbeat. Default 5s.
	HeartbeatEvery time.Duration
	// Limiter paces sends (sendlimit.go); nil: unpaced.
	Limiter SendLimiter
	// Sealer keeps requested emails unreadable in the store (request.go); nil: the worker
	// takes no requests.
	Sealer Sealer
	// Leadership, for a store several daemons share, makes Run deliver only in the terms it
	// leads (leader.go); nil: this daemon always leads (the bbolt store's file lock).
	Leadership Leadership
}

func (o *Options) setDefaults() {
	if o.PageSize <= 0 || o.PageSize > 100 {
		o.PageSize = 100
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.OnAmbiguous == "" {
		o.OnAmbiguous = OnAmbiguousHold
	}
	if len(o.Kinds) == 0 {
		o.Kinds = kinds.Defaults()
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Minute
	}
	if o.PausedRetry <= 0 {
		o.PausedRetry = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Worker runs the pipeline. Create it with New.
type Worker struct {
	opts   Options
	hk     housekeeping // retries and pruning between polls (retry.go, prune.go)
	workos WorkOS
	store  Store
	sender Sender
	log    *zap.Logger
	// settings are the renderer, kinds and links in force (settings.go): a reload replaces them.
	settings atomic.Pointer[settings]
	paused   atomic.Bool
	// pauseReason says why sending is paused, while it is (mailer.PauseReason).
	pauseReason atomic.Pointer[string]
	// listDown, wosDown and sendDown follow outages (outage.go) of the Events API, of the
	// other WorkOS endpoints (a Get can fail while listing works) and of the mail provider.
	listDown, wosDown, sendDown outage
	unsynced                    unsynced // final records on their way to disk (dispatch.go)
	newest                      newest   // the newest event per superseded kind and address (newest.go)
	claims                      claims   // events being delivered, by either reader (live.go)
	backlog                     backlog  // how far behind the stream is; the live reader (backlog.go)
	observed                             // observer, heartbeat, last successful poll: observe.go
	// reqStore is the store's side for emails on request, nil when it has none; requests
	// delivers them (request.go).
	reqStore RequestStore
	requests requestRunner
	// interrupts carries operators' changes to Run (interrupt.go); stopped closes when Run returns.
	interrupts chan *interrupt
	stopped    chan struct{}
	stopOnce   sync.Once
	lead       leadership // leader.go
}

// New wires a worker.
func New(opts Options, w WorkOS, st Store, sender Sender, renderer Renderer, log *zap.Logger) *Worker {
	opts.setDefaults()
	wk := &Worker{opts: opts, workos: w, store: st, sender: sender, log: log,
		listDown: outage{name: "the WorkOS Events API"}, wosDown: outage{name: "WorkOS"}, sendDown: outage{name: "the mail provider"}}
	wk.settings.Store(newSettings(Settings{Renderer: renderer, Kinds: opts.Kinds, Links: opts.Links, AppURL: opts.AppURL,
		UserLocaleKey: opts.UserLocaleKey}))
	if st != nil {
		wk.newest.secret = st.AddressSecret()
	}
	wk.reqStore, _ = st.(RequestStore)
	wk.requests.w = wk
	wk.interrupts, wk.stopped = make(chan *interrupt), make(chan struct{})
	wk.initObserved(opts.Observer, opts.HeartbeatEvery)
	return wk
}

// Paused reports whether SES refused to send for the whole account on the last try.
func (w *Worker) Paused() bool { return w.paused.Load() }

// PauseReason says in a few words why sending is paused ("AWS credentials cannot be resolved",
// "SES refuses to send for the account (SendingPausedException)"); "" when it is not.
func (w *Worker) PauseReason() string {
	if r := w.pauseReason.Load(); r != nil && w.paused.Load() {
		return *r
	}
	return ""
}

// sendAnswered notes that the mail provider answered for a message, so the account can send:
// it ends a pause and an outage. (Only an answer does: a skipped event says nothing about it.)
func (w *Worker) sendAnswered() {
	w.paused.Store(false)
	w.sendDown.recovered(w.log)
}

// errStopped means the context ended before the work was done; nothing is lost.
var errStopped = errors.New("stopped")

// Run polls and delivers until ctx ends (or, with StopWhenIdle, until the stream is drained).
// Cancelling ctx stops polling and waiting; sends already handed to SES finish and are
// recorded. It returns an error only when the store fails. dispatch.go has the pipeline.
func (w *Worker) Run(ctx context.Context) error {
	defer w.stopOnce.Do(func() { close(w.stopped) }) // Interrupt fails fast from now on
	if w.opts.Leadership != nil {
		return w.runTerms(ctx) // leader.go: runTerm in each term this daemon leads
	}
	return w.runTerm(ctx)
}

// runTerm delivers while this daemon leads: until ctx ends or the store fails.
func (w *Worker) runTerm(ctx context.Context) error {
	if err := w.recoverInterrupted(); err != nil {
		return err
	}
	// A store failure on either side stops both: the events' pipeline and the requests'.
	ctx, fail := context.WithCancel(ctx)
	defer fail()
	stopRequests, err := w.requests.run(ctx, fail)
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		var in *interrupt
		in, err = w.term(ctx, first) // interrupt.go
		if in == nil {
			break
		}
		if err != nil || ctx.Err() != nil {
			in.refuse()
			break
		}
		in.apply()
	}
	w.log.Info("stopped polling")
	if err != nil {
		fail()
	}
	if reqErr := stopRequests(); err == nil {
		err = reqErr
	}
	return err
}

// logPolling says where a term of the pipeline starts.
func (w *Worker) logPolling(pos store.Position, first bool) {
	msg := "polling WorkOS events"
	if !first {
		msg = "polling WorkOS events again after an operator's change"
	}
	w.log.Info(msg, zap.String("cursor", pos.Cursor), zap.Time("since", pos.Since), zap.Strings("event_types", w.cur().types))
}

// fetch lists pages for the dispatcher: one each time it asks (want), the next one asked for
// while the last is still being delivered. Before each list it hands over the operator's queued
// retries and prunes old records when due. After an empty or short page the next list starts
// poll_interval after the last one did; after a full one, at once. It returns when ctx ends, or after the first
// empty page with StopWhenIdle.
func (w *Worker) fetch(ctx context.Context, pos store.Position, want <-chan struct{}, out chan<- fetched) {
	send := func(f fetched) bool {
		select {
		case out <- f:
			return true
		case <-ctx.Done():
			return false
		}
	}
	after := pos.Cursor
	failures := 0
	idle := false        // the last list returned less than a full page
	var listed time.Time // when the last list was sent
	var live *liveRun    // the live reader, while the main reader is behind (live.go)
	defer func() { w.stopLive(live, "stopping") }()
	for {
		select {
		case <-want:
		case <-ctx.Done():
			return
		}
		for {
			// Polls start poll_interval apart, so an event that becomes visible just after one
			// is listed by the next within poll_interval, however long a list takes.
			if idle && !w.opts.StopWhenIdle && !w.wait(ctx, w.opts.PollInterval-time.Since(listed)) {
				return
			}
			if !w.handOverRetries(ctx, send) {
				return
			}
			w.maybePrune()
			listed = time.Now()
			page, err := w.workos.ListEvents(ctx, workosapi.ListRequest{After: after, Since: pos.Since, Limit: w.opts.PageSize, Types: w.cur().types})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.polled(0, err)
				failures++
				delay := w.backoff(failures, retryAfterOf(err))
				var apiErr *workosapi.APIError
				switch {
				case errors.As(err, &apiErr) && apiErr.Unavailable():
					w.listDown.logFailure(w.log, workosLevel(apiErr), listed, "listing WorkOS events failed", err.Error(),
						zap.Int("failures", failures), zap.Duration("retry_in", delay))
				case after != "" && errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 && !apiErr.Retryable():
					// Never jump ahead on our own: events between the cursor and now would be lost.
					w.log.Error("WorkOS rejects the stored cursor, probably older than its event retention (about 30 days); "+
						"stop the daemon and reset the cursor to a time to backfill from", zap.String("cursor", after), zap.Error(err))
				default:
					w.log.Warn("listing WorkOS events failed; will retry", zap.Error(err), zap.Int("failures", failures), zap.Duration("retry_in", delay))
				}
				if !w.wait(ctx, delay) {
					return
				}
				idle = false // the backoff was the wait
				continue
			}
			w.polled(len(page.Events), nil)
			w.listDown.recovered(w.log)
			failures = 0
			idle = len(page.Events) < w.opts.PageSize
			live = w.steerLive(ctx, live, page)
			if len(page.Events) == 0 {
				if w.opts.StopWhenIdle {
					send(fetched{end: true})
					return
				}
				continue
			}
			after = page.Events[len(page.Events)-1].ID
			events := make([]Event, len(page.Events))
			for i, e := range page.Events {
				events[i] = Event{ID: e.ID, Type: e.Type, CreatedAt: e.CreatedAt, Data: e.Data}
			}
			if !send(fetched{events: events}) {
				return
			}
			break
		}
	}
}

// recoverInterrupted settles records left in state sending by a process that died mid-send.
func (w *Worker) recoverInterrupted() error {
	recs, err := w.store.Interrupted()
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		w.log.Warn("found sends interrupted by the previous process; SES may have accepted them",
			zap.Int("interrupted", len(recs)), zap.String("on_ambiguous", w.opts.OnAmbiguous))
	}
	now := w.opts.Now()
	for _, d := range recs {
		if w.opts.OnAmbiguous == OnAmbiguousResend {
			w.log.Warn("send was interrupted; outcome unknown; will send again (on_ambiguous: resend)",
				zap.String("event_id", d.EventID), zap.String("kind", d.Kind), zap.Int("attempts", d.Attempts))
			continue
		}
		d.State = store.Ambiguous
		d.Reason = "process stopped during the send: SES may have accepted it; not resent (on_ambiguous: hold)"
		d.UpdatedAt = now
		if err := w.store.Save(d, "", now); err != nil {
			return err
		}
		w.obs.Finished(d.Kind, string(d.State), ReasonInterrupted)
		w.log.Warn("send was interrupted; marked ambiguous and held", zap.String("event_id", d.EventID),
			zap.String("kind", d.Kind), zap.Int("attempts", d.Attempts))
	}
	return nil
}

type outcome int

const (
	final outcome = iota
	retry
	paused
)

type result struct {
	outcome    outcome
	reason     string
	retryAfter time.Duration
	// unavailable: the service, not this event, failed; the try is not charged.
	unavailable bool
	// down, for an unavailable retry or a pause, is the dependency that failed; alert: a person
	// must act (a rejected API key).
	down  *outage
	alert bool
	// maybeSent: this try's send may have been accepted.
	maybeSent bool
	// code is a Reason* label for a final outcome (metrics).
	code string
}

// deliver takes one event to a final state: tries (attempt.go) until one ends it, waiting
// between them. It returns nil when the store already had a final record, errStopped when ctx
// ended first, or a store error.
func (w *Worker) deliver(ctx context.Context, ev Event) (*store.Delivery, error) {
	rec, found, err := w.record(ev.ID)
	if err != nil {
		return nil, err
	}
	if found && rec.State.Final() {
		return nil, nil
	}
	d := resume(rec)
	if !found {
		kind := ""
		if ref, _ := ev.parsed(); ref.kind != nil {
			kind = ref.kind.Name
		}
		d = begin(ev, kind, w.opts.Now())
	}
	log := w.log.With(zap.String("event_id", ev.ID), zap.String("kind", d.rec.Kind))
	for {
		if ctx.Err() != nil {
			return nil, errStopped
		}
		w.beat()
		var res result
		tryStart := time.Now()
		if d.exhausted(w.opts.MaxAttempts) {
			res = d.gaveUp()
		} else if res, err = w.attempt(ctx, &ev, d, log); err != nil {
			return nil, err
		}
		now := w.opts.Now()
		if res.outcome == final {
			code := d.finish(res, now)
			logFinal(log, &d.rec)
			w.obs.Finished(d.rec.Kind, string(d.rec.State), code)
			return &d.rec, nil
		}
		d.requeue(res, now)
		if err := w.store.Save(d.rec, "", now); err != nil {
			return nil, err
		}
		if !w.wait(ctx, w.waitAfter(res, d, tryStart, log)) {
			return nil, errStopped
		}
	}
}

// waitAfter logs a try that did not end the delivery and says how long to wait for the next:
// the backoff after a retry, a fixed wait while sending is paused.
func (w *Worker) waitAfter(res result, d *delivery, tryStart time.Time, log *zap.Logger) time.Duration {
	if res.outcome == paused {
		w.paused.Store(true)
		delay := jitter(w.opts.PausedRetry)
		w.sendDown.logFailure(log, zapcore.ErrorLevel, tryStart, "sending is paused: "+w.PauseReason()+"; fix it, then sending resumes by itself",
			res.reason, zap.Duration("retry_in", delay))
		return delay
	}
	delay := w.backoff(d.tries(), res.retryAfter)
	fields := []zap.Field{zap.Int("attempts", d.rec.Attempts), zap.Int("uncharged", d.uncharged), zap.Duration("retry_in", delay)}
	if res.down == nil {
		log.Warn("delivery failed; will retry", append(fields, zap.String("reason", res.reason))...)
		return delay
	}
	lvl := zapcore.WarnLevel
	if res.alert {
		lvl = zapcore.ErrorLevel
	}
	res.down.logFailure(log, lvl, tryStart, res.down.name+" is unavailable", res.reason, fields...)
	return delay
}

func logFinal(log *zap.Logger, rec *store.Delivery) {
	fields := []zap.Field{zap.String("state", string(rec.State)), zap.Int("attempts", rec.Attempts)}
	if rec.Reason != "" {
		fields = append(fields, zap.String("reason", rec.Reason))
	}
	if rec.MessageID != "" {
		fields = append(fields, zap.String("message_id", rec.MessageID))
	}
	switch rec.State {
	case store.Sent, store.Skipped:
		log.Info("delivery done", fields...)
	default:
		log.Error("delivery failed for good", fields...)
	}
}

// workosLevel is how loudly an outage of WorkOS starts in the log: a rejected API key needs a
// person; throttling and gateway errors pass by themselves.
func workosLevel(err *workosapi.APIError) zapcore.Level {
	if err.KeyRejected() {
		return zapcore.ErrorLevel
	}
	return zapcore.WarnLevel
}

// backoff is the wait before try number attempt+1: exponential from RetryBase, capped at
// RetryMax, jittered so many events do not retry in lockstep, and never shorter than a server's
// Retry-After.
func (w *Worker) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := w.opts.RetryMax
	if attempt < 30 {
		if exp := w.opts.RetryBase << max(attempt-1, 0); exp > 0 && exp < d {
			d = exp
		}
	}
	d = jitter(d)
	if retryAfter > d {
		d = retryAfter
	}
	return d
}

// jitter returns a duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
