package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/workos-emailer/workos-emailer/store"
)

// The lease. One row per installation names the leader (holder), its epoch and when the lease
// ends, by the database's clock. A standby takes the lease once it has expired, moving the epoch
// on; the leader renews it every fifth of the TTL. Every write of the leader begins with
// fenceSQL, which finds the row only while the epoch is still the leader's, and whose share lock
// makes a takeover wait for that write to end: so an epoch-e write commits only while the row
// says e, and a new leader, whose takeover committed after it, sees it. The leader does not trust
// its lease up to the database's expiry: it stops starting sends at renew_started + TTL*3/4 on
// its own monotonic clock (Term.Trusted), which leaves a quarter of the TTL for clock rates and
// the time a send takes to start.

const (
	acquireSQL = `UPDATE leader SET holder = $2, epoch = epoch + 1, expires_at = clock_timestamp() + $3 * interval '1 millisecond'
 WHERE name = $1 AND (expires_at < clock_timestamp() OR holder = $2) RETURNING epoch`
	renewSQL = `UPDATE leader SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'
 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()`
	resignSQL = `UPDATE leader SET expires_at = '-infinity' WHERE name = $1 AND holder = $2 AND epoch = $3`
	// An import ends the term of whoever leads: the epoch moves on and the lease is free.
	bumpSQL = `UPDATE leader SET epoch = epoch + 1, holder = '', expires_at = '-infinity' WHERE name = $1`
	// Renewing also reads the position's generation: an operator's cursor change reaches an
	// idle leader within a renewal.
	generationSQL = `SELECT generation FROM position WHERE name = $1`
)

// AcquireInterval is how often a standby tries to take the lease: a leader that resigns is
// replaced within it (a cheap UPDATE that finds no row while the lease is held).
const AcquireInterval = 500 * time.Millisecond

// Lease reads the lease row (store.LeaseReader).
func (s *Store) Lease() (store.Lease, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var l store.Lease
	var expires pgtype.Timestamptz
	err := s.pool.QueryRow(ctx, "SELECT holder, epoch, expires_at, expires_at > clock_timestamp() FROM leader WHERE name = $1", s.opts.Name).
		Scan(&l.Holder, &l.Epoch, &expires, &l.Live)
	if err != nil {
		return store.Lease{}, fmt.Errorf("read the lease: %w", err)
	}
	if expires.Valid && expires.InfinityModifier == pgtype.Finite {
		l.ExpiresAt = expires.Time
	}
	if !l.Live {
		l.Holder = ""
	}
	return l, nil
}

// Term is one span of leadership. Done closes when it ends: the lease was lost (another daemon
// took it, or renewing failed until the local trust ran out).
type Term struct {
	s     *Store
	epoch int64

	mu         sync.Mutex
	trustUntil time.Time // monotonic
	// wallUntil is the same deadline on the wall clock: the monotonic clock stops while a VM is
	// suspended or migrated, the wall clock does not. Trusted requires both.
	wallUntil time.Time
	err       error
	done      chan struct{}
	stop      chan struct{}
	stopped   chan struct{}
	released  bool
}

// Epoch is the term's fencing token.
func (t *Term) Epoch() int64 { return t.epoch }

// Done closes when the term ends.
func (t *Term) Done() <-chan struct{} { return t.done }

// Err says why the term ended (nil while it lasts).
func (t *Term) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Trusted reports whether a send may start now: the lease was renewed less than TTL*3/4 ago on
// this host's monotonic clock, and the term has not ended.
func (t *Term) Trusted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	return t.err == nil && now.Before(t.trustUntil) && now.Round(0).Before(t.wallUntil)
}

func (t *Term) end(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
		close(t.done)
	}
}

// ErrLeaseLost is why a term ends when another daemon took the lease.
var ErrLeaseLost = errors.New("the lease was taken over: another instance leads")

// Changes hears that an operator changed the position (cursor set or reset) during the term:
// the pipeline should finish its sends in flight and poll again from the store's position.
func (t *Term) Changes() <-chan struct{} { return t.s.changed }

// TryAcquire takes the lease if it is free (or this daemon's own), once. ok is false when another
// daemon leads.
func (s *Store) TryAcquire(ctx context.Context) (t *Term, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	started := time.Now()
	var epoch int64
	err = s.leasePool.QueryRow(ctx, acquireSQL, s.opts.Name, s.opts.Holder, s.opts.LeaseTTL.Milliseconds()).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("take the lease: %w", err)
	}
	t = &Term{s: s, epoch: epoch, trustUntil: started.Add(s.opts.LeaseTTL * 3 / 4), wallUntil: started.Round(0).Add(s.opts.LeaseTTL * 3 / 4),
		done: make(chan struct{}), stop: make(chan struct{}), stopped: make(chan struct{})}
	select { // a change heard in an earlier term is not this one's
	case <-s.changed:
	default:
	}
	s.commits.startTerm(epoch)
	go t.renew()
	return t, true, nil
}

// Acquire waits until this daemon takes the lease, trying every AcquireInterval, or until ctx
// ends. tried, when set, hears each failed try (the error is nil when another daemon leads).
func (s *Store) Acquire(ctx context.Context, tried func(err error)) (*Term, error) {
	for {
		t, ok, err := s.TryAcquire(ctx)
		if ok {
			return t, nil
		}
		if tried != nil {
			tried(err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(AcquireInterval):
		}
	}
}

func (t *Term) renew() {
	defer close(t.stopped)
	ttl := t.s.opts.LeaseTTL
	every := ttl / 5
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-timer.C:
		}
		started := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), every)
		tag, err := t.s.leasePool.Exec(ctx, renewSQL, t.s.opts.Name, t.s.opts.Holder, t.epoch, ttl.Milliseconds())
		cancel()
		switch {
		case err == nil && tag.RowsAffected() == 1:
			t.mu.Lock()
			t.trustUntil = started.Add(ttl * 3 / 4)
			t.wallUntil = started.Round(0).Add(ttl * 3 / 4)
			t.mu.Unlock()
			var gen int64
			ctx, cancel := context.WithTimeout(context.Background(), every)
			if t.s.leasePool.QueryRow(ctx, generationSQL, t.s.opts.Name).Scan(&gen) == nil && gen != t.s.generation.Load() {
				t.s.notifyChanged()
			}
			cancel()
		case err == nil:
			t.end(ErrLeaseLost)
			return
		default:
			t.mu.Lock()
			out := !time.Now().Before(t.trustUntil)
			t.mu.Unlock()
			if out {
				t.end(fmt.Errorf("could not renew the lease within %s (%w); another instance takes over", ttl*3/4, err))
				return
			}
		}
		timer.Reset(max(0, every-time.Since(started)))
	}
}

// Release ends the term: renewing stops, this handle's writes fail from now on, and a lease
// still held is given up (expires at once), so a standby takes over within a second rather
// than the TTL. Call it after the term's writes are done.
func (t *Term) Release() {
	t.mu.Lock()
	if t.released {
		t.mu.Unlock()
		return
	}
	t.released = true
	t.mu.Unlock()
	close(t.stop)
	<-t.stopped
	t.s.epoch.CompareAndSwap(t.epoch, 0)
	t.end(errors.New("released"))
	ctx, cancel := context.WithTimeout(context.Background(), t.s.opTimeout)
	defer cancel()
	_, _ = t.s.leasePool.Exec(ctx, resignSQL, t.s.opts.Name, t.s.opts.Holder, t.epoch)
}
