package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/workos-emailer/workos-emailer/store"
)

// Import moves an installation into this (empty) database in one transaction: the position, the
// address secret, every record, the once keys, the marks of codes sent, the retry queue, open
// requests and idempotency keys. Records in state sending stay so: the first leader settles
// them as after a crash. A database that has a record or a starting point already is refused,
// so an import cannot mix two installations or run twice. The epoch moves on with it, fencing
// any daemon that leads meanwhile.
func (s *Store) Import(snap store.Snapshot) (int, error) {
	if len(snap.AddressSecret) != 32 {
		return 0, fmt.Errorf("import: the snapshot has no address secret")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Long: the whole copy is one transaction, longer than the lease's statement timeout.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SET LOCAL idle_in_transaction_session_timeout = 0"); err != nil {
			return err
		}
		var records int
		var initialized bool
		if err := tx.QueryRow(ctx, "SELECT (SELECT count(*) FROM deliveries), initialized FROM position WHERE name = $1 FOR UPDATE",
			s.opts.Name).Scan(&records, &initialized); err != nil {
			return err
		}
		if records > 0 || initialized {
			return fmt.Errorf("the PostgreSQL store %s is in use already (%d records, starting point recorded): import only into "+
				"a new database, before any daemon ran with it", s.where, records)
		}
		if _, err := tx.Exec(ctx, bumpSQL, s.opts.Name); err != nil {
			return err
		}
		p := snap.Position
		if _, err := tx.Exec(ctx, `UPDATE position SET cursor = $2, cursor_set_at = $3, since = $4, initialized = $5, address_secret = $6
 WHERE name = $1`, s.opts.Name, p.Cursor, nullTime(p.CursorSetAt), nullTime(p.Since), p.Initialized, snap.AddressSecret); err != nil {
			return err
		}
		retry := map[string]bool{}
		for _, id := range snap.RetryQueue {
			retry[id] = true
		}
		rows := make([][]any, 0, len(snap.Records))
		for _, d := range snap.Records {
			data, err := store.EncodeRecord(d)
			if err != nil {
				return err
			}
			rows = append(rows, []any{d.EventID, d.Kind, string(d.State), int64(0), nullString(d.MessageID), nullString(d.Recipient),
				d.UpdatedAt.UTC(), retry[d.EventID] && !d.State.Final(), data})
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"deliveries"},
			[]string{"event_id", "kind", "state", "epoch", "message_id", "recipient", "updated_at", "retry", "data"},
			pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("copy the records: %w", err)
		}
		for k, id := range snap.Once {
			if _, err := tx.Exec(ctx, "INSERT INTO once_keys (key, event_id) VALUES ($1, $2)", k, id); err != nil {
				return err
			}
		}
		for k, m := range snap.Latest {
			if _, err := tx.Exec(ctx, "INSERT INTO latest (key, event_id, created_at) VALUES ($1, $2, $3)", k, m.EventID, m.CreatedAt.UTC()); err != nil {
				return err
			}
		}
		for id, sealed := range snap.Requests {
			if _, err := tx.Exec(ctx, "INSERT INTO requests (id, sealed) VALUES ($1, $2)", id, sealed); err != nil {
				return err
			}
		}
		for _, e := range snap.Idempotency {
			if _, err := tx.Exec(ctx, "INSERT INTO idempotency (key, accepted_at, fingerprint, request_id) VALUES ($1, $2, $3, $4)",
				e.Key, e.AcceptedAt.UTC(), e.Fingerprint, e.RequestID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("import into %s: %w; nothing was imported", s.where, err)
	}
	s.secret = snap.AddressSecret
	return len(snap.Records), nil
}
