package mailer

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// darkRule is one selector of a rule in the layout's dark-mode block and what the rule sets.
type darkRule struct {
	selector string
	// compounds are the selector's parts, outermost first; each is a tag ("" for any) and
	// classes ("td.pad.fg" is {"td", "pad", "fg"}). Only descendant combinators occur.
	compounds [][]string
	classes   int
	tags      int
	order     int
	decls     map[string]decl
}

type decl struct {
	value     string
	important bool
}

var cssCommentRE = regexp.MustCompile(`(?s)/\*.*?\*/`)

// darkRules are the rules of the @media (prefers-color-scheme: dark) block in doc's <style>.
func darkRules(t *testing.T, style string) []darkRule {
	t.Helper()
	style = cssCommentRE.ReplaceAllString(style, "")
	start := strings.Index(style, "@media (prefers-color-scheme: dark)")
	if start < 0 {
		t.Fatal("no @media (prefers-color-scheme: dark) block in the layout's <style>")
	}
	open := strings.Index(style[start:], "{") + start
	depth, end := 0, -1
	for i := open; i < len(style) && end < 0; i++ {
		switch style[i] {
		case '{':
			depth++
		case '}':
			if depth--; depth == 0 {
				end = i
			}
		}
	}
	if end < 0 {
		t.Fatal("the dark-mode block does not close")
	}
	var rules []darkRule
	for _, rule := range strings.Split(style[open+1:end], "}") {
		sels, body, ok := strings.Cut(rule, "{")
		if !ok {
			continue
		}
		decls := parseDecls(body)
		for _, sel := range strings.Split(sels, ",") {
			r := darkRule{selector: strings.TrimSpace(sel), order: len(rules), decls: decls}
			for _, part := range strings.Fields(sel) {
				c := strings.Split(part, ".")
				if c[0] != "" {
					r.tags++
				}
				r.classes += len(c) - 1
				r.compounds = append(r.compounds, c)
			}
			rules = append(rules, r)
		}
	}
	return rules
}

func parseDecls(s string) map[string]decl {
	out := map[string]decl{}
	for _, d := range strings.Split(s, ";") {
		prop, value, ok := strings.Cut(d, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		v, important := strings.CutSuffix(value, "!important")
		out[strings.ToLower(strings.TrimSpace(prop))] = decl{strings.ToLower(strings.TrimSpace(v)), important}
	}
	return out
}

func attrOf(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func matchesCompound(n *html.Node, c []string) bool {
	if c[0] != "" && n.Data != c[0] {
		return false
	}
	classes := strings.Fields(attrOf(n, "class"))
	for _, want := range c[1:] {
		found := false
		for _, have := range classes {
			found = found || have == want
		}
		if !found {
			return false
		}
	}
	return true
}

func (r darkRule) matches(n *html.Node) bool {
	last := len(r.compounds) - 1
	if !matchesCompound(n, r.compounds[last]) {
		return false
	}
	i := last - 1
	for a := n.Parent; a != nil && i >= 0; a = a.Parent {
		if a.Type == html.ElementNode && matchesCompound(a, r.compounds[i]) {
			i--
		}
	}
	return i < 0
}

// darkValue is prop's value on n in dark mode by the cascade: an !important rule beats the
// inline style, which beats other rules; among rules the more specific wins, then the later.
// "" is no value (inherited or initial).
func darkValue(rules []darkRule, n *html.Node, prop string) string {
	var best *darkRule
	for i := range rules {
		r := &rules[i]
		if _, ok := r.decls[prop]; !ok || !r.matches(n) {
			continue
		}
		if best == nil {
			best = r
			continue
		}
		bi, ri := best.decls[prop].important, r.decls[prop].important
		switch {
		case ri != bi:
			if ri {
				best = r
			}
		case r.classes != best.classes:
			if r.classes > best.classes {
				best = r
			}
		case r.tags != best.tags:
			if r.tags > best.tags {
				best = r
			}
		default:
			best = r // later
		}
	}
	inline, hasInline := parseDecls(attrOf(n, "style"))[prop]
	switch {
	case best != nil && (best.decls[prop].important || !hasInline):
		return best.decls[prop].value
	case hasInline:
		return inline.value
	}
	return ""
}

// darkColor is n's text color in dark mode, inherited where n sets none.
func darkColor(rules []darkRule, n *html.Node) string {
	for ; n != nil; n = n.Parent {
		if n.Type != html.ElementNode {
			continue
		}
		if v := darkValue(rules, n, "color"); v != "" && v != "inherit" {
			return v
		}
	}
	return ""
}

// darkBackdrop is the background the text of n is read on in dark mode.
func darkBackdrop(rules []darkRule, n *html.Node) string {
	for ; n != nil; n = n.Parent {
		if n.Type != html.ElementNode {
			continue
		}
		if v := darkValue(rules, n, "background-color"); v != "" && v != "transparent" {
			return v
		}
	}
	return ""
}

func hexLuminance(c string) (float64, error) {
	hex, ok := strings.CutPrefix(c, "#")
	if len(hex) == 3 {
		hex = string([]byte{hex[0], hex[0], hex[1], hex[1], hex[2], hex[2]})
	}
	v, err := strconv.ParseUint(hex, 16, 32)
	if !ok || len(hex) != 6 || err != nil {
		return 0, fmt.Errorf("%q is not a hex color", c)
	}
	return relativeLuminance(uint8(v>>16), uint8(v>>8), uint8(v)), nil
}

func contrast(fg, bg string) (float64, error) {
	a, err := hexLuminance(fg)
	if err != nil {
		return 0, err
	}
	b, err := hexLuminance(bg)
	if err != nil {
		return 0, err
	}
	return (max(a, b) + 0.05) / (min(a, b) + 0.05), nil
}

func hasClass(n *html.Node, class string) bool {
	for ; n != nil; n = n.Parent {
		if n.Type == html.ElementNode && matchesCompound(n, []string{"", class}) {
			return true
		}
	}
	return false
}

// In dark mode (the layout's @media (prefers-color-scheme: dark) rules, resolved by the CSS
// cascade: specificity, then order, !important over inline styles) every text of every email
// reads at WCAG AA contrast on its background, and muted text (class muted: the link fallback,
// notes, the footer) stays dimmer than the body text around it, not as bright.
func TestDarkModeKeepsMutedTextMuted(t *testing.T) {
	for name, r := range renderAll(t) {
		doc, err := html.Parse(strings.NewReader(r.HTML))
		if err != nil {
			t.Fatal(err)
		}
		var style string
		var body, content *html.Node
		var walk func(*html.Node)
		walk = func(n *html.Node) {
			if n.Type == html.ElementNode {
				switch {
				case n.Data == "style" && n.FirstChild != nil:
					style += n.FirstChild.Data
				case n.Data == "body":
					body = n
				case n.Data == "td" && content == nil && hasClass(n, "fg") && !hasClass(n, "muted"):
					content = n
				}
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				walk(c)
			}
		}
		walk(doc)
		if body == nil || content == nil {
			t.Fatalf("%s: no body or no content cell (td class fg)", name)
		}
		rules := darkRules(t, style)
		bodyColor := darkColor(rules, content)
		bodyLum, err := hexLuminance(bodyColor)
		if err != nil {
			t.Fatalf("%s: body text in dark mode: %v", name, err)
		}
		muted := 0
		var check func(*html.Node)
		check = func(n *html.Node) {
			if n.Type == html.ElementNode && strings.Contains(strings.ReplaceAll(attrOf(n, "style"), " ", ""), "display:none") {
				return // the preheader
			}
			if n.Type == html.TextNode && strings.TrimSpace(n.Data) != "" {
				el := n.Parent
				fg, bg := darkColor(rules, el), darkBackdrop(rules, el)
				text := strings.TrimSpace(n.Data)
				if r := []rune(text); len(r) > 40 {
					text = string(r[:40]) + "…"
				}
				c, err := contrast(fg, bg)
				switch {
				case err != nil:
					t.Errorf("%s: %q in dark mode: %v", name, text, err)
				case c < 4.5:
					t.Errorf("%s: %q in dark mode is %s on %s, contrast %.2f, want at least 4.5 (WCAG AA)", name, text, fg, bg, c)
				}
				if hasClass(el, "muted") {
					muted++
					if lum, err := hexLuminance(fg); err == nil && lum >= bodyLum {
						t.Errorf("%s: muted %q in dark mode is %s, as bright as the body text (%s) or brighter", name, text, fg, bodyColor)
					}
				}
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				check(c)
			}
		}
		check(body)
		if muted == 0 {
			t.Errorf("%s: no muted text found (the footer has class muted)", name)
		}
	}
}

// The cascade the test above relies on: .fg p outweighs .muted, as in a browser.
func TestDarkCascadeBySpecificity(t *testing.T) {
	rules := darkRules(t, `@media (prefers-color-scheme: dark) { .fg, .fg p { color: #eeeeee !important; } .muted { color: #999999 !important; } }`)
	doc, err := html.Parse(strings.NewReader(`<body><table><tr><td class="fg"><p class="muted" style="color:#666666">x</p></td></tr></table></body>`))
	if err != nil {
		t.Fatal(err)
	}
	var p *html.Node
	var find func(*html.Node)
	find = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "p" {
			p = n
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			find(c)
		}
	}
	find(doc)
	if got := darkColor(rules, p); got != "#eeeeee" {
		t.Errorf("p.muted inside .fg: %s, want #eeeeee (.fg p is the more specific)", got)
	}
}
