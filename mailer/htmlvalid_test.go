package mailer

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/workos-emailer/workos-emailer/kinds"
)

var voidElements = []string{"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

// checkHTML reports what makes doc not a well-formed email document: unbalanced or misnested
// tags, no lang, no title, an image without alt text, a link without a target, other than one
// heading.
func checkHTML(doc, locale string) []string {
	var problems []string
	z := html.NewTokenizer(strings.NewReader(doc))
	var stack []string
	h1, title := 0, false
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			if z.Err() != io.EOF {
				problems = append(problems, z.Err().Error())
			}
			break
		}
		tok := z.Token()
		attr := func(name string) (string, bool) {
			for _, a := range tok.Attr {
				if a.Key == name {
					return a.Val, true
				}
			}
			return "", false
		}
		switch tt {
		case html.StartTagToken, html.SelfClosingTagToken:
			switch tok.Data {
			case "html":
				if lang, _ := attr("lang"); lang != locale {
					problems = append(problems, fmt.Sprintf("<html lang=%q>, want %q", lang, locale))
				}
			case "img":
				if alt, ok := attr("alt"); !ok || alt == "" {
					problems = append(problems, "an image without alt text")
				}
			case "a":
				if href, _ := attr("href"); href == "" || strings.HasPrefix(href, "#") {
					problems = append(problems, "a link without a target")
				}
			case "h1":
				h1++
			case "title":
				title = true
			}
			if tt == html.StartTagToken && !slices.Contains(voidElements, tok.Data) {
				stack = append(stack, tok.Data)
			}
		case html.EndTagToken:
			if len(stack) == 0 || stack[len(stack)-1] != tok.Data {
				problems = append(problems, fmt.Sprintf("</%s> closes %v", tok.Data, stack))
				return problems
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		problems = append(problems, fmt.Sprintf("unclosed %v", stack))
	}
	if h1 != 1 {
		problems = append(problems, fmt.Sprintf("%d headings, want 1", h1))
	}
	if !title {
		problems = append(problems, "no title")
	}
	return problems
}

// renderAll renders every kind and its variants in every locale, with sample and with hostile data.
func renderAll(t *testing.T) map[string]Rendered {
	t.Helper()
	tm := loadSample(t, TemplateOptions{})
	out := map[string]Rendered{}
	for _, locale := range Locales {
		for _, kind := range kinds.Names() {
			samples := map[string]Data{"sample": SampleData(kind, sampleNow), "hostile": hostile(kind)}
			for _, v := range Variants(kind) {
				samples[v], _ = sampleData(kind, v, sampleNow)
				h := hostile(kind)
				h.Resent = samples[v].Resent
				samples[v+"-hostile"] = h
			}
			for variant, d := range samples {
				d.UserLocales = []string{locale}
				out[locale+"/"+kind+"-"+variant] = render(t, tm, d)
			}
		}
	}
	return out
}

func TestRenderedHTMLIsWellFormed(t *testing.T) {
	for name, r := range renderAll(t) {
		locale, _, _ := strings.Cut(name, "/")
		for _, p := range checkHTML(r.HTML, locale) {
			t.Errorf("%s: %s", name, p)
		}
	}
	if p := checkHTML("<!DOCTYPE html><html lang=\"en\"><head><title>x</title></head><body><h1>x</h1><p><div>x</p></div></body></html>", "en"); len(p) == 0 {
		t.Error("the check passes misnested tags")
	}
}

// Every rendered email passes html-validate (an npm tool `make tools` installs) with the rules
// that fit email (inline styles, table layout and its attributes are how email is written).
func TestRenderedHTMLPassesHTMLValidate(t *testing.T) {
	bin, err := filepath.Abs("../.tools/node_modules/.bin/html-validate")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("REQUIRE_E2E_TOOLS") != "" {
			t.Fatalf("html-validate is not installed (run make tools): %v", err)
		}
		t.Skip("html-validate is not installed; run make tools")
	}
	dir := t.TempDir()
	var files []string
	for name, r := range renderAll(t) {
		f := filepath.Join(dir, strings.ReplaceAll(name, "/", "-")+".html")
		if err := os.WriteFile(f, []byte(r.HTML), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	out, err := exec.Command(bin, append([]string{"--config", "testdata/htmlvalidate.json"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("html-validate: %v\n%s", err, out)
	}
}
