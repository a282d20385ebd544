package mailer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// The gallery inlines each email in its frame (srcdoc), exactly as rendered, so that its script
// can size the frame to the whole email even when the gallery is opened from a file (a frame
// with a file src would be another origin, closed to it). The browser side, that no email is
// cut off, is e2e's TestPreviewGalleryInABrowser.
func TestGalleryInlinesEveryEmailWhole(t *testing.T) {
	dir := t.TempDir()
	previews, err := loadSample(t, TemplateOptions{}).WriteGallery(dir, sampleNow)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	var frames []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "iframe" {
			frames = append(frames, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if len(frames) != len(previews) || len(frames) == 0 {
		t.Fatalf("%d frames for %d previews", len(frames), len(previews))
	}
	want := map[string]int{} // the gallery groups by kind, WriteGallery's previews by organization
	for _, p := range previews {
		want[p.HTML]++
	}
	for _, f := range frames {
		name := attrOf(f, "title")
		if doc := attrOf(f, "srcdoc"); want[doc] == 0 {
			t.Errorf("%s: the frame's srcdoc (%d bytes) is not one of the rendered emails", name, len(doc))
		} else {
			want[doc]--
		}
		for _, a := range []string{"src", "loading", "height", "scrolling"} {
			if v := attrOf(f, a); v != "" {
				t.Errorf("%s: the frame has %s=%q", name, a, v)
			}
		}
	}
	style := string(b[:strings.Index(string(b), "</style>")])
	for _, old := range []string{"520px", "max-height"} {
		if strings.Contains(style, old) {
			t.Errorf("the gallery's style still has %q, which cut emails off", old)
		}
	}
}
