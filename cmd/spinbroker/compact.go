package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/spin-broker/spinbroker/internal/store"
)

func (a *app) compactCommand() *cobra.Command {
	var db string
	cmd := &cobra.Command{
		Use:   "compact --db PATH",
		Short: "Give the space of deleted rows back to the file system",
		Long: `compact rewrites a database without the pages that deleted packages left
free (SQLite's VACUUM). SQLite reuses free pages for new rows but never
shrinks the file by itself, so after a burst of work and its deletion (by
--retain or by hand) the file stays at its largest: the metric
spinbroker_store_free_bytes says how much compact would give back.

compact needs the broker stopped (it refuses to run beside one, as migrate
does) and, while it runs, free disk space of about twice the database's size:
a temporary copy (in $SQLITE_TMPDIR or $TMPDIR, else /var/tmp; a small
tmpfs there is too small for a large database) and the new pages in the WAL
beside the database. An interrupted compact leaves the database as it was.`,
		Example: `  systemctl stop spinbroker
  spinbroker compact --db /var/lib/spinbroker/broker.db
  systemctl start spinbroker`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := existingDB(db); err != nil {
				return err
			}
			start := time.Now()
			before, after, err := store.Compact(cmd.Context(), db, func() {
				fmt.Fprintf(a.stderr, "compacting %s…\n", db)
			})
			if errors.Is(err, store.ErrInUse) {
				return fmt.Errorf("%w: stop it first", err)
			} else if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "compacted %s from %.1f MiB to %.1f MiB in %s\n", db, float64(before)/(1<<20), float64(after)/(1<<20), time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&db, "db", envOr("SPINBROKER_DB", "spinbroker.db"), "database file (env SPINBROKER_DB)")
	return cmd
}
