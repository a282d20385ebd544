package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/workos-emailer/workos-emailer/store"
)

// AcceptRequest records a send API request durably: its pending record, its sealed content and
// its idempotency key, in one (fenced) transaction; a key held already is an answer (the request
// holding it, or store.ErrIdempotencyConflict), and then nothing is written.
func (s *Store) AcceptRequest(r store.Request) (id string, replayed bool, err error) {
	if !store.IsRequest(r.ID) || len(r.Sealed) == 0 || len(r.Fingerprint) != 16 && len(r.IdempotencyKey) > 0 {
		return "", false, fmt.Errorf("accept request %q: malformed (the caller's mistake)", r.ID)
	}
	var held string
	var conflict bool
	wait := s.commits.enqueueTx(func(ctx context.Context, tx pgx.Tx, epoch int64) error {
		held, conflict = "", false
		if len(r.IdempotencyKey) > 0 {
			var at time.Time
			var fp []byte
			var holder string
			err := tx.QueryRow(ctx, "SELECT accepted_at, fingerprint, request_id FROM idempotency WHERE key = $1 FOR UPDATE", r.IdempotencyKey).
				Scan(&at, &fp, &holder)
			switch {
			case err == nil && r.AcceptedAt.Sub(at) < store.IdempotencyTTL:
				held, conflict = holder, !bytes.Equal(fp, r.Fingerprint)
				return nil
			case err != nil && !errors.Is(err, pgx.ErrNoRows):
				return err
			}
		}
		d := store.Delivery{EventID: r.ID, Kind: r.Kind, State: store.Pending, EventCreatedAt: r.AcceptedAt, FirstSeenAt: r.AcceptedAt, UpdatedAt: r.AcceptedAt}
		b := &pgx.Batch{}
		if err := s.queueDelivery(b, d, epoch); err != nil {
			return err
		}
		b.Queue("INSERT INTO requests (id, sealed) VALUES ($1, $2)", r.ID, r.Sealed)
		if err := sendBatch(ctx, tx, b); err != nil {
			return err
		}
		if len(r.IdempotencyKey) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO idempotency (key, accepted_at, fingerprint, request_id) VALUES ($1, $2, $3, $4)
 ON CONFLICT (key) DO UPDATE SET accepted_at = EXCLUDED.accepted_at, fingerprint = EXCLUDED.fingerprint, request_id = EXCLUDED.request_id`,
			r.IdempotencyKey, time.UnixMilli(r.AcceptedAt.UnixMilli()).UTC(), r.Fingerprint, r.ID)
		return err
	})
	if err := wait(); err != nil {
		return "", false, fmt.Errorf("record request %s: %w", r.ID, err)
	}
	switch {
	case conflict:
		return held, true, store.ErrIdempotencyConflict
	case held != "":
		return held, true, nil
	}
	return r.ID, false, nil
}

// IdempotentRequest returns the request an Idempotency-Key created within store.IdempotencyTTL
// of now, or ok false; a different fingerprint is store.ErrIdempotencyConflict.
func (s *Store) IdempotentRequest(key, fingerprint []byte, now time.Time) (id string, ok bool, err error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var at time.Time
	var fp []byte
	err = s.pool.QueryRow(ctx, "SELECT accepted_at, fingerprint, request_id FROM idempotency WHERE key = $1", key).Scan(&at, &fp, &id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("read idempotency key: %w", err)
	case now.Sub(at) >= store.IdempotencyTTL:
		return "", false, nil
	case !bytes.Equal(fp, fingerprint):
		return id, true, store.ErrIdempotencyConflict
	}
	return id, true, nil
}

// RequestContent returns a request's sealed content; ok is false once its record is final.
func (s *Store) RequestContent(id string) (sealed []byte, ok bool, err error) {
	ctx, cancel := s.ctx()
	defer cancel()
	err = s.pool.QueryRow(ctx, "SELECT sealed FROM requests WHERE id = $1", id).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read request %s: %w", id, err)
	}
	return sealed, true, nil
}

// OpenRequests lists the requests whose records are not final yet, in id order.
func (s *Store) OpenRequests() ([]string, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id FROM requests ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list open requests: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list open requests: %w", err)
	}
	return ids, nil
}
