package mailer

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"strings"
	"sync"
	texttemplate "text/template"
	"time"
	"unicode"
)

//go:embed templates
var builtinTemplates embed.FS

// Kinds of email, as named in configuration and on the command line.
const (
	KindInvitation        = "invitation"
	KindMagicAuth         = "magic_auth"
	KindEmailVerification = "email_verification"
	KindPasswordReset     = "password_reset"
)

// CoreKinds are the kinds sent by default.
var CoreKinds = []string{KindInvitation, KindMagicAuth, KindEmailVerification, KindPasswordReset}

// Brand is the sender's identity shown in every email.
type Brand struct {
	Name         string
	LogoURL      string
	PrimaryColor string
	SupportEmail string
}

// Data is what a template sees. Code and Link are secrets.
type Data struct {
	Kind  string
	Brand Brand
	// Email is the recipient's address.
	Email string
	// Code is the one-time code of magic_auth and email_verification emails.
	Code string
	// Link is the accept-invitation or password-reset URL.
	Link             string
	ExpiresAt        time.Time
	OrganizationName string
	InviterName      string
	InviterEmail     string
	// Now is the render time; expiry phrases are relative to it.
	Now time.Time
}

// ExpiresIn phrases the time left, e.g. "10 minutes" or "7 days".
func (d Data) ExpiresIn() string {
	return humanDuration(d.ExpiresAt.Sub(d.Now))
}

// ExpiresOn is the absolute expiry, e.g. "Monday, November 23, 2026 at 21:32 UTC".
func (d Data) ExpiresOn() string {
	return d.ExpiresAt.UTC().Format("Monday, January 2, 2006 at 15:04 MST")
}

// Rendered is one email's content.
type Rendered struct {
	Subject string
	HTML    string
	Text    string
}

type kindTemplates struct {
	subject *texttemplate.Template
	html    *htmltemplate.Template
	text    *texttemplate.Template
}

// Templates renders the built-in templates. It is safe for concurrent use.
type Templates struct {
	kinds map[string]kindTemplates
}

// LoadTemplates parses every built-in template, so a broken one fails at start, not at send.
func LoadTemplates() (*Templates, error) {
	root, err := fs.Sub(builtinTemplates, "templates")
	if err != nil {
		return nil, err
	}
	t := &Templates{kinds: map[string]kindTemplates{}}
	for _, kind := range CoreKinds {
		kt, err := parseKind(root, "en", kind)
		if err != nil {
			return nil, err
		}
		t.kinds[kind] = kt
	}
	return t, nil
}

func parseKind(root fs.FS, locale, kind string) (kindTemplates, error) {
	var kt kindTemplates
	read := func(name string) (string, error) {
		b, err := fs.ReadFile(root, name)
		if err != nil {
			return "", fmt.Errorf("read template %s: %w", name, err)
		}
		return string(b), nil
	}
	subject, err := read(locale + "/" + kind + ".subject.txt")
	if err != nil {
		return kt, err
	}
	if kt.subject, err = texttemplate.New(kind + ".subject").Option("missingkey=error").Parse(subject); err != nil {
		return kt, fmt.Errorf("parse template: %w", err)
	}

	layoutHTML, err := read("layout.html")
	if err != nil {
		return kt, err
	}
	bodyHTML, err := read(locale + "/" + kind + ".html")
	if err != nil {
		return kt, err
	}
	kt.html = htmltemplate.New("layout.html").Option("missingkey=error")
	if _, err = kt.html.Parse(layoutHTML); err != nil {
		return kt, fmt.Errorf("parse template: %w", err)
	}
	if _, err = kt.html.New(locale + "/" + kind + ".html").Parse(bodyHTML); err != nil {
		return kt, fmt.Errorf("parse template: %w", err)
	}

	layoutText, err := read("layout.txt")
	if err != nil {
		return kt, err
	}
	bodyText, err := read(locale + "/" + kind + ".txt")
	if err != nil {
		return kt, err
	}
	kt.text = texttemplate.New("layout.txt").Option("missingkey=error")
	if _, err = kt.text.Parse(layoutText); err != nil {
		return kt, fmt.Errorf("parse template: %w", err)
	}
	if _, err = kt.text.New(locale + "/" + kind + ".txt").Parse(bodyText); err != nil {
		return kt, fmt.Errorf("parse template: %w", err)
	}
	return kt, nil
}

// Render produces the subject and both bodies for data.Kind.
func (t *Templates) Render(data Data) (Rendered, error) {
	kt, ok := t.kinds[data.Kind]
	if !ok {
		return Rendered{}, fmt.Errorf("no template for email kind %q", data.Kind)
	}
	// Names come from WorkOS users and admins: one line each, so none can start lines of its
	// own in the text body.
	data.OrganizationName = oneLineName(data.OrganizationName)
	data.InviterName = oneLineName(data.InviterName)
	data.InviterEmail = oneLineName(data.InviterEmail)
	subject, html, text := getBuffer(), getBuffer(), getBuffer()
	defer putBuffer(subject)
	defer putBuffer(html)
	defer putBuffer(text)
	if err := kt.subject.Execute(subject, data); err != nil {
		return Rendered{}, fmt.Errorf("render %s subject: %w", data.Kind, err)
	}
	if err := kt.html.Execute(html, data); err != nil {
		return Rendered{}, fmt.Errorf("render %s HTML: %w", data.Kind, err)
	}
	if err := kt.text.Execute(text, data); err != nil {
		return Rendered{}, fmt.Errorf("render %s text: %w", data.Kind, err)
	}
	return Rendered{
		Subject: oneLine(subject.String()),
		HTML:    html.String(),
		Text:    text.String(),
	}, nil
}

// buffers are reused across renders: a rendered email is a few KiB, and growing a fresh buffer
// to that size for each of its three parts was a good part of the render's cost.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return buffers.Get().(*bytes.Buffer) }

// putBuffer wipes b, which held a code or link, and returns it to the pool.
func putBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 { // an outlier; let it go
		return
	}
	clear(b.Bytes())
	b.Reset()
	buffers.Put(b)
}

// oneLine folds whitespace, CR and LF included, so a subject can never carry a header break.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// oneLineName drops control characters and folds whitespace, CR and LF included. It also drops
// bidirectional overrides (U+202E and friends), which could make a name display as something
// else, e.g. reverse a domain an inviter "works at".
func oneLineName(s string) string {
	return oneLine(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && !unicode.IsSpace(r) || unicode.Is(unicode.Bidi_Control, r) {
			return -1
		}
		return r
	}, s))
}

func humanDuration(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case d < time.Minute:
		return "less than a minute"
	case d < time.Hour:
		return plural(int64((d+30*time.Second)/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int64((d+30*time.Minute)/time.Hour), "hour")
	default:
		return plural(int64((d+12*time.Hour)/(24*time.Hour)), "day")
	}
}
