package sendapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/internal/sealed"
	"github.com/workos-emailer/workos-emailer/internal/syncbuf"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/sendapi"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

const (
	workosKey = "sk_test_sendapi_0123456789"
	token     = "send-api-token-0123456789abcdefghijklmnop"
	oldToken  = "send-api-old-token-0123456789abcdefghijkl"
)

// daemon is the real pipeline behind the API: a bbolt store, the worker running, the fake
// WorkOS and SES through the real SDK clients, and the API on a loopback port.
type daemon struct {
	url    string
	wos    *fakeworkos.Server
	ses    *fakeses.Server
	store  *store.Store
	dbPath string
	logs   *syncbuf.Buffer
}

func start(t *testing.T) *daemon {
	t.Helper()
	d := &daemon{wos: fakeworkos.New(workosKey), ses: fakeses.New(), logs: &syncbuf.Buffer{}}
	wosURL := d.wos.Start()
	t.Cleanup(d.wos.Close)
	sesURL := d.ses.Start()
	t.Cleanup(d.ses.Close)
	ses, err := mailer.NewSES(context.Background(), mailer.SESOptions{Region: "us-east-1", Endpoint: sesURL,
		From: "Acme <no-reply@acme.example>", Timeout: 2 * time.Second,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	d.dbPath = t.TempDir() + "/state.db"
	d.store, err = store.Open(d.dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	templates, err := mailer.LoadTemplates(mailer.TemplateOptions{Brand: mailer.Brand{Name: "Acme"}})
	if err != nil {
		t.Fatal(err)
	}
	box, err := sealed.New(token, oldToken)
	if err != nil {
		t.Fatal(err)
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(d.logs), zapcore.InfoLevel))
	w := worker.New(worker.Options{PollInterval: 10 * time.Millisecond, RetryBase: time.Millisecond, RetryMax: 10 * time.Millisecond,
		Kinds: append(kinds.Defaults(), kinds.MagicLink), Sealer: box},
		workosapi.New(workosKey, wosURL, 2*time.Second, nil), d.store, ses, templates, log)
	srv := serve(t, w, sendapi.Options{Tokens: []string{token, oldToken}, Log: log})
	d.url = srv.URL
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		_ = d.store.Close()
	})
	return d
}

// serve runs the API's routes on a loopback port, as api.listen does.
func serve(t *testing.T, a sendapi.Acceptor, opts sendapi.Options) *httptest.Server {
	t.Helper()
	api, err := sendapi.New(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for path, h := range api.Routes() {
		mux.Handle(path, h)
	}
	return httptest.NewServer(mux)
}

type reply struct {
	status int
	header http.Header
	ID     string `json:"id"`
	State  string `json:"state"`
	Error  struct {
		Code, Field, Message string
	} `json:"error"`
}

// post calls POST /v1/magic_link with headers ("Authorization" defaults to the token; "" drops it).
func (d *daemon) post(t *testing.T, body string, headers map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, d.url+"/v1/magic_link", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return r
}

func (d *daemon) sentTo(addr string) int {
	n := 0
	for _, m := range d.ses.Messages() {
		if len(m.To) == 1 && strings.EqualFold(m.To[0], addr) {
			n++
		}
	}
	return n
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOnlyTheTokenGetsIn(t *testing.T) {
	d := start(t)
	body := `{"email":"ada@example.com"}`
	for name, auth := range map[string]string{"none": "", "wrong": "Bearer " + strings.Repeat("x", len(token)),
		"prefix": "Bearer " + token[:len(token)-1], "basic": "Basic " + token, "bare": token} {
		r := d.post(t, body, map[string]string{"Authorization": auth})
		if r.status != http.StatusUnauthorized || r.Error.Code != "unauthorized" || r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %d %+v", name, r.status, r.Error)
		}
	}
	if r := d.post(t, body, map[string]string{"Authorization": "Bearer " + oldToken}); r.status != http.StatusAccepted {
		t.Errorf("the previous token during a rotation: %d %+v", r.status, r.Error)
	}
	if strings.Contains(d.logs.String(), token[:20]) || strings.Contains(d.logs.String(), oldToken[:20]) {
		t.Error("a token is in the log")
	}
	if _, err := sendapi.New(nil, sendapi.Options{Tokens: []string{"short"}}); err == nil {
		t.Error("a short token was accepted")
	}
	if _, err := sendapi.New(nil, sendapi.Options{}); err == nil {
		t.Error("no token was accepted")
	}
}

// Bad input is refused with the field named, and nothing is recorded or sent.
func TestBadInputIsRefusedAndNothingIsSent(t *testing.T) {
	d := start(t)
	for _, c := range []struct {
		name, body string
		headers    map[string]string
		status     int
		field      string
	}{
		{"not JSON", `{"email":`, nil, 400, ""},
		{"not an object", `["ada@example.com"]`, nil, 400, ""},
		{"two values", `{"email":"a@example.com"}{"email":"b@example.com"}`, nil, 400, ""},
		{"unknown field", `{"email":"a@example.com","bcc":"b@example.com"}`, nil, 400, "bcc"},
		{"wrong type", `{"email":["a@example.com"]}`, nil, 400, "email"},
		{"oversized", `{"email":"a@example.com","state":"` + strings.Repeat("s", sendapi.MaxBodyBytes) + `"}`, nil, 400, ""},
		{"not JSON content", `email=a@example.com`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, ""},
		{"bad idempotency key", `{"email":"a@example.com"}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, 400, "Idempotency-Key"},
		{"no email", `{}`, nil, 422, "email"},
		{"invalid email", `{"email":"not-an-address"}`, nil, 422, "email"},
		{"CR/LF", `{"email":"a@example.com\r\nBcc: b@example.com"}`, nil, 422, "email"},
		{"several addresses", `{"email":"a@example.com, b@example.com"}`, nil, 422, "email"},
		{"http redirect", `{"email":"a@example.com","redirect_uri":"http://app.example.com/cb"}`, nil, 422, "redirect_uri"},
		{"relative redirect", `{"email":"a@example.com","redirect_uri":"/cb"}`, nil, 422, "redirect_uri"},
		{"bad locale", `{"email":"a@example.com","locale":"x/../y"}`, nil, 422, "locale"},
		{"bad organization", `{"email":"a@example.com","organization_id":"../org"}`, nil, 422, "organization_id"},
	} {
		r := d.post(t, c.body, c.headers)
		if r.status != c.status || r.Error.Field != c.field || r.Error.Message == "" {
			t.Errorf("%s: %d %+v, want %d naming %q", c.name, r.status, r.Error, c.status, c.field)
		}
	}
	resp, err := http.Get(d.url + "/v1/magic_link")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without a token: %d", resp.StatusCode)
	}
	if ids, _ := d.store.OpenRequests(); len(ids) != 0 || len(d.ses.Messages()) != 0 || len(d.wos.Sessions()) != 0 {
		t.Errorf("refused input left %v, %d emails, %d sessions", ids, len(d.ses.Messages()), len(d.wos.Sessions()))
	}
}

// The app retries with its Idempotency-Key, sequentially and at once: one email, one answer.
func TestIdempotentRetriesSendOnce(t *testing.T) {
	d := start(t)
	body := `{"email":"grace@example.com","redirect_uri":"https://app.example.com/cb","state":"st-9","locale":"fr"}`
	key := map[string]string{"Idempotency-Key": "signin-7f3a"}
	answers := make([]reply, 8)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = d.post(t, body, key)
		}()
	}
	wg.Wait()
	replayed := 0
	for _, a := range answers {
		if a.status != http.StatusAccepted || a.ID != answers[0].ID || !store.IsRequest(a.ID) {
			t.Fatalf("answers %+v", answers)
		}
		if a.header.Get("Idempotent-Replayed") == "true" {
			replayed++
		}
	}
	if replayed != len(answers)-1 {
		t.Errorf("%d answers marked replayed, want %d", replayed, len(answers)-1)
	}
	// Retries while it is delivered, until one says it is sent.
	eventually(t, "a retry to answer sent", func() bool {
		again := d.post(t, body, key)
		if again.status != http.StatusAccepted || again.ID != answers[0].ID {
			t.Fatalf("a retry: %d %+v", again.status, again)
		}
		return again.State == "sent"
	})
	other := d.post(t, `{"email":"someone-else@example.com"}`, key)
	if other.status != http.StatusUnprocessableEntity || other.Error.Code != "idempotency_conflict" {
		t.Errorf("another request with the key: %d %+v", other.status, other.Error)
	}
	if n := d.sentTo("grace@example.com"); n != 1 || len(d.wos.Sessions()) != 1 {
		t.Errorf("%d emails and %d sessions, want 1 and 1", n, len(d.wos.Sessions()))
	}
	msg := d.ses.Messages()[0]
	link := d.wos.Sessions()[0].Link
	if !strings.Contains(msg.HTML, link) || !strings.Contains(msg.Text, link) || !strings.Contains(msg.Subject, "Acme") {
		t.Errorf("the email lacks the link or the brand: %q", msg.Subject)
	}
	for _, secret := range []string{link, "grace@example.com", "st-9"} {
		if strings.Contains(d.logs.String(), secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	if err := d.store.Close(); err != nil { // flushes; the cleanup's Close is then a no-op
		t.Fatal(err)
	}
	raw, err := os.ReadFile(d.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{link, "grace@example.com", "st-9", "signin-7f3a"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the store file holds %q", secret)
		}
	}
}

// A few requests for one address a minute; a retry of an accepted one is never limited.
func TestOneAddressIsLimited(t *testing.T) {
	d := start(t)
	first := d.post(t, `{"email":"busy@example.com"}`, map[string]string{"Idempotency-Key": "k-1"})
	for i := 1; i < sendapi.PerAddressBurst; i++ {
		if r := d.post(t, `{"email":"Busy@example.com"}`, nil); r.status != http.StatusAccepted {
			t.Fatalf("request %d: %d %+v", i+1, r.status, r.Error)
		}
	}
	r := d.post(t, `{"email":"busy@example.com"}`, nil)
	if r.status != http.StatusTooManyRequests || r.Error.Field != "email" {
		t.Fatalf("request %d: %d %+v, want 429", sendapi.PerAddressBurst+1, r.status, r.Error)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if again := d.post(t, `{"email":"busy@example.com"}`, map[string]string{"Idempotency-Key": "k-1"}); again.status != http.StatusAccepted || again.ID != first.ID {
		t.Errorf("the retry of an accepted request was limited: %d %+v", again.status, again.Error)
	}
	if other := d.post(t, `{"email":"calm@example.com"}`, nil); other.status != http.StatusAccepted {
		t.Errorf("another address: %d", other.status)
	}
	eventually(t, "the accepted requests are sent", func() bool { return d.sentTo("busy@example.com") == sendapi.PerAddressBurst })
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`{"email":"a@example.com"}`, `{"email":"a@example.com","redirect_uri":"https://x.example/cb","state":"s","locale":"de","organization_id":"org_01H"}`,
		`{"email":1}`, `{"x":1}`, `[]`, `{"email":"a"}{}`, ``, `{"email":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, field, err := sendapi.DecodeRequest(body)
		if err != nil {
			if len(field) > 40 {
				t.Fatalf("field name not bounded: %q", field)
			}
			return
		}
		if req.Kind != kinds.MagicLink {
			t.Fatalf("decoded kind %q", req.Kind)
		}
		// Whatever decodes either validates or names its field; a valid one has no line break
		// for a header.
		if err := req.Validate(); err == nil && strings.ContainsAny(req.Email+req.State+req.RedirectURI, "\r\n") {
			t.Fatalf("validated a request with a line break: %+v", req)
		}
	})
}

// brokenStore accepts nothing: a store that cannot write (a full disk) is the one thing the
// real pipeline cannot be made to do on cue.
type brokenStore struct{ failures int }

func (b *brokenStore) Accept(r worker.Request, _ string) (worker.Accepted, error) {
	if b.failures > 0 {
		b.failures--
		return worker.Accepted{}, errors.New("disk full")
	}
	return worker.Accepted{ID: "request_01OK", State: store.Pending}, nil
}

func (b *brokenStore) Replay(worker.Request, string) (worker.Accepted, bool, error) {
	return worker.Accepted{}, false, nil
}

// A request the daemon could not record costs the address nothing: the app's retries after a
// 503 are not limited for it.
func TestFailedAcceptsDoNotCountAgainstTheAddress(t *testing.T) {
	srv := serve(t, &brokenStore{failures: 5}, sendapi.Options{Tokens: []string{token}})
	defer srv.Close()
	d := &daemon{url: srv.URL}
	for i := 0; i < 5; i++ {
		if r := d.post(t, `{"email":"ada@example.com"}`, nil); r.status != http.StatusServiceUnavailable {
			t.Fatalf("failure %d: %d %+v", i+1, r.status, r.Error)
		}
	}
	for i := 0; i < sendapi.PerAddressBurst; i++ {
		if r := d.post(t, `{"email":"ada@example.com"}`, nil); r.status != http.StatusAccepted {
			t.Fatalf("request %d after the store recovered: %d %+v", i+1, r.status, r.Error)
		}
	}
	if r := d.post(t, `{"email":"ada@example.com"}`, nil); r.status != http.StatusTooManyRequests {
		t.Errorf("one more: %d, want 429", r.status)
	}
}
