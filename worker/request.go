package worker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/failpoint"
	"github.com/workos-emailer/workos-emailer/internal/urlpolicy"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// Emails on request: the app asks for one through the send API (a Magic Link, for which WorkOS
// emits no event). Accept makes the request durable, sealed, with its pending record, before
// the API answers; from there it is delivered like an event: the same records, the same send
// and classification, the same recovery of an interrupted send. After a restart the requests
// not final yet are delivered again; one whose session was created but not sent creates a new
// session, since the link was never stored.

// Request is what the app asks for. Only Email is required.
type Request struct {
	Kind           string `json:"kind"`
	Email          string `json:"email"`
	RedirectURI    string `json:"redirect_uri,omitempty"`
	State          string `json:"state,omitempty"`
	Locale         string `json:"locale,omitempty"`
	OrganizationID string `json:"organization_id,omitempty"`
}

// Accepted is the answer to a request: its id and where its delivery stands. Replayed: the
// Idempotency-Key named an earlier request, and nothing new was accepted.
type Accepted struct {
	ID       string      `json:"id"`
	State    store.State `json:"state"`
	Replayed bool        `json:"-"`
}

var (
	// ErrIdempotencyConflict: the Idempotency-Key was used for a different request.
	ErrIdempotencyConflict = store.ErrIdempotencyConflict
	// ErrRequestsOff: the daemon does not take requests (api.listen is not set).
	ErrRequestsOff = errors.New("emails on request are off: set api.listen and api.token")
	// ErrStandby: another instance leads (a shared store); only the leader takes requests.
	ErrStandby = errors.New("this instance is a standby: another instance leads and takes requests; " +
		"send the request there (GET /readyz?role=leader answers 200 only on the leader)")
)

// InvalidRequestError names the field of a request that cannot be sent, and why. Nothing was
// accepted.
type InvalidRequestError struct {
	Field, Message string
}

func (e *InvalidRequestError) Error() string { return e.Field + ": " + e.Message }

// RequestStore is what requests need of the store, beside Store.
type RequestStore interface {
	AcceptRequest(r store.Request) (id string, replayed bool, err error)
	IdempotentRequest(key, fingerprint []byte, now time.Time) (id string, ok bool, err error)
	RequestContent(id string) (sealed []byte, ok bool, err error)
	OpenRequests() ([]string, error)
}

// Sealer keeps a request's content unreadable in the store (internal/sealed).
type Sealer interface {
	Seal(plain, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
}

// LinkCreator creates Magic Links (workosapi.Client).
type LinkCreator interface {
	CreateMagicLink(ctx context.Context, email, redirectURI, state string) (workosapi.MagicLink, error)
}

var (
	localeShape = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$`)
	maxStateLen = 1024
	maxURILen   = 2048
)

// Validate checks r field by field: nil, or the first field that cannot be sent.
func (r Request) Validate() *InvalidRequestError {
	invalid := func(field, msg string) *InvalidRequestError { return &InvalidRequestError{field, msg} }
	if k, ok := kinds.Get(r.Kind); !ok || !k.SentOnRequest() {
		return invalid("kind", fmt.Sprintf("%q is not a kind sent on request (%s)", truncate(r.Kind, 40), strings.Join(kinds.OnRequest(), ", ")))
	}
	if r.Email == "" {
		return invalid("email", "required")
	}
	if _, err := mailer.ParseRecipient(r.Email); err != nil || strings.TrimSpace(r.Email) != r.Email {
		msg := "not exactly one valid address"
		if err != nil {
			msg = err.Error()
		}
		return invalid("email", msg)
	}
	if r.RedirectURI != "" {
		if msg := redirectProblem(r.RedirectURI); msg != "" {
			return invalid("redirect_uri", msg)
		}
	}
	if len(r.State) > maxStateLen || hasControl(r.State) {
		return invalid("state", fmt.Sprintf("at most %d characters, without control characters", maxStateLen))
	}
	if r.Locale != "" && !localeShape.MatchString(r.Locale) {
		return invalid("locale", "not a language tag such as en, de or pt-BR")
	}
	if r.OrganizationID != "" && (!strings.HasPrefix(r.OrganizationID, "org_") || !workosapi.ValidObjectID(r.OrganizationID)) {
		return invalid("organization_id", "not a WorkOS organization id (org_...)")
	}
	return nil
}

// redirectProblem: WorkOS redirects to the URI after sign-in, so it must be https, or http to
// the developer's own machine.
func redirectProblem(s string) string {
	if len(s) > maxURILen || hasControl(s) {
		return fmt.Sprintf("at most %d characters, without control characters", maxURILen)
	}
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return "must not carry a user name or password"
	}
	if err := urlpolicy.Check(s); err != nil {
		return err.Error()
	}
	return ""
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// requestsOn says why the worker cannot take requests, or nil.
func (w *Worker) requestsOn() error {
	if w.opts.Sealer == nil || w.reqStore == nil {
		return ErrRequestsOff
	}
	return nil
}

// Accept makes a request durable and starts its delivery. With an Idempotency-Key a second
// request answers as the first and sends nothing more; a different request with the same key
// is ErrIdempotencyConflict. Bad input is an *InvalidRequestError.
func (w *Worker) Accept(r Request, idempotencyKey string) (Accepted, error) {
	if err := w.requestsOn(); err != nil {
		return Accepted{}, err
	}
	if bad := r.Validate(); bad != nil {
		return Accepted{}, bad
	}
	if w.Role() != RoleLeader {
		return Accepted{}, ErrStandby
	}
	if !w.cur().enabled[r.Kind] {
		return Accepted{}, fmt.Errorf("kind %s is not enabled: %w", r.Kind, ErrRequestsOff)
	}
	now := w.opts.Now()
	id := store.RequestIDPrefix + ulid.Make().String()
	plain, err := json.Marshal(r)
	if err != nil {
		return Accepted{}, fmt.Errorf("encode request: %w", err)
	}
	sealed, err := w.opts.Sealer.Seal(plain, []byte(id))
	if err != nil {
		return Accepted{}, err
	}
	key, fp := w.idempotency(r, idempotencyKey)
	got, replayed, err := w.reqStore.AcceptRequest(store.Request{ID: id, Kind: r.Kind, Sealed: sealed, AcceptedAt: now,
		IdempotencyKey: key, Fingerprint: fp})
	if err != nil {
		return Accepted{ID: got}, err
	}
	if !replayed {
		failpoint.Hit("after-accept") // durable, not answered, not started
		w.requests.start(got)
	}
	return w.answer(got, replayed)
}

// Replay returns the answer an Idempotency-Key already has, without accepting anything: ok is
// false when the key is new. The send API asks before it counts a request against the
// address's limit, so a retry of an accepted request is never refused.
func (w *Worker) Replay(r Request, idempotencyKey string) (a Accepted, ok bool, err error) {
	if idempotencyKey == "" || w.requestsOn() != nil {
		return Accepted{}, false, nil
	}
	key, fp := w.idempotency(r, idempotencyKey)
	id, ok, err := w.reqStore.IdempotentRequest(key, fp, w.opts.Now())
	if !ok || err != nil {
		return Accepted{ID: id}, ok, err
	}
	a, err = w.answer(id, true)
	return a, true, err
}

func (w *Worker) answer(id string, replayed bool) (Accepted, error) {
	rec, found, err := w.record(id)
	if err != nil {
		return Accepted{}, err
	}
	a := Accepted{ID: id, State: store.Pending, Replayed: replayed}
	if found {
		a.State = rec.State
	}
	return a, nil
}

// idempotency returns the keyed hashes of an Idempotency-Key and of the request (none without
// a key): the store holds neither the key, which the app may have built from the address, nor
// the address.
func (w *Worker) idempotency(r Request, key string) (keyHash, fingerprint []byte) {
	if key == "" {
		return nil, nil
	}
	mac := func(parts ...string) []byte {
		h := hmac.New(sha256.New, w.newest.secret)
		for _, p := range parts {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
		return h.Sum(nil)
	}
	fields := []string{"request", r.Kind, strings.ToLower(r.Email), r.RedirectURI, r.State, r.Locale, r.OrganizationID}
	return mac("idempotency-key", key)[:20], mac(fields...)[:16]
}

// requestRunner delivers requests, each in its own goroutine, at most one delivery per request
// at a time, while Run runs.
type requestRunner struct {
	w       *Worker
	mu      sync.Mutex
	ctx     context.Context // nil: not running; requests accepted then wait for the next Run
	active  map[string]bool
	wg      sync.WaitGroup
	slots   chan struct{}
	failure error  // the first store failure
	fail    func() // stops Run after a store failure
}

// start delivers request id unless it is being delivered or the runner is stopped.
func (rr *requestRunner) start(id string) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.ctx == nil || rr.active[id] {
		return
	}
	rr.active[id] = true
	rr.wg.Add(1)
	ctx := rr.ctx
	go func() {
		defer rr.wg.Done()
		err := rr.deliver(ctx, id)
		rr.mu.Lock()
		delete(rr.active, id)
		failed := err != nil && !errors.Is(err, errStopped) && rr.failure == nil
		if failed {
			rr.failure = err
		}
		rr.mu.Unlock()
		if failed {
			rr.w.log.Error("recording a requested email failed; stopping", zap.String("request_id", id), zap.Error(err))
			rr.fail()
		}
	}()
}

// run starts delivering: the requests left open by the previous process, then each accepted.
// The returned stop waits for the deliveries under way (a send started is finished) and returns
// the first store failure, which also calls fail.
func (rr *requestRunner) run(ctx context.Context, fail func()) (stop func() error, err error) {
	stop = func() error {
		rr.mu.Lock()
		rr.ctx = nil
		rr.mu.Unlock()
		rr.wg.Wait()
		rr.mu.Lock()
		defer rr.mu.Unlock()
		return rr.failure
	}
	if rr.w.requestsOn() != nil {
		return stop, nil
	}
	rr.mu.Lock()
	rr.ctx, rr.active, rr.fail, rr.failure = ctx, map[string]bool{}, fail, nil
	rr.slots = make(chan struct{}, rr.w.opts.Concurrency)
	rr.mu.Unlock()
	// Listed after the runner started, so a request accepted meanwhile is started by one or
	// both, and delivered once (active).
	ids, err := rr.w.reqStore.OpenRequests()
	if err != nil {
		_ = stop()
		return nil, err
	}
	if len(ids) > 0 {
		rr.w.log.Info("delivering the requested emails the previous process did not finish", zap.Int("requests", len(ids)))
	}
	for _, id := range ids {
		rr.start(id)
	}
	return stop, nil
}

// sealedRequest is a request's content as the store keeps it.
type sealedRequest struct{ sealed []byte }

// deliver takes request id to a final record.
func (rr *requestRunner) deliver(ctx context.Context, id string) error {
	select {
	case rr.slots <- struct{}{}:
		defer func() { <-rr.slots }()
	case <-ctx.Done():
		return errStopped
	}
	w := rr.w
	sealed, ok, err := w.reqStore.RequestContent(id)
	if err != nil || !ok {
		return err // !ok: final already
	}
	rec, found, err := w.record(id)
	if err != nil || !found {
		return err
	}
	final, err := w.deliver(ctx, Event{ID: id, CreatedAt: rec.EventCreatedAt, request: &sealedRequest{sealed}})
	if err != nil || final == nil {
		return err
	}
	return w.store.Save(*final, "", w.opts.Now())
}

// attemptRequest is attempt for a request: open it, create the Magic Link, render, send.
func (w *Worker) attemptRequest(ctx context.Context, ev *Event, d *delivery, log *zap.Logger) (result, error) {
	now := w.opts.Now()
	k, ok := kinds.Get(d.rec.Kind)
	switch {
	case !ok || !k.SentOnRequest():
		return d.end(store.Dead, ReasonInvalidEvent, fmt.Sprintf("kind %q is not sent on request", truncate(d.rec.Kind, 40))), nil
	case !d.set.enabled[k.Name]:
		return d.end(store.Skipped, ReasonDisabled, "kind "+k.Name+" is not enabled (api.listen is not set)"), nil
	case tooLate(k, now.Sub(ev.CreatedAt)):
		return d.end(store.Skipped, ReasonTooOld, fmt.Sprintf("a %s email more than %s after the request is not sent", k.Name, k.MaxAge)), nil
	}
	var r Request
	plain, err := w.opts.Sealer.Open(ev.request.sealed, []byte(ev.ID))
	if err == nil {
		err = json.Unmarshal(plain, &r)
	}
	if err != nil {
		return d.end(store.Dead, ReasonUnreadableRequest, "the request cannot be opened with api.token or api.previous_token "+
			"(was the token changed without keeping the old one as api.previous_token?)"), nil
	}
	to, err := mailer.ParseRecipient(r.Email)
	if err != nil {
		return d.end(store.Dead, ReasonInvalidRecipient, "invalid recipient: "+err.Error()), nil
	}
	creator, ok := w.workos.(LinkCreator)
	if !ok {
		return d.end(store.Dead, ReasonInvalidObject, "this WorkOS client cannot create Magic Links"), nil
	}
	d.charge()
	// The person is waiting for the link: it goes ahead of backlog reads for the budget.
	ml, err := creator.CreateMagicLink(workosapi.Urgent(ctx), to, r.RedirectURI, r.State)
	if err != nil {
		return w.workosFailure(ctx, d, err, "WorkOS found nothing to create the Magic Link for"), nil
	}
	w.wosDown.recovered(w.log)
	if !workosapi.ValidObjectID(ml.ID) {
		// Kept off the record: the store refuses what is not an id.
		return d.end(store.Dead, ReasonInvalidObject, "WorkOS returned a session id of the wrong shape"), nil
	}
	d.rec.ObjectID = ml.ID
	obj := workosapi.Object{ID: ml.ID, Email: to, Link: ml.Link, ExpiresAt: ml.ExpiresAt}
	link, err := buildLink(nil, obj)
	switch {
	case ml.Email != "" && !strings.EqualFold(ml.Email, to):
		return d.end(store.Dead, ReasonMismatch, "WorkOS created the Magic Link for another address; not sent"), nil
	case err != nil:
		return d.end(store.Dead, ReasonInvalidObject, err.Error()), nil
	case expired(k, ml.ExpiresAt, now):
		return d.end(store.Skipped, ReasonExpired, "expired at "+ml.ExpiresAt.UTC().Format(time.RFC3339)), nil
	}
	data := mailer.Data{Kind: k.Name, Email: to, Link: link, ExpiresAt: ml.ExpiresAt, Now: now, EventAt: ev.CreatedAt,
		OrganizationID: r.OrganizationID}
	if r.Locale != "" {
		data.UserLocales = []string{r.Locale}
	}
	rendered, err := d.set.Renderer.Render(data)
	if err != nil {
		return d.end(store.Dead, ReasonRenderFailed, err.Error()), nil
	}
	return w.send(ctx, k, ev, obj, d, mailer.Message{To: to, Subject: rendered.Subject, HTML: rendered.HTML, Text: rendered.Text,
		EventID: ev.ID, Kind: k.Name, Date: now, Sender: rendered.Sender}, log)
}
