package mailer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/smtpsink"
)

// selfSigned is a certificate for 127.0.0.1, and a client config that trusts it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

const sinkPassword = "relay-secret-pw"

// startSink serves internal/smtpsink (emersion/go-smtp's server) on loopback, requiring AUTH
// PLAIN; withTLS offers STARTTLS, and the client config returned trusts its certificate.
func startSink(t *testing.T, withTLS bool) (*smtpsink.Server, int, *tls.Config) {
	t.Helper()
	opts := smtpsink.Options{Password: sinkPassword}
	var client *tls.Config
	if withTLS {
		opts.TLS, client = selfSigned(t)
	}
	sk := smtpsink.New(opts)
	port, err := sk.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sk.Close)
	return sk, port, client
}

func TestSMTPSendsEachMessageOnceOnReusedConnections(t *testing.T) {
	sk, port, clientTLS := startSink(t, true)
	s, err := NewSMTP(SMTPOptions{Host: "127.0.0.1", Port: port, Username: smtpsink.Username, Password: sinkPassword,
		From: "Müller & Söhne <no-reply@acme.example>", ReplyTo: "help@acme.example", TLSConfig: clientTLS, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	subject := "Sie wurden eingeladen, Müller & Söhne GmbH auf Robodesk beizutreten"
	const n = 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.Send(context.Background(), Message{To: "user" + strconv.Itoa(i) + "@example.com", Subject: subject,
				HTML: "<p>Code: 123456 ✓</p>", Text: "Code: 123456 ✓", EventID: "event_0" + strconv.Itoa(i), Kind: "magic_auth"})
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	received := sk.Messages()
	if len(received) != n {
		t.Fatalf("%d messages, want %d", len(received), n)
	}
	if c := sk.Connections(); c > 2 {
		t.Errorf("%d connections for %d messages with MaxConns 2: not reused", c, n)
	}
	seen := map[string]bool{}
	for _, rm := range received {
		raw := rm.Raw
		msg, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		got, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		if err != nil || got != subject {
			t.Errorf("subject %q (%v)", got, err)
		}
		to := msg.Header.Get("To")
		if to != rm.To || seen[to] || rm.From != "no-reply@acme.example" {
			t.Errorf("message to %q (envelope %q from %q), seen before: %v", to, rm.To, rm.From, seen[to])
		}
		seen[to] = true
		if from, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("From")); !strings.HasPrefix(from, "Müller & Söhne") ||
			msg.Header.Get("Reply-To") != "help@acme.example" || msg.Header.Get("Date") == "" {
			t.Errorf("headers %v", msg.Header)
		}
		found := false
		for _, id := range ids {
			found = found || strings.HasPrefix(id, msg.Header.Get("Message-ID")+" ")
		}
		if !found || msg.Header.Get("Message-ID") == "" {
			t.Errorf("Message-ID %q is not one Send returned (%v)", msg.Header.Get("Message-ID"), ids)
		}
		_, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		mr := multipart.NewReader(msg.Body, params["boundary"])
		var types []string
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			body, _ := io.ReadAll(p)
			types = append(types, p.Header.Get("Content-Type"))
			if !strings.Contains(string(body), "123456 ✓") {
				t.Errorf("part %s: %q", p.Header.Get("Content-Type"), body)
			}
		}
		if len(types) != 2 || !strings.HasPrefix(types[0], "text/plain") || !strings.HasPrefix(types[1], "text/html") {
			t.Errorf("parts %v", types)
		}
		if bytes.Contains(raw, []byte(sinkPassword)) {
			t.Error("the message holds the relay password")
		}
	}
}

func TestSMTPAccountProblemsPause(t *testing.T) {
	t.Run("wrong password", func(t *testing.T) {
		_, port, clientTLS := startSink(t, true)
		s, _ := NewSMTP(SMTPOptions{Host: "127.0.0.1", Port: port, Username: "relay-user", Password: "wrong", From: "a@acme.example", TLSConfig: clientTLS})
		_, err := s.Send(context.Background(), Message{To: "b@example.com", Subject: "s", Text: "t", HTML: "h"})
		if ClassOf(err) != Paused || !strings.Contains(PauseReason(err), "SMTP relay") {
			t.Errorf("%v (%v), want paused", err, ClassOf(err))
		}
	})
	t.Run("a certificate that does not verify", func(t *testing.T) {
		_, port, _ := startSink(t, true)
		s, _ := NewSMTP(SMTPOptions{Host: "127.0.0.1", Port: port, Username: smtpsink.Username, Password: sinkPassword, From: "a@acme.example"})
		_, err := s.Send(context.Background(), Message{To: "b@example.com", Subject: "s", Text: "t", HTML: "h"})
		if ClassOf(err) != Paused || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%v (%v), want paused naming the certificate", err, ClassOf(err))
		}
	})
	t.Run("STARTTLS required but not offered", func(t *testing.T) {
		_, port, _ := startSink(t, false)
		s, _ := NewSMTP(SMTPOptions{Host: "127.0.0.1", Port: port, From: "a@acme.example"})
		_, err := s.Send(context.Background(), Message{To: "b@example.com", Subject: "s", Text: "t", HTML: "h"})
		if ClassOf(err) != Paused || !strings.Contains(err.Error(), "does not offer STARTTLS") {
			t.Errorf("%v (%v), want paused naming STARTTLS", err, ClassOf(err))
		}
	})
	if _, err := NewSMTP(SMTPOptions{Host: "smtp.example.net", TLS: SMTPNoTLS, From: "a@acme.example"}); err == nil {
		t.Error("tls: none was accepted for a relay that is not on loopback")
	}
}

// scripted is an SMTP server that answers as told, for the faults a real relay shows only by
// accident: replies are keyed by the command's verb ("GREETING", "MAIL", "RCPT", "DATA", "END"
// for the final "."), or by the verb and its count on the connection ("MAIL#2"); "DROP" closes
// the connection instead of answering. It keeps the envelope commands it got.
type scriptedServer struct {
	port  int
	mu    sync.Mutex
	lines []string
	conns atomic.Int32
}

func (s *scriptedServer) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

func scripted(t *testing.T, replies map[string]string) int { return scriptedWith(t, replies).port }

func scriptedWith(t *testing.T, replies map[string]string) *scriptedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	srv := &scriptedServer{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			srv.conns.Add(1)
			go func() {
				defer conn.Close()
				counts := map[string]int{}
				reply := func(verb, def string) string {
					counts[verb]++
					if r, ok := replies[verb+"#"+strconv.Itoa(counts[verb])]; ok {
						return r
					}
					if r, ok := replies[verb]; ok {
						return r
					}
					return def
				}
				r := bufio.NewReader(conn)
				say := func(line string) bool {
					if line == "DROP" {
						return false
					}
					_, err := io.WriteString(conn, line+"\r\n")
					return err == nil
				}
				if !say(reply("GREETING", "220 scripted.test ESMTP")) {
					return
				}
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					verb := strings.ToUpper(strings.Fields(line + " x")[0])
					switch verb {
					case "EHLO", "HELO":
						if !say("250-scripted.test\r\n250 8BITMIME") {
							return
						}
					case "MAIL", "RCPT":
						srv.mu.Lock()
						srv.lines = append(srv.lines, strings.TrimRight(line, "\r\n"))
						srv.mu.Unlock()
						if !say(reply(verb, "250 ok")) {
							return
						}
					case "DATA":
						if !say(reply("DATA", "354 go ahead")) {
							return
						}
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
						}
						if !say(reply("END", "250 2.0.0 Ok: queued as ABC123")) {
							return
						}
					case "RSET", "NOOP":
						if !say("250 ok") {
							return
						}
					case "QUIT":
						say("221 bye")
						return
					default:
						if !say("502 unknown") {
							return
						}
					}
				}
			}()
		}
	}()
	return srv
}

func TestSMTPClassifiesEachReply(t *testing.T) {
	for _, c := range []struct {
		name    string
		replies map[string]string
		class   Class
	}{
		{"queued", nil, 0},
		{"421 at the greeting: the relay will not take mail", map[string]string{"GREETING": "421 4.3.2 try later"}, Paused},
		{"450 on RCPT: later", map[string]string{"RCPT": "450 4.2.1 mailbox busy"}, Retry},
		{"550 on RCPT: unknown user", map[string]string{"RCPT": "550 5.1.1 <grace@example.com>: user unknown"}, Permanent},
		{"4xx on MAIL: later", map[string]string{"MAIL": "451 4.3.0 local error"}, Retry},
		{"451 after the data: later", map[string]string{"END": "451 4.3.0 queue full"}, Retry},
		{"554 after the data: refused", map[string]string{"END": "554 5.7.1 spam"}, Permanent},
		{"dropped after the final dot: ambiguous", map[string]string{"END": "DROP"}, Ambiguous},
		{"dropped before the data: retry", map[string]string{"DATA": "DROP"}, Retry},
	} {
		t.Run(c.name, func(t *testing.T) {
			port := scripted(t, c.replies)
			s, err := NewSMTP(SMTPOptions{Host: "127.0.0.1", Port: port, TLS: SMTPNoTLS, From: "a@acme.example", Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			id, err := s.Send(context.Background(), Message{To: "grace@example.com", Subject: "s", Text: "t", HTML: "h", EventID: "event_1"})
			switch {
			case c.class == 0 && (err != nil || !strings.HasSuffix(id, "queued as ABC123")):
				t.Errorf("id %q, err %v", id, err)
			case c.class != 0 && ClassOf(err) != c.class:
				t.Errorf("%v: class %v, want %v", err, ClassOf(err), c.class)
			case err != nil && strings.Contains(err.Error(), "grace@example.com"):
				t.Errorf("the error names the address: %v", err)
			}
		})
	}
}

// An idle connection the relay closed is replaced, not a failed send.
func TestSMTPReplacesAClosedIdleConnection(t *testing.T) {
	sk, port, clientTLS := startSink(t, true)
	s, _ := NewSMTP(SMTPOptions{Host: "127.0.0.1", Port: port, Username: smtpsink.Username, Password: sinkPassword, From: "a@acme.example",
		TLSConfig: clientTLS, MaxConns: 1})
	m := Message{To: "b@example.com", Subject: "s", Text: "t", HTML: "h"}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	c := <-s.idle
	_ = c.Close() // as a relay's idle timeout would
	s.idle <- c
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("second send on a dead idle connection: %v", err)
	}
	if n := len(sk.Messages()); n != 2 {
		t.Errorf("%d messages", n)
	}
}

// The envelope is in RFC 5321's angle brackets; a relay's 421 on an idle connection (its
// timeout) costs a new connection, not a pause; a 251 after the data is a send.
func TestSMTPEnvelopeIdleTimeoutAnd251(t *testing.T) {
	srv := scriptedWith(t, map[string]string{"MAIL#2": "421 4.4.2 idle timeout", "END#1": "251 2.1.5 forwarded"})
	s, err := NewSMTP(SMTPOptions{Host: "127.0.0.1", Port: srv.port, TLS: SMTPNoTLS, From: "Acme <no-reply@acme.example>", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := Message{To: "grace@example.com", Subject: "s", Text: "t", HTML: "h"}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("a 251 after the data: %v", err)
	}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("after the relay's idle timeout: %v (%v)", err, ClassOf(err))
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the timed-out one replaced)", n)
	}
	got := srv.got()
	if len(got) < 2 || !strings.HasPrefix(got[0], "MAIL FROM:<no-reply@acme.example>") || got[1] != "RCPT TO:<grace@example.com>" {
		t.Errorf("envelope %q", got)
	}
}
