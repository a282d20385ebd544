package worker

import (
	"context"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// The operator's retry queue: `dead retry` turns dead or ambiguous records into pending ones and
// queues their ids in the store; the worker delivers them before each poll through the same
// deliver path as any event, so a code that expired or an invitation revoked meanwhile is
// skipped, not sent.

// RetryStore is what the retry queue needs of the store beyond Store; *store.Store has it. A
// store without it simply has no retry queue.
type RetryStore interface {
	RetryQueue(limit int) ([]string, error)
	DropRetry(eventID string) error
}

// PruneStore deletes old final records; *store.Store has it.
type PruneStore interface {
	PruneWith(olderThan time.Time, batch int, keepGoing func(pruned int) bool) (int, error)
}

// retryBatch bounds the queued retries delivered between two polls, so a large `dead retry
// --all` does not hold up new events for long.
const retryBatch = 100

// housekeeping is the worker's state for the work it does between polls.
type housekeeping struct {
	lastPrune time.Time
}

// handOverRetries hands up to retryBatch queued retries to the dispatcher, which delivers them
// in the pool beside the events, and waits until they are all settled, so the next read of the
// queue does not return them again. It reports false when ctx ended first.
func (w *Worker) handOverRetries(ctx context.Context, send func(fetched) bool) bool {
	rs, ok := w.store.(RetryStore)
	if !ok {
		return true
	}
	ids, err := rs.RetryQueue(retryBatch)
	if err != nil {
		// The queue waits; the deliveries, which need the same store, report a broken one.
		w.log.Error("reading the retry queue failed; will try again before the next poll", zap.Error(err))
		return true
	}
	if len(ids) == 0 {
		return true
	}
	w.log.Info("delivering events an operator queued for retry", zap.Int("queued", len(ids)))
	batch := &retryGroup{left: len(ids), done: make(chan struct{})}
	if !send(fetched{retries: ids, batch: batch}) {
		return false
	}
	select {
	case <-batch.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// retryOne rebuilds the event from the record (its type from the kind, its object id) and
// delivers it. The rebuilt event has no email, so the check of the object's email against the
// event's is skipped; every other check runs again.
func (w *Worker) retryOne(ctx context.Context, id string) error {
	rs := w.store.(RetryStore) // only handOverRetries queues retries
	// The live reader may be delivering the same event (claims, live.go).
	release, ok := w.claims.acquire(ctx, id)
	if !ok {
		return errStopped
	}
	defer release()
	rec, found, err := w.record(id)
	if err != nil {
		return err
	}
	log := w.log.With(zap.String("event_id", id), zap.String("kind", rec.Kind))
	switch {
	case !found:
		log.Warn("an event queued for retry has no delivery record any more; dropped from the queue")
		return rs.DropRetry(id)
	case rec.State.Final():
		// Settled meanwhile, e.g. by a backfill that listed the event again.
		return rs.DropRetry(id)
	case rec.ObjectID == "" || !workosapi.ValidObjectID(rec.ObjectID) || !slices.Contains(kinds.Names(), rec.Kind):
		// `dead retry` refuses such records; this one was queued some other way.
		rec.State, rec.Reason, rec.UpdatedAt = store.Dead, "queued for retry, but the record names no WorkOS object to fetch again", w.opts.Now()
		logFinal(log, &rec)
		return w.store.Save(rec, "", rec.UpdatedAt)
	}
	typ, data := retryEvent(rec.Kind, rec.ObjectID)
	log.Info("retrying delivery at an operator's request", zap.String("object_id", rec.ObjectID))
	final, err := w.deliver(ctx, Event{ID: id, Type: typ, CreatedAt: rec.EventCreatedAt, Data: data})
	if err != nil {
		return err
	}
	if final == nil {
		return rs.DropRetry(id)
	}
	if final.MaybeDuplicate {
		if final.State == store.Sent {
			final.Reason = "sent again at an operator's request after a send whose outcome was unknown; the recipient may have two copies"
		} else {
			final.MaybeDuplicate = false // only a sent record says it may be a second copy
		}
	}
	// A final record leaves the retry queue in the same transaction.
	return w.store.Save(*final, "", w.opts.Now())
}
