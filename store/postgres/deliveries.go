package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/workos-emailer/workos-emailer/store"
)

// ErrClaimed means a write would have taken over a delivery another term claimed, or claimed
// one twice: the compare-and-set a claim is refused it. Nothing of the transaction was written.
var ErrClaimed = errors.New("the delivery's record was claimed by another term")

// nullTime is t for a nullable timestamptz column.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Position reads where polling resumes.
func (s *Store) Position() (store.Position, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	p, err := s.position(ctx, s.pool)
	if err != nil {
		return store.Position{}, fmt.Errorf("read cursor: %w", err)
	}
	return p, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Store) position(ctx context.Context, q querier) (store.Position, error) {
	var p store.Position
	var setAt, since *time.Time
	err := q.QueryRow(ctx, "SELECT cursor, cursor_set_at, since, initialized FROM position WHERE name = $1", s.opts.Name).
		Scan(&p.Cursor, &setAt, &since, &p.Initialized)
	if err != nil {
		return store.Position{}, err
	}
	if setAt != nil {
		p.CursorSetAt = setAt.UTC()
	}
	if since != nil {
		p.Since = since.UTC()
	}
	return p, nil
}

// InitPosition records the starting point of a store that has none yet and returns the
// position in force. A daemon's pipeline calls it at the start of each of its terms: the
// position's generation is then the one its cursor moves are conditioned on.
func (s *Store) InitPosition(since time.Time) (store.Position, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var p store.Position
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE position SET initialized = true, since = $2 WHERE name = $1 AND NOT initialized", s.opts.Name, nullTime(since))
		if err != nil {
			return err
		}
		var gen int64
		if err := tx.QueryRow(ctx, "SELECT generation FROM position WHERE name = $1", s.opts.Name).Scan(&gen); err != nil {
			return err
		}
		if p, err = s.position(ctx, tx); err != nil {
			return err
		}
		s.generation.Store(gen)
		return nil
	})
	if err != nil {
		return store.Position{}, fmt.Errorf("record starting point: %w", err)
	}
	return p, nil
}

// ResetCursor forgets the cursor: polling reads events from since (backfill). The generation
// moves on: the leader finishes its sends in flight and polls from since (operatorChange).
func (s *Store) ResetCursor(since time.Time) error {
	ctx, cancel := s.ctx()
	defer cancel()
	err := s.operatorChange(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE position SET cursor = '', cursor_set_at = NULL, since = $2, initialized = true,
 generation = generation + 1 WHERE name = $1`, s.opts.Name, nullTime(since))
		return err
	})
	if err != nil {
		return fmt.Errorf("reset cursor: %w", err)
	}
	return nil
}

// SetCursor makes polling resume after eventID: an operator's change, which moves the
// generation on (ResetCursor). A daemon's pipeline moves its cursor with SetCursorAsync.
func (s *Store) SetCursor(eventID string, now time.Time) error {
	if err := store.CheckCursor(eventID); err != nil {
		return fmt.Errorf("set cursor: %w", err)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	err := s.operatorChange(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE position SET cursor = $2, cursor_set_at = $3, initialized = true,
 generation = generation + 1 WHERE name = $1`, s.opts.Name, eventID, now.UTC())
		return err
	})
	if err != nil {
		return fmt.Errorf("set cursor: %w", err)
	}
	return nil
}

// operatorChange runs an operator's change of the position. The leader need not be stopped for
// it: its pipeline holds the cursor in memory, but every cursor move it makes is conditioned on
// the generation it started from (putCursor), so it can never overwrite the change; it notices
// the new generation (Term.Changes) and polls again from the store's position once its sends in
// flight are recorded. From a daemon's handle (the control socket, between two terms of its
// pipeline) the change is a fenced write.
func (s *Store) operatorChange(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if s.opts.Daemon {
		return s.write(ctx, fn)
	}
	return s.unfenced(ctx, fn)
}

// queueCursor queues the pipeline's own cursor move. It is dropped, not failed, when an operator
// changed the position since the pipeline's term began: the records of the same transaction
// still commit, and the term ends to poll from the operator's position.
func (s *Store) queueCursor(b *pgx.Batch, eventID string, now time.Time) error {
	if err := store.CheckCursor(eventID); err != nil {
		return err
	}
	b.Queue("UPDATE position SET cursor = $2, cursor_set_at = $3, initialized = true WHERE name = $1 AND generation = $4",
		s.opts.Name, eventID, now.UTC(), s.generation.Load()).Exec(func(ct pgconn.CommandTag) error {
		if ct.RowsAffected() == 0 {
			s.notifyChanged()
		}
		return nil
	})
	return nil
}

// notifyChanged tells the term that the position was changed by an operator.
func (s *Store) notifyChanged() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// SetCursorAsync queues the leader's cursor move, in order with SaveAsync.
func (s *Store) SetCursorAsync(eventID string, now time.Time) (wait func() error) {
	w := s.commits.enqueue(func(b *pgx.Batch, _ int64) error { return s.queueCursor(b, eventID, now) })
	return func() error {
		if err := w(); err != nil {
			return fmt.Errorf("set cursor: %w", err)
		}
		return nil
	}
}

// Delivery returns the record for eventID, if any.
func (s *Store) Delivery(eventID string) (store.Delivery, bool, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var data []byte
	err := s.pool.QueryRow(ctx, "SELECT data FROM deliveries WHERE event_id = $1", eventID).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Delivery{}, false, nil
	}
	if err == nil {
		var d store.Delivery
		if d, err = store.DecodeRecord(eventID, data, s.opts.Kinds); err == nil {
			return d, true, nil
		}
	}
	return store.Delivery{}, false, fmt.Errorf("read delivery %s: %w", eventID, err)
}

// Save writes d and, when cursor is not empty, moves the cursor to it in the same transaction.
func (s *Store) Save(d store.Delivery, cursor string, now time.Time) error {
	return s.SaveAsync(d, cursor, now)()
}

// SaveAsync queues what Save does and returns a function that waits until it is committed.
func (s *Store) SaveAsync(d store.Delivery, cursor string, now time.Time) (wait func() error) {
	w := s.commits.enqueue(func(b *pgx.Batch, epoch int64) error {
		if err := s.queueDelivery(b, d, epoch); err != nil {
			return err
		}
		if cursor != "" {
			return s.queueCursor(b, cursor, now)
		}
		return nil
	})
	return func() error {
		if err := w(); err != nil {
			return fmt.Errorf("record delivery %s as %s: %w", d.EventID, d.State, err)
		}
		return nil
	}
}

// upsertSQL writes a record unless the compare-and-set of a claim refuses it: no write touches a
// record a newer epoch wrote, and a claim (the new state is sending) takes only a record that is
// absent, pending, or sending in an older epoch (an interrupted send resent), never a final one
// nor one being sent in this epoch already. $9: the new state is final (it leaves the retry
// queue).
const upsertSQL = `INSERT INTO deliveries (event_id, kind, state, epoch, message_id, recipient, updated_at, data)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
 ON CONFLICT (event_id) DO UPDATE SET kind = EXCLUDED.kind, state = EXCLUDED.state, epoch = EXCLUDED.epoch,
 message_id = EXCLUDED.message_id, recipient = EXCLUDED.recipient, updated_at = EXCLUDED.updated_at, data = EXCLUDED.data,
 retry = deliveries.retry AND NOT $9
 WHERE deliveries.epoch <= EXCLUDED.epoch
   AND NOT (EXCLUDED.state = 'sending' AND (deliveries.state IN ('sent', 'skipped', 'dead', 'ambiguous')
        OR deliveries.state = 'sending' AND deliveries.epoch = EXCLUDED.epoch))`

// queueDelivery queues the write of d in epoch's name, with what is derived from it.
func (s *Store) queueDelivery(b *pgx.Batch, d store.Delivery, epoch int64) error {
	data, err := store.EncodeRecord(d)
	if err != nil {
		return err
	}
	final := d.State.Final()
	b.Queue(upsertSQL, d.EventID, d.Kind, string(d.State), epoch, nullString(d.MessageID), nullString(d.Recipient),
		d.UpdatedAt.UTC(), data, final).Exec(func(ct pgconn.CommandTag) error {
		if ct.RowsAffected() == 0 {
			return fmt.Errorf("record %s as %s in epoch %d: %w (a newer epoch wrote it, it is final, or it is being sent already)",
				d.EventID, d.State, epoch, ErrClaimed)
		}
		return nil
	})
	if d.OnceKey != "" {
		switch take, release := store.HoldsOnce(d.State); {
		case take:
			b.Queue("INSERT INTO once_keys (key, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", d.OnceKey, d.EventID)
		case release:
			b.Queue("DELETE FROM once_keys WHERE key = $1 AND event_id = $2", d.OnceKey, d.EventID)
		}
	}
	if store.MarksLatest(d) {
		at := time.UnixMilli(d.EventCreatedAt.UnixMilli()).UTC()
		b.Queue(`INSERT INTO latest (key, event_id, created_at) VALUES ($1, $2, $3)
 ON CONFLICT (key) DO UPDATE SET event_id = EXCLUDED.event_id, created_at = EXCLUDED.created_at
 WHERE latest.created_at < EXCLUDED.created_at OR latest.created_at = EXCLUDED.created_at AND latest.event_id COLLATE "C" < EXCLUDED.event_id COLLATE "C"`,
			d.SupersedeKey, d.EventID, at)
	}
	if final && store.IsRequest(d.EventID) {
		b.Queue("DELETE FROM requests WHERE id = $1", d.EventID)
	}
	return nil
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// OnceHolder returns the event id holding key, or "" if none does.
func (s *Store) OnceHolder(key string) (string, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var holder string
	err := s.pool.QueryRow(ctx, "SELECT event_id FROM once_keys WHERE key = $1", key).Scan(&holder)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	return holder, nil
}

// LatestSent returns the newest event whose email of key went out, or may have.
func (s *Store) LatestSent(key string) (eventID string, createdAt time.Time, ok bool, err error) {
	ctx, cancel := s.ctx()
	defer cancel()
	err = s.pool.QueryRow(ctx, "SELECT event_id, created_at FROM latest WHERE key = $1", key).Scan(&eventID, &createdAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, fmt.Errorf("read %s: %w", key, err)
	}
	return eventID, createdAt.UTC(), true, nil
}

// AddressSecret is the key for hashing addresses (store.Delivery.SupersedeKey, Recipient).
func (s *Store) AddressSecret() []byte { return slices.Clone(s.secret) }

// RecipientHash is store.HashRecipient with this store's secret.
func (s *Store) RecipientHash(address string) string { return store.HashRecipient(s.secret, address) }

// Interrupted returns the records in state sending: sends a term that ended may have made.
func (s *Store) Interrupted() ([]store.Delivery, error) {
	out, err := s.query("WHERE state = 'sending' ORDER BY event_id")
	if err != nil {
		return nil, fmt.Errorf("list interrupted sends: %w", err)
	}
	return out, nil
}

// ForEach calls fn for every delivery record in event-id order.
func (s *Store) ForEach(fn func(store.Delivery) error) error {
	rows, err := s.pool.Query(context.Background(), "SELECT event_id, data FROM deliveries ORDER BY event_id")
	if err != nil {
		return fmt.Errorf("read delivery records: %w", err)
	}
	defer rows.Close()
	var id string
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &data}, func() error {
		d, err := store.DecodeRecord(id, data, s.opts.Kinds)
		if err != nil {
			return err
		}
		return fn(d)
	})
	return err
}

// query reads the records a WHERE (and ORDER) clause selects.
func (s *Store) query(where string, args ...any) ([]store.Delivery, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	return s.queryIn(ctx, s.pool, where, args...)
}

type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *Store) queryIn(ctx context.Context, q queryer, where string, args ...any) ([]store.Delivery, error) {
	rows, err := q.Query(ctx, "SELECT event_id, data FROM deliveries "+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Delivery
	var id string
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &data}, func() error {
		d, err := store.DecodeRecord(id, data, s.opts.Kinds)
		if err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	return out, err
}
