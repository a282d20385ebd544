package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/store/postgres"
)

// newStoreCmd is `store import --from-bolt FILE`: moving an installation from its bbolt file to
// the PostgreSQL store the configuration names, so that switching sends nothing twice.
func newStoreCmd(load loadFunc, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "Move the store to another backend", Args: noArgs}
	var from string
	imp := &cobra.Command{
		Use:   "import --from-bolt FILE",
		Short: "Copy a bbolt store into the configured PostgreSQL store",
		Long: "Copy a bbolt store (the cursor, every delivery record, the once keys, the marks of codes sent, the retry\n" +
			"queue, open send API requests, idempotency keys and the key of the address hashes) into the PostgreSQL\n" +
			"store this configuration names (store.driver: postgres, store.dsn), in one transaction. Stop the daemon\n" +
			"that uses the file first, and import before any daemon runs with the database: an import into a\n" +
			"database that has records or a starting point is refused. The file is only read.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return usageError{errors.New("--from-bolt FILE is required: the bbolt store to copy (store.path of the old configuration)")}
			}
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			if !sharedStore(cfg) {
				return usageError{errors.New("store import copies into a PostgreSQL store: set store.driver: postgres and store.dsn " +
					"in the configuration given with --config")}
			}
			src, err := store.Open(from, store.Options{ReadOnly: true, LockTimeout: opsLockTimeout, Kinds: kinds.Names()})
			if errors.Is(err, store.ErrLocked) {
				return fmt.Errorf("%w: stop the daemon that uses %s, then import (a running daemon would go on sending from it)", err, from)
			}
			if err != nil {
				return err
			}
			defer src.Close()
			snap, err := src.Snapshot()
			if err != nil {
				return err
			}
			dst, err := openOperatorStore(cfg)
			if err != nil {
				return err
			}
			defer dst.Close()
			n, err := dst.(*postgres.Store).Import(snap)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "imported %d delivery records, %d once keys and the cursor (%s) from %s into %s; "+
				"start the daemons with this configuration\n", n, len(snap.Once), cursorText(snap.Position), from, dst.Path())
			return err
		},
	}
	imp.Flags().StringVar(&from, "from-bolt", "", "the bbolt store file to copy")
	cmd.AddCommand(imp)
	return cmd
}

func cursorText(p store.Position) string {
	switch {
	case p.Cursor != "":
		return p.Cursor
	case !p.Initialized:
		return "none yet"
	case p.Since.IsZero():
		return "none; from the oldest event"
	}
	return "none; from " + p.Since.UTC().Format("2006-01-02T15:04:05Z")
}
