package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// What operators ask of the store: counts, the dead letters, retries and pruning.
//
// Counts and the list of dead and ambiguous records are derived from the records and kept in
// their own buckets, updated in the same transaction as every record write (putDelivery), so
// Stats reads a few dozen keys instead of decoding every record. A full scan of 100k records
// takes long enough (see BenchmarkStatsFullScan) that calling it every few seconds would cost a
// core's worth of decoding and hold a read transaction that long, which stalls bbolt's remapping
// when the file grows under the writer. The derived buckets carry a stamp, the id of the last
// transaction that kept them: a write by a build that does not know them (a rollback) leaves the
// stamp behind, and then readers fall back to a scan and the next read-write open rebuilds them.

var (
	// bucketCounts maps kind + "\x00" + state to a big-endian uint64 count of records.
	bucketCounts = []byte("counts")
	// bucketProblems indexes records in state Dead or Ambiguous.
	bucketProblems = []byte("problems")
	// bucketRetry holds the ids an operator queued for another delivery attempt.
	bucketRetry = []byte("retry")

	keyDerivedTx = []byte("derived_tx")
)

// RetryReason is the reason a record queued for retry carries until its next attempt.
const RetryReason = "retry requested by operator"

// Stats summarizes the store.
type Stats struct {
	Position
	// Records is the number of delivery records.
	Records int
	ByState map[State]int
	// ByKind counts records per kind and state; records of unhandled event types have kind "".
	ByKind map[string]map[State]int
	// RetryQueued is the number of records an operator queued for retry that the daemon has not
	// settled yet.
	RetryQueued int
}

// update runs fn in a write transaction and stamps the derived buckets as current. Every write
// goes through it (or stamps itself), so the stamp proves no other build wrote since.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return stampDerived(tx)
	})
}

func stampDerived(tx *bolt.Tx) error {
	return tx.Bucket(bucketMeta).Put(keyDerivedTx, binary.BigEndian.AppendUint64(nil, uint64(tx.ID())))
}

// derivedCurrent reports whether the counters and indexes match the records: the stamp names the
// last committed transaction.
func derivedCurrent(tx *bolt.Tx) bool {
	if tx.Bucket(bucketCounts) == nil || tx.Bucket(bucketProblems) == nil || tx.Bucket(bucketRetry) == nil {
		return false
	}
	last := uint64(tx.ID())
	if tx.Writable() {
		last-- // a write transaction's id is the next one
	}
	v := tx.Bucket(bucketMeta).Get(keyDerivedTx)
	return len(v) == 8 && binary.BigEndian.Uint64(v) == last
}

// head is the part of a record the counters, indexes and pruning need.
type head struct {
	Kind      string
	State     State
	UpdatedAt time.Time
	MessageID string
}

// decodeHead reads and checks a record as decodeDelivery does, but without Options.Kinds (the
// writes that read a head have no store at hand): verify checked the kinds at open.
func decodeHead(key, v []byte) (head, error) {
	var rd recordDecoder
	return rd.head(key, v)
}

func (rd *recordDecoder) head(key, v []byte) (head, error) {
	d, err := rd.delivery(key, v, rulesNow(nil))
	if err != nil {
		return head{}, err
	}
	return head{Kind: d.Kind, State: d.State, UpdatedAt: d.UpdatedAt, MessageID: d.MessageID}, nil
}

func countKey(kind string, state State) []byte {
	return []byte(kind + "\x00" + string(state))
}

func addCount(tx *bolt.Tx, kind string, state State, delta int64) error {
	b := tx.Bucket(bucketCounts)
	k := countKey(kind, state)
	var n int64
	if v := b.Get(k); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n = max(n+delta, 0)
	if n == 0 {
		return b.Delete(k)
	}
	return b.Put(k, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

type derived struct {
	counts   map[string]map[State]int
	problems [][]byte
}

// scanDerived computes the counters and the problem index from the records.
func scanDerived(tx *bolt.Tx) (derived, error) {
	d := derived{counts: map[string]map[State]int{}}
	var rd recordDecoder
	err := forEachRecord(tx, func(k, v []byte) error {
		h, err := rd.head(k, v)
		if err != nil {
			return err
		}
		if d.counts[h.Kind] == nil {
			d.counts[h.Kind] = map[State]int{}
		}
		d.counts[h.Kind][h.State]++
		if h.State == Dead || h.State == Ambiguous {
			d.problems = append(d.problems, bytes.Clone(k))
		}
		return nil
	})
	return d, err
}

// rebuildDerived recreates the counters and the problem index from the records, and drops
// queued retries whose record is gone or no longer pending.
func rebuildDerived(tx *bolt.Tx) error {
	d, err := scanDerived(tx)
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bucketCounts, bucketProblems} {
		if err := tx.DeleteBucket(name); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	for kind, states := range d.counts {
		for state, n := range states {
			if err := addCount(tx, kind, state, int64(n)); err != nil {
				return err
			}
		}
	}
	for _, k := range d.problems {
		if err := tx.Bucket(bucketProblems).Put(k, nil); err != nil {
			return err
		}
	}
	retry := tx.Bucket(bucketRetry)
	var stale [][]byte
	err = retry.ForEach(func(k, _ []byte) error {
		v := getRecord(tx, k)
		if v == nil {
			stale = append(stale, bytes.Clone(k))
			return nil
		}
		h, err := decodeHead(k, v)
		if err != nil {
			return err
		}
		if h.State.Final() {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range stale {
		if err := retry.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Stats counts the records per state and per kind and state, with the position. It reads the
// counters kept with every write, so it costs the same for 100 or 100,000 records.
func (s *Store) Stats() (Stats, error) {
	st := Stats{ByState: map[State]int{}, ByKind: map[string]map[State]int{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if st.Position, err = readPosition(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		if r := tx.Bucket(bucketRetry); r != nil {
			st.RetryQueued = r.Stats().KeyN
		}
		add := func(kind string, state State, n int) {
			if st.ByKind[kind] == nil {
				st.ByKind[kind] = map[State]int{}
			}
			st.ByKind[kind][state] += n
			st.ByState[state] += n
			st.Records += n
		}
		if !s.derivedUsable(tx) {
			d, err := scanDerived(tx)
			if err != nil {
				return err
			}
			for kind, states := range d.counts {
				for state, n := range states {
					add(kind, state, n)
				}
			}
			return nil
		}
		return tx.Bucket(bucketCounts).ForEach(func(k, v []byte) error {
			kind, state, ok := strings.Cut(string(k), "\x00")
			if !ok || len(v) != 8 {
				return fmt.Errorf("counter %q is malformed", k)
			}
			add(kind, State(state), int(binary.BigEndian.Uint64(v)))
			return nil
		})
	})
	if err != nil {
		return Stats{}, fmt.Errorf("read store statistics: %w", err)
	}
	return st, nil
}

// Problems returns the dead and ambiguous records in event-id order: those that need an
// operator.
func (s *Store) Problems() ([]Delivery, error) {
	var out []Delivery
	var rd recordDecoder
	r := rulesNow(s.kinds)
	err := s.db.View(func(tx *bolt.Tx) error {
		keys, err := s.problemKeys(tx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			d, err := rd.delivery(k, getRecord(tx, k), r)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dead and ambiguous deliveries: %w", err)
	}
	return out, nil
}

// derivedUsable reports whether the counters and the problem index can be read instead of the
// records.
func (s *Store) derivedUsable(tx *bolt.Tx) bool {
	return !s.derivedStale && derivedCurrent(tx)
}

func (s *Store) problemKeys(tx *bolt.Tx) ([][]byte, error) {
	if !s.derivedUsable(tx) {
		d, err := scanDerived(tx)
		return d.problems, err
	}
	var keys [][]byte
	err := tx.Bucket(bucketProblems).ForEach(func(k, _ []byte) error {
		keys = append(keys, k)
		return nil
	})
	return keys, err
}

// RetryRefusedError lists the event ids a retry request refused, each with the reason. Nothing
// was queued.
type RetryRefusedError struct {
	Refused map[string]string
}

func (e *RetryRefusedError) Error() string {
	ids := make([]string, 0, len(e.Refused))
	for id := range e.Refused {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = id + ": " + e.Refused[id]
	}
	return fmt.Sprintf("nothing was queued for retry; %d of the ids cannot be retried: %s", len(ids), strings.Join(parts, "; "))
}

// whyNotRetryable says why d cannot be queued for retry, or "" when it can.
func whyNotRetryable(d Delivery) string {
	switch {
	case d.State != Dead && d.State != Ambiguous:
		return fmt.Sprintf("it is %s; only dead or ambiguous deliveries can be retried", d.State)
	case IsRequest(d.EventID):
		return "an email the app requested through the send API: what it needs was deleted when it ended, " +
			"so the app must send the request again"
	case d.ObjectID == "":
		return "the record has no WorkOS object id (it was recorded by an older version, or the event " +
			"named none), so it cannot be fetched again without the event"
	}
	return ""
}

// queueRetry turns d into a pending record on the retry queue. A record that was ambiguous keeps
// MaybeDuplicate, so that if the retry sends, the record says the recipient may have two copies.
func queueRetry(tx *bolt.Tx, d Delivery, now time.Time) error {
	d = QueueRetry(d, now)
	if err := putDelivery(tx, d); err != nil {
		return err
	}
	return tx.Bucket(bucketRetry).Put([]byte(d.EventID), nil)
}

// RequestRetry queues dead or ambiguous deliveries for another attempt: each becomes pending
// with its attempts reset, and its id joins the retry queue, all in one transaction. If any id
// is unknown, not dead or ambiguous, or cannot be fetched again, nothing changes and the error
// is a *RetryRefusedError naming each. It returns the records as they were before.
func (s *Store) RequestRetry(now time.Time, ids ...string) ([]Delivery, error) {
	if len(ids) == 0 {
		return nil, errors.New("queue retries: no event ids given")
	}
	var out []Delivery
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		out, err = SelectRetries(ids, func(id string) (Delivery, bool, error) {
			v := getRecord(tx, []byte(id))
			if v == nil {
				return Delivery{}, false, nil
			}
			d, err := decodeDelivery([]byte(id), v, rulesNow(s.kinds))
			return d, err == nil, err
		})
		if err != nil {
			return err
		}
		for _, d := range out {
			if err := queueRetry(tx, d, now); err != nil {
				return err
			}
		}
		return nil
	})
	var refused *RetryRefusedError
	if errors.As(err, &refused) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("queue retries: %w", err)
	}
	return out, nil
}

// RequestRetryAll queues every dead or ambiguous delivery that can be fetched again, in one
// transaction, and returns them as they were; notRetryable are those without an object id,
// left as they are.
func (s *Store) RequestRetryAll(now time.Time) (queued, notRetryable []Delivery, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		queued, notRetryable = nil, nil
		keys, err := s.problemKeys(tx)
		if err != nil {
			return err
		}
		var rd recordDecoder
		r := rulesNow(s.kinds)
		for _, k := range keys {
			d, err := rd.delivery(k, getRecord(tx, k), r)
			if err != nil {
				return err
			}
			if whyNotRetryable(d) != "" {
				notRetryable = append(notRetryable, d)
				continue
			}
			queued = append(queued, d)
		}
		for _, d := range queued {
			if err := queueRetry(tx, d, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("queue all dead and ambiguous deliveries for retry: %w", err)
	}
	return queued, notRetryable, nil
}

// RetryQueue returns up to limit event ids queued for retry (all when limit <= 0), in event-id
// order.
func (s *Store) RetryQueue(limit int) ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRetry)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil && (limit <= 0 || len(ids) < limit); k, _ = c.Next() {
			ids = append(ids, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the retry queue: %w", err)
	}
	return ids, nil
}

// DropRetry removes eventID from the retry queue without touching its record: for an id whose
// record is gone or already final. A delivery that ends final through Save leaves the queue in
// that same transaction.
func (s *Store) DropRetry(eventID string) error {
	err := s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRetry).Delete([]byte(eventID))
	})
	if err != nil {
		return fmt.Errorf("remove %s from the retry queue: %w", eventID, err)
	}
	return nil
}

// pruneScanFactor bounds the records one read transaction of Prune examines, as a multiple of
// the batch, so a store full of young records is walked in short steps too.
const pruneScanFactor = 8

// pruneTxHook, when set by a test, sees the number of records each write transaction of Prune
// deleted.
var pruneTxHook func(deleted int)

// Prune deletes final records (sent, skipped, dead, ambiguous) last updated before olderThan,
// except those queued for retry. It walks the records in short read transactions and deletes at
// most batch records per write transaction, re-checking each inside it, so the daemon's writes
// wait at most one short transaction. It returns how many records it deleted.
func (s *Store) Prune(olderThan time.Time, batch int) (int, error) {
	return s.PruneWith(olderThan, batch, nil)
}

// PruneWith is Prune that calls keepGoing with the running total after each write transaction
// and stops early when it returns false, so a caller can stay responsive and bound the time
// one prune takes; what is left is pruned next time.
func (s *Store) PruneWith(olderThan time.Time, batch int, keepGoing func(pruned int) bool) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	var rd recordDecoder
	prunable := func(tx *bolt.Tx, k, v []byte) (head, bool, error) {
		h, err := rd.head(k, v)
		if err != nil {
			return h, false, err
		}
		ok := h.State.Final() && h.UpdatedAt.Before(olderThan) && tx.Bucket(bucketRetry).Get(k) == nil
		return h, ok, nil
	}
	total := 0
	var after []byte
	for {
		var candidates [][]byte
		done := true
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketDeliveries).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for examined := 0; k != nil; k, v = c.Next() {
				if examined == batch*pruneScanFactor || len(candidates) == batch {
					done = false
					return nil
				}
				examined++
				after = bytes.Clone(k)
				if _, ok, err := prunable(tx, k, v); err != nil {
					return err
				} else if ok {
					candidates = append(candidates, after)
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("prune delivery records: %w", err)
		}
		if len(candidates) > 0 {
			deleted := 0
			err := s.update(func(tx *bolt.Tx) error {
				deleted = 0
				all := tx.Bucket(bucketDeliveries)
				for _, k := range candidates {
					v := all.Get(k)
					if v == nil {
						continue
					}
					h, ok, err := prunable(tx, k, v)
					if err != nil {
						return err
					}
					if !ok {
						continue // changed since the read
					}
					if err := deleteDelivery(tx, k, h); err != nil {
						return err
					}
					deleted++
				}
				return nil
			})
			if err != nil {
				return total, fmt.Errorf("prune delivery records: %w", err)
			}
			if pruneTxHook != nil {
				pruneTxHook(deleted)
			}
			total += deleted
		}
		if done {
			// The marks of the newest codes sent, by the same age (store/latest.go).
			if err := s.update(func(tx *bolt.Tx) error { return pruneLatest(tx, olderThan) }); err != nil {
				return total, fmt.Errorf("prune the marks of codes sent: %w", err)
			}
			// Idempotency keys by their own age: they outlive no promise, and the records they
			// point to may be kept for longer.
			if err := s.update(func(tx *bolt.Tx) error { return pruneIdempotency(tx, time.Now()) }); err != nil {
				return total, fmt.Errorf("prune idempotency keys: %w", err)
			}
		}
		if done || keepGoing != nil && !keepGoing(total) {
			return total, nil
		}
	}
}

// deleteDelivery removes a record and its entries in the derived buckets.
func deleteDelivery(tx *bolt.Tx, key []byte, h head) error {
	if err := tx.Bucket(bucketDeliveries).Delete(key); err != nil {
		return err
	}
	if err := addCount(tx, h.Kind, h.State, -1); err != nil {
		return err
	}
	for _, b := range [][]byte{bucketProblems, bucketRetry} {
		if err := tx.Bucket(b).Delete(key); err != nil {
			return err
		}
	}
	return unindexMessage(tx, key, h.MessageID)
}
