package main

import (
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	const pkg = "github.com/workos-emailer/workos-emailer/mailer"
	for _, tc := range []struct {
		name, in   string
		failed     bool
		want, omit []string
	}{
		{"all pass", `{"Action":"run","Package":"` + pkg + `","Test":"TestA"}
{"Action":"output","Package":"` + pkg + `","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"` + pkg + `","Test":"TestA","Elapsed":0.1}
{"Action":"pass","Package":"` + pkg + `","Elapsed":0.5}
`, false, []string{"ok  \t" + pkg + "\t0.500s", "skipped: none"}, []string{"=== RUN"}},
		{"a skip is named with its reason", `{"Action":"output","Package":"` + pkg + `","Test":"TestHTML","Output":"=== RUN   TestHTML\n"}
{"Action":"output","Package":"` + pkg + `","Test":"TestHTML","Output":"    htmlvalid_test.go:134: html-validate is not installed; run make tools\n"}
{"Action":"output","Package":"` + pkg + `","Test":"TestHTML","Output":"--- SKIP: TestHTML (0.00s)\n"}
{"Action":"skip","Package":"` + pkg + `","Test":"TestHTML"}
{"Action":"pass","Package":"` + pkg + `","Elapsed":0.5}
`, false, []string{"skipped: 1 tests did not run: TestHTML (mailer: html-validate is not installed; run make tools)", "make tools"}, nil},
		{"a failure shows its output", `{"Action":"output","Package":"` + pkg + `","Test":"TestB","Output":"    x_test.go:9: boom\n"}
{"Action":"fail","Package":"` + pkg + `","Test":"TestB"}
{"Action":"fail","Package":"` + pkg + `","Elapsed":0.2}
`, true, []string{"x_test.go:9: boom", "FAIL\t" + pkg}, nil},
		{"a build failure fails", `{"ImportPath":"` + pkg + ` [` + pkg + `.test]","Action":"build-output","Output":"mailer/x.go:1:1: undefined: y\n"}
{"ImportPath":"` + pkg + ` [` + pkg + `.test]","Action":"build-fail"}
`, true, []string{"undefined: y"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			failed, err := report(strings.NewReader(tc.in), &out)
			if err != nil || failed != tc.failed {
				t.Fatalf("failed %v, err %v; want failed %v", failed, err, tc.failed)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, o := range tc.omit {
				if strings.Contains(out.String(), o) {
					t.Errorf("output has %q:\n%s", o, out.String())
				}
			}
		})
	}
}
