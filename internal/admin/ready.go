package admin

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Healthz answers 200 while the process can serve HTTP at all.
func Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
}

// ReadyPollAgeFloor is the least Readiness tolerates since the last successful poll; tests
// lower it.
var ReadyPollAgeFloor = 30 * time.Second

// ReadyPollAge is how old the last successful poll may be for the daemon to be ready:
// max(3 × poll_interval, 30s). An idle worker polls every poll_interval and a failed poll is
// retried after 0.5-1 s, then 1-2 s, so three intervals absorb one slow or failed request and
// its retry without flapping; the 30 s floor keeps a short interval from flapping on one request
// that hits the WorkOS client's 15 s timeout, and covers a busy page: polling pauses while a
// page's events are delivered (100 events at SES's default 14/s take about 7 s). A page held up
// longer than that by an event retrying with backoff shows as not ready, and rightly so: new
// events are not being picked up meanwhile.
func ReadyPollAge(pollInterval time.Duration) time.Duration {
	return max(3*pollInterval, ReadyPollAgeFloor)
}

// Readiness answers /readyz: 200 only when the store is readable, WorkOS answered a poll
// recently and accepts the API key, sending is not paused, and shutdown has not begun;
// otherwise 503 with one short line per reason.
type Readiness struct {
	Store    func() error // nil error: the store is open and readable
	LastPoll func() time.Time
	// PauseReason says why sending is paused; "" when it is not.
	PauseReason func() string
	// KeyRejected: WorkOS refused the API key on its last answer about it; KeyName names the
	// key for the operator (never its secret part).
	KeyRejected func() bool
	KeyName     string
	// Feedback says why the SES feedback queue cannot be read; "" when it can, nil when off.
	Feedback func() string
	// Role, with a store several daemons share, is leader, standby or none (worker.Role); nil:
	// this daemon always leads. A standby is ready when the store is readable: its readiness
	// is to take over. None (the store cannot be reached to take the lease) is not ready.
	Role       func() string
	MaxPollAge time.Duration
	Now        func() time.Time
	stopping   atomic.Bool
}

// NotReady lists why the daemon is not ready; empty when it is.
func (r *Readiness) NotReady() []string {
	var why []string
	if r.stopping.Load() {
		why = append(why, "shutting down")
	}
	if err := r.Store(); err != nil {
		why = append(why, "store is not readable")
	}
	switch r.role() {
	case RoleStandby:
		return why
	case RoleNone:
		return append(why, "neither leader nor standby: the store cannot be reached to take the lease")
	}
	switch last := r.LastPoll(); {
	case last.IsZero():
		why = append(why, "no successful poll of WorkOS events yet")
	case r.Now().Sub(last) > r.MaxPollAge:
		why = append(why, fmt.Sprintf("last successful poll of WorkOS events %s ago (limit %s)",
			r.Now().Sub(last).Round(time.Second), r.MaxPollAge))
	}
	if r.KeyRejected != nil && r.KeyRejected() {
		why = append(why, "WorkOS rejects the API key ("+r.KeyName+"): set a valid one")
	}
	if reason := r.PauseReason(); reason != "" {
		why = append(why, "sending is paused: "+reason)
	}
	if r.Feedback != nil {
		if reason := r.Feedback(); reason != "" {
			why = append(why, reason)
		}
	}
	return why
}

// Roles Readiness.Role reports (worker.Role's values).
const (
	RoleLeader  = "leader"
	RoleStandby = "standby"
	RoleNone    = "none"
)

func (r *Readiness) role() string {
	if r.Role == nil {
		return RoleLeader
	}
	return r.Role()
}

// Stopping marks the daemon not ready from now on: shutdown has begun.
func (r *Readiness) Stopping() { r.stopping.Store(true) }

// ServeHTTP answers /readyz. With a shared store the answer names the role ("ready: leader",
// "ready: standby"), and /readyz?role=leader is ready only on the leader (for a load balancer in
// front of the send API).
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	why := r.NotReady()
	role := r.role()
	if want := req.URL.Query().Get("role"); want != "" && want != role {
		why = append(why, "this instance is "+role+", not "+want)
	}
	if len(why) > 0 {
		if r.Role != nil {
			why = append([]string{role}, why...)
		}
		plain(w, http.StatusServiceUnavailable, "not ready: "+strings.Join(why, "; ")+"\n")
		return
	}
	if r.Role != nil {
		plain(w, http.StatusOK, "ready: "+role+"\n")
		return
	}
	plain(w, http.StatusOK, "ready\n")
}

func plain(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
