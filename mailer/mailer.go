// Package mailer renders emails from templates and hands them to a transport: Amazon SES v2,
// .eml files for development, or a log line.
package mailer

import (
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Message is one rendered email for one recipient. Its bodies carry secrets (codes, links): a
// Message must never be logged or persisted as a whole.
type Message struct {
	To      string
	Subject string
	HTML    string
	Text    string
	EventID string
	Kind    string
	Date    time.Time
	// Sender, where set, replaces the mailer's From, Reply-To and configuration set (an
	// organization's own sender).
	Sender Sender
}

// Class tells the caller what a failed send means for the message.
type Class int

const (
	// Retry: the message was definitely not accepted (throttled, a 5xx answer, a connection
	// that never carried the request). Sending it again cannot duplicate it.
	Retry Class = iota + 1
	// Permanent: the message was refused for a reason resending will not fix.
	Permanent
	// Ambiguous: the request went out but no answer came back; it may have been accepted.
	Ambiguous
	// Paused: the account cannot send at all (suspended, paused, no permission). Stop sending
	// everything and alert a person; this message was not accepted.
	Paused
)

func (c Class) String() string {
	switch c {
	case Retry:
		return "retry"
	case Permanent:
		return "permanent"
	case Ambiguous:
		return "ambiguous"
	case Paused:
		return "paused"
	}
	return "unknown"
}

// SendError is a failed send with its classification.
type SendError struct {
	Class Class
	// Code is the provider's error code, e.g. "MessageRejected"; empty for transport failures.
	Code string
	// Unavailable marks a Retry that says nothing about this message: throttling, a gateway
	// error, a connection that never reached SES. It does not count against max_attempts.
	Unavailable bool
	Err         error
	// firstCommand: SMTP failed at MAIL FROM, before anything of the message was sent.
	firstCommand bool
	// pauseReason, when set, is PauseReason's answer for a Paused error whose code alone
	// would say too little (SES's MessageRejected for an unverified identity).
	pauseReason string
}

func (e *SendError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("send email (%s, %s): %v", e.Class, e.Code, e.Err)
	}
	return fmt.Sprintf("send email (%s): %v", e.Class, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// CodeCredentialsUnavailable is the Code of a Paused SendError for a send that could not start
// because the AWS credentials could not be resolved (an instance role, container endpoint or
// STS refresh failing): nothing reached SES.
const CodeCredentialsUnavailable = "CredentialsUnavailable"

// PauseReason says in a few words why the account cannot send, for readiness and status; ""
// when err is not a Paused SendError.
func PauseReason(err error) string {
	var se *SendError
	switch {
	case !errors.As(err, &se) || se.Class != Paused:
		return ""
	case se.pauseReason != "":
		return se.pauseReason
	case se.Code == CodeCredentialsUnavailable:
		return "AWS credentials cannot be resolved"
	case strings.HasPrefix(se.Code, "SMTP"):
		return "the SMTP relay refuses to send (" + se.Code + ")"
	case se.Code != "":
		return "SES refuses to send for the account (" + se.Code + ")"
	}
	return "the mail provider refuses to send for the account"
}

// redacted is an error whose text has what looks like an email address replaced. Providers
// echo addresses in their messages (SES: "...failed the check in region US-EAST-1:
// user@example.com"), and those texts become logged and stored reasons, where addresses must
// not be. Unwrap keeps the cause for errors.As; ErrorDetail has the full text.
type redacted struct{ err error }

func (r redacted) Error() string { return RedactAddresses(r.err.Error()) }
func (r redacted) Unwrap() error { return r.err }

// addressLike is anything of the shape local@domain, however unusual (a quoted local part,
// Unicode), without the punctuation that ends a sentence.
var addressLike = regexp.MustCompile(`[^\s@<>()\[\]{},;:']+@[^\s@<>()\[\]{},;:"']*[^\s@<>()\[\]{},;:"'.!?]`)

// RedactAddresses replaces what looks like an email address in s with "<address>".
func RedactAddresses(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return addressLike.ReplaceAllLiteralString(s, "<address>")
}

// ErrorDetail is err's text with the parts a SendError redacts left in: for debug logs only.
func ErrorDetail(err error) string {
	var r redacted
	if errors.As(err, &r) {
		return r.err.Error()
	}
	return err.Error()
}

// Unavailable reports whether err is a retryable failure of the service rather than of the
// message.
func Unavailable(err error) bool {
	var se *SendError
	return errors.As(err, &se) && se.Class == Retry && se.Unavailable
}

// ClassOf returns the class of a send error; errors that are not a SendError are treated as
// Ambiguous, the only safe assumption about an unknown failure.
func ClassOf(err error) Class {
	var se *SendError
	if errors.As(err, &se) {
		return se.Class
	}
	return Ambiguous
}

// ParseRecipient accepts exactly one bare address (user@domain) and refuses anything that could
// turn into extra headers or recipients: CR/LF, display names, lists, groups. It returns the
// address to send to: without surrounding spaces, and with an internationalized domain in the
// ASCII (Punycode) form that SES and SMTP servers without SMTPUTF8 require. An address whose
// local part is not ASCII cannot be sent through SES at all and is refused.
func ParseRecipient(s string) (string, error) {
	s = strings.Trim(s, " \t")
	if s == "" {
		return "", errors.New("recipient address is empty")
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", errors.New("recipient address contains a line break or NUL")
	}
	// Errors never echo the address: reasons are stored and logged.
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return "", errors.New("recipient is not exactly one valid address")
	}
	local, domain := s[:at], s[at+1:]
	if !isASCII(local) {
		return "", errors.New("recipient address has a local part that is not ASCII (it needs SMTPUTF8, which SES does not offer)")
	}
	if !isASCII(domain) {
		ascii, err := idna.Lookup.ToASCII(domain)
		if err != nil || !isASCII(ascii) {
			return "", errors.New("recipient address has a domain that is not a valid internationalized domain name")
		}
		s = local + "@" + ascii
		domain = ascii
	}
	// The limit is SMTP's, so it applies to the address as sent.
	if len(s) > 254 {
		return "", errors.New("recipient address is longer than 254 characters")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil {
		return "", errors.New("recipient is not exactly one valid address")
	}
	if addr.Name != "" || addr.Address != s {
		return "", errors.New("recipient must be a single bare address, not a name or list")
	}
	if !strings.Contains(domain, ".") && domain != "localhost" {
		return "", errors.New("recipient address has no domain")
	}
	return s, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// ParseSender validates a From or Reply-To value from configuration: one address, optionally
// with a display name, no line breaks.
func ParseSender(s string) (*mail.Address, error) {
	if strings.ContainsAny(s, "\r\n\x00") {
		return nil, errors.New("contains a line break or NUL")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("not a valid address: %w", err)
	}
	return addr, nil
}
