// Package smtpsink is a real SMTP server for tests: emersion/go-smtp's (the server of the maddy
// mail server), on loopback, keeping every message it accepts. None of us wrote its protocol
// code, so the SMTP driver is tested against an implementation of its own.
package smtpsink

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// Username is the user AUTH PLAIN accepts when Options.Password is set.
const Username = "relay-user"

// Options shapes the server.
type Options struct {
	// Password, when set, makes AUTH PLAIN as Username with it required before MAIL.
	Password string
	// TLS, when set, offers STARTTLS with it; without, AUTH is allowed in clear.
	TLS *tls.Config
	// Delay holds each message this long before accepting it (keeps sends in flight).
	Delay time.Duration
}

// Message is one accepted message: its envelope and its data as received.
type Message struct {
	From, To string
	Raw      []byte
}

// Server is the sink. Create it with New, then Start.
type Server struct {
	opts  Options
	srv   *gosmtp.Server
	mu    sync.Mutex
	msgs  []Message
	conns atomic.Int32
}

// New returns a sink that is not serving yet.
func New(opts Options) *Server {
	s := &Server{opts: opts}
	s.srv = gosmtp.NewServer(backend{s})
	s.srv.Domain = "sink.test"
	s.srv.ReadTimeout, s.srv.WriteTimeout = 30*time.Second, 30*time.Second
	s.srv.MaxRecipients = 1
	s.srv.TLSConfig = opts.TLS
	s.srv.AllowInsecureAuth = opts.TLS == nil
	s.srv.ErrorLog = log.New(io.Discard, "", 0) // a client killed mid-session is no news here
	return s
}

// Start serves on a loopback port and returns it; Close stops.
func (s *Server) Start() (port int, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	go func() { _ = s.srv.Serve(counting{ln, &s.conns}) }()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Close stops the server.
func (s *Server) Close() { _ = s.srv.Close() }

// Messages are the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Connections counts the connections accepted so far.
func (s *Server) Connections() int { return int(s.conns.Load()) }

// counting counts the connections accepted (go-smtp starts a session again after STARTTLS).
type counting struct {
	net.Listener
	n *atomic.Int32
}

func (l counting) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type backend struct{ s *Server }

func (b backend) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return &session{s: b.s}, nil }

type session struct {
	s        *Server
	authed   bool
	from, to string
}

func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, username, password string) error {
		if username != Username || password != ss.s.opts.Password {
			return errors.New("invalid credentials")
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *gosmtp.MailOptions) error {
	if ss.s.opts.Password != "" && !ss.authed {
		return gosmtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *gosmtp.RcptOptions) error { ss.to = to; return nil }

func (ss *session) Data(r io.Reader) error {
	time.Sleep(ss.s.opts.Delay)
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, Message{From: ss.from, To: ss.to, Raw: raw})
	ss.s.mu.Unlock()
	return nil
}

func (*session) Reset()        {}
func (*session) Logout() error { return nil }
