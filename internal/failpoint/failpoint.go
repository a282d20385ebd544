//go:build !failpoint

// Package failpoint lets the crash suite kill the daemon at exact points of the send path. In a
// normal build Hit is an empty function the compiler removes; only a binary built with
// `-tags failpoint` reads WORKOS_EMAILER_FAILPOINTS.
package failpoint

// Enabled reports whether this binary was built with failpoints.
const Enabled = false

// Hit marks that execution reached the named point.
func Hit(string) {}

// IsEnv reports whether name is the variable that arms failpoints: never, in a normal build.
func IsEnv(string) bool { return false }
