package bench

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/pgtest"
)

// TestQuickScenario runs scenario a with a few events through the real pipeline (on bbolt and on
// PostgreSQL) and the naive loop, in this process, to keep the benchmark compiling and working.
// It asserts no timing.
func TestQuickScenario(t *testing.T) {
	rep, err := Run(Config{Scenarios: []string{"a"}, Quick: true, Events: 12, WorkOSLatency: -1, SESLatency: -1,
		TempDir: t.TempDir(), NaiveMax: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := 3
	if pgtest.Installed() != nil && os.Getenv("REQUIRE_POSTGRES") != "1" {
		want = 2 // Run left the PostgreSQL store out
	}
	if len(rep.Rows) != want {
		t.Fatalf("want a row for ours (bbolt and PostgreSQL) and one for naive, got %+v", rep.Rows)
	}
	for _, r := range rep.Rows {
		if r.Sent != 12 || r.Duplicates != 0 || r.EventsPerSec <= 0 || r.Mallocs == 0 {
			t.Errorf("%s: %+v", r.Impl, r)
		}
	}
	if want == 3 && (rep.Rows[1].Impl != implPostgres || rep.Rows[1].ServerCPUPct <= 0) {
		t.Errorf("the PostgreSQL run: %+v", rep.Rows[1])
	}
	if rep.Rows[0].StoreBytes == 0 {
		t.Error("no store size for ours")
	}
	var text, md strings.Builder
	rep.WriteText(&text)
	rep.WriteMarkdown(&md)
	for _, out := range []string{text.String(), md.String()} {
		if !strings.Contains(out, ">= 3,000 events/s") || !strings.Contains(out, "ours/naive") {
			t.Errorf("report lacks the target or the ratio:\n%s", out)
		}
	}
}

func TestMaxInWindow(t *testing.T) {
	s := int64(time.Second)
	times := []int64{0, s / 2, s - 1, s, 3 * s, 3*s + 1}
	if got := maxInWindow(times, s); got != 3 {
		t.Errorf("maxInWindow = %d, want 3", got)
	}
	if got := maxInWindow(nil, s); got != 0 {
		t.Errorf("maxInWindow(nil) = %d", got)
	}
}

// The memory sampler must not allocate per sample: its allocations would count as the
// pipeline's.
func TestMemSamplerAllocs(t *testing.T) {
	s := startMemSampler(time.Hour, "/nonexistent/state.db")
	defer s.Stop()
	s.sample() // first use may grow the buffer
	if n := testing.AllocsPerRun(20, s.sample); n > 1 {
		t.Errorf("a sample allocates %v times", n)
	}
}

func TestMappedRSS(t *testing.T) {
	smaps := []byte("7f00-7f10 r--s 00000000 fd:01 12 /tmp/x/state.db\nSize: 64 kB\nRss:   12 kB\n" +
		"7f20-7f30 r-xp 00000000 fd:01 13 /usr/bin/other\nRss: 99 kB\n" +
		"7f40-7f50 r--s 00000000 fd:01 12 /tmp/x/state.db\nRss: 4 kB\n")
	if got := mappedRSS(smaps, []byte("/tmp/x/state.db")); got != 16*1024 {
		t.Errorf("mappedRSS = %d, want %d", got, 16*1024)
	}
	if got := kbField([]byte("VmHWM:\t  1234 kB\nRssAnon:\t 56 kB\n"), []byte("RssAnon:")); got != 56*1024 {
		t.Errorf("kbField = %d", got)
	}
}
