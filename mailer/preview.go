package mailer

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/workos-emailer/workos-emailer/kinds"
)

// SampleData is kind's own sample email (kinds.Kind.Samples), rendered at now: for the render
// command, the preview gallery, the golden files and the check of every template at start.
func SampleData(kind string, now time.Time) Data {
	d, _ := sampleData(kind, "", now)
	return d
}

// sampleData is the sample of kind's variant ("" for its own); ok is false when there is none.
func sampleData(kind, variant string, now time.Time) (Data, bool) {
	k, ok := kinds.Get(kind)
	if !ok {
		return Data{}, false
	}
	for _, s := range k.Samples {
		if s.Variant != variant {
			continue
		}
		d := Data{Kind: kind, Now: now, Email: "grace.hopper@example.com", Code: s.Code, Link: s.Link,
			OrganizationName: s.OrganizationName, InviterName: s.InviterName, InviterEmail: s.InviterEmail,
			FirstName: s.FirstName, Resent: s.Resent}
		if s.ExpiresIn > 0 {
			d.ExpiresAt = now.Add(s.ExpiresIn)
		}
		if s.EventAgo > 0 {
			d.EventAt = now.Add(-s.EventAgo)
		}
		return d, true
	}
	return Data{}, false
}

// Preview is one rendered sample: what the gallery shows of it.
type Preview struct {
	// Variant is the sample's variant of the kind ("reminder"), "" for its own.
	Kind, Variant, Org, Locale string
	Rendered
	// Files are the templates it was rendered from.
	Files []string
	// HTMLFile and TextFile are where WriteGallery put it, relative to the gallery.
	HTMLFile, TextFile string
}

// RenderSample renders kind's sample email, or the sample of one of its variants ("" for its
// own), for org ("" for none) in locale ("" for the default), at now.
func (t *Templates) RenderSample(kind, variant, org, locale string, now time.Time) (Preview, error) {
	if _, ok := kinds.Get(kind); !ok {
		return Preview{}, fmt.Errorf("unknown kind %q (kinds: %s)", kind, strings.Join(kinds.Names(), ", "))
	}
	d, ok := sampleData(kind, variant, now)
	if !ok {
		return Preview{}, fmt.Errorf("kind %s has no variant %q (variants: %s)", kind, variant, strings.Join(Variants(kind), ", "))
	}
	if locale == "" {
		locale = t.LocaleFor(org)
	} else if l, ok := t.match(locale); ok {
		locale = l
	} else {
		return Preview{}, fmt.Errorf("no messages for locale %q (have %s)", locale, strings.Join(t.supported, ", "))
	}
	d.OrganizationID, d.UserLocales = org, []string{locale}
	r, err := t.Render(d)
	if err != nil {
		return Preview{}, err
	}
	return Preview{Kind: kind, Variant: variant, Org: org, Locale: locale, Rendered: r, Files: t.Files(kind, org, locale)}, nil
}

// Variants lists the variants of kind's sample other than its own ("reminder").
func Variants(kind string) []string {
	var out []string
	if k, ok := kinds.Get(kind); ok {
		for _, s := range k.Samples {
			if s.Variant != "" {
				out = append(out, s.Variant)
			}
		}
	}
	return out
}

// WriteGallery renders every kind in every locale, for the default templates and for every
// organization with templates of its own, into dir: each email as an HTML and a text file, and
// an index.html that shows them all side by side with their subjects, for a person to review
// in a browser. The index inlines each email in a frame its script sizes to the whole email.
func (t *Templates) WriteGallery(dir string, now time.Time) ([]Preview, error) {
	var all []Preview
	for _, org := range append([]string{""}, t.galleryOrgs()...) {
		for _, locale := range t.supported {
			for _, kind := range kinds.Names() {
				for _, variant := range append([]string{""}, Variants(kind)...) {
					p, err := t.RenderSample(kind, variant, org, locale, now)
					if err != nil {
						return nil, err
					}
					if err := writePreview(dir, &p); err != nil {
						return nil, err
					}
					all = append(all, p)
				}
			}
		}
	}
	var b bytes.Buffer
	if err := galleryTemplate.Execute(&b, gallery{Brand: t.brand, Previews: all, Locales: t.supported,
		Names: t.localeNames(), Kinds: kinds.Names(), Generated: now.UTC().Format(time.RFC1123)}); err != nil {
		return nil, err
	}
	return all, os.WriteFile(filepath.Join(dir, "index.html"), b.Bytes(), 0o644)
}

// writePreview writes p as an HTML and a text file under dir and notes where in p.
func writePreview(dir string, p *Preview) error {
	name := p.Kind
	if p.Variant != "" {
		name += "." + p.Variant
	}
	base := path.Join(orDefault(p.Org, "default"), p.Locale, name)
	p.HTMLFile, p.TextFile = base+".html", base+".txt"
	for file, content := range map[string]string{p.HTMLFile: p.HTML, p.TextFile: "Subject: " + p.Subject + "\n\n" + p.Text} {
		full := filepath.Join(dir, filepath.FromSlash(file))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (t *Templates) localeNames() map[string]string {
	names := map[string]string{}
	for name, c := range t.catalogs {
		names[name] = orDefault(c.meta.Name, name)
	}
	return names
}

type gallery struct {
	Brand     Brand
	Previews  []Preview
	Locales   []string
	Names     map[string]string
	Kinds     []string
	Generated string
}

var galleryTemplate = htmltemplate.Must(htmltemplate.New("gallery").Funcs(htmltemplate.FuncMap{
	"title": func(kind string) string {
		k, _ := kinds.Get(kind)
		return k.Title
	},
	"orgName": func(org string) string { return orDefault(org, "default templates") },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Brand.Name}} emails: preview</title>
<style>
:root { color-scheme: light; --line: #e4e7ec; --muted: #6b7280; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2933; background: #f7f8fa; }
header { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line); padding: 16px 32px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
header h1 { margin: 0; font-size: 20px; }
header nav a { margin-right: 12px; color: #4f46e5; text-decoration: none; font-weight: 600; }
header .meta { color: var(--muted); font-size: 13px; margin-left: auto; }
main { padding: 24px 32px 64px; }
section { margin-bottom: 48px; }
h2 { font-size: 18px; margin: 0 0 16px; padding-bottom: 8px; border-bottom: 2px solid {{.Brand.ButtonColor}}; }
/* An email is shown whole: its frame is as wide as an email's desktop layout (wider than the
   layout's 600px mobile breakpoint) and as tall as the email (the script below), so nothing in
   it scrolls or is cut off. A card is never narrower than its frame; a narrow window scrolls. */
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(642px, 1fr)); gap: 20px; align-items: start; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; display: flex; flex-direction: column; }
.card .head { padding: 12px 16px; border-bottom: 1px solid var(--line); }
.card .head .where { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.card .head .subject { font-weight: 600; margin-top: 2px; }
.card iframe { display: block; width: 100%; min-width: 640px; height: 800px; border: 0; border-bottom: 1px solid var(--line); background: #f4f5f7; }
.card pre { margin: 0; padding: 12px 14px; font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap; overflow-wrap: anywhere; color: #374151; }
.card .files { padding: 8px 16px; border-top: 1px solid var(--line); font-size: 12px; color: var(--muted); }
.card .files a { color: var(--muted); }
</style>
<noscript><style>.card iframe { height: 1400px; }</style></noscript>
</head>
<body>
<header>
<h1>{{.Brand.Name}} emails</h1>
<nav>{{range .Kinds}}<a href="#{{.}}">{{title .}}</a>{{end}}</nav>
<span class="meta">{{len .Previews}} previews · {{range $i, $l := .Locales}}{{if $i}}, {{end}}{{index $.Names $l}}{{end}} · sample data · {{.Generated}}</span>
</header>
<main>
{{range $kind := .Kinds}}
<section id="{{$kind}}">
<h2>{{title $kind}}</h2>
<div class="grid">
{{range $.Previews}}{{if eq .Kind $kind}}
<article class="card" id="{{.Kind}}{{with .Variant}}.{{.}}{{end}}-{{orgName .Org}}-{{.Locale}}">
<div class="head"><div class="where">{{index $.Names .Locale}} ({{.Locale}}) · {{orgName .Org}}{{with .Variant}} · {{.}}{{end}}{{with .Sender.From}} · from {{.}}{{end}}</div><div class="subject">{{.Subject}}</div></div>
<iframe srcdoc="{{.HTML}}" title="{{.Subject}}"></iframe><pre>{{.Text}}</pre>
<div class="files">{{range $i, $f := .Files}}{{if $i}} · {{end}}{{$f}}{{end}} · <a href="{{.HTMLFile}}">HTML</a> · <a href="{{.TextFile}}">text</a></div>
</article>
{{end}}{{end}}
</div>
</section>
{{end}}
</main>
<script>
// Each email is inlined (srcdoc), so its document is this page's origin even opened from a
// file, and its frame can be made as tall as it is: on load, and whenever it changes size.
(function () {
  function email(f) {
    var d = f.contentDocument;
    return d && d.URL === "about:srcdoc" && d.body ? d : null; // not the blank one before it
  }
  function fit(f) {
    var d = email(f);
    if (!d) return;
    var e = d.documentElement;
    var h = Math.max(Math.ceil(e.getBoundingClientRect().height), d.body.scrollHeight);
    if (e.scrollHeight > e.clientHeight) h = Math.max(h, e.scrollHeight);
    if (f.style.height !== h + "px") f.style.height = h + "px";
  }
  function watch(f) {
    var d = email(f);
    if (!d) return;
    fit(f);
    if (!d.fitted && f.contentWindow.ResizeObserver) {
      d.fitted = true;
      new f.contentWindow.ResizeObserver(function () { fit(f); }).observe(d.body);
    }
  }
  var frames = document.querySelectorAll(".card iframe");
  frames.forEach(function (f) {
    f.addEventListener("load", function () { watch(f); });
    watch(f);
  });
  window.addEventListener("load", function () { frames.forEach(watch); });
})();
</script>
</body>
</html>
`))

// galleryOrgs are the organizations the gallery shows besides the default: those with their
// own templates or their own sender.
func (t *Templates) galleryOrgs() []string {
	orgs := t.Organizations()
	for org := range t.opts.Senders {
		if !slices.ContainsFunc(orgs, func(o string) bool { return strings.EqualFold(o, org) }) {
			orgs = append(orgs, org)
		}
	}
	slices.Sort(orgs)
	return orgs
}
