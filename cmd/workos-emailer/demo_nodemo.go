//go:build nodemo

package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

// Built with -tags nodemo: the simulated WorkOS (internal/fakeworkos, the demo's only fake: its
// mail goes to .eml files) is not linked in. That saves 0.1 MB of a 23.4 MB release binary
// (0.4%, measured with make build's flags); the default build keeps demo, a command of
// CONTRACT.md that make demo runs.
func newDemoCmd(_, _ io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "demo",
		Short:  "Not in this build (-tags nodemo); run make demo from a source checkout",
		Hidden: true,
		Args:   noArgs,
		RunE: func(*cobra.Command, []string) error {
			return usageError{errors.New("this build has no demo (built with -tags nodemo); run `make demo` in a source checkout")}
		},
	}
}
