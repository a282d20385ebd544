package worker

import (
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Records older than Options.Retention are pruned at start and then every pruneEvery, in
// batches of pruneBatch per store transaction so sends never wait long for the store.
// MinRetention outlasts WorkOS's event retention (about 30 days): a record pruned later than
// that belongs to an event the Events API no longer lists, so no restart or backfill can meet
// the event again and send its email a second time.
const MinRetention = 31 * 24 * time.Hour

const (
	pruneEvery = time.Hour
	pruneBatch = 1000
	// pruneBudget bounds one prune: polling waits meanwhile, and the watchdog must see the loop
	// alive. A large backlog (a first prune, or a shorter retention) is worked off over polls.
	pruneBudget = 5 * time.Second
)

// maybePrune deletes final records older than the retention when a prune is due. A failure is
// logged and tried again at the next prune: keeping records longer loses nothing.
func (w *Worker) maybePrune() {
	ps, ok := w.store.(PruneStore)
	if !ok || w.opts.Retention <= 0 {
		return
	}
	now := w.opts.Now()
	if !w.hk.lastPrune.IsZero() && now.Sub(w.hk.lastPrune) < pruneEvery {
		return
	}
	w.hk.lastPrune = now
	cutoff := now.Add(-max(w.opts.Retention, MinRetention))
	started := time.Now()
	n, err := ps.PruneWith(cutoff, pruneBatch, func(int) bool {
		w.beat()
		if time.Since(started) < pruneBudget {
			return true
		}
		w.hk.lastPrune = time.Time{} // more to do: continue before the next poll
		return false
	})
	if err != nil {
		w.log.Error("pruning old delivery records failed; will try again in an hour", zap.Error(err),
			zap.Int("pruned", n), zap.Time("older_than", cutoff))
		return
	}
	if n > 0 {
		w.log.Info("pruned delivery records older than store.retention", zap.Int("pruned", n), zap.Time("older_than", cutoff))
	}
}

// EventRetention is about how long WorkOS lists events.
const EventRetention = 30 * 24 * time.Hour

// CheckBackfillSince is the rule for `cursor reset --since`: not in the future, and not further
// back than retention, whose older records may have been pruned: a backfill would send their
// emails again. retentionText is how the operator wrote store.retention.
func CheckBackfillSince(since, now time.Time, retention time.Duration, retentionText string) error {
	if since.After(now.Add(time.Minute)) {
		return fmt.Errorf("--since %s is in the future; give the time of the first event to read again", since.UTC().Format(time.RFC3339))
	}
	if since.Before(now.Add(-retention)) {
		return fmt.Errorf("--since %s is further back than store.retention (%s): delivery records of older events may "+
			"have been pruned, and a backfill would send those emails again", since.UTC().Format(time.RFC3339), retentionText)
	}
	return nil
}
