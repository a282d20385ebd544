package main

import (
	"github.com/workos-emailer/workos-emailer/internal/config"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/worker"
)

// paceSends gives the worker its send limiter (internal/sendlimit), which it takes a permit of
// per email: for ses, fed by the daemon's one SES quota reader (observability.go), as are the
// metrics; for smtp, at mailer.smtp.max_send_rate when set. The file and log drivers are not
// paced.
func paceSends(cfg *config.Config, sender worker.Sender, opts *worker.Options, obs *daemonObs, log *zap.Logger) {
	if _, ok := sender.(*mailer.SMTP); ok && cfg.Mailer.SMTP.MaxSendRate > 0 {
		// A relay's own limit, as configured: there is no quota to read.
		lim := sendlimit.New(sendlimit.Options{Rate: cfg.Mailer.SMTP.MaxSendRate, Log: log})
		opts.Limiter, obs.limiter = lim, lim
		log.Info("SMTP sends are paced", zap.Float64("rate", cfg.Mailer.SMTP.MaxSendRate))
		return
	}
	if _, ok := sender.(*mailer.SES); !ok {
		return
	}
	lim := sendlimit.New(sendlimit.Options{Rate: cfg.Mailer.SES.MaxSendRate, ReadEvery: sesQuotaEvery, Log: log})
	opts.Limiter = lim
	obs.limiter = lim
	st := lim.Status()
	log.Info("SES sends are paced", zap.Float64("rate", st.Rate), zap.String("rate_source", st.RateSource))
}

// limitStatus is the limiter's state for the status document; nil without a limiter.
func (o *daemonObs) limitStatus() *sendlimit.Status {
	if o.limiter == nil {
		return nil
	}
	st := o.limiter.Status()
	return &st
}
