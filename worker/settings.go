package worker

import (
	"context"
	"text/template"

	"github.com/workos-emailer/workos-emailer/kinds"
)

// Settings are what a reload (SIGHUP) changes while Run runs: how emails look and which are sent.
// The rest of Options holds until a restart.
type Settings struct {
	Renderer Renderer
	// Kinds, Links, AppURL and UserLocaleKey as in Options.
	Kinds         []string
	Links         map[string]*template.Template
	AppURL        string
	UserLocaleKey string
}

// settings is Settings as the pipeline reads them; replaced whole, never changed.
type settings struct {
	Settings
	enabled map[string]bool
	types   []string // the event types listed
}

func newSettings(s Settings) *settings {
	if len(s.Kinds) == 0 {
		s.Kinds = kinds.Defaults()
	}
	out := &settings{Settings: s, enabled: map[string]bool{}, types: kinds.ListedEvents(s.Kinds)}
	for _, k := range s.Kinds {
		out.enabled[k] = true
	}
	return out
}

// cur is the settings in force.
func (w *Worker) cur() *settings { return w.settings.Load() }

// Reload puts s in force between two terms of the event pipeline (Interrupt): no email in flight
// is rendered half with the old templates, and the event types listed change with the kinds. A
// kind enabled now is sent for events from the cursor on; events before it are not read again
// (a backfill reads them: `cursor reset`). It fails with ErrNotRunning when Run is not running.
func (w *Worker) Reload(ctx context.Context, s Settings) error {
	next := newSettings(s)
	return w.Interrupt(ctx, func() error {
		w.settings.Store(next)
		return nil
	})
}
