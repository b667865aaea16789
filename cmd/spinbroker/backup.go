package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/spin-broker/spinbroker/internal/store"
)

func (a *app) backupCommand() *cobra.Command {
	var db, to string
	cmd := &cobra.Command{
		Use:   "backup --db PATH --to FILE",
		Short: "Copy a live database consistently",
		Long: `backup writes a consistent copy of a database to a new file while the broker
keeps running (SQLite's VACUUM INTO reads one snapshot; writers are not
stopped). The copy is compact and self-contained: no -wal or -shm file.
It is written as FILE.partial-NNN beside FILE and takes FILE's name only
once complete and on disk, so a FILE that exists is a whole backup; a
.partial file is what a backup that was killed left, to delete.
Give it the name the broker serves: through another hard link of the same
file SQLite would not see the broker's -wal, and backup refuses it.

To restore: stop the broker, move the database and its -wal file aside
together (a broker that crashed left committed writes in the -wal), drop
its -shm, put the copy in its place, and start the broker again:

  systemctl stop spinbroker        # or however the broker runs
  mv broker.db broker.db.old
  if [ -e broker.db-wal ]; then mv broker.db-wal broker.db.old-wal; fi
  rm -f broker.db-shm
  cp backup.db broker.db
  chown --reference=broker.db.old broker.db   # the broker's user, not root
  spinbroker serve --db broker.db --check     # as that user`,
		Example: `  spinbroker backup --db /var/lib/spinbroker/broker.db --to /backups/broker-$(date +%F).db`,
		Args:    args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--to is required")}
			}
			if err := existingDB(db); err != nil {
				return err
			}
			start := time.Now()
			if err := store.Backup(cmd.Context(), db, to); err != nil {
				return err
			}
			st, err := os.Stat(to)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "backed up %s to %s (%.1f MiB in %s)\n", db, to, float64(st.Size())/(1<<20), time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&db, "db", envOr("SPINBROKER_DB", "spinbroker.db"), "database file (env SPINBROKER_DB)")
	cmd.Flags().StringVar(&to, "to", "", "the new file to write (must not exist)")
	return cmd
}
