package main

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/spin-broker/spinbroker/internal/store"
)

// backWords are the ways goose and other tools name a migration back, which
// an operator rolling back may try.
var backWords = []string{"down", "down-to", "redo", "reset", "rollback"}

func (a *app) migrateCommand() *cobra.Command {
	var db string
	cmd := &cobra.Command{
		Use:   "migrate status|up",
		Short: "Show or apply the database's schema migrations",
		Long: `migrate shows which schema migrations a database has (status) or applies the
pending ones (up). 'spinbroker serve' applies them at start-up too; run 'up'
by hand to upgrade a database before a new broker starts on it; 'up' refuses
to run while a broker serves the database. There is no 'down': an older
spin-broker refuses a database a newer one migrated, and the way back is the
backup taken before the upgrade, restored with the broker stopped.`,
		Example: `  spinbroker migrate status --db /var/lib/spinbroker/broker.db   # beside a running broker too
  systemctl stop spinbroker
  spinbroker backup --db /var/lib/spinbroker/broker.db --to /var/backups/broker-before-upgrade.db
  spinbroker migrate up --db /var/lib/spinbroker/broker.db
  systemctl start spinbroker`,
		Args:      args(1, "status or up"),
		ValidArgs: []string{"status", "up"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if slices.Contains(backWords, args[0]) {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("there is no 'migrate %s': a database is never migrated back; to run an older spin-broker again, stop this one and restore the backup taken before the upgrade ('spinbroker backup --help' says how)", args[0])}
			}
			if args[0] != "status" && args[0] != "up" {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("want status or up, not %q", args[0])}
			}
			if err := existingDB(db); err != nil && (args[0] == "status" || !errors.Is(err, fs.ErrNotExist)) {
				return err
			} else if err != nil {
				// 'up' makes a new database, as serve would, and says
				// so as serve does when its folder is not there.
				if ferr := missingFolder(db, "create it, or give --db a file in one that does"); ferr != nil {
					return ferr
				}
			}
			st, err := store.Migrations(cmd.Context(), db, args[0] == "up")
			if errors.Is(err, store.ErrInUse) {
				return fmt.Errorf("%w: stop it first (a broker applies the migrations itself when it starts)", err)
			} else if err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tNAME\tAPPLIED")
			for _, m := range st {
				applied := "pending"
				if m.Applied {
					applied = m.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
				}
				fmt.Fprintf(w, "%d\t%s\t%s\n", m.Version, m.Name, applied)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&db, "db", envOr("SPINBROKER_DB", "spinbroker.db"), "database file (env SPINBROKER_DB)")
	return cmd
}
