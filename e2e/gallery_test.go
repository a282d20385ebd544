//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chromiumPath finds headless Chromium (Debian's package chromium); like the npm tools, a
// missing one skips the test unless REQUIRE_E2E_TOOLS=1.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("REQUIRE_E2E_TOOLS") == "1" {
		t.Fatal("chromium not found (apt-get install chromium, or set CHROMIUM)")
	}
	t.Skip("chromium not found; apt-get install chromium, or set CHROMIUM")
	return ""
}

// screenshot renders url in headless Chromium at width x height into a PNG file.
func screenshot(t *testing.T, chromium, url, out string, width, height int, extra ...string) image.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The flags keep Chromium off the network this machine does not have, and out of the way
	// of whoever runs it (root in CI: no sandbox).
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000",
		"--window-size=" + strconv.Itoa(width) + "," + strconv.Itoa(height), "--screenshot=" + out}, extra...)
	cmd := exec.CommandContext(ctx, chromium, append(args, url)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, tail(string(b), 10))
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pagePrelude is what pageReport adds to a page before its script: e2eReport(v) puts v, as
// JSON, where pageReport reads it; e2ePoll(check, ms) calls check(last) from the page's load on
// until it returns something other than undefined or ms have passed (then last is true), and
// reports that.
const pagePrelude = `
function e2eReport(v) { document.getElementById("e2e-report").textContent = JSON.stringify(v); }
function e2ePoll(check, ms) {
  var deadline = Date.now() + ms;
  function step() {
    var r = check(Date.now() > deadline);
    if (r !== undefined) e2eReport(r); else setTimeout(step, 50);
  }
  if (document.readyState === "complete") step(); else window.addEventListener("load", step);
}
`

var reportRE = regexp.MustCompile(`(?s)<pre id="e2e-report">(.*?)</pre>`)

// pageReport opens a copy of page (a file; the copy sits beside it, so its relative links
// hold) with script run at the end of its body in headless Chromium at width x height, and
// decodes into v what the script reports (pagePrelude). Chromium's virtual time runs the
// page's timers without waiting for them in real time; the script polls with a deadline.
func pageReport(t *testing.T, chromium, page, script string, v any, width, height int, extra ...string) {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(b, []byte("</body>"))
	if i < 0 {
		t.Fatalf("%s has no </body>", page)
	}
	check := filepath.Join(filepath.Dir(page), "e2e-check-"+filepath.Base(page))
	doc := string(b[:i]) + `<pre id="e2e-report"></pre><script>` + pagePrelude + script + "</script>\n" + string(b[i:])
	if err := os.WriteFile(check, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=60000",
		"--window-size=" + strconv.Itoa(width) + "," + strconv.Itoa(height), "--dump-dom"}, extra...)
	out, err := exec.CommandContext(ctx, chromium, append(args, "file://"+check)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v", check, err)
	}
	m := reportRE.FindSubmatch(out)
	if m == nil || len(m[1]) == 0 {
		t.Fatalf("the check of %s reported nothing (it did not finish):\n%s", page, tail(string(out), 5))
	}
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), v); err != nil {
		t.Fatalf("the check of %s: %v\n%s", page, err, m[1])
	}
}

// galleryCheck measures every email's frame in the gallery once the emails are in them: the
// email's document must fit its frame (no scrolling, nothing cut off, at most a pixel's
// rounding), the frame must be wide enough for the email's desktop layout (the layout switches
// to its mobile one at 600px and below), and the frame must lie within its card.
const galleryCheck = `
document.querySelectorAll("iframe[loading]").forEach(function (f) { f.loading = "eager"; });
e2ePoll(function (last) {
  var frames = document.querySelectorAll("article.card iframe"), problems = [];
  frames.forEach(function (f) {
    var card = f.closest("article"), id = card.id, d = null;
    try { d = f.contentDocument; } catch (err) {}
    if (!d || !d.body || d.readyState !== "complete" || d.URL === "about:blank") {
      problems.push(id + ": the email is not loaded in its frame, or the gallery cannot read it");
      return;
    }
    var e = d.documentElement, fr = f.getBoundingClientRect(), cr = card.getBoundingClientRect();
    if (e.scrollHeight > e.clientHeight + 1) problems.push(id + ": cut off: the email is " + e.scrollHeight + "px tall, its frame shows " + e.clientHeight + "px");
    if (e.scrollWidth > e.clientWidth + 1) problems.push(id + ": cut off: the email is " + e.scrollWidth + "px wide, its frame shows " + e.clientWidth + "px");
    if (f.contentWindow.matchMedia("(max-width: 600px)").matches) problems.push(id + ": the frame is " + f.contentWindow.innerWidth + "px wide, showing the email's mobile layout");
    if (fr.left < cr.left - 1 || fr.right > cr.right + 1 || fr.bottom > cr.bottom + 1) problems.push(id + ": the frame sticks out of its card");
  });
  if (problems.length > 0 && !last) return undefined;
  return {frames: frames.length, problems: problems};
}, 10000);
`

// darkTextCheck reports the color of every text in the email as Chromium shows it, the
// background it sits on, and what it is: "muted" (inside class muted), "body" (a paragraph of
// the content) or "other".
const darkTextCheck = `
e2ePoll(function () {
  function backdrop(el) {
    for (; el; el = el.parentElement) {
      var c = getComputedStyle(el).backgroundColor;
      if (c !== "rgba(0, 0, 0, 0)" && c !== "transparent") return c;
    }
    return "";
  }
  var texts = [], walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (var n = walk.nextNode(); n; n = walk.nextNode()) {
    var el = n.parentElement;
    if (!n.data.trim() || !el.getClientRects().length || el.closest("#e2e-report")) continue;
    var kind = el.closest(".muted") ? "muted" : el.closest(".fg p") && !el.closest("p[class]") ? "body" : "other";
    texts.push({text: n.data.trim().slice(0, 40), kind: kind, color: getComputedStyle(el).color, background: backdrop(el)});
  }
  return texts;
}, 10000);
`

type shownText struct{ Text, Kind, Color, Background string }

var rgbRE = regexp.MustCompile(`^rgba?\((\d+), (\d+), (\d+)(, 1)?\)$`)

// luminance is the WCAG relative luminance of a CSS rgb() color.
func luminance(c string) (float64, error) {
	m := rgbRE.FindStringSubmatch(c)
	if m == nil {
		return 0, fmt.Errorf("color %q is not an opaque rgb()", c)
	}
	var l [3]float64
	for i := range l {
		v, _ := strconv.Atoi(m[i+1])
		x := float64(v) / 255
		if x <= 0.03928 {
			l[i] = x / 12.92
		} else {
			l[i] = math.Pow((x+0.055)/1.055, 2.4)
		}
	}
	return 0.2126*l[0] + 0.7152*l[1] + 0.0722*l[2], nil
}

// colorShare is the share of img's pixels within a few steps of c.
func colorShare(img image.Image, c color.RGBA) float64 {
	b := img.Bounds()
	n, hit := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			n++
			if near(r>>8, c.R) && near(g>>8, c.G) && near(bl>>8, c.B) {
				hit++
			}
		}
	}
	return float64(hit) / float64(n)
}

func near(a uint32, b uint8) bool { d := int(a) - int(b); return d > -8 && d < 8 }

// The gallery a person reviews before going live: `render --all` with an organization's own
// templates, opened in headless Chromium. The screenshot must show the emails themselves (the
// brand color of their buttons), not an empty or broken page; with E2E_ARTIFACTS set it is kept
// there for a person to look at.
func TestPreviewGalleryInABrowser(t *testing.T) {
	chromium := chromiumPath(t)
	dir := worldReadableDir(t)
	tmpl := filepath.Join(dir, "templates")
	org := "org_01GALLERY"
	for name, content := range map[string]string{
		filepath.Join(org, "de", "invitation.subject.txt"): `Willkommen im Team von {{.OrganizationName}}`,
		filepath.Join("locales", "de.json"):                `{"invitation.next": "Nehmen Sie die Einladung an – wir freuen uns auf Sie."}`,
	} {
		p := filepath.Join(tmpl, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("brand:\n  name: Robodesk\n  primary_color: \"#0f766e\"\n  support_email: support@robodesk.example\n"+
		"templates:\n  dir: "+tmpl+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "preview")
	cmd := exec.Command(releaseBin, "render", "--all", "--out", out, "--config", cfg)
	if b, err := cmd.CombinedOutput(); err != nil || !bytes.Contains(b, []byte("index.html")) {
		t.Fatalf("render --all: %v\n%s", err, b)
	}
	index, err := os.ReadFile(filepath.Join(out, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Willkommen im Team von Globex Robotics", "日本語", "Português (Brasil)", org + "/de/invitation.html"} {
		if !strings.Contains(string(index), want) {
			t.Errorf("the gallery lacks %q", want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, org, "de", "invitation.txt")); !bytes.Contains(b, []byte("wir freuen uns auf Sie")) {
		t.Errorf("the organization's German invitation lacks the reworded message:\n%s", b)
	}

	png := filepath.Join(dir, "gallery.png")
	img := screenshot(t, chromium, "file://"+filepath.Join(out, "index.html"), png, 1400, 1800)
	if b := img.Bounds(); b.Dx() != 1400 || b.Dy() != 1800 {
		t.Errorf("screenshot %v", b)
	}
	teal := color.RGBA{0x0f, 0x76, 0x6e, 0xff}
	if share := colorShare(img, teal); share < 0.002 {
		t.Errorf("the brand color covers %.3f%% of the gallery: the emails did not render", 100*share)
	}
	// Every email is shown whole, in its desktop layout, on a desktop-wide gallery opened from a
	// file (no flag lets the gallery's script into frames of another origin).
	var fit struct {
		Frames   int
		Problems []string
	}
	pageReport(t, chromium, filepath.Join(out, "index.html"), galleryCheck, &fit, 1400, 1800)
	if want := strings.Count(string(index), "<article "); fit.Frames != want || want == 0 {
		t.Errorf("the gallery shows %d emails in frames, want %d", fit.Frames, want)
	}
	for i, p := range fit.Problems {
		if i == 10 {
			t.Errorf("and %d more", len(fit.Problems)-i)
			break
		}
		t.Error(p)
	}
	// In dark mode muted text (the link fallback, the note, the footer) stays dimmer than the
	// body text, and every text reads at WCAG AA contrast on its background.
	var texts []shownText
	pageReport(t, chromium, filepath.Join(out, "default", "fr", "invitation.html"), darkTextCheck, &texts, 700, 1200,
		"--force-dark-mode", "--blink-settings=preferredColorScheme=0")
	bodyLum, muted := -1.0, 0
	for _, x := range texts {
		if l, err := luminance(x.Color); err == nil && x.Kind == "body" && (bodyLum < 0 || l < bodyLum) {
			bodyLum = l
		}
	}
	if bodyLum < 0 {
		t.Fatalf("dark mode: no body text found in %+v", texts)
	}
	for _, x := range texts {
		fg, err1 := luminance(x.Color)
		bg, err2 := luminance(x.Background)
		if err := errors.Join(err1, err2); err != nil {
			t.Errorf("dark mode: %q: %v", x.Text, err)
			continue
		}
		if c := (max(fg, bg) + 0.05) / (min(fg, bg) + 0.05); c < 4.5 {
			t.Errorf("dark mode: %q is %s on %s, contrast %.2f, want at least 4.5", x.Text, x.Color, x.Background, c)
		}
		if x.Kind == "muted" {
			muted++
			if fg >= bodyLum {
				t.Errorf("dark mode: muted %q is %s, as bright as the body text or brighter", x.Text, x.Color)
			}
		}
	}
	if muted < 3 {
		t.Errorf("dark mode: %d muted texts, want the link fallback, the note and the footer: %+v", muted, texts)
	}
	// One email on its own, in dark mode: the card turns dark, the button keeps the brand.
	dark := screenshot(t, chromium, "file://"+filepath.Join(out, "default", "fr", "magic_auth.html"), filepath.Join(dir, "dark.png"),
		700, 800, "--force-dark-mode", "--blink-settings=preferredColorScheme=0")
	if share := colorShare(dark, color.RGBA{0x16, 0x1b, 0x26, 0xff}); share < 0.2 {
		t.Errorf("dark mode: the dark card covers %.1f%%, want most of the page", 100*share)
	}
	if a := os.Getenv("E2E_ARTIFACTS"); a != "" {
		for _, f := range []string{png, filepath.Join(dir, "dark.png")} {
			b, _ := os.ReadFile(f)
			_ = os.WriteFile(filepath.Join(a, filepath.Base(f)), b, 0o644)
		}
	}
	t.Logf("gallery: %s (screenshot %s)", filepath.Join(out, "index.html"), png)
}
