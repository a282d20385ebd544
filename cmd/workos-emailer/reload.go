package main

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"github.com/workos-emailer/workos-emailer/internal/metrics"
	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// A reload (SIGHUP, `systemctl reload`) reads the configuration again, files holding secrets
// included, and validates all of it as a start would, templates tried. Only then does it apply
// what can change while the daemon runs: templates, brand, links, organizations' locales and
// senders, enabled kinds, log level, the WorkOS API key and budget, and the send rate. Each try
// of an email that starts after it uses the new settings (worker.Reload); tries in flight finish
// with the old ones. Anything invalid keeps the running configuration:
// the log says why, and status and the metrics show it. Settings that only a restart changes (the
// store, the listeners, the mail driver and its connection, delivery) are named in the log.

// reloader owns the running configuration; only its goroutine touches it.
type reloader struct {
	load    func() (*config.Config, error)
	running *config.Config
	level   zap.AtomicLevel
	worker  *worker.Worker
	wos     *workosapi.Client
	budget  *workosapi.Budget
	limiter *sendlimit.Limiter // nil: sends are not paced
	ses     *mailer.SES        // nil for other drivers
	metrics *metrics.Metrics
	log     *zap.Logger
	// last is the last reload's outcome, for status; nil before the first.
	last atomic.Pointer[admin.Reload]
	hup  chan os.Signal
}

// catch takes SIGHUP from now on, so one that arrives while the daemon starts waits for watch
// instead of ending the process (SIGHUP's default); stop lets go of it.
func (r *reloader) catch() (stop func()) {
	r.hup = make(chan os.Signal, 1)
	signal.Notify(r.hup, syscall.SIGHUP)
	return func() { signal.Stop(r.hup) }
}

// watch reloads on every SIGHUP until ctx ends; done closes when it has returned.
func (r *reloader) watch(ctx context.Context) (done <-chan struct{}) {
	d := make(chan struct{})
	go func() {
		defer close(d)
		for {
			select {
			case <-r.hup:
				r.reload(ctx)
			case <-ctx.Done():
				return
			}
		}
	}()
	return d
}

// reload applies the configuration as it is now, or keeps the running one and says why.
func (r *reloader) reload(ctx context.Context) {
	// systemd waits for READY=1 after RELOADING=1, so `systemctl reload` returns when it is done.
	sdNotify(r.log, daemon.SdNotifyReloading+"\nMONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
	r.log.Info("reloading the configuration (SIGHUP)")
	restartOnly, err := r.apply(ctx)
	at := time.Now()
	if ctx.Err() != nil {
		r.log.Info("reload abandoned: shutting down") // STOPPING=1 was sent: no READY=1 now
		return
	}
	defer sdNotify(r.log, daemon.SdNotifyReady)
	if err != nil {
		r.last.Store(&admin.Reload{At: at, Error: err.Error()})
		r.metrics.Reloaded(false)
		r.log.Error("reload refused: the running configuration stays in force; fix the configuration and reload again",
			zap.Error(err))
		return
	}
	r.last.Store(&admin.Reload{At: at, OK: true, RestartNeeded: restartOnly})
	r.metrics.Reloaded(true)
	if len(restartOnly) > 0 {
		r.log.Warn("configuration reloaded; these settings changed but take effect only at a restart",
			zap.Strings("settings", restartOnly))
		return
	}
	r.log.Info("configuration reloaded")
}

// apply loads and checks everything first, then changes the daemon; it returns the changed
// settings that need a restart.
func (r *reloader) apply(ctx context.Context) ([]string, error) {
	cfg, err := r.load()
	if err != nil {
		return nil, err
	}
	if err := cfg.RequireAPIKey(); err != nil {
		return nil, err
	}
	templates, err := cfg.LoadTemplates()
	if err != nil {
		return nil, err
	}
	restartOnly := restartOnlyChanges(r.running, cfg, r.limiter != nil)
	if r.ses != nil {
		// A new organization's sender SES refuses would pause every email.
		if err := checkSESSenders(ctx, cfg, r.ses, r.log); err != nil {
			return nil, err
		}
	}
	r.worker.Reload(worker.Settings{Renderer: templates, Kinds: cfg.Events.Enabled, Links: cfg.LinkTemplates(),
		AppURL: cfg.Links.AppURL, UserLocaleKey: cfg.Templates.UserLocaleKey})
	if cfg.WorkOS.APIKey != r.running.WorkOS.APIKey {
		r.wos.SetAPIKey(cfg.WorkOS.APIKey)
		r.log.Info("WorkOS API key replaced", zap.String("key", workosapi.KeyName(cfg.WorkOS.APIKey)))
	}
	r.budget.SetMax(cfg.WorkOS.MaxRequestsPerSecond)
	if r.limiter != nil {
		switch r.running.Mailer.Driver {
		case "ses":
			r.limiter.SetRate(cfg.Mailer.SES.MaxSendRate) // 0: the account's quota again
		case "smtp":
			if cfg.Mailer.SMTP.MaxSendRate > 0 { // 0 (unpaced) needs a restart: restartOnlyChanges
				r.limiter.SetRate(cfg.Mailer.SMTP.MaxSendRate)
			}
		}
	}
	r.level.SetLevel(cfg.LogLevel())
	r.running = cfg
	return restartOnly, nil
}

// restartOnlyChanges names the sections whose settings differ and that a reload does not apply.
// paced says whether the daemon paces its sends: then the send rate is applied, except SMTP's
// to or from 0 (unpaced), which makes or drops the limiter.
func restartOnlyChanges(old, cur *config.Config, paced bool) []string {
	strip := func(c *config.Config) config.Config {
		s := *c
		s.WorkOS.APIKey, s.WorkOS.APIKeyFile, s.WorkOS.MaxRequestsPerSecond = "", "", 0
		if paced && old.Mailer.Driver == cur.Mailer.Driver {
			s.Mailer.SES.MaxSendRate = 0
			if old.Mailer.SMTP.MaxSendRate > 0 && cur.Mailer.SMTP.MaxSendRate > 0 {
				s.Mailer.SMTP.MaxSendRate = 0
			}
		}
		return s
	}
	a, b := strip(old), strip(cur)
	var changed []string
	for _, s := range []struct {
		name string
		a, b any
	}{
		{"workos", a.WorkOS, b.WorkOS}, {"store", a.Store, b.Store}, {"mailer", a.Mailer, b.Mailer},
		{"delivery", a.Delivery, b.Delivery}, {"admin", a.Admin, b.Admin}, {"api", a.API, b.API},
		{"log.format", a.Log.Format, b.Log.Format},
		// SES holds the credentials it was built with.
		{"AWS credentials", old.AWSCredentials(), cur.AWSCredentials()},
	} {
		ja, _ := json.Marshal(s.a)
		jb, _ := json.Marshal(s.b)
		if string(ja) != string(jb) {
			changed = append(changed, s.name)
		}
	}
	return changed
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants with RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}
