package mailer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// compose builds the RFC 5322 message the file and SMTP drivers write: multipart/alternative,
// text then HTML, both UTF-8 quoted-printable, with Date, a Message-ID of our own (a duplicate
// can be told downstream) and the event's id and kind. It returns the message and its
// Message-ID.
func compose(m Message, from, replyTo, listUnsubscribe string) (raw []byte, messageID string, err error) {
	if _, err := ParseRecipient(m.To); err != nil {
		return nil, "", err
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	messageID = "<" + hex.EncodeToString(id[:]) + "@workos-emailer>"
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	fromHeader, err := HeaderAddress(from)
	if err != nil {
		return nil, "", fmt.Errorf("mailer.from: %w", err)
	}
	h := []struct{ k, v string }{
		{"From", fromHeader},
		{"To", m.To},
		{"Subject", encodeHeader("Subject", m.Subject)},
		{"Date", date.UTC().Format(time.RFC1123Z)},
		{"Message-ID", messageID},
		{"MIME-Version", "1.0"},
		{"X-WorkOS-Event-ID", unsafeFileChars.ReplaceAllString(m.EventID, "_")},
		{"X-WorkOS-Emailer-Kind", unsafeFileChars.ReplaceAllString(m.Kind, "_")},
	}
	if replyTo != "" {
		rt, err := HeaderAddress(replyTo)
		if err != nil {
			return nil, "", fmt.Errorf("mailer.reply_to: %w", err)
		}
		h = append(h, struct{ k, v string }{"Reply-To", rt})
	}
	for _, kv := range ListUnsubscribeHeaders(listUnsubscribe) {
		h = append(h, struct{ k, v string }{kv[0], kv[1]})
	}
	var head, body bytes.Buffer
	mw := multipart.NewWriter(&body)
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
			return nil, "", err
		}
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(part.body)); err != nil {
			return nil, "", err
		}
		if err := qp.Close(); err != nil {
			return nil, "", err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, "", err
	}
	return append(head.Bytes(), body.Bytes()...), messageID, nil
}

// encodeHeader writes the value of header field as RFC 2047 encoded-words if it is not plain
// ASCII, so a subject in German or Japanese reaches every mail client intact: as many words as
// it takes for each line of the folded header to stay within 78 characters. Every piece is an
// encoded-word, even one of ASCII only: the space that folds between two encoded-words is not
// part of the text, but between an encoded-word and plain text it is (a subject would read
// "Robodesk  eingeladen").
func encodeHeader(field, s string) string {
	if isASCII(s) && !strings.ContainsAny(s, "\r\n") {
		return s // folded at spaces, if at all
	}
	var words []string
	avail := 78 - len(field) - len(": ")
	runes := []rune(s)
	for len(runes) > 0 {
		n := len(runes)
		for n > 1 && len(qWord(string(runes[:n]))) > avail {
			n--
		}
		words = append(words, qWord(string(runes[:n])))
		runes = runes[n:]
		avail = 75 // RFC 2047's limit for one encoded-word; the line with its space stays within 78
	}
	return strings.Join(words, "\r\n ")
}

// qWord is s as one RFC 2047 "Q" encoded-word, whatever its characters.
func qWord(s string) string {
	var b strings.Builder
	b.WriteString("=?utf-8?q?")
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
			b.WriteByte('_')
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("!*+-/", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	b.WriteString("?=")
	return b.String()
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

// CheckListUnsubscribe checks mailer.list_unsubscribe: a mailto: address or an https URL, one
// line, that can stand between angle brackets.
func CheckListUnsubscribe(s string) error {
	u, err := url.Parse(s)
	switch {
	case strings.ContainsAny(s, "\r\n<> "), err != nil:
		return errors.New("must be one mailto: or https: URL without spaces or angle brackets")
	case u.Scheme == "mailto" && u.Opaque != "":
		return nil
	case u.Scheme == "https" && u.Host != "":
		return nil
	}
	return errors.New("must be a mailto: address or an https: URL")
}

// ListUnsubscribeHeaders are the headers of mailer.list_unsubscribe ("" gives none): an https
// URL also takes RFC 8058's one-click POST, which mailbox providers ask of bulk senders.
func ListUnsubscribeHeaders(s string) [][2]string {
	if s == "" {
		return nil
	}
	h := [][2]string{{"List-Unsubscribe", "<" + s + ">"}}
	if strings.HasPrefix(s, "https:") {
		h = append(h, [2]string{"List-Unsubscribe-Post", "List-Unsubscribe=One-Click"})
	}
	return h
}
