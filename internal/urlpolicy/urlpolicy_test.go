package urlpolicy

import "testing"

func TestCheck(t *testing.T) {
	for s, ok := range map[string]bool{
		"https://app.example.com/cb": true, "http://localhost:3000/cb": true, "http://127.0.0.1/x": true, "http://[::1]:8080/": true,
		"http://app.example.com/cb": false, "/cb": false, "ftp://x.example/": false, "https://": false, "http://localhost.evil.example/": false,
	} {
		if got := Check(s) == nil; got != ok {
			t.Errorf("Check(%q) accepts: %v, want %v", s, got, ok)
		}
	}
}
