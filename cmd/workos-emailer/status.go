package main

import (
	"encoding/json"
	"fmt"
	"github.com/workos-emailer/workos-emailer/internal/admin"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/store"
)

const statusJSONHelp = `
With --json it prints one JSON object (the same the daemon serves at GET /status on admin.listen):
  source           "daemon" or "store" (daemon not reachable: read from the store file)
  generated_at     RFC 3339 time
  store_path       the store file
  cursor           {event_id ("" if none), set_at, age_seconds, since (null: oldest), initialized}
  records          number of delivery records
  states           {pending, sending, sent, skipped, dead, ambiguous: count}, every key present
  kinds            {KIND: {STATE: count}} for every kind with records plus the core kinds
  dead, ambiguous  counts of the deliveries that need an operator (see: dead list)
  retry_queued     deliveries queued by dead retry, not yet settled
  feedback         SES feedback over {last_24_hours, last_10000_sends}: {sent, reported, delivered,
                   bounced (permanent), transient_bounces, complained, delayed, rejected,
                   bounce_rate, complaint_rate}, and warnings (at half of SES's review rates)
  live             null from the store; else {last_poll_at, last_poll_age_seconds,
                   workos_key_rejected (true: WorkOS refuses WORKOS_API_KEY),
                   ses_paused, ses_pause_reason: null or why sending is paused,
                   ses_quota: null or {max_send_rate, max_24_hour_send, sent_last_24_hours,
                   sandbox (true: only verified recipients receive mail)},
                   ses_quota_exhausted (true: events wait for the 24-hour quota to free up),
                   ses_sent_since_quota_read: null or a count,
                   ses_rate_limit: null or {per_second, target_per_second,
                   source ("config", "account", "initial"), throttled},
                   ses_feedback_queue: null (off) or {ok, error, last_ok_at},
                   config_reload: null or the last reload (SIGHUP): {at, ok, error (why it
                   was refused), restart_needed (changed sections a restart applies)}}
Unknown values are null; keys are never omitted. New keys may be added.`

func newStatusCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cursor, counts per state and kind, dead and ambiguous counts, last poll",
		Long: "Show the cursor and its age, delivery counts per state and kind, dead and ambiguous counts and, while\n" +
			"the daemon runs, its last successful poll and SES quota. It asks the running daemon (its control socket,\n" +
			"then admin.listen) first; when none answers it reads the store file (then the live fields are unknown).\n" + statusJSONHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, from, note, err := currentStatus(cmd, load)
			if err != nil {
				return err
			}
			if note != "" && doc.Source == admin.SourceStore {
				fmt.Fprintln(stderr, "note:", note, "(last poll and SES state are known only to the running daemon)")
			}
			if asJSON {
				return writeJSON(stdout, doc)
			}
			return printStatus(stdout, doc, from)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (keys listed above)")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// human formats a time and its age for people.
func human(t *time.Time, at time.Time) string {
	if t == nil {
		return "never"
	}
	age := at.Sub(*t).Round(time.Second)
	if age < 0 {
		return t.Format(time.RFC3339) + " (in the future)"
	}
	return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), age)
}

// startsAt says where polling begins without a cursor.
func startsAt(c admin.Cursor) string {
	switch {
	case !c.Initialized:
		return "workos.start (the daemon has not run yet)"
	case c.Since == nil:
		return "the oldest event WorkOS keeps"
	}
	return c.Since.Format(time.RFC3339)
}

func printStatus(w io.Writer, d admin.Status, from string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "source\t%s\n", from)
	fmt.Fprintf(tw, "store\t%s\n", d.StorePath)
	if d.Cursor.EventID != "" {
		fmt.Fprintf(tw, "cursor\t%s, set %s\n", d.Cursor.EventID, human(d.Cursor.SetAt, d.GeneratedAt))
	} else {
		fmt.Fprintf(tw, "cursor\tnone; polling starts at %s\n", startsAt(d.Cursor))
	}
	if l := d.Lease; l != nil {
		if l.Live {
			fmt.Fprintf(tw, "leader\t%s (epoch %d), lease renewed until %s from now\n", l.Holder, l.Epoch,
				max(0, l.ExpiresAt.Sub(d.GeneratedAt)).Round(100*time.Millisecond))
		} else {
			fmt.Fprintf(tw, "leader\tNONE: no instance holds the lease (epoch %d); nothing is sent until one takes it\n", l.Epoch)
		}
	}
	if l := d.Live; l != nil && d.Lease != nil {
		fmt.Fprintf(tw, "this instance\t%s\n", l.Role)
	}
	if l := d.Live; l != nil {
		fmt.Fprintf(tw, "last poll\t%s\n", human(l.LastPollAt, d.GeneratedAt))
		if l.WorkOSKeyRejected {
			fmt.Fprintf(tw, "WorkOS\tAPI KEY REJECTED: WorkOS answers 401/403; set a valid WORKOS_API_KEY\n")
		}
		if b := l.WorkOSBudget; b != nil {
			fmt.Fprintf(tw, "WorkOS budget\t%s\n", budgetLine(b, d.GeneratedAt))
		}
		fmt.Fprintf(tw, "backlog\t%s\n", backlogLine(l.Backlog))
		if r := l.ConfigReload; r != nil {
			switch {
			case !r.OK:
				fmt.Fprintf(tw, "config\tRELOAD REFUSED %s: %s; the configuration of before is in force\n", human(&r.At, d.GeneratedAt),
					admin.OneLine(r.Error, 200))
			case len(r.RestartNeeded) > 0:
				fmt.Fprintf(tw, "config\treloaded %s; a restart applies the changes to %s\n", human(&r.At, d.GeneratedAt),
					strings.Join(r.RestartNeeded, ", "))
			default:
				fmt.Fprintf(tw, "config\treloaded %s\n", human(&r.At, d.GeneratedAt))
			}
		}
		ses := "not paused"
		if l.SESPaused {
			reason := "SES refuses to send for the account"
			if l.SESPauseReason != nil {
				reason = *l.SESPauseReason
			}
			ses = "PAUSED: " + reason + " (see the daemon's log)"
		}
		if q := l.SESQuota; q != nil {
			ses += fmt.Sprintf("; quota %g/s, %g per 24h, %g sent in the last 24h", q.MaxSendRate, q.Max24HourSend, q.SentLast24Hours)
			if q.Sandbox {
				ses += "; SANDBOX: only verified recipients receive mail (request production access)"
			}
		} else {
			ses += "; quota unknown"
		}
		if l.SESSentSinceQuotaRead != nil {
			ses += fmt.Sprintf(" (+%d since)", *l.SESSentSinceQuotaRead)
		}
		if l.SESQuotaExhausted {
			ses += "; 24-HOUR QUOTA USED UP: events wait pending until it frees up"
		}
		fmt.Fprintf(tw, "SES\t%s\n", ses)
		if r := l.SESRateLimit; r != nil {
			pace := fmt.Sprintf("%.3g/s (%s)", r.PerSecond, r.Source)
			if r.Throttled {
				pace = fmt.Sprintf("%.3g/s, slowed down from %.3g/s (%s) after SES throttled", r.PerSecond, r.TargetPerSecond, r.Source)
			}
			fmt.Fprintf(tw, "SES pace\t%s\n", pace)
		}
	} else {
		fmt.Fprintf(tw, "last poll\tunknown (only the running daemon knows)\n")
	}
	if l := d.Live; l != nil && l.SESFeedbackQueue != nil {
		q := l.SESFeedbackQueue
		if q.OK {
			last := "none yet: a long poll answers within 20 s"
			if q.LastOKAt != nil {
				last = human(q.LastOKAt, d.GeneratedAt)
			}
			fmt.Fprintf(tw, "SES feedback\treading the queue (last answer %s)\n", last)
		} else {
			fmt.Fprintf(tw, "SES feedback\tQUEUE NOT READABLE: %s\n", admin.OneLine(q.Error, 200))
		}
	}
	// SES's feedback, once there is any or a queue is read for it.
	reading := d.Live != nil && d.Live.SESFeedbackQueue != nil
	for _, w := range []struct {
		name string
		win  admin.FeedbackWindow
	}{{"last 24h", d.Feedback.Last24Hours}, {"last 10,000", d.Feedback.Last10000}} {
		if w.win.Sent == 0 || d.Feedback.Last10000.Reported == 0 && !reading {
			continue
		}
		fmt.Fprintf(tw, "sent, %s\t%d: %d delivered, %d bounced (%s), %d complained (%s), %d without a report\n", w.name,
			w.win.Sent, w.win.Delivered, w.win.Bounced, percent(w.win.BounceRate), w.win.Complained, percent(w.win.ComplaintRate),
			w.win.Sent-w.win.Reported)
	}
	for _, warning := range d.Feedback.Warnings {
		fmt.Fprintf(tw, "WARNING\t%s\n", warning)
	}
	fmt.Fprintf(tw, "records\t%d\n", d.Records)
	fmt.Fprintf(tw, "dead\t%d\n", d.Dead)
	fmt.Fprintf(tw, "ambiguous\t%d\n", d.Ambiguous)
	if d.RetryQueued > 0 {
		fmt.Fprintf(tw, "retry queued\t%d\n", d.RetryQueued)
	}
	if d.Dead+d.Ambiguous > 0 {
		fmt.Fprintf(tw, "\t(see: workos-emailer dead list)\n")
	}
	fmt.Fprintln(tw)
	header := []string{"KIND"}
	for _, s := range admin.AllStates {
		header = append(header, strings.ToUpper(string(s)))
	}
	fmt.Fprintln(tw, strings.Join(append(header, "TOTAL"), "\t"))
	kinds := slices.Sorted(maps.Keys(d.Kinds))
	row := func(name string, counts map[string]int) {
		cells, total := []string{name}, 0
		for _, s := range admin.AllStates {
			cells = append(cells, fmt.Sprint(counts[string(s)]))
			total += counts[string(s)]
		}
		fmt.Fprintln(tw, strings.Join(append(cells, fmt.Sprint(total)), "\t"))
	}
	for _, k := range kinds {
		name := k
		if name == "" {
			name = "(unhandled)"
		}
		row(name, d.Kinds[k])
	}
	row("all", d.States)
	return tw.Flush()
}

// backlogLine says how far behind the event stream is, in a few words.
func backlogLine(b admin.Backlog) string {
	if b.BehindSeconds == 0 {
		return "none: the main reader is caught up"
	}
	line := fmt.Sprintf("the main reader is %s behind", (time.Duration(b.BehindSeconds) * time.Second).Round(time.Second))
	if b.CatchUpSeconds != nil {
		line += fmt.Sprintf(", catching up in about %s", (time.Duration(*b.CatchUpSeconds) * time.Second).Round(time.Second))
	}
	if b.LiveReader && b.LiveSince != nil {
		line += fmt.Sprintf("; a live reader sends new events meanwhile (those since %s, %s behind)",
			b.LiveSince.UTC().Format(time.RFC3339), (time.Duration(b.LiveLagSeconds) * time.Second).Round(time.Second))
	}
	return line
}

// budgetLine is the WorkOS request budget in a few words.
func budgetLine(b *admin.Budget, now time.Time) string {
	if b.MaxPerSecond == 0 {
		return "unlimited"
	}
	line := fmt.Sprintf("%.3g requests/s", b.PerSecond)
	if b.Lowered {
		line = fmt.Sprintf("%.3g of %.3g requests/s, lowered after WorkOS answered 429", b.PerSecond, b.MaxPerSecond)
	}
	if b.PausedUntil != nil {
		line += fmt.Sprintf("; PAUSED for %s (429 or failing answers)", b.PausedUntil.Sub(now).Round(100*time.Millisecond))
	}
	if b.Throttled > 0 {
		line += fmt.Sprintf("; %d 429s so far, %.0f s paused in all", b.Throttled, b.PausedSeconds)
	}
	return line
}

// currentStatus asks the running daemon for its status document, or builds it from the store
// file when no daemon answers; from says where it came from, note why the daemon did not answer.
func currentStatus(cmd *cobra.Command, load loadFunc) (doc admin.Status, from, note string, err error) {
	cfg, err := load(cmd)
	if err != nil {
		return admin.Status{}, "", "", err
	}
	from, note, err = readDoc(cmd.Context(), cfg, "/status", &doc, func(st store.Backend) error {
		var buildErr error
		doc, buildErr = admin.BuildStatus(st, cfg.Events.Enabled, time.Now(), admin.SourceStore, nil)
		return buildErr
	})
	return doc, from, note, err
}

func percent(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", *r*100)
}
