package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The child protocol: the orchestrator writes the runSpec as JSON to a file and runs
// `EXE -child FILE`. The child prints "started <unix ns>" on stdout when the pipeline starts,
// stops gracefully on SIGTERM (as the daemon does), and writes its runResult as JSON to
// FILE.result before it exits.

// executeChild runs spec in a fresh process of exe.
func executeChild(exe string, spec runSpec, started chan<- time.Time, stop <-chan struct{}) runResult {
	fail := func(err error) runResult { return runResult{Impl: spec.Impl, Err: err.Error()} }
	specPath := spec.Dir + ".spec.json"
	b, err := json.Marshal(spec)
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(specPath, b, 0o600); err != nil {
		return fail(err)
	}
	cmd := exec.Command(exe, "-child", specPath)
	cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_DISABLED=true")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	exited := make(chan struct{})
	go func() {
		select {
		case <-stop:
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case <-exited:
		}
	}()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "started "); ok {
			if ns, err := strconv.ParseInt(rest, 10, 64); err == nil {
				started <- time.Unix(0, ns)
			}
		} else {
			fmt.Fprintln(os.Stderr, sc.Text())
		}
	}
	waitErr := cmd.Wait()
	close(exited)
	var res runResult
	b, err = os.ReadFile(specPath + ".result")
	if err != nil {
		return fail(fmt.Errorf("child exited (%v) without a result: %w", waitErr, err))
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return fail(err)
	}
	return res
}

// ChildMain runs one measured run as a child process (see executeChild) and returns the exit
// code.
func ChildMain(specPath string) int {
	b, err := os.ReadFile(specPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	var spec runSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		close(stop)
	}()
	res := execute(spec, func(t time.Time) { fmt.Printf("started %d\n", t.UnixNano()) }, stop)
	b, err = json.Marshal(res)
	if err == nil {
		err = os.WriteFile(specPath+".result", b, 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	return 0
}
