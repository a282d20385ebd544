package worker

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/store"
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

// eventTypes maps a kind back to the WorkOS event type that causes it.
var eventTypes = func() map[string]string {
	m := map[string]string{}
	for typ, kind := range EventKinds {
		m[kind] = typ
	}
	return m
}()

// EventTypeOf returns the WorkOS event type whose emails are of kind, or "".
func EventTypeOf(kind string) string { return eventTypes[kind] }

// ValidObjectID reports whether id has the shape of a WorkOS id (prefix_ULID, e.g.
// event_01H...), which also makes it safe to put in a URL path.
func ValidObjectID(id string) bool { return validObjectID.MatchString(id) }

// ValidEventID reports whether id has the shape of a WorkOS event id.
func ValidEventID(id string) bool { return strings.HasPrefix(id, "event_") && ValidObjectID(id) }

// beforePoll delivers queued retries and prunes old records when due. Its error is a store error
// or errStopped.
func (w *Worker) beforePoll(ctx context.Context) error {
	if err := w.deliverRetries(ctx); err != nil {
		return err
	}
	w.maybePrune()
	return nil
}

// deliverRetries delivers up to retryBatch queued retries, concurrently like a page.
func (w *Worker) deliverRetries(ctx context.Context) error {
	rs, ok := w.store.(RetryStore)
	if !ok {
		return nil
	}
	ids, err := rs.RetryQueue(retryBatch)
	if err != nil || len(ids) == 0 {
		return err
	}
	w.log.Info("delivering events an operator queued for retry", zap.Int("queued", len(ids)))
	sem := make(chan struct{}, w.opts.Concurrency)
	var wg sync.WaitGroup
	var firstErr firstError
	for _, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			firstErr.set(errStopped)
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := w.retryOne(ctx, rs, id); err != nil {
				firstErr.set(err)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		firstErr.set(errStopped)
	}
	return firstErr.get()
}

// retryOne rebuilds the event from the record (its type from the kind, its object id) and
// delivers it. The rebuilt event has no email, so the check of the object's email against the
// event's is skipped; every other check runs again.
func (w *Worker) retryOne(ctx context.Context, rs RetryStore, id string) error {
	rec, found, err := w.store.Delivery(id)
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
	case rec.ObjectID == "" || EventTypeOf(rec.Kind) == "" || !ValidObjectID(rec.ObjectID):
		// `dead retry` refuses such records; this one was queued some other way.
		rec.State, rec.Reason, rec.UpdatedAt = store.Dead, "queued for retry, but the record names no WorkOS object to fetch again", w.opts.Now()
		logFinal(log, &rec)
		return w.store.Save(rec, "", rec.UpdatedAt)
	}
	data, err := json.Marshal(map[string]string{"id": rec.ObjectID})
	if err != nil {
		return err
	}
	log.Info("retrying delivery at an operator's request", zap.String("object_id", rec.ObjectID))
	final, err := w.deliver(ctx, Event{ID: id, Type: EventTypeOf(rec.Kind), CreatedAt: rec.EventCreatedAt, Data: data})
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
