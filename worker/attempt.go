package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"text/template"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/failpoint"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// One try of a delivery, in the order of its steps: screen the event, read the object, check
// that it may be sent and to whom, gather what the templates show, render, send. Each step
// reads the kind's entry in the kinds table; none knows a kind by name.

// attempt makes one try. It sets the record's final state for final outcomes, and writes the
// sending record durably before the send. Its error is a store error.
func (w *Worker) attempt(ctx context.Context, ev *Event, d *delivery, log *zap.Logger) (result, error) {
	d.set = w.cur()
	if ev.request != nil {
		return w.attemptRequest(ctx, ev, d, log)
	}
	now := w.opts.Now()
	ref, res, done, err := w.screen(ev, d, now)
	if done || err != nil {
		return res, err
	}
	k := ref.kind
	d.charge()
	obj, err := w.workos.Get(ctx, k.Object, ref.ObjectID)
	if err != nil {
		return w.workosFailure(ctx, d, err, "object "+ref.ObjectID+" not found (deleted or no longer available)"), nil
	}
	w.wosDown.recovered(w.log)
	to, res, ok := eligible(k, ref, obj, d, now)
	if !ok {
		return res, nil
	}
	log.Debug("resolved", zap.String("to", to), zap.Time("expires_at", obj.ExpiresAt))
	data, res, ok := w.templateData(ctx, k, ref, ev, obj, d, now)
	if !ok {
		return res, nil
	}
	data.Email = to
	rendered, err := d.set.Renderer.Render(data)
	if err != nil {
		return d.end(store.Dead, ReasonRenderFailed, err.Error()), nil
	}
	return w.send(ctx, k, ev, obj, d, mailer.Message{To: to, Subject: rendered.Subject, HTML: rendered.HTML, Text: rendered.Text,
		EventID: ev.ID, Kind: k.Name, Date: now, Sender: rendered.Sender}, log)
}

// screen is what can be decided before any WorkOS call, from the event and the store: a kind
// that handles it and is enabled, an age within the limits, data that names the object and
// says what the trigger requires, a once-key not taken. done means res is the outcome.
func (w *Worker) screen(ev *Event, d *delivery, now time.Time) (ref eventRef, res result, done bool, err error) {
	age := now.Sub(ev.CreatedAt)
	ref, parseErr := ev.parsed()
	k := ref.kind
	switch {
	case k == nil:
		return ref, d.end(store.Skipped, ReasonUnhandled, fmt.Sprintf("event type %q is not handled", truncate(ev.Type, 80))), true, nil
	case !d.set.enabled[k.Name]:
		return ref, d.end(store.Skipped, ReasonDisabled, "kind "+k.Name+" is not enabled in events.enabled"), true, nil
	case w.opts.MaxEventAge > 0 && age > w.opts.MaxEventAge:
		return ref, d.end(store.Skipped, ReasonTooOld, "event is older than delivery.max_event_age"), true, nil
	case parseErr != nil:
		return ref, d.end(store.Dead, ReasonInvalidEvent, parseErr.Error()), true, nil
	}
	d.rec.ObjectID = ref.ObjectID // an id, not a secret: lets an operator's retry fetch it again
	switch {
	case tooLate(k, age):
		return ref, d.end(store.Skipped, ReasonTooOld, fmt.Sprintf("a %s email more than %s after the event is not sent", k.Name, k.MaxAge)), true, nil
	case ref.Unmet != "":
		return ref, d.end(store.Skipped, orDefault(ref.trigger.SkipCode, ReasonNotApplicable), ref.Unmet), true, nil
	case !ref.ExpiresAt.IsZero() && expired(k, ref.ExpiresAt, now):
		// The event shows it already: no Get, which the app's sign-ins need more.
		return ref, d.end(store.Skipped, ReasonExpired, "expired at "+ref.ExpiresAt.UTC().Format(time.RFC3339)+
			", as the event shows; not read from WorkOS"), true, nil
	}
	d.rec.SupersedeKey = w.newest.key(ref)
	if res, ok, err := w.superseded(ev, d); ok || err != nil {
		return ref, res, true, err
	}
	key := k.OnceKey(ref.ObjectID)
	if key == "" {
		return ref, res, false, nil
	}
	if res, ok, err := w.onceTaken(k, key, d); ok || err != nil {
		return ref, res, true, err
	}
	d.rec.OnceKey = key
	return ref, res, false, nil
}

// onceTaken ends d when another event holds the once-key key. Its error is a store error.
func (w *Worker) onceTaken(k *kinds.Kind, key string, d *delivery) (result, bool, error) {
	holder, err := w.store.OnceHolder(key)
	if err != nil {
		return result{}, false, err
	}
	// A delivery that took the key carries it in its record (a retry, a resume after a
	// restart). One without it is new: if the key names its own event, that event was sent
	// before its record was pruned.
	if holder == "" || holder == d.rec.EventID && d.rec.OnceKey != "" {
		return result{}, false, nil
	}
	return d.end(store.Skipped, ReasonAlreadySent, fmt.Sprintf("the %s email went out already for %s (event %s)",
		k.Name, d.rec.ObjectID, truncate(holder, 80))), true, nil
}

// eligible checks the object WorkOS returned against the event and the kind, and returns the
// address to send to. ok false means res is the outcome.
func eligible(k *kinds.Kind, ref eventRef, obj workosapi.Object, d *delivery, now time.Time) (to string, res result, ok bool) {
	recipient := obj.Email
	switch {
	case obj.ID != ref.ObjectID:
		return "", d.end(store.Dead, ReasonMismatch, fmt.Sprintf("WorkOS returned object %q for %q", truncate(obj.ID, 80), ref.ObjectID)), false
	case k.ToEventEmail && ref.Email != "":
		recipient = ref.Email
	case k.MatchEventEmail && ref.Email != "" && !strings.EqualFold(obj.Email, ref.Email):
		return "", d.end(store.Dead, ReasonMismatch, "the object's email differs from the event's; not sent"), false
	}
	switch {
	case k.Verified && !obj.EmailVerified:
		return "", d.end(store.Skipped, ReasonNotVerified, "the user's email address is not verified"), false
	case k.State != "" && obj.State != k.State:
		return "", d.end(store.Skipped, ReasonNotPend, fmt.Sprintf("%s is %s, not %s", k.Object, truncate(obj.State, 40), k.State)), false
	case expired(k, obj.ExpiresAt, now):
		return "", d.end(store.Skipped, ReasonExpired, "expired at "+obj.ExpiresAt.UTC().Format(time.RFC3339)), false
	}
	to, err := mailer.ParseRecipient(recipient)
	if err != nil {
		return "", d.end(store.Dead, ReasonInvalidRecipient, "invalid recipient: "+err.Error()), false
	}
	return to, res, true
}

// tooLate is the one rule for an email that would arrive too long after what caused it.
func tooLate(k *kinds.Kind, age time.Duration) bool {
	return k.MaxAge > 0 && age > k.MaxAge
}

// expired is the one rule for a code or link that may no longer be sent: its expiry has come.
func expired(k *kinds.Kind, expiresAt, now time.Time) bool {
	return k.Expires && !now.Before(expiresAt)
}

// templateData gathers what the templates show: what the email carries, the names it shows,
// and the languages its reader may want. ok false means res is the outcome.
func (w *Worker) templateData(ctx context.Context, k *kinds.Kind, ref eventRef, ev *Event, obj workosapi.Object, d *delivery,
	now time.Time) (data mailer.Data, res result, ok bool) {
	data = mailer.Data{Kind: k.Name, Email: obj.Email, ExpiresAt: obj.ExpiresAt, Now: now, EventAt: ev.CreatedAt,
		OrganizationID: obj.OrganizationID, FirstName: obj.FirstName, Resent: ref.trigger.Resent}
	switch k.Carries {
	case kinds.Code:
		if obj.Code == "" {
			return data, d.end(store.Dead, ReasonInvalidObject, "WorkOS returned no code"), false
		}
		data.Code = obj.Code
	case kinds.Link:
		link, err := buildLink(d.set.Links[k.LinkSetting], obj)
		if err != nil {
			return data, d.end(store.Dead, ReasonInvalidObject, err.Error()), false
		}
		data.Link = link
	case kinds.AppLink:
		data.Link = d.set.AppURL
	}
	data.UserLocales = w.userLocales(ctx, obj, d)
	if !k.Names {
		return data, res, true
	}
	if id := obj.OrganizationID; workosapi.ValidObjectID(id) {
		name, err := w.workos.OrganizationName(ctx, id)
		if err != nil && !isNotFound(err) {
			return data, w.workosFailure(ctx, d, err, ""), false
		}
		data.OrganizationName = name
	}
	if id := obj.InviterUserID; workosapi.ValidObjectID(id) {
		p, err := w.workos.User(ctx, id)
		if err != nil && !isNotFound(err) {
			return data, w.workosFailure(ctx, d, err, ""), false
		}
		data.InviterName, data.InviterEmail = p.Name, p.Email
	}
	return data, res, true
}

// userLocales are the languages the reader asks for, first choice first: their WorkOS locale,
// then the templates.user_locale_key metadata. The object is the user, or names one, read
// through the name cache (an invitation has no user yet: none). The templates fall back to the
// organization's locale and the default.
func (w *Worker) userLocales(ctx context.Context, obj workosapi.Object, d *delivery) []string {
	user := workosapi.Person{Locale: obj.Locale, Metadata: obj.Metadata}
	if obj.Type != "user" {
		if obj.UserID == "" {
			return nil
		}
		// Best effort: a user that cannot be read now is written to in the usual language
		// rather than kept waiting for a code that expires.
		p, err := w.workos.User(ctx, obj.UserID)
		if err != nil {
			if !isNotFound(err) {
				w.log.Warn("reading the user's locale failed; writing in the organization's or the default locale",
					zap.String("event_id", d.rec.EventID), zap.Error(err))
			}
			return nil
		}
		user = p
	}
	var locales []string
	for _, l := range []string{user.Locale, user.Metadata[d.set.UserLocaleKey]} {
		if l != "" {
			locales = append(locales, l)
		}
	}
	return locales
}

// send paces, records `sending`, sends and classifies the answer.
func (w *Worker) send(ctx context.Context, k *kinds.Kind, ev *Event, obj workosapi.Object, d *delivery, m mailer.Message, log *zap.Logger) (result, error) {
	// Shutting down: start no new send; the event is delivered after the restart.
	stopped := result{outcome: retry, reason: "stopped before sending", unavailable: true}
	if ctx.Err() != nil {
		return stopped, nil
	}
	// The recipient as a keyed hash, never in clear: `trace` finds this record by it.
	d.rec.Recipient = store.HashRecipient(w.newest.secret, m.To)
	// Screen's checks of what another delivery may have sent since, again, each under a claim
	// on its key held through the send: the live reader may have sent a newer code to the
	// address, or taken the once-key (with its `sending` record), while this one was read.
	if key := d.rec.SupersedeKey; key != "" {
		release, ok := w.claims.acquire(ctx, "newest:"+key)
		if !ok {
			return stopped, nil
		}
		defer release()
		if res, ok, err := w.superseded(ev, d); ok || err != nil {
			return res, err
		}
	}
	if key := d.rec.OnceKey; key != "" {
		release, ok := w.claims.acquire(ctx, "once:"+key)
		if !ok {
			return stopped, nil
		}
		defer release()
		if res, ok, err := w.onceTaken(k, key, d); ok || err != nil {
			return res, err
		}
	}
	// Rate limit (sendlimit.go): wait for a permit before `sending` is recorded.
	if res, ok := w.sendPermit(ctx); !ok {
		return res, nil
	}
	// Once more, right before the send: the name lookups and the permit can take seconds, and
	// a code must not arrive already dead.
	now := w.opts.Now()
	if expired(k, obj.ExpiresAt, now) {
		w.releasePermit()
		return d.end(store.Skipped, ReasonExpired, "expired at "+obj.ExpiresAt.UTC().Format(time.RFC3339)+" before it could be sent"), nil
	}
	if !w.mayStartSend() { // leader.go: no send starts once another daemon may lead
		w.releasePermit()
		return result{}, errNotTrusted
	}
	before := d.rec
	d.sending(now)
	if err := w.store.Save(d.rec, "", now); err != nil {
		return result{}, err
	}
	failpoint.Hit("before-send")
	if !w.mayStartSend() {
		// Claimed but not sent: put the record back as it was, if this term's writes still go
		// through, so that the next leader sends it as any pending one. Otherwise the next leader
		// finds it sending and holds it as ambiguous (or resends it, flagged): never sent twice,
		// at worst held though it was never sent.
		w.releasePermit()
		if before.State == store.Pending {
			before.UpdatedAt = now
			_ = w.store.Save(before, "", now)
		}
		return result{}, errNotTrusted
	}
	// The send is not cancelled by shutdown: an aborted request would leave its outcome unknown.
	sendStart := time.Now()
	msgID, err := w.sender.Send(context.WithoutCancel(ctx), m)
	w.sendDone(err) // ends the permit (sendlimit.go)
	w.obs.SendAttempt(k.Name, sendOutcome(err), time.Since(sendStart))
	if c := mailer.ClassOf(err); err == nil || c == mailer.Permanent || c == mailer.Retry && !mailer.Unavailable(err) {
		w.sendAnswered()
	}
	if err == nil || mailer.ClassOf(err) == mailer.Ambiguous {
		// It went out, or may have: an older one must not follow it. A send that definitely
		// failed replaces nothing, so the person is not left without a code.
		w.newest.sent(d.rec.SupersedeKey, ev)
	}
	if err == nil {
		w.obs.EventLag(k.Name, w.opts.Now().Sub(ev.CreatedAt))
		failpoint.Hit("after-send")
		d.rec.MessageID = msgID
		return d.end(store.Sent, ReasonNone, ""), nil
	}
	// The provider's full answer may name addresses; the error's own text does not.
	log.Debug("send failed", zap.String("detail", mailer.ErrorDetail(err)))
	switch mailer.ClassOf(err) {
	case mailer.Permanent:
		return d.end(store.Dead, ReasonRejected, err.Error()), nil
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
	}
	if w.opts.OnAmbiguous == OnAmbiguousResend {
		log.Warn("send outcome unknown; will send again (on_ambiguous: resend)", zap.Error(err))
		return result{outcome: retry, reason: "outcome unknown: " + err.Error(), maybeSent: true}, nil
	}
	return d.end(store.Ambiguous, ReasonUnknownOutcome, "outcome unknown, SES may have accepted it; not resent (on_ambiguous: hold): "+err.Error()), nil
}

// superseded ends d when a newer email of its kind to the same address has gone out (newest.go).
// Its error is a store error.
func (w *Worker) superseded(ev *Event, d *delivery) (result, bool, error) {
	newer, ok, err := w.newest.newer(d.rec.SupersedeKey, ev, w.store)
	if !ok || err != nil {
		return result{}, false, err
	}
	return d.end(store.Skipped, ReasonSuperseded, fmt.Sprintf("a newer %s email to the same address replaces it (event %s)",
		d.rec.Kind, truncate(newer, 80))), true, nil
}

// workosFailure classifies a failed WorkOS call made for d.
func (w *Worker) workosFailure(ctx context.Context, d *delivery, err error, notFound string) result {
	var apiErr *workosapi.APIError
	switch {
	case ctx.Err() != nil:
		return result{outcome: retry, reason: "interrupted", unavailable: true}
	case errors.As(err, &apiErr) && apiErr.NotFound():
		return d.end(store.Skipped, ReasonNotFound, notFound)
	case errors.As(err, &apiErr) && !apiErr.Retryable():
		return d.end(store.Dead, ReasonWorkOSRejected, err.Error())
	}
	res := result{outcome: retry, reason: err.Error(), retryAfter: retryAfterOf(err),
		unavailable: errors.As(err, &apiErr) && apiErr.Unavailable()}
	if res.unavailable {
		res.down = &w.wosDown
		res.alert = apiErr.KeyRejected()
	}
	return res
}

// buildLink fills the configured URL template with the query-escaped token, or falls back to the
// URL WorkOS built. Errors never include the token or the URL.
func buildLink(tmpl *template.Template, obj workosapi.Object) (string, error) {
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
