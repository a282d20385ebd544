package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// Fault-injection suite: the real worker, workos-go and aws-sdk-go-v2 clients against the fakes,
// with faults injected through their Intercept hooks. Every case checks the final records, the
// emails SES holds, the cursor, and how many requests each endpoint saw, so a retry loop that
// spins or an SDK that resends on its own fails the test.

// --- fault primitives, usable on either fake ---

// fault answers (or refuses to answer) one intercepted request.
type fault func(w http.ResponseWriter, r *http.Request)

// status answers a WorkOS-style error, with a Retry-After header when retryAfter is set.
// retryAfter runs at answer time so an HTTP date can be relative to then.
func status(code int, retryAfter func() string) fault {
	return func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != nil {
			w.Header().Set("Retry-After", retryAfter())
		}
		fakeworkos.WriteError(w, code, "", http.StatusText(code))
	}
}

func seconds(s string) func() string { return func() string { return s } }

// httpDate is a Retry-After as an HTTP date d from now (whole seconds: the wait is at least d-1s).
func httpDate(d time.Duration) func() string {
	return func() string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
}

func sesError(code int, errType string) fault {
	return func(w http.ResponseWriter, r *http.Request) {
		fakeses.WriteError(w, code, errType, "injected "+errType)
	}
}

// hang answers nothing until the client gives up and closes the connection.
func hang(w http.ResponseWriter, r *http.Request) {
	// A fully read body lets the server notice the client leaving.
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-time.After(20 * time.Second): // a safety net for a broken client timeout, not a wait
	}
}

// drop closes the connection without an answer; with rst the close sends a TCP reset.
func drop(rst bool) fault {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok && rst {
			_ = tc.SetLinger(0)
		}
		_ = conn.Close()
	}
}

// body answers 200 with the given body as is: truncated or malformed JSON, an HTML error page.
func body(contentType, b string) fault {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, b)
	}
}

// cutShort answers 200 declaring a longer body than it sends; the server then closes the
// connection mid-body.
func cutShort(b string) fault {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)+100))
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, b)
	}
}

// stall answers 200 with its headers and the start of a body, then nothing more until the
// client gives up: an answer that stalls after its headers.
func stall(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `{"object":`)
	w.(http.Flusher).Flush()
	hang(w, r)
}

// otherObject answers 200 with an object of another type under the id asked for.
func otherObject(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "organization", "id": path.Base(r.URL.Path), "name": "Globex"})
}

// acceptThen lets the fake SES accept and record the message, then answers with then instead
// of the success: the client cannot know the message went out.
func acceptThen(ses *fakeses.Server, then fault) fault {
	return func(w http.ResponseWriter, r *http.Request) {
		ses.Record(r)
		then(w, r)
	}
}

// hit is one request an injector saw.
type hit struct {
	path    string
	at      time.Time
	faulted bool
}

// injector faults the first n requests that match and passes the rest through.
type injector struct {
	match func(*http.Request) bool
	n     int
	fault fault

	mu   sync.Mutex
	hits []hit
}

func (in *injector) intercept(w http.ResponseWriter, r *http.Request) bool {
	if in.match != nil && !in.match(r) {
		return false
	}
	in.mu.Lock()
	faulted := len(in.hits) < in.n
	in.hits = append(in.hits, hit{path: r.URL.Path, at: time.Now(), faulted: faulted})
	in.mu.Unlock()
	if !faulted {
		return false
	}
	in.fault(w, r)
	return true
}

func (in *injector) seen() []hit {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]hit(nil), in.hits...)
}

// checkGaps fails when a faulted request was followed by a request to the same path sooner
// than min (a Retry-After not honoured).
func (in *injector) checkGaps(t *testing.T, min time.Duration) {
	t.Helper()
	hits := in.seen()
	for i, h := range hits {
		if !h.faulted {
			continue
		}
		for _, next := range hits[i+1:] {
			if next.path == h.path {
				if gap := next.at.Sub(h.at); gap < min {
					t.Errorf("%s asked again %v after a Retry-After of %v", h.path, gap, min)
				}
				break
			}
		}
	}
}

func pathPrefix(p string) func(*http.Request) bool {
	return func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, p) }
}

type sendEmailBody struct {
	Destination struct{ ToAddresses, CcAddresses, BccAddresses []string }
}

// readSend decodes a SendEmail request's destination and puts the body back for the fake.
func readSend(r *http.Request) (sendEmailBody, bool) {
	var in sendEmailBody
	if r.Method != http.MethodPost || r.URL.Path != "/v2/email/outbound-emails" {
		return in, false
	}
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return in, json.Unmarshal(b, &in) == nil
}

// sendTo matches SendEmail requests to exactly addr.
func sendTo(addr string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		in, ok := readSend(r)
		return ok && len(in.Destination.ToAddresses) == 1 && in.Destination.ToAddresses[0] == addr
	}
}

// --- harness additions ---

// workerWith is harness.worker with the WorkOS client timeout chosen by the test.
func (h *harness) workerWith(wosTimeout time.Duration) *Worker {
	h.t.Helper()
	templates, err := mailer.LoadTemplates(mailer.TemplateOptions{Brand: mailer.Brand{Name: "Acme"}})
	if err != nil {
		h.t.Fatal(err)
	}
	enc := zap.NewProductionEncoderConfig()
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(h.logs), zapcore.DebugLevel))
	return New(h.opts, workosapi.New(testAPIKey, h.wosURL, wosTimeout, nil), h.store, h.ses2, templates, log)
}

// runWith runs w until the stream is drained.
func (h *harness) runWith(w *Worker) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// useSESTimeout replaces the SES client with one whose SendEmail gives up after d.
func (h *harness) useSESTimeout(d time.Duration) {
	h.t.Helper()
	var err error
	h.ses2, err = mailer.NewSES(context.Background(), mailer.SESOptions{
		Region: "us-east-1", Endpoint: h.ses.URL(), From: "Acme <no-reply@acme.example>",
		ReplyTo: "help@acme.example", ConfigurationSet: "transactional", Timeout: d,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secretkeytest", ""),
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

// assertSent checks that SES holds exactly one message per wanted event (event id -> recipient),
// to that single recipient and tagged with the event id, and no other message.
func assertSent(t *testing.T, h *harness, want map[string]string) {
	t.Helper()
	got := map[string]int{}
	for _, m := range h.ses.Messages() {
		id := m.Tags["event_id"]
		got[id]++
		if len(m.To) != 1 || m.To[0] != want[id] {
			t.Errorf("message for event %q went to %q, want only %q", id, m.To, want[id])
		}
	}
	for id, to := range want {
		if got[id] != 1 {
			t.Errorf("event %s: %d messages to %s, want exactly 1", id, got[id], to)
		}
	}
	for id, n := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("event %q: %d unexpected messages", id, n)
		}
	}
}

func assertState(t *testing.T, h *harness, eventID string, state store.State, reason string) store.Delivery {
	t.Helper()
	d := h.delivery(eventID)
	if d.State != state || !strings.Contains(d.Reason, reason) {
		t.Errorf("event %s: %s %q, want %s with %q", eventID, d.State, d.Reason, state, reason)
	}
	return d
}

// --- 1. WorkOS faults on the Events list and on the Get endpoints ---

func TestWorkOSFaults(t *testing.T) {
	const (
		list    = "/events"
		magic   = "/user_management/magic_auth/"
		inv     = "/user_management/invitations/"
		org     = "/organizations/"
		users   = "/user_management/users/"
		resets  = "/user_management/password_reset/"
		short   = time.Second // WorkOS client timeout of the hang cases
		generic = 5 * time.Second
	)
	type wosFault struct {
		name  string
		n     int // the next n requests to the target fail, then it recovers
		fault fault
		// charged: a failure of one object (a 500 on a Get) counts against max_attempts; the
		// others are outages and must not.
		charged bool
		// minGap: Retry-After; the same path must not be asked again sooner.
		minGap  time.Duration
		timeout time.Duration
		// only limits the case to these targets.
		only []string
		// replayable: a connection that dies before the answer; net/http may resend a GET.
		replayable bool
		// logs: what the log must say about the fault.
		logs string
	}
	faults := []wosFault{
		{name: "429 without Retry-After", n: 3, fault: status(429, nil)},
		{name: "429 Retry-After seconds", n: 1, fault: status(429, seconds("1")), minGap: time.Second, only: []string{list, org}},
		{name: "503 Retry-After HTTP date", n: 1, fault: status(503, httpDate(2*time.Second)), minGap: time.Second, only: []string{magic}},
		{name: "500 burst", n: 3, fault: status(500, nil), charged: true},
		{name: "502 burst", n: 3, fault: status(502, nil)},
		{name: "503 burst", n: 3, fault: status(503, nil)},
		{name: "401 while the key rotates", n: 2, fault: status(401, nil)},
		{name: "timeout", n: 1, fault: hang, timeout: short},
		{name: "answer stalls after its headers", n: 2, fault: stall, timeout: short, logs: "the read timed out"},
		{name: "200 with an empty object", n: 2, fault: body("application/json", `{}`), only: []string{magic}, logs: "no object id"},
		{name: "200 with an object of another type", n: 2, fault: otherObject, only: []string{magic}, logs: `type \"organization\"`},
		{name: "connection closed without answer", n: 3, fault: drop(false), replayable: true},
		{name: "connection reset", n: 3, fault: drop(true), replayable: true},
		{name: "truncated JSON 200", n: 3, fault: body("application/json", `{"object":"list","data":[{"object":"event","id":"event_01`)},
		{name: "malformed JSON 200", n: 3, fault: body("application/json", `{"object":"list",,"data":[}`)},
		{name: "JSON of the wrong shape 200", n: 2, fault: body("application/json", `{"data":"none","id":7,"list_metadata":[]}`)},
		{name: "body cut short", n: 2, fault: cutShort(`{"object":"list","data":[`)},
		{name: "event without an id", n: 2, only: []string{list}, fault: body("application/json",
			`{"object":"list","data":[{"object":"event","id":"","event":"magic_auth.created","data":{"id":"magic_auth_01X"},"created_at":"2026-01-01T00:00:00.000Z"}],"list_metadata":{"after":null}}`)},
		{name: "event id that is no WorkOS id", n: 2, only: []string{list}, logs: "not a WorkOS event id", fault: body("application/json",
			`{"object":"list","data":[{"object":"event","id":"event_01\u0000 x","event":"magic_auth.created","data":{"id":"magic_auth_01X"},"created_at":"2026-01-01T00:00:00.000Z"}],"list_metadata":{"after":null}}`)},
	}
	for _, target := range []string{list, magic, org} {
		for _, f := range faults {
			if f.only != nil && !slices.Contains(f.only, target) {
				continue
			}
			t.Run(path.Base(target)+" "+f.name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t)
				charged := f.charged && target != list
				h.opts.MaxAttempts = 1 // an outage charged as an attempt would make the event dead
				if charged {
					h.opts.MaxAttempts = 10
				}
				now := time.Now()
				orgID := h.wos.AddOrganization("Globex")
				inviter := h.wos.AddUser("Hank", "Scorpio", "hank@globex.example")
				e1, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", now.Add(time.Hour))
				e2, _, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "inv@example.com", ExpiresAt: now.Add(time.Hour), OrganizationID: orgID, InviterUserID: inviter})
				e3, _, _ := h.wos.AddPasswordReset("r@example.com", "user_02", now.Add(time.Hour))
				e4, _, _ := h.wos.AddCode("magic_auth", "m@example.com", "user_03", now.Add(time.Hour))
				in := &injector{match: pathPrefix(target), n: f.n, fault: f.fault}
				h.wos.Intercept = in.intercept
				timeout := f.timeout
				if timeout == 0 {
					timeout = generic
				}
				h.runWith(h.workerWith(timeout))

				want := map[string]string{e1: "a@example.com", e2: "inv@example.com", e3: "r@example.com", e4: "m@example.com"}
				for id := range want {
					assertState(t, h, id, store.Sent, "")
				}
				assertSent(t, h, want)
				if c := h.cursor(); c != e4 {
					t.Errorf("cursor %q, want the last event %q", c, e4)
				}
				// What success needs: one page with the events and one empty page; one Get per
				// object; one user read each for the inviter's name and for the locale of the
				// three users the codes and the reset name. The faulted requests come on top,
				// and nothing else.
				requests := map[string]int{list: 2, magic: 2, inv: 1, org: 1, users: 4, resets: 1}
				requests[target] += f.n
				slack := map[string]int{}
				if target == org {
					// A failed try is retried from the start, so the invitation is read again;
					// unless net/http itself replayed the GET on a fresh connection after a reused
					// one died (it may for idempotent requests), and the worker saw no failure.
					requests[inv] += f.n
					if f.replayable {
						requests[inv] -= f.n
						slack[inv] = f.n
					}
				}
				for p, n := range requests {
					if got := h.wos.Requests(p); got < n || got > n+slack[p] {
						t.Errorf("%d requests to %s, want %d (+%d)", got, p, n, slack[p])
					}
				}
				attempts := 0
				for id := range want {
					attempts += h.delivery(id).Attempts
				}
				wantAttempts := len(want)
				if charged {
					wantAttempts += f.n
				}
				if attempts != wantAttempts {
					t.Errorf("%d attempts charged in all, want %d", attempts, wantAttempts)
				}
				if n := h.ses.SendRequests(); n != len(want) {
					t.Errorf("%d SendEmail requests, want %d", n, len(want))
				}
				if f.minGap > 0 {
					in.checkGaps(t, f.minGap)
				}
				if !strings.Contains(h.logs.String(), f.logs) {
					t.Errorf("the log does not say %q", f.logs)
				}
			})
		}
	}
}

// --- 1b. Bad data from WorkOS: odd events and Get answers that do not fit the event ---

func TestWorkOSBadData(t *testing.T) {
	const good = "good@example.com"
	type dataCase struct {
		name string
		// seed adds the event under test; it runs before the trailing good event is added.
		seed   func(h *harness) string
		state  store.State
		reason string
		gets   int    // requests to the Get endpoints for this event
		sentTo string // recipient when it is sent
	}
	hour := func() string { return time.Now().Add(time.Hour).UTC().Format(time.RFC3339) }
	raw := func(typ, data string) func(h *harness) string {
		return func(h *harness) string { return h.wos.AddRawEvent(typ, json.RawMessage(data)) }
	}
	// code adds a live magic_auth code and changes its object as WorkOS will then return it.
	code := func(fields map[string]any) func(h *harness) string {
		return func(h *harness) string {
			ev, obj, _ := h.wos.AddCode("magic_auth", "x@example.com", "user_01", time.Now().Add(time.Hour))
			h.wos.Update(obj, fields)
			return ev
		}
	}
	cases := []dataCase{
		{name: "unknown event type", seed: raw("user.deleted", `{"id":"user_01X","email":"x@example.com"}`),
			state: store.Skipped, reason: `event type "user.deleted" is not handled`},
		{name: "empty event type", seed: raw("", `{"id":"magic_auth_01X","email":"x@example.com"}`),
			state: store.Skipped, reason: "is not handled"},
		{name: "no data.id", seed: raw("magic_auth.created", `{"object":"magic_auth","email":"x@example.com"}`),
			state: store.Dead, reason: "names no magic_auth object"},
		{name: "data.id is a path", seed: raw("magic_auth.created", `{"id":"magic_auth_01/../../users/user_01","email":"x@example.com"}`),
			state: store.Dead, reason: "no valid object id"},
		{name: "empty data", seed: raw("magic_auth.created", `{}`), state: store.Dead, reason: "names no magic_auth object"},
		{name: "data null", seed: raw("password_reset.created", `null`), state: store.Dead, reason: "names no password_reset object"},
		{name: "data.user_id is a path", seed: raw("password_reset.created", `{"id":"password_reset_01X","user_id":"user_01/../x"}`),
			state: store.Dead, reason: "no valid object id"},
		{name: "data a string", seed: raw("magic_auth.created", `"magic_auth_01X"`), state: store.Dead, reason: "not a JSON object"},
		{name: "data an array", seed: raw("invitation.created", `[{"id":"invitation_01X"}]`), state: store.Dead, reason: "not a JSON object"},
		{name: "data a number", seed: raw("email_verification.created", `42`), state: store.Dead, reason: "not a JSON object"},
		{name: "data.id of the wrong type", seed: raw("magic_auth.created", `{"id":7,"email":"x@example.com"}`),
			state: store.Dead, reason: "no valid object id (id is 7)"},
		{name: "no email in the event: the object's address is used", seed: func(h *harness) string {
			id := h.wos.AddObject("magic_auth", map[string]any{"email": "x@example.com", "code": "123456", "expires_at": hour()})
			return h.wos.AddRawEvent("magic_auth.created", json.RawMessage(`{"object":"magic_auth","id":"`+id+`"}`))
		}, state: store.Sent, gets: 1, sentTo: "x@example.com"},
		{name: "created_at decades off", seed: func(h *harness) string {
			h.wos.Now = func() time.Time { return time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC) }
			defer func() { h.wos.Now = time.Now }()
			ev, _, _ := h.wos.AddCode("magic_auth", "x@example.com", "user_01", time.Now().Add(time.Hour))
			return ev
		}, state: store.Sent, gets: 1, sentTo: "x@example.com"},
		{name: "Get 404", seed: code(nil), state: store.Skipped, reason: "not found", gets: 1},
		{name: "Get returns another email", seed: code(map[string]any{"email": "other@example.com"}),
			state: store.Dead, reason: "email differs", gets: 1},
		{name: "Get returns another object id", seed: code(map[string]any{"id": "magic_auth_01OTHER"}),
			state: store.Dead, reason: `returned object "magic_auth_01OTHER"`, gets: 1},
		{name: "Get returns no expires_at", seed: code(map[string]any{"expires_at": nil}),
			state: store.Dead, reason: "no valid expires_at", gets: 1},
		{name: "Get returns no code", seed: code(map[string]any{"code": nil}), state: store.Dead, reason: "no code", gets: 1},
		{name: "Get returns a javascript: link", seed: func(h *harness) string {
			ev, obj, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "x@example.com", ExpiresAt: time.Now().Add(time.Hour)})
			h.wos.Update(obj, map[string]any{"accept_invitation_url": "javascript:alert(1)//"})
			return ev
		}, state: store.Dead, reason: "not an absolute http(s) URL", gets: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			// A WorkOS that also sends types the worker did not ask for.
			h.wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/events" {
					h.wos.ServeAllTypes(w, r)
					return true
				}
				return false
			}
			ev := tc.seed(h)
			last, _, _ := h.wos.AddCode("magic_auth", good, "user_09", time.Now().Add(time.Hour))
			h.run()

			d := assertState(t, h, ev, tc.state, tc.reason)
			if tc.state == store.Dead && d.Attempts > 1 {
				t.Errorf("a bad event was tried %d times", d.Attempts)
			}
			want := map[string]string{last: good}
			if tc.sentTo != "" {
				want[ev] = tc.sentTo
			}
			assertSent(t, h, want)
			if n := h.ses.SendRequests(); n != len(want) {
				t.Errorf("%d SendEmail requests, want %d", n, len(want))
			}
			if c := h.cursor(); c != last {
				t.Errorf("cursor %q, want the last event %q", c, last)
			}
			// The good event's Get plus the case's: a final answer is never asked again. (User
			// reads, for the reader's locale, are not Gets of the event's object.)
			gets := h.wos.Requests("/user_management/") - h.wos.Requests("/user_management/users/") + h.wos.Requests("/organizations/")
			if gets != 1+tc.gets {
				t.Errorf("%d Get requests, want %d", gets, 1+tc.gets)
			}
			if n := h.wos.Requests("/events"); n != 2 {
				t.Errorf("%d list requests, want 2", n)
			}
		})
	}
}

// --- 1c. Loops that cannot make progress stay bounded by their waits ---

func TestWaitingLoopsAreBounded(t *testing.T) {
	const wait = 50 * time.Millisecond
	type loopCase struct {
		name  string
		setup func(h *harness)
		count func(h *harness) int
		// minDelay is the shortest wait the worker may make between two requests.
		minDelay time.Duration
	}
	listCount := func(h *harness) int { return h.wos.Requests("/events") }
	getCount := func(h *harness) int { return h.wos.Requests("/user_management/magic_auth/") }
	sendCount := func(h *harness) int { return h.ses.SendRequests() }
	oneEvent := func(h *harness) {
		h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	}
	alwaysWOS := func(f fault) func(h *harness) {
		return func(h *harness) {
			oneEvent(h)
			in := &injector{match: pathPrefix("/user_management/"), n: 1 << 30, fault: f}
			h.wos.Intercept = in.intercept
		}
	}
	alwaysSES := func(f fault) func(h *harness) {
		return func(h *harness) {
			oneEvent(h)
			h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool { f(w, r); return true }
		}
	}
	cases := []loopCase{
		{name: "idle empty stream", setup: func(h *harness) {}, count: listCount, minDelay: wait},
		{name: "events list always 503", setup: func(h *harness) {
			h.wos.Intercept = (&injector{match: pathPrefix("/events"), n: 1 << 30, fault: status(503, nil)}).intercept
		}, count: listCount, minDelay: wait / 2},
		{name: "Get always 500", setup: alwaysWOS(status(500, nil)), count: getCount, minDelay: wait / 2},
		{name: "Get always 429", setup: alwaysWOS(status(429, nil)), count: getCount, minDelay: wait / 2},
		{name: "Get always malformed", setup: alwaysWOS(body("application/json", "{")), count: getCount, minDelay: wait / 2},
		{name: "SES always throttled", setup: alwaysSES(sesError(429, "TooManyRequestsException")), count: sendCount, minDelay: wait / 2},
		{name: "SES always 500", setup: alwaysSES(sesError(500, "InternalFailure")), count: sendCount, minDelay: wait / 2},
		{name: "SES account paused", setup: alwaysSES(sesError(400, "SendingPausedException")), count: sendCount, minDelay: wait / 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.opts.PollInterval = wait
			// Backoff and pause waits are jittered in [d/2, d]: at least wait/2 between tries.
			h.opts.RetryBase, h.opts.RetryMax, h.opts.PausedRetry = wait, wait, wait
			h.opts.MaxAttempts = 1 << 20
			tc.setup(h)
			start := time.Now()
			stop := h.runBackground()
			eventually(t, "several requests", func() bool { return tc.count(h) >= 5 })
			stop()
			elapsed := time.Since(start)
			// Each request after the first waited at least minDelay: however slow or fast the
			// machine, no more than this many fit in the time that passed.
			if n, bound := tc.count(h), 1+int(elapsed/tc.minDelay); n > bound {
				t.Errorf("%d requests in %v, want at most %d (one per %v)", n, elapsed, bound, tc.minDelay)
			}
			if n := h.ses.Messages(); len(n) != 0 {
				t.Errorf("%d messages sent during a fault that never clears", len(n))
			}
		})
	}
}

// --- 2. SES faults ---

func TestSESFaults(t *testing.T) {
	const target = "b@example.com"
	type sesCase struct {
		name  string
		n     int // the next n sends to target fail
		fault func(h *harness) fault
		state store.State
		// reason the final record gives when it is not sent.
		reason string
		// attempts charged to the target event.
		attempts int
		// maxAttempts; 1 proves an outage is not charged.
		maxAttempts int
		timeout     time.Duration
		// accepted: SES holds the message although the client got no usable answer.
		accepted bool
	}
	plain := func(f fault) func(h *harness) fault { return func(*harness) fault { return f } }
	accept := func(then fault) func(h *harness) fault {
		return func(h *harness) fault { return acceptThen(h.ses, then) }
	}
	cases := []sesCase{
		{name: "TooManyRequestsException 429", n: 3, fault: plain(sesError(429, "TooManyRequestsException")),
			state: store.Sent, attempts: 1, maxAttempts: 1},
		{name: "ThrottlingException 400", n: 3, fault: plain(sesError(400, "ThrottlingException")),
			state: store.Sent, attempts: 1, maxAttempts: 1},
		{name: "Throttling 400 (SES v1 style)", n: 3, fault: plain(sesError(400, "Throttling")),
			state: store.Sent, attempts: 1, maxAttempts: 1},
		{name: "ServiceUnavailable 503", n: 3, fault: plain(sesError(503, "ServiceUnavailable")),
			state: store.Sent, attempts: 1, maxAttempts: 1},
		{name: "InternalFailure 500 is charged", n: 2, fault: plain(sesError(500, "InternalFailure")),
			state: store.Sent, attempts: 3, maxAttempts: 10},
		{name: "MessageRejected for one recipient", n: 1, fault: plain(sesError(400, "MessageRejected")),
			state: store.Dead, reason: "MessageRejected", attempts: 1, maxAttempts: 10},
		{name: "SendingPausedException", n: 4, fault: plain(sesError(400, "SendingPausedException")),
			state: store.Sent, attempts: 1, maxAttempts: 1},
		{name: "AccountSuspendedException", n: 4, fault: plain(sesError(400, "AccountSuspendedException")),
			state: store.Sent, attempts: 1, maxAttempts: 1},
		{name: "accepted then connection closed", n: 1, fault: accept(drop(false)),
			state: store.Ambiguous, reason: "outcome unknown", attempts: 1, maxAttempts: 10, accepted: true},
		{name: "accepted then connection reset", n: 1, fault: accept(drop(true)),
			state: store.Ambiguous, reason: "outcome unknown", attempts: 1, maxAttempts: 10, accepted: true},
		{name: "accepted then no answer within the client timeout", n: 1, fault: accept(hang), timeout: time.Second,
			state: store.Ambiguous, reason: "outcome unknown", attempts: 1, maxAttempts: 10, accepted: true},
		{name: "accepted then success answer cut short", n: 1, fault: accept(cutShort(`{"MessageId":"0100`)),
			state: store.Ambiguous, reason: "unreadable success answer", attempts: 1, maxAttempts: 10, accepted: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.opts.MaxAttempts = tc.maxAttempts
			if tc.timeout > 0 {
				h.useSESTimeout(tc.timeout)
			}
			now := time.Now()
			a, _, _ := h.wos.AddCode("magic_auth", "a@example.com", "user_01", now.Add(time.Hour))
			b, _, _ := h.wos.AddCode("magic_auth", target, "user_02", now.Add(time.Hour))
			c, _, _ := h.wos.AddCode("magic_auth", "c@example.com", "user_03", now.Add(time.Hour))
			in := &injector{match: sendTo(target), n: tc.n, fault: tc.fault(h)}
			h.ses.Intercept = in.intercept
			h.run()

			assertState(t, h, a, store.Sent, "")
			assertState(t, h, c, store.Sent, "")
			d := assertState(t, h, b, tc.state, tc.reason)
			if d.Attempts != tc.attempts {
				t.Errorf("target charged %d attempts, want %d", d.Attempts, tc.attempts)
			}
			want := map[string]string{a: "a@example.com", c: "c@example.com"}
			if tc.state == store.Sent || tc.accepted {
				want[b] = target
			}
			assertSent(t, h, want)
			// Every try of the worker is one request: the SDK never resends on its own.
			wantRequests := 2 + tc.n
			if tc.state == store.Sent {
				wantRequests++
			}
			if n := h.ses.SendRequests(); n != wantRequests {
				t.Errorf("%d SendEmail requests, want %d", n, wantRequests)
			}
			if cur := h.cursor(); cur != c {
				t.Errorf("cursor %q, want the last event %q", cur, c)
			}
			// A final record is never sent again, not even after a restart and a backfill.
			h.restart()
			if err := h.store.ResetCursor(time.Time{}); err != nil {
				t.Fatal(err)
			}
			h.run()
			if n := h.ses.SendRequests(); n != wantRequests {
				t.Errorf("a backfill made %d more SendEmail requests", n-wantRequests)
			}
		})
	}
}

// --- 3. Hostile input through the whole pipeline ---

func TestHostileNamesAreEscapedThroughThePipeline(t *testing.T) {
	const hostile = `<script>alert(1)</script> "' ` + "\r\nBcc: evil@y.example\r\n" + ` Zoë 日本 👋 ` + "\u202eevil\u202c\u200f"
	h := newHarness(t)
	orgID := h.wos.AddOrganization("Org " + hostile)
	inviter := h.wos.AddUser("First "+hostile, "Last "+hostile, `"><script>alert(2)</script>@x.example`)
	ev, _, token := h.wos.AddInvitation(fakeworkos.Invitation{Email: "inv@example.com", ExpiresAt: time.Now().Add(time.Hour),
		OrganizationID: orgID, InviterUserID: inviter})
	h.run()

	assertState(t, h, ev, store.Sent, "")
	assertSent(t, h, map[string]string{ev: "inv@example.com"})
	m := h.sentTo("inv@example.com")[0]
	if strings.Contains(strings.ToLower(m.HTML), "<script") {
		t.Errorf("raw <script> in the HTML:\n%s", m.HTML)
	}
	for _, s := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;script&gt;alert(2)&lt;/script&gt;", "&#34;&#39;", "Zoë 日本 👋"} {
		if !strings.Contains(m.HTML, s) {
			t.Errorf("HTML lacks %q: names not escaped (or lost)", s)
		}
	}
	if strings.Contains(m.HTML, `"'`) {
		t.Error(`unescaped "' in the HTML`)
	}
	if strings.ContainsAny(m.Subject, "\r\n") || !utf8.ValidString(m.Subject) {
		t.Errorf("subject %q is not one valid line", m.Subject)
	}
	if !strings.Contains(m.Subject, "Zoë 日本 👋") {
		t.Errorf("subject %q lost the Unicode name", m.Subject)
	}
	if !utf8.ValidString(m.Text) || !strings.Contains(m.Text, "Zoë 日本 👋") || !strings.Contains(m.Text, token) {
		t.Errorf("text body is not valid UTF-8 with the names and the link:\n%s", m.Text)
	}
	if strings.ContainsRune(m.Text, 0) || strings.Contains(m.Text, "\r") {
		t.Error("NUL or CR in the text body")
	}
	for _, line := range strings.Split(m.Text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "Bcc:") {
			t.Errorf("a name broke the text body into a line of its own: %q", line)
		}
	}
	// The names reach no address field.
	if len(m.To) != 1 || len(m.ReplyTo) != 1 || m.From != "Acme <no-reply@acme.example>" || m.ReplyTo[0] != "help@acme.example" {
		t.Errorf("addresses changed: from %q to %q reply-to %q", m.From, m.To, m.ReplyTo)
	}
}

func TestHostileRecipientsAreDeadAndNeverReachSES(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	var destinations []sendEmailBody
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if in, ok := readSend(r); ok {
			mu.Lock()
			destinations = append(destinations, in)
			mu.Unlock()
		}
		return false
	}
	bad := []string{
		"a@x.example\r\nBcc: evil@y.example",
		"a@x.example\nBcc: evil@y.example",
		"a@x.example\rBcc: evil@y.example",
		"a@x.example, evil@y.example",
		"a@x.example,evil@y.example",
		"a@x.example; evil@y.example",
		"Eve <evil@y.example>",
		`"Eve" <evil@y.example>`,
		"=?utf-8?q?Eve?= <evil@y.example>",
		"<evil@y.example>",
		"evil@y.example (Eve)",
		"undisclosed-recipients:;",
		"friends: a@x.example, evil@y.example;",
		"evil@y.example\x00",
		"evil@y.example\n",
		"evil",
	}
	now := time.Now()
	ids := map[string]string{}
	for _, addr := range bad {
		// The event and the object agree, so only the recipient check stands between the
		// address and SES.
		ev, _, _ := h.wos.AddCode("magic_auth", addr, "user_01", now.Add(time.Hour))
		ids[addr] = ev
	}
	good, _, _ := h.wos.AddCode("magic_auth", "ok@example.com", "user_02", now.Add(time.Hour))
	h.run()

	for _, addr := range bad {
		t.Run(fmt.Sprintf("%q", addr), func(t *testing.T) {
			d := assertState(t, h, ids[addr], store.Dead, "invalid recipient")
			if strings.Contains(d.Reason, "evil") {
				t.Errorf("the reason echoes the address: %q", d.Reason)
			}
		})
	}
	assertSent(t, h, map[string]string{good: "ok@example.com"})
	mu.Lock()
	defer mu.Unlock()
	if len(destinations) != 1 || h.ses.SendRequests() != 1 {
		t.Fatalf("%d SendEmail requests (%d decoded), want only the good one", h.ses.SendRequests(), len(destinations))
	}
	dst := destinations[0].Destination
	if len(dst.ToAddresses) != 1 || dst.ToAddresses[0] != "ok@example.com" || len(dst.CcAddresses)+len(dst.BccAddresses) != 0 {
		t.Errorf("destination %+v, want only ok@example.com", dst)
	}
	if h.cursor() != good {
		t.Error("cursor did not move past the dead events")
	}
}

// Names WorkOS holds may hide letters (zero-width characters) or be any length; what reaches the
// email shows what a reader sees, cut to a sensible length.
func TestInvisibleAndHugeNamesThroughThePipeline(t *testing.T) {
	h := newHarness(t)
	orgID := h.wos.AddOrganization("Goo\u200bgle\u2060 " + strings.Repeat("Enterprises ", 1000))
	inviter := h.wos.AddUser("Pay\u200dPal", "Support", "support@paypal.example")
	ev, _, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "inv@example.com", ExpiresAt: time.Now().Add(time.Hour),
		OrganizationID: orgID, InviterUserID: inviter})
	h.run()

	assertState(t, h, ev, store.Sent, "")
	m := h.sentTo("inv@example.com")[0]
	for _, part := range []string{m.Subject, m.HTML, m.Text} {
		if strings.ContainsAny(part, "\u200b\u2060\u200d") {
			t.Errorf("an invisible character reached the email: %q", part[:min(len(part), 200)])
		}
	}
	if !strings.Contains(m.Subject, "Google Enterprises") || !strings.Contains(m.Subject, "…") {
		t.Errorf("subject %q: want the visible name, cut with an ellipsis", m.Subject)
	}
	if n := utf8.RuneCountInString(m.Subject); n > 200 {
		t.Errorf("subject of %d characters", n)
	}
	if !strings.Contains(m.Text, "PayPal Support") || len(m.Text) > 8<<10 {
		t.Errorf("text body of %d bytes, want the inviter's visible name and no 12 kB organization name", len(m.Text))
	}
}
