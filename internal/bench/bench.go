// Package bench measures the delivery pipeline end to end: the real worker, bbolt store
// (durable, fsync'd), workos-go client, aws-sdk-go-v2 SES v2 client and templates, against
// internal/fakeworkos and internal/fakeses served over loopback HTTP with configurable added
// latency. It compares the pipeline with the naive loop a user would write from the docs.
//
// The orchestrating process hosts the fakes and adds the events; each run of an implementation
// happens in a fresh child process (the same binary re-executed), so its peak RSS (VmHWM),
// allocations and CPU time are the pipeline's own and start from zero. cmd/bench is the
// command line; `make bench` runs it.
package bench

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/pgtest"
	"github.com/workos-emailer/workos-emailer/worker"
)

// Scenario is one workload.
type Scenario struct {
	Name  string
	Title string
	// Events in the workload: a backlog present before the run, or, with Arrival, added at
	// Arrival per second while it runs.
	Events  int
	Arrival float64
	// Added latency per request.
	WorkOSLatency time.Duration
	SESLatency    time.Duration
	// RunFor stops the run after this long (rate limit, idle); zero: when the backlog is
	// drained, or when every arriving event was sent.
	RunFor time.Duration
	// RateLimit is the SES send rate (emails/s) the pipeline is configured for and the fake
	// SES's GetAccount reports; zero means unlimited.
	RateLimit    float64
	PollInterval time.Duration
	// Naive runs the naive loop on the same workload too.
	Naive bool
	// Postgres runs the pipeline on the PostgreSQL store too (a throwaway cluster on this
	// machine), next to bbolt.
	Postgres bool
}

// Scenario names, in the order they run.
var scenarioOrder = []string{"a", "b", "c", "d", "idle", "lat"}

// scenarios returns the workloads, full size or quick.
func scenarios(quick bool) map[string]Scenario {
	q := func(full, small int) int {
		if quick {
			return small
		}
		return full
	}
	d := func(full, small time.Duration) time.Duration {
		if quick {
			return small
		}
		return full
	}
	return map[string]Scenario{
		"a": {Name: "a", Title: "backlog, no added latency", Events: q(20000, 1000), PollInterval: time.Second, Naive: true, Postgres: true},
		"b": {Name: "b", Title: "backlog, WorkOS +30 ms, SES +60 ms", Events: q(5000, 300),
			WorkOSLatency: 30 * time.Millisecond, SESLatency: 60 * time.Millisecond, PollInterval: time.Second, Naive: true},
		// More backlog than the limit lets through, so a limited pipeline never runs dry;
		// realistic latencies, so a limiter that serializes sends shows up.
		"c": {Name: "c", Title: "SES limit 50/s, WorkOS +30 ms, SES +60 ms", Events: q(1600, 400), RunFor: d(20*time.Second, 5*time.Second),
			RateLimit: 50, WorkOSLatency: 30 * time.Millisecond, SESLatency: 60 * time.Millisecond, PollInterval: time.Second},
		"d": {Name: "d", Title: "backfill, no added latency", Events: q(100000, 5000), PollInterval: time.Second},
		"idle": {Name: "idle", Title: "idle, poll every 1 s", RunFor: d(10*time.Second, 3*time.Second),
			PollInterval: time.Second},
		// Events arrive below the pipeline's capacity, so latency is the poll interval plus the
		// work, not a queue.
		"lat": {Name: "lat", Title: "steady 20 events/s, poll 1 s, WorkOS +30 ms, SES +60 ms", Events: q(200, 60),
			Arrival: 20, WorkOSLatency: 30 * time.Millisecond, SESLatency: 60 * time.Millisecond, PollInterval: time.Second},
	}
}

// Config says what to run.
type Config struct {
	// Scenarios by name (a, b, c, d, idle, lat); empty: all.
	Scenarios []string
	Quick     bool
	// Events overrides each scenario's event count (not idle's); 0 keeps it.
	Events int
	// WorkOSLatency and SESLatency, when >= 0, override every scenario's added latency.
	WorkOSLatency, SESLatency time.Duration
	Concurrency, PageSize     int
	// Count runs each scenario this many times and reports the median run.
	Count int
	// NaiveMax time-boxes a naive run: it is sequential, so its rate is steady and a run of a
	// minute measures it as well as hours would.
	NaiveMax time.Duration
	// CPUProfile, when set, is a path prefix: each run writes PREFIX-<scenario>-<impl>.pprof,
	// and the process serving the fakes PREFIX-<scenario>-<impl>-fakes.pprof.
	CPUProfile string
	// MemProfile, when set, is a path prefix: each run writes the allocations of its measured
	// part to PREFIX-<scenario>-<impl>.heap (`go tool pprof -sample_index=alloc_space`).
	MemProfile string
	// Trace, when set, is a path prefix: each run writes an execution trace (runtime/trace) to
	// PREFIX-<scenario>-<impl>.trace; `go tool trace -pprof=syscall|sync|net` turns it into
	// profiles of the time spent blocked.
	Trace string
	// Exe is the binary to re-execute for each run (it must call ChildMain for -child);
	// empty runs everything in this process (tests), which shares RSS and allocations with
	// the fakes.
	Exe string
	// TempDir holds the stores; empty: the system's.
	TempDir string
	// Progress receives a line per run; nil: none.
	Progress io.Writer
	// Command is how the benchmark was invoked, for the report.
	Command string
	// Interrupt, when closed, stops the run in progress and ends Run with an error.
	Interrupt <-chan struct{}
	// NoPostgres leaves the PostgreSQL store's runs out.
	NoPostgres bool
	pg         *pgtest.Cluster // started by Run when a scenario needs it
}

var errInterrupted = errors.New("interrupted")

// Report is everything one invocation measured.
type Report struct {
	Config  Config
	Machine Machine
	Rows    []Row
	Targets []Target
}

// Run runs the configured scenarios.
func Run(cfg Config) (*Report, error) {
	all := scenarios(cfg.Quick)
	names := cfg.Scenarios
	if len(names) == 0 {
		names = scenarioOrder
	}
	for _, n := range names {
		if _, ok := all[n]; !ok {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", n, strings.Join(scenarioOrder, ", "))
		}
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.NaiveMax <= 0 {
		cfg.NaiveMax = time.Minute
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = worker.DefaultConcurrency
	}
	if cfg.Count <= 0 {
		cfg.Count = 1
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 100 // workos.page_size's default
	}
	tmp, err := os.MkdirTemp(cfg.TempDir, "workos-emailer-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	if !cfg.NoPostgres && slices.ContainsFunc(names, func(n string) bool { return all[n].Postgres }) {
		c, stop, err := pgtest.StartServer()
		switch {
		case errors.Is(err, pgtest.ErrNotInstalled):
			fmt.Fprintf(cfg.Progress, "PostgreSQL store runs left out: %v\n", err)
		case err != nil:
			return nil, fmt.Errorf("start PostgreSQL for the benchmark: %w", err)
		default:
			defer stop()
			cfg.pg = c
		}
	}
	rep := &Report{Config: cfg, Machine: describeMachine()}
	for _, name := range scenarioOrder {
		if !slices.Contains(names, name) {
			continue
		}
		sc := all[name]
		if cfg.Events > 0 && sc.Events > 0 {
			sc.Events = cfg.Events
		}
		if cfg.WorkOSLatency >= 0 {
			sc.WorkOSLatency = cfg.WorkOSLatency
		}
		if cfg.SESLatency >= 0 {
			sc.SESLatency = cfg.SESLatency
		}
		rows, err := runScenario(cfg, sc, tmp)
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			rep.Targets = evaluate(rep.Rows) // of the scenarios that finished
			return rep, fmt.Errorf("scenario %s: %w", name, err)
		}
	}
	rep.Targets = evaluate(rep.Rows)
	return rep, nil
}

// runScenario runs a scenario cfg.Count times, each time on fresh fakes and fresh stores, and
// keeps per implementation the median run (by events/s; idle: by CPU) with the spread.
func runScenario(cfg Config, sc Scenario, tmp string) ([]Row, error) {
	runs := map[string][]Row{}
	var impls []string
	var err error
	for i := range cfg.Count {
		var rows []Row
		rows, err = runScenarioOnce(cfg, sc, filepath.Join(tmp, fmt.Sprintf("%s-%d", sc.Name, i)))
		if err != nil {
			break // report the repetitions that finished, with the error
		}
		for _, r := range rows {
			if runs[r.Impl] == nil {
				impls = append(impls, r.Impl)
			}
			runs[r.Impl] = append(runs[r.Impl], r)
		}
	}
	var out []Row
	for _, impl := range impls {
		out = append(out, median(runs[impl]))
	}
	return out, err
}

// settledServerCPU reads the server's CPU once the run's backends have exited and been reaped
// (their time moves to the postmaster's children's then): two equal reads 100 ms apart.
func settledServerCPU(c *pgtest.Cluster) time.Duration {
	last := c.ServerCPU()
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		now := c.ServerCPU()
		if now == last {
			break
		}
		last = now
	}
	return last
}

// median picks the middle run and notes the range of all.
func median(rs []Row) Row {
	if len(rs) == 1 {
		return rs[0]
	}
	key := func(r Row) float64 { return r.EventsPerSec }
	unit, format := "events/s", "%.0f"
	if rs[0].Events == 0 {
		key, unit, format = func(r Row) float64 { return r.CPUPct }, "% CPU", "%.2f"
	}
	slices.SortFunc(rs, func(a, b Row) int { return cmp.Compare(key(a), key(b)) })
	m := rs[len(rs)/2]
	m.Runs = len(rs)
	spread := fmt.Sprintf("median of %d runs; "+format+"-"+format+" %s", len(rs), key(rs[0]), key(rs[len(rs)-1]), unit)
	m.Note = strings.TrimPrefix(m.Note+"; "+spread, "; ")
	return m
}

func runScenarioOnce(cfg Config, sc Scenario, tmp string) ([]Row, error) {
	accountRate := sc.RateLimit
	if accountRate <= 0 {
		accountRate = 1e6 // effectively unlimited, should the pipeline read its rate from SES
	}
	h := newHost(sc.WorkOSLatency, sc.SESLatency, accountRate)
	defer h.Close()
	if sc.Arrival <= 0 && sc.Events > 0 {
		fmt.Fprintf(cfg.Progress, "scenario %s: adding %d events...\n", sc.Name, sc.Events)
		h.addBacklog(sc.Events)
	}
	impls := []string{implOurs}
	if sc.Postgres && cfg.pg != nil {
		impls = append(impls, implPostgres)
	}
	if sc.Naive && sc.Arrival <= 0 {
		impls = append(impls, implNaive)
	}
	var rows []Row
	for _, impl := range impls {
		h.resetAccepts()
		dir := tmp + "-" + impl
		row, err := runImpl(cfg, sc, h, impl, dir)
		_ = os.RemoveAll(dir)
		if err != nil {
			return rows, err
		}
		fmt.Fprintf(cfg.Progress, "scenario %s %-5s: %s\n", sc.Name, impl, row.summary())
		rows = append(rows, row)
	}
	return rows, nil
}

// runImpl runs one implementation on the host's workload and measures it.
func runImpl(cfg Config, sc Scenario, h *host, impl, dir string) (Row, error) {
	spec := runSpec{
		Scenario: sc.Name, Impl: impl, WorkOSURL: h.WorkOS, SESURL: h.SES, Dir: dir,
		Concurrency: cfg.Concurrency, PageSize: cfg.PageSize, PollInterval: sc.PollInterval,
		StopWhenIdle: sc.Arrival <= 0 && sc.RunFor <= 0, RateLimit: sc.RateLimit, SampleMem: sc.Events > 0,
	}
	if cfg.CPUProfile != "" {
		spec.CPUProfile = fmt.Sprintf("%s-%s-%s.pprof", cfg.CPUProfile, sc.Name, impl)
	}
	if cfg.MemProfile != "" {
		spec.MemProfile = fmt.Sprintf("%s-%s-%s.heap", cfg.MemProfile, sc.Name, impl)
	}
	if cfg.Trace != "" {
		spec.Trace = fmt.Sprintf("%s-%s-%s.trace", cfg.Trace, sc.Name, impl)
	}
	var serverCPU0 time.Duration
	if impl == implPostgres {
		var err error
		if spec.DSN, err = cfg.pg.NewDatabase("bench_" + sc.Name); err != nil {
			return Row{}, err
		}
		serverCPU0 = cfg.pg.ServerCPU()
	}
	started := make(chan time.Time, 1)
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopRun := func() { stopOnce.Do(func() { close(stop) }) }
	defer stopRun()
	if cfg.CPUProfile != "" && cfg.Exe != "" {
		// The fakes' side of the same run, from this process.
		f, err := os.Create(fmt.Sprintf("%s-%s-%s-fakes.pprof", cfg.CPUProfile, sc.Name, impl))
		if err != nil {
			return Row{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err == nil {
			defer pprof.StopCPUProfile()
		}
	}
	done := make(chan runResult, 1)
	load := loadAvg1()
	fakesCPU0 := cpuTime()
	go func() {
		var res runResult
		if cfg.Exe == "" {
			res = execute(spec, func(t time.Time) { started <- t }, stop)
		} else {
			res = executeChild(cfg.Exe, spec, started, stop)
		}
		done <- res
	}()

	var res runResult
	var runStart time.Time
	select {
	case runStart = <-started:
	case res = <-done:
		return Row{}, fmt.Errorf("%s did not start: %s", impl, res.Err)
	}
	if sc.Arrival > 0 {
		go h.produce(sc.Events, sc.Arrival, stop)
	}
	deadline := runStart.Add(2 * time.Hour) // a hung run ends some time
	timeBoxed := false
	if sc.RunFor > 0 {
		deadline = runStart.Add(sc.RunFor)
	} else if impl == implNaive && runStart.Add(cfg.NaiveMax).Before(deadline) {
		deadline = runStart.Add(cfg.NaiveMax)
		timeBoxed = true
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	interrupted := false
wait:
	for {
		select {
		case res = <-done:
			break wait
		case <-cfg.Interrupt:
			stopRun()
			interrupted = true
			cfg.Interrupt = nil
		case now := <-tick.C:
			if !now.Before(deadline) || sc.Arrival > 0 && h.acceptedCount() >= sc.Events {
				stopRun()
			}
		}
	}
	fakesCPU := cpuTime() - fakesCPU0
	var serverCPU time.Duration
	if impl == implPostgres {
		serverCPU = settledServerCPU(cfg.pg) - serverCPU0
	}
	if interrupted {
		return Row{}, errInterrupted
	}
	if res.Err != "" {
		return Row{}, fmt.Errorf("%s: %s", impl, res.Err)
	}
	var from, to time.Time
	if sc.RateLimit > 0 {
		from, to = runStart, runStart.Add(sc.RunFor)
	}
	st := h.stats(runStart, from, to)
	row := Row{
		Scenario: sc.Name, Title: sc.Title, Impl: impl, Events: sc.Events,
		Sent: st.Unique, Duplicates: st.Duplicates + st.Unknown, Elapsed: res.Elapsed,
		P50ms: st.P50ms, P99ms: st.P99ms, PeakRSS: res.PeakRSS, StoreBytes: res.StoreBytes,
		Mallocs: res.Mallocs, AllocBytes: res.AllocBytes, Limit: sc.RateLimit,
		WorkOSLatency: sc.WorkOSLatency, SESLatency: sc.SESLatency, PollInterval: sc.PollInterval, Concurrency: cfg.Concurrency, PageSize: cfg.PageSize,
		Load1: load, Mem: res.Mem, Store: res.Store, WorkOSConns: h.wosConns.Load(), SESConns: h.sesConns.Load(),
	}
	if res.Elapsed > 0 {
		row.EventsPerSec = float64(st.Unique) / res.Elapsed.Seconds()
		row.CPUPct = 100 * res.CPU.Seconds() / res.Elapsed.Seconds()
		row.FakesCPUPct = 100 * fakesCPU.Seconds() / res.Elapsed.Seconds()
	}
	if sc.RateLimit > 0 {
		row.EventsPerSec = float64(st.InWindow) / sc.RunFor.Seconds()
		row.RatePct = 100 * row.EventsPerSec / sc.RateLimit
		row.MaxPerSec = st.MaxPerSec
	}
	switch {
	case timeBoxed && st.Unique < sc.Events:
		row.Note = fmt.Sprintf("time-boxed at %s: %d of %d events; latency over those only", cfg.NaiveMax, st.Unique, sc.Events)
	case sc.RunFor > 0 && sc.Events > 0:
		row.Note = fmt.Sprintf("ran %s; %d of %d events sent", sc.RunFor, st.Unique, sc.Events)
	case sc.Events > 0 && st.Unique != sc.Events:
		return row, fmt.Errorf("%s sent %d of %d events", impl, st.Unique, sc.Events)
	}
	if row.Duplicates > 0 {
		return row, fmt.Errorf("%s: SES accepted %d duplicate or unknown emails", impl, row.Duplicates)
	}
	if impl == implPostgres && res.Elapsed > 0 {
		row.ServerCPUPct = 100 * serverCPU.Seconds() / res.Elapsed.Seconds()
		row.Note = strings.TrimPrefix(row.Note+fmt.Sprintf("; PostgreSQL server CPU %.0f%% (not in the CPU column)", row.ServerCPUPct), "; ")
	}
	if sc.RateLimit > 0 && impl == implOurs {
		row.Note += "; paced by the send limiter at mailer.ses.max_send_rate"
	}
	return row, nil
}
