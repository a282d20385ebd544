package workosapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// arrivals is a fake WorkOS that answers Get Magic Auth and notes when each request came.
type arrivals struct {
	mu    sync.Mutex
	at    []time.Time
	first func(w http.ResponseWriter) bool // answers the first request instead, when set
}

func (a *arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	now := time.Now()
	a.at = append(a.at, now)
	first := len(a.at) == 1 && a.first != nil
	a.mu.Unlock()
	if first && a.first(w) {
		return
	}
	id := r.URL.Path[len("/user_management/magic_auth/"):]
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"object":"magic_auth","id":%q,"user_id":"user_01X","email":"a@example.com","expires_at":"2099-01-01T00:00:00.000Z","code":"123456","created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:00.000Z"}`, id)
}

func (a *arrivals) times() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.at)
}

// getAll makes n Gets from n goroutines at once and returns their errors.
func getAll(c *Client, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = c.Get(context.Background(), "magic_auth", fmt.Sprintf("magic_auth_01X%04d", i))
		})
	}
	wg.Wait()
	return errs
}

// Every goroutine's requests share one budget: in no stretch of time do more start than the
// burst plus the rate times its length.
func TestBudgetIsSharedByEveryCaller(t *testing.T) {
	srv := &arrivals{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	const perSecond = 40
	b := NewBudget(BudgetOptions{PerSecond: perSecond})
	// Two clients, as the main and the live reader are: one budget.
	c1, c2 := New("sk_test", ts.URL, time.Second, b), New("sk_test", ts.URL, time.Second, b)
	var wg sync.WaitGroup
	for _, c := range []*Client{c1, c2} {
		wg.Go(func() {
			for _, err := range getAll(c, 40) {
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	at := srv.times()
	if len(at) != 80 {
		t.Fatalf("%d requests, want 80", len(at))
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	// Scheduling may bring two arrivals closer than their starts were: a little slack.
	const slack = 20 * time.Millisecond
	for i := range at {
		for j := i + 1; j < len(at); j++ {
			allowed := burstFor(perSecond) + int(perSecond*(at[j].Sub(at[i])+slack).Seconds()) + 1
			if j-i+1 > allowed {
				t.Fatalf("%d requests within %v, the budget allows %d", j-i+1, at[j].Sub(at[i]), allowed)
			}
		}
	}
}

// A 429 holds every caller until its Retry-After, and only one request got it: nothing spins.
func TestOne429PausesEveryCaller(t *testing.T) {
	var answered429 time.Time
	srv := &arrivals{first: func(w http.ResponseWriter) bool {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		answered429 = time.Now()
		return true
	}}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	core, logs := observer.New(zap.InfoLevel)
	b := NewBudget(BudgetOptions{PerSecond: 20, Log: zap.New(core)})
	c := New("sk_test", ts.URL, time.Second, b)
	// The first call gets the 429; then a crowd of callers, all of whom must wait it out.
	if _, err := c.Get(context.Background(), "magic_auth", "magic_auth_01FIRST"); !isThrottled(err) {
		t.Fatalf("first call: %v, want a 429", err)
	}
	for _, err := range getAll(c, 10) {
		if err != nil {
			t.Error(err)
		}
	}
	at := srv.times()
	if len(at) != 11 {
		t.Errorf("%d requests, want 11: the one that got the 429 and one for each caller", len(at))
	}
	for _, a := range at[1:] {
		if a.Before(answered429.Add(time.Second)) {
			t.Errorf("a request %v after the 429, before its Retry-After of 1s", a.Sub(answered429))
		}
	}
	if st := b.Status(); st.Rate != 10 || !st.Limited || st.Throttled != 1 || st.Paused < 900*time.Millisecond {
		t.Errorf("after one 429: %+v, want the rate halved to 10, limited, 1 throttled, paused about 1s", st)
	}
	if n := logs.FilterMessageSnippet("WorkOS is limiting our requests").Len(); n != 1 {
		t.Errorf("%d log lines about the 429, want 1", n)
	}
}

func isThrottled(err error) bool {
	apiErr, ok := err.(*APIError)
	return ok && apiErr.Status == http.StatusTooManyRequests
}

// The rate halves once for 429s that arrive together, again for later ones, never below 1/s,
// and climbs back by a tenth of the budget every 5 s once WorkOS has been quiet for 10 s;
// the log says once when the limiting starts and once when it is over.
func TestBudgetLowersAndRecovers(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	core, logs := observer.New(zap.InfoLevel)
	b := NewBudget(BudgetOptions{PerSecond: 50, Log: zap.New(core)})
	b.now = func() time.Time { return now }
	step := func(d time.Duration) { now = now.Add(d) }
	rateIs := func(want float64) {
		t.Helper()
		if got := b.Status().Rate; got != want {
			t.Errorf("at +%v: rate %v, want %v", now.Sub(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)), got, want)
		}
	}
	for range 5 { // the calls in flight when the limit hit
		b.answered("get_magic_auth", now, http.StatusTooManyRequests, 2*time.Second)
	}
	rateIs(25)
	if st := b.Status(); !st.PausedUntil.Equal(now.Add(2*time.Second)) || st.Throttled != 5 {
		t.Errorf("paused until %v (throttled %d), want +2s", st.PausedUntil, st.Throttled)
	}
	step(1500 * time.Millisecond)
	b.answered("get_magic_auth", now, http.StatusTooManyRequests, 0) // no Retry-After: a backoff
	rateIs(12.5)
	if p := b.Status().PausedUntil.Sub(now); p < 500*time.Millisecond || p > 2*time.Second {
		t.Errorf("paused for %v without a Retry-After, want a jittered second or so", p)
	}
	for range 10 {
		step(1500 * time.Millisecond)
		b.answered("get_magic_auth", now, http.StatusTooManyRequests, time.Second)
	}
	rateIs(1) // the floor
	step(9 * time.Second)
	rateIs(1) // not quiet long enough
	step(time.Second)
	rateIs(6) // +5, a tenth of 50
	step(4 * time.Second)
	rateIs(6)
	for range 9 {
		step(5 * time.Second)
	}
	rateIs(50)
	if st := b.Status(); st.Limited || !st.PausedUntil.IsZero() {
		t.Errorf("recovered: %+v", st)
	}
	if w, i := logs.FilterMessageSnippet("limiting our requests (429)").Len(), logs.FilterMessageSnippet("stopped limiting").Len(); w != 1 || i != 1 {
		t.Errorf("%d lines when the limiting started and %d when it stopped, want 1 and 1", w, i)
	}
}

// One server error may be the object's; a run of them, or of requests without an answer, is
// WorkOS's: every call then waits a growing pause, and the rate is lowered so that the end of
// an outage is no thundering herd. A good answer ends the run.
func TestBudgetPausesOnARunOfFailures(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	b := NewBudget(BudgetOptions{PerSecond: 50})
	b.now = func() time.Time { return now }
	b.answered("get_user", now, http.StatusInternalServerError, 0)
	if st := b.Status(); !st.PausedUntil.IsZero() || st.Rate != 50 {
		t.Errorf("one 500: %+v, want no pause", st)
	}
	b.answered("get_user", now, 0, 0)
	if st := b.Status(); st.PausedUntil.IsZero() || st.Rate != 25 || st.Limited {
		t.Errorf("a 500 and no answer: %+v, want a pause and the rate lowered", st)
	}
	first := b.Status().PausedUntil.Sub(now)
	for range 6 {
		now = now.Add(2 * time.Second)
		b.answered("get_user", now, http.StatusBadGateway, 0)
	}
	if p := b.Status().PausedUntil.Sub(now); p <= first {
		t.Errorf("the pause did not grow: %v after %v", p, first)
	}
	// A good answer to a request sent before the trouble does not end the run.
	b.answered("get_user", now.Add(-time.Second), http.StatusOK, 0)
	b.answered("get_user", now, http.StatusInternalServerError, 0)
	if b.failures < failuresBeforePause {
		t.Errorf("a late answer to an earlier request ended the run of failures (%d)", b.failures)
	}
	b.answered("get_user", now, http.StatusOK, 0)
	now = now.Add(maxPause)
	b.answered("get_user", now, http.StatusInternalServerError, 0)
	if st := b.Status(); !st.PausedUntil.IsZero() {
		t.Errorf("a 500 after a good answer paused: %+v", st)
	}
}

func TestNoBudgetIsUnlimited(t *testing.T) {
	var b *Budget
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.answered("list_events", time.Now(), http.StatusTooManyRequests, time.Hour)
	if st := b.Status(); !st.Unlimited {
		t.Errorf("nil budget: %+v", st)
	}
	u := NewBudget(BudgetOptions{})
	for range 1000 {
		if err := u.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if st := u.Status(); !st.Unlimited || st.Max != 0 {
		t.Errorf("no rate: %+v", st)
	}
}

// An urgent call (the live reader's) waits behind at most a couple of ordinary ones, however
// many deliveries wait for the budget.
func TestUrgentCallsGoFirst(t *testing.T) {
	srv := &arrivals{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	b := NewBudget(BudgetOptions{PerSecond: 10})
	c := New("sk_test", ts.URL, time.Second, b)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 8 { // deliveries that always want the next token
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				_, _ = c.Get(ctx, "magic_auth", fmt.Sprintf("magic_auth_01B%02d%04d", i, n))
			}
		})
	}
	// Once the burst is spent and the line is long, an urgent call.
	for deadline := time.Now().Add(10 * time.Second); len(srv.times()) < 15; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the deliveries made no requests")
		}
	}
	before := len(srv.times())
	if _, err := c.Get(Urgent(context.Background()), "magic_auth", "magic_auth_01URGENT"); err != nil {
		t.Fatal(err)
	}
	ahead := len(srv.times()) - before - 1
	cancel()
	wg.Wait()
	// The two in line, and one whose reservation came due as the urgent call arrived.
	if ahead > 3 {
		t.Errorf("%d ordinary requests went ahead of the urgent one, want at most 3", ahead)
	}
}

// A reload changes the budget; a rate lowered after 429s stays under the new budget.
func TestBudgetSetMax(t *testing.T) {
	b := NewBudget(BudgetOptions{PerSecond: 50})
	b.SetMax(20)
	if st := b.Status(); st.Max != 20 || st.Rate != 20 {
		t.Errorf("after SetMax(20): %+v", st)
	}
	b.SetMax(80)
	if st := b.Status(); st.Max != 80 || st.Rate != 80 {
		t.Errorf("after SetMax(80): %+v", st)
	}
}
