package main

import (
	"context"
	"fmt"
	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"github.com/workos-emailer/workos-emailer/sesfeedback"
	"github.com/workos-emailer/workos-emailer/workosapi"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/metrics"
	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
)

// sesQuotaEvery is how often the SES send quota is read, for the send limiter and the metrics.
const sesQuotaEvery = 5 * time.Minute

// daemonObs is what the run command shows outside: metrics, the admin listener and systemd
// notifications. Order of use: newDaemonObs (its Metrics is the worker's Observer), start once
// the store is open and the worker built, shutdown after the worker has drained.
type daemonObs struct {
	metrics *metrics.Metrics
	log     *zap.Logger
	// limiter paces SES sends (sendlimit.go); nil for other drivers.
	limiter *sendlimit.Limiter
	// feedback reads SES's feedback from SQS (feedback.go); nil when off.
	feedback *sesfeedback.Reader

	ready    *admin.Readiness
	admin    *admin.Server
	control  *admin.Server
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopDog  func()
	stopOnce sync.Once
}

func newDaemonObs(cfg *config.Config, log *zap.Logger) *daemonObs {
	return &daemonObs{
		metrics: metrics.New(metrics.Options{Version: version, Commit: buildCommit(), Kinds: cfg.Events.Enabled}),
		log:     log,
		stopDog: func() {},
	}
}

// start binds the control socket (control: its routes) and the admin listener (routes adds to
// /healthz, /readyz and /metrics), tells systemd READY=1, starts the watchdog and the SES quota
// reader, and sends STOPPING=1 as soon as ctx ends. A listener that cannot bind is an error
// naming its setting.
func (o *daemonObs) start(ctx context.Context, cfg *config.Config, st store.Backend, w *worker.Worker, keyRejected func() bool,
	sender worker.Sender, routes, control map[string]http.Handler) error {
	o.metrics.WatchWorker(w)
	o.ready = &admin.Readiness{
		Store:       func() error { _, err := st.Position(); return err },
		LastPoll:    w.LastSuccessfulPoll,
		PauseReason: w.PauseReason,
		KeyRejected: keyRejected,
		KeyName:     workosapi.KeyName(cfg.WorkOS.APIKey),
		MaxPollAge:  admin.ReadyPollAge(cfg.WorkOS.PollInterval),
		Now:         time.Now,
	}
	if sharedStore(cfg) {
		o.ready.Role = func() string { return string(w.Role()) }
	}
	if o.feedback != nil {
		o.ready.Feedback = func() string {
			if ok, why, _ := o.feedback.Status(); !ok {
				return why
			}
			return ""
		}
	}
	ctl, err := admin.ListenControl(cfg.ControlSocket(), control, o.log)
	if err != nil {
		return err
	}
	o.control = ctl
	o.log.Info("control socket listening", zap.String("socket", cfg.ControlSocket()))
	if cfg.Admin.Listen != "" {
		all := map[string]http.Handler{"/healthz": admin.Healthz(), "/readyz": o.ready, "/metrics": o.metrics.Handler()}
		for path, h := range routes {
			if _, taken := all[path]; taken {
				return fmt.Errorf("admin route %s is mounted twice", path)
			}
			all[path] = h
		}
		srv, err := admin.Listen("admin.listen", cfg.Admin.Listen, all, o.log)
		if err != nil {
			return err
		}
		o.admin = srv
		o.log.Info("admin listener started", zap.String("addr", srv.Addr()),
			zap.Duration("ready_max_poll_age", o.ready.MaxPollAge))
	}

	bg, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	if o.limiter != nil {
		o.metrics.WatchLimiter(o.limiter.Status)
	}
	if src, ok := sender.(metrics.QuotaSource); ok {
		if o.limiter != nil {
			src = o.limiter.Source(src) // one reader feeds the limiter and the metrics
		}
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			o.metrics.PollQuota(bg, src, sesQuotaEvery, o.log)
		}()
	}
	if o.feedback != nil {
		o.wg.Go(func() { o.feedback.Run(bg) }) // stops with the admin listener, before the store closes
	}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		select {
		case <-ctx.Done():
			o.stopping()
		case <-bg.Done():
		}
	}()

	sdNotify(o.log, daemon.SdNotifyReady)
	o.stopDog = startWatchdog(o.log, w.Heartbeat)
	return nil
}

// stopping marks the daemon not ready and tells systemd, once.
func (o *daemonObs) stopping() {
	o.stopOnce.Do(func() {
		if o.ready != nil {
			o.ready.Stopping()
		}
		sdNotify(o.log, daemon.SdNotifyStopping)
	})
}

// shutdown stops the watchdog and the quota reader and closes the admin listener. Call it after
// the worker has returned, before the store closes.
func (o *daemonObs) shutdown() {
	o.stopping()
	o.stopDog()
	if o.cancel != nil {
		o.cancel()
	}
	o.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, l := range []struct {
		name string
		srv  *admin.Server
	}{{"the admin listener", o.admin}, {"the control socket", o.control}} {
		if l.srv == nil {
			continue
		}
		if err := l.srv.Shutdown(ctx); err != nil {
			o.log.Warn("closing "+l.name, zap.Error(err))
		}
	}
}
