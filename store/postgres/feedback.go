package postgres

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/workos-emailer/workos-emailer/store"
)

// RecordFeedback records SES's report on the delivery whose email has messageID. Any daemon may
// record it, leader or not: it changes only the feedback of a sent record, under its row lock.
func (s *Store) RecordFeedback(messageID string, r store.FeedbackReport) (eventID, kind string, found bool, err error) {
	r = store.CleanFeedbackDetail(r)
	ctx, cancel := s.ctx()
	defer cancel()
	err = s.unfenced(ctx, func(tx pgx.Tx) error {
		var data []byte
		err := tx.QueryRow(ctx, "SELECT event_id, data FROM deliveries WHERE message_id = $1 ORDER BY updated_at DESC LIMIT 1 FOR UPDATE", messageID).
			Scan(&eventID, &data)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		d, err := store.DecodeRecord(eventID, data, nil)
		if err != nil {
			return err
		}
		kind, found = d.Kind, true
		if changed, err := store.ApplyFeedback(&d, r); err != nil || !changed {
			return err
		}
		if data, err = store.EncodeRecord(d); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE deliveries SET data = $2 WHERE event_id = $1", eventID, data)
		return err
	})
	if err != nil {
		return "", "", false, fmt.Errorf("record SES feedback for message %s: %w", messageID, err)
	}
	return eventID, kind, found, nil
}

// Trace returns every delivery to the recipient with hash recipient, newest first.
func (s *Store) Trace(recipient string) ([]store.Delivery, error) {
	out, err := s.query("WHERE recipient = $1 ORDER BY event_id", recipient)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	slices.SortStableFunc(out, func(a, b store.Delivery) int { return b.FirstSeenAt.Compare(a.FirstSeenAt) })
	return out, nil
}

// FeedbackStats counts SES's feedback over the windows SES judges an account by
// (store.CountFeedback).
func (s *Store) FeedbackStats(now time.Time, recent int) (day, last store.FeedbackCounts, err error) {
	// Only what the two windows can count: the last day's, and the last recent sent. The rest
	// of the retention (millions of records at volume) is never read.
	sent, err := s.query(`WHERE event_id IN (
   SELECT event_id FROM deliveries WHERE message_id IS NOT NULL AND state IN ('sent', 'ambiguous') AND updated_at >= $1
   UNION
   (SELECT event_id FROM deliveries WHERE message_id IS NOT NULL AND state IN ('sent', 'ambiguous') ORDER BY updated_at DESC LIMIT $2))
 ORDER BY event_id`, now.Add(-24*time.Hour).UTC(), max(recent, 0))
	if err != nil {
		return day, last, fmt.Errorf("count SES feedback: %w", err)
	}
	all := make([]store.SentEmail, 0, len(sent))
	for _, d := range sent {
		if store.CountsForFeedback(d) {
			all = append(all, store.SentEmail{At: d.UpdatedAt, Feedback: d.Feedback})
		}
	}
	day, last = store.CountFeedback(all, now, recent)
	return day, last, nil
}
