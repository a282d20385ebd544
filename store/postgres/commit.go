package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Group commit, as in the bbolt store (store/commit.go): the writes of the deliveries in flight
// are gathered into one fenced transaction, so a commit (and its fsync on the server) is shared
// by many records. Writes are applied in the order they were queued, and after a failed write
// nothing queued later is applied until the next term (Acquire resets it): a cursor is never
// committed past a record that was not.

// maxBatch bounds the writes one transaction carries.
const maxBatch = 128

type writeOp struct {
	fn   func(ctx context.Context, tx pgx.Tx) error
	done chan error
}

type committer struct {
	s *Store

	mu     sync.Mutex
	queue  []*writeOp
	closed bool
	broken error
	wake   chan struct{}
	exited chan struct{}
}

var errClosed = errors.New("store is closed")

func newCommitter(s *Store) *committer {
	c := &committer{s: s, wake: make(chan struct{}, 1), exited: make(chan struct{})}
	go c.loop()
	return c
}

// enqueue queues fn and returns a function that waits for its commit.
func (c *committer) enqueue(fn func(ctx context.Context, tx pgx.Tx) error) (wait func() error) {
	op := &writeOp{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	switch {
	case c.closed:
		op.done <- errClosed
	case c.broken != nil:
		op.done <- fmt.Errorf("not recorded: an earlier write in this term failed: %w", c.broken)
	default:
		c.queue = append(c.queue, op)
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	return func() error { return <-op.done }
}

// reset lets writes through again: a new term reads its position afresh.
func (c *committer) reset() {
	c.mu.Lock()
	c.broken = nil
	c.mu.Unlock()
}

func (c *committer) loop() {
	defer close(c.exited)
	for {
		c.mu.Lock()
		for len(c.queue) == 0 {
			if c.closed {
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		n := min(len(c.queue), maxBatch)
		batch := c.queue[:n:n]
		c.queue = c.queue[n:]
		c.mu.Unlock()

		ctx, cancel := c.s.ctx()
		err := c.s.write(ctx, func(tx pgx.Tx) error {
			for _, op := range batch {
				if err := op.fn(ctx, tx); err != nil {
					return err
				}
			}
			return nil
		})
		cancel()
		if err != nil {
			c.mu.Lock()
			c.broken = err
			rest := c.queue
			c.queue = nil
			c.mu.Unlock()
			for _, op := range rest {
				op.done <- fmt.Errorf("not recorded: an earlier write in this term failed: %w", err)
			}
		}
		for _, op := range batch {
			op.done <- err
		}
	}
}

func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.exited
}
