// Package sendapi is the send API (api.listen): the app asks for the emails WorkOS emits no
// event for (a Magic Link). It authenticates, validates, limits each address, and answers only
// once the worker has made the request durable. It never logs an address, a token or a link.
package sendapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
)

// MaxBodyBytes bounds a request body: a Magic Link request is a few hundred bytes.
const MaxBodyBytes = 16 << 10

// MinTokenLen is the shortest api.token accepted: a bearer token is a password nobody types.
const MinTokenLen = 32

// Per address: WorkOS itself allows 3 Magic Auth codes a minute per address; more Magic Links
// than that are a script, or someone bothering another person's inbox.
const (
	PerAddressBurst = 3
	perAddressEvery = 20 * time.Second
)

// Acceptor takes requests durably (worker.Worker).
type Acceptor interface {
	Accept(r worker.Request, idempotencyKey string) (worker.Accepted, error)
	Replay(r worker.Request, idempotencyKey string) (a worker.Accepted, ok bool, err error)
}

// Observer counts answers by route and status (metrics).
type Observer interface {
	APIRequest(route string, status int)
}

// Options configures the API.
type Options struct {
	// Tokens are the bearer tokens accepted: api.token, then api.previous_token while a
	// rotation is under way. Empty ones are ignored.
	Tokens   []string
	Log      *zap.Logger
	Observer Observer // nil: none
	Now      func() time.Time
}

// API is the send API's handler.
type API struct {
	acceptor Acceptor
	tokens   [][32]byte
	log      *zap.Logger
	obs      Observer
	limits   *addressLimits
	keys     keyLocks
}

// New returns the handler of the send API.
func New(a Acceptor, opts Options) (*API, error) {
	api := &API{acceptor: a, log: opts.Log, obs: opts.Observer, limits: newAddressLimits(opts.Now)}
	if api.log == nil {
		api.log = zap.NewNop()
	}
	for _, t := range opts.Tokens {
		if t == "" {
			continue
		}
		if len(t) < MinTokenLen {
			return nil, fmt.Errorf("api.token: must be at least %d characters (e.g. openssl rand -hex 32)", MinTokenLen)
		}
		api.tokens = append(api.tokens, sha256.Sum256([]byte(t)))
	}
	if len(api.tokens) == 0 {
		return nil, errors.New("api.token: is required when api.listen is set (WORKOS_EMAILER_API_TOKEN or api.token_file)")
	}
	return api, nil
}

// Routes are the API's paths, for the listener.
func (a *API) Routes() map[string]http.Handler {
	return map[string]http.Handler{"/v1/magic_link": a.route("/v1/magic_link", a.magicLink), "/": a.route("other", notFound)}
}

// errorBody is every error answer: {"error": {"code", "field", "message"}}.
type errorBody struct {
	Error apiError `json:"error"`
}

type apiError struct {
	Code    string `json:"code"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// answer is a status with its JSON body.
type answer struct {
	status int
	body   any
	header map[string]string
}

func fail(status int, code, field, msg string) answer {
	return answer{status: status, body: errorBody{apiError{code, field, msg}}}
}

func notFound(*http.Request) answer {
	return fail(http.StatusNotFound, "not_found", "", "no such endpoint; the send API has POST /v1/magic_link")
}

// route authenticates, runs h and writes its answer.
func (a *API) route(name string, h func(*http.Request) answer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ans := a.authenticate(r)
		if ans.status == 0 {
			ans = h(r)
		}
		for k, v := range ans.header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(ans.status)
		_ = json.NewEncoder(w).Encode(ans.body)
		if a.obs != nil {
			a.obs.APIRequest(name, ans.status)
		}
	})
}

// authenticate compares the bearer token with each accepted one in constant time (hashes of
// equal length, so neither the content nor the length leaks). A zero answer means it passed.
func (a *API) authenticate(r *http.Request) answer {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	got := sha256.Sum256([]byte(token))
	ok := 0
	for _, want := range a.tokens {
		ok |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	if !strings.EqualFold(scheme, "Bearer") || ok != 1 {
		ans := fail(http.StatusUnauthorized, "unauthorized", "", "missing or wrong bearer token (Authorization: Bearer <api.token>)")
		ans.header = map[string]string{"WWW-Authenticate": `Bearer realm="workos-emailer"`}
		return ans
	}
	return answer{}
}

// magicLinkRequest is the body of POST /v1/magic_link.
type magicLinkRequest struct {
	Email          string `json:"email"`
	RedirectURI    string `json:"redirect_uri"`
	State          string `json:"state"`
	Locale         string `json:"locale"`
	OrganizationID string `json:"organization_id"`
}

func (a *API) magicLink(r *http.Request) answer {
	if r.Method != http.MethodPost {
		ans := fail(http.StatusMethodNotAllowed, "method_not_allowed", "", "use POST")
		ans.header = map[string]string{"Allow": http.MethodPost}
		return ans
	}
	req, ans := decode(r)
	if ans.status != 0 {
		return ans
	}
	key := r.Header.Get("Idempotency-Key")
	if !validIdempotencyKey(key) {
		return fail(http.StatusBadRequest, "invalid_header", "Idempotency-Key", "at most 255 printable ASCII characters, no spaces")
	}
	// Bad input is answered before the limits are asked.
	if bad := req.Validate(); bad != nil {
		return invalid(bad)
	}
	// A retry of an accepted request is answered before the address's limit is asked; retries
	// at once wait for the first, so they are answered as retries too.
	defer a.keys.lock(key)()
	if acc, ok, err := a.acceptor.Replay(req, key); ok || err != nil {
		return a.accepted(acc, true, err)
	}
	wait, ok, refund := a.limits.allow(req.Email)
	if !ok {
		ans := fail(http.StatusTooManyRequests, "rate_limited", "email",
			fmt.Sprintf("too many requests for this address; at most %d a minute", PerAddressBurst))
		ans.header = map[string]string{"Retry-After": strconv.Itoa(int(math.Ceil(wait.Seconds())))}
		return ans
	}
	acc, err := a.acceptor.Accept(req, key)
	if err != nil || acc.Replayed {
		refund() // nothing new was accepted: the app's retry must not be limited for it
	}
	return a.accepted(acc, acc.Replayed, err)
}

func (a *API) accepted(acc worker.Accepted, replayed bool, err error) answer {
	var bad *worker.InvalidRequestError
	switch {
	case errors.As(err, &bad):
		return invalid(bad)
	case errors.Is(err, worker.ErrIdempotencyConflict):
		return fail(http.StatusUnprocessableEntity, "idempotency_conflict", "Idempotency-Key",
			"this Idempotency-Key was used for a different request within 24 hours; use a new key for a new request")
	case errors.Is(err, worker.ErrRequestsOff):
		return fail(http.StatusServiceUnavailable, "unavailable", "", err.Error())
	case errors.Is(err, worker.ErrStandby), errors.Is(err, store.ErrFenced):
		// The app retries against the leader, with its Idempotency-Key.
		ans := fail(http.StatusServiceUnavailable, "standby", "", worker.ErrStandby.Error())
		ans.header = map[string]string{"Retry-After": "1"}
		return ans
	case err != nil:
		a.log.Error("send API: the request could not be recorded; the app should retry it", zap.Error(err))
		return fail(http.StatusServiceUnavailable, "unavailable", "", "the request could not be recorded; retry it (with the same Idempotency-Key)")
	}
	a.log.Info("send API: request accepted", zap.String("request_id", acc.ID), zap.Bool("replayed", replayed))
	ans := answer{status: http.StatusAccepted, body: acc}
	if replayed {
		ans.header = map[string]string{"Idempotent-Replayed": "true"}
	}
	return ans
}

func invalid(bad *worker.InvalidRequestError) answer {
	return fail(http.StatusUnprocessableEntity, "invalid_field", bad.Field, bad.Message)
}

// decode reads the body: JSON, one object, only the known fields, at most MaxBodyBytes.
func decode(r *http.Request) (worker.Request, answer) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return worker.Request{}, fail(http.StatusUnsupportedMediaType, "unsupported_media_type", "", "send Content-Type: application/json")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return worker.Request{}, fail(http.StatusBadRequest, "invalid_body", "", "the body could not be read")
	}
	if len(body) > MaxBodyBytes {
		return worker.Request{}, fail(http.StatusBadRequest, "body_too_large", "", fmt.Sprintf("the body is larger than %d bytes", MaxBodyBytes))
	}
	req, field, err := DecodeRequest(body)
	if err != nil {
		return worker.Request{}, fail(http.StatusBadRequest, "invalid_json", field, err.Error())
	}
	return req, answer{}
}

// DecodeRequest parses a Magic Link request body. field names the field at fault, if any. Its
// errors never echo the body's values.
func DecodeRequest(body []byte) (req worker.Request, field string, err error) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var m magicLinkRequest
	if err := dec.Decode(&m); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			return req, typeErr.Field, fmt.Errorf("%s must be a %s", typeErr.Field, typeErr.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
			if len(name) > 40 {
				name = name[:40]
			}
			return req, name, fmt.Errorf("unknown field %q (the fields are email, redirect_uri, state, locale, organization_id)", name)
		}
		return req, "", errors.New("the body is not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, "", errors.New("the body has more than one JSON value")
	}
	return worker.Request{Kind: kinds.MagicLink, Email: m.Email, RedirectURI: m.RedirectURI, State: m.State,
		Locale: m.Locale, OrganizationID: m.OrganizationID}, "", nil
}

func validIdempotencyKey(k string) bool {
	if len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] > '~' {
			return false
		}
	}
	return true
}

// keyLocks serializes the requests with one Idempotency-Key ("" is not locked).
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	mu      sync.Mutex
	waiters int
}

// lock takes key's lock and returns its release.
func (k *keyLocks) lock(key string) (unlock func()) {
	if key == "" {
		return func() {}
	}
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.waiters++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.waiters--; l.waiters == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// addressLimits is a token bucket per address, in memory, keyed by a hash with a key of this
// process (the map holds no address). Buckets that refilled are dropped as the map grows.
type addressLimits struct {
	mu      sync.Mutex
	secret  []byte
	buckets map[[32]byte]*rate.Limiter
	now     func() time.Time
	swept   time.Time
}

func newAddressLimits(now func() time.Time) *addressLimits {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	if now == nil {
		now = time.Now
	}
	return &addressLimits{secret: secret, buckets: map[[32]byte]*rate.Limiter{}, now: now}
}

// allow takes a token for addr (refund gives it back), or says how long until one is free.
func (l *addressLimits) allow(addr string) (wait time.Duration, ok bool, refund func()) {
	mac := hmac.New(sha256.New, l.secret)
	mac.Write([]byte(strings.ToLower(addr)))
	var key [32]byte
	copy(key[:], mac.Sum(nil))
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= 10000 && now.Sub(l.swept) > perAddressEvery {
			l.swept = now
			for k, old := range l.buckets {
				if old.TokensAt(now) >= PerAddressBurst {
					delete(l.buckets, k)
				}
			}
		}
		b = rate.NewLimiter(rate.Every(perAddressEvery), PerAddressBurst)
		l.buckets[key] = b
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false, func() {}
	}
	return 0, true, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		// At the reservation's own time: x/time/rate restores nothing for a reservation
		// whose time has passed.
		r.CancelAt(now)
	}
}
