package workosapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/buger/jsonparser"
	"github.com/workos/workos-go/v4/pkg/workos_errors"
)

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

// call runs one SDK call, one request, within the budget, and classifies its error.
func call[T any](ctx context.Context, b *Budget, what string, fn func(context.Context) (T, error)) (T, error) {
	return callWith(ctx, b, &answerHint{}, what, fn)
}

func callWith[T any](ctx context.Context, b *Budget, hint *answerHint, what string, fn func(context.Context) (T, error)) (T, error) {
	if err := b.Wait(ctx); err != nil {
		var zero T
		return zero, &APIError{Err: fmt.Errorf("WorkOS %s: stopped while waiting for the request budget: %w", what, err)}
	}
	endpoint := strings.ReplaceAll(what, " ", "_")
	sent := b.clock()
	v, err := fn(context.WithValue(ctx, answerHintKey{}, hint))
	if err == nil {
		b.answered(endpoint, sent, http.StatusOK, 0)
		return v, nil
	}
	apiErr := classify(err, what, hint)
	if ctx.Err() == nil { // a request cut short by shutdown says nothing about WorkOS
		b.answered(endpoint, sent, apiErr.Status, apiErr.RetryAfter)
	}
	return v, apiErr
}

// classify turns an SDK call's error into an APIError.
func classify(err error, what string, hint *answerHint) *APIError {
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
	return apiErr
}

// get runs a Get of one object and checks that the answer is that object: a 200 without the
// object's id ({} from a proxy or a half-configured mock) or naming another type of object is
// unreadable, retried like a 502 and never charged. An answer with another id is the caller's
// to judge: it is a definite answer, not an unreadable one. read, when set, sees the answer's
// body for fields workos-go's structs drop; the body is wiped after.
func get[T any](ctx context.Context, b *Budget, object, id string, fn func(context.Context) (T, error), idOf func(T) string, read func(body []byte)) (T, error) {
	what := "get " + strings.ReplaceAll(object, "_", " ")
	hint := &answerHint{capture: true}
	defer func() { clear(hint.body) }() // it held the object's secrets
	v, err := callWith(ctx, b, hint, what, fn)
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
	if read != nil {
		read(hint.body)
	}
	return v, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
