package worker

import (
	"time"

	"go.uber.org/zap"
)

// Records older than Options.Retention are pruned at start and then every pruneEvery, in
// batches of pruneBatch per store transaction so sends never wait long for the store.
const (
	pruneEvery = time.Hour
	pruneBatch = 1000
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
	cutoff := now.Add(-w.opts.Retention)
	n, err := ps.Prune(cutoff, pruneBatch)
	if err != nil {
		w.log.Error("pruning old delivery records failed; will try again in an hour", zap.Error(err),
			zap.Int("pruned", n), zap.Time("older_than", cutoff))
		return
	}
	if n > 0 {
		w.log.Info("pruned delivery records older than store.retention", zap.Int("pruned", n), zap.Time("older_than", cutoff))
	}
}
