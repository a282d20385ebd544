// Package gctune sets the daemon's garbage collector target.
package gctune

import (
	"os"
	"runtime/debug"
)

// Percent is the GC target the daemon runs with unless GOGC says otherwise. The daemon's live
// heap is small (about 10 MiB with a full window of events in flight) and every email allocates
// some 90 KiB in the AWS and WorkOS SDKs, so at Go's default of 100 a busy daemon spends about a
// tenth of its CPU collecting. 200 halves that for about 10 MiB more memory (BENCHMARKS.md).
const Percent = 200

// Apply sets Percent, unless the environment sets GOGC, and returns the target in force.
func Apply() int {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		old := debug.SetGCPercent(100)
		debug.SetGCPercent(old)
		return old
	}
	debug.SetGCPercent(Percent)
	return Percent
}
