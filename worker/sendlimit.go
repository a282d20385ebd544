package worker

import (
	"context"
	"time"

	"github.com/workos-emailer/workos-emailer/mailer"
)

// SendLimiter paces sends to what SES allows (internal/sendlimit implements it: the account's
// send rate, throttling, the 24-hour quota). The worker asks for a permit once an email is
// rendered and before it records the send as `sending`, so a crash while waiting leaves nothing
// ambiguous; it waits the permit's time (beating the heartbeat, stopping early on shutdown),
// sends, and ends every permit it got with exactly one Done.
type SendLimiter interface {
	// Reserve takes a permit to send one email after wait. ok is false when no email may go
	// out for now (the SES 24-hour quota is used up): no permit is taken, and wait is how long
	// to leave the event pending before trying again.
	Reserve() (wait time.Duration, ok bool)
	// Done ends a permit. sent: SES accepted the email, or may have (it counts against the
	// 24-hour quota). throttled: SES refused it for throttling (the pace slows down).
	Done(sent, throttled bool)
}

// quotaReason is the reason of an event left pending because the 24-hour quota is used up.
const quotaReason = "the SES 24-hour sending quota is used up: waiting for it to free up (not counted as an attempt)"

// sendPermit waits for the limiter's permit to send rec's email. ok false means: do not send
// now, return res instead (pending, not charged). With ok true the caller must end the permit:
// with sendDone after the send, or releasePermit when it does not send after all.
func (w *Worker) sendPermit(ctx context.Context) (res result, ok bool) {
	lim := w.opts.Limiter
	if lim == nil {
		return result{}, true
	}
	wait, ok := lim.Reserve()
	if !ok {
		return result{outcome: retry, reason: quotaReason, retryAfter: wait, unavailable: true}, false
	}
	if wait <= 0 {
		return result{}, true
	}
	if !w.wait(ctx, wait) || ctx.Err() != nil {
		lim.Done(false, false)
		return result{outcome: retry, reason: "stopped before sending", unavailable: true}, false
	}
	return result{}, true
}

// releasePermit ends a permit whose email was not sent.
func (w *Worker) releasePermit() {
	if lim := w.opts.Limiter; lim != nil {
		lim.Done(false, false)
	}
}

// sendDone ends the permit of a send that returned err.
func (w *Worker) sendDone(err error) {
	if lim := w.opts.Limiter; lim != nil {
		c := mailer.ClassOf(err)
		lim.Done(err == nil || c == mailer.Ambiguous, err != nil && mailer.Throttled(err))
	}
}
