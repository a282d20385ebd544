package worker

import (
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// outage follows one dependency (WorkOS, SES) through a failure that is not any one event's:
// throttling, gateway errors, no answer, a rejected API key, an account that cannot send. Every
// event waiting on it retries with its own backoff, and during a sustained outage that is many
// tries; the log gets one line when the outage starts and one when it ends, the tries in between
// go to debug.
type outage struct {
	name string

	mu          sync.Mutex
	since       time.Time // zero: no outage
	tries       int       // failed tries since
	reason      string    // of the first failure
	recoveredAt time.Time // when the last outage ended
}

// failed records a failed try that began at tryStart. It reports whether this try started the
// outage, for the caller to log it as it sees fit (a rejected key is an error, throttling a
// warning). A try that began before the last outage ended, and failed in it, is that outage's,
// not a new one.
func (o *outage) failed(reason string, tryStart time.Time) (started bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tries++
	if !o.since.IsZero() || tryStart.Before(o.recoveredAt) {
		return false
	}
	o.since, o.reason, o.tries = time.Now(), reason, 1
	return true
}

// recovered ends an outage after an answer that shows the dependency works, logging how long
// it lasted.
func (o *outage) recovered(log *zap.Logger) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		return
	}
	log.Info(o.name+" answers again; the deliveries waiting for it resume",
		zap.Duration("outage", time.Since(o.since).Round(time.Millisecond)), zap.Int("failed_tries", o.tries),
		zap.String("first_reason", o.reason))
	o.since, o.tries, o.reason, o.recoveredAt = time.Time{}, 0, "", time.Now()
}

// logFailure logs a failed try of the dependency, begun at tryStart: at lvl when it starts an
// outage, at debug while the outage goes on.
func (o *outage) logFailure(log *zap.Logger, lvl zapcore.Level, tryStart time.Time, msg, reason string, fields ...zap.Field) {
	fields = append(fields, zap.String("reason", reason))
	if o.failed(reason, tryStart) {
		log.Log(lvl, msg+"; what needs "+o.name+" waits and retries with backoff until it answers again", fields...)
		return
	}
	log.Debug(msg, fields...)
}
