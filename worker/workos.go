package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/buger/jsonparser"

	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos/workos-go/v4/pkg/events"
	"github.com/workos/workos-go/v4/pkg/organizations"
	"github.com/workos/workos-go/v4/pkg/usermanagement"
	"github.com/workos/workos-go/v4/pkg/workos_errors"
	"golang.org/x/sync/singleflight"
)

// Event is a WorkOS event as the worker needs it.
type Event struct {
	ID        string
	Type      string
	CreatedAt time.Time
	Data      json.RawMessage
	// ref caches what parsed() read of Data: the dispatcher reads the recipient, the delivery
	// the rest.
	ref *parsedRef
}

type parsedRef struct {
	ref eventRef
	err error
}

// parsed returns parseEventData(e.Data), parsing it once.
func (e *Event) parsed() (eventRef, error) {
	if e.ref == nil {
		ref, err := parseEventData(e.Data)
		e.ref = &parsedRef{ref, err}
	}
	return e.ref.ref, e.ref.err
}

// ListRequest asks for the page after After, or from Since when After is empty.
type ListRequest struct {
	After string
	Since time.Time
	Limit int
	Types []string
}

// Page is one page of the event stream, oldest first.
type Page struct {
	Events []Event
}

// Resolved holds what a Get endpoint returned. Code, Token and Link are secrets: they live only
// for one send and the String method keeps them out of any accidental %v.
type Resolved struct {
	ObjectID       string
	Email          string
	ExpiresAt      time.Time // zero for a user
	State          string
	OrganizationID string
	InviterUserID  string
	// UserID is the object's user (magic auth, email verification, password reset).
	UserID string
	// A user's (welcome, password_changed): first name, whether the address is verified, and
	// its metadata (which may name the user's locale: Options.UserLocaleKey).
	FirstName     string
	EmailVerified bool
	Metadata      map[string]string
	Code          string
	Token         string
	Link          string
}

// String redacts the secret fields.
func (r Resolved) String() string {
	return fmt.Sprintf("Resolved{ObjectID:%s State:%s ExpiresAt:%s secrets:redacted}", r.ObjectID, r.State, r.ExpiresAt.Format(time.RFC3339))
}

// GoString redacts like String, for %#v.
func (r Resolved) GoString() string { return r.String() }

// Person is a WorkOS user as shown in an email.
type Person struct {
	Name     string // first and last
	Email    string
	Metadata map[string]string
}

// WorkOS is what the worker needs from the WorkOS API. Errors it returns may be *APIError.
type WorkOS interface {
	ListEvents(ctx context.Context, req ListRequest) (Page, error)
	// Resolve fetches the object an event of the given kind refers to, with its secret parts.
	Resolve(ctx context.Context, kind, objectID string) (Resolved, error)
	OrganizationName(ctx context.Context, id string) (string, error)
	User(ctx context.Context, id string) (Person, error)
}

// APIError is a failed WorkOS call, classified.
type APIError struct {
	Status     int // 0 when no HTTP answer came back
	RetryAfter time.Duration
	Err        error
}

func (e *APIError) Error() string { return e.Err.Error() }
func (e *APIError) Unwrap() error { return e.Err }

// NotFound reports whether the object does not exist (any more).
func (e *APIError) NotFound() bool { return e.Status == http.StatusNotFound }

// Retryable reports whether trying again later can succeed: throttling, server errors, network
// failures, and auth failures (an operator may be rotating the key).
func (e *APIError) Retryable() bool {
	return e.Unavailable() || e.Status >= 500 || e.Status == http.StatusRequestTimeout
}

// Unavailable reports a failure of WorkOS or of our access to it, not of the object asked for:
// no answer, throttling, gateway errors, or a rejected API key. Waiting it out costs the event
// no attempt.
func (e *APIError) Unavailable() bool {
	switch e.Status {
	case 0, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout, http.StatusUnauthorized, http.StatusForbidden:
		return true
	}
	return false
}

// KeyRejected reports whether WorkOS refused the API key (401, 403): a person must act.
func (e *APIError) KeyRejected() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// WorkOSClient talks to the WorkOS API through the official workos-go clients.
type WorkOSClient struct {
	events *events.Client
	um     *usermanagement.Client
	orgs   *organizations.Client
	// names caches organization and inviter names, which every invitation email shows: a
	// batch of invitations to one organization would otherwise read the same two objects for
	// each, against WorkOS's user-management read limit (1,000 per 10 s).
	names *nameCache
	// keyRejected: WorkOS's last answer that judged the API key refused it (answerTransport).
	keyRejected *atomic.Bool
}

// NewWorkOSClient builds the SDK clients. workos-go drops response headers and status codes,
// so the HTTP transport is wrapped to read what it drops (answerTransport).
func NewWorkOSClient(apiKey, baseURL string, timeout time.Duration) *WorkOSClient {
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	keyRejected := new(atomic.Bool)
	hc := &http.Client{Timeout: timeout, Transport: answerTransport{base: workosTransport(), keyRejected: keyRejected}}
	base := strings.TrimRight(baseURL, "/")
	um := usermanagement.NewClient(apiKey)
	um.Endpoint = base
	um.HTTPClient = hc
	return &WorkOSClient{
		events: &events.Client{APIKey: apiKey, Endpoint: base, HTTPClient: &http.Client{Timeout: timeout, Transport: oldestFirst{hc.Transport}}},
		um:     um,
		orgs:   &organizations.Client{APIKey: apiKey, Endpoint: base, HTTPClient: hc},
		names:  newNameCache(nameTTL, time.Now),

		keyRejected: keyRejected,
	}
}

// KeyRejected reports whether WorkOS refused the API key (401 or 403) on the last answer that
// said anything about it: readiness and status show it, since nothing works until a person
// fixes WORKOS_API_KEY.
func (c *WorkOSClient) KeyRejected() bool { return c.keyRejected.Load() }

// oldestFirst asks for events in ascending order. WorkOS's OpenAPI spec gives `order` a
// default of "desc" (newest first); a cursor that follows newest-first pages would skip every
// event created while it pages. workos-go v4 has no option for it, so the transport adds it.
type oldestFirst struct{ base http.RoundTripper }

func (t oldestFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	q := req.URL.Query()
	q.Set("order", "asc")
	req.URL.RawQuery = q.Encode()
	return t.base.RoundTrip(req)
}

// workosTransport keeps enough idle connections for every delivery in flight. The default
// transport keeps 2 per host, so with more deliveries than that most requests would open (and
// against api.workos.com, TLS-handshake) a new connection.
func workosTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = maxIdleWorkOSConns
	t.ReadBufferSize = 16 << 10 // a page of events in a few reads, not dozens
	return drainBodies{t}
}

// drainBodies reads what is left of a response body before closing it. workos-go decodes one
// JSON value and closes the body; the end of a chunked answer (or a trailing newline) is then
// still unread, and net/http closes a connection whose body was not read to the end: every page
// of events would cost a new connection and TLS handshake.
type drainBodies struct{ base http.RoundTripper }

func (t drainBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		resp.Body = drainingBody{resp.Body}
	}
	return resp, err
}

type drainingBody struct{ io.ReadCloser }

// Close drains a little (a body much longer than expected is not worth the wait) and closes.
func (b drainingBody) Close() error {
	_, _ = io.CopyN(io.Discard, b.ReadCloser, 4<<10)
	return b.ReadCloser.Close()
}

// maxIdleWorkOSConns covers delivery.concurrency (up to 64 is common) plus the poll.
const maxIdleWorkOSConns = 100

type answerHintKey struct{}

// answerHint is what a call learns from the HTTP answer that workos-go does not pass on: the
// Retry-After of a 429 or 503, and, when capture is set, the start of the body.
type answerHint struct {
	after   time.Duration
	capture bool
	body    []byte
}

// maxCapture bounds the captured start of an answer: enough for an object's fields, never a
// 10 MB answer held twice.
const maxCapture = 64 << 10

// answerTransport reads from each answer what workos-go does not pass on: whether the API key
// was accepted, and for the call's answerHint the Retry-After and the body.
type answerTransport struct {
	base        http.RoundTripper
	keyRejected *atomic.Bool
}

func (t answerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		t.keyRejected.Store(true)
	case code < 500 && code != http.StatusTooManyRequests:
		// Any other answer below 500 passed the key check (a gateway's 5xx or a 429 may come
		// before it).
		t.keyRejected.Store(false)
	}
	h, ok := req.Context().Value(answerHintKey{}).(*answerHint)
	if !ok {
		return resp, err
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		h.after = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	if h.capture && resp.StatusCode == http.StatusOK {
		resp.Body = &capturingBody{ReadCloser: resp.Body, h: h}
	}
	return resp, err
}

// capturingBody keeps what workos-go reads of a body in its answerHint.
type capturingBody struct {
	io.ReadCloser
	h *answerHint
}

func (b *capturingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if room := maxCapture - len(b.h.body); room > 0 {
		b.h.body = append(b.h.body, p[:min(n, room)]...)
	}
	return n, err
}

// parseRetryAfter reads delay-seconds or an HTTP date; anything else is no hint.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > 24*3600 {
			secs = 24 * 3600
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// call runs one SDK call and classifies its error.
func call[T any](ctx context.Context, what string, fn func(context.Context) (T, error)) (T, error) {
	return callWith(ctx, &answerHint{}, what, fn)
}

func callWith[T any](ctx context.Context, hint *answerHint, what string, fn func(context.Context) (T, error)) (T, error) {
	v, err := fn(context.WithValue(ctx, answerHintKey{}, hint))
	if err == nil {
		return v, nil
	}
	apiErr := &APIError{RetryAfter: hint.after, Err: fmt.Errorf("WorkOS %s: %w", what, err)}
	var httpErr workos_errors.HTTPError
	var httpErrPtr *workos_errors.HTTPError
	var urlErr *url.Error
	var netErr net.Error
	switch {
	case errors.As(err, &httpErr), errors.As(err, &httpErrPtr):
		if httpErrPtr != nil {
			httpErr = *httpErrPtr
		}
		apiErr.Status = httpErr.Code
		// HTTPError.Error may echo fields of the body; keep only status, code and request id.
		apiErr.Err = fmt.Errorf("WorkOS %s: %s (code %q, request id %q)", what, httpErr.Status, httpErr.ErrorCode, httpErr.RequestID)
	case errors.As(err, new(*json.SyntaxError)), errors.As(err, new(*json.UnmarshalTypeError)),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		// A 2xx with a body we cannot read: likely a proxy or a truncated answer.
		apiErr.Status = http.StatusBadGateway
	case errors.As(err, &urlErr):
		// No answer: the transport's error names only the URL, which holds no secret.
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		// The headers came, the body stalled past the client's timeout. net/http reports that
		// as a bare timeout, not a *url.Error, but it is no answer all the same: waited out,
		// never charged.
		apiErr.Err = fmt.Errorf("WorkOS %s: the answer stalled after its headers (the read timed out): %w", what, err)
	case errors.Is(err, context.Canceled), errors.As(err, &netErr):
		// The connection failed while the body was being read (a reset, or shutdown).
		apiErr.Err = fmt.Errorf("WorkOS %s: the connection failed while reading the answer: %w", what, err)
	default:
		// An error type we do not know may carry body fields (workos-go's structured auth
		// errors include tokens): keep only its type.
		apiErr.Status = http.StatusInternalServerError
		apiErr.Err = fmt.Errorf("WorkOS %s: unexpected %T", what, err)
	}
	return v, apiErr
}

// get runs a Get of one object and checks that the answer is that object: a 200 without the
// object's id ({} from a proxy or a half-configured mock) or naming another type of object is
// unreadable, retried like a 502 and never charged. An answer with another id is the caller's
// to judge: it is a definite answer, not an unreadable one.
func get[T any](ctx context.Context, object, id string, fn func(context.Context) (T, error), idOf func(T) string) (T, error) {
	what := "get " + strings.ReplaceAll(object, "_", " ")
	hint := &answerHint{capture: true}
	defer func() { clear(hint.body) }() // it held the object's secrets
	v, err := callWith(ctx, hint, what, fn)
	if err != nil {
		return v, err
	}
	got, typeErr := jsonparser.GetString(hint.body, "object")
	switch {
	case idOf(v) == "":
		return v, &APIError{Status: http.StatusBadGateway, Err: fmt.Errorf("WorkOS %s %s: the answer has no object id (unreadable); will retry", what, id)}
	case typeErr == nil && got != object:
		return v, &APIError{Status: http.StatusBadGateway, Err: fmt.Errorf("WorkOS %s %s: the answer is an object of type %q, not %q (unreadable); will retry",
			what, id, truncate(got, 40), object)}
	}
	return v, nil
}

// ListEvents fetches one page of events.
func (c *WorkOSClient) ListEvents(ctx context.Context, req ListRequest) (Page, error) {
	opts := events.ListEventsOpts{Events: req.Types, Limit: req.Limit, After: req.After}
	if req.After == "" && !req.Since.IsZero() {
		opts.RangeStart = req.Since.UTC().Format(time.RFC3339Nano)
	}
	resp, err := call(ctx, "list events", func(ctx context.Context) (events.ListEventsResponse, error) {
		return c.events.ListEvents(ctx, opts)
	})
	if err != nil {
		return Page{}, err
	}
	page := Page{Events: make([]Event, 0, len(resp.Data))}
	for i, e := range resp.Data {
		if e.ID == "" {
			// It could be neither recorded nor paged past: an unreadable answer, retried like one.
			return Page{}, &APIError{Status: http.StatusBadGateway, Err: errors.New("WorkOS list events: an event without an id")}
		}
		if !ValidEventID(e.ID) {
			// Likewise: the store keeps records and the cursor by event id and refuses ids that
			// no WorkOS event has.
			return Page{}, &APIError{Status: http.StatusBadGateway,
				Err: fmt.Errorf("WorkOS list events: an event id %q that is not a WorkOS event id", truncate(e.ID, 80))}
		}
		if i > 0 && e.CreatedAt.Before(resp.Data[i-1].CreatedAt) {
			// The cursor is the page's last event: on a newest-first page it would jump past
			// everything else. Refuse the page rather than lose events.
			return Page{}, &APIError{Status: http.StatusBadGateway, Err: errors.New("WorkOS list events: the page is not oldest-first")}
		}
		page.Events = append(page.Events, Event{ID: e.ID, Type: e.Event, CreatedAt: e.CreatedAt, Data: e.Data})
	}
	return page, nil
}

// Resolve fetches the object behind an event of kind.
func (c *WorkOSClient) Resolve(ctx context.Context, kind, id string) (Resolved, error) {
	switch kind {
	case mailer.KindInvitation:
		inv, err := get(ctx, "invitation", id, func(ctx context.Context) (usermanagement.Invitation, error) {
			return c.um.GetInvitation(ctx, usermanagement.GetInvitationOpts{Invitation: id})
		}, func(v usermanagement.Invitation) string { return v.ID })
		if err != nil {
			return Resolved{}, err
		}
		return withExpiry(Resolved{
			ObjectID: inv.ID, Email: inv.Email, State: string(inv.State),
			OrganizationID: inv.OrganizationID, InviterUserID: inv.InviterUserID,
			Token: inv.Token, Link: inv.AcceptInvitationUrl,
		}, inv.ExpiresAt)
	case mailer.KindMagicAuth:
		ma, err := get(ctx, "magic_auth", id, func(ctx context.Context) (usermanagement.MagicAuth, error) {
			return c.um.GetMagicAuth(ctx, usermanagement.GetMagicAuthOpts{MagicAuth: id})
		}, func(v usermanagement.MagicAuth) string { return v.ID })
		if err != nil {
			return Resolved{}, err
		}
		return withExpiry(Resolved{ObjectID: ma.ID, Email: ma.Email, UserID: ma.UserId, Code: ma.Code}, ma.ExpiresAt)
	case mailer.KindEmailVerification:
		ev, err := get(ctx, "email_verification", id, func(ctx context.Context) (usermanagement.EmailVerification, error) {
			return c.um.GetEmailVerification(ctx, usermanagement.GetEmailVerificationOpts{EmailVerification: id})
		}, func(v usermanagement.EmailVerification) string { return v.ID })
		if err != nil {
			return Resolved{}, err
		}
		return withExpiry(Resolved{ObjectID: ev.ID, Email: ev.Email, UserID: ev.UserId, Code: ev.Code}, ev.ExpiresAt)
	case mailer.KindPasswordReset:
		pr, err := get(ctx, "password_reset", id, func(ctx context.Context) (usermanagement.PasswordReset, error) {
			return c.um.GetPasswordReset(ctx, usermanagement.GetPasswordResetOpts{PasswordReset: id})
		}, func(v usermanagement.PasswordReset) string { return v.ID })
		if err != nil {
			return Resolved{}, err
		}
		return withExpiry(Resolved{ObjectID: pr.ID, Email: pr.Email, UserID: pr.UserId, Token: pr.PasswordResetToken, Link: pr.PasswordResetUrl}, pr.ExpiresAt)
	case mailer.KindWelcome, mailer.KindPasswordChanged:
		// Read fresh, not from the name cache: whether the address is verified decides.
		u, err := get(ctx, "user", id, func(ctx context.Context) (usermanagement.User, error) {
			return c.um.GetUser(ctx, usermanagement.GetUserOpts{User: id})
		}, func(v usermanagement.User) string { return v.ID })
		if err != nil {
			return Resolved{}, err
		}
		c.names.put(id, person(u))
		return Resolved{ObjectID: u.ID, Email: u.Email, UserID: u.ID, FirstName: strings.TrimSpace(u.FirstName),
			EmailVerified: u.EmailVerified, Metadata: u.Metadata}, nil
	}
	return Resolved{}, fmt.Errorf("no WorkOS resolver for kind %q", kind)
}

func withExpiry(r Resolved, expiresAt string) (Resolved, error) {
	t, err := time.Parse(time.RFC3339Nano, expiresAt)
	if err != nil {
		return Resolved{}, &APIError{Status: http.StatusUnprocessableEntity,
			Err: fmt.Errorf("WorkOS object %s has no valid expires_at (%q)", r.ObjectID, expiresAt)}
	}
	r.ExpiresAt = t
	return r, nil
}

// OrganizationName returns the organization's display name.
func (c *WorkOSClient) OrganizationName(ctx context.Context, id string) (string, error) {
	p, err := c.names.read(id, func() (Person, error) {
		org, err := call(ctx, "get organization", func(ctx context.Context) (organizations.Organization, error) {
			return c.orgs.GetOrganization(ctx, organizations.GetOrganizationOpts{Organization: id})
		})
		return Person{Name: org.Name}, err
	})
	return p.Name, err
}

// User returns a user's name and email.
func (c *WorkOSClient) User(ctx context.Context, id string) (Person, error) {
	return c.names.read(id, func() (Person, error) {
		u, err := call(ctx, "get user", func(ctx context.Context) (usermanagement.User, error) {
			return c.um.GetUser(ctx, usermanagement.GetUserOpts{User: id})
		})
		if err != nil {
			return Person{}, err
		}
		return person(u), nil
	})
}

func person(u usermanagement.User) Person {
	return Person{Name: strings.TrimSpace(u.FirstName + " " + u.LastName), Email: u.Email, Metadata: u.Metadata}
}

// nameTTL bounds how long a renamed organization or user may still show its old name.
const nameTTL = time.Minute

// nameCacheSize bounds the cache; when full it starts over, which costs a few reads again.
const nameCacheSize = 1024

// nameCache holds names by WorkOS id (organization and user ids never collide: their prefixes
// differ) for ttl. Only answers are cached, never failures. Concurrent misses of one id share
// one read.
type nameCache struct {
	ttl      time.Duration
	now      func() time.Time
	inflight singleflight.Group

	mu      sync.Mutex
	entries map[string]cachedName
}

// read returns id's cached name, or fetch's answer, cached.
func (c *nameCache) read(id string, fetch func() (Person, error)) (Person, error) {
	if p, ok := c.get(id); ok {
		return p, nil
	}
	v, err, _ := c.inflight.Do(id, func() (any, error) {
		p, err := fetch()
		if err == nil {
			c.put(id, p)
		}
		return p, err
	})
	return v.(Person), err
}

type cachedName struct {
	p  Person
	at time.Time
}

func newNameCache(ttl time.Duration, now func() time.Time) *nameCache {
	return &nameCache{ttl: ttl, now: now, entries: map[string]cachedName{}}
}

func (c *nameCache) get(id string) (Person, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || c.now().Sub(e.at) >= c.ttl {
		return Person{}, false
	}
	return e.p, true
}

func (c *nameCache) put(id string, p Person) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= nameCacheSize {
		clear(c.entries)
	}
	c.entries[id] = cachedName{p: p, at: c.now()}
}

// validObjectID guards the SDK, which pastes IDs into URL paths unescaped.
var validObjectID = regexp.MustCompile(`^[a-z][a-z_]*_[0-9A-Za-z]{1,64}$`)
