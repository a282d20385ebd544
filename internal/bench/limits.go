package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// The limits benchmark: a backfill against a fake WorkOS that enforces WorkOS's documented
// rate limits (1,000 user-management reads per 10 s per environment, 6,000 requests per 60 s
// per key; past them 429 with Retry-After), at the default request budget, alone and beside
// an "app" that signs users in with the same key, and a Magic Auth code created 5 s into the
// backfill. It runs in this process: what it measures is requests and their timing, not
// memory or CPU.

const (
	limitReads      = 1000 // user-management reads per readWindow, per environment
	readWindow      = 10 * time.Second
	limitRequests   = 6000 // requests per keyWindow, per key
	keyWindow       = 60 * time.Second
	defaultBudget   = 50.0
	appShare        = 0.4 // of the read limit
	appUserAgent    = "bench-app"
	codeAfter       = 5 * time.Second
	limitsPollEvery = time.Second
)

// LimitsConfig sizes the limits benchmark.
type LimitsConfig struct {
	Events   int // the backfill; 0: 20,000 (quick: 1,000)
	Quick    bool
	TempDir  string
	Progress io.Writer
}

// LimitsRow is one run.
type LimitsRow struct {
	Name            string
	Events          int
	Elapsed         time.Duration
	Requests        int64   // ours
	PerSecond       float64 // ours, over the run
	Budget          float64
	Throttled       int64 // 429s we got
	AppRequests     int64
	AppThrottled    int64
	CodeLatency     time.Duration // the Magic Auth code created 5 s in: created -> accepted by SES
	RequestsPerMail float64
}

// rateWindows is the fake WorkOS's enforcement: sliding windows of request times.
type rateWindows struct {
	mu    sync.Mutex
	reads []time.Time // user-management reads
	all   []time.Time
}

// admit records a request at now, or returns how long until it would be admitted.
func (r *rateWindows) admit(now time.Time, read bool) (retryAfter time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads = trimBefore(r.reads, now.Add(-readWindow))
	r.all = trimBefore(r.all, now.Add(-keyWindow))
	switch {
	case read && len(r.reads) >= limitReads:
		return r.reads[0].Add(readWindow).Sub(now), false
	case len(r.all) >= limitRequests:
		return r.all[0].Add(keyWindow).Sub(now), false
	}
	if read {
		r.reads = append(r.reads, now)
	}
	r.all = append(r.all, now)
	return 0, true
}

func trimBefore(ts []time.Time, t time.Time) []time.Time {
	i := 0
	for i < len(ts) && ts[i].Before(t) {
		i++
	}
	return ts[i:]
}

// RunLimits runs the backfill alone and beside the app.
func RunLimits(cfg LimitsConfig) ([]LimitsRow, error) {
	if cfg.Events == 0 {
		cfg.Events = 20000
		if cfg.Quick {
			cfg.Events = 1000
		}
	}
	var rows []LimitsRow
	for _, withApp := range []bool{false, true} {
		row, err := runLimits(cfg, withApp)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "limits %s: %d events in %s, %.1f requests/s (%.0f%% of the budget), %d 429s; app %d/%d limited; code in %s\n",
				row.Name, row.Events, row.Elapsed.Round(time.Second), row.PerSecond, 100*row.PerSecond/row.Budget, row.Throttled,
				row.AppThrottled, row.AppRequests, row.CodeLatency.Round(time.Millisecond))
		}
	}
	return rows, nil
}

func runLimits(cfg LimitsConfig, withApp bool) (LimitsRow, error) {
	row := LimitsRow{Name: "backfill alone", Events: cfg.Events, Budget: defaultBudget}
	if withApp {
		row.Name = fmt.Sprintf("backfill beside an app using %.0f%% of the read limit", 100*appShare)
	}
	wos := fakeworkos.New(benchAPIKey)
	var windows rateWindows
	var ours, ours429, app, app429 atomic.Int64
	wos.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		isApp := r.Header.Get("User-Agent") == appUserAgent
		if isApp {
			app.Add(1)
		} else {
			ours.Add(1)
		}
		after, ok := windows.admit(time.Now(), strings.HasPrefix(r.URL.Path, "/user_management/"))
		if ok {
			return false
		}
		if isApp {
			app429.Add(1)
		} else {
			ours429.Add(1)
		}
		w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(after.Seconds()))))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"message":"Too many requests"}`))
		return true
	}
	// The backfill: an hour-old stream of codes, each to its own user, still valid.
	hourAgo := time.Now().Add(-time.Hour)
	wos.Now = func() time.Time { return hourAgo }
	appUsers := make([]string, 0, 100)
	for i := range cfg.Events {
		to := fmt.Sprintf("user%07d@example.com", i)
		user := wos.AddUser("Bench", fmt.Sprint(i), to)
		if len(appUsers) < cap(appUsers) {
			appUsers = append(appUsers, user)
		}
		wos.AddCode("magic_auth", to, user, time.Now().Add(2*time.Hour))
	}
	wos.Now = time.Now
	wosURL := wos.Start()
	defer wos.Close()
	ses := fakeses.New()
	sesURL := ses.Start()
	defer ses.Close()

	dir, err := os.MkdirTemp(cfg.TempDir, "workos-emailer-limits-")
	if err != nil {
		return row, err
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		return row, err
	}
	defer st.Close()
	sender, err := mailer.NewSES(context.Background(), mailer.SESOptions{Region: "us-east-1", Endpoint: sesURL,
		From: "Bench <no-reply@bench.example>", Credentials: credentials.NewStaticCredentialsProvider("AKIDBENCH", "secret", "")})
	if err != nil {
		return row, err
	}
	templates, err := mailer.LoadTemplates(mailer.TemplateOptions{Brand: mailer.Brand{Name: "Bench"}})
	if err != nil {
		return row, err
	}
	budget := workosapi.NewBudget(workosapi.BudgetOptions{PerSecond: defaultBudget})
	w := worker.New(worker.Options{PageSize: 100, PollInterval: limitsPollEvery, StartSince: hourAgo.Add(-time.Minute)},
		workosapi.New(benchAPIKey, wosURL, 0, budget), st, sender, templates, zap.NewNop())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if withApp {
		go runApp(ctx, wosURL, appUsers)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	// The code a user asks for 5 s into the backfill.
	time.Sleep(codeAfter)
	codeUser := wos.AddUser("Fresh", "Code", "fresh@example.com")
	codeEvent, _, _ := wos.AddCode("magic_auth", "fresh@example.com", codeUser, time.Now().Add(10*time.Minute))
	codeAt := time.Now()
	want := cfg.Events + 1
	for {
		if row.CodeLatency == 0 && sentEvent(ses, codeEvent) {
			row.CodeLatency = time.Since(codeAt)
		}
		if len(ses.Messages()) >= want && row.CodeLatency > 0 {
			break
		}
		select {
		case err := <-done:
			return row, fmt.Errorf("the pipeline stopped early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	row.Elapsed = time.Since(start)
	cancel()
	if err := <-done; err != nil {
		return row, err
	}
	row.Requests, row.Throttled = ours.Load(), ours429.Load()
	row.PerSecond = float64(row.Requests) / row.Elapsed.Seconds()
	row.AppRequests, row.AppThrottled = app.Load(), app429.Load()
	row.RequestsPerMail = float64(row.Requests) / float64(len(ses.Messages()))
	return row, nil
}

func sentEvent(ses *fakeses.Server, eventID string) bool {
	for _, m := range ses.Messages() {
		if m.Tags["event_id"] == eventID {
			return true
		}
	}
	return false
}

// runApp reads users at appShare of the read limit until ctx ends, as an app signing users in.
func runApp(ctx context.Context, base string, users []string) {
	every := time.Duration(float64(readWindow) / (appShare * limitReads))
	tick := time.NewTicker(every)
	defer tick.Stop()
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		go func(user string) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/user_management/users/"+user, nil)
			req.Header.Set("Authorization", "Bearer "+benchAPIKey)
			req.Header.Set("User-Agent", appUserAgent)
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}(users[i%len(users)])
	}
}

// WriteLimitsMarkdown prints the rows as a table for BENCHMARKS.md.
func WriteLimitsMarkdown(out io.Writer, rows []LimitsRow) {
	fmt.Fprintln(out, "| run | events | time | our requests/s (of the 50/s budget) | our 429s | app requests limited | Magic Auth code created 5 s in, sent after | WorkOS requests per email |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		appCell := "no app"
		if r.AppRequests > 0 {
			appCell = fmt.Sprintf("%d of %d (%.2f%%)", r.AppThrottled, r.AppRequests, 100*float64(r.AppThrottled)/float64(r.AppRequests))
		}
		fmt.Fprintf(out, "| %s | %d | %s | %.1f (%.0f%%) | %d | %s | %s | %.2f |\n", r.Name, r.Events, r.Elapsed.Round(time.Second),
			r.PerSecond, 100*r.PerSecond/r.Budget, r.Throttled, appCell, r.CodeLatency.Round(10*time.Millisecond), r.RequestsPerMail)
	}
}
