//go:build failpoint

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Enabled reports whether this binary was built with failpoints.
const Enabled = true

// Env names the variable that arms failpoints: a comma-separated list of NAME=N, meaning the
// process kills itself with SIGKILL the Nth time it reaches NAME (e.g. "after-send=7").
const Env = "WORKOS_EMAILER_FAILPOINTS"

var (
	mu    sync.Mutex
	armed map[string]int
	hits  = map[string]int{}
	once  sync.Once
)

func load() {
	armed = map[string]int{}
	spec := os.Getenv(Env)
	if spec == "" {
		return
	}
	for _, part := range strings.Split(spec, ",") {
		name, n, ok := strings.Cut(strings.TrimSpace(part), "=")
		count, err := strconv.Atoi(n)
		if !ok || err != nil || count < 1 {
			fmt.Fprintf(os.Stderr, "failpoint: ignoring %q in %s (want NAME=N, N >= 1)\n", part, Env)
			continue
		}
		armed[name] = count
	}
}

// Hit kills the process with SIGKILL, which it cannot catch, when name's armed count is reached:
// nothing after this point runs, exactly as on a power cut or an OOM kill.
func Hit(name string) {
	once.Do(load)
	mu.Lock()
	defer mu.Unlock()
	want, ok := armed[name]
	if !ok {
		return
	}
	hits[name]++
	if hits[name] == want {
		fmt.Fprintf(os.Stderr, "failpoint: %s reached %d times; SIGKILL\n", name, want)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is delivered asynchronously; never return into the send path
	}
}

// IsEnv reports whether name is the variable that arms failpoints (Env).
func IsEnv(name string) bool { return name == Env }
