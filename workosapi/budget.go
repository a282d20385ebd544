package workosapi

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Budget is the one allowance of WorkOS requests a process makes: every call (list, Get,
// organization and user names), from every goroutine, waits for a token first. The customer's
// own app signs users in with the same API key and environment, so a backfill must leave it
// its share: WorkOS allows 6,000 requests per 60 s per key and 1,000 user-management reads per
// 10 s per environment.
//
// A 429 pauses every call until its Retry-After (a jittered backoff without one), not only
// the one that got it, and halves the rate; a run of answers that are server errors or no
// answer at all pauses likewise, so that an outage does not end in a thundering herd. Once
// WorkOS has been quiet for a while the rate climbs back in small steps.
type Budget struct {
	max rate.Limit
	lim *rate.Limiter
	// queue admits ordinary calls to the limiter a few at a time, so that an urgent call (the
	// live reader's) waits behind at most that many reservations, not behind every delivery.
	queue chan struct{}
	log   *zap.Logger
	obs   RequestObserver
	now   func() time.Time

	mu          sync.Mutex
	pausedUntil time.Time
	troubleAt   time.Time // the last 429 or failed answer
	throttledAt time.Time // the last 429
	loweredAt   time.Time
	raisedAt    time.Time
	throttles   int // 429s in a row (those that come together count once), for the backoff without a Retry-After
	failures    int // server errors or no answer in a row
	limited     bool
	total429    int64
	pausedFor   time.Duration // time every call was held, in all
}

const (
	// minRate is the floor the rate is lowered to: slow, but never stopped.
	minRate = rate.Limit(1)
	// quietBeforeRaise: the rate climbs back only after WorkOS has answered this long without a
	// 429 or a failure, by a tenth of the budget every raiseStep.
	quietBeforeRaise = 10 * time.Second
	raiseStep        = 5 * time.Second
	// lowerEvery: the 429s that arrive together (every call in flight when the limit hit) lower
	// the rate once.
	lowerEvery = time.Second
	// failuresBeforePause: one server error may be the object's; two in a row are WorkOS's.
	failuresBeforePause = 2
	maxPause            = time.Minute
)

// BudgetOptions configure a Budget.
type BudgetOptions struct {
	// PerSecond is workos.max_requests_per_second; 0 or less: no limit (tests and tools), but
	// 429s and failures still pause every call.
	PerSecond float64
	// Log, when set, says when WorkOS starts and stops limiting us.
	Log *zap.Logger
	// Observer, when set, counts every request by endpoint and result (metrics).
	Observer RequestObserver
}

// RequestObserver counts WorkOS requests. endpoint is one of a fixed set ("list_events",
// "get_magic_auth", ...), result one of "ok", "429", "4xx", "5xx", "no_answer".
type RequestObserver interface {
	WorkOSRequest(endpoint, result string)
}

// NewBudget builds the budget every WorkOS call of the process shares.
func NewBudget(opts BudgetOptions) *Budget {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	max := rate.Limit(opts.PerSecond)
	if opts.PerSecond <= 0 {
		max = rate.Inf
	}
	return &Budget{max: max, lim: rate.NewLimiter(max, burstFor(max)), queue: make(chan struct{}, ordinaryInLine),
		log: log, obs: opts.Observer, now: time.Now}
}

// ordinaryInLine is how many ordinary calls may hold a place in the limiter's line at once.
const ordinaryInLine = 2

type urgentKey struct{}

// Urgent marks ctx's calls as urgent: they go ahead of ordinary calls waiting for the budget
// (the live reader's, for codes created now while a backlog is worked through).
func Urgent(ctx context.Context) context.Context { return context.WithValue(ctx, urgentKey{}, true) }

func isUrgent(ctx context.Context) bool { v, _ := ctx.Value(urgentKey{}).(bool); return v }

// burstFor lets a second's worth of requests go at once, as WorkOS's windows allow, and no
// more.
func burstFor(r rate.Limit) int {
	if r == rate.Inf {
		return 1
	}
	return max(1, int(r))
}

// Wait blocks until a request may go: past any pause, then for a token. Ordinary calls take
// a place in line first; urgent ones (Urgent) do not.
func (b *Budget) Wait(ctx context.Context) error {
	if b == nil {
		return nil
	}
	unlimited := b.unlimited()
	if !isUrgent(ctx) && !unlimited {
		select {
		case b.queue <- struct{}{}:
			defer func() { <-b.queue }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		b.mu.Lock()
		now := b.now()
		b.raise(now)
		wait := b.pausedUntil.Sub(now)
		b.mu.Unlock()
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	if unlimited {
		return nil
	}
	return b.lim.Wait(ctx)
}

// answered records how a request to endpoint, sent at sent, ended: status is the HTTP status, 0
// when no answer came. retryAfter is the answer's Retry-After, if any.
func (b *Budget) answered(endpoint string, sent time.Time, status int, retryAfter time.Duration) {
	if b == nil {
		return
	}
	if b.obs != nil {
		b.obs.WorkOSRequest(endpoint, resultOf(status))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	switch {
	case status == http.StatusTooManyRequests:
		b.total429++
		if now.Sub(b.throttledAt) >= lowerEvery {
			b.throttles++
		}
		b.throttledAt, b.troubleAt = now, now
		pause := retryAfter
		if pause <= 0 {
			pause = backoff(time.Second, b.throttles)
		}
		b.pause(now, pause)
		b.lower(now)
		if !b.limited {
			b.limited = true
			b.log.Warn("WorkOS is limiting our requests (429): every WorkOS call waits, and the request budget is lowered until it stops",
				zap.Duration("paused_for", pause), zap.Float64("requests_per_second", float64(b.lim.Limit())))
		}
	case status == 0 || status >= 500:
		b.failures++
		b.troubleAt = now
		if b.failures >= failuresBeforePause {
			b.pause(now, backoff(250*time.Millisecond, b.failures-failuresBeforePause+1))
			b.lower(now)
		}
	case sent.Before(b.troubleAt):
		// An answer to a request sent before the trouble says nothing about it being over.
	default:
		b.throttles, b.failures = 0, 0
	}
}

func resultOf(status int) string {
	switch {
	case status == 0:
		return "no_answer"
	case status == http.StatusTooManyRequests:
		return "429"
	case status >= 500:
		return "5xx"
	case status >= 400:
		return "4xx"
	}
	return "ok"
}

// pause holds every call until now+d, or longer if a pause already runs.
func (b *Budget) pause(now time.Time, d time.Duration) {
	until := now.Add(min(d, maxPause))
	if until.After(b.pausedUntil) {
		from := b.pausedUntil
		if from.Before(now) {
			from = now
		}
		b.pausedFor += until.Sub(from)
		b.pausedUntil = until
	}
}

// lower halves the rate, once for the answers that arrive together.
func (b *Budget) lower(now time.Time) {
	if b.max == rate.Inf || now.Sub(b.loweredAt) < lowerEvery {
		return
	}
	b.loweredAt = now
	b.setRate(max(b.lim.Limit()/2, minRate))
}

// raise climbs back towards the budget once WorkOS has been quiet: a tenth of it for every
// raiseStep since the quiet began, however rarely raise is called.
func (b *Budget) raise(now time.Time) {
	cur := b.lim.Limit()
	start := b.troubleAt.Add(quietBeforeRaise)
	if cur >= b.max || now.Before(start) {
		return
	}
	if b.raisedAt.Before(start) {
		b.raisedAt = start.Add(-raiseStep) // the first step is due when the quiet begins
	}
	steps := int(now.Sub(b.raisedAt) / raiseStep)
	if steps <= 0 {
		return
	}
	b.raisedAt = b.raisedAt.Add(time.Duration(steps) * raiseStep)
	b.setRate(min(cur+rate.Limit(steps)*b.max/10, b.max))
	if b.lim.Limit() >= b.max && b.limited {
		b.limited = false
		b.log.Info("WorkOS has stopped limiting our requests; the request budget is back in full",
			zap.Float64("requests_per_second", float64(b.max)))
	}
}

func (b *Budget) setRate(r rate.Limit) {
	b.lim.SetLimitAt(b.now(), r)
	b.lim.SetBurstAt(b.now(), burstFor(r))
}

// backoff is base doubled per step after the first, capped, with jitter so many processes do
// not come back in step.
func backoff(base time.Duration, step int) time.Duration {
	d := maxPause
	if step < 16 {
		d = min(base<<max(step-1, 0), maxPause)
	}
	return d/2 + rand.N(d/2+1)
}

// clock is the budget's time (nil: the wall clock).
func (b *Budget) clock() time.Time {
	if b == nil {
		return time.Now()
	}
	return b.now()
}

// BudgetStatus is what status and metrics show of the budget.
type BudgetStatus struct {
	// Max is workos.max_requests_per_second; Rate what is allowed now (lower after 429s).
	Max, Rate float64
	// Unlimited: no budget was configured.
	Unlimited bool
	// PausedUntil, when in the future, is when WorkOS calls may go again.
	PausedUntil time.Time
	// Limited: WorkOS answered 429 and the rate has not climbed back in full yet.
	Limited bool
	// Throttled counts 429s; Paused is how long every call was held, in all.
	Throttled int64
	Paused    time.Duration
}

// Status reports the budget now.
func (b *Budget) Status() BudgetStatus {
	if b == nil {
		return BudgetStatus{Unlimited: true}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.raise(now)
	s := BudgetStatus{Max: float64(b.max), Rate: float64(b.lim.Limit()), Unlimited: b.max == rate.Inf,
		Limited: b.limited, Throttled: b.total429, Paused: b.pausedFor}
	if s.Unlimited {
		s.Max, s.Rate = 0, 0
	}
	if b.pausedUntil.After(now) {
		s.PausedUntil = b.pausedUntil
		s.Paused -= b.pausedUntil.Sub(now) // not held yet
	}
	return s
}

func (b *Budget) unlimited() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max == rate.Inf
}

// SetMax changes the budget (workos.max_requests_per_second, on a reload); 0 or less: no limit.
// A rate lowered after 429s stays lowered, capped by the new budget, and climbs back to it.
func (b *Budget) SetMax(perSecond float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	max := rate.Limit(perSecond)
	if perSecond <= 0 {
		max = rate.Inf
	}
	b.max = max
	if cur := b.lim.Limit(); !b.limited || cur > max {
		b.setRate(max)
	}
}
