//go:build e2e

package e2e

import (
	"bytes"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
	"time"

	"io"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/smtpsink"
)

// startSMTPSink serves internal/smtpsink (emersion/go-smtp's server) on loopback (the daemon's
// tls: none is for loopback relays), with a little latency so sends are in flight when a timed
// kill lands, as with SES. received reads each message back as the crash suite's oracle reads
// SES's: the recipient, the event id header, both bodies, and the Message-ID the record must
// start with.
func startSMTPSink(t *testing.T) (received func() []fakeses.Message, port int) {
	t.Helper()
	sink := smtpsink.New(smtpsink.Options{Delay: time.Millisecond})
	port, err := sink.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sink.Close)
	return func() []fakeses.Message {
		var out []fakeses.Message
		for _, m := range sink.Messages() {
			out = append(out, readBack(t, m))
		}
		return out
	}, port
}

func readBack(t *testing.T, rm smtpsink.Message) fakeses.Message {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(rm.Raw))
	if err != nil {
		t.Fatalf("a message the relay got does not parse: %v", err)
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	m := fakeses.Message{MessageID: msg.Header.Get("Message-ID"), To: []string{rm.To}, Subject: subject,
		Tags: map[string]string{"event_id": msg.Header.Get("X-WorkOS-Event-ID"), "kind": msg.Header.Get("X-WorkOS-Emailer-Kind")}}
	if to := msg.Header.Get("To"); to != rm.To {
		t.Errorf("header To %q, envelope %q", to, rm.To)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		switch ct := p.Header.Get("Content-Type"); {
		case strings.HasPrefix(ct, "text/plain"):
			m.Text = string(body)
		case strings.HasPrefix(ct, "text/html"):
			m.HTML = string(body)
		}
	}
	return m
}
