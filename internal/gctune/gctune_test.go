package gctune

import (
	"runtime/debug"
	"testing"
)

func TestApply(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	if got := Apply(); got != Percent || debug.SetGCPercent(Percent) != Percent {
		t.Errorf("without GOGC: %d, want %d", got, Percent)
	}
	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50) // what the runtime read from the environment at start
	if got := Apply(); got != 50 || debug.SetGCPercent(50) != 50 {
		t.Errorf("with GOGC=50: %d, want the environment's 50", got)
	}
}
