//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
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
