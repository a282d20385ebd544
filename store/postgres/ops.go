package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/workos-emailer/workos-emailer/store"
)

// Stats counts the records per state and per kind and state, with the position: one grouped
// count, which PostgreSQL answers from the table in milliseconds for 100,000 records.
func (s *Store) Stats() (store.Stats, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	st := store.Stats{ByState: map[store.State]int{}, ByKind: map[string]map[store.State]int{}}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var err error
		if st.Position, err = s.position(ctx, tx); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM deliveries WHERE retry").Scan(&st.RetryQueued); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT kind, state, count(*) FROM deliveries GROUP BY kind, state")
		if err != nil {
			return err
		}
		var kind, state string
		var n int
		_, err = pgx.ForEachRow(rows, []any{&kind, &state, &n}, func() error {
			if st.ByKind[kind] == nil {
				st.ByKind[kind] = map[store.State]int{}
			}
			st.ByKind[kind][store.State(state)] += n
			st.ByState[store.State(state)] += n
			st.Records += n
			return nil
		})
		return err
	})
	if err != nil {
		return store.Stats{}, fmt.Errorf("read store statistics: %w", err)
	}
	return st, nil
}

// Problems returns the dead and ambiguous records in event-id order.
func (s *Store) Problems() ([]store.Delivery, error) {
	out, err := s.query("WHERE state IN ('dead', 'ambiguous') ORDER BY event_id")
	if err != nil {
		return nil, fmt.Errorf("list dead and ambiguous deliveries: %w", err)
	}
	return out, nil
}

// RequestRetry queues dead or ambiguous deliveries for another attempt, all or none (a
// *store.RetryRefusedError names those refused). The rows are locked, not fenced: the leader
// claims a queued record by compare-and-set like any other, so the change is safe beside it.
func (s *Store) RequestRetry(now time.Time, ids ...string) ([]store.Delivery, error) {
	if len(ids) == 0 {
		return nil, errors.New("queue retries: no event ids given")
	}
	var out []store.Delivery
	ctx, cancel := s.ctx()
	defer cancel()
	err := s.unfenced(ctx, func(tx pgx.Tx) error {
		out = out[:0]
		// Only the dead and ambiguous rows are locked: the others (which are refused) may be the
		// leader's in flight, and locking them could deadlock with its writes.
		found, err := s.queryIn(ctx, tx, "WHERE event_id = ANY($1) AND state IN ('dead', 'ambiguous') ORDER BY event_id FOR UPDATE", ids)
		if err != nil {
			return err
		}
		others, err := s.queryIn(ctx, tx, "WHERE event_id = ANY($1) AND state NOT IN ('dead', 'ambiguous')", ids)
		if err != nil {
			return err
		}
		found = append(found, others...)
		byID := map[string]store.Delivery{}
		for _, d := range found {
			byID[d.EventID] = d
		}
		out, err = store.SelectRetries(ids, func(id string) (store.Delivery, bool, error) {
			d, ok := byID[id]
			return d, ok, nil
		})
		if err != nil {
			return err
		}
		return s.queueRetries(ctx, tx, out, now)
	})
	var refused *store.RetryRefusedError
	if errors.As(err, &refused) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("queue retries: %w", err)
	}
	return out, nil
}

// queueRetries turns ds into pending records on the retry queue, pipelined: one round trip for
// all (a `dead retry --all` after a mass failure may name tens of thousands).
func (s *Store) queueRetries(ctx context.Context, tx pgx.Tx, ds []store.Delivery, now time.Time) error {
	b := &pgx.Batch{}
	for _, d := range ds {
		q := store.QueueRetry(d, now)
		data, err := store.EncodeRecord(q)
		if err != nil {
			return err
		}
		b.Queue("UPDATE deliveries SET state = $2, message_id = NULL, updated_at = $3, data = $4, retry = true WHERE event_id = $1",
			q.EventID, string(q.State), q.UpdatedAt.UTC(), data)
	}
	return sendBatch(ctx, tx, b)
}

// RequestRetryAll queues every dead or ambiguous delivery that can be fetched again.
func (s *Store) RequestRetryAll(now time.Time) (queued, notRetryable []store.Delivery, err error) {
	// An operator's change of every dead record, after a mass failure: longer than the lease's
	// statement timeout allows. It locks only dead and ambiguous rows, which the leader does not
	// write, so it holds up nothing.
	ctx, cancel := context.WithTimeout(context.Background(), operatorTimeout)
	defer cancel()
	err = s.unfenced(ctx, func(tx pgx.Tx) error {
		queued, notRetryable = nil, nil
		if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = "+strconv.Itoa(int(operatorTimeout.Milliseconds()))); err != nil {
			return err
		}
		problems, err := s.queryIn(ctx, tx, "WHERE state IN ('dead', 'ambiguous') ORDER BY event_id FOR UPDATE")
		if err != nil {
			return err
		}
		for _, d := range problems {
			if store.WhyNotRetryable(d) != "" {
				notRetryable = append(notRetryable, d)
				continue
			}
			queued = append(queued, d)
		}
		return s.queueRetries(ctx, tx, queued, now)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("queue all dead and ambiguous deliveries for retry: %w", err)
	}
	return queued, notRetryable, nil
}

// RetryQueue returns up to limit event ids queued for retry (all when limit <= 0), in order.
func (s *Store) RetryQueue(limit int) ([]string, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	if limit <= 0 {
		limit = 1 << 30
	}
	rows, err := s.pool.Query(ctx, "SELECT event_id FROM deliveries WHERE retry ORDER BY event_id LIMIT $1", limit)
	if err != nil {
		return nil, fmt.Errorf("read the retry queue: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the retry queue: %w", err)
	}
	return ids, nil
}

// DropRetry removes eventID from the retry queue without touching its record.
func (s *Store) DropRetry(eventID string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE deliveries SET retry = false WHERE event_id = $1", eventID)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove %s from the retry queue: %w", eventID, err)
	}
	return nil
}

// operatorTimeout bounds an operator's change of many records.
const operatorTimeout = 2 * time.Minute

var finalStates = []string{string(store.Sent), string(store.Skipped), string(store.Dead), string(store.Ambiguous)}

// PruneWith deletes final records last updated before olderThan, except those queued for retry,
// at most batch per transaction, calling keepGoing after each; then the marks of codes sent and
// the idempotency keys by their own age.
func (s *Store) PruneWith(olderThan time.Time, batch int, keepGoing func(pruned int) bool) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	total := 0
	for {
		ctx, cancel := s.ctx()
		var n int64
		err := s.write(ctx, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM deliveries WHERE event_id IN (SELECT event_id FROM deliveries
 WHERE state = ANY($1) AND updated_at < $2 AND NOT retry ORDER BY event_id LIMIT $3 FOR UPDATE SKIP LOCKED)`,
				finalStates, olderThan.UTC(), batch)
			n = tag.RowsAffected()
			return err
		})
		cancel()
		if err != nil {
			return total, fmt.Errorf("prune delivery records: %w", err)
		}
		total += int(n)
		if n < int64(batch) {
			break
		}
		if keepGoing != nil && !keepGoing(total) {
			return total, nil
		}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	err := s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM latest WHERE created_at < $1", olderThan.UTC()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM idempotency WHERE accepted_at < $1", time.Now().Add(-store.IdempotencyTTL).UTC())
		return err
	})
	if err != nil {
		return total, fmt.Errorf("prune the marks of codes sent and idempotency keys: %w", err)
	}
	if keepGoing != nil {
		keepGoing(total)
	}
	return total, nil
}
