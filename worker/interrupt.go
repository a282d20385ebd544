package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// An interrupt is an operator's change that the event pipeline must not run beside: moving the
// cursor (`cursor set`, `cursor reset` through the control socket). The pipeline holds the
// cursor in memory and moves it over each finished prefix, so a cursor written under it would
// be overwritten by its next move. Run therefore ends the pipeline's term the way a shutdown
// does (nothing new starts, sends in flight finish and are recorded, the cursor is durable),
// runs the change, and starts a new term from the store's position. The emails on request run
// on beside it: they do not follow the cursor.

// ErrNotRunning means Run is not delivering (stopping, or stopped), so an interrupt cannot be
// applied now. Before Run starts, Interrupt waits for it.
var ErrNotRunning = errors.New("the daemon's event pipeline is not running (it is stopping)")

type interrupt struct {
	change func() error
	// state: Run runs change only if it moves pending to running first; a caller that gives up
	// moves pending to abandoned, and one that loses that race waits for the change's end.
	state atomic.Int32
	done  chan error // buffered: Run never waits for the caller
}

const (
	interruptPending int32 = iota
	interruptRunning
	interruptAbandoned
)

// Interrupt runs change between two terms of the event pipeline, with no event in flight, and
// returns its error. Polling resumes from the store's position afterwards, so change may move
// the cursor. It waits until ctx ends for the pipeline to stop (sends in flight finish first:
// seconds, or up to a send's timeout).
func (w *Worker) Interrupt(ctx context.Context, change func() error) error {
	in := &interrupt{change: change, done: make(chan error, 1)}
	select {
	case w.interrupts <- in:
	case <-w.stopped:
		return ErrNotRunning
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotRunning, ctx.Err())
	}
	select {
	case err := <-in.done:
		return err
	case <-ctx.Done():
		if in.state.CompareAndSwap(interruptPending, interruptAbandoned) {
			return fmt.Errorf("waiting for the event pipeline to stop between events: %w", ctx.Err())
		}
		return <-in.done // already running: its outcome is the answer
	}
}

// apply runs the change unless its caller gave up, and answers.
func (in *interrupt) apply() {
	if in.state.CompareAndSwap(interruptPending, interruptRunning) {
		in.done <- in.change()
	}
}

// refuse answers ErrNotRunning unless the caller gave up.
func (in *interrupt) refuse() {
	if in.state.CompareAndSwap(interruptPending, interruptRunning) {
		in.done <- ErrNotRunning
	}
}

// term runs the pipeline from the store's position until ctx ends, the stream is drained
// (StopWhenIdle), the store fails, or an interrupt arrives; it returns that interrupt, nil for
// the others.
func (w *Worker) term(ctx context.Context, first bool) (*interrupt, error) {
	pos, err := w.store.InitPosition(w.opts.StartSince)
	if err != nil {
		return nil, err
	}
	if !pos.CursorSetAt.IsZero() {
		w.obs.CursorMoved(pos.CursorSetAt)
	}
	ctx, end := context.WithCancel(ctx)
	defer end()
	var in *interrupt
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case in = <-w.interrupts:
			end()
		case <-ctx.Done():
		}
	}()
	w.logPolling(pos, first)
	err = w.dispatch(ctx, pos)
	end()
	<-watched
	return in, err
}
