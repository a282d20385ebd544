//go:build e2e

package e2e

import (
	"io"
	"log"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

// smtpSink is emersion/go-smtp's server on loopback (the daemon's tls: none is for loopback
// relays), reading each message back as the crash suite's oracle reads SES's: the recipient,
// the event id header, both bodies, and the Message-ID the record must start with.
type smtpSink struct {
	t    *testing.T
	mu   sync.Mutex
	msgs []fakeses.Message
}

func startSMTPSink(t *testing.T) (*smtpSink, int) {
	t.Helper()
	s := &smtpSink{t: t}
	srv := gosmtp.NewServer(s)
	srv.Domain, srv.ReadTimeout, srv.WriteTimeout = "sink.test", 30*time.Second, 30*time.Second
	srv.MaxRecipients = 1
	srv.ErrorLog = log.New(io.Discard, "", 0) // every kill resets its connections
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s, ln.Addr().(*net.TCPAddr).Port
}

func (s *smtpSink) Messages() []fakeses.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fakeses.Message(nil), s.msgs...)
}

func (s *smtpSink) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	return &sinkSession{sink: s}, nil
}

type sinkSession struct {
	sink *smtpSink
	rcpt string
}

func (*sinkSession) Mail(string, *gosmtp.MailOptions) error         { return nil }
func (ss *sinkSession) Rcpt(to string, _ *gosmtp.RcptOptions) error { ss.rcpt = to; return nil }
func (*sinkSession) Reset()                                         {}
func (*sinkSession) Logout() error                                  { return nil }

func (ss *sinkSession) Data(r io.Reader) error {
	time.Sleep(time.Millisecond) // keeps sends in flight when a timed kill lands, as with SES
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	dec := new(mime.WordDecoder)
	subject, _ := dec.DecodeHeader(msg.Header.Get("Subject"))
	m := fakeses.Message{MessageID: msg.Header.Get("Message-ID"), To: []string{ss.rcpt}, Subject: subject,
		Tags: map[string]string{"event_id": msg.Header.Get("X-WorkOS-Event-ID"), "kind": msg.Header.Get("X-WorkOS-Emailer-Kind")}}
	if to := msg.Header.Get("To"); to != ss.rcpt {
		ss.sink.t.Errorf("header To %q, envelope %q", to, ss.rcpt)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		body, err := io.ReadAll(p)
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(p.Header.Get("Content-Type"), "text/plain"):
			m.Text = string(body)
		case strings.HasPrefix(p.Header.Get("Content-Type"), "text/html"):
			m.HTML = string(body)
		}
	}
	ss.sink.mu.Lock()
	ss.sink.msgs = append(ss.sink.msgs, m)
	ss.sink.mu.Unlock()
	return nil
}
