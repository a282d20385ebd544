package mailer

import (
	"embed"
	"encoding/json"
	"fmt"
	"html"
	htmltemplate "html/template"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goodsign/monday"
	"golang.org/x/text/feature/plural"
	"golang.org/x/text/language"
)

// Translations. Every built-in template takes its words from a catalog of messages, one JSON
// file per locale under locales/ (operators may add or override messages in
// templates.dir/locales/). A message is plain text with {name} placeholders; one that depends
// on a number has a form per CLDR plural category ({"one": ..., "other": ...}), chosen with
// golang.org/x/text's plural rules for the locale. Dates are written with the locale's own
// pattern and month and day names (github.com/goodsign/monday).
//
// Messages are text, never markup: in HTML, the message and every value put into it are
// escaped, and the only markup is what the template's own helpers build (strong, mailto).

//go:embed locales/*.json
var builtinLocales embed.FS

// Locales are the built-in locales, the first the fallback of every other.
var Locales = []string{"en", "de", "fr", "es", "pt-BR", "ja"}

// metaKey holds a catalog's settings instead of a message.
const metaKey = "_meta"

type catalogMeta struct {
	// Name is the language's name in itself, for the preview gallery.
	Name string `json:"name"`
	// DateTime is a Go time layout; month and day names are the locale's.
	DateTime string `json:"date_time"`
}

type message struct {
	text  string                 // a message without plural forms
	forms map[plural.Form]string // or its forms
}

// catalog is one locale's messages.
type catalog struct {
	name     string // the locale as configured, e.g. "pt-BR"
	tag      language.Tag
	meta     catalogMeta
	monday   monday.Locale
	messages map[string]message
}

var pluralForms = map[string]plural.Form{
	"zero": plural.Zero, "one": plural.One, "two": plural.Two, "few": plural.Few, "many": plural.Many, "other": plural.Other,
}

// mondayLocales maps a language to the month and day names monday knows.
var mondayLocales = map[string]monday.Locale{
	"en": monday.LocaleEnUS, "de": monday.LocaleDeDE, "fr": monday.LocaleFrFR, "es": monday.LocaleEsES,
	"pt": monday.LocalePtBR, "ja": monday.LocaleJaJP, "it": monday.LocaleItIT, "nl": monday.LocaleNlNL,
	"sv": monday.LocaleSvSE, "da": monday.LocaleDaDK, "nb": monday.LocaleNbNO, "fi": monday.LocaleFiFI,
	"pl": monday.LocalePlPL, "cs": monday.LocaleCsCZ, "ru": monday.LocaleRuRU, "uk": monday.LocaleUkUA,
	"tr": monday.LocaleTrTR, "ko": monday.LocaleKoKR, "zh": monday.LocaleZhCN, "id": monday.LocaleIdID,
}

// parseCatalog reads one locale file. name is the locale, file names it in errors.
func parseCatalog(name, file string, b []byte) (*catalog, error) {
	tag, err := language.Parse(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a BCP 47 locale: %w", file, name, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	c := &catalog{name: name, tag: tag, messages: map[string]message{}}
	if m, ok := raw[metaKey]; ok {
		if err := json.Unmarshal(m, &c.meta); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, metaKey, err)
		}
		delete(raw, metaKey)
	}
	base, _ := tag.Base()
	c.monday = mondayLocales[base.String()]
	if c.monday == "" {
		c.monday = monday.LocaleEnUS
	}
	for key, v := range raw {
		var text string
		if err := json.Unmarshal(v, &text); err == nil {
			c.messages[key] = message{text: text}
			continue
		}
		var forms map[string]string
		if err := json.Unmarshal(v, &forms); err != nil {
			return nil, fmt.Errorf("%s: message %q is neither a string nor plural forms ({\"one\": ..., \"other\": ...})", file, key)
		}
		m := message{forms: map[plural.Form]string{}}
		for f, text := range forms {
			form, ok := pluralForms[f]
			if !ok {
				return nil, fmt.Errorf("%s: message %q has plural form %q; the forms are zero, one, two, few, many, other", file, key, f)
			}
			m.forms[form] = text
		}
		if _, ok := m.forms[plural.Other]; !ok {
			return nil, fmt.Errorf("%s: message %q has no \"other\" form", file, key)
		}
		c.messages[key] = m
	}
	return c, nil
}

// loadCatalogs reads the built-in catalogs and, from dir (nil: none), the operator's: a file for
// a built-in locale overrides some of its messages, a file for another locale adds it and must
// have every message.
func loadCatalogs(dir fs.FS, dirName string) (map[string]*catalog, error) {
	cats := map[string]*catalog{}
	for _, name := range Locales {
		file := "locales/" + name + ".json"
		b, err := builtinLocales.ReadFile(file)
		if err != nil {
			return nil, err
		}
		c, err := parseCatalog(name, "built-in "+file, b)
		if err != nil {
			return nil, err
		}
		cats[name] = c
	}
	if dir == nil {
		return cats, nil
	}
	files, err := fs.Glob(dir, "locales/*.json")
	if err != nil {
		return nil, err
	}
	for _, file := range files {
		name := strings.TrimSuffix(path.Base(file), ".json")
		b, err := fs.ReadFile(dir, file)
		if err != nil {
			return nil, err
		}
		shown := path.Join(dirName, file)
		c, err := parseCatalog(name, shown, b)
		if err != nil {
			return nil, err
		}
		if base := cats[canonicalLocale(name)]; base != nil {
			for k, m := range c.messages {
				if _, ok := base.messages[k]; !ok {
					return nil, fmt.Errorf("%s: message %q is not one the templates use (misspelt?)", shown, k)
				}
				base.messages[k] = m
			}
			if c.meta.DateTime != "" {
				base.meta.DateTime = c.meta.DateTime
			}
			continue
		}
		if c.meta.DateTime == "" {
			c.meta = cats["en"].meta
		}
		if missing := missingMessages(cats["en"], c); len(missing) > 0 {
			return nil, fmt.Errorf("%s: a new locale needs every message; missing: %s", shown, strings.Join(missing, ", "))
		}
		cats[name] = c
	}
	return cats, nil
}

// canonicalLocale returns the built-in locale name matching s (e.g. "pt-br" -> "pt-BR"), or s.
func canonicalLocale(s string) string {
	for _, l := range Locales {
		if strings.EqualFold(l, s) {
			return l
		}
	}
	return s
}

// missingMessages lists the keys of ref that c lacks, sorted.
func missingMessages(ref, c *catalog) []string {
	var out []string
	for k := range ref.messages {
		if _, ok := c.messages[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// lookup returns the value of the argument called name among kv (name-value pairs).
func lookup(kv []any, name string) (any, bool) {
	for i := 0; i+1 < len(kv); i += 2 {
		if n, _ := kv[i].(string); n == name {
			return kv[i+1], true
		}
	}
	return nil, false
}

func checkPairs(key string, kv []any) error {
	if len(kv)%2 != 0 {
		return fmt.Errorf("message %q: arguments come in name-value pairs", key)
	}
	for i := 0; i < len(kv); i += 2 {
		if _, ok := kv[i].(string); !ok {
			return fmt.Errorf("message %q: argument name %v is not a string", key, kv[i])
		}
	}
	return nil
}

// pick returns the text of key for kv: the plural form for the count in argument n if the
// message has forms.
func (c *catalog) pick(key string, kv []any) (string, error) {
	if err := checkPairs(key, kv); err != nil {
		return "", err
	}
	m, ok := c.messages[key]
	if !ok {
		return "", fmt.Errorf("no message %q in locale %s", key, c.name)
	}
	if m.forms == nil {
		return m.text, nil
	}
	v, _ := lookup(kv, "n")
	n, ok := v.(int)
	if !ok || n < 0 {
		return "", fmt.Errorf("message %q needs a count n", key)
	}
	form := plural.Cardinal.MatchPlural(c.tag, n, 0, 0, 0, 0)
	if text, ok := m.forms[form]; ok {
		return text, nil
	}
	return m.forms[plural.Other], nil
}

// expand replaces {name} placeholders with the arguments in kv, each passed through value; the
// text around them goes through literal. A placeholder without an argument stays as it is, so
// a mistake shows instead of vanishing.
func expand(text string, kv []any, literal func(string) string, value func(any) string) string {
	if strings.IndexByte(text, '{') < 0 {
		return literal(text)
	}
	var b strings.Builder
	b.Grow(len(text) + 32)
	for {
		open := strings.IndexByte(text, '{')
		if open < 0 {
			break
		}
		end := strings.IndexByte(text[open:], '}')
		if end < 0 {
			break
		}
		if v, ok := lookup(kv, text[open+1:open+end]); ok {
			b.WriteString(literal(text[:open]))
			b.WriteString(value(v))
		} else {
			b.WriteString(literal(text[:open+end+1]))
		}
		text = text[open+end+1:]
	}
	b.WriteString(literal(text))
	return b.String()
}

func plainValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case htmltemplate.HTML:
		return string(v)
	}
	return fmt.Sprint(v)
}

func same(s string) string { return s }

func htmlValue(v any) string {
	if h, ok := v.(htmltemplate.HTML); ok {
		return string(h)
	}
	return html.EscapeString(plainValue(v))
}

// T is a message as plain text, for subjects and text bodies.
func (c *catalog) T(key string, kv ...any) (string, error) {
	text, err := c.pick(key, kv)
	if err != nil {
		return "", err
	}
	return expand(text, kv, same, plainValue), nil
}

// TH is a message as HTML: its text and every value are escaped, but values that are already
// HTML (from the strong and mailto helpers), which go in as they are.
func (c *catalog) TH(key string, kv ...any) (htmltemplate.HTML, error) {
	text, err := c.pick(key, kv)
	if err != nil {
		return "", err
	}
	return htmltemplate.HTML(expand(text, kv, html.EscapeString, htmlValue)), nil
}

// Duration phrases d in whole units, rounded: "10 minutes", "7 Tage", "3時間".
func (c *catalog) Duration(d time.Duration) string {
	unit, n := "", 0
	switch {
	case d < time.Minute:
		s, _ := c.T("duration.less_than_minute")
		return s
	case d < time.Hour:
		unit, n = "duration.minutes", int((d+30*time.Second)/time.Minute)
	case d < 48*time.Hour:
		unit, n = "duration.hours", int((d+30*time.Minute)/time.Hour)
	default:
		unit, n = "duration.days", int((d+12*time.Hour)/(24*time.Hour))
	}
	if unit == "duration.minutes" && n == 60 {
		unit, n = "duration.hours", 1
	}
	s, _ := c.T(unit, "n", n)
	return s
}

// DateTime writes t in the locale's words and in loc.
func (c *catalog) DateTime(t time.Time, loc *time.Location) string {
	t = t.In(loc)
	s := monday.Format(t, c.meta.DateTime, c.monday)
	if c.monday == monday.LocaleFrFR && t.Day() == 1 {
		// French writes the first of the month as an ordinal: "1er mars".
		s = strings.Replace(s, " 1 ", " 1er ", 1)
	}
	return s
}
