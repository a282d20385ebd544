package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wneessen/go-mail/smtp"

	"github.com/workos-emailer/workos-emailer/internal/urlpolicy"
)

// SMTP TLS modes (mailer.smtp.tls).
const (
	SMTPStartTLS = "starttls" // required: a relay that does not offer it is refused
	SMTPImplicit = "implicit" // TLS from the first byte (port 465)
	SMTPNoTLS    = "none"     // loopback relays only
)

// SMTPOptions configures the SMTP driver.
type SMTPOptions struct {
	Host     string
	Port     int
	Username string
	Password string
	TLS      string
	From     string
	ReplyTo  string
	// ListUnsubscribe is mailer.list_unsubscribe; "" adds no header.
	ListUnsubscribe string
	// Timeout bounds each phase: the connection, each command, the message data. Default 30s.
	Timeout time.Duration
	// MaxConns bounds the connections open at once (delivery.concurrency); idle ones are kept
	// for the next sends. Default 4.
	MaxConns int
	// TLSConfig, when set, replaces the default (system roots, ServerName Host): tests.
	TLSConfig *tls.Config
}

// SMTP sends through an SMTP relay with the same promise as SES: an answer is sent, refused for
// good, worth a retry, or, once the message's final "." went out without a reply, ambiguous.
type SMTP struct {
	opts     SMTPOptions
	envelope string        // the From address, as MAIL FROM
	slots    chan struct{} // one per connection open or being opened
	idle     chan *smtp.Client
}

// NewSMTP checks the options; it opens no connection (the first send does).
func NewSMTP(opts SMTPOptions) (*SMTP, error) {
	if opts.Host == "" {
		return nil, errors.New("mailer.smtp.host is required")
	}
	if opts.Port == 0 {
		opts.Port = 587
	}
	if opts.TLS == "" {
		opts.TLS = SMTPStartTLS
	}
	switch opts.TLS {
	case SMTPStartTLS, SMTPImplicit:
	case SMTPNoTLS:
		if !urlpolicy.Loopback(opts.Host) {
			return nil, fmt.Errorf("mailer.smtp.tls: none sends the password and every code in clear; it is allowed only for a loopback relay, not %s", opts.Host)
		}
	default:
		return nil, fmt.Errorf("mailer.smtp.tls: must be starttls, implicit or none, got %q", opts.TLS)
	}
	from, err := ParseSender(opts.From)
	if err != nil {
		return nil, fmt.Errorf("mailer.from: %w", err)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 4
	}
	return &SMTP{opts: opts, envelope: from.Address, slots: make(chan struct{}, opts.MaxConns),
		idle: make(chan *smtp.Client, opts.MaxConns)}, nil
}

// Send delivers m on a pooled connection and returns its Message-ID and the relay's answer
// (usually its queue id).
func (s *SMTP) Send(ctx context.Context, m Message) (string, error) {
	from := orDefault(m.Sender.From, s.opts.From)
	raw, messageID, err := compose(m, from, orDefault(m.Sender.ReplyTo, s.opts.ReplyTo), s.opts.ListUnsubscribe)
	if err != nil {
		return "", &SendError{Class: Permanent, Err: err}
	}
	envelope := s.envelope
	if m.Sender.From != "" {
		addr, _ := ParseSender(m.Sender.From) // compose parsed it
		envelope = addr.Address
	}
	// An idle connection first; else a new one, while fewer than MaxConns are open.
	var c *smtp.Client
	reused := false
	select {
	case c = <-s.idle:
		reused = true
	default:
		select {
		case c = <-s.idle:
			reused = true
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return "", &SendError{Class: Retry, Unavailable: true, Err: ctx.Err()}
		}
	}
	for {
		if c == nil {
			if c, err = s.dial(ctx); err != nil {
				<-s.slots
				return "", err
			}
		}
		answer, err := s.transact(c, envelope, m.To, raw)
		var se *SendError
		switch {
		case err == nil:
			s.release(c, true)
			return strings.TrimSpace(messageID + " " + truncateAnswer(RedactAddresses(answer))), nil
		case reused && errors.As(err, &se) && (se.Code == codeConnLost || se.firstCommand):
			// An idle connection the relay closed meanwhile (or timed out with a 421 at the
			// first command): nothing was sent on it. Its slot passes to the new one.
			_ = c.Close()
			c, reused = nil, false
			continue
		}
		s.release(c, errors.As(err, &se) && se.Code != codeConnLost && se.Class != Ambiguous && c.Reset() == nil)
		return "", err
	}
}

// release returns c to the pool, or closes it. A connection holds its slot while it is open,
// idle or not, so idle always has room.
func (s *SMTP) release(c *smtp.Client, keep bool) {
	if keep {
		s.idle <- c
		return
	}
	_ = c.Close()
	<-s.slots
}

// Close ends the idle connections.
func (s *SMTP) Close() error {
	for {
		select {
		case c := <-s.idle:
			_ = c.UpdateDeadline(5 * time.Second)
			_ = c.Quit()
			_ = c.Close()
			<-s.slots
		default:
			return nil
		}
	}
}

// codeConnLost marks a failure of the connection (no reply) before the message data ended.
const codeConnLost = "connection"

func (s *SMTP) dial(ctx context.Context) (*smtp.Client, error) {
	addr := net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port))
	tlsConf := s.opts.TLSConfig
	if tlsConf == nil {
		tlsConf = &tls.Config{ServerName: s.opts.Host, MinVersion: tls.VersionTLS12}
	}
	d := &net.Dialer{Timeout: s.opts.Timeout}
	var conn net.Conn
	var err error
	if s.opts.TLS == SMTPImplicit {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tlsConf}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, &SendError{Class: Retry, Unavailable: true, Code: codeConnLost, Err: fmt.Errorf("connect to the SMTP relay %s: %w", addr, err)}
	}
	_ = conn.SetDeadline(time.Now().Add(s.opts.Timeout))
	c, err := smtp.NewClient(conn, s.opts.Host)
	if err != nil {
		_ = conn.Close()
		return nil, s.failure("the greeting", err)
	}
	fail := func(phase string, err error) (*smtp.Client, error) {
		_ = c.Close()
		return nil, s.failure(phase, err)
	}
	name, err := os.Hostname()
	if err != nil || name == "" || strings.ContainsAny(name, " \r\n") {
		name = "localhost"
	}
	if err := c.Hello(name); err != nil {
		return fail("EHLO", err)
	}
	if s.opts.TLS == SMTPStartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			_ = c.Close()
			return nil, &SendError{Class: Paused, Code: "SMTP no STARTTLS", Err: fmt.Errorf("the SMTP relay %s does not offer STARTTLS, "+
				"which mailer.smtp.tls: starttls requires (use implicit for port 465; none only for a loopback relay)", addr)}
		}
		if err := c.StartTLS(tlsConf); err != nil {
			var cert *tls.CertificateVerificationError
			if errors.As(err, &cert) {
				_ = c.Close()
				return nil, &SendError{Class: Paused, Code: "SMTP certificate", Err: fmt.Errorf("the SMTP relay's certificate "+
					"does not verify for %s: %w", s.opts.Host, err)}
			}
			return fail("STARTTLS", err)
		}
	}
	if s.opts.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.opts.Username, s.opts.Password, s.opts.Host, s.opts.TLS == SMTPNoTLS)); err != nil {
			var reply *textproto.Error
			// Any refusal (temporary, 454, or not), or the client's own refusal to send the
			// password unencrypted; a connection lost meanwhile is only that.
			if errors.As(err, &reply) || !isNetError(err) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				_ = c.Close()
				return nil, &SendError{Class: Paused, Code: "SMTP auth", Err: fmt.Errorf("the SMTP relay refuses mailer.smtp.username "+
					"and password: %w", redacted{err})}
			}
			return fail("AUTH", err)
		}
	}
	return c, nil
}

// transact sends one message on c: MAIL, RCPT, DATA, the message, and its final ".".
func (s *SMTP) transact(c *smtp.Client, from, to string, raw []byte) (answer string, err error) {
	step := func(phase string, f func() error) error {
		if err := c.UpdateDeadline(s.opts.Timeout); err != nil {
			return &SendError{Class: Retry, Unavailable: true, Code: codeConnLost, Err: err}
		}
		if err := f(); err != nil {
			return s.failure(phase, err)
		}
		return nil
	}
	// go-mail's low-level client writes the path as given; RFC 5321 wants it in angle brackets.
	if err := step("MAIL FROM", func() error { return c.Mail("<" + from + ">") }); err != nil {
		var se *SendError
		if errors.As(err, &se) {
			se.firstCommand = true
		}
		return "", err
	}
	if err := step("RCPT TO", func() error { return c.Rcpt("<" + to + ">") }); err != nil {
		return "", err
	}
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	if err := step("DATA", func() (err error) { w, err = c.Data(); return err }); err != nil {
		return "", err
	}
	if err := c.UpdateDeadline(s.opts.Timeout); err != nil {
		return "", &SendError{Class: Retry, Unavailable: true, Code: codeConnLost, Err: err}
	}
	if _, err := w.Write(raw); err != nil {
		// Without its final "." no relay accepts a message.
		return "", &SendError{Class: Retry, Unavailable: true, Code: codeConnLost, Err: fmt.Errorf("SMTP relay: writing the message failed: %w", err)}
	}
	// The relay may take a while to queue the message: the reply gets its own deadline.
	if err := c.UpdateDeadline(s.opts.Timeout); err != nil {
		return "", &SendError{Class: Retry, Unavailable: true, Code: codeConnLost, Err: err}
	}
	if err := w.Close(); err != nil {
		var reply *textproto.Error
		if errors.As(err, &reply) && reply.Code >= 200 && reply.Code < 300 {
			return reply.Msg, nil // 251, 252: taken, if not with 250
		}
		if !errors.As(err, &reply) {
			return "", &SendError{Class: Ambiguous, Err: fmt.Errorf("SMTP relay: no answer after the message was sent "+
				"(it may have been accepted): %w", err)}
		}
		return "", s.failure("the message data", err)
	}
	if dc, ok := w.(*smtp.DataCloser); ok {
		answer = dc.ServerResponse()
	}
	return answer, nil
}

// failure classifies an error of a phase before the message's final ".": a reply says whether
// to retry (4xx), give up (5xx) or stop sending for the account (421 closing, an
// authentication demand); no reply means the connection failed, and nothing was accepted.
func (s *SMTP) failure(phase string, err error) error {
	var reply *textproto.Error
	if !errors.As(err, &reply) {
		return &SendError{Class: Retry, Unavailable: true, Code: codeConnLost, Err: fmt.Errorf("SMTP relay, %s: %w", phase, err)}
	}
	e := fmt.Errorf("SMTP relay, %s: %w", phase, redacted{err})
	code := "SMTP " + strconv.Itoa(reply.Code)
	switch {
	case reply.Code == 421, reply.Code == 530, reply.Code == 535, reply.Code == 554 && phase == "the greeting":
		return &SendError{Class: Paused, Code: code, Err: e}
	case reply.Code >= 400 && reply.Code < 500:
		return &SendError{Class: Retry, Code: code, Err: e}
	}
	return &SendError{Class: Permanent, Code: code, Err: e}
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

func truncateAnswer(s string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "\n", " "))
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
