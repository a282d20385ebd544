package main

import (
	"cmp"
	"context"
	"fmt"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/spf13/cobra"
	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"github.com/workos-emailer/workos-emailer/internal/sealed"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/sendapi"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
	"go.uber.org/zap"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// newRunCmd is `run`: the daemon.
func newRunCmd(load loadFunc, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Poll WorkOS events and send emails until SIGTERM/SIGINT",
		Long:  runHelp,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			if err := cfg.RequireAPIKey(); err != nil {
				return err
			}
			level := zap.NewAtomicLevelAt(cfg.LogLevel())
			log := newLogger(cfg, level, stderr)
			defer func() { _ = log.Sync() }()
			ctx, stop := shutdownContext(cmd.Context(), log)
			defer stop()
			return runDaemon(ctx, cfg, log, &reloader{load: func() (*config.Config, error) { return load(cmd) }, level: level})
		},
	}
}

const runHelp = `Poll the WorkOS Events API, send each email once, and record it, until SIGTERM or SIGINT (a
second signal exits at once). SIGHUP reloads the configuration.

Configuration, first found wins:
  --config PATH, else ./config.yaml, else /etc/workos-emailer/config.yaml, else built-in defaults.
  Every key can be set in the environment: WORKOS_EMAILER_ + the key in upper case with . as _
  (WORKOS_EMAILER_MAILER_SES_REGION for mailer.ses.region); an unknown WORKOS_EMAILER_ variable
  is refused. Durations take a unit: 90s, 10m, 12h, 45d.

Secrets (never in the config file you share):
  WORKOS_API_KEY, or WORKOS_API_KEY_FILE naming a file that holds it
  WORKOS_EMAILER_API_TOKEN (send API), WORKOS_EMAILER_MAILER_SMTP_PASSWORD,
  WORKOS_EMAILER_STORE_DSN (store.driver: postgres), or their *_FILE keys
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or *_FILE), else the AWS chain (profile, instance role)
  systemd credentials in $CREDENTIALS_DIRECTORY: workos_api_key, api_token, api_previous_token,
  smtp_password, store_dsn, aws_access_key_id, aws_secret_access_key, aws_session_token

While it runs, status, dead and cursor commands reach it through its control socket beside the
store (store.path + ".sock", or admin.socket); /healthz, /readyz and /metrics are on admin.listen.
With store.driver: postgres several daemons share the database and one leads (sends) at a time;
the commands then read and change the database from any host, and /readyz says leader or standby.

Exit codes:
  0  stopped cleanly
  1  runtime failure (the store failed, a listener could not bind, SES refuses the sender)
  2  invalid configuration or usage: the message names the key
  3  the store is locked by another process (another daemon runs with it)`

// shutdownContext is cancelled by the first SIGTERM or SIGINT, which lets in-flight sends finish
// and be recorded; a second signal exits at once.
func shutdownContext(parent context.Context, log *zap.Logger) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			log.Info("shutting down: finishing in-flight sends (signal again to exit at once)", zap.String("signal", sig.String()))
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			log.Warn("second signal: exiting now; sends in flight are settled as ambiguous at the next start", zap.String("signal", sig.String()))
			_ = log.Sync()
			os.Exit(exitFailure)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

// runDaemon opens the store, builds the pipeline and runs it until ctx ends.
// reload is filled in here and reloads on SIGHUP (reload.go).
func runDaemon(ctx context.Context, cfg *config.Config, log *zap.Logger, reload *reloader) error {
	defer reload.catch()()
	templates, err := cfg.LoadTemplates()
	if err != nil {
		return err
	}
	st, leadership, created, err := openDaemonStore(ctx, cfg, log) // storeopen.go
	if err != nil && ctx.Err() != nil {
		log.Info("stopped while connecting to the store; nothing was started")
		return nil
	}
	if err != nil {
		return err
	}
	if created {
		log.Warn("created a new store: nothing was sent from it before, and polling starts at workos.start; if a store "+
			"existed, store.path does not name it", zap.String("store", cfg.Store.Path), zap.String("start", cfg.WorkOS.Start))
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("closing the store failed", zap.Error(err))
		}
	}()
	sender, err := newSender(ctx, cfg, log)
	if err != nil {
		return err
	}
	if c, ok := sender.(io.Closer); ok {
		defer func() { _ = c.Close() }() // the SMTP driver's idle connections, after the last send
	}
	// Observability (observability.go): metrics, admin listener, systemd READY/STOPPING/watchdog.
	obs := newDaemonObs(cfg, log)
	budget := workosapi.NewBudget(workosapi.BudgetOptions{PerSecond: cfg.WorkOS.MaxRequestsPerSecond, Log: log, Observer: obs.metrics})
	obs.metrics.WatchBudget(budget)
	wos := workosapi.New(cfg.WorkOS.APIKey, cfg.WorkOS.BaseURL, 0, budget)
	wos.SetLogger(log)
	opts := workerOptions(cfg)
	opts.Observer = obs.metrics
	if opts.Leadership = leadership; leadership != nil {
		obs.metrics.Standby()
	}
	paceSends(cfg, sender, &opts, obs, log) // sendlimit.go
	if len(cfg.APITokens()) > 0 {
		if opts.Sealer, err = sealed.New(cfg.APITokens()...); err != nil {
			return err
		}
	}
	w := worker.New(opts, wos, st, sender, templates, log)
	// The send API (api.listen) answers once a request is durable; it may take requests before
	// Run starts delivering them, and stops taking them when shutdown begins.
	stopAPI, err := startSendAPI(ctx, cfg, w, obs, log)
	if err != nil {
		return err
	}
	defer stopAPI()
	// What `status` and `dead list` ask a running daemon, which holds the store's lock: on the
	// admin listener and the control socket, which also takes the operator's changes.
	status := admin.StatusHandler(st, w.Kinds, func() admin.Live {
		live := admin.Live{Role: string(w.Role()), LastPoll: w.LastSuccessfulPoll(), SESPaused: w.Paused(), PauseReason: w.PauseReason(),
			KeyRejected: wos.KeyRejected(), SendLimit: obs.limitStatus()}
		b := budget.Status()
		live.Budget, live.Backlog = &b, w.Backlog()
		if q, ok := obs.metrics.LastQuota(); ok {
			live.SESQuota = &admin.SESQuota{MaxSendRate: q.MaxSendRate, Max24HourSend: q.Max24HourSend, SentLast24Hours: q.SentLast24Hours,
				Sandbox: q.Sandbox}
		}
		live.Reload = reload.last.Load()
		if obs.feedback != nil {
			ok, why, at := obs.feedback.Status()
			live.FeedbackQueue = &admin.FeedbackQueue{OK: ok, Error: why, LastOKAt: timeOrNil(at)}
		}
		return live
	})
	dead := admin.DeadHandler(st)
	control := &admin.Control{Store: st, Worker: w, Retention: cfg.Store.Retention,
		RetentionText: config.FormatDuration(cfg.Store.Retention), Status: status, Dead: dead, Log: log}
	if obs.feedback, err = newFeedbackReader(ctx, cfg, st, obs, log); err != nil { // feedback.go
		return err
	}
	if err := obs.start(ctx, cfg, st, w, wos.KeyRejected, sender, map[string]http.Handler{"/status": status, "/dead": dead},
		control.Routes()); err != nil {
		return err
	}
	defer obs.shutdown() // after the worker drains, before the store closes
	reload.running, reload.worker, reload.wos, reload.budget, reload.limiter = cfg, w, wos, budget, obs.limiter
	reload.ses, _ = sender.(*mailer.SES)
	reload.metrics, reload.log = obs.metrics, log
	watchCtx, stopWatch := context.WithCancel(ctx)
	reloaded := reload.watch(watchCtx)
	defer func() { stopWatch(); <-reloaded }() // a reload in progress gives up
	log.Info("workos-emailer started", zap.String("version", version), zap.String("store", st.Path()),
		zap.String("mailer", cfg.Mailer.Driver), zap.String("config", cmp.Or(cfg.FileUsed(), "(none)")))
	if err := w.Run(ctx); err != nil {
		return fmt.Errorf("delivery pipeline stopped: %w", err)
	}
	log.Info("workos-emailer stopped cleanly")
	return nil
}

// startSendAPI serves the send API when api.listen is set, until ctx ends or stop is called.
func startSendAPI(ctx context.Context, cfg *config.Config, w *worker.Worker, obs *daemonObs, log *zap.Logger) (stop func(), err error) {
	if cfg.API.Listen == "" {
		return func() {}, nil
	}
	api, err := sendapi.New(w, sendapi.Options{Tokens: cfg.APITokens(), Log: log, Observer: obs.metrics})
	if err != nil {
		return nil, config.Error{Err: err}
	}
	srv, err := admin.Listen("api.listen", cfg.API.Listen, api.Routes(), log)
	if err != nil {
		return nil, err
	}
	log.Info("send API listening", zap.String("addr", srv.Addr()))
	var once sync.Once
	stop = func() {
		once.Do(func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.Warn("send API: shutdown did not finish cleanly", zap.Error(err))
			}
		})
	}
	go func() {
		<-ctx.Done()
		stop()
	}()
	return stop, nil
}

func workerOptions(cfg *config.Config) worker.Options {
	return worker.Options{
		PageSize:      cfg.WorkOS.PageSize,
		PollInterval:  cfg.WorkOS.PollInterval,
		StartSince:    cfg.StartSince(),
		Concurrency:   cfg.Delivery.Concurrency,
		MaxAttempts:   cfg.Delivery.MaxAttempts,
		MaxEventAge:   cfg.Delivery.MaxEventAge,
		OnAmbiguous:   cfg.Delivery.OnAmbiguous,
		Kinds:         cfg.Events.Enabled,
		Links:         cfg.LinkTemplates(),
		AppURL:        cfg.Links.AppURL,
		UserLocaleKey: cfg.Templates.UserLocaleKey,
		Retention:     cfg.Store.Retention,
	}
}

func newSender(ctx context.Context, cfg *config.Config, log *zap.Logger) (worker.Sender, error) {
	switch cfg.Mailer.Driver {
	case "file":
		return &mailer.File{Dir: cfg.Mailer.File.Dir, From: cfg.Mailer.From, ReplyTo: cfg.Mailer.ReplyTo, ListUnsubscribe: cfg.Mailer.ListUnsubscribe}, nil
	case "log":
		return &mailer.Log{Logger: log}, nil
	case "smtp":
		s := cfg.Mailer.SMTP
		smtp, err := mailer.NewSMTP(mailer.SMTPOptions{Host: s.Host, Port: s.Port, Username: s.Username, Password: s.Password,
			TLS: s.TLS, From: cfg.Mailer.From, ReplyTo: cfg.Mailer.ReplyTo, ListUnsubscribe: cfg.Mailer.ListUnsubscribe,
			MaxConns: cfg.Delivery.Concurrency})
		if err != nil {
			return nil, config.Error{Err: err}
		}
		return smtp, nil
	}
	opts := mailer.SESOptions{
		Region: cfg.Mailer.SES.Region, Endpoint: cfg.Mailer.SES.Endpoint,
		ConfigurationSet: cfg.Mailer.SES.ConfigurationSet, From: cfg.Mailer.From, ReplyTo: cfg.Mailer.ReplyTo,
		ListUnsubscribe: cfg.Mailer.ListUnsubscribe,
	}
	if c := cfg.AWSCredentials(); c != nil { // from AWS_*_FILE or systemd credentials
		opts.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	}
	ses, err := mailer.NewSES(ctx, opts)
	if err != nil {
		return nil, config.Error{Err: fmt.Errorf("mailer.ses: %w", err)}
	}
	if err := ses.CheckCredentials(ctx); err != nil {
		return nil, err
	}
	if err := checkSESSenders(ctx, cfg, ses, log); err != nil {
		return nil, err
	}
	return ses, nil
}

// checkSESSenders refuses to start with a sender SES would refuse every email from (mailer.from
// or an organization's from not verified, sending paused for the account), and says at start
// that the account is in the sandbox, where only verified recipients receive mail.
func checkSESSenders(ctx context.Context, cfg *config.Config, ses *mailer.SES, log *zap.Logger) error {
	var froms []string
	for _, o := range cfg.Organizations {
		froms = append(froms, o.From)
	}
	check, err := ses.CheckSenders(ctx, froms...)
	if err != nil {
		return fmt.Errorf("checking the senders with SES: %w", err)
	}
	for _, w := range append(check.Warnings, check.Unchecked...) {
		log.Warn("SES sender check: " + w)
	}
	if check.Sandbox {
		log.Warn("the SES account is in the sandbox in this region: only verified addresses and domains receive mail, and "+
			"emails to anyone else are recorded dead; request production access in the SES console before going live",
			zap.String("region", check.Region))
	}
	for _, v := range check.Senders {
		log.Info("SES sender verified", zap.String("identity", v.Identity), zap.Bool("domain", v.Domain))
	}
	return nil
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
