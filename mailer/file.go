package mailer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// File writes each message as an RFC 5322 .eml file (mime.go, as SMTP sends it): a local mail
// sink for development and the demo. Files are written atomically and named after the event, so
// a resend overwrites.
type File struct {
	Dir     string
	From    string
	ReplyTo string
	// ListUnsubscribe is mailer.list_unsubscribe; "" adds no header.
	ListUnsubscribe string
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// Send writes m to Dir/<event id>.eml and returns the file name as the message id.
func (f *File) Send(_ context.Context, m Message) (string, error) {
	raw, _, err := compose(m, orDefault(m.Sender.From, f.From), orDefault(m.Sender.ReplyTo, f.ReplyTo), f.ListUnsubscribe)
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
