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
// by many records. Each write is a few statements queued on one pgx.Batch, which pipelines them:
// the fence and every record of a transaction reach the server in one round trip, so a batch
// costs about as much as one record. (A write that must read before it decides, AcceptRequest,
// runs on its own in the same transaction, in its turn.) Writes are applied in the order they
// were queued, and after a failed write nothing queued later is applied until the next term
// (Acquire resets it): a cursor is never committed past a record that was not.

// maxBatch bounds the writes one transaction carries.
const maxBatch = 128

type writeOp struct {
	// queue adds the write's statements to the batch; fn, when queue is nil, runs the write
	// in the transaction by itself.
	queue func(b *pgx.Batch) error
	fn    func(ctx context.Context, tx pgx.Tx) error
	done  chan error
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

// enqueue queues a write of statements and returns a function that waits for its commit.
func (c *committer) enqueue(queue func(b *pgx.Batch) error) (wait func() error) {
	return c.add(&writeOp{queue: queue, done: make(chan error, 1)})
}

// enqueueTx queues a write that reads before it writes.
func (c *committer) enqueueTx(fn func(ctx context.Context, tx pgx.Tx) error) (wait func() error) {
	return c.add(&writeOp{fn: fn, done: make(chan error, 1)})
}

func (c *committer) add(op *writeOp) (wait func() error) {
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
		err := c.s.fenced(ctx, func(tx pgx.Tx, first *pgx.Batch) error { return runOps(ctx, tx, first, batch) })
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

// runOps applies ops in order, behind the statements already in b (the fence): runs of
// statements as one pipelined batch each.
func runOps(ctx context.Context, tx pgx.Tx, b *pgx.Batch, ops []*writeOp) error {
	flush := func() error {
		err := sendBatch(ctx, tx, b)
		b = &pgx.Batch{}
		return err
	}
	for _, op := range ops {
		if op.queue != nil {
			if err := op.queue(b); err != nil {
				return err
			}
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := op.fn(ctx, tx); err != nil {
			return err
		}
	}
	return flush()
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
