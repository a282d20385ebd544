package mailer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

func TestParseRecipient(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" : refused
		// reason the refusal names, when it must be specific
		reason string
	}{
		{in: "user@example.com", want: "user@example.com"},
		{in: "first.last+tag@sub.example.co.uk", want: "first.last+tag@sub.example.co.uk"},
		{in: "  user@example.com\t ", want: "user@example.com"},
		// SES takes an internationalized domain only in its ASCII form.
		{in: "user@bücher.example", want: "user@xn--bcher-kva.example"},
		{in: "ünïcode@bücher.example", reason: "SMTPUTF8"},
		{in: "用户@example.com", reason: "SMTPUTF8"},
		{in: "user@例え.テスト", want: "user@xn--r8jz45g.xn--zckzah"},
		{in: "user@xn--bcher-kva.example", want: "user@xn--bcher-kva.example"},
		{in: "user@bü cher.example", reason: "internationalized domain"},
		{in: "user@-bücher.example", reason: "internationalized domain"},
		{in: ""},
		{in: "   "},
		{in: "user@example.com\r\nBcc: x@example.com", reason: "line break"},
		{in: "user@example.com\n", reason: "line break"},
		{in: "a@example.com, b@example.com"},
		{in: "Name <user@example.com>"},
		{in: "<user@example.com>"},
		{in: "undisclosed-recipients:;"},
		{in: "user"},
		{in: "user@"},
		{in: "@example.com"},
		{in: "user@nodot", reason: "no domain"},
		{in: strings.Repeat("a", 250) + "@example.com", reason: "longer than 254"},
		{in: strings.Repeat("a", 230) + "@" + strings.Repeat("ü", 10) + ".example", reason: "longer than 254"},
	} {
		got, err := ParseRecipient(tc.in)
		switch {
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("ParseRecipient(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.want == "" && err == nil:
			t.Errorf("ParseRecipient(%q) = %q, want refused", tc.in, got)
		case err != nil && !strings.Contains(err.Error(), tc.reason):
			t.Errorf("ParseRecipient(%q): %v, want a reason with %q", tc.in, err, tc.reason)
		case err != nil && strings.Contains(err.Error(), "@"):
			t.Errorf("ParseRecipient(%q): the error %q echoes the address", tc.in, err)
		}
	}
}

func FuzzParseRecipient(f *testing.F) {
	for _, s := range []string{"a@example.com", "a@b.c\r\nBcc: d@e.f", "\"x\"@example.com", "a@example.com,b@example.com", "=?utf-8?q?x?=@example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, err := ParseRecipient(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(addr, "\r\n,;<>\x00") {
			t.Fatalf("accepted %q", addr)
		}
		list, err := mail.ParseAddressList(addr)
		if err != nil || len(list) != 1 {
			t.Fatalf("accepted %q which is not exactly one address", addr)
		}
	})
}

func newTestSES(t *testing.T, fake *fakeses.Server) *SES {
	t.Helper()
	url := fake.Start()
	t.Cleanup(fake.Close)
	return sesAt(t, url)
}

func sesAt(t *testing.T, endpoint string) *SES {
	t.Helper()
	s, err := NewSES(context.Background(), SESOptions{
		Region: "eu-west-1", Endpoint: endpoint, From: "Acme <no-reply@acme.example>", Timeout: time.Second,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSESErrorClasses(t *testing.T) {
	const (
		unverified = "Email address is not verified. The following identities failed the check in region EU-WEST-1: no-reply@acme.example, a@example.com"
		// Only the recipient: the sandbox refuses this one email, not every email.
		recipientOnly = "Email address is not verified. The following identities failed the check in region EU-WEST-1: a@example.com"
	)
	for _, tc := range []struct {
		status int
		code   string
		msg    string // "": "injected"
		want   Class
		pause  string // PauseReason, for Paused
	}{
		{status: 429, code: "TooManyRequestsException", want: Retry},
		{status: 500, code: "InternalFailure", want: Retry},
		{status: 503, code: "ServiceUnavailable", want: Retry},
		{status: 400, code: "MessageRejected", want: Permanent},
		{status: 400, code: "MessageRejected", msg: "Email content rejected: it contains a link to a blocked domain.", want: Permanent},
		// An identity that is not verified (the sender, or a recipient in the sandbox) is the
		// account's problem: paused, not the message's death.
		{status: 400, code: "MessageRejected", msg: unverified, want: Paused, pause: pauseUnverified},
		{status: 400, code: "MessageRejected", msg: recipientOnly, want: Permanent},
		{status: 400, code: "MessageRejected", msg: "EMAIL ADDRESS IS NOT VERIFIED.", want: Paused, pause: pauseUnverified},
		{status: 400, code: "MessageRejected", msg: "Domain is not verified", want: Paused, pause: pauseUnverified},
		{status: 400, code: "MailFromDomainNotVerifiedException", want: Paused, pause: pauseMailFrom},
		{status: 400, code: "BadRequestException", want: Permanent},
		{status: 400, code: "AccountSuspendedException", want: Paused, pause: "SES refuses to send for the account (AccountSuspendedException)"},
		{status: 400, code: "SendingPausedException", want: Paused, pause: "SES refuses to send for the account (SendingPausedException)"},
		{status: 403, code: "AccessDeniedException", want: Paused},
		{status: 404, code: "NotFoundException", want: Paused},
		{status: 400, code: "LimitExceededException", want: Retry},
	} {
		t.Run(tc.code+" "+tc.msg, func(t *testing.T) {
			fake := fakeses.New()
			fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
				fakeses.WriteError(w, tc.status, tc.code, orDefault(tc.msg, "injected"))
				return true
			}
			s := newTestSES(t, fake)
			_, err := s.Send(context.Background(), Message{To: "a@example.com", Subject: "s", HTML: "h", Text: "t", EventID: "event_1", Kind: "magic_auth"})
			var se *SendError
			if !errors.As(err, &se) || se.Class != tc.want || se.Code != tc.code {
				t.Fatalf("err = %v, want class %s code %s", err, tc.want, tc.code)
			}
			if tc.pause != "" && PauseReason(err) != tc.pause {
				t.Errorf("PauseReason = %q, want %q", PauseReason(err), tc.pause)
			}
			if n := fake.SendRequests(); n != 1 {
				t.Errorf("%d requests: the SDK retried on its own", n)
			}
		})
	}
}

func TestSESTransportFailures(t *testing.T) {
	t.Run("connection refused is retryable", func(t *testing.T) {
		_, err := sesAt(t, "http://127.0.0.1:1").Send(context.Background(), Message{To: "a@example.com"})
		if c := ClassOf(err); c != Retry {
			t.Fatalf("class %s (%v), want retry", c, err)
		}
	})
	t.Run("timeout after the request was written is ambiguous", func(t *testing.T) {
		fake := fakeses.New()
		release := make(chan struct{})
		fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = io.ReadAll(r.Body)
			<-release
			return true
		}
		s := newTestSES(t, fake)
		t.Cleanup(func() { close(release) }) // before the server's Close, which waits for handlers
		_, err := s.Send(context.Background(), Message{To: "a@example.com"})
		if c := ClassOf(err); c != Ambiguous {
			t.Fatalf("class %s (%v), want ambiguous", c, err)
		}
		if n := fake.SendRequests(); n != 1 {
			t.Errorf("%d requests: the SDK retried an ambiguous send", n)
		}
	})
}

func TestSESUnreadableSuccessIsAmbiguous(t *testing.T) {
	fake := fakeses.New()
	fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"MessageId": "0100`)) // truncated
		return true
	}
	s := newTestSES(t, fake)
	_, err := s.Send(context.Background(), Message{To: "a@example.com"})
	if c := ClassOf(err); c != Ambiguous {
		t.Fatalf("class %s (%v), want ambiguous: SES said 200", c, err)
	}
}

// Unavailable marks failures of the service (not charged as attempts); Throttled marks only
// SES's throttling answers, which slow the send limiter.
func TestSESUnavailableAndThrottledClassification(t *testing.T) {
	for _, tc := range []struct {
		status                 int
		code                   string
		unavailable, throttled bool
	}{
		{429, "TooManyRequestsException", true, true},
		{400, "ThrottlingException", true, true},
		{400, "Throttling", true, true},
		{503, "ServiceUnavailable", true, false},
		{500, "InternalFailure", false, false},
		{400, "MessageRejected", false, false},
		{400, "SendingPausedException", false, false},
	} {
		fake := fakeses.New()
		fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
			fakeses.WriteError(w, tc.status, tc.code, "injected")
			return true
		}
		s := newTestSES(t, fake)
		_, err := s.Send(context.Background(), Message{To: "a@example.com"})
		if Unavailable(err) != tc.unavailable {
			t.Errorf("%s: Unavailable = %v", tc.code, !tc.unavailable)
		}
		if Throttled(err) != tc.throttled || Throttled(fmt.Errorf("wrapped: %w", err)) != tc.throttled {
			t.Errorf("%s: Throttled (or wrapped) = %v, want %v", tc.code, Throttled(err), tc.throttled)
		}
	}
	if Throttled(nil) {
		t.Error("nil is throttled")
	}
}

func TestSESSendsBothBodiesAndTags(t *testing.T) {
	fake := fakeses.New()
	s := newTestSES(t, fake)
	var calls atomic.Int32
	fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool { calls.Add(1); return false }
	id, err := s.Send(context.Background(), Message{To: "a@example.com", Subject: "Grüße", HTML: "<p>h</p>", Text: "t", EventID: "event_01X", Kind: "magic_auth"})
	if err != nil {
		t.Fatal(err)
	}
	m := fake.Messages()[0]
	if id != m.MessageID || m.Subject != "Grüße" || m.HTML != "<p>h</p>" || m.Text != "t" || m.Tags["event_id"] != "event_01X" || m.Tags["kind"] != "magic_auth" {
		t.Errorf("got %+v", m)
	}
}

func TestFileWritesMultipartAlternative(t *testing.T) {
	dir := t.TempDir()
	f := &File{Dir: dir, From: "Acme <no-reply@acme.example>", ReplyTo: "help@acme.example"}
	id, err := f.Send(context.Background(), Message{To: "a@example.com", Subject: "Grüße aus Köln", HTML: "<p>Hallo ✓</p>", Text: "Hallo ✓ " + strings.Repeat("x", 100), EventID: "event_01/../x", Kind: "magic_auth"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(id, "file:")))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subject != "Grüße aus Köln" {
		t.Errorf("subject %q (%v)", subject, err)
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/alternative" {
		t.Fatalf("content type %q", mediaType)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(p) // multipart decodes quoted-printable
		types = append(types, p.Header.Get("Content-Type"))
		if !strings.Contains(string(body), "Hallo ✓") {
			t.Errorf("part %s body %q", p.Header.Get("Content-Type"), body)
		}
	}
	if strings.Join(types, ",") != "text/plain; charset=UTF-8,text/html; charset=UTF-8" {
		t.Errorf("parts %v", types)
	}
	if filepath.Dir(filepath.Join(dir, strings.TrimPrefix(id, "file:"))) != dir {
		t.Errorf("file escaped the outbox: %s", id)
	}
}

// Headers a person's mail client reads are RFC 2047-encoded where they are not ASCII, and long
// ones are folded into lines of at most 78 characters.
func TestFileEncodesAndFoldsHeaders(t *testing.T) {
	dir := t.TempDir()
	f := &File{Dir: dir, From: "Müller & Söhne <no-reply@acme.example>", ReplyTo: "Hilfe Ü <help@acme.example>"}
	subject := "パスワードが変更されました — Robodesk アカウント（grace.hopper@example.com）のお知らせ"
	id, err := f.Send(context.Background(), Message{To: "a@example.com", Subject: subject, HTML: "<p>x</p>", Text: "x", EventID: "event_01", Kind: "password_changed"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(id, "file:")))
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(raw), "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n") {
		if len(line) > 78 && !strings.HasPrefix(line, "Content-Type:") {
			t.Errorf("header line of %d characters: %q", len(line), line)
		}
		if strings.HasPrefix(line, "Subject:") && strings.TrimSpace(strings.TrimPrefix(line, "Subject:")) == "" {
			t.Error("the subject starts on a continuation line")
		}
		for _, r := range line {
			if r > 127 {
				t.Fatalf("non-ASCII in a header: %q", line)
			}
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	dec := new(mime.WordDecoder)
	if got, err := dec.DecodeHeader(msg.Header.Get("Subject")); err != nil || got != subject {
		t.Errorf("subject %q (%v), want %q", got, err, subject)
	}
	from, err := msg.Header.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Name != "Müller & Söhne" || from[0].Address != "no-reply@acme.example" {
		t.Errorf("from %v (%v)", from, err)
	}
	if rt, err := msg.Header.AddressList("Reply-To"); err != nil || rt[0].Name != "Hilfe Ü" {
		t.Errorf("reply-to %v (%v)", rt, err)
	}
}

// A subject whose end is plain ASCII after a non-ASCII start decodes to itself: no doubled
// space where it was folded (every folded piece is an encoded-word).
func TestFoldedSubjectDecodesToItself(t *testing.T) {
	dec := new(mime.WordDecoder)
	for _, subject := range []string{
		"Sie wurden eingeladen, Müller & Söhne GmbH auf Robodesk beizutreten und mitzuarbeiten",
		"Ihr Anmeldelink für Robodesk",
		"Ü" + strings.Repeat(" word", 40),
	} {
		enc := encodeHeader("Subject", subject)
		for _, line := range strings.Split("Subject: "+enc, "\r\n") {
			if len(line) > 78 {
				t.Errorf("line of %d characters: %q", len(line), line)
			}
		}
		got, err := dec.DecodeHeader(strings.ReplaceAll(enc, "\r\n", ""))
		if err != nil || got != subject {
			t.Errorf("%q decodes to %q (%v)", subject, got, err)
		}
	}
}

// List-Unsubscribe is there only when configured; an https URL takes the one-click POST.
func TestListUnsubscribeOnlyWhenConfigured(t *testing.T) {
	for _, c := range []struct{ value, want, post string }{
		{"", "", ""},
		{"mailto:unsubscribe@acme.example", "<mailto:unsubscribe@acme.example>", ""},
		{"https://acme.example/prefs?u=1", "<https://acme.example/prefs?u=1>", "List-Unsubscribe=One-Click"},
	} {
		dir := t.TempDir()
		f := &File{Dir: dir, From: "a@acme.example", ListUnsubscribe: c.value}
		id, err := f.Send(context.Background(), Message{To: "b@example.com", Subject: "s", HTML: "h", Text: "t", EventID: "event_1"})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(id, "file:")))
		msg, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if got, post := msg.Header.Get("List-Unsubscribe"), msg.Header.Get("List-Unsubscribe-Post"); got != c.want || post != c.post {
			t.Errorf("%q: List-Unsubscribe %q, Post %q", c.value, got, post)
		}
	}
	for _, bad := range []string{"http://acme.example/u", "acme.example", "mailto:", "https://a.example/x\r\nBcc: e@vil.example", "https://a.example/<x>"} {
		if CheckListUnsubscribe(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSESSendsListUnsubscribeOnlyWhenConfigured(t *testing.T) {
	fake := fakeses.New()
	url := fake.Start()
	t.Cleanup(fake.Close)
	for _, lu := range []string{"", "https://acme.example/prefs"} {
		s, err := NewSES(context.Background(), SESOptions{Region: "eu-west-1", Endpoint: url, From: "a@acme.example", Timeout: time.Second,
			ListUnsubscribe: lu, Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Send(context.Background(), Message{To: "b@example.com", Subject: "s", HTML: "h", Text: "t"}); err != nil {
			t.Fatal(err)
		}
		msgs := fake.Messages()
		h := msgs[len(msgs)-1].Headers
		if lu == "" && len(h) != 0 || lu != "" && (h["List-Unsubscribe"] != "<"+lu+">" || h["List-Unsubscribe-Post"] == "") {
			t.Errorf("%q: headers %v", lu, h)
		}
	}
}

// A refusal reads as SES's own words, not the SDK's boilerplate before them, and without the
// address SES echoes; ErrorDetail keeps everything for debug logs.
func TestSESRefusalReadsAsSESWords(t *testing.T) {
	fake := fakeses.New()
	s := newTestSES(t, fake)
	fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", "Email address is not verified. The following identities failed the check in region EU-WEST-1: a@example.com")
		return true
	}
	_, err := s.Send(context.Background(), Message{To: "a@example.com", Subject: "s", HTML: "h", Text: "t"})
	msg := err.Error()
	if ClassOf(err) != Permanent || strings.Contains(msg, "operation error") || strings.Contains(msg, "RequestID") ||
		!strings.Contains(msg, "SES answered 400: Email address is not verified") || strings.Contains(msg, "a@example.com") {
		t.Errorf("%q", msg)
	}
	if d := ErrorDetail(err); !strings.Contains(d, "a@example.com") || !strings.Contains(d, "operation error") {
		t.Errorf("detail %q", d)
	}
}
