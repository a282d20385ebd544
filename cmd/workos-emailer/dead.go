package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// newDeadCmd is `dead list|retry`: the deliveries that need an operator.
func newDeadCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	dead := &cobra.Command{
		Use:   "dead",
		Short: "List dead and ambiguous deliveries, or queue them to be sent again",
		Args:  subcommandRequired,
		RunE:  helpWithoutSubcommand,
	}
	dead.AddCommand(newDeadListCmd(load, stdout, stderr), newDeadRetryCmd(load, stdout, stderr))
	return dead
}

func newDeadListCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead and ambiguous deliveries with their reason",
		Long: "List the deliveries that need an operator: dead (failed for good) and ambiguous (SES may or may not\n" +
			"have accepted the email). Like status, it asks the running daemon first, else reads the store file.\n\n" +
			"With --json it prints one JSON object (the same the daemon serves at GET /dead):\n" +
			"  {source: \"daemon\"|\"store\", generated_at, store_path, count, deliveries: [{event_id, kind,\n" +
			"   state (dead|ambiguous), reason, attempts, updated_at, event_created_at, object_id, retryable}]}\n" +
			"retryable is false for records without an object id, which dead retry cannot fetch again.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			return show(cmd.Context(), cfg, "/dead", func(st store.Backend) (admin.Dead, error) {
				return admin.BuildDead(st, time.Now(), admin.SourceStore)
			}, asJSON, stdout, stderr, printDead)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (keys listed above)")
	return cmd
}

func printDead(w io.Writer, d admin.Dead, from string) error {
	fmt.Fprintf(w, "store %s, from the %s\n", d.StorePath, from)
	if d.Count == 0 {
		_, err := fmt.Fprintln(w, "no dead or ambiguous deliveries")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT ID\tKIND\tSTATE\tATTEMPTS\tUPDATED\tREASON")
	for _, e := range d.Deliveries {
		reason := e.Reason
		if !e.Retryable {
			reason = "[cannot be retried: no object id] " + reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.EventID, e.Kind, e.State, e.Attempts,
			e.UpdatedAt.Format(time.RFC3339), admin.OneLine(reason, 160))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d deliveries; to send them again: `workos-emailer dead retry EVENT_ID...` (or --all)\n", d.Count)
	return err
}

func newDeadRetryCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "retry (EVENT_ID... | --all)",
		Short: "Queue dead or ambiguous deliveries to be sent again",
		Long: "Queue dead or ambiguous deliveries to be sent again: each becomes pending with its attempts reset, and\n" +
			"the daemon delivers it before its next poll (or when it next starts, if none runs), fetching the\n" +
			"object from WorkOS again and checking it like any event: what expired or was revoked meanwhile is\n" +
			"skipped, not sent. An ambiguous delivery may already have reached the recipient; if it is sent again\n" +
			"its record says maybe_duplicate.\n\n" +
			"Given EVENT_IDs, either all are queued or, if any is unknown, not dead or ambiguous, or cannot be\n" +
			"fetched again (recorded without an object id), none is (exit code 2). --all queues every delivery\n" +
			"that can be retried and names those that cannot. While the daemon runs, the command goes through it.",
		RunE: func(cmd *cobra.Command, ids []string) error {
			switch {
			case all && len(ids) > 0:
				return usageError{errors.New("give either EVENT_IDs or --all, not both")}
			case !all && len(ids) == 0:
				return usageError{errors.New("give the EVENT_IDs to retry (see: workos-emailer dead list), or --all")}
			}
			var bad []string
			for _, id := range ids {
				if !workosapi.ValidEventID(id) {
					bad = append(bad, fmt.Sprintf("%q", admin.OneLine(id, 80)))
				}
			}
			if len(bad) > 0 {
				return usageError{fmt.Errorf("not WorkOS event ids: %s; nothing was queued", strings.Join(bad, ", "))}
			}
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			var answer admin.RetryAnswer
			viaDaemon, err := changeThroughDaemon(cmd.Context(), cfg, "/dead/retry", admin.RetryRequest{EventIDs: ids, All: all}, &answer)
			if err != nil {
				return err
			}
			if viaDaemon {
				return printQueued(stdout, stderr, answer, "the running daemon delivers them before its next poll")
			}
			st, err := openStoreForWrite(cfg, "dead retry")
			if err != nil {
				return err
			}
			defer st.Close()
			var queued, notRetryable []store.Delivery
			if all {
				queued, notRetryable, err = st.RequestRetryAll(time.Now())
			} else {
				queued, err = st.RequestRetry(time.Now(), ids...)
			}
			var refused *store.RetryRefusedError
			if errors.As(err, &refused) {
				return usageError{fmt.Errorf("dead retry: %w", err)}
			}
			if err != nil {
				return err
			}
			when := "the daemon delivers them when it starts"
			if sharedStore(cfg) {
				when = "the leading daemon delivers them before its next poll"
			}
			return printQueued(stdout, stderr, admin.RetryAnswerOf(queued, notRetryable), when)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "queue every dead and ambiguous delivery that can be retried")
	return cmd
}

func printQueued(stdout, stderr io.Writer, a admin.RetryAnswer, when string) error {
	if len(a.NotRetryable) > 0 {
		ids := make([]string, len(a.NotRetryable))
		for i, d := range a.NotRetryable {
			ids[i] = d.EventID
		}
		fmt.Fprintf(stderr, "warning: %d deliveries cannot be retried: their records have no WorkOS object id to fetch again "+
			"(recorded by an older version, or the event named none): %s\n", len(ids), strings.Join(ids, " "))
	}
	if len(a.Queued) == 0 {
		_, err := fmt.Fprintln(stdout, "nothing to retry: no dead or ambiguous delivery can be retried")
		return err
	}
	fmt.Fprintf(stdout, "queued %d deliveries for retry; %s, checking each again (expired or revoked ones are skipped):\n",
		len(a.Queued), when)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT ID\tKIND\tWAS\tREASON")
	ambiguous := 0
	for _, d := range a.Queued {
		if d.State == string(store.Ambiguous) {
			ambiguous++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.EventID, d.Kind, d.State, admin.OneLine(d.Reason, 120))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if ambiguous > 0 {
		fmt.Fprintf(stderr, "warning: %d of them were ambiguous: SES may already have delivered them; "+
			"one sent again is recorded with maybe_duplicate\n", ambiguous)
	}
	return nil
}
