package worker

import (
	"testing"
	"text/template"
)

func mustTemplate(t *testing.T, s string) *template.Template {
	t.Helper()
	tm, err := template.New("link").Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}
