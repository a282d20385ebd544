package mailer

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

func sampleData(kind string) Data {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	d := Data{
		Kind: kind, Now: now, Email: "grace@example.com",
		Brand: Brand{Name: "Robodesk", LogoURL: "https://robodesk.example/logo.png", PrimaryColor: "#0f766e", SupportEmail: "support@robodesk.example"},
	}
	switch kind {
	case KindInvitation:
		d.Link = "https://app.robodesk.example/invite?token=Z1uX3RbwcIl5fIGJJJCXXisdI"
		d.ExpiresAt = now.Add(7 * 24 * time.Hour)
		d.OrganizationName = "Acme Robotics"
		d.InviterName = "Ada Lovelace"
		d.InviterEmail = "ada@acme.example"
	case KindPasswordReset:
		d.Link = "https://app.robodesk.example/reset?token=Z1uX3RbwcIl5fIGJJJCXXisdI"
		d.ExpiresAt = now.Add(time.Hour)
	case KindMagicAuth:
		d.Code = "123456"
		d.ExpiresAt = now.Add(10 * time.Minute)
	case KindEmailVerification:
		d.Code = "654321"
		d.ExpiresAt = now.Add(24 * time.Hour)
	}
	return d
}

// TestGolden renders every kind with sample data and compares with testdata/golden; run
// `go test ./mailer -update` to rewrite them, then review the diff.
func TestGolden(t *testing.T) {
	tm, err := LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range CoreKinds {
		r, err := tm.Render(sampleData(kind))
		if err != nil {
			t.Fatal(err)
		}
		for ext, got := range map[string]string{"subject.txt": r.Subject + "\n", "html": r.HTML, "txt": r.Text} {
			path := filepath.Join("testdata", "golden", kind+"."+ext)
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
				t.Fatalf("%v (run go test ./mailer -update)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from golden file; run go test ./mailer -update and review the diff\n--- got ---\n%s", path, got)
			}
		}
	}
}

func TestCodeAndExpiryShown(t *testing.T) {
	tm, err := LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ kind, secret, expiry string }{
		{KindMagicAuth, "123456", "10 minutes"},
		{KindEmailVerification, "654321", "24 hours"},
		{KindInvitation, "token=Z1uX3RbwcIl5fIGJJJCXXisdI", "7 days"},
		{KindPasswordReset, "token=Z1uX3RbwcIl5fIGJJJCXXisdI", "1 hour"},
	} {
		r, err := tm.Render(sampleData(tc.kind))
		if err != nil {
			t.Fatal(err)
		}
		for name, body := range map[string]string{"html": r.HTML, "text": r.Text} {
			if !strings.Contains(body, tc.secret) || !strings.Contains(body, tc.expiry) {
				t.Errorf("%s %s: want %q and %q in the body", tc.kind, name, tc.secret, tc.expiry)
			}
		}
		if strings.Contains(r.Subject, tc.secret) {
			t.Errorf("%s: secret in subject", tc.kind)
		}
	}
}

func TestHostileDataIsEscaped(t *testing.T) {
	tm, err := LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	d := sampleData(KindInvitation)
	d.OrganizationName = `<script>alert(1)</script>"Evil" Corp` + "\u202Emoc.evil"
	d.InviterName = "Mallory\r\nBcc: x@example.com <b>"
	d.Brand.Name = `Brand "><img src=x onerror=alert(1)>`
	d.Link = "javascript:alert(1)"
	r, err := tm.Render(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"<script>", "<img src=x", "<b>", `href="javascript:`} {
		if strings.Contains(r.HTML, bad) {
			t.Errorf("HTML contains unescaped %q", bad)
		}
	}
	if !strings.Contains(r.HTML, "&lt;script&gt;") {
		t.Error("organization name not escaped as text")
	}
	if strings.ContainsAny(r.Subject, "\r\n") {
		t.Errorf("subject has a line break: %q", r.Subject)
	}
	if strings.Contains(r.HTML+r.Text+r.Subject, "\u202E") {
		t.Error("a right-to-left override in a name reached the email")
	}
	if strings.Contains(r.Text, "\nBcc:") || !strings.Contains(r.Text, "Mallory Bcc: x@example.com") {
		t.Errorf("a name broke the text body into lines of its own:\n%s", r.Text)
	}
}

func FuzzRenderEscapes(f *testing.F) {
	f.Add("Acme", "Ada", "<script>x</script>")
	f.Add("\r\nBcc: a@b.c", "\"'<>&", "ü日本\u202e")
	tm, err := LoadTemplates()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, org, inviter, brand string) {
		// Markers delimit each value in the output; between them no raw markup may survive.
		const mark = "QQ9QQ"
		d := sampleData(KindInvitation)
		d.OrganizationName, d.InviterName, d.Brand.Name = mark+org+mark, mark+inviter+mark, mark+brand+mark
		r, err := tm.Render(d)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(r.Subject, "\r\n") {
			t.Fatalf("subject with a line break: %q", r.Subject)
		}
		parts := strings.Split(r.HTML, mark)
		for i := 1; i < len(parts); i += 2 {
			if strings.ContainsAny(parts[i], "<>\"") {
				t.Fatalf("unescaped markup in %q", parts[i])
			}
		}
	})
}

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{30 * time.Second, "less than a minute"},
		{time.Minute, "1 minute"},
		{10*time.Minute - time.Second, "10 minutes"},
		{time.Hour, "1 hour"},
		{24 * time.Hour, "24 hours"},
		{7 * 24 * time.Hour, "7 days"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
