package bench

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
)

const (
	benchAPIKey = "sk_test_bench"
	benchFrom   = "Bench <no-reply@bench.example>"
)

// host serves the fake WorkOS and the fake SES over loopback HTTP, adds the workload's events
// and records when SES accepted each event's email. It runs in the orchestrating process, so
// the pipeline process's memory, allocations and CPU are its own.
type host struct {
	wos     *fakeworkos.Server
	ses     *fakeses.Server
	servers []*httptest.Server
	// Connections the pipeline opened to each fake (TCP accepts).
	wosConns, sesConns atomic.Int64
	WorkOS             string // base URLs
	SES                string
	orgs               []string
	inviters           []string

	added int // events added so far; owned by the adding goroutine

	mu       sync.Mutex
	index    map[string]int32 // event id -> workload index
	addedAt  []int64          // unix ns when event i became visible
	accepts  []accept
	unknown  int // accepted messages whose event id the workload does not know
	maxRate  float64
	expireIn time.Duration
}

type accept struct {
	idx int32
	at  int64 // unix ns
}

// newHost starts both fakes. Every WorkOS request waits workosLat and every SES request sesLat
// before it is served. GetAccount answers MaxSendRate accountRate, so a pipeline that reads its
// send rate from SES is held to the scenario's rate.
func newHost(workosLat, sesLat time.Duration, accountRate float64) *host {
	h := &host{
		wos: fakeworkos.New(benchAPIKey), ses: fakeses.New(),
		index: map[string]int32{}, maxRate: accountRate, expireIn: 24 * time.Hour,
	}
	h.wos.Intercept = func(http.ResponseWriter, *http.Request) bool {
		if workosLat > 0 {
			time.Sleep(workosLat)
		}
		return false
	}
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if sesLat > 0 {
			time.Sleep(sesLat)
		}
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v2/email/outbound-emails":
			h.ses.Accept(w, r, h.accepted)
			return true
		case r.Method == http.MethodGet && r.URL.Path == "/v2/email/account":
			h.account(w)
			return true
		}
		return false
	}
	h.WorkOS = h.serve(h.wos, &h.wosConns)
	h.SES = h.serve(h.ses, &h.sesConns)
	for i := range 8 {
		h.orgs = append(h.orgs, h.wos.AddOrganization(fmt.Sprintf("Org %d", i)))
		h.inviters = append(h.inviters, h.wos.AddUser("Inviter", fmt.Sprint(i), fmt.Sprintf("inviter%d@bench.example", i)))
	}
	return h
}

// serve starts a loopback server for a fake, as the fakes' Start does, counting connections.
func (h *host) serve(handler http.Handler, conns *atomic.Int64) string {
	srv := httptest.NewUnstartedServer(handler)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	h.servers = append(h.servers, srv)
	return srv.URL
}

func (h *host) Close() {
	for _, srv := range h.servers {
		srv.Close()
	}
}

func (h *host) account(w http.ResponseWriter) {
	b, _ := json.Marshal(map[string]any{
		"SendQuota":      map[string]any{"Max24HourSend": 1e9, "MaxSendRate": h.maxRate, "SentLast24Hours": 0.0},
		"SendingEnabled": true, "ProductionAccessEnabled": true, "EnforcementStatus": "HEALTHY",
	})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (h *host) accepted(m fakeses.Message) {
	now := time.Now().UnixNano()
	h.mu.Lock()
	defer h.mu.Unlock()
	idx, ok := h.index[m.Tags["event_id"]]
	if !ok {
		h.unknown++
		return
	}
	h.accepts = append(h.accepts, accept{idx: idx, at: now})
}

// add creates the next workload event: a mix of the four core kinds, every one sendable
// (pending, not expired), each to its own recipient. Only one goroutine adds.
func (h *host) add() {
	i := h.added
	h.added++
	to := fmt.Sprintf("user%07d@example.com", i)
	exp := time.Now().Add(h.expireIn)
	var id string
	switch i % 5 {
	case 0, 1:
		id, _, _ = h.wos.AddCode("magic_auth", to, fmt.Sprintf("user_01B%07d", i), exp)
	case 2:
		id, _, _ = h.wos.AddCode("email_verification", to, fmt.Sprintf("user_01B%07d", i), exp)
	case 3:
		id, _, _ = h.wos.AddPasswordReset(to, fmt.Sprintf("user_01B%07d", i), exp)
	case 4:
		id, _, _ = h.wos.AddInvitation(fakeworkos.Invitation{Email: to, ExpiresAt: exp,
			OrganizationID: h.orgs[i%len(h.orgs)], InviterUserID: h.inviters[i%len(h.inviters)]})
	}
	now := time.Now().UnixNano()
	h.mu.Lock()
	h.index[id] = int32(i)
	h.addedAt = append(h.addedAt, now)
	h.mu.Unlock()
}

// addBacklog adds n events at once.
func (h *host) addBacklog(n int) {
	for range n {
		h.add()
	}
}

// produce adds n events at rate per second, spread evenly, until n are added or stop closes.
func (h *host) produce(n int, rate float64, stop <-chan struct{}) {
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-stop:
				return
			}
		}
		h.add()
	}
}

func (h *host) acceptedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.accepts)
}

// resetAccepts forgets what SES accepted, for the next implementation on the same workload.
func (h *host) resetAccepts() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.accepts, h.unknown = nil, 0
	h.wosConns.Store(0)
	h.sesConns.Store(0)
}

// acceptStats summarizes what SES accepted: latency from the moment each event became visible
// (when it was added, or when the run started if it was added before) to its acceptance.
type acceptStats struct {
	Accepted   int     // accepted messages
	Unique     int     // distinct events among them
	Duplicates int     // accepted messages beyond the first per event
	Unknown    int     // messages for events the workload does not know
	P50ms      float64 // event-to-send latency
	P99ms      float64
	MaxMs      float64
	// Rate window (scenario c): acceptances within [from, to) and the most in any 1 s window.
	InWindow  int
	MaxPerSec int
}

func (h *host) stats(runStart time.Time, from, to time.Time) acceptStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := acceptStats{Accepted: len(h.accepts), Unknown: h.unknown}
	seen := make(map[int32]bool, len(h.accepts))
	lat := make([]float64, 0, len(h.accepts))
	var times []int64
	for _, a := range h.accepts {
		if seen[a.idx] {
			st.Duplicates++
			continue
		}
		seen[a.idx] = true
		visible := max(h.addedAt[a.idx], runStart.UnixNano())
		lat = append(lat, float64(a.at-visible)/1e6)
		if !from.IsZero() && a.at >= from.UnixNano() && a.at < to.UnixNano() {
			times = append(times, a.at)
		}
	}
	st.Unique = len(seen)
	if len(lat) > 0 {
		sort.Float64s(lat)
		st.P50ms = percentile(lat, 0.50)
		st.P99ms = percentile(lat, 0.99)
		st.MaxMs = lat[len(lat)-1]
	}
	st.InWindow = len(times)
	st.MaxPerSec = maxInWindow(times, int64(time.Second))
	return st
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// maxInWindow is the largest number of times that fall in any half-open window [t, t+width).
func maxInWindow(times []int64, width int64) int {
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	best, lo := 0, 0
	for hi := range times {
		for times[hi]-times[lo] >= width {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}
