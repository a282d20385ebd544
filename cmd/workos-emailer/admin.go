package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// httpServer is an HTTP listener: the admin listener (admin.listen, loopback by default) with
// /healthz, /readyz, /metrics and the operator's /status and /dead, or the send API's
// (api.listen). Admin responses never carry secrets: no API key, code, token or link is known
// to any handler.
type httpServer struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

// listenHTTP binds addr, the value of the setting key, and serves routes on it, each path
// matched exactly (a path ending in "/" matches its subtree, as with http.ServeMux). Binding happens here, so a port in use is
// a startup error and the caller can report READY only once the listener is there.
func listenHTTP(key, addr string, routes map[string]http.Handler, log *zap.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: cannot listen: %w", key, addr, err)
	}
	mux := http.NewServeMux()
	for _, path := range slices.Sorted(maps.Keys(routes)) {
		mux.Handle(path, routes[path])
	}
	a := &httpServer{
		ln: ln,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          zap.NewStdLog(log.Named(strings.TrimSuffix(key, ".listen"))),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	return a, nil
}

// Addr is the bound address (useful with port 0).
func (a *httpServer) Addr() string { return a.ln.Addr().String() }

// Shutdown stops accepting, lets requests in progress finish until ctx ends, then closes.
func (a *httpServer) Shutdown(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	if err != nil {
		_ = a.srv.Close()
	}
	<-a.done
	return err
}

// healthz answers 200 while the process can serve HTTP at all.
func healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
}

// readyPollAgeFloor is the least readiness tolerates since the last successful poll; tests
// lower it.
var readyPollAgeFloor = 30 * time.Second

// readyPollAge is how old the last successful poll may be for the daemon to be ready:
// max(3 × poll_interval, 30s). An idle worker polls every poll_interval and a failed poll is
// retried after 0.5-1 s, then 1-2 s, so three intervals absorb one slow or failed request and
// its retry without flapping; the 30 s floor keeps a short interval from flapping on one request
// that hits the WorkOS client's 15 s timeout, and covers a busy page: polling pauses while a
// page's events are delivered (100 events at SES's default 14/s take about 7 s). A page held up
// longer than that by an event retrying with backoff shows as not ready, and rightly so: new
// events are not being picked up meanwhile.
func readyPollAge(pollInterval time.Duration) time.Duration {
	return max(3*pollInterval, readyPollAgeFloor)
}

// readiness answers /readyz: 200 only when the store is readable, WorkOS answered a poll
// recently and accepts the API key, sending is not paused, and shutdown has not begun;
// otherwise 503 with one short line per reason.
type readiness struct {
	store    func() error // nil error: the store is open and readable
	lastPoll func() time.Time
	// pauseReason says why sending is paused; "" when it is not.
	pauseReason func() string
	// keyRejected: WorkOS refused the API key on its last answer about it; keyName names the
	// key for the operator (never its secret part).
	keyRejected func() bool
	keyName     string
	maxPollAge  time.Duration
	now         func() time.Time
	stopping    atomic.Bool
}

// notReady lists why the daemon is not ready; empty when it is.
func (r *readiness) notReady() []string {
	var why []string
	if r.stopping.Load() {
		why = append(why, "shutting down")
	}
	if err := r.store(); err != nil {
		why = append(why, "store is not readable")
	}
	switch last := r.lastPoll(); {
	case last.IsZero():
		why = append(why, "no successful poll of WorkOS events yet")
	case r.now().Sub(last) > r.maxPollAge:
		why = append(why, fmt.Sprintf("last successful poll of WorkOS events %s ago (limit %s)",
			r.now().Sub(last).Round(time.Second), r.maxPollAge))
	}
	if r.keyRejected != nil && r.keyRejected() {
		why = append(why, "WorkOS rejects the API key ("+r.keyName+"): set a valid one")
	}
	if reason := r.pauseReason(); reason != "" {
		why = append(why, "sending is paused: "+reason)
	}
	return why
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if why := r.notReady(); len(why) > 0 {
		plain(w, http.StatusServiceUnavailable, "not ready: "+strings.Join(why, "; ")+"\n")
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
