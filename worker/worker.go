// Package worker is the delivery pipeline: it pages through WorkOS events by a durable cursor,
// fetches the secret parts of each, renders and sends the email, and records the outcome so
// each email goes out once.
package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/failpoint"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
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
	// Kinds enabled; empty means mailer.CoreKinds.
	Kinds []string
	// InvitationURL and PasswordResetURL, when set, build the link from {{.Token}} instead of
	// using WorkOS's URL.
	InvitationURL    *template.Template
	PasswordResetURL *template.Template
	// AppURL is the button of the welcome and password-changed emails (links.app_url); empty:
	// none.
	AppURL string
	// UserLocaleKey, when set, is the WorkOS user metadata key that holds a user's locale
	// (templates.user_locale_key): the user is read for it and their locale wins.
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
		o.Kinds = mailer.CoreKinds
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
	opts     Options
	hk       housekeeping // retries and pruning between polls (retry.go, prune.go)
	workos   WorkOS
	store    Store
	sender   Sender
	renderer Renderer
	log      *zap.Logger
	enabled  map[string]bool
	types    []string
	paused   atomic.Bool
	// pauseReason says why sending is paused, while it is (mailer.PauseReason).
	pauseReason atomic.Pointer[string]
	// listDown, wosDown and sendDown follow outages (outage.go) of the Events API, of the
	// other WorkOS endpoints (a Get can fail while listing works) and of the mail provider.
	listDown, wosDown, sendDown outage
	unsynced                    unsynced // final records on their way to disk (dispatch.go)
	observed                             // observer, heartbeat, last successful poll: observe.go
}

// New wires a worker.
func New(opts Options, w WorkOS, st Store, sender Sender, renderer Renderer, log *zap.Logger) *Worker {
	opts.setDefaults()
	wk := &Worker{opts: opts, workos: w, store: st, sender: sender, renderer: renderer, log: log, enabled: map[string]bool{},
		listDown: outage{name: "the WorkOS Events API"}, wosDown: outage{name: "WorkOS"}, sendDown: outage{name: "the mail provider"}}
	for _, k := range opts.Kinds {
		wk.enabled[k] = true
	}
	wk.initObserved(opts.Observer, opts.HeartbeatEvery)
	wk.types = listedTypes(wk.enabled)
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
	if err := w.recoverInterrupted(); err != nil {
		return err
	}
	pos, err := w.store.InitPosition(w.opts.StartSince)
	if err != nil {
		return err
	}
	if !pos.CursorSetAt.IsZero() {
		w.obs.CursorMoved(pos.CursorSetAt)
	}
	w.log.Info("polling WorkOS events", zap.String("cursor", pos.Cursor), zap.Time("since", pos.Since),
		zap.Strings("event_types", w.types))
	err = w.dispatch(ctx, pos)
	w.log.Info("stopped polling")
	return err
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
			page, err := w.workos.ListEvents(ctx, ListRequest{After: after, Since: pos.Since, Limit: w.opts.PageSize, Types: w.types})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.polled(0, err)
				failures++
				delay := w.backoff(failures, retryAfterOf(err))
				var apiErr *APIError
				switch {
				case errors.As(err, &apiErr) && apiErr.Unavailable():
					w.listDown.logFailure(w.log, workosLevel(apiErr), "listing WorkOS events failed", err.Error(),
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
			if len(page.Events) == 0 {
				if w.opts.StopWhenIdle {
					send(fetched{end: true})
					return
				}
				continue
			}
			after = page.Events[len(page.Events)-1].ID
			if !send(fetched{events: page.Events}) {
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

// eventRef is the part of an event's data the worker reads. Events carry no secrets.
type eventRef struct {
	ID             string `json:"id"`
	Email          string `json:"email"`
	OrganizationID string `json:"organization_id"`
	// UserID is the user of a password reset or an authentication event.
	UserID string `json:"user_id"`
	// EmailVerified and Status: user.created's and authentication events' say.
	EmailVerified bool   `json:"email_verified"`
	Status        string `json:"status"`
}

// parseEventData reads an event's data. Every id in it must have the shape of a WorkOS id,
// since ids go into URL paths.
func parseEventData(data json.RawMessage) (eventRef, error) {
	var ref eventRef
	if err := json.Unmarshal(data, &ref); err != nil {
		return ref, fmt.Errorf("event data is not a JSON object: %w", err)
	}
	if ref.ID == "" && ref.UserID == "" {
		return ref, errors.New("event data names no object (no id or user_id)")
	}
	for _, id := range []string{ref.ID, ref.UserID} {
		if id != "" && !validObjectID.MatchString(id) {
			return ref, fmt.Errorf("event data has no valid object id (%q)", truncate(id, 80))
		}
	}
	return ref, nil
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

func finalAs(rec *store.Delivery, state store.State, code, reason string) result {
	rec.State = state
	rec.Reason = reason
	return result{outcome: final, code: code}
}

// deliver takes one event to a final state. It returns nil when the store already had a final
// record, errStopped when ctx ended first, or a store error.
func (w *Worker) deliver(ctx context.Context, ev Event) (*store.Delivery, error) {
	rec, found, err := w.record(ev.ID)
	if err != nil {
		return nil, err
	}
	if found && rec.State.Final() {
		return nil, nil
	}
	if !found {
		rec = store.Delivery{EventID: ev.ID, Kind: EventKinds[ev.Type], State: store.Pending,
			EventCreatedAt: ev.CreatedAt, FirstSeenAt: w.opts.Now()}
		if !store.StorableTime(ev.CreatedAt) {
			// WorkOS's clock, not ours: a created_at decades off must not keep the record out
			// of the store (the store refuses implausible times as damage).
			rec.EventCreatedAt = time.Time{}
		}
	}
	log := w.log.With(zap.String("event_id", ev.ID), zap.String("kind", rec.Kind))
	// maybeSent: an earlier send of this event may have been accepted (on_ambiguous: resend).
	// If the event then ends other than sent, it is ambiguous, so nobody retries it blindly.
	// A record an operator queued for retry after it was ambiguous carries MaybeDuplicate too.
	maybeSent := found && (rec.State == store.Sending || rec.MaybeDuplicate)
	// uncharged counts this delivery's tries that failed for an outage: they cost no attempt,
	// but the backoff grows with them as with any failure, or a long outage would be asked
	// about once a second by every event waiting on it.
	uncharged := 0
	for {
		if ctx.Err() != nil {
			return nil, errStopped
		}
		w.beat()
		var res result
		if rec.Attempts >= w.opts.MaxAttempts {
			res = finalAs(&rec, store.Dead, ReasonMaxAttempts, fmt.Sprintf("gave up after %d attempts: %s", rec.Attempts, rec.Reason))
		} else {
			res, err = w.attempt(ctx, ev, &rec, log)
			if err != nil {
				return nil, err
			}
		}
		rec.UpdatedAt = w.opts.Now()
		maybeSent = maybeSent || res.maybeSent
		switch res.outcome {
		case final:
			switch {
			case maybeSent && rec.State == store.Sent:
				rec.MaybeDuplicate = true
				rec.Reason = "sent again after a send whose outcome was unknown (on_ambiguous: resend); the recipient may have two copies"
				res.code = ReasonMaybeDuplicate
			case maybeSent && rec.State != store.Ambiguous:
				rec.Reason = "an earlier send may have been accepted by SES; then: " + rec.Reason
				rec.State = store.Ambiguous
				res.code = ReasonMaybeSent
			}
			if rec.State != store.Sent {
				rec.MaybeDuplicate = false // only a sent record says it may be a second copy
			}
			logFinal(log, &rec)
			w.obs.Finished(rec.Kind, string(rec.State), res.code)
			return &rec, nil
		case retry:
			if res.unavailable {
				rec.Attempts--
				uncharged++
			}
			rec.State, rec.Reason = store.Pending, res.reason
			// An unknown outcome must survive a restart during the wait, or a resend would not
			// be marked as a possible second copy.
			rec.MaybeDuplicate = rec.MaybeDuplicate || maybeSent
			if err := w.store.Save(rec, "", rec.UpdatedAt); err != nil {
				return nil, err
			}
			delay := w.backoff(rec.Attempts+uncharged, res.retryAfter)
			fields := []zap.Field{zap.Int("attempts", rec.Attempts), zap.Int("uncharged", uncharged), zap.Duration("retry_in", delay)}
			if res.down != nil {
				lvl := zapcore.WarnLevel
				if res.alert {
					lvl = zapcore.ErrorLevel
				}
				res.down.logFailure(log, lvl, res.down.name+" is unavailable", res.reason, fields...)
			} else {
				log.Warn("delivery failed; will retry", append(fields, zap.String("reason", res.reason))...)
			}
			if !w.wait(ctx, delay) {
				return nil, errStopped
			}
		case paused:
			w.paused.Store(true)
			rec.Attempts-- // the account, not this message, failed
			rec.State, rec.Reason = store.Pending, res.reason
			rec.MaybeDuplicate = rec.MaybeDuplicate || maybeSent
			if err := w.store.Save(rec, "", rec.UpdatedAt); err != nil {
				return nil, err
			}
			delay := jitter(w.opts.PausedRetry)
			w.sendDown.logFailure(log, zapcore.ErrorLevel, "sending is paused: "+w.PauseReason()+"; fix it, then sending resumes by itself",
				res.reason, zap.Duration("retry_in", delay))
			if !w.wait(ctx, delay) {
				return nil, errStopped
			}
		}
	}
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

// attempt makes one try: resolve, validate, render, send. It changes rec's state for final
// outcomes, and writes the sending record durably before the send. Its error is a store error.
func (w *Worker) attempt(ctx context.Context, ev Event, rec *store.Delivery, log *zap.Logger) (result, error) {
	now := w.opts.Now()
	switch {
	case rec.Kind == "":
		return finalAs(rec, store.Skipped, ReasonUnhandled, fmt.Sprintf("event type %q is not handled", truncate(ev.Type, 80))), nil
	case !w.enabled[rec.Kind]:
		return finalAs(rec, store.Skipped, ReasonDisabled, "kind "+rec.Kind+" is not enabled in events.enabled"), nil
	case w.opts.MaxEventAge > 0 && now.Sub(ev.CreatedAt) > w.opts.MaxEventAge:
		return finalAs(rec, store.Skipped, ReasonTooOld, "event is older than delivery.max_event_age"), nil
	}
	ref, err := ev.parsed()
	if err != nil {
		return finalAs(rec, store.Dead, ReasonInvalidEvent, err.Error()), nil
	}
	objectID := objectOf(rec.Kind, ev.Type, ref)
	if objectID == "" {
		return finalAs(rec, store.Dead, ReasonInvalidEvent, "event data names no "+rec.Kind+" object"), nil
	}
	rec.ObjectID = objectID // an id, not a secret: lets an operator's retry fetch it again
	if res, done, err := w.noticeChecks(ev, ref, rec, now); done || err != nil {
		return res, err
	}

	rec.Attempts++
	obj, err := w.workos.Resolve(ctx, rec.Kind, objectID)
	if err != nil {
		return w.workosFailure(ctx, rec, err, "object "+objectID+" not found (deleted or no longer available)"), nil
	}
	w.wosDown.recovered(w.log)
	recipient := obj.Email
	switch {
	case obj.ObjectID != objectID:
		return finalAs(rec, store.Dead, ReasonMismatch, fmt.Sprintf("WorkOS returned object %q for %q", truncate(obj.ObjectID, 80), objectID)), nil
	case rec.Kind == mailer.KindPasswordChanged && ref.Email != "":
		// The notice goes to the address the account had when the password changed: if the
		// change was an attacker's, the address may have changed since too.
		recipient = ref.Email
	case rec.Kind == mailer.KindWelcome && !obj.EmailVerified:
		return finalAs(rec, store.Skipped, ReasonNotVerified, "the user's email address is not verified"), nil
	case !isNotice(rec.Kind) && ref.Email != "" && !strings.EqualFold(obj.Email, ref.Email):
		return finalAs(rec, store.Dead, ReasonMismatch, "the object's email differs from the event's; not sent"), nil
	case rec.Kind == mailer.KindInvitation && obj.State != "pending":
		return finalAs(rec, store.Skipped, ReasonNotPend, fmt.Sprintf("invitation is %s, not pending", truncate(obj.State, 40))), nil
	case expired(rec.Kind, obj.ExpiresAt, now):
		return finalAs(rec, store.Skipped, ReasonExpired, "expired at "+obj.ExpiresAt.UTC().Format(time.RFC3339)), nil
	}
	to, err := mailer.ParseRecipient(recipient)
	if err != nil {
		return finalAs(rec, store.Dead, ReasonInvalidRecipient, "invalid recipient: "+err.Error()), nil
	}
	log.Debug("resolved", zap.String("to", to), zap.Time("expires_at", obj.ExpiresAt))

	data, res, ok := w.templateData(ctx, rec, ev, obj, now)
	if !ok {
		return res, nil
	}
	data.Email = to
	rendered, err := w.renderer.Render(data)
	if err != nil {
		return finalAs(rec, store.Dead, ReasonRenderFailed, err.Error()), nil
	}

	if ctx.Err() != nil {
		// Shutting down: start no new send; the event is delivered after the restart.
		return result{outcome: retry, reason: "stopped before sending", unavailable: true}, nil
	}
	// Rate limit (sendlimit.go): wait for a permit before `sending` is recorded.
	if res, ok := w.sendPermit(ctx); !ok {
		return res, nil
	}
	// Once more, right before the send: the name lookups and the permit can take seconds, and
	// a code must not arrive already dead.
	if now := w.opts.Now(); expired(rec.Kind, obj.ExpiresAt, now) {
		w.releasePermit()
		return finalAs(rec, store.Skipped, ReasonExpired, "expired at "+obj.ExpiresAt.UTC().Format(time.RFC3339)+" before it could be sent"), nil
	}
	rec.State, rec.Reason = store.Sending, ""
	rec.UpdatedAt = now
	if err := w.store.Save(*rec, "", now); err != nil {
		return result{}, err
	}
	failpoint.Hit("before-send")
	// The send is not cancelled by shutdown: an aborted request would leave its outcome unknown.
	sendStart := time.Now()
	msgID, err := w.sender.Send(context.WithoutCancel(ctx), mailer.Message{
		To: to, Subject: rendered.Subject, HTML: rendered.HTML, Text: rendered.Text,
		EventID: ev.ID, Kind: rec.Kind, Date: now,
	})
	w.sendDone(err) // ends the permit (sendlimit.go)
	w.obs.SendAttempt(rec.Kind, sendOutcome(err), time.Since(sendStart))
	if c := mailer.ClassOf(err); err == nil || c == mailer.Permanent || c == mailer.Retry && !mailer.Unavailable(err) {
		w.sendAnswered()
	}
	if err != nil {
		// The provider's full answer may name addresses; the error's own text does not.
		log.Debug("send failed", zap.String("detail", mailer.ErrorDetail(err)))
	}
	if err == nil {
		w.obs.EventLag(rec.Kind, w.opts.Now().Sub(ev.CreatedAt))
		failpoint.Hit("after-send")
		rec.MessageID = msgID
		return finalAs(rec, store.Sent, ReasonNone, ""), nil
	}
	switch mailer.ClassOf(err) {
	case mailer.Permanent:
		return finalAs(rec, store.Dead, ReasonRejected, err.Error()), nil
	case mailer.Retry:
		res := result{outcome: retry, reason: err.Error(), unavailable: mailer.Unavailable(err)}
		if res.unavailable {
			res.down = &w.sendDown
		}
		return res, nil
	case mailer.Paused:
		reason := mailer.PauseReason(err)
		w.pauseReason.Store(&reason)
		return result{outcome: paused, reason: err.Error(), down: &w.sendDown}, nil
	default:
		if w.opts.OnAmbiguous == OnAmbiguousResend {
			log.Warn("send outcome unknown; will send again (on_ambiguous: resend)", zap.Error(err))
			return result{outcome: retry, reason: "outcome unknown: " + err.Error(), maybeSent: true}, nil
		}
		return finalAs(rec, store.Ambiguous, ReasonUnknownOutcome, "outcome unknown, SES may have accepted it; not resent (on_ambiguous: hold): "+err.Error()), nil
	}
}

// workosFailure classifies a failed WorkOS call made for rec.
func (w *Worker) workosFailure(ctx context.Context, rec *store.Delivery, err error, notFound string) result {
	var apiErr *APIError
	switch {
	case ctx.Err() != nil:
		return result{outcome: retry, reason: "interrupted", unavailable: true}
	case errors.As(err, &apiErr) && apiErr.NotFound():
		return finalAs(rec, store.Skipped, ReasonNotFound, notFound)
	case errors.As(err, &apiErr) && !apiErr.Retryable():
		return finalAs(rec, store.Dead, ReasonWorkOSRejected, err.Error())
	}
	res := result{outcome: retry, reason: err.Error(), retryAfter: retryAfterOf(err),
		unavailable: errors.As(err, &apiErr) && apiErr.Unavailable()}
	if res.unavailable {
		res.down = &w.wosDown
		res.alert = apiErr.KeyRejected()
	}
	return res
}

// workosLevel is how loudly an outage of WorkOS starts in the log: a rejected API key needs a
// person; throttling and gateway errors pass by themselves.
func workosLevel(err *APIError) zapcore.Level {
	if err.KeyRejected() {
		return zapcore.ErrorLevel
	}
	return zapcore.WarnLevel
}

// expired is the one rule for a code or link that may no longer be sent: its expiry has come.
// Notices (welcome, password changed) have none.
func expired(kind string, expiresAt, now time.Time) bool {
	return !isNotice(kind) && !now.Before(expiresAt)
}

// templateData gathers what the templates show. When ok is false, res says what to do instead.
func (w *Worker) templateData(ctx context.Context, rec *store.Delivery, ev Event, obj Resolved, now time.Time) (data mailer.Data, res result, ok bool) {
	data = mailer.Data{Kind: rec.Kind, Email: obj.Email, ExpiresAt: obj.ExpiresAt, Now: now,
		OrganizationID: obj.OrganizationID, FirstName: obj.FirstName}
	if key := w.opts.UserLocaleKey; key != "" {
		data.UserLocale = obj.Metadata[key]
	}
	switch rec.Kind {
	case mailer.KindMagicAuth, mailer.KindEmailVerification:
		if obj.Code == "" {
			return data, finalAs(rec, store.Dead, ReasonInvalidObject, "WorkOS returned no code"), false
		}
		data.Code = obj.Code
	case mailer.KindInvitation, mailer.KindPasswordReset:
		tmpl := w.opts.PasswordResetURL
		if rec.Kind == mailer.KindInvitation {
			tmpl = w.opts.InvitationURL
		}
		link, err := buildLink(tmpl, obj)
		if err != nil {
			return data, finalAs(rec, store.Dead, ReasonInvalidObject, err.Error()), false
		}
		data.Link = link
	case mailer.KindWelcome, mailer.KindPasswordChanged:
		data.Link = w.opts.AppURL
		data.EventAt = ev.CreatedAt
	}
	if w.opts.UserLocaleKey != "" && obj.UserID != "" && !isNotice(rec.Kind) {
		// Best effort: a user that cannot be read now is written to in the usual locale
		// rather than kept waiting for a code that expires.
		if p, err := w.workos.User(ctx, obj.UserID); err == nil {
			data.UserLocale = p.Metadata[w.opts.UserLocaleKey]
		} else if !isNotFound(err) {
			w.log.Warn("reading the user's locale failed; writing in the default locale", zap.String("event_id", rec.EventID), zap.Error(err))
		}
	}
	if rec.Kind != mailer.KindInvitation {
		return data, res, true
	}
	if id := obj.OrganizationID; id != "" && validObjectID.MatchString(id) {
		name, err := w.workos.OrganizationName(ctx, id)
		if err != nil && !isNotFound(err) {
			return data, w.workosFailure(ctx, rec, err, ""), false
		}
		data.OrganizationName = name
	}
	if id := obj.InviterUserID; id != "" && validObjectID.MatchString(id) {
		p, err := w.workos.User(ctx, id)
		if err != nil && !isNotFound(err) {
			return data, w.workosFailure(ctx, rec, err, ""), false
		}
		data.InviterName, data.InviterEmail = p.Name, p.Email
	}
	return data, res, true
}

// noticeChecks are the welcome's and password notice's checks before any WorkOS call: the
// event says what it should (a verified address, a successful verification), it is recent
// (noticeMaxAge), and the user has not been welcomed already. done means res is the outcome.
func (w *Worker) noticeChecks(ev Event, ref eventRef, rec *store.Delivery, now time.Time) (res result, done bool, err error) {
	if !isNotice(rec.Kind) {
		return res, false, nil
	}
	if age := now.Sub(ev.CreatedAt); age > noticeMaxAge {
		return finalAs(rec, store.Skipped, ReasonTooOld, fmt.Sprintf("a %s notice more than %s after the event is not sent", rec.Kind, noticeMaxAge)), true, nil
	}
	if rec.Kind != mailer.KindWelcome {
		return res, false, nil
	}
	switch {
	case ev.Type == "user.created" && !ref.EmailVerified:
		return finalAs(rec, store.Skipped, ReasonNotVerified, "the user's address was not verified at sign-up; the welcome follows its verification"), true, nil
	case ev.Type == "authentication.email_verification_succeeded" && ref.Status != "succeeded":
		return finalAs(rec, store.Skipped, ReasonNotVerified, fmt.Sprintf("the verification did not succeed (status %q)", truncate(ref.Status, 40))), true, nil
	}
	holder, err := w.store.OnceHolder(welcomeKey(rec.ObjectID))
	if err != nil {
		return res, true, err
	}
	// A delivery that took the key carries it in its record (a retry, a resume after a
	// restart). One without it is new: if the key names its own event, that event was
	// welcomed before its record was pruned.
	if holder != "" && (holder != rec.EventID || rec.OnceKey == "") {
		return finalAs(rec, store.Skipped, ReasonAlreadySent, "the user was welcomed already (event "+truncate(holder, 80)+")"), true, nil
	}
	rec.OnceKey = welcomeKey(rec.ObjectID)
	return res, false, nil
}

func isNotFound(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.NotFound()
}

// buildLink fills the configured URL template with the query-escaped token, or falls back to the
// URL WorkOS built. Errors never include the token or the URL.
func buildLink(tmpl *template.Template, obj Resolved) (string, error) {
	link := obj.Link
	if tmpl != nil {
		if obj.Token == "" {
			return "", errors.New("WorkOS returned no token for the configured link")
		}
		var b bytes.Buffer
		if err := tmpl.Execute(&b, struct{ Token string }{url.QueryEscape(obj.Token)}); err != nil {
			return "", errors.New("the configured link template failed to render")
		}
		link = b.String()
	}
	if link == "" {
		return "", errors.New("WorkOS returned no link and none is configured under links.*")
	}
	u, err := url.Parse(link)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", errors.New("the link is not an absolute http(s) URL")
	}
	return link, nil
}

func retryAfterOf(err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.RetryAfter
	}
	return 0
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
