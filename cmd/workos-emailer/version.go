package main

import (
	"fmt"
	"github.com/spf13/cobra"
	"io"
	"runtime"
	"runtime/debug"
)

// newVersionCmd is `version`.
func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
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
	}
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
