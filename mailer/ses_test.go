package mailer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go/middleware"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

// A credential refresh that fails runs inside SendEmail, on SendEmail's context, and its own
// HTTP request may well have been written: it must never count as "SES may have it". With the
// real default credential chain against a container credentials endpoint (ECS task roles,
// AWS_CONTAINER_CREDENTIALS_FULL_URI) that answers once and then fails.
func TestSESCredentialRefreshFailureIsNeverAmbiguous(t *testing.T) {
	var credRequests, failing atomic.Int64
	failing.Store(1)
	creds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if credRequests.Add(1) > 1 && failing.Load() == 1 {
			http.Error(w, `{"code":"InternalError","message":"credentials endpoint down"}`, http.StatusInternalServerError)
			return
		}
		// Valid for a minute: inside the SDK's 5-minute expiry window, so the next use of
		// the credentials (the one inside SendEmail) refreshes them.
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId": "AKIDCONTAINER", "SecretAccessKey": "container-secret", "Token": "container-token",
			"Expiration": time.Now().Add(time.Minute).UTC().Format(time.RFC3339),
		})
	}))
	t.Cleanup(creds.Close)
	for _, env := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"} {
		t.Setenv(env, "")
	}
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", creds.URL+"/creds")

	fake := fakeses.New()
	url := fake.Start()
	t.Cleanup(fake.Close)
	s, err := NewSES(context.Background(), SESOptions{Region: "us-east-1", Endpoint: url, From: "no-reply@acme.example", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	msg := Message{To: "a@example.com", Subject: "s", HTML: "h", Text: "t", EventID: "event_1", Kind: "magic_auth"}
	// The first send finds valid credentials; the SDK's own look inside SendEmail refreshes
	// them and fails. The second fails already before SendEmail.
	for i := range 2 {
		_, err := s.Send(context.Background(), msg)
		if c := ClassOf(err); err == nil || c == Ambiguous {
			t.Fatalf("send %d: %v (class %s), want a failure that says nothing reached SES", i, err, c)
		}
		if i > 0 && (ClassOf(err) != Paused || PauseReason(err) != "AWS credentials cannot be resolved") {
			t.Errorf("send %d: %v (class %s), want paused: AWS credentials cannot be resolved", i, err, ClassOf(err))
		}
		if strings.Contains(err.Error(), "container-secret") || strings.Contains(err.Error(), "container-token") {
			t.Errorf("the error shows the credentials: %v", err)
		}
	}
	if n := fake.SendRequests(); n != 0 {
		t.Fatalf("SES saw %d requests without credentials", n)
	}
	failing.Store(0)
	if _, err := s.Send(context.Background(), msg); err != nil {
		t.Fatalf("after the endpoint recovered: %v", err)
	}
	if n := fake.SendRequests(); n != 1 {
		t.Errorf("%d SES requests, want 1", n)
	}
}

// gatedConn holds the write of a request's last body bytes until release is closed, which
// makes net/http's write loop finish (and probe the body for more) only after smithy-go has
// seen the answer's headers and closed the request body: the order a busy machine produces
// now and then.
type gatedConn struct {
	net.Conn
	release <-chan struct{}
	closed  chan struct{}
	once    sync.Once

	written []byte
	held    bool
}

func (c *gatedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.held || err != nil {
		return n, err
	}
	c.written = append(c.written, p[:n]...)
	head, body, ok := bytes.Cut(c.written, []byte("\r\n\r\n"))
	if !ok {
		return n, err
	}
	var length int
	for _, line := range strings.Split(string(head), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if len(body) >= length {
		c.held = true
		<-c.release
	}
	return n, err
}

func (c *gatedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// Regression: a success answer whose headers and body arrive apart, while net/http's write
// loop is still finishing the request, was recorded ambiguous. smithy-go closes the request body
// once the headers are in; net/http then probes the body (through WriteTo, which smithy-go's
// closed body answers with io.EOF) and closed the connection under the arriving answer.
func TestSESAnswerInTwoFlushesIsNotAmbiguous(t *testing.T) {
	wrote := make(chan error, 1)
	var conn atomic.Pointer[gatedConn]
	fake := fakeses.New()
	fake.BetweenHeadersAndBody = func(r *http.Request) {
		// The body follows once the client has finished writing; had that failed, only after
		// the client closed the connection, so the failure shows deterministically.
		if err := <-wrote; err != nil {
			<-conn.Load().closed
		}
	}
	url := fake.Start()
	t.Cleanup(fake.Close)

	t.Setenv("AWS_CA_BUNDLE", "") // it needs an SDK-built client; this one is plain net/http
	release := make(chan struct{})
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		gc := &gatedConn{Conn: c, release: release, closed: make(chan struct{})}
		conn.Store(gc)
		return gc, nil
	}}}
	// Innermost in the deserialize step: it returns right after smithy-go's HTTP handler, which
	// closes the request body before returning, and before the answer's body is read.
	afterHandler := func(stack *middleware.Stack) error {
		return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("test.release",
			func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
				out, md, err := next.HandleDeserialize(ctx, in)
				close(release)
				return out, md, err
			}), middleware.After)
	}
	s, err := NewSES(context.Background(), SESOptions{
		Region: "eu-west-1", Endpoint: url, From: "no-reply@acme.example", Timeout: 5 * time.Second, HTTPClient: client,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		apiOptions:  []func(*middleware.Stack) error{afterHandler},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) { wrote <- info.Err },
	})
	id, err := s.Send(ctx, Message{To: "a@example.com", Subject: "s", HTML: strings.Repeat("<p>body</p>", 500), Text: "t"})
	if err != nil {
		t.Fatalf("a message SES accepted: %v (class %s)", err, ClassOf(err))
	}
	if id == "" || len(fake.Messages()) != 1 {
		t.Fatalf("message id %q, SES holds %d messages", id, len(fake.Messages()))
	}
}

// SES echoes addresses in some of its messages; reasons and logs must not carry them.
func TestSESErrorsRedactAddresses(t *testing.T) {
	const sandbox = "Email address is not verified. The following identities failed the check in region US-EAST-1: Jane.Doe+x@bücher.example, b@example.com"
	fake := fakeses.New()
	fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", sandbox)
		return true
	}
	s := newTestSES(t, fake)
	_, err := s.Send(context.Background(), Message{To: "Jane.Doe+x@xn--bcher-kva.example", Subject: "s", HTML: "h", Text: "t"})
	var se *SendError
	if !errors.As(err, &se) || se.Class != Permanent || se.Code != "MessageRejected" {
		t.Fatalf("err = %v, want permanent MessageRejected (only recipients are not verified: the sandbox)", err)
	}
	if strings.Contains(err.Error(), "@") || !strings.Contains(err.Error(), "failed the check in region US-EAST-1: <address>, <address>") {
		t.Errorf("error text %q, want the addresses redacted and the rest kept", err)
	}
	if d := ErrorDetail(err); !strings.Contains(d, "Jane.Doe+x@bücher.example, b@example.com") {
		t.Errorf("detail %q lost the full text", d)
	}
}

func TestRedactAddresses(t *testing.T) {
	for in, want := range map[string]string{
		"no address here":                        "no address here",
		"to a@example.com.":                      "to <address>.",
		"<x.y+z@sub.example.co.uk>":              "<<address>>",
		"(用户@例え.テスト)":                            "(<address>)",
		`"quoted"@example.com, second@x`:         `<address>, <address>`,
		"identity 'a@b.example' failed!":         "identity '<address>' failed!",
		"RequestID: 1f2e, code: MessageRejected": "RequestID: 1f2e, code: MessageRejected",
	} {
		if got := RedactAddresses(in); got != want {
			t.Errorf("RedactAddresses(%q) = %q, want %q", in, got, want)
		}
	}
}

// The body wrapper must be transparent: it reads like the SDK's body and closes it.
func TestReadOnlyBodyHidesWriteTo(t *testing.T) {
	var b io.ReadCloser = readOnlyBody{io.NopCloser(strings.NewReader("x"))}
	if _, ok := b.(io.WriterTo); ok {
		t.Fatal("readOnlyBody exposes WriteTo")
	}
	if got, _ := io.ReadAll(b); string(got) != "x" {
		t.Fatalf("read %q", got)
	}
}
