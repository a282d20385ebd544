package store

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group commit. Every bbolt commit costs an fsync, and concurrent deliveries each write twice
// (sending, then final), so the writes of deliveries in flight are gathered into one
// transaction: while one commits, the next ones queue, and the next transaction takes all of
// them. A write still returns only once its transaction is durable, so "recorded before the
// send" and "recorded after it" keep their meaning.
//
// Writes are applied in the order they were queued. That is what keeps the cursor behind the
// records it depends on: the worker queues a final record before any cursor that passes it.
// After a failed write nothing queued later is applied either (the store is then broken and
// every later write fails), so a cursor can never be committed past a record that was not.

// errClosed is returned for writes queued after Close.
var errClosed = errors.New("store is closed")

type writeOp struct {
	fn   func(tx *bolt.Tx) error
	done chan error
}

type committer struct {
	db *bolt.DB

	mu     sync.Mutex
	queue  []*writeOp
	closed bool
	broken error
	wake   chan struct{}
	exited chan struct{}
}

func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, wake: make(chan struct{}, 1), exited: make(chan struct{})}
	go c.loop()
	return c
}

// enqueue queues fn and returns a function that waits for its commit.
func (c *committer) enqueue(fn func(tx *bolt.Tx) error) (wait func() error) {
	op := &writeOp{fn: fn, done: make(chan error, 1)}
	if c == nil { // opened read-only
		op.done <- errors.New("store is open read-only")
		return func() error { return <-op.done }
	}
	c.mu.Lock()
	switch {
	case c.closed:
		op.done <- errClosed
	case c.broken != nil:
		op.done <- fmt.Errorf("not recorded: an earlier write to the store failed: %w", c.broken)
	default:
		c.queue = append(c.queue, op)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return func() error { return <-op.done }
}

func (c *committer) loop() {
	defer close(c.exited)
	for range c.wake {
		for {
			c.mu.Lock()
			batch, closed := c.queue, c.closed
			c.queue = nil
			c.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			c.commit(batch)
		}
	}
}

// commit applies batch in one transaction. If that fails, it applies the writes one by one so
// only the failing one and those after it fail.
func (c *committer) commit(batch []*writeOp) {
	err := c.db.Update(func(tx *bolt.Tx) error {
		for _, op := range batch {
			if err := op.fn(tx); err != nil {
				return err
			}
		}
		return stampDerived(tx)
	})
	if err == nil {
		for _, op := range batch {
			op.done <- nil
		}
		return
	}
	for i, op := range batch {
		err := c.db.Update(func(tx *bolt.Tx) error {
			if err := op.fn(tx); err != nil {
				return err
			}
			return stampDerived(tx)
		})
		if err == nil {
			op.done <- nil
			continue
		}
		op.done <- err
		c.mu.Lock()
		c.broken = err
		rest := append(batch[i+1:], c.queue...)
		c.queue = nil
		c.mu.Unlock()
		for _, later := range rest {
			later.done <- fmt.Errorf("not recorded: an earlier write to the store failed: %w", err)
		}
		return
	}
}

// close applies what is queued, then stops the loop.
func (c *committer) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.exited
}

// SaveAsync queues what Save does and returns a function that waits until it is durable.
// Writes take effect in the order they were queued.
func (s *Store) SaveAsync(d Delivery, cursor string, now time.Time) (wait func() error) {
	w := s.commits.enqueue(func(tx *bolt.Tx) error {
		if err := putDelivery(tx, d); err != nil {
			return err
		}
		if cursor != "" {
			return putCursor(tx.Bucket(bucketMeta), cursor, now)
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

// SetCursorAsync queues what SetCursor does, in order with SaveAsync.
func (s *Store) SetCursorAsync(eventID string, now time.Time) (wait func() error) {
	w := s.commits.enqueue(func(tx *bolt.Tx) error {
		return putCursor(tx.Bucket(bucketMeta), eventID, now)
	})
	return func() error {
		if err := w(); err != nil {
			return fmt.Errorf("set cursor: %w", err)
		}
		return nil
	}
}
