// Command workos-emailer sends the emails of WorkOS User Management (invitations, Magic Auth
// codes, email verification codes, password resets) from the WorkOS Events API through Amazon
// SES, each email once.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
	_ "time/tzdata" // templates.time_zone works where the system has no zoneinfo (a minimal container, DynamicUser)

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/sealed"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/sendapi"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// Set by the linker (see Makefile).
var (
	version = "dev"
	commit  = ""
)

// Exit codes of CONTRACT.md.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitLocked  = 3
)

// usageError is bad command-line usage: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

func main() {
	os.Exit(execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs the CLI and maps errors to exit codes.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "workos-emailer:", err)
	var ce configError
	var ue usageError
	switch {
	case errors.Is(err, store.ErrLocked):
		return exitLocked
	case errors.As(err, &ce), errors.As(err, &ue), strings.HasPrefix(err.Error(), "unknown command"):
		return exitUsage
	}
	return exitFailure
}

type globalFlags struct {
	configPath string
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:           "workos-emailer",
		Short:         "Send WorkOS User Management emails through Amazon SES, each exactly once",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.configPath, "config", "", "config file (default ./config.yaml, else /etc/workos-emailer/config.yaml)")

	load := func(cmd *cobra.Command) (*Config, error) {
		return loadConfig(g.configPath, cmd.Flags().Changed("config"))
	}
	root.AddCommand(
		&cobra.Command{
			Use:   "run",
			Short: "Poll WorkOS events and send emails until SIGTERM/SIGINT",
			Args:  noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, err := load(cmd)
				if err != nil {
					return err
				}
				if err := cfg.requireAPIKey(); err != nil {
					return err
				}
				log, err := newLogger(cfg, stderr)
				if err != nil {
					return err
				}
				defer func() { _ = log.Sync() }()
				ctx, stop := shutdownContext(cmd.Context(), log)
				defer stop()
				return runDaemon(ctx, cfg, log)
			},
		},
		newDemoCmd(stdout, stderr),
		newRenderCmd(&g, stdout, stderr),
		&cobra.Command{
			Use:   "version",
			Short: "Print version, commit and Go version",
			Args:  noArgs,
			Run: func(cmd *cobra.Command, _ []string) {
				if c := buildCommit(); c != version {
					fmt.Fprintf(stdout, "workos-emailer %s (commit %s, %s)\n", version, c, runtime.Version())
				} else { // a build between releases is named after its commit: once is enough
					fmt.Fprintf(stdout, "workos-emailer %s (%s)\n", version, runtime.Version())
				}
			},
		},
	)
	root.AddCommand(opsCommands(load, stdout, stderr)...) // status, cursor, dead: ops.go, status.go
	root.AddCommand(newSendCmd(load, stdout, stderr))     // send test: sendtest.go
	return root
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func newLogger(cfg *Config, w io.Writer) (*zap.Logger, error) {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.Log.Format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(w), cfg.logLevel)
	return zap.New(core), nil
}

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
func runDaemon(ctx context.Context, cfg *Config, log *zap.Logger) error {
	templates, err := cfg.loadTemplates()
	if err != nil {
		return err
	}
	_, statErr := os.Stat(cfg.Store.Path)
	st, err := store.Open(cfg.Store.Path, store.Options{Kinds: kinds.Names()})
	if err != nil {
		return err
	}
	if errors.Is(statErr, fs.ErrNotExist) {
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
	opts := workerOptions(cfg)
	opts.Observer = obs.metrics
	paceSends(cfg, sender, &opts, obs, log) // sendlimit.go
	if len(cfg.apiTokens) > 0 {
		if opts.Sealer, err = sealed.New(cfg.apiTokens...); err != nil {
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
	// Admin routes besides /healthz, /readyz and /metrics: what `status` and `dead list` ask a
	// running daemon, which holds the store's lock.
	adminRoutes := map[string]http.Handler{
		"/status": statusHandler(st, cfg.Events.Enabled, func() liveInfo {
			live := liveInfo{LastPoll: w.LastSuccessfulPoll(), SESPaused: w.Paused(), PauseReason: w.PauseReason(),
				KeyRejected: wos.KeyRejected(), SendLimit: obs.limitStatus()}
			b := budget.Status()
			live.Budget, live.Backlog = &b, w.Backlog()
			if q, ok := obs.metrics.LastQuota(); ok {
				live.SESQuota = &sesQuota{MaxSendRate: q.MaxSendRate, Max24HourSend: q.Max24HourSend, SentLast24Hours: q.SentLast24Hours}
			}
			return live
		}),
		"/dead": deadHandler(st),
	}
	if err := obs.start(ctx, cfg, st, w, wos.KeyRejected, sender, adminRoutes); err != nil {
		return err
	}
	defer obs.shutdown() // after the worker drains, before the store closes
	log.Info("workos-emailer started", zap.String("version", version), zap.String("store", st.Path()),
		zap.String("mailer", cfg.Mailer.Driver), zap.String("config", orDefault(cfg.configFileUsed, "(none)")))
	if err := w.Run(ctx); err != nil {
		return fmt.Errorf("delivery pipeline stopped: %w", err)
	}
	log.Info("workos-emailer stopped cleanly")
	return nil
}

// startSendAPI serves the send API when api.listen is set, until ctx ends or stop is called.
func startSendAPI(ctx context.Context, cfg *Config, w *worker.Worker, obs *daemonObs, log *zap.Logger) (stop func(), err error) {
	if cfg.API.Listen == "" {
		return func() {}, nil
	}
	api, err := sendapi.New(w, sendapi.Options{Tokens: cfg.apiTokens, Log: log, Observer: obs.metrics})
	if err != nil {
		return nil, configError{err}
	}
	srv, err := listenHTTP("api.listen", cfg.API.Listen, api.Routes(), log)
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

func workerOptions(cfg *Config) worker.Options {
	return worker.Options{
		PageSize:      cfg.WorkOS.PageSize,
		PollInterval:  cfg.WorkOS.PollInterval,
		StartSince:    startSince(cfg),
		Concurrency:   cfg.Delivery.Concurrency,
		MaxAttempts:   cfg.Delivery.MaxAttempts,
		MaxEventAge:   cfg.Delivery.MaxEventAge,
		OnAmbiguous:   cfg.Delivery.OnAmbiguous,
		Kinds:         cfg.Events.Enabled,
		Links:         map[string]*template.Template{"invitation_url": cfg.invitationURL, "password_reset_url": cfg.passwordURL},
		AppURL:        cfg.Links.AppURL,
		UserLocaleKey: cfg.Templates.UserLocaleKey,
		Retention:     cfg.Store.Retention,
	}
}

func newSender(ctx context.Context, cfg *Config, log *zap.Logger) (worker.Sender, error) {
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
			return nil, configError{err}
		}
		return smtp, nil
	}
	ses, err := mailer.NewSES(ctx, mailer.SESOptions{
		Region: cfg.Mailer.SES.Region, Endpoint: cfg.Mailer.SES.Endpoint,
		ConfigurationSet: cfg.Mailer.SES.ConfigurationSet, From: cfg.Mailer.From, ReplyTo: cfg.Mailer.ReplyTo,
		ListUnsubscribe: cfg.Mailer.ListUnsubscribe,
	})
	if err != nil {
		return nil, configError{fmt.Errorf("mailer.ses: %w", err)}
	}
	if err := ses.CheckCredentials(ctx); err != nil {
		return nil, err
	}
	return ses, nil
}
