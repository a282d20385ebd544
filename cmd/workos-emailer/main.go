// Command workos-emailer sends the emails of WorkOS User Management (invitations, Magic Auth
// codes, email verification codes, password resets) from the WorkOS Events API through Amazon
// SES, each email once.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"io"
	"os"
	"strings"
	_ "time/tzdata" // templates.time_zone works where the system has no zoneinfo (a minimal container, DynamicUser)

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/store"
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
	var ce config.Error
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

	load := func(cmd *cobra.Command) (*config.Config, error) {
		return config.Load(g.configPath, cmd.Flags().Changed("config"))
	}
	root.AddCommand(
		newRunCmd(load, stderr),
		newDemoCmd(stdout, stderr),
		newRenderCmd(&g, stdout, stderr),
		newVersionCmd(stdout),
	)
	// One file each: status.go, cursor.go, dead.go, sendtest.go (send test, send magic-link), trace.go,
	// storeimport.go.
	root.AddCommand(newStatusCmd(load, stdout, stderr), newCursorCmd(load, stdout, stderr), newDeadCmd(load, stdout, stderr),
		newSendCmd(load, stdout, stderr), newTraceCmd(load, stdout, stderr), newStoreCmd(load, stdout))
	return root
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

// newLogger logs at level (zap.AtomicLevel: a reload changes it) in log.format to w.
func newLogger(cfg *config.Config, level zapcore.LevelEnabler, w io.Writer) *zap.Logger {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.Log.Format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level))
}

// helpWithoutSubcommand shows the command's help for `cursor` or `dead` alone.
func helpWithoutSubcommand(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// subcommandRequired makes `cursor frob` a usage error instead of a help page.
func subcommandRequired(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unknown command %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())}
	}
	return nil
}
