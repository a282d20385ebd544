// Package sendlimit paces emails to what the Amazon SES account allows. It implements
// worker.SendLimiter:
//
//   - a token bucket (golang.org/x/time/rate) at the account's MaxSendRate from GetAccount, or at
//     mailer.ses.max_send_rate when that is set; the burst is 5% of the rate (at least 1),
//     so no one-second window sees more than the rate plus 5% (plus one for rates under 20/s),
//     leaving room within SES's tolerance for sends a slow commit holds back and lets go together;
//   - throttling answers from SES halve the rate (at most once a second, never below a tenth of
//     the target); after 10 s without throttling it climbs back by 5% of the target per second;
//   - the 24-hour quota: with SentLast24Hours from the last GetAccount reading plus what was sent
//     since, it refuses permits before Max24HourSend would be exceeded, until a fresh reading
//     shows room again.
//
// One reader of GetAccount feeds both this limiter and the metrics: wrap the SES client with
// Source and poll that. Time comes from Options.Now, so tests drive a fake clock.
package sendlimit

import (
	"context"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/workos-emailer/workos-emailer/mailer"
)

// Defaults and tuning.
const (
	// DefaultInitialRate is the rate before the first GetAccount answer when no rate is
	// configured: 1 email/s, the SES sandbox's MaxSendRate, which every account allows. The
	// first reading normally arrives within a second of the start.
	DefaultInitialRate = 1.0
	// DefaultReadEvery is how often the quota is expected to be read.
	DefaultReadEvery = 5 * time.Minute

	decreaseFactor  = 0.5              // a throttling episode halves the rate
	floorFraction   = 0.1              // never below a tenth of the target rate
	decreaseHold    = time.Second      // throttles within this of a decrease are the same episode
	quietPeriod     = 10 * time.Second // recovery starts this long after the last throttle
	recoverFraction = 0.05             // then the rate grows by this share of the target per second
	burstFraction   = 0.05             // burst: 5% of the rate, at least 1: a 1-second window stays within 5% of the rate
	minQuotaRetry   = 10 * time.Second // a refused permit is asked again at the earliest after this
	// A reading older than this says nothing about the rolling 24-hour window any more.
	staleQuota = 24 * time.Hour
)

// Where the target rate comes from.
const (
	SourceConfig  = "config"  // mailer.ses.max_send_rate
	SourceAccount = "account" // SES GetAccount MaxSendRate
	SourceInitial = "initial" // no reading yet: DefaultInitialRate
)

// Options configures a Limiter. Zero values get the defaults.
type Options struct {
	// Rate is the configured rate in emails per second; 0 uses the account's MaxSendRate.
	Rate float64
	// InitialRate applies while Rate is 0 and no GetAccount reading has arrived.
	InitialRate float64
	// ReadEvery is how often the quota is read (Source is polled); a permit refused for the
	// 24-hour quota is asked again about when the next reading is due.
	ReadEvery time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Log gets rate changes and the 24-hour quota stopping and resuming sends; nil: none.
	Log *zap.Logger
}

// Limiter paces sends. Create it with New; it is safe for concurrent use.
type Limiter struct {
	opts   Options
	log    *zap.Logger
	bucket *rate.Limiter

	mu      sync.Mutex
	current float64 // the rate the bucket runs at

	accountRate float64           // MaxSendRate of the last reading; 0: none
	quota       *mailer.SendQuota // last reading; nil: none
	readAt      time.Time         // when the last good reading was asked for
	readAsked   time.Time         // when the last reading (good or not) was asked for
	sentAtRead  uint64            // sentTotal when the last good reading was asked for
	sentTotal   uint64            // sends SES accepted (or may have)
	inflight    int               // permits given and not yet Done
	exhausted   bool              // refusing permits for the 24-hour quota (logged once)

	throttled    bool    // the rate is below the target since SES throttled
	reduced      float64 // the rate set at the last decrease
	lastThrottle time.Time
	lastDecrease time.Time
	throttles    uint64

	waited time.Duration // total wait handed out with permits
}

// New returns a limiter running at the configured rate, or at the initial rate until the first
// quota reading.
func New(opts Options) *Limiter {
	if opts.InitialRate <= 0 {
		opts.InitialRate = DefaultInitialRate
	}
	if opts.ReadEvery <= 0 {
		opts.ReadEvery = DefaultReadEvery
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	l := &Limiter{opts: opts, log: opts.Log}
	target, _ := l.targetLocked()
	l.current = target
	l.bucket = rate.NewLimiter(rate.Limit(target), burstFor(target))
	return l
}

// burstFor is the bucket size at rate r: 50 ms worth, at least one.
func burstFor(r float64) int {
	return max(1, int(math.Floor(r*burstFraction)))
}

// Reserve takes a permit for one email; the caller waits the returned time, sends, and calls
// Done. ok is false while the SES 24-hour quota is used up: no permit is taken and wait is how
// long to leave the email pending before asking again.
func (l *Limiter) Reserve() (wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.opts.Now()
	if !l.roomLocked(now) {
		if !l.exhausted {
			l.exhausted = true
			l.log.Warn("the SES 24-hour sending quota is used up: sending stops and events stay pending "+
				"(not charged an attempt) until a fresh GetAccount reading shows room", l.quotaFieldsLocked()...)
		}
		return l.quotaRetryLocked(now), false
	}
	l.resumedLocked()
	l.applyRateLocked(now)
	wait = l.bucket.ReserveN(now, 1).DelayFrom(now) // burst >= 1, so always ok
	l.inflight++
	l.waited += wait
	return wait, true
}

// Done ends a permit: sent when SES accepted the email or may have (it counts against the
// 24-hour quota), throttled when SES refused it for throttling (the rate goes down).
func (l *Limiter) Done(sent, throttled bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight > 0 {
		l.inflight--
	}
	if sent {
		l.sentTotal++
	}
	if throttled {
		l.throttledLocked(l.opts.Now())
	}
}

// targetLocked is the rate to run at without throttling, and where it comes from.
func (l *Limiter) targetLocked() (float64, string) {
	switch {
	case l.opts.Rate > 0:
		return l.opts.Rate, SourceConfig
	case l.accountRate > 0:
		return l.accountRate, SourceAccount
	}
	return l.opts.InitialRate, SourceInitial
}

// rateAtLocked is the rate at now: the target, or while throttled the reduced rate, which after
// the quiet period climbs back linearly.
func (l *Limiter) rateAtLocked(now time.Time) float64 {
	target, _ := l.targetLocked()
	if !l.throttled {
		return target
	}
	r := l.reduced
	if quiet := now.Sub(l.lastThrottle) - quietPeriod; quiet > 0 {
		r += target * recoverFraction * quiet.Seconds()
	}
	return min(r, target)
}

// applyRateLocked sets the bucket to the rate at now.
func (l *Limiter) applyRateLocked(now time.Time) {
	r := l.rateAtLocked(now)
	if target, _ := l.targetLocked(); l.throttled && r >= target {
		l.throttled = false
		l.log.Info("SES send rate is back to its target after throttling", zap.Float64("rate", r))
	}
	if r == l.current {
		return
	}
	l.current = r
	l.bucket.SetLimitAt(now, rate.Limit(r))
	l.bucket.SetBurstAt(now, burstFor(r))
}

func (l *Limiter) throttledLocked(now time.Time) {
	l.throttles++
	cur := l.rateAtLocked(now)
	l.lastThrottle = now // recovery waits for quiet again
	if l.throttled && now.Sub(l.lastDecrease) < decreaseHold {
		return // the same episode: sends already under way when the rate went down
	}
	target, _ := l.targetLocked()
	l.reduced = max(cur*decreaseFactor, target*floorFraction)
	l.throttled = true
	l.lastDecrease = now
	l.applyRateLocked(now)
	if l.reduced < cur { // not already at the floor
		l.log.Warn("SES throttles sending: send rate lowered", zap.Float64("rate", l.reduced),
			zap.Float64("target_rate", target))
	}
}

// usedLocked is how much of the 24-hour quota is used by the reading's count: SentLast24Hours
// plus what was sent since it was asked for.
func (l *Limiter) usedLocked() float64 {
	return l.quota.SentLast24Hours + float64(l.sentTotal-l.sentAtRead)
}

// limitedLocked says whether a 24-hour quota applies: a fresh reading with a finite quota
// (SES reports an unlimited one as -1).
func (l *Limiter) limitedLocked(now time.Time) bool {
	return l.quota != nil && l.quota.Max24HourSend > 0 && now.Sub(l.readAt) < staleQuota
}

// roomLocked says whether one more email fits in the 24-hour quota, counting the permits in
// flight as sent.
func (l *Limiter) roomLocked(now time.Time) bool {
	return !l.limitedLocked(now) || l.usedLocked()+float64(l.inflight)+1 <= l.quota.Max24HourSend
}

// quotaRetryLocked is how long a refused permit waits: until the next reading is due.
func (l *Limiter) quotaRetryLocked(now time.Time) time.Duration {
	d := l.readAsked.Add(l.opts.ReadEvery).Sub(now)
	return min(max(d, min(minQuotaRetry, l.opts.ReadEvery)), l.opts.ReadEvery)
}

func (l *Limiter) resumedLocked() {
	if l.exhausted {
		l.exhausted = false
		l.log.Info("the SES 24-hour sending quota has room again: sending resumes", l.quotaFieldsLocked()...)
	}
}

func (l *Limiter) quotaFieldsLocked() []zap.Field {
	if l.quota == nil {
		return nil
	}
	return []zap.Field{zap.Float64("max_24_hour_send", l.quota.Max24HourSend),
		zap.Float64("sent_last_24_hours", l.quota.SentLast24Hours),
		zap.Uint64("sent_since_quota_read", l.sentTotal-l.sentAtRead), zap.Int("in_flight", l.inflight),
		zap.Time("quota_read_at", l.readAt)}
}

// QuotaSource reads the SES quota; *mailer.SES is one.
type QuotaSource interface {
	Quota(ctx context.Context) (mailer.SendQuota, error)
}

// Source wraps src so that every reading also updates the limiter: poll the result (the
// metrics' quota poller does) and one reader feeds both.
func (l *Limiter) Source(src QuotaSource) QuotaSource { return quotaReader{l, src} }

type quotaReader struct {
	l   *Limiter
	src QuotaSource
}

func (r quotaReader) Quota(ctx context.Context) (mailer.SendQuota, error) {
	asked, sentBefore := r.l.beginRead()
	q, err := r.src.Quota(ctx)
	if err != nil {
		r.l.readFailed(err)
		return q, err
	}
	r.l.setQuota(q, asked, sentBefore)
	return q, nil
}

// beginRead notes a reading being asked for and what was sent so far: sends that SES accepts
// while the reading is under way count as sent after it, which may count them twice (safe).
func (l *Limiter) beginRead() (time.Time, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.opts.Now()
	l.readAsked = now
	return now, l.sentTotal
}

func (l *Limiter) readFailed(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if target, src := l.targetLocked(); src == SourceInitial {
		l.log.Warn("the SES send rate is unknown: GetAccount failed; sending at the initial rate until it answers "+
			"(allow ses:GetAccount, or set mailer.ses.max_send_rate)", zap.Float64("rate", target), zap.Error(err))
	}
}

func (l *Limiter) setQuota(q mailer.SendQuota, asked time.Time, sentBefore uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.opts.Now()
	l.quota, l.readAt, l.sentAtRead = &q, asked, sentBefore
	if q.MaxSendRate > 0 && q.MaxSendRate != l.accountRate {
		l.accountRate = q.MaxSendRate
		target, src := l.targetLocked()
		l.log.Info("SES account quota read", zap.Float64("max_send_rate", q.MaxSendRate),
			zap.Float64("max_24_hour_send", q.Max24HourSend), zap.Float64("rate", target), zap.String("rate_source", src))
	}
	l.applyRateLocked(now)
	if l.exhausted && l.roomLocked(now) {
		l.resumedLocked()
	}
}

// Status is what the limiter is doing, for metrics and the status command.
type Status struct {
	// Rate is the rate sends are paced at now (emails/s): TargetRate, or less after throttling.
	Rate float64
	// TargetRate is the configured or the account's rate; RateSource says which (Source*).
	TargetRate float64
	RateSource string
	// Throttled: Rate is below TargetRate because SES throttled.
	Throttled bool
	// Throttles counts throttling answers reported.
	Throttles uint64
	// QuotaKnown: a GetAccount reading younger than 24 hours limits the 24-hour sends.
	QuotaKnown bool
	// QuotaExhausted: no permit is given until the 24-hour quota has room.
	QuotaExhausted bool
	// SentSinceQuotaRead counts emails sent (or maybe sent) since the last good reading was
	// asked for (since the start before any).
	SentSinceQuotaRead uint64
	// QuotaReadAt is when the last good reading was asked for; zero: none.
	QuotaReadAt time.Time
	// InFlight counts permits given and not yet Done.
	InFlight int
	// Waited is the total wait handed out with permits.
	Waited time.Duration
}

// Status reports the limiter's state now.
func (l *Limiter) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.opts.Now()
	target, src := l.targetLocked()
	r := l.rateAtLocked(now)
	return Status{
		Rate: r, TargetRate: target, RateSource: src, Throttled: l.throttled && r < target, Throttles: l.throttles,
		QuotaKnown: l.limitedLocked(now), QuotaExhausted: !l.roomLocked(now),
		SentSinceQuotaRead: l.sentTotal - l.sentAtRead, QuotaReadAt: l.readAt,
		InFlight: l.inflight, Waited: l.waited,
	}
}

// SetRate changes the configured rate (mailer.*.max_send_rate, on a reload); 0 follows the
// account's quota again. A rate slowed down after throttling climbs to the new target.
func (l *Limiter) SetRate(r float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts.Rate = r
	l.applyRateLocked(l.opts.Now())
}
