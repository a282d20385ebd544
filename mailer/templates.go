package mailer

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html"
	htmltemplate "html/template"
	"io/fs"
	"math"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	texttemplate "text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/language"

	"github.com/workos-emailer/workos-emailer/kinds"
)

//go:embed templates
var builtinTemplates embed.FS

// Brand is the sender's identity shown in every email.
type Brand struct {
	Name         string
	LogoURL      string
	PrimaryColor string
	SupportEmail string
	// ButtonColor and ButtonTextColor are derived from PrimaryColor (the text is white or
	// near-black, whichever reads better on it).
	ButtonColor     string
	ButtonTextColor string
}

// defaultButtonColor is the button's color without brand.primary_color.
const defaultButtonColor = "#4f46e5"

var hexColorRE = regexp.MustCompile(`^#([0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})$`)

// resolve fills the derived colors. A primary color that is not a hex color is an error.
func (b Brand) resolve() (Brand, error) {
	b.ButtonColor = b.PrimaryColor
	if b.ButtonColor == "" {
		b.ButtonColor = defaultButtonColor
	}
	if !hexColorRE.MatchString(b.ButtonColor) {
		return b, fmt.Errorf("brand color %q is not a hex color like #4f46e5", b.ButtonColor)
	}
	hex := b.ButtonColor[1:]
	if len(hex) == 3 {
		hex = string([]byte{hex[0], hex[0], hex[1], hex[1], hex[2], hex[2]})
	}
	b.ButtonColor = "#" + strings.ToLower(hex)
	v, _ := strconv.ParseUint(hex, 16, 32)
	lum := relativeLuminance(uint8(v>>16), uint8(v>>8), uint8(v))
	// White text needs a contrast of 4.5 (WCAG AA) against the button: (1+0.05)/(L+0.05).
	b.ButtonTextColor = "#ffffff"
	if 1.05/(lum+0.05) < 4.5 {
		b.ButtonTextColor = "#111827"
	}
	return b, nil
}

func relativeLuminance(r, g, b uint8) float64 {
	lin := func(c uint8) float64 {
		v := float64(c) / 255
		if v <= 0.03928 {
			return v / 12.92
		}
		return math.Pow((v+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(r) + 0.7152*lin(g) + 0.0722*lin(b)
}

// Data is what a template sees. Code and Link are secrets. Render fills the fields below
// "Filled by Render".
type Data struct {
	Kind string
	// Email is the recipient's address.
	Email string
	// Code is the one-time code of magic_auth and email_verification emails.
	Code string
	// Link is the URL the email's button opens: the accept-invitation or password-reset link,
	// or for welcome and password_changed the configured links.app_url (may be empty).
	Link      string
	ExpiresAt time.Time
	// OrganizationID picks the organization's templates and locale (invitations).
	OrganizationID   string
	OrganizationName string
	InviterName      string
	InviterEmail     string
	// FirstName is the recipient's first name, when known (welcome, password_changed).
	FirstName string
	// Resent marks an invitation sent again (invitation.resent): the email is a reminder.
	Resent bool
	// UserLocales are the locales the reader asks for, first choice first (their WorkOS
	// locale, their metadata's); the first a catalog matches wins over the organization's and
	// the default.
	UserLocales []string
	// EventAt is when the event happened (password_changed: when the password was changed).
	EventAt time.Time
	// Now is the render time; expiry phrases are relative to it.
	Now time.Time

	// Filled by Render.
	Brand   Brand
	Locale  string
	Subject string
	// Inviter names who sent an invitation: "Ada Lovelace (ada@acme.example)", or whichever
	// of the two is known.
	Inviter string
	// ExpiresIn is the time left in words ("10 minutes", "10 Minuten"), ExpiresOn the expiry
	// as a date and time, EventOn EventAt likewise, all in the reader's language.
	ExpiresIn string
	ExpiresOn string
	EventOn   string
}

// Rendered is one email's content.
type Rendered struct {
	Subject string
	HTML    string
	Text    string
	// Sender is the organization's sender (TemplateOptions.Senders); zero: the mailer's.
	Sender Sender
}

// Sender is who an organization's emails come from (organizations.ORG.from, reply_to,
// configuration_set); an empty field keeps the mailer's own (mailer.from, ...).
type Sender struct {
	From, ReplyTo, ConfigurationSet string
}

// TemplateOptions configures LoadTemplates. The zero value is the built-in templates in
// English, times in UTC.
type TemplateOptions struct {
	// Dir overrides the built-in templates and messages (templates.dir); "" for none.
	Dir string
	// DefaultLocale is the fallback locale (templates.default_locale); "" is en.
	DefaultLocale string
	// OrgLocales maps organization ids to locales (templates.org_locales).
	OrgLocales map[string]string
	// TimeZone is the zone dates are written in; nil is UTC.
	TimeZone *time.Location
	Brand    Brand
	// Senders maps organization ids to their senders (organizations.*); the addresses are
	// checked by the configuration.
	Senders map[string]Sender
}

// Templates renders emails. It is safe for concurrent use.
//
// Lookup. Each of the three parts of an email (subject, HTML, text) and the two layouts is
// looked up on its own, first in templates.dir as ORG/LOCALE/NAME, ORG/NAME, LOCALE/NAME and
// NAME, then among the built-in templates as NAME. ORG is the organization's id (e.g.
// org_01H...), LOCALE the reader's locale (e.g. de, pt-BR); NAME is KIND.subject.txt,
// KIND.html, KIND.txt, layout.html, layout.txt or blocks.html (the HTML pieces the kinds share:
// heading, button, code box). The built-in templates are the same for every
// locale: their words come from the locale's messages.
type Templates struct {
	opts      TemplateOptions
	brand     Brand
	catalogs  map[string]*catalog
	supported []string // locales with a catalog: the default first
	matcher   language.Matcher
	dir       fs.FS
	orgs      map[string]bool // organizations with a directory of their own
	sets      map[setKey]*kindTemplates
}

type setKey struct{ org, locale, kind string }

type kindTemplates struct {
	subject *texttemplate.Template
	html    *htmltemplate.Template
	text    *texttemplate.Template
	// files are the templates used, for errors and the preview.
	files []string
}

// TemplateError is a template that does not parse or fails on sample data: a configuration
// error. Its message names the file and line.
type TemplateError struct{ Err error }

func (e *TemplateError) Error() string { return e.Err.Error() }
func (e *TemplateError) Unwrap() error { return e.Err }

var orgDirRE = regexp.MustCompile(`^org_[0-9A-Za-z]{1,64}$`)

// templateNames are the file names a template directory may hold, per kind and the layouts.
func templateNames() map[string]bool {
	names := map[string]bool{"layout.html": true, "layout.txt": true, "blocks.html": true}
	for _, k := range kinds.Names() {
		for _, ext := range []string{".subject.txt", ".html", ".txt"} {
			names[k+ext] = true
		}
	}
	return names
}

// LoadTemplates reads, parses and tries every template and message it could ever use, so a
// broken one stops the daemon at start (a *TemplateError naming the file and line), never a
// send.
func LoadTemplates(opts TemplateOptions) (*Templates, error) {
	if opts.TimeZone == nil {
		opts.TimeZone = time.UTC
	}
	brand, err := opts.Brand.resolve()
	if err != nil {
		return nil, err
	}
	t := &Templates{opts: opts, brand: brand, orgs: map[string]bool{}, sets: map[setKey]*kindTemplates{}}
	if opts.Dir != "" {
		fi, err := os.Stat(opts.Dir)
		if err != nil {
			return nil, &TemplateError{fmt.Errorf("templates.dir: %w", err)}
		}
		if !fi.IsDir() {
			return nil, &TemplateError{fmt.Errorf("templates.dir: %s is not a directory", opts.Dir)}
		}
		t.dir = os.DirFS(opts.Dir)
	}
	if t.catalogs, err = loadCatalogs(t.dir, opts.Dir); err != nil {
		return nil, &TemplateError{err}
	}
	// The default is matched as any requested locale is ("de-DE" is de), then put first.
	for name := range t.catalogs {
		t.supported = append(t.supported, name)
	}
	sort.Strings(t.supported)
	t.buildMatcher()
	def, ok := t.match(orDefault(opts.DefaultLocale, "en"))
	if !ok {
		return nil, &TemplateError{fmt.Errorf("templates.default_locale: no messages for %q (have %s)", opts.DefaultLocale, strings.Join(t.supported, ", "))}
	}
	t.supported = slices.DeleteFunc(t.supported, func(name string) bool { return name == def })
	t.supported = append([]string{def}, t.supported...)
	t.buildMatcher()
	// Organization ids are ULIDs, which read the same in either case; the configuration
	// lowercases map keys (viper does), so both are kept and looked up in lower case.
	t.opts.OrgLocales = lowerKeys(opts.OrgLocales)
	t.opts.Senders = lowerKeys(opts.Senders)
	for org, loc := range opts.OrgLocales {
		if _, ok := t.match(loc); !ok {
			return nil, &TemplateError{fmt.Errorf("templates.org_locales: %s: no messages for locale %q (have %s)", org, loc, strings.Join(t.supported, ", "))}
		}
	}
	if err := t.scanDir(); err != nil {
		return nil, &TemplateError{err}
	}
	if err := t.compileAll(); err != nil {
		return nil, &TemplateError{err}
	}
	return t, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// buildMatcher indexes t.supported for match.
func (t *Templates) buildMatcher() {
	tags := make([]language.Tag, len(t.supported))
	for i, name := range t.supported {
		tags[i] = t.catalogs[name].tag
	}
	t.matcher = language.NewMatcher(tags)
}

// match returns the supported locale for a requested one ("de-AT" -> "de", "pt" -> "pt-BR").
func (t *Templates) match(requested string) (string, bool) {
	if requested == "" {
		return "", false
	}
	if c := canonicalLocale(requested); t.catalogs[c] != nil {
		return c, true
	}
	tag, err := language.Parse(requested)
	if err != nil {
		return "", false
	}
	_, i, conf := t.matcher.Match(tag)
	// The matcher also offers a language as a stand-in for another (English for Klingon):
	// only a variant of the same language will do.
	want, _ := tag.Base()
	got, _ := t.catalogs[t.supported[i]].tag.Base()
	if conf < language.High || want != got {
		return "", false
	}
	return t.supported[i], true
}

// Locales lists the locales templates can be rendered in, the default first.
func (t *Templates) Locales() []string { return slices.Clone(t.supported) }

// Organizations lists the organizations with templates of their own, sorted.
func (t *Templates) Organizations() []string {
	out := make([]string, 0, len(t.orgs))
	for o := range t.orgs {
		out = append(out, o)
	}
	slices.Sort(out)
	return out
}

// LocaleFor is the locale an email is written in: the first of the user's that a catalog
// matches, else the organization's (templates.org_locales), else templates.default_locale.
func (t *Templates) LocaleFor(orgID string, userLocales ...string) string {
	for _, ul := range userLocales {
		if l, ok := t.match(ul); ok {
			return l
		}
	}
	if l, ok := t.match(t.opts.OrgLocales[strings.ToLower(orgID)]); ok {
		return l
	}
	return t.supported[0]
}

// scanDir checks the layout of templates.dir, so a misspelt file or directory is an error
// instead of a template silently not used.
func (t *Templates) scanDir() error {
	if t.dir == nil {
		return nil
	}
	names := templateNames()
	isLocale := func(name string) bool { return t.catalogs[name] != nil }
	checkFiles := func(dir string, allowLocales bool) error {
		entries, err := fs.ReadDir(t.dir, orDefault(dir, "."))
		if err != nil {
			return err
		}
		for _, e := range entries {
			name := e.Name()
			shown := path.Join(t.opts.Dir, dir, name)
			switch {
			case strings.HasPrefix(name, "."):
			case !e.IsDir() && names[name]:
			case !e.IsDir():
				return fmt.Errorf("%s: not a template name (templates are KIND.subject.txt, KIND.html, KIND.txt, layout.html, layout.txt and blocks.html; kinds: %s)",
					shown, strings.Join(kinds.Names(), ", "))
			case allowLocales && isLocale(name):
				if err := checkLeaf(t.dir, names, path.Join(dir, name), shown); err != nil {
					return err
				}
			case allowLocales && canonicalLocale(name) != name && isLocale(canonicalLocale(name)):
				return fmt.Errorf("%s: locale directories are named %s", shown, canonicalLocale(name))
			case dir == "" && name == "locales":
			case dir == "" && orgDirRE.MatchString(name):
				t.orgs[name] = true
			case dir == "":
				return fmt.Errorf("%s: a directory here is a locale (%s; others need templates.dir/locales/LOCALE.json) or an organization id (org_...)",
					shown, strings.Join(t.supported, ", "))
			default:
				return fmt.Errorf("%s: a directory here is a locale (%s)", shown, strings.Join(t.supported, ", "))
			}
		}
		return nil
	}
	if err := checkFiles("", true); err != nil {
		return err
	}
	for org := range t.orgs {
		if err := checkFiles(org, true); err != nil {
			return err
		}
	}
	return nil
}

// checkLeaf checks a locale directory: templates only.
func checkLeaf(dir fs.FS, names map[string]bool, sub, shown string) error {
	entries, err := fs.ReadDir(dir, sub)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if e.IsDir() || !names[e.Name()] {
			return fmt.Errorf("%s: not a template name (templates are KIND.subject.txt, KIND.html, KIND.txt, layout.html, layout.txt and blocks.html)",
				path.Join(shown, e.Name()))
		}
	}
	return nil
}

// source is one template file: where it is and what it says.
type source struct {
	shown string // for errors: "templates.dir/org_1/de/invitation.html" or "built-in invitation.html"
	text  string
}

// find looks name up for org and locale (see Templates).
func (t *Templates) find(org, locale, name string) (source, error) {
	if t.dir != nil {
		var candidates []string
		if org != "" {
			candidates = append(candidates, path.Join(org, locale, name), path.Join(org, name))
		}
		candidates = append(candidates, path.Join(locale, name), name)
		for _, c := range candidates {
			b, err := fs.ReadFile(t.dir, c)
			if err == nil {
				return source{shown: path.Join(t.opts.Dir, c), text: string(b)}, nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return source{}, fmt.Errorf("read template %s: %w", path.Join(t.opts.Dir, c), err)
			}
		}
	}
	b, err := builtinTemplates.ReadFile("templates/" + name)
	if err != nil {
		return source{}, fmt.Errorf("no built-in template %s", name)
	}
	return source{shown: "built-in " + name, text: string(b)}, nil
}

// compileAll builds the templates of every kind for every locale and every organization with
// a directory, sharing what resolves to the same files, and tries each on sample data.
func (t *Templates) compileAll() error {
	compiled := map[string]*kindTemplates{} // by locale and files
	orgs := append([]string{""}, t.Organizations()...)
	for _, org := range orgs {
		for _, locale := range t.supported {
			for _, kind := range kinds.Names() {
				var srcs [6]source
				for i, name := range []string{kind + ".subject.txt", "layout.html", kind + ".html", "layout.txt", kind + ".txt", "blocks.html"} {
					src, err := t.find(org, locale, name)
					if err != nil {
						return err
					}
					srcs[i] = src
				}
				key := locale
				for _, s := range srcs {
					key += "\x00" + s.shown
				}
				kt := compiled[key]
				if kt == nil {
					var err error
					if kt, err = t.compile(locale, srcs); err != nil {
						return err
					}
					compiled[key] = kt
					for _, variant := range append([]string{""}, Variants(kind)...) {
						d, _ := sampleData(kind, variant, time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC))
						if _, err := t.render(kt, d, locale); err != nil {
							return fmt.Errorf("%s (locale %s) fails on sample data%s: %w", kind, locale, variantNote(variant), err)
						}
					}
				}
				t.sets[setKey{org, locale, kind}] = kt
			}
		}
	}
	return nil
}

// compile parses srcs: the subject; layout.html, KIND.html; layout.txt, KIND.txt; blocks.html.
func (t *Templates) compile(locale string, srcs [6]source) (*kindTemplates, error) {
	cat := t.catalogs[locale]
	kt := &kindTemplates{}
	for _, s := range srcs {
		kt.files = append(kt.files, s.shown)
	}
	textFuncs := texttemplate.FuncMap{
		"t":      cat.T,
		"strong": func(s string) string { return s },
		"mailto": func(s string) string { return s },
	}
	htmlFuncs := htmltemplate.FuncMap{
		"t":      cat.TH,
		"strong": strong,
		"mailto": mailto,
	}
	var err error
	if kt.subject, err = texttemplate.New(srcs[0].shown).Funcs(textFuncs).Option("missingkey=error").Parse(srcs[0].text); err != nil {
		return nil, err
	}
	kt.html = htmltemplate.New(srcs[1].shown).Funcs(htmlFuncs).Option("missingkey=error")
	if _, err = kt.html.Parse(srcs[1].text); err != nil {
		return nil, err
	}
	if _, err = kt.html.New(srcs[2].shown).Parse(srcs[2].text); err != nil {
		return nil, err
	}
	if _, err = kt.html.New(srcs[5].shown).Parse(srcs[5].text); err != nil {
		return nil, err
	}
	kt.text = texttemplate.New(srcs[3].shown).Funcs(textFuncs).Option("missingkey=error")
	if _, err = kt.text.Parse(srcs[3].text); err != nil {
		return nil, err
	}
	if _, err = kt.text.New(srcs[4].shown).Parse(srcs[4].text); err != nil {
		return nil, err
	}
	for _, tt := range append(kt.text.Templates(), kt.subject) {
		foldMessages(tt.Tree, cat, same)
	}
	for _, ht := range kt.html.Templates() {
		foldMessages(ht.Tree, cat, html.EscapeString)
	}
	return kt, nil
}

// strong emphasizes a value inside a message (HTML).
func strong(s string) htmltemplate.HTML {
	return htmltemplate.HTML("<strong>" + html.EscapeString(s) + "</strong>")
}

// mailto links an address inside a message (HTML). Addresses come from configuration, checked
// to be one bare address.
func mailto(addr string) htmltemplate.HTML {
	e := html.EscapeString(addr)
	return htmltemplate.HTML(`<a href="mailto:` + e + `" style="color:inherit;">` + e + `</a>`)
}

// Files lists the template files an email of kind for org in locale is rendered from.
func (t *Templates) Files(kind, org, locale string) []string {
	if kt := t.lookup(kind, org, locale); kt != nil {
		return slices.Clone(kt.files)
	}
	return nil
}

func (t *Templates) lookup(kind, org, locale string) *kindTemplates {
	if !t.orgs[org] {
		org = ""
	}
	return t.sets[setKey{org, locale, kind}]
}

// Render produces the subject and both bodies for data.Kind, in the reader's locale, with the
// organization's templates if it has any.
func (t *Templates) Render(data Data) (Rendered, error) {
	locale := t.LocaleFor(data.OrganizationID, data.UserLocales...)
	kt := t.lookup(data.Kind, data.OrganizationID, locale)
	if kt == nil {
		return Rendered{}, fmt.Errorf("no template for email kind %q", data.Kind)
	}
	return t.render(kt, data, locale)
}

func (t *Templates) render(kt *kindTemplates, data Data, locale string) (Rendered, error) {
	cat := t.catalogs[locale]
	data.Brand, data.Locale = t.brand, locale
	// Names come from WorkOS users and admins: one line each, so none can start lines of its
	// own in the text body.
	data.OrganizationName = oneLineName(data.OrganizationName)
	data.InviterName = oneLineName(data.InviterName)
	data.InviterEmail = oneLineName(data.InviterEmail)
	data.FirstName = oneLineName(data.FirstName)
	switch {
	case data.InviterName != "" && data.InviterEmail != "":
		// Japanese writes the address in full-width parentheses: the locale says how.
		data.Inviter, _ = cat.T("format.name_with_email", "name", data.InviterName, "email", data.InviterEmail)
	default:
		data.Inviter = data.InviterName + data.InviterEmail
	}
	if !data.ExpiresAt.IsZero() {
		data.ExpiresIn = cat.Duration(data.ExpiresAt.Sub(data.Now))
		data.ExpiresOn = cat.DateTime(data.ExpiresAt, t.opts.TimeZone)
	}
	if !data.EventAt.IsZero() {
		data.EventOn = cat.DateTime(data.EventAt, t.opts.TimeZone)
	}
	subject, html, text := getBuffer(), getBuffer(), getBuffer()
	defer putBuffer(subject)
	defer putBuffer(html)
	defer putBuffer(text)
	if err := kt.subject.Execute(subject, data); err != nil {
		return Rendered{}, fmt.Errorf("render %s subject: %w", data.Kind, err)
	}
	data.Subject = oneLine(subject.String())
	if err := kt.html.Execute(html, data); err != nil {
		return Rendered{}, fmt.Errorf("render %s HTML: %w", data.Kind, err)
	}
	if err := kt.text.Execute(text, data); err != nil {
		return Rendered{}, fmt.Errorf("render %s text: %w", data.Kind, err)
	}
	return Rendered{Subject: data.Subject, HTML: html.String(), Text: tidyText(text.Bytes()),
		Sender: t.opts.Senders[strings.ToLower(data.OrganizationID)]}, nil
}

// tidyText trims trailing spaces from lines and runs of blank lines a template's conditionals
// leave behind, so the text version reads as if written by hand.
func tidyText(b []byte) string {
	out := make([]byte, 0, len(b)+1)
	blank := 0 // blank lines seen since the last text
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		line = bytes.TrimRight(line, " \t\r")
		if len(line) == 0 {
			blank++
			continue
		}
		if blank > 0 && len(out) > 0 {
			out = append(out, '\n')
		}
		blank = 0
		out = append(out, line...)
		out = append(out, '\n')
	}
	return string(out)
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

// oneLineName makes a name from WorkOS (an organization's, an inviter's, a user's) safe to show
// on one line: it drops control characters, bidirectional overrides (U+202E and friends, which
// could reverse a domain an inviter "works at") and other invisible characters ("Goo\u200bgle"
// displays as "Google"), folds whitespace, CR and LF included, and cuts it to maxNameRunes.
func oneLineName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	var prev rune
	for i, r := range s {
		if invisible(r) {
			// Zero-width (non-)joiners shape Persian and Indic words and join emoji: kept there,
			// dropped between Latin letters, where they only hide.
			if r != '\u200c' && r != '\u200d' || !joinsScript(prev) {
				continue
			}
			if next, _ := utf8.DecodeRuneInString(s[i+utf8.RuneLen(r):]); !joinsScript(next) {
				continue
			}
		}
		b.WriteRune(r)
		prev = r
	}
	name := oneLine(b.String())
	if utf8.RuneCountInString(name) <= maxNameRunes {
		return name
	}
	runes := 0
	for n := range name {
		if runes == maxNameRunes-1 {
			name = name[:n]
			break
		}
		runes++
	}
	return strings.TrimRight(name, " ") + "…"
}

// maxNameRunes bounds a name in an email. WorkOS bounds none: a 10 kB organization name made a
// subject of 10,271 characters. Names longer than this are cut with an ellipsis.
const maxNameRunes = 80

// invisible: control characters other than whitespace (which oneLine folds), format characters
// (Cf: bidirectional controls, zero-width space and joiners, word joiner, soft hyphen, BOM) and
// the other code points Unicode says to display as nothing (Hangul fillers and the like).
func invisible(r rune) bool {
	return unicode.IsControl(r) && !unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) ||
		unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r)
}

// joinsScript: a letter or symbol a zero-width joiner or non-joiner legitimately sits next to:
// neither ASCII nor Latin (Arabic and Indic scripts, emoji).
func joinsScript(r rune) bool {
	return r >= utf8.RuneSelf && r != utf8.RuneError && !unicode.Is(unicode.Latin, r) && !invisible(r) && !unicode.IsSpace(r)
}

// variantNote names a sample variant in an error, "" for a kind's own sample.
func variantNote(variant string) string {
	if variant == "" {
		return ""
	}
	return " (variant " + variant + ")"
}

func lowerKeys[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}
