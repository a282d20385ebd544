package worker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

type funcSender func(ctx context.Context, m mailer.Message) (string, error)

func (f funcSender) Send(ctx context.Context, m mailer.Message) (string, error) { return f(ctx, m) }

// An interrupt whose caller gave up while the pipeline drained never runs: the caller was told
// nothing changed. One that runs is applied between events, after the send in flight.
func TestInterruptAbandonedIsNeverApplied(t *testing.T) {
	h := newHarness(t)
	h.opts.StopWhenIdle = false
	release, inSend := make(chan struct{}), make(chan struct{}, 1)
	var sending atomic.Bool
	s := funcSender(func(ctx context.Context, m mailer.Message) (string, error) {
		sending.Store(true)
		defer sending.Store(false)
		select {
		case inSend <- struct{}{}:
		default:
		}
		<-release
		return "msg-1", nil
	})
	w := New(h.opts, workosapi.New(testAPIKey, h.wosURL, 2*time.Second, nil), h.store, s, mustTemplates(t, mailer.TemplateOptions{}),
		zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	h.wos.AddCode("magic_auth", "a@example.com", "user_01", time.Now().Add(time.Hour))
	<-inSend

	var ran atomic.Bool
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := w.Interrupt(short, func() error { ran.Store(true); return nil })
	cancelShort()
	if err == nil {
		t.Fatal("an interrupt waiting on a send in flight returned before it")
	}
	close(release)
	// A second interrupt runs after the abandoned one was passed over.
	var duringSend atomic.Bool
	if err := w.Interrupt(context.Background(), func() error { duringSend.Store(sending.Load()); return nil }); err != nil {
		t.Fatal(err)
	}
	if ran.Load() {
		t.Error("the abandoned change ran after its caller was told nothing changed")
	}
	if duringSend.Load() {
		t.Error("a change ran while a send was in flight")
	}
}
