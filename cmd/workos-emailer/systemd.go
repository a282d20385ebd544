package main

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// sdNotify tells systemd about a state change (Type=notify). Without NOTIFY_SOCKET it does
// nothing; a failure is logged and otherwise ignored, since the daemon works without systemd.
func sdNotify(log *zap.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("telling systemd the service state failed", zap.String("state", state), zap.Error(err))
	}
}

// watchdogStaleAfter is how long the worker's heartbeat may stand still before the watchdog
// pings stop. The longest stretch a healthy worker goes without a beat is one delivery attempt
// with its WorkOS calls (up to three at 15 s each) and the SES send (30 s), about 75 s; waits
// beat every few seconds. So 2 minutes, or the watchdog interval if that is longer: a deadlocked
// worker is restarted within that plus WatchdogSec.
func watchdogStaleAfter(interval time.Duration) time.Duration {
	return max(interval, 2*time.Minute)
}

// startWatchdog sends WATCHDOG=1 at half the interval systemd asked for (WATCHDOG_USEC) while
// heartbeat is fresh. It does nothing when the watchdog is off. stop ends it.
func startWatchdog(log *zap.Logger, heartbeat func() time.Time) (stop func()) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("ignoring the systemd watchdog setting", zap.Error(err))
	}
	if err != nil || interval <= 0 {
		return func() {}
	}
	log.Info("systemd watchdog enabled", zap.Duration("interval", interval),
		zap.Duration("heartbeat_stale_after", watchdogStaleAfter(interval)))
	ctx, cancel := context.WithCancel(context.Background())
	ticker := time.NewTicker(interval / 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchdogLoop(ctx, ticker.C, heartbeat, watchdogStaleAfter(interval), func() { sdNotify(log, daemon.SdNotifyWatchdog) }, log)
	}()
	return func() {
		cancel()
		ticker.Stop()
		<-done
	}
}

// watchdogLoop pings at once and then at every tick while the heartbeat is younger than
// staleAfter; a stale heartbeat withholds pings, so systemd restarts the service.
func watchdogLoop(ctx context.Context, ticks <-chan time.Time, heartbeat func() time.Time, staleAfter time.Duration,
	ping func(), log *zap.Logger) {
	stale := false
	for {
		age := time.Since(heartbeat())
		switch {
		case age < staleAfter:
			if stale {
				log.Info("worker heartbeat is fresh again; watchdog pings resume")
			}
			stale = false
			ping()
		case !stale:
			stale = true
			log.Error("worker heartbeat is stale: the delivery loop looks stuck; withholding watchdog pings so systemd restarts the service",
				zap.Duration("heartbeat_age", age.Round(time.Second)))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
	}
}
