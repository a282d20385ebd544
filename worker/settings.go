package worker

import (
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

// Reload puts s in force at once, for every try that starts from now on (each takes the settings
// once, so no email mixes old and new templates) and every list of events (their types change
// with the kinds). Tries in flight, and their backoff, are left alone. A kind enabled now is sent
// for events from the cursor on; events before it are not read again (a backfill reads them:
// `cursor reset`).
func (w *Worker) Reload(s Settings) {
	w.settings.Store(newSettings(s))
}

// Kinds are the kinds enabled now.
func (w *Worker) Kinds() []string { return append([]string(nil), w.cur().Kinds...) }
