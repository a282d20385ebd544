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
	"strings"
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

// encodeHeader writes the value of header field as RFC 2047 encoded-words if it is not plain
// ASCII, so a subject in German or Japanese reaches every mail client intact: as many words as
// it takes for each line of the folded header to stay within 78 characters.
func encodeHeader(field, s string) string {
	if enc := mime.QEncoding.Encode("utf-8", s); enc == s {
		return s // ASCII: folded at spaces, if at all
	}
	var words []string
	avail := 78 - len(field) - len(": ")
	runes := []rune(s)
	for len(runes) > 0 {
		n := len(runes)
		for n > 1 && len(mime.QEncoding.Encode("utf-8", string(runes[:n]))) > avail {
			n--
		}
		words = append(words, mime.QEncoding.Encode("utf-8", string(runes[:n])))
		runes = runes[n:]
		avail = 78 - 1 // a continuation line starts with a space
	}
	return strings.Join(words, "\r\n ")
}

// HeaderAddress formats a configured address ("Café Ünïcode <no-reply@acme.example>") for a
// header: a display name that is not ASCII becomes an encoded-word, as SES and RFC 5322 need.
func HeaderAddress(s string) (string, error) {
	addr, err := ParseSender(s)
	if err != nil {
		return "", err
	}
	for _, r := range s {
		if r > 127 {
			return addr.String(), nil
		}
	}
	return s, nil // ASCII, and parsed: as configured
}

// foldHeader folds a header line longer than 78 characters at spaces (between the
// encoded-words of a long subject, say), continuing on lines that start with a space.
func foldHeader(line string) string {
	const limit = 78
	name := strings.IndexByte(line, ':') + 2 // the first line keeps the field name and a value
	var b strings.Builder
	for len(line) > limit {
		cut := strings.LastIndexByte(line[:limit], ' ')
		if cut <= name {
			// No space to fold at: RFC 5322 allows lines of up to 998 characters.
			next := strings.IndexByte(line[max(limit, name+1):], ' ')
			if next < 0 {
				break
			}
			cut = max(limit, name+1) + next
		}
		b.WriteString(line[:cut])
		b.WriteString("\r\n")
		line = line[cut:] // keeps the space, which starts the continuation line
		name = 0
	}
	b.WriteString(line)
	return b.String()
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
	from, err := HeaderAddress(f.From)
	if err != nil {
		return nil, fmt.Errorf("mailer.from: %w", err)
	}
	h := []struct{ k, v string }{
		{"From", from},
		{"To", m.To},
		{"Subject", encodeHeader("Subject", m.Subject)},
		{"Date", date.UTC().Format(time.RFC1123Z)},
		{"Message-ID", "<" + hex.EncodeToString(id[:]) + "@workos-emailer.local>"},
		{"MIME-Version", "1.0"},
		{"X-WorkOS-Event-ID", unsafeFileChars.ReplaceAllString(m.EventID, "_")},
		{"X-WorkOS-Emailer-Kind", unsafeFileChars.ReplaceAllString(m.Kind, "_")},
	}
	if f.ReplyTo != "" {
		replyTo, err := HeaderAddress(f.ReplyTo)
		if err != nil {
			return nil, fmt.Errorf("mailer.reply_to: %w", err)
		}
		h = append(h, struct{ k, v string }{"Reply-To", replyTo})
	}
	mw := multipart.NewWriter(&buf)
	var head bytes.Buffer
	for _, kv := range h {
		line := kv.k + ": " + kv.v
		if !strings.Contains(line, "\r\n") { // encodeHeader folds its own
			line = foldHeader(line)
		}
		head.WriteString(line)
		head.WriteString("\r\n")
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
