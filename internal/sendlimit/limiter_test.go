package sendlimit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/workos-emailer/workos-emailer/mailer"
)

// fakeClock only moves when a test moves it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type quotaFunc func(context.Context) (mailer.SendQuota, error)

func (f quotaFunc) Quota(ctx context.Context) (mailer.SendQuota, error) { return f(ctx) }

func fixedQuota(q mailer.SendQuota) QuotaSource {
	return quotaFunc(func(context.Context) (mailer.SendQuota, error) { return q, nil })
}

func read(t *testing.T, l *Limiter, src QuotaSource) {
	t.Helper()
	if _, err := l.Source(src).Quota(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// near compares durations computed from float rates.
func near(a, b time.Duration) bool { return (a - b).Abs() <= time.Microsecond }

// reserve takes a permit and fails the test if none is given.
func reserve(t *testing.T, l *Limiter) time.Duration {
	t.Helper()
	d, ok := l.Reserve()
	if !ok {
		t.Fatal("permit refused")
	}
	return d
}

// greedy plays one sender that sends as soon as each permit allows, for span of fake time, and
// returns when each email went out.
func greedy(t *testing.T, l *Limiter, clk *fakeClock, span time.Duration) []time.Time {
	t.Helper()
	end := clk.Now().Add(span)
	var sent []time.Time
	for clk.Now().Before(end) {
		clk.Advance(reserve(t, l))
		sent = append(sent, clk.Now())
		l.Done(true, false)
	}
	return sent
}

// maxPerSecond is the most sends in any one-second window [t, t+1s).
func maxPerSecond(times []time.Time) int {
	best := 0
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < time.Second; j++ {
			n++
		}
		best = max(best, n)
	}
	return best
}

func TestPacesAtTheRateWithASmallBurst(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		burst int
	}{{1, 1}, {10, 1}, {19, 1}, {20, 1}, {50, 2}, {200, 10}} {
		clk := newClock()
		l := New(Options{Rate: tc.rate, Now: clk.Now})
		// Many senders at one instant: the burst goes at once, then one every 1/rate.
		var waits []time.Duration
		for range tc.burst + 3 {
			waits = append(waits, reserve(t, l))
		}
		for i, w := range waits {
			want := time.Duration(0)
			if i >= tc.burst {
				want = time.Duration(float64(i-tc.burst+1) / tc.rate * float64(time.Second))
			}
			if !near(w, want) {
				t.Errorf("rate %v: permit %d waits %v, want %v", tc.rate, i, w, want)
			}
		}
		if st := l.Status(); st.InFlight != len(waits) || !near(st.Waited, sum(waits)) || st.Rate != tc.rate || st.RateSource != SourceConfig {
			t.Errorf("rate %v: status %+v", tc.rate, st)
		}

		// A greedy sender over 20 s never exceeds the rate in any second by more than 10%
		// (or one email, for rates under 10/s), and averages the rate.
		clk.Advance(time.Minute)
		sent := greedy(t, l, clk, 20*time.Second)
		limit := max(int(tc.rate*1.1), int(tc.rate)+1)
		if got := maxPerSecond(sent); got > limit {
			t.Errorf("rate %v: %d sends in one second, limit %d", tc.rate, got, limit)
		}
		if got, want := float64(len(sent)), 20*tc.rate; got < want || got > want+float64(tc.burst)+1 {
			t.Errorf("rate %v: %v sends in 20 s, want about %v", tc.rate, got, want)
		}
	}
}

func sum(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}

func TestRateComesFromConfigElseAccountElseInitial(t *testing.T) {
	account := fixedQuota(mailer.SendQuota{MaxSendRate: 14, Max24HourSend: 50000, SendingEnabled: true})

	clk := newClock()
	l := New(Options{Now: clk.Now})
	if st := l.Status(); st.Rate != DefaultInitialRate || st.RateSource != SourceInitial || st.QuotaKnown {
		t.Errorf("before any reading: %+v", st)
	}
	// Conservative before the reading: the second email waits a full second.
	reserve(t, l)
	if w := reserve(t, l); !near(w, time.Second) {
		t.Errorf("second permit at the initial rate waits %v, want 1s", w)
	}
	// A failed reading keeps what is known.
	failing := quotaFunc(func(context.Context) (mailer.SendQuota, error) { return mailer.SendQuota{}, errors.New("denied") })
	if _, err := l.Source(failing).Quota(context.Background()); err == nil {
		t.Fatal("the wrapped source's error was swallowed")
	}
	if st := l.Status(); st.RateSource != SourceInitial {
		t.Errorf("after a failed reading: %+v", st)
	}
	read(t, l, account)
	if st := l.Status(); st.Rate != 14 || st.RateSource != SourceAccount || !st.QuotaKnown {
		t.Errorf("after the reading: %+v", st)
	}
	// The rate applies to new permits: the queue of the two above drains at 1/s, then 14/s.
	clk.Advance(2 * time.Second)
	reserve(t, l)
	if w := reserve(t, l); !near(w, time.Second/14) {
		t.Errorf("permit after the reading waits %v, want 1/14 s", w)
	}
	// A later failure keeps the last known rate.
	if _, err := l.Source(failing).Quota(context.Background()); err == nil {
		t.Fatal("no error")
	}
	if st := l.Status(); st.Rate != 14 {
		t.Errorf("a failed reading changed the rate: %+v", st)
	}

	// A configured rate wins over the account's, from the start.
	c := New(Options{Rate: 100, Now: clk.Now})
	read(t, c, account)
	if st := c.Status(); st.Rate != 100 || st.RateSource != SourceConfig || !st.QuotaKnown {
		t.Errorf("configured: %+v", st)
	}
}

func TestStopsBeforeThe24HourQuotaAndResumes(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	clk := newClock()
	l := New(Options{Rate: 1000, ReadEvery: time.Minute, Now: clk.Now, Log: zap.New(core)})
	read(t, l, fixedQuota(mailer.SendQuota{MaxSendRate: 14, Max24HourSend: 10, SentLast24Hours: 7}))

	// Three fit. Permits in flight count, so concurrency cannot overshoot.
	for range 3 {
		reserve(t, l)
	}
	wait, ok := l.Reserve()
	if ok {
		t.Fatal("a fourth permit exceeds the quota")
	}
	if wait != time.Minute {
		t.Errorf("refused permit retries after %v, want the next reading in 1m", wait)
	}
	// A permit that ends unsent gives its place back; sent ones keep theirs.
	l.Done(false, true) // throttled: not sent
	l.Done(true, false)
	l.Done(true, false)
	clk.Advance(20 * time.Second)
	reserve(t, l)
	if _, ok := l.Reserve(); ok {
		t.Fatal("permit beyond the quota")
	}
	l.Done(true, false)
	st := l.Status()
	if !st.QuotaExhausted || st.SentSinceQuotaRead != 3 || st.InFlight != 0 {
		t.Errorf("status when used up: %+v", st)
	}
	clk.Advance(30 * time.Second)
	if wait, ok := l.Reserve(); ok || wait != minQuotaRetry {
		t.Errorf("refused permit 10s before the next reading: retry %v, %v; want %v", wait, ok, minQuotaRetry)
	}
	// Logged at each change: used up, room (a permit came back unsent), used up again.
	if n := logs.FilterMessageSnippet("quota is used up").Len(); n != 2 {
		t.Errorf("used-up logged %d times, want 2", n)
	}

	// A fresh reading: the window has rolled, 4 left. Sends made while the reading is under way
	// count after it too (maybe twice; never zero times).
	take := func() { t.Helper(); reserve(t, l) }
	read(t, l, quotaFunc(func(context.Context) (mailer.SendQuota, error) {
		return mailer.SendQuota{MaxSendRate: 14, Max24HourSend: 10, SentLast24Hours: 6}, nil
	}))
	if st := l.Status(); st.QuotaExhausted || st.SentSinceQuotaRead != 0 {
		t.Errorf("after a reading with room: %+v", st)
	}
	if n := logs.FilterMessageSnippet("has room again").Len(); n != 2 {
		t.Errorf("resume logged %d times, want 2", n)
	}
	take()
	read(t, l, quotaFunc(func(context.Context) (mailer.SendQuota, error) {
		l.Done(true, false) // SES accepts the one in flight while GetAccount runs
		return mailer.SendQuota{MaxSendRate: 14, Max24HourSend: 10, SentLast24Hours: 7}, nil
	}))
	if st := l.Status(); st.SentSinceQuotaRead != 1 {
		t.Errorf("a send during the reading: %d since, want 1", st.SentSinceQuotaRead)
	}
	take()
	take()
	if _, ok := l.Reserve(); ok {
		t.Error("7 + 1 + 2 in flight = 10: no more")
	}

	// Unlimited (-1) and stale readings do not limit.
	read(t, l, fixedQuota(mailer.SendQuota{MaxSendRate: 14, Max24HourSend: -1, SentLast24Hours: 1e9}))
	take()
	read(t, l, fixedQuota(mailer.SendQuota{MaxSendRate: 14, Max24HourSend: 10, SentLast24Hours: 10}))
	if _, ok := l.Reserve(); ok {
		t.Error("full quota gave a permit")
	}
	clk.Advance(24 * time.Hour)
	if st := l.Status(); st.QuotaKnown || st.QuotaExhausted {
		t.Errorf("a day-old reading still limits: %+v", st)
	}
	take()
}

func TestThrottlingHalvesTheRateAndItRecovers(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	clk := newClock()
	start := clk.Now()
	l := New(Options{Rate: 20, Now: clk.Now, Log: zap.New(core)})
	at := func(d time.Duration) { clk.Advance(start.Add(d).Sub(clk.Now())) }
	rateIs := func(want float64, throttled bool) {
		t.Helper()
		st := l.Status()
		if diff := st.Rate - want; diff > 1e-9 || diff < -1e-9 || st.Throttled != throttled || st.TargetRate != 20 {
			t.Errorf("at +%v: rate %v throttled %v, want %v %v", clk.Now().Sub(start), st.Rate, st.Throttled, want, throttled)
		}
	}
	throttle := func() { t.Helper(); reserve(t, l); l.Done(false, true) }

	throttle()
	rateIs(10, true)
	// More throttles of the same episode (sends already under way) do not halve it again.
	at(500 * time.Millisecond)
	throttle()
	throttle()
	rateIs(10, true)
	// The bucket paces at the lower rate: back-to-back permits 1/10 s apart.
	w1, w2 := reserve(t, l), reserve(t, l)
	if !near(w2-w1, 100*time.Millisecond) {
		t.Errorf("at 10/s permits are %v apart", w2-w1)
	}
	l.Done(true, false)
	l.Done(true, false)
	// Each later episode halves again, down to a tenth of the target.
	for i, want := range []float64{5, 2.5, 2, 2} {
		at(time.Duration(i+1)*1100*time.Millisecond + 500*time.Millisecond)
		throttle()
		rateIs(want, true)
	}
	last := 4*1100*time.Millisecond + 500*time.Millisecond
	// Quiet for 10 s: no change yet; then +5% of the target (1/s) per second.
	at(last + 10*time.Second)
	rateIs(2, true)
	at(last + 15*time.Second)
	rateIs(7, true)
	w1, w2 = reserve(t, l), reserve(t, l)
	if !near(w2-w1, time.Second/7) {
		t.Errorf("recovering at 7/s, permits are %v apart", w2-w1)
	}
	l.Done(true, false)
	l.Done(true, false)
	// A throttle while recovering halves the rate reached.
	throttle()
	rateIs(3.5, true)
	last += 15 * time.Second
	at(last + 10*time.Second + 16*time.Second + 500*time.Millisecond)
	rateIs(20, false)
	w1, w2 = reserve(t, l), reserve(t, l)
	if !near(w2-w1, time.Second/20) {
		t.Errorf("recovered to 20/s, permits are %v apart", w2-w1)
	}
	l.Done(true, false)
	l.Done(true, false)
	if st := l.Status(); st.Throttles != 8 || st.InFlight != 0 {
		t.Errorf("status %+v", st)
	}
	if n := logs.FilterMessageSnippet("throttles sending").Len(); n != 5 {
		t.Errorf("rate lowered %d times in the log, want 5 (one per episode that lowered it)", n)
	}
	if n := logs.FilterMessageSnippet("back to its target").Len(); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
}

// A reload changes the configured rate; 0 hands the pace back to the account's quota.
func TestSetRateOnReload(t *testing.T) {
	l := New(Options{Rate: 5})
	l.SetRate(20)
	if st := l.Status(); st.Rate != 20 || st.TargetRate != 20 || st.RateSource != SourceConfig {
		t.Errorf("after SetRate(20): %+v", st)
	}
	l.SetRate(0)
	if st := l.Status(); st.RateSource != SourceInitial || st.Rate != DefaultInitialRate {
		t.Errorf("after SetRate(0): %+v, want the initial rate until a quota reading", st)
	}
}
