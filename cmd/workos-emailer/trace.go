package main

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
)

// newTraceCmd is `trace EMAIL`: what happened to the emails to one person ("I never got my
// code"). The store holds no address, only a keyed hash of it: the daemon, or the store file,
// hashes the address asked about and lists the records with that hash.
func newTraceCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "trace EMAIL",
		Short: "Every delivery to one address: kind, event, state, times, SES message id and what SES reported",
		Long: "List every delivery to EMAIL the store still holds (store.retention), newest first: kind, event id, state,\n" +
			"times, the SES message id, and what SES reported about it (delivered, bounced, complaint, delayed,\n" +
			"rejected; mailer.ses.feedback_queue_url), with the reason of a skipped or dead one. Addresses are\n" +
			"matched in any case. It asks the running daemon on its control socket, else reads the store file.\n\n" +
			"With --json: {source, generated_at, store_path, count, deliveries: [{event_id, kind, state, reason,\n" +
			"attempts, event_created_at, first_seen_at, updated_at, ses_message_id, maybe_duplicate, feedback:\n" +
			"null or {delivered_at, bounced_at, bounce, bounce_permanent, complained_at, complaint, delayed_at,\n" +
			"delay, rejected_at, reject}}]}",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("%s takes exactly one EMAIL, got %d arguments", cmd.CommandPath(), len(args))}
			}
			if _, err := mailer.ParseRecipient(args[0]); err != nil {
				return usageError{fmt.Errorf("EMAIL: %w", err)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			email := strings.TrimSpace(args[0])
			return show(cmd.Context(), cfg, "/trace?"+url.Values{"email": {email}}.Encode(), func(st store.Backend) (admin.Trace, error) {
				return admin.BuildTrace(st, email, time.Now(), admin.SourceStore)
			}, asJSON, stdout, stderr, printTrace)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (keys listed above)")
	return cmd
}

func printTrace(w io.Writer, d admin.Trace, from string) error {
	fmt.Fprintf(w, "store %s, from the %s\n", d.StorePath, from)
	if d.Count == 0 {
		_, err := fmt.Fprintln(w, "no delivery to this address in the store (none, or older than store.retention)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEEN\tKIND\tEVENT ID\tSTATE\tSES MESSAGE ID\tSES SAYS\tREASON")
	for _, e := range d.Deliveries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.FirstSeenAt.Format(time.RFC3339), e.Kind, e.EventID, e.State,
			orDash(e.MessageID), outcome(e.Feedback, e.MessageID != ""), admin.OneLine(e.Reason, 100))
	}
	return tw.Flush()
}

// outcome says in a few words what SES reported, worst first.
func outcome(f *store.Feedback, sent bool) string {
	switch {
	case f == nil && sent:
		return "nothing reported"
	case f == nil:
		return "-"
	case !f.BouncedAt.IsZero() && f.BouncePermanent:
		return "BOUNCED for good " + f.BouncedAt.Format(time.RFC3339) + " (" + f.Bounce + ")"
	case !f.ComplainedAt.IsZero():
		return "COMPLAINT " + f.ComplainedAt.Format(time.RFC3339) + " (" + f.Complaint + ")"
	case !f.RejectedAt.IsZero():
		return "rejected by SES (" + f.Reject + ")"
	case !f.BouncedAt.IsZero():
		return "bounced, transient (" + f.Bounce + ")"
	case !f.DeliveredAt.IsZero():
		return "delivered " + f.DeliveredAt.Format(time.RFC3339)
	case !f.DelayedAt.IsZero():
		return "delayed (" + f.Delay + ")"
	}
	return "nothing reported"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
