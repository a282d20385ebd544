package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// The operator commands of CONTRACT.md: status, cursor show|set|reset, dead list|retry.
//
// The running daemon holds the store's file lock for as long as it runs. Commands that only read
// (status, dead list, cursor show) therefore ask the daemon over its admin listener first and
// open the store read-only only when no daemon answers; commands that write (cursor set|reset,
// dead retry) need the store to themselves and refuse, exit code 3, while the daemon holds it.

type loadFunc = func(cmd *cobra.Command) (*Config, error)

// opsLockTimeout bounds the wait for the store's lock: the daemon never lets go while it runs,
// so waiting longer only delays the message.
var opsLockTimeout = time.Second

// stopServiceHint is what to do when a writing command finds the store locked.
const stopServiceHint = "stop the service first (e.g. `systemctl stop workos-emailer`), run this again, then start it"

// opsCommands returns the operator commands for newRootCmd.
func opsCommands(load loadFunc, stdout, stderr io.Writer) []*cobra.Command {
	dead := &cobra.Command{
		Use:   "dead",
		Short: "List dead and ambiguous deliveries, or queue them to be sent again",
		Args:  subcommandRequired,
		RunE:  helpWithoutSubcommand,
	}
	dead.AddCommand(newDeadListCmd(load, stdout, stderr), newDeadRetryCmd(load, stdout, stderr))
	return []*cobra.Command{newStatusCmd(load, stdout, stderr), newCursorCmd(load, stdout, stderr), dead}
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

// sourced is a document that says where it came from.
type sourced interface{ source() string }

func (d *statusDoc) source() string { return d.Source }
func (d *deadDoc) source() string   { return d.Source }

// adminURL turns admin.listen into a URL this machine can reach: a wildcard address listens on
// loopback too.
func adminURL(listen, path string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", keyErr("admin.listen", "must be host:port, got %q", listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// getFromDaemon fetches a document from the running daemon's admin listener.
func getFromDaemon(ctx context.Context, url string, doc sourced) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	var urlErr *neturl.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err // the URL is named by the caller
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(doc); err != nil {
		return fmt.Errorf("unreadable answer: %w", err)
	}
	if doc.source() != sourceDaemon {
		return errors.New("the answer is not a workos-emailer document")
	}
	return nil
}

// fromDaemonOrStore fills doc from the daemon's admin listener at path or, when no daemon
// answers, by calling fromStore on the store opened read-only. note says that the store was read,
// and why.
func fromDaemonOrStore(ctx context.Context, cfg *Config, path string, doc sourced, fromStore func(*store.Store) error) (note string, err error) {
	why := "admin.listen is empty, so no daemon can be asked"
	if cfg.Admin.Listen != "" {
		url, err := adminURL(cfg.Admin.Listen, path)
		if err != nil {
			return "", err
		}
		if err = getFromDaemon(ctx, url, doc); err == nil {
			return "", nil
		}
		why = fmt.Sprintf("no daemon answered at %s (%v)", url, err)
	}
	st, err := openStoreReadOnly(cfg)
	if errors.Is(err, store.ErrLocked) {
		return "", fmt.Errorf("%s, and another process (the daemon?) holds the store, so it cannot be read either; "+
			"check that admin.listen is the running daemon's and that its admin listener is up: %w", why, err)
	}
	if err != nil {
		return "", err
	}
	defer st.Close()
	if err := fromStore(st); err != nil {
		return "", err
	}
	return why + "; read the store file instead", nil
}

func requireStoreFile(cfg *Config) error {
	_, err := os.Stat(cfg.Store.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no store at %s (store.path): the daemon has not run with this configuration yet, "+
			"or --config / store.path point elsewhere than the daemon's", cfg.Store.Path)
	}
	return nil
}

func openStoreReadOnly(cfg *Config) (*store.Store, error) {
	if err := requireStoreFile(cfg); err != nil {
		return nil, err
	}
	return store.Open(cfg.Store.Path, store.Options{ReadOnly: true, LockTimeout: opsLockTimeout, Kinds: kinds.Names()})
}

// openStoreForWrite opens the existing store read-write for a command that changes it.
func openStoreForWrite(cfg *Config, command string) (*store.Store, error) {
	if err := requireStoreFile(cfg); err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.Store.Path, store.Options{LockTimeout: opsLockTimeout, Kinds: kinds.Names()})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%s changes the store, but another process (the running daemon?) holds it: %s: %w",
			command, stopServiceHint, err)
	}
	return st, err
}

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
			"when there is none. Works while the daemon runs (asks it at admin.listen).",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, note, err := currentStatus(cmd, load)
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
		Short: "Resume after EVENT_ID (the daemon must be stopped)",
		Long: "Make the next run resume after EVENT_ID. Events up to and including it are not read again. The\n" +
			"daemon holds the store while it runs: stop it first.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("%s takes exactly one EVENT_ID, got %d arguments", cmd.CommandPath(), len(args))}
			}
			if !workosapi.ValidEventID(args[0]) {
				return usageError{fmt.Errorf("EVENT_ID %q is not a WorkOS event id (event_ followed by letters and digits, "+
					"e.g. event_01HZX3J7Q8N4V2K5M6P9R0S1T2)", oneLine(args[0], 80))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load(cmd)
			if err != nil {
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
			_, err = fmt.Fprintf(stdout, "cursor set to %s (was %s); the next run resumes after it\n", args[0], orDefault(before.Cursor, "none"))
			return err
		},
	}
	var since string
	reset := &cobra.Command{
		Use:   "reset --since RFC3339",
		Short: "Forget the cursor: the next run reads events from --since (backfill; the daemon must be stopped)",
		Long: "Forget the cursor: the next run reads events created from --since on (a backfill). Events that already\n" +
			"have a delivery record are not sent again. WorkOS keeps events for about 30 days; --since may not be\n" +
			"further back than store.retention, whose older records may be pruned. The daemon holds the store\n" +
			"while it runs: stop it first.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("since") {
				return usageError{errors.New("--since is required: an RFC 3339 time such as 2026-01-02T15:04:05Z; the next run reads events from then")}
			}
			t, err := time.Parse(time.RFC3339, since)
			if err != nil {
				return usageError{fmt.Errorf("--since %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", oneLine(since, 80))}
			}
			now := time.Now()
			if t.After(now.Add(time.Minute)) {
				return usageError{fmt.Errorf("--since %s is in the future; give the time of the first event to read again", since)}
			}
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			if t.Before(now.Add(-cfg.Store.Retention)) {
				// Records of older events may have been pruned: their emails would go out again.
				return usageError{fmt.Errorf("--since %s is further back than store.retention (%s): delivery records of "+
					"older events may have been pruned, and a backfill would send those emails again", since, cfg.Store.Retention)}
			}
			st, err := openStoreForWrite(cfg, "cursor reset")
			if err != nil {
				return err
			}
			defer st.Close()
			before, err := st.Position()
			if err != nil {
				return err
			}
			if err := st.ResetCursor(t); err != nil {
				return fmt.Errorf("%w; nothing was changed", err)
			}
			if now.Sub(t) > 30*24*time.Hour {
				fmt.Fprintln(stderr, "warning: WorkOS keeps events for about 30 days; the backfill starts at the oldest event it still has")
			}
			_, err = fmt.Fprintf(stdout, "cursor reset (was %s); the next run reads events from %s on. "+
				"Events already recorded are not sent again.\n", orDefault(before.Cursor, "none"), t.UTC().Format(time.RFC3339))
			return err
		},
	}
	reset.Flags().StringVar(&since, "since", "", "RFC 3339 time to read events from (required)")
	cmd.AddCommand(show, set, reset)
	return cmd
}

func newDeadRetryCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "retry (EVENT_ID... | --all)",
		Short: "Queue dead or ambiguous deliveries to be sent again on the next run (the daemon must be stopped)",
		Long: "Queue dead or ambiguous deliveries to be sent again: each becomes pending with its attempts reset, and\n" +
			"the daemon delivers it when it next starts, fetching the object from WorkOS again and checking it like\n" +
			"any event: what expired or was revoked meanwhile is skipped, not sent. An ambiguous delivery may\n" +
			"already have reached the recipient; if it is sent again its record says maybe_duplicate.\n\n" +
			"Given EVENT_IDs, either all are queued or, if any is unknown, not dead or ambiguous, or cannot be\n" +
			"fetched again (recorded without an object id), none is (exit code 2). --all queues every delivery\n" +
			"that can be retried and names those that cannot. The daemon holds the store while it runs: stop it\n" +
			"first.",
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
					bad = append(bad, fmt.Sprintf("%q", oneLine(id, 80)))
				}
			}
			if len(bad) > 0 {
				return usageError{fmt.Errorf("not WorkOS event ids: %s; nothing was queued", strings.Join(bad, ", "))}
			}
			cfg, err := load(cmd)
			if err != nil {
				return err
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
			return printQueued(stdout, stderr, queued, notRetryable)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "queue every dead and ambiguous delivery that can be retried")
	return cmd
}

func printQueued(stdout, stderr io.Writer, queued, notRetryable []store.Delivery) error {
	if len(notRetryable) > 0 {
		ids := make([]string, len(notRetryable))
		for i, d := range notRetryable {
			ids[i] = d.EventID
		}
		fmt.Fprintf(stderr, "warning: %d deliveries cannot be retried: their records have no WorkOS object id to fetch again "+
			"(recorded by an older version, or the event named none): %s\n", len(ids), strings.Join(ids, " "))
	}
	if len(queued) == 0 {
		_, err := fmt.Fprintln(stdout, "nothing to retry: no dead or ambiguous delivery can be retried")
		return err
	}
	fmt.Fprintf(stdout, "queued %d deliveries for retry; the daemon delivers them when it starts, checking each again "+
		"(expired or revoked ones are skipped):\n", len(queued))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT ID\tKIND\tWAS\tREASON")
	ambiguous := 0
	for _, d := range queued {
		if d.State == store.Ambiguous {
			ambiguous++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.EventID, d.Kind, d.State, oneLine(d.Reason, 120))
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
