package workosapi

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

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
	base http.RoundTripper
	key  *keyHolder
}

func (t answerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The current key, not the one the SDK client was built with (SetAPIKey).
	key := t.key.current()
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		t.key.judged(key, true, code)
	case code < 500 && code != http.StatusTooManyRequests:
		// Any other answer below 500 passed the key check (a gateway's 5xx or a 429 may come
		// before it).
		t.key.judged(key, false, code)
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
