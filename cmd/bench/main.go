// Command bench measures the delivery pipeline end to end against the in-repo fake WorkOS and
// fake SES, and the naive loop beside it. `make bench` runs it; see BENCHMARKS.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/workos-emailer/workos-emailer/internal/bench"
	"github.com/workos-emailer/workos-emailer/worker"
)

func main() {
	var (
		cfg       bench.Config
		scenarios string
		markdown  bool
		inProcess bool
		child     string
	)
	flag.StringVar(&scenarios, "scenarios", "a,b,c,d,idle,lat,limits", "comma-separated scenarios to run: a, b, c, d, idle, lat, limits (WorkOS's rate limits, shared with an app)")
	flag.BoolVar(&cfg.Quick, "quick", false, "small workloads and short runs: a smoke test, not a measurement")
	flag.IntVar(&cfg.Events, "events", 0, "override every scenario's event count (0: the scenario's own)")
	flag.DurationVar(&cfg.WorkOSLatency, "workos-latency", -1, "added latency per WorkOS request for every scenario (default: the scenario's)")
	flag.DurationVar(&cfg.SESLatency, "ses-latency", -1, "added latency per SES request for every scenario (default: the scenario's)")
	flag.IntVar(&cfg.Concurrency, "concurrency", worker.DefaultConcurrency, "delivery.concurrency of the pipeline")
	flag.IntVar(&cfg.PageSize, "page-size", 100, "workos.page_size (events per page) for both implementations")
	flag.IntVar(&cfg.Count, "count", 1, "run each scenario this many times and report the median run with the range")
	flag.DurationVar(&cfg.NaiveMax, "naive-max", 0, "time box of a naive run (default 1m, -quick 10s)")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of each run's pipeline process to PREFIX-<scenario>-<impl>.pprof")
	flag.StringVar(&cfg.MemProfile, "memprofile", "", "write the allocations of each run's pipeline process to PREFIX-<scenario>-<impl>.heap")
	flag.StringVar(&cfg.Trace, "trace", "", "write an execution trace of each run's pipeline process to PREFIX-<scenario>-<impl>.trace")
	flag.BoolVar(&markdown, "markdown", false, "print the results as Markdown (for BENCHMARKS.md)")
	flag.BoolVar(&inProcess, "inprocess", false, "run the pipeline in this process, beside the fakes, instead of a fresh child process per run (RSS, allocations and CPU then include the fakes)")
	flag.StringVar(&child, "child", "", "internal: run one measured run described by this file")
	flag.Parse()
	if child != "" {
		os.Exit(bench.ChildMain(child))
	}
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench: unexpected arguments:", flag.Args())
		os.Exit(2)
	}
	limits := false
	for _, s := range strings.Split(scenarios, ",") {
		switch s = strings.TrimSpace(s); s {
		case "":
		case "limits":
			limits = true
		default:
			cfg.Scenarios = append(cfg.Scenarios, s)
		}
	}
	if cfg.NaiveMax == 0 && cfg.Quick {
		cfg.NaiveMax = 10e9
	}
	if !inProcess {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		cfg.Exe = exe
	}
	cfg.Progress = os.Stderr
	cfg.Command = strings.Join(append([]string{"bench"}, os.Args[1:]...), " ")
	// A signal stops the run in progress (its child stops as the daemon does) and removes the
	// temporary stores.
	interrupt := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		close(interrupt)
	}()
	cfg.Interrupt = interrupt
	if len(cfg.Scenarios) > 0 {
		rep, err := bench.Run(cfg)
		if rep != nil && len(rep.Rows) > 0 || err == nil {
			if markdown {
				rep.WriteMarkdown(os.Stdout)
			} else {
				rep.WriteText(os.Stdout)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	if limits {
		events := cfg.Events
		rows, err := bench.RunLimits(bench.LimitsConfig{Events: events, Quick: cfg.Quick, Progress: os.Stderr})
		fmt.Println()
		fmt.Println("WorkOS's rate limits, shared with an app (scenario limits):")
		fmt.Println()
		bench.WriteLimitsMarkdown(os.Stdout, rows)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}
