package bench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one implementation's run of one scenario.
type Row struct {
	Scenario, Title, Impl string
	Events                int // in the workload
	Sent                  int // distinct events SES accepted
	Duplicates            int
	Elapsed               time.Duration
	EventsPerSec          float64 // for a rate-limited run: accepted within its window / window
	P50ms, P99ms          float64 // event visible -> SES accepted
	Mallocs, AllocBytes   uint64
	PeakRSS               int64 // bytes (VmHWM of the pipeline's process)
	StoreBytes            int64
	CPUPct                float64 // the pipeline's process: (user+system) / wall, 100 = one core
	FakesCPUPct           float64 // the process serving the fakes, same measure
	ServerCPUPct          float64 // the PostgreSQL server (implPostgres), same measure
	Load1                 float64 // the machine's 1-minute load average before the run
	Runs                  int     // repetitions this row is the median of
	Mem                   memPeaks
	Store                 storeStats
	// TCP connections the implementation opened to the fake WorkOS and the fake SES.
	WorkOSConns, SESConns int64
	// Rate-limited runs.
	Limit     float64
	RatePct   float64
	MaxPerSec int

	WorkOSLatency, SESLatency time.Duration
	PollInterval              time.Duration
	Concurrency, PageSize     int
	Note                      string
}

func (r Row) perEvent(v uint64) float64 {
	if r.Sent == 0 {
		return 0
	}
	return float64(v) / float64(r.Sent)
}

func (r Row) summary() string {
	s := fmt.Sprintf("%d/%d sent in %s, %.0f events/s, p50 %s p99 %s, %.0f allocs/event, peak RSS %s, store %s, CPU %.0f%% (fakes %.0f%%)",
		r.Sent, r.Events, r.Elapsed.Round(time.Millisecond), r.EventsPerSec, ms(r.P50ms), ms(r.P99ms),
		r.perEvent(r.Mallocs), mib(r.PeakRSS), mib(r.StoreBytes), r.CPUPct, r.FakesCPUPct)
	if r.Impl == implPostgres {
		s += fmt.Sprintf(", PostgreSQL %.0f%% CPU", r.ServerCPUPct)
	}
	return s
}

// Target is one goal and whether the run met it.
type Target struct {
	Scenario, Goal, Measured, Verdict string
}

const (
	pass = "PASS"
	miss = "MISS"
	na   = "n/a"
)

func verdict(ok bool) string {
	if ok {
		return pass
	}
	return miss
}

// evaluate checks the targets (sizes are MiB, 2^20 bytes).
func evaluate(rows []Row) []Target {
	find := func(sc, impl string) (Row, bool) {
		for _, r := range rows {
			if r.Scenario == sc && r.Impl == impl {
				return r, true
			}
		}
		return Row{}, false
	}
	var ts []Target
	if r, ok := find("a", implOurs); ok {
		ts = append(ts, Target{"a", ">= 3,000 events/s with durable state", fmt.Sprintf("%.0f events/s", r.EventsPerSec), verdict(r.EventsPerSec >= 3000)})
	}
	if r, ok := find("b", implOurs); ok {
		if n, ok := find("b", implNaive); ok && n.EventsPerSec > 0 {
			ratio := r.EventsPerSec / n.EventsPerSec
			ts = append(ts, Target{"b", ">= 12x the naive loop", fmt.Sprintf("%.1fx (%.0f vs %.1f events/s)", ratio, r.EventsPerSec, n.EventsPerSec), verdict(ratio >= 12)})
		}
	}
	if r, ok := find("c", implOurs); ok {
		rate := fmt.Sprintf("%.1f%% of %g/s", r.RatePct, r.Limit)
		window := fmt.Sprintf("max %d in 1 s (limit %g)", r.MaxPerSec, r.Limit)
		v1, v2 := verdict(r.RatePct >= 95), verdict(float64(r.MaxPerSec) <= 1.1*r.Limit)
		ts = append(ts, Target{"c", ">= 95% of the allowed rate", rate, v1},
			Target{"c", "no 1-second window > 110% of the limit", window, v2})
	}
	if r, ok := find("d", implOurs); ok {
		full := r.Events >= 100000
		scaled := func(ok bool) string {
			if !full {
				return na + fmt.Sprintf(" (%d events, target is for 100,000)", r.Events)
			}
			return verdict(ok)
		}
		ts = append(ts, Target{"d", "peak RSS <= 64 MiB (100,000 events)", mib(r.PeakRSS), scaled(r.PeakRSS <= 64<<20)},
			Target{"d", "store <= 40 MiB for 100,000 records", mib(r.StoreBytes), scaled(r.StoreBytes <= 40<<20)})
	}
	if r, ok := find("lat", implOurs); ok {
		// An event that becomes visible just after a poll waits for the next poll, that poll's
		// answer, one Get and one send.
		bound := r.PollInterval + 2*r.WorkOSLatency + r.SESLatency
		ts = append(ts, Target{"lat", fmt.Sprintf("p99 event-to-send <= poll_interval + one list, Get and send (%s)", bound),
			ms(r.P99ms), verdict(r.P99ms <= float64(bound.Milliseconds()))})
	}
	if r, ok := find("idle", implOurs); ok {
		ts = append(ts, Target{"idle", "idle CPU < 1% (pipeline process)", fmt.Sprintf("%.2f%%", r.CPUPct), verdict(r.CPUPct < 1)})
	}
	return ts
}

// Machine describes where the numbers came from.
type Machine struct {
	CPUs       int
	CPUModel   string
	GoVersion  string
	GOMAXPROCS int
	Commit     string
	Kernel     string
}

func describeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return m
}

func mib(b int64) string {
	if b == 0 {
		return "-"
	}
	if b < 1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func ms(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 10:
		return fmt.Sprintf("%.1f ms", v)
	case v < 10000:
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f s", v/1000)
}

func pct(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2f%%", v)
	}
	return fmt.Sprintf("%.0f%%", v)
}

func latency(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}

// table is the results as rows of cells, header first.
func (rep *Report) table() [][]string {
	out := [][]string{{"scenario", "impl", "latency WorkOS/SES", "events", "events/s", "p50", "p99", "allocs/event", "KiB alloc/event", "peak RSS", "store", "CPU", "PostgreSQL CPU", "fakes CPU", "load"}}
	for _, r := range rep.Rows {
		evs := fmt.Sprintf("%d", r.Sent)
		eps := fmt.Sprintf("%.1f", r.EventsPerSec)
		allocs, kib := fmt.Sprintf("%.0f", r.perEvent(r.Mallocs)), fmt.Sprintf("%.1f", r.perEvent(r.AllocBytes)/1024)
		p50, p99 := ms(r.P50ms), ms(r.P99ms)
		if r.Events == 0 { // idle
			evs, eps, allocs, kib = "0", "-", fmt.Sprintf("%.0f/s", float64(r.Mallocs)/r.Elapsed.Seconds()), "-"
		}
		if r.Limit > 0 {
			eps = fmt.Sprintf("%.1f (%.0f%% of %g/s, max %d in 1 s)", r.EventsPerSec, r.RatePct, r.Limit, r.MaxPerSec)
		}
		serverCPU := "-"
		if r.Impl == implPostgres {
			serverCPU = pct(r.ServerCPUPct)
		}
		out = append(out, []string{r.Scenario, r.Impl, latency(r.WorkOSLatency) + " / " + latency(r.SESLatency), evs, eps, p50, p99,
			allocs, kib, mib(r.PeakRSS), mib(r.StoreBytes), pct(r.CPUPct), serverCPU, pct(r.FakesCPUPct), fmt.Sprintf("%.1f", r.Load1)})
	}
	return out
}

// ratios are ours/naive throughput per scenario that ran both.
func (rep *Report) ratios() []string {
	var out []string
	for _, o := range rep.Rows {
		if o.Impl != implOurs {
			continue
		}
		for _, n := range rep.Rows {
			if n.Scenario == o.Scenario && n.Impl == implNaive && n.EventsPerSec > 0 {
				out = append(out, fmt.Sprintf("scenario %s: ours/naive = %.1fx (%.1f / %.1f events/s)", o.Scenario, o.EventsPerSec/n.EventsPerSec, o.EventsPerSec, n.EventsPerSec))
			}
		}
	}
	return out
}

func (rep *Report) notes() []string {
	var out []string
	for _, r := range rep.Rows {
		if r.Note != "" {
			out = append(out, fmt.Sprintf("%s/%s: %s", r.Scenario, r.Impl, strings.TrimPrefix(r.Note, "; ")))
		}
	}
	return out
}

// details say what peak memory and the store file are made of, for the pipeline's runs.
func (rep *Report) details() []string {
	var out []string
	for _, r := range rep.Rows {
		if r.Sent > 0 {
			out = append(out, fmt.Sprintf("%s/%s connections opened: WorkOS %d, SES %d (%.1f and %.1f per 1,000 events)", r.Scenario, r.Impl,
				r.WorkOSConns, r.SESConns, 1000*float64(r.WorkOSConns)/float64(r.Sent), 1000*float64(r.SESConns)/float64(r.Sent)))
		}
		m := r.Mem
		if m.Samples == 0 || r.Impl != implOurs {
			continue
		}
		line := fmt.Sprintf("%s/%s memory: peak RSS %s; sampled peaks: anonymous %s, file-backed %s (of which the store's mmap %s, the rest mostly the binary), Go heap objects %s, Go runtime total %s",
			r.Scenario, r.Impl, mib(r.PeakRSS), mib(m.RSSAnon), mib(m.RSSFile), mib(m.StoreMap), mib(m.GoHeap), mib(m.GoRuntime))
		out = append(out, line)
		if st := r.Store; st.Records > 0 {
			other := st.HighWater - st.LeafAlloc - st.BranchAlloc
			out = append(out, fmt.Sprintf("%s/%s store: file %s, up to the highest page in use %s (free, freelist and meta pages %s), %d records of %.0f bytes (key + JSON) = %s; B+tree leaves %s used of %s, branches %s of %s",
				r.Scenario, r.Impl, mib(st.FileBytes), mib(st.HighWater), mib(other),
				st.Records, float64(st.RecordBytes)/float64(st.Records), mib(st.RecordBytes),
				mib(st.LeafInuse), mib(st.LeafAlloc), mib(st.BranchInuse), mib(st.BranchAlloc)))
		}
	}
	return out
}

func (rep *Report) scenarioLines() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range rep.Rows {
		if !seen[r.Scenario] {
			seen[r.Scenario] = true
			out = append(out, fmt.Sprintf("%s: %s", r.Scenario, r.Title))
		}
	}
	return out
}

// WriteText prints the report as aligned plain text.
func (rep *Report) WriteText(w io.Writer) {
	m := rep.Machine
	if rep.Config.Command != "" {
		fmt.Fprintf(w, "command: %s\n", rep.Config.Command)
	}
	fmt.Fprintf(w, "machine: %d CPUs (%s), GOMAXPROCS %d, %s, kernel %s, commit %s\n", m.CPUs, m.CPUModel, m.GOMAXPROCS, m.GoVersion, m.Kernel, m.Commit)
	fmt.Fprintf(w, "delivery.concurrency %d, workos.page_size %d\n\n", rep.Config.Concurrency, rep.Config.PageSize)
	for _, l := range rep.scenarioLines() {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range rep.table() {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, l := range rep.ratios() {
		fmt.Fprintln(w, l)
	}
	for _, l := range rep.notes() {
		fmt.Fprintln(w, "note", l)
	}
	for _, l := range rep.details() {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tgoal\tmeasured\tverdict")
	for _, t := range rep.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Scenario, t.Goal, t.Measured, t.Verdict)
	}
	_ = tw.Flush()
}

// WriteMarkdown prints the report as Markdown tables.
func (rep *Report) WriteMarkdown(w io.Writer) {
	m := rep.Machine
	if rep.Config.Command != "" {
		fmt.Fprintf(w, "Command: `%s`\n\n", rep.Config.Command)
	}
	fmt.Fprintf(w, "Machine: %d CPUs (%s), GOMAXPROCS %d, %s, Linux %s, commit `%s`; delivery.concurrency %d, workos.page_size %d.\n\n",
		m.CPUs, m.CPUModel, m.GOMAXPROCS, m.GoVersion, m.Kernel, m.Commit, rep.Config.Concurrency, rep.Config.PageSize)
	for _, l := range rep.scenarioLines() {
		fmt.Fprintf(w, "- %s\n", l)
	}
	fmt.Fprintln(w)
	for i, row := range rep.table() {
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		if i == 0 {
			fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(row)))
		}
	}
	fmt.Fprintln(w)
	for _, l := range rep.ratios() {
		fmt.Fprintf(w, "- %s\n", l)
	}
	for _, l := range rep.notes() {
		fmt.Fprintf(w, "- %s\n", l)
	}
	for _, l := range rep.details() {
		fmt.Fprintf(w, "- %s\n", l)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | goal | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, t := range rep.Targets {
		fmt.Fprintf(w, "| %s | %s | %s | **%s** |\n", t.Scenario, t.Goal, t.Measured, t.Verdict)
	}
}
