package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/worker"
)

// TestQuickScenario runs scenario a with a few events through the real pipeline and the naive
// loop, in this process, to keep the benchmark compiling and working. It asserts no timing.
func TestQuickScenario(t *testing.T) {
	rep, err := Run(Config{Scenarios: []string{"a"}, Quick: true, Events: 12, WorkOSLatency: -1, SESLatency: -1,
		TempDir: t.TempDir(), NaiveMax: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 {
		t.Fatalf("want a row for ours and one for naive, got %+v", rep.Rows)
	}
	for _, r := range rep.Rows {
		if r.Sent != 12 || r.Duplicates != 0 || r.EventsPerSec <= 0 || r.Mallocs == 0 {
			t.Errorf("%s: %+v", r.Impl, r)
		}
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

func TestSetRateKnob(t *testing.T) {
	var opts struct {
		PollInterval time.Duration
		MaxSendRate  float64
	}
	if got := setRateKnob(50, &opts); got == "" || opts.MaxSendRate != 50 {
		t.Errorf("knob %q, MaxSendRate %v", got, opts.MaxSendRate)
	}
	var none struct{ RetryMax time.Duration }
	if got := setRateKnob(50, &none); got != "" {
		t.Errorf("found knob %q in a struct without one", got)
	}
	// Whatever the pipeline has today is found or reported missing; it must not panic.
	_ = setRateKnob(50, &worker.Options{}, &mailer.SESOptions{})
}
