package mailer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// File writes each message as an RFC 5322 .eml file: a local mail sink for development and the
// demo. Files are written atomically and named after the event, so a resend overwrites.
type File struct {
	Dir     string
	From    string
	ReplyTo string
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// Send writes m to Dir/<event id>.eml and returns the file name as the message id.
func (f *File) Send(_ context.Context, m Message) (string, error) {
	raw, err := f.compose(m)
	if err != nil {
		return "", &SendError{Class: Permanent, Err: err}
	}
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return "", &SendError{Class: Retry, Err: fmt.Errorf("create outbox %s: %w", f.Dir, err)}
	}
	name := unsafeFileChars.ReplaceAllString(m.EventID, "_") + ".eml"
	tmp, err := os.CreateTemp(f.Dir, ".tmp-*.eml")
	if err != nil {
		return "", &SendError{Class: Retry, Err: fmt.Errorf("write to outbox %s: %w", f.Dir, err)}
	}
	_, werr := tmp.Write(raw)
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(f.Dir, name))
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return "", &SendError{Class: Retry, Err: fmt.Errorf("write to outbox %s: %w", f.Dir, werr)}
	}
	return "file:" + name, nil
}

func (f *File) compose(m Message) ([]byte, error) {
	if _, err := ParseRecipient(m.To); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	var id [12]byte
	_, _ = rand.Read(id[:])
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	h := []struct{ k, v string }{
		{"From", f.From},
		{"To", m.To},
		{"Subject", mime.QEncoding.Encode("utf-8", m.Subject)},
		{"Date", date.UTC().Format(time.RFC1123Z)},
		{"Message-ID", "<" + hex.EncodeToString(id[:]) + "@workos-emailer.local>"},
		{"MIME-Version", "1.0"},
		{"X-WorkOS-Event-ID", unsafeFileChars.ReplaceAllString(m.EventID, "_")},
		{"X-WorkOS-Emailer-Kind", unsafeFileChars.ReplaceAllString(m.Kind, "_")},
	}
	if f.ReplyTo != "" {
		h = append(h, struct{ k, v string }{"Reply-To", f.ReplyTo})
	}
	mw := multipart.NewWriter(&buf)
	var head bytes.Buffer
	for _, kv := range h {
		fmt.Fprintf(&head, "%s: %s\r\n", kv.k, kv.v)
	}
	fmt.Fprintf(&head, "Content-Type: multipart/alternative; boundary=%q\r\n\r\n", mw.Boundary())
	for _, part := range []struct{ ctype, body string }{
		{"text/plain; charset=UTF-8", m.Text},
		{"text/html; charset=UTF-8", m.HTML},
	} {
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.ctype},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(part.body)); err != nil {
			return nil, err
		}
		if err := qp.Close(); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return append(head.Bytes(), buf.Bytes()...), nil
}
