package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/store"
)

// Leadership: with a store several daemons share (the PostgreSQL store), one of them delivers at
// a time. Run then works in terms: it waits to take the lease, delivers until the term ends (the
// lease was lost, an operator's change fenced it, or the store failed), lets the sends in flight
// finish and be recorded (their writes are fenced: a term that was taken over cannot commit),
// gives the lease up and waits again. With the bbolt store the file lock is the leadership and
// the one term never ends.

// Leadership hands out terms; nil (Options.Leadership) means this daemon always leads.
type Leadership interface {
	// Acquire waits until this daemon leads, or ctx ends; tried hears each try that did not
	// take the lease (err nil: another daemon leads).
	Acquire(ctx context.Context, tried func(err error)) (Term, error)
}

// LeadershipOf is the Leadership of a store whose Acquire returns its own term type (the
// PostgreSQL store's *postgres.Term).
func LeadershipOf[T Term](acquire func(ctx context.Context, tried func(error)) (T, error)) Leadership {
	return leadershipFunc[T](acquire)
}

type leadershipFunc[T Term] func(context.Context, func(error)) (T, error)

func (f leadershipFunc[T]) Acquire(ctx context.Context, tried func(error)) (Term, error) {
	t, err := f(ctx, tried)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Term is one span of leadership.
type Term interface {
	Epoch() int64
	// Done closes when the term ends; Err says why.
	Done() <-chan struct{}
	Err() error
	// Trusted reports whether a send may start now (the lease is surely still held).
	Trusted() bool
	// Release gives the lease up; the term's writes are over.
	Release()
	// Changes hears that an operator changed the position (cursor set or reset) in the store
	// during the term: the pipeline then polls again from it, once its sends in flight are
	// recorded (an interrupt that changes nothing itself).
	Changes() <-chan struct{}
}

// LeadershipObserver, when the Observer has it, hears the term changes (metrics).
type LeadershipObserver interface {
	Leading(epoch int64, leading bool)
}

// Role is what the daemon does now.
type Role string

const (
	RoleLeader  Role = "leader"  // delivering
	RoleStandby Role = "standby" // another daemon leads; this one takes over when it stops
	RoleNone    Role = "none"    // cannot reach the store to tell
)

// leadership is the worker's state of its terms.
type leadership struct {
	term atomic.Pointer[Term]
	// role is a Role: leader in a term, standby or none between terms.
	role atomic.Value
}

// Role reports whether this daemon leads now (always, without Options.Leadership).
func (w *Worker) Role() Role {
	if w.opts.Leadership == nil {
		return RoleLeader
	}
	if r, ok := w.lead.role.Load().(Role); ok {
		return r
	}
	return RoleNone
}

// mayStartSend reports whether this daemon may start a send now: it has no leadership to lose,
// or its term is surely still held. A send is never started once the term may have been taken
// over.
func (w *Worker) mayStartSend() bool {
	if w.opts.Leadership == nil {
		return true
	}
	t := w.lead.term.Load()
	return t != nil && (*t).Trusted()
}

// errNotTrusted ends a term whose lease may have run out before a send started.
var errNotTrusted = fmt.Errorf("the lease may have expired (it could not be renewed in time), so no send is started: %w", store.ErrFenced)

// runTerms is Run with leadership: terms until ctx ends.
func (w *Worker) runTerms(ctx context.Context) error {
	lastWhy := ""
	tried := func(err error) {
		role, why := RoleStandby, "another instance leads"
		if err != nil {
			role, why = RoleNone, err.Error()
		}
		w.lead.role.Store(role)
		if why != lastWhy {
			if err != nil {
				w.log.Warn("cannot reach the store to take the lease; retrying", zap.Error(err))
			} else {
				w.log.Info("standing by: another instance leads; taking over when its lease ends")
			}
			lastWhy = why
		}
	}
	failures := 0 // terms in a row that the store failed
	for {
		if failures > 0 {
			// A store that fails at once must not spin: leave the lease to the others a while.
			if !w.wait(ctx, min(time.Second<<min(failures-1, 5), 30*time.Second)) {
				return nil
			}
		}
		term, err := w.opts.Leadership.Acquire(ctx, tried)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		lastWhy = ""
		started := time.Now()
		w.lead.term.Store(&term)
		w.lead.role.Store(RoleLeader)
		w.observeLeading(term.Epoch(), true)
		w.log.Info("leading: took the lease", zap.Int64("epoch", term.Epoch()))
		termCtx, end := context.WithCancel(ctx)
		go func() {
			for {
				select {
				case <-term.Done():
					end()
					return
				case <-term.Changes():
					if err := w.Interrupt(termCtx, func() error { return nil }); err == nil {
						w.log.Info("an operator changed the cursor in the store; polling from it (the sends in flight were recorded first)")
					}
				case <-termCtx.Done():
					return
				}
			}
		}()
		err = w.runTerm(termCtx)
		ended := termCtx.Err() != nil // the term, or the daemon, ended it
		end()
		why := term.Err() // before Release, which ends every term
		term.Release()
		w.lead.term.Store(nil)
		w.lead.role.Store(RoleStandby)
		w.observeLeading(term.Epoch(), false)
		fields := []zap.Field{zap.Int64("epoch", term.Epoch()), zap.Duration("led_for", time.Since(started).Round(time.Millisecond))}
		if time.Since(started) > time.Minute {
			failures = 0 // it worked for a while
		}
		switch {
		case err == nil && !ended:
			w.log.Info("stopped leading: the stream is drained (StopWhenIdle)", fields...)
			return nil
		case ctx.Err() != nil:
			w.log.Info("stopped leading: shutting down; the lease is given up for a standby", fields...)
			return nil
		case err != nil && !errors.Is(err, store.ErrFenced):
			failures++
			w.log.Error("stopped leading: the store failed; standing by and trying again", append(fields, zap.Error(err))...)
		case why != nil:
			failures = 0
			w.log.Warn("stopped leading: "+why.Error(), fields...)
		default:
			failures = 0
			w.log.Warn("stopped leading: fenced (another instance took over the lease)", fields...)
		}
	}
}

func (w *Worker) observeLeading(epoch int64, leading bool) {
	if o, ok := w.obs.(LeadershipObserver); ok {
		o.Leading(epoch, leading)
	}
}
