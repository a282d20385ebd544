package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/workos-emailer/workos-emailer/store"
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
	queue func(b *pgx.Batch, epoch int64) error
	fn    func(ctx context.Context, tx pgx.Tx, epoch int64) error
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
func (c *committer) enqueue(queue func(b *pgx.Batch, epoch int64) error) (wait func() error) {
	return c.add(&writeOp{queue: queue, done: make(chan error, 1)})
}

// enqueueTx queues a write that reads before it writes.
func (c *committer) enqueueTx(fn func(ctx context.Context, tx pgx.Tx, epoch int64) error) (wait func() error) {
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

// startTerm makes epoch the one writes are fenced by and lets writes through again: a new term
// reads its position afresh. Under the committer's lock, so a batch of the old term that fails
// afterwards cannot break the new one (loop compares the epochs).
func (c *committer) startTerm(epoch int64) {
	c.mu.Lock()
	c.s.epoch.Store(epoch)
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

		epoch := c.s.epoch.Load()
		failed, err := c.commit(batch, epoch)
		if err != nil {
			c.mu.Lock()
			stale := c.s.epoch.Load() != epoch // a term that has ended: its failure is not the next one's
			if !stale {
				c.broken = err
			}
			var rest []*writeOp
			if !stale {
				rest, c.queue = c.queue, nil
			}
			c.mu.Unlock()
			for _, op := range rest {
				op.done <- fmt.Errorf("not recorded: an earlier write in this term failed: %w", err)
			}
		}
		for i, op := range batch {
			switch {
			case i < failed:
				op.done <- nil
			case i == failed:
				op.done <- err
			default:
				op.done <- fmt.Errorf("not recorded: an earlier write in this term failed: %w", err)
			}
		}
	}
}

// retryFor bounds how long a batch that failed on the database's or the network's side is
// tried again: about a lease, after which a standby may lead and the fence answers.
func (c *committer) retryFor() time.Duration { return c.s.opts.LeaseTTL }

// commit applies batch in one fenced transaction. A transient failure (a connection that died,
// the server restarting) is tried again on a new connection, for about a lease: the final
// records of sends SES accepted are worth waiting for, and every write is safe to apply twice
// (an upsert of the same record, a cursor move) except a claim, whose compare-and-set then
// refuses it. When the transaction is refused (fenced, a claim refused, a record that would not
// read back) with several writes in it, they are applied one by one, so that only the refused
// one and those after it fail, as in the bbolt store. It returns how many writes were recorded
// before the one that failed.
func (c *committer) commit(batch []*writeOp, epoch int64) (recorded int, err error) {
	try := func(ops []*writeOp) error {
		deadline := time.Now().Add(c.retryFor())
		wait := 50 * time.Millisecond
		for {
			ctx, cancel := c.s.ctx()
			err := c.s.fenced(ctx, epoch, func(tx pgx.Tx, first *pgx.Batch) error { return runOps(ctx, tx, first, ops, epoch) })
			cancel()
			if err == nil || !transient(err) || time.Now().Add(wait).After(deadline) {
				return err
			}
			time.Sleep(wait)
			wait = min(2*wait, time.Second)
		}
	}
	err = try(batch)
	if err == nil {
		return len(batch), nil
	}
	if len(batch) == 1 || transient(err) || errors.Is(err, store.ErrFenced) {
		return 0, err
	}
	for i, op := range batch {
		if err := try([]*writeOp{op}); err != nil {
			return i, err
		}
	}
	return len(batch), nil // the batch's failure did not come back one by one
}

// runOps applies ops in order, behind the statements already in b (the fence): runs of
// statements as one pipelined batch each.
func runOps(ctx context.Context, tx pgx.Tx, b *pgx.Batch, ops []*writeOp, epoch int64) error {
	flush := func() error {
		err := sendBatch(ctx, tx, b)
		b = &pgx.Batch{}
		return err
	}
	for _, op := range ops {
		if op.queue != nil {
			if err := op.queue(b, epoch); err != nil {
				return err
			}
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := op.fn(ctx, tx, epoch); err != nil {
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
