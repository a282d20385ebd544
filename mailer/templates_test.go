package mailer

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template/parse"
	"time"

	"golang.org/x/text/feature/plural"

	"github.com/workos-emailer/workos-emailer/kinds"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

var sampleNow = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

var sampleBrand = Brand{Name: "Robodesk", LogoURL: "https://robodesk.example/logo.png", PrimaryColor: "#0f766e", SupportEmail: "support@robodesk.example"}

func loadSample(t testing.TB, opts TemplateOptions) *Templates {
	t.Helper()
	if opts.Brand.Name == "" {
		opts.Brand = sampleBrand
	}
	tm, err := LoadTemplates(opts)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func render(t testing.TB, tm *Templates, d Data) Rendered {
	t.Helper()
	r, err := tm.Render(d)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestGolden renders every kind and each of its variants (KIND.VARIANT) in every built-in
// locale with sample data and compares with testdata/golden/LOCALE/; run `go test ./mailer -run Golden -update` to rewrite them, then
// review the diff.
func TestGolden(t *testing.T) {
	tm := loadSample(t, TemplateOptions{})
	for _, locale := range Locales {
		for _, kind := range kinds.Names() {
			for _, variant := range append([]string{""}, Variants(kind)...) {
				d, _ := sampleData(kind, variant, sampleNow)
				d.UserLocales = []string{locale}
				r := render(t, tm, d)
				name := kind
				if variant != "" {
					name += "." + variant
				}
				for ext, got := range map[string]string{"subject.txt": r.Subject + "\n", "html": r.HTML, "txt": r.Text} {
					path := filepath.Join("testdata", "golden", locale, name+"."+ext)
					if *update {
						if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
							t.Fatal(err)
						}
						continue
					}
					want, err := os.ReadFile(path)
					if err != nil {
						t.Fatalf("%v (run go test ./mailer -run Golden -update)", err)
					}
					if got != string(want) {
						t.Errorf("%s differs from the golden file; run go test ./mailer -run Golden -update and review the diff\n--- got ---\n%s", path, got)
					}
				}
			}
		}
	}
}

var placeholderRE = regexp.MustCompile(`\{[a-z_]+\}`)

func placeholders(m message) []string {
	texts := []string{m.text}
	for _, f := range m.forms {
		texts = append(texts, f)
	}
	var out []string
	for _, s := range texts {
		for _, p := range placeholderRE.FindAllString(s, -1) {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Every locale has every message, with the same placeholders as English, and a plural message
// has every form the locale's plural rules pick for the numbers an email can show.
func TestEveryLocaleHasEveryMessage(t *testing.T) {
	cats, err := loadCatalogs(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	en := cats["en"]
	for _, locale := range Locales {
		c := cats[locale]
		if missing := missingMessages(en, c); len(missing) > 0 {
			t.Errorf("%s lacks %v", locale, missing)
		}
		if extra := missingMessages(c, en); len(extra) > 0 {
			t.Errorf("%s has messages English lacks: %v", locale, extra)
		}
		if c.meta.Name == "" || c.meta.DateTime == "" {
			t.Errorf("%s: _meta needs name and date_time", locale)
		}
		for key, m := range c.messages {
			if want, got := placeholders(en.messages[key]), placeholders(m); !slices.Equal(want, got) {
				t.Errorf("%s %s: placeholders %v, English has %v", locale, key, got, want)
			}
			if (m.forms == nil) != (en.messages[key].forms == nil) {
				t.Errorf("%s %s: plural forms where English has none, or the other way round", locale, key)
			}
			for n := 1; n <= 100 && m.forms != nil; n++ {
				form := plural.Cardinal.MatchPlural(c.tag, n, 0, 0, 0, 0)
				if _, ok := m.forms[form]; !ok && form != plural.Other {
					t.Errorf("%s %s: no form for %d (plural form %v)", locale, key, n, form)
					break
				}
			}
		}
	}
}

// Every message a built-in template asks for exists, and every message is used.
func TestTemplatesAndMessagesMatch(t *testing.T) {
	used := map[string]bool{}
	keyRE := regexp.MustCompile(`\bt "([a-z_.]+)"`)
	entries, err := builtinTemplates.ReadDir("templates")
	if err != nil {
		t.Fatal(err)
	}
	cats, err := loadCatalogs(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, _ := builtinTemplates.ReadFile("templates/" + e.Name())
		for _, m := range keyRE.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
			if _, ok := cats["en"].messages[m[1]]; !ok {
				t.Errorf("%s uses message %q, which does not exist", e.Name(), m[1])
			}
		}
	}
	for key := range cats["en"].messages {
		if !used[key] && !strings.HasPrefix(key, "duration.") && !strings.HasPrefix(key, "format.") { // those two from Go
			t.Errorf("message %q is used by no template", key)
		}
	}
}

// The expiry is written in the reader's language, with the right plural and date format.
func TestExpiryInTheReadersLanguage(t *testing.T) {
	tm := loadSample(t, TemplateOptions{})
	for _, tc := range []struct {
		locale, kind string
		want         []string
	}{
		{"en", kinds.MagicAuth, []string{"expires in 10 minutes"}},
		{"de", kinds.MagicAuth, []string{"läuft in 10 Minuten ab"}},
		{"fr", kinds.MagicAuth, []string{"expire dans 10 minutes"}},
		{"es", kinds.MagicAuth, []string{"expira en 10 minutos"}},
		{"pt-BR", kinds.MagicAuth, []string{"expira em 10 minutos"}},
		{"ja", kinds.MagicAuth, []string{"有効期限は10分"}},
		{"en", kinds.Invitation, []string{"expires in 7 days, on Sunday, November 29, 2026 at 10:00 AM UTC"}},
		{"de", kinds.Invitation, []string{"läuft in 7 Tagen ab (am Sonntag, 29. November 2026 um 10:00 UTC)"}},
		{"fr", kinds.Invitation, []string{"expire dans 7 jours, le dimanche 29 novembre 2026 à 10:00 UTC"}},
		{"es", kinds.Invitation, []string{"expira en 7 días, el domingo 29 de noviembre de 2026 a las 10:00 UTC"}},
		{"pt-BR", kinds.Invitation, []string{"expira em 7 dias, no dia 29 de novembro de 2026 às 10:00 UTC"}},
		{"ja", kinds.Invitation, []string{"有効期限は7日間（2026年11月29日（日）10:00 UTCまで）"}},
		{"en", kinds.PasswordReset, []string{"expires in 1 hour"}},
		{"de", kinds.PasswordReset, []string{"läuft in 1 Stunde ab"}},
		{"fr", kinds.EmailVerification, []string{"expire dans 24 heures"}},
	} {
		d := SampleData(tc.kind, sampleNow)
		d.UserLocales = []string{tc.locale}
		r := render(t, tm, d)
		for _, w := range tc.want {
			if !strings.Contains(r.Text, w) {
				t.Errorf("%s %s: text lacks %q:\n%s", tc.locale, tc.kind, w, r.Text)
			}
			if !strings.Contains(r.HTML, htmlEscape(w)) {
				t.Errorf("%s %s: HTML lacks %q", tc.locale, tc.kind, w)
			}
		}
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

func TestDurationsInEveryLocale(t *testing.T) {
	cats, err := loadCatalogs(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d                      time.Duration
		en, de, fr, es, pt, ja string
	}{
		{30 * time.Second, "less than a minute", "weniger als einer Minute", "moins d’une minute", "menos de un minuto", "menos de um minuto", "1分未満"},
		{time.Minute, "1 minute", "1 Minute", "1 minute", "1 minuto", "1 minuto", "1分"},
		{10*time.Minute - time.Second, "10 minutes", "10 Minuten", "10 minutes", "10 minutos", "10 minutos", "10分"},
		{59*time.Minute + 45*time.Second, "1 hour", "1 Stunde", "1 heure", "1 hora", "1 hora", "1時間"},
		{2 * time.Hour, "2 hours", "2 Stunden", "2 heures", "2 horas", "2 horas", "2時間"},
		{24 * time.Hour, "24 hours", "24 Stunden", "24 heures", "24 horas", "24 horas", "24時間"},
		{7 * 24 * time.Hour, "7 days", "7 Tagen", "7 jours", "7 días", "7 dias", "7日間"},
	} {
		for locale, want := range map[string]string{"en": tc.en, "de": tc.de, "fr": tc.fr, "es": tc.es, "pt-BR": tc.pt, "ja": tc.ja} {
			if got := cats[locale].Duration(tc.d); got != want {
				t.Errorf("%s %v: %q, want %q", locale, tc.d, got, want)
			}
		}
	}
	first := time.Date(2026, 3, 1, 9, 5, 0, 0, time.UTC)
	if got := cats["fr"].DateTime(first, time.UTC); got != "dimanche 1er mars 2026 à 09:05 UTC" {
		t.Errorf("French first of the month: %q", got)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	if got := cats["de"].DateTime(first, berlin); got != "Sonntag, 1. März 2026 um 10:05 CET" {
		t.Errorf("German in Berlin: %q", got)
	}
}

func TestCodeAndLinkShownNeverInTheSubject(t *testing.T) {
	tm := loadSample(t, TemplateOptions{})
	for _, locale := range Locales {
		for _, tc := range []struct{ kind, secret string }{
			{kinds.MagicAuth, "123456"},
			{kinds.EmailVerification, "654321"},
			{kinds.Invitation, "invitation_token=Z1uX3RbwcIl5fIGJJJCXXisdI"},
			{kinds.PasswordReset, "token=Z1uX3RbwcIl5fIGJJJCXXisdI"},
			{kinds.Welcome, "https://app.example.com/"},
		} {
			d := SampleData(tc.kind, sampleNow)
			d.UserLocales = []string{locale}
			r := render(t, tm, d)
			for name, body := range map[string]string{"html": r.HTML, "text": r.Text} {
				if !strings.Contains(body, tc.secret) {
					t.Errorf("%s %s %s: want %q in the body", locale, tc.kind, name, tc.secret)
				}
			}
			if strings.Contains(r.Subject, tc.secret) {
				t.Errorf("%s %s: secret in the subject", locale, tc.kind)
			}
		}
	}
}

// hostile is data a WorkOS user or admin controls, made to break out of every context.
func hostile(kind string) Data {
	d := SampleData(kind, sampleNow)
	d.OrganizationName = `<script>alert(1)</script>"Evil" Corp` + "\u202Emoc.evil"
	d.InviterName = "Mallory\r\nBcc: x@example.com <b>"
	d.InviterEmail = `m@x.example"><img src=x onerror=alert(1)>`
	d.FirstName = "<i>Eve</i>\r\nSubject: hi"
	return d
}

// No value a user controls becomes markup, a header or a line of its own, in any template of
// any locale.
func TestHostileDataIsEscapedInEveryTemplate(t *testing.T) {
	b := sampleBrand
	b.Name = `Brand "><img src=x onerror=alert(1)>`
	tm := loadSample(t, TemplateOptions{Brand: b})
	for _, locale := range Locales {
		for _, kind := range kinds.Names() {
			d := hostile(kind)
			d.UserLocales = []string{locale}
			r := render(t, tm, d)
			for _, bad := range []string{"<script>", "<img src=x", "<b>", "<i>"} {
				if strings.Contains(r.HTML, bad) {
					t.Errorf("%s %s: HTML contains unescaped %q", locale, kind, bad)
				}
			}
			if strings.ContainsAny(r.Subject, "\r\n") {
				t.Errorf("%s %s: subject has a line break: %q", locale, kind, r.Subject)
			}
			if strings.Contains(r.HTML+r.Text+r.Subject, "\u202E") {
				t.Errorf("%s %s: a right-to-left override in a name reached the email", locale, kind)
			}
			for _, line := range strings.Split(r.Text, "\n") {
				if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "Subject:") {
					t.Errorf("%s %s: a name started a line of its own:\n%s", locale, kind, r.Text)
				}
			}
		}
	}
	r := render(t, tm, hostile(kinds.Invitation))
	if !strings.Contains(r.HTML, "&lt;script&gt;") || !strings.Contains(r.Text, "Mallory Bcc: x@example.com") {
		t.Errorf("names are not shown escaped:\n%s", r.Text)
	}
}

func FuzzRenderEscapes(f *testing.F) {
	f.Add("Acme", "Ada", "Grace", "<script>x</script>")
	f.Add("\r\nBcc: a@b.c", "\"'<>&", "{name}", "ü日本\u202e")
	tm := loadSample(f, TemplateOptions{})
	f.Fuzz(func(t *testing.T, org, inviter, first, email string) {
		// Markers delimit each value in the output; between them no raw markup may survive.
		// Names are cut at maxNameRunes, which would cut a closing marker off: the values stay
		// short enough for both markers to survive.
		const mark = "QQ9QQ"
		org, inviter, first, email = runes(org, 60), runes(inviter, 60), runes(first, 60), runes(email, 60)
		for _, kind := range []string{kinds.Invitation, kinds.Welcome, kinds.PasswordChanged} {
			d := SampleData(kind, sampleNow)
			d.OrganizationName, d.InviterName, d.InviterEmail, d.FirstName = mark+org+mark, mark+inviter+mark, mark+email+mark, mark+first+mark
			r := render(t, tm, d)
			if strings.ContainsAny(r.Subject, "\r\n") {
				t.Fatalf("subject with a line break: %q", r.Subject)
			}
			parts := strings.Split(r.HTML, mark)
			for i := 1; i < len(parts); i += 2 {
				if strings.ContainsAny(parts[i], "<>\"") {
					t.Fatalf("unescaped markup in %q", parts[i])
				}
			}
		}
	})
}

// runes is s cut to at most n runes.
func runes(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n])
	}
	return s
}

func TestButtonTextReadsOnTheBrandColor(t *testing.T) {
	for color, want := range map[string]string{"": "#ffffff", "#0f766e": "#ffffff", "#000": "#ffffff", "#facc15": "#111827", "#FFFFFF": "#111827", "#22c55e": "#111827"} {
		b, err := Brand{Name: "x", PrimaryColor: color}.resolve()
		if err != nil || b.ButtonTextColor != want {
			t.Errorf("primary %q: text %q (%v), want %q", color, b.ButtonTextColor, err, want)
		}
	}
	if _, err := (Brand{PrimaryColor: "red; background:url(x)"}).resolve(); err == nil {
		t.Error("a color that is not hex was accepted")
	}
}

func TestLocaleFor(t *testing.T) {
	tm := loadSample(t, TemplateOptions{DefaultLocale: "fr", OrgLocales: map[string]string{"org_1": "de", "org_2": "pt"}})
	for _, tc := range []struct {
		org  string
		user []string // the user's WorkOS locale, then their metadata's
		want string
	}{
		{"", nil, "fr"},
		{"org_1", nil, "de"},
		{"org_2", nil, "pt-BR"},
		{"org_1", []string{"ja"}, "ja"},
		{"org_1", []string{"es-MX"}, "es"},
		{"org_1", []string{"de_AT"}, "de"},
		{"org_1", []string{"it"}, "de"},      // no Italian messages: the organization's locale
		{"org_9", []string{"x-bogus"}, "fr"}, // nor a tag: the default
		{"org_1", []string{"PT-br"}, "pt-BR"},
		{"org_1", []string{"de-DE", "ja"}, "de"},     // the WorkOS locale before the metadata
		{"org_2", []string{"it-IT", "ja"}, "ja"},     // then the metadata
		{"org_2", []string{"it-IT", "tlh"}, "pt-BR"}, // then the organization
		{"", []string{"", "es"}, "es"},
	} {
		if got := tm.LocaleFor(tc.org, tc.user...); got != tc.want {
			t.Errorf("LocaleFor(%q, %q) = %q, want %q", tc.org, tc.user, got, tc.want)
		}
	}
	// templates.default_locale takes a regional variant, as every other source does.
	for def, want := range map[string]string{"de-DE": "de", "pt": "pt-BR", "PT-br": "pt-BR", "ja-JP": "ja", "en-GB": "en"} {
		tm := loadSample(t, TemplateOptions{DefaultLocale: def})
		if got := tm.LocaleFor(""); got != want || tm.Locales()[0] != want {
			t.Errorf("default_locale %q: LocaleFor = %q, Locales()[0] = %q, want %q", def, got, tm.Locales()[0], want)
		}
	}
	if _, err := LoadTemplates(TemplateOptions{Brand: sampleBrand, OrgLocales: map[string]string{"org_1": "tlh"}}); err == nil {
		t.Error("an organization locale without messages was accepted")
	}
	if _, err := LoadTemplates(TemplateOptions{Brand: sampleBrand, DefaultLocale: "it"}); err == nil {
		t.Error("a default locale without messages was accepted")
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Overrides are looked up organization -> locale -> default, separately for each part, and the
// built-in templates come last.
func TestOverrideLookupOrder(t *testing.T) {
	body := func(mark string) string { return `{{define "content"}}` + mark + `{{end}}` }
	dir := writeFiles(t, map[string]string{
		"org_1/de/invitation.html":  body("ORG-DE"),
		"org_1/invitation.html":     body("ORG"),
		"org_1/invitation.txt":      body("ORG-TEXT"),
		"de/invitation.html":        body("DE"),
		"invitation.html":           body("DEFAULT"),
		"de/invitation.subject.txt": "DE-SUBJECT {{.OrganizationName}}",
		"org_2/layout.html":         `<!DOCTYPE html><html><body>ORG2-LAYOUT {{template "content" .}}</body></html>`,
	})
	tm := loadSample(t, TemplateOptions{Dir: dir, OrgLocales: map[string]string{"org_1": "de", "org_3": "de"}})
	for _, tc := range []struct {
		org, user           string
		html, text, subject string
	}{
		{"org_1", "", "ORG-DE", "ORG-TEXT", "DE-SUBJECT"},      // every level of org_1
		{"org_1", "fr", "ORG", "ORG-TEXT", "Invitation"},       // org_1 without French: its own, then built-in French
		{"org_3", "", "DE", "Treten Sie Globex", "DE-SUBJECT"}, // no directory: the locale's
		{"", "", "DEFAULT", "Join Globex", "You're invited"},   // neither
		{"org_2", "", "ORG2-LAYOUT DEFAULT", "Join Globex", "You're invited"},
	} {
		d := SampleData(kinds.Invitation, sampleNow)
		d.OrganizationID, d.UserLocales = tc.org, []string{tc.user}
		r := render(t, tm, d)
		if !strings.Contains(r.HTML, tc.html) || !strings.Contains(r.Text, tc.text) || !strings.HasPrefix(r.Subject, tc.subject) {
			t.Errorf("org %q user %q: got subject %q, HTML %q..., text %q...; want %q, %q, %q",
				tc.org, tc.user, r.Subject, trim(r.HTML), trim(r.Text), tc.subject, tc.html, tc.text)
		}
	}
	files := tm.Files(kinds.Invitation, "org_1", "de")
	want := []string{filepath.Join(dir, "de/invitation.subject.txt"), "built-in layout.html", filepath.Join(dir, "org_1/de/invitation.html"),
		"built-in layout.txt", filepath.Join(dir, "org_1/invitation.txt"), "built-in blocks.html"}
	if !slices.Equal(files, want) {
		t.Errorf("files %v\nwant %v", files, want)
	}
	if orgs := tm.Organizations(); !slices.Equal(orgs, []string{"org_1", "org_2"}) {
		t.Errorf("organizations %v", orgs)
	}
}

func trim(s string) string {
	if i := strings.Index(s, "<body"); i >= 0 {
		s = s[i:]
	}
	return s[:min(len(s), 120)]
}

// A template that does not parse, or fails on sample data, stops the start with an error
// naming the file and line; so does a file or directory that is not a template.
func TestBadTemplatesAreReportedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"syntax error", map[string]string{"de/magic_auth.html": "{{define \"content\"}}\nline 2\n{{if .Code}}\n{{end}"}, []string{"de/magic_auth.html:4"}},
		{"unknown field", map[string]string{"org_1/welcome.txt": "{{define \"content\"}}\n\n{{.Nickname}}{{end}}"}, []string{"org_1/welcome.txt:3", "Nickname"}},
		{"unknown message", map[string]string{"invitation.subject.txt": `{{t "invitation.subjekt"}}`}, []string{"invitation.subject.txt:1", "invitation.subjekt"}},
		{"misspelt file", map[string]string{"invitaton.html": "x"}, []string{"invitaton.html", "not a template name"}},
		{"stray directory", map[string]string{"old/invitation.html": "x"}, []string{"old", "organization id"}},
		{"locale spelt otherwise", map[string]string{"pt-br/invitation.html": "x"}, []string{"pt-br", "pt-BR"}},
		{"bad message file", map[string]string{"locales/de.json": `{"magic_auth.subjet": "x"}`}, []string{"locales/de.json", "magic_auth.subjet"}},
		{"incomplete new locale", map[string]string{"locales/it.json": `{"magic_auth.subject": "Il tuo codice per {brand}"}`}, []string{"locales/it.json", "missing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, tc.files)
			_, err := LoadTemplates(TemplateOptions{Dir: dir, Brand: sampleBrand})
			if err == nil {
				t.Fatal("loaded")
			}
			if _, ok := err.(*TemplateError); !ok {
				t.Errorf("%T, want *TemplateError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// Operators can reword a built-in message, and add a locale with every message.
func TestOperatorMessages(t *testing.T) {
	cats, err := loadCatalogs(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	it := map[string]any{"_meta": map[string]string{"name": "Italiano", "date_time": "Monday 2 January 2006 alle 15:04 MST"}}
	for k, m := range cats["en"].messages {
		if m.forms != nil {
			it[k] = map[string]string{"one": "{n} x", "other": "{n} xx"}
		} else {
			it[k] = "IT " + m.text
		}
	}
	it["magic_auth.heading"] = "Il tuo codice di accesso"
	b, _ := json.Marshal(it)
	dir := writeFiles(t, map[string]string{
		"locales/de.json": `{"magic_auth.heading": "Dein Anmeldecode"}`,
		"locales/it.json": string(b),
	})
	tm := loadSample(t, TemplateOptions{Dir: dir})
	for locale, want := range map[string]string{"de": "Dein Anmeldecode", "it": "Il tuo codice di accesso", "en": "Your sign-in code"} {
		d := SampleData(kinds.MagicAuth, sampleNow)
		d.UserLocales = []string{locale}
		if r := render(t, tm, d); !strings.Contains(r.Text, want) {
			t.Errorf("%s: text lacks %q:\n%s", locale, want, r.Text)
		}
	}
	if !slices.Contains(tm.Locales(), "it") {
		t.Errorf("locales %v lack the added one", tm.Locales())
	}
}

func BenchmarkRender(b *testing.B) {
	tm := loadSample(b, TemplateOptions{})
	for _, kind := range []string{kinds.Invitation, kinds.MagicAuth} {
		b.Run(kind, func(b *testing.B) {
			d := SampleData(kind, sampleNow)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tm.Render(d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The built-in templates' messages are folded into them when they are compiled (fold.go): no
// action calls t any more, and a template's argument only when the message has placeholders.
func TestMessagesAreFoldedIntoTheTemplates(t *testing.T) {
	tm := loadSample(t, TemplateOptions{})
	var calls []string
	var walk func(name string, n parse.Node)
	walk = func(name string, n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n != nil {
				for _, c := range n.Nodes {
					walk(name, c)
				}
			}
		case *parse.IfNode:
			walk(name, n.List)
			walk(name, n.ElseList)
		case *parse.WithNode:
			walk(name, n.List)
			walk(name, n.ElseList)
		case *parse.RangeNode:
			walk(name, n.List)
			walk(name, n.ElseList)
		case *parse.ActionNode:
			if strings.Contains(n.String(), "t \"") {
				calls = append(calls, name+": "+n.String())
			}
		case *parse.TemplateNode:
			for _, cmd := range n.Pipe.Cmds {
				for _, a := range cmd.Args {
					if p, ok := a.(*parse.PipeNode); ok && strings.HasPrefix(p.String(), "t \"") && !strings.Contains(p.String(), "\" \"") {
						calls = append(calls, name+": "+n.String()) // (t "key") alone: a constant
					}
				}
			}
		}
	}
	for key, kt := range tm.sets {
		for _, tt := range append(kt.text.Templates(), kt.subject) {
			walk(key.locale+" "+tt.Name(), tt.Tree.Root)
		}
		for _, ht := range kt.html.Templates() {
			walk(key.locale+" "+ht.Name(), ht.Tree.Root)
		}
	}
	if len(calls) > 0 {
		slices.Sort(calls)
		calls = slices.Compact(calls)
		t.Errorf("%d message calls not folded, e.g. %v", len(calls), calls[:min(len(calls), 5)])
	}
}

func TestNamesDropInvisibleCharactersAndAreBounded(t *testing.T) {
	long := strings.Repeat("Globex ", 2000)
	for _, tc := range []struct{ name, in, want string }{
		{"zero-width space", "Goo\u200bgle", "Google"},
		{"word joiner", "Goo\u2060gle", "Google"},
		{"zero-width joiner between Latin letters", "Goo\u200dgle", "Google"},
		{"zero-width non-joiner between Latin letters", "Goo\u200cgle", "Google"},
		{"soft hyphen and BOM", "Goo\u00adg\ufeffle", "Google"},
		{"Hangul filler", "Goo\u3164gle", "Google"},
		{"bidi override", "moc.elgoog\u202e", "moc.elgoog"},
		{"tag characters", "Goo\U000E0067gle", "Google"},
		{"controls and line breaks", "Acme\r\nBcc: x\x00", "Acme Bcc: x"},
		{"no-break and ideographic spaces fold", "Acme\u00a0\u3000Corp", "Acme Corp"},
		// Kept where they belong: Persian words, emoji sequences.
		{"Persian non-joiner", "می\u200cخواهم", "می\u200cخواهم"},
		{"emoji joiner", "👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"},
		{"joiner at the edge", "\u200dAcme\u200d", "Acme"},
		{"accents and CJK untouched", "Zoë 日本 Ünïcode", "Zoë 日本 Ünïcode"},
		{"80 runes stay", strings.Repeat("é", 80), strings.Repeat("é", 80)},
		{"81 runes are cut", strings.Repeat("é", 81), strings.Repeat("é", 79) + "…"},
		{"long name cut at a word's end", long, strings.TrimRight(long[:79], " ") + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := oneLineName(tc.in); got != tc.want {
				t.Errorf("oneLineName(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
