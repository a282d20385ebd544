// Package admin serves what operators and their tools ask a running daemon: the admin listener
// (admin.listen: health, readiness, metrics, status, dead letters) and the control socket beside
// the store, through which the CLI also changes the daemon's state while it runs.
package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Server is an HTTP listener: the admin listener (admin.listen, loopback by default) with
// /healthz, /readyz, /metrics and the operator's /status and /dead, or the send API's
// (api.listen). Admin responses never carry secrets: no API key, code, token or link is known
// to any handler.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

// Listen binds addr, the value of the setting key, and serves routes on it, each path
// matched exactly (a path ending in "/" matches its subtree, as with http.ServeMux). Binding happens here, so a port in use is
// a startup error and the caller can report READY only once the listener is there.
func Listen(key, addr string, routes map[string]http.Handler, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: cannot listen: %w", key, addr, err)
	}
	return serve(strings.TrimSuffix(key, ".listen"), ln, routes, 30*time.Second, log), nil
}

// serve serves routes on ln until Shutdown; name names the listener in logs, writeTimeout bounds
// an answer.
func serve(name string, ln net.Listener, routes map[string]http.Handler, writeTimeout time.Duration, log *zap.Logger) *Server {
	mux := http.NewServeMux()
	for _, path := range slices.Sorted(maps.Keys(routes)) {
		mux.Handle(path, routes[path])
	}
	a := &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       time.Minute,
			ErrorLog:          zap.NewStdLog(log.Named(name)),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("listener stopped", zap.String("listener", name), zap.Error(err))
		}
	}()
	return a
}

// Addr is the bound address (useful with port 0).
func (a *Server) Addr() string { return a.ln.Addr().String() }

// Shutdown stops accepting, lets requests in progress finish until ctx ends, then closes.
func (a *Server) Shutdown(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	if err != nil {
		_ = a.srv.Close()
	}
	<-a.done
	return err
}
