package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// newCursorCmd is `cursor show|set|reset`. set and reset go through the running daemon, which
// applies them between events (worker.Interrupt), or change the store file when none runs.
func newCursorCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cursor",
		Short: "Show, set or reset where polling of WorkOS events resumes",
		Args:  subcommandRequired,
		RunE:  helpWithoutSubcommand,
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the cursor (the event polling resumes after) and when it was set",
		Long: "Print the cursor (the event polling resumes after) and when it was set, or where the next run starts\n" +
			"when there is none. Works while the daemon runs (asks it on its control socket).",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, _, note, err := currentStatus(cmd, load)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(stderr, "note:", note)
			}
			c := doc.Cursor
			if c.EventID == "" {
				_, err = fmt.Fprintf(stdout, "no cursor; next run starts at %s\n", startsAt(c))
				return err
			}
			_, err = fmt.Fprintf(stdout, "cursor %s, set %s\n", c.EventID, human(c.SetAt, doc.GeneratedAt))
			return err
		},
	}
	set := &cobra.Command{
		Use:   "set EVENT_ID",
		Short: "Resume after EVENT_ID",
		Long: "Make polling resume after EVENT_ID. Events up to and including it are not read again. While the\n" +
			"daemon runs, it applies the change between events: the sends in flight finish, then it polls from\n" +
			"the new cursor.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("%s takes exactly one EVENT_ID, got %d arguments", cmd.CommandPath(), len(args))}
			}
			if !workosapi.ValidEventID(args[0]) {
				return usageError{fmt.Errorf("EVENT_ID %q is not a WorkOS event id (event_ followed by letters and digits, "+
					"e.g. event_01HZX3J7Q8N4V2K5M6P9R0S1T2)", admin.OneLine(args[0], 80))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			var answer admin.CursorAnswer
			viaDaemon, err := changeThroughDaemon(cmd.Context(), cfg, "/cursor/set", admin.CursorRequest{EventID: args[0]}, &answer)
			if err != nil {
				return err
			}
			if viaDaemon {
				_, err = fmt.Fprintf(stdout, "cursor set to %s (was %s); the running daemon now resumes after it\n", args[0],
					cmp.Or(answer.Before, "none"))
				return err
			}
			st, err := openStoreForWrite(cfg, "cursor set")
			if err != nil {
				return err
			}
			defer st.Close()
			before, err := st.Position()
			if err != nil {
				return err
			}
			if err := st.SetCursor(args[0], time.Now()); err != nil {
				return fmt.Errorf("%w; nothing was changed", err)
			}
			_, err = fmt.Fprintf(stdout, "cursor set to %s (was %s); %s resumes after it\n", args[0], cmp.Or(before.Cursor, "none"), appliedBy(cfg))
			return err
		},
	}
	var since string
	reset := &cobra.Command{
		Use:   "reset --since RFC3339",
		Short: "Forget the cursor: read events from --since again (backfill)",
		Long: "Forget the cursor: polling reads events created from --since on (a backfill). Events that already\n" +
			"have a delivery record are not sent again. WorkOS keeps events for about 30 days; --since may not be\n" +
			"further back than store.retention, whose older records may be pruned. While the daemon runs, it\n" +
			"applies the change between events: the sends in flight finish, then it polls from --since.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("since") {
				return usageError{errors.New("--since is required: an RFC 3339 time such as 2026-01-02T15:04:05Z; the next run reads events from then")}
			}
			t, err := time.Parse(time.RFC3339, since)
			if err != nil {
				return usageError{fmt.Errorf("--since %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", admin.OneLine(since, 80))}
			}
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			now := time.Now()
			// The daemon checks --since against its own store.retention; without one, this
			// configuration's is the rule.
			var answer admin.CursorAnswer
			viaDaemon, err := changeThroughDaemon(cmd.Context(), cfg, "/cursor/reset", admin.CursorRequest{Since: t}, &answer)
			if err != nil {
				return err
			}
			before := answer.Before
			if !viaDaemon {
				if err := worker.CheckBackfillSince(t, now, cfg.Store.Retention, config.FormatDuration(cfg.Store.Retention)); err != nil {
					return usageError{err}
				}
				st, err := openStoreForWrite(cfg, "cursor reset")
				if err != nil {
					return err
				}
				defer st.Close()
				pos, err := st.Position()
				if err != nil {
					return err
				}
				if err := st.ResetCursor(t); err != nil {
					return fmt.Errorf("%w; nothing was changed", err)
				}
				before = pos.Cursor
			}
			if now.Sub(t) > worker.EventRetention {
				fmt.Fprintln(stderr, "warning: WorkOS keeps events for about 30 days; the backfill starts at the oldest event it still has")
			}
			who := appliedBy(cfg) + " reads"
			if viaDaemon {
				who = "the running daemon now reads"
			}
			_, err = fmt.Fprintf(stdout, "cursor reset (was %s); %s events from %s on. Events already recorded are not sent again.\n",
				cmp.Or(before, "none"), who, t.UTC().Format(time.RFC3339))
			return err
		},
	}
	reset.Flags().StringVar(&since, "since", "", "RFC 3339 time to read events from (required)")
	cmd.AddCommand(show, set, reset)
	return cmd
}
