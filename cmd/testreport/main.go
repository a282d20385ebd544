// Command testreport reads `go test -json` on stdin and prints what `go test` prints without
// -v (a line per package, the output of failed tests and build errors), then one line naming
// the tests that were skipped and why, so that a green `make test` cannot hide a test that did
// not run. It exits 1 when anything failed. It is part of `make test`, not of the release.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Elapsed    float64
	Output     string
	ImportPath string // build-output, build-fail
}

type skip struct{ pkg, test, reason string }

func main() {
	failed, err := report(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
}

func report(in io.Reader, out io.Writer) (failed bool, err error) {
	outputs := map[string][]string{} // package + test -> its output lines
	var skips []skip
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(out, sc.Text()) // not JSON: go itself speaking (e.g. a vet error)
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "build-fail":
			failed = true
		case "output":
			outputs[key] = append(outputs[key], e.Output)
		case "skip":
			if e.Test != "" {
				skips = append(skips, skip{e.Package, e.Test, skipReason(outputs[key])})
			}
			delete(outputs, key)
		case "pass":
			if e.Test == "" {
				fmt.Fprintf(out, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
			}
			delete(outputs, key)
		case "fail":
			failed = true
			for _, l := range outputs[key] {
				if e.Test == "" && (l == "FAIL\n" || strings.HasPrefix(l, "FAIL\t")) {
					continue // go test's own summary: printed once below
				}
				fmt.Fprint(out, l)
			}
			if e.Test == "" {
				fmt.Fprintf(out, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
			}
			delete(outputs, key)
		}
	}
	if err := sc.Err(); err != nil {
		return true, err
	}
	fmt.Fprintln(out, summary(skips))
	return failed, nil
}

// skipReason is the message the test gave t.Skip, from its output.
func skipReason(lines []string) string {
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		if _, msg, ok := strings.Cut(l, ": "); ok && strings.Contains(l, "_test.go:") {
			return msg
		}
		return l
	}
	return "no reason given"
}

func summary(skips []skip) string {
	if len(skips) == 0 {
		return "skipped: none (every test ran)"
	}
	sort.Slice(skips, func(i, j int) bool { return skips[i].pkg+skips[i].test < skips[j].pkg+skips[j].test })
	parts := make([]string, len(skips))
	for i, s := range skips {
		parts[i] = fmt.Sprintf("%s (%s: %s)", s.test, strings.TrimPrefix(s.pkg, "github.com/workos-emailer/workos-emailer/"), s.reason)
	}
	return fmt.Sprintf("skipped: %d tests did not run: %s. Install what they need (`make tools` for the npm tools, the "+
		"Debian packages named), then run make test again.", len(skips), strings.Join(parts, "; "))
}
