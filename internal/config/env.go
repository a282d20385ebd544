package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/viper"

	"github.com/workos-emailer/workos-emailer/internal/failpoint"
)

// checkEnvironment refuses a WORKOS_EMAILER_* variable that names no key, as UnmarshalExact
// refuses an unknown YAML key: a misspelt one would otherwise be ignored without a word.
func checkEnvironment(v *viper.Viper) error {
	known := map[string]string{}
	for _, key := range v.AllKeys() {
		known["WORKOS_EMAILER_"+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = key
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		// The failpoint switch exists only in test builds (internal/failpoint).
		if !strings.HasPrefix(name, "WORKOS_EMAILER_") || failpoint.IsEnv(name) {
			continue
		}
		if _, ok := known[name]; ok {
			continue
		}
		best, bestDist := "", 1<<30
		for env := range known {
			if d := editDistance(name, env); d < bestDist || d == bestDist && env < best {
				best, bestDist = env, d
			}
		}
		hint := ""
		if bestDist <= 4 {
			hint = fmt.Sprintf("; did you mean %s (%s)?", best, known[best])
		}
		return Error{fmt.Errorf("environment variable %s names no configuration key%s", name, hint)}
	}
	return nil
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var invalidKeys = regexp.MustCompile(`'([a-z0-9_.]*)' has invalid keys: ([^\n]+)`)

// nearestKeys suggests, for each unknown key UnmarshalExact names, the known key nearest to it.
func nearestKeys(err error) string {
	v := viper.New() // the keys that exist, not those the file has
	defaults(v)
	var hints []string
	for _, m := range invalidKeys.FindAllStringSubmatch(err.Error(), -1) {
		for _, k := range strings.Split(m[2], ", ") {
			full := strings.TrimPrefix(m[1]+"."+strings.TrimSpace(k), ".")
			best, bestDist := "", 1<<30
			for _, known := range v.AllKeys() {
				if d := editDistance(full, known); d < bestDist || d == bestDist && known < best {
					best, bestDist = known, d
				}
			}
			if bestDist <= 4 {
				hints = append(hints, fmt.Sprintf("%s: did you mean %s?", full, best))
			}
		}
	}
	if len(hints) == 0 {
		return ""
	}
	return " (" + strings.Join(hints, "; ") + ")"
}

// decodeHint explains the decoding errors YAML's own types cause: an unquoted date, which YAML
// reads as a time rather than text.
func decodeHint(err error) string {
	if strings.Contains(err.Error(), "time.Time") || strings.Contains(err.Error(), "workos.start") && strings.Contains(err.Error(), "expected type 'string'") {
		return ` (quote the time, e.g. start: "2026-11-01T00:00:00Z": unquoted, YAML reads it as a date, not text)`
	}
	return ""
}
