package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spin-broker/spinbroker/internal/store"
)

// The exit codes of 'spinbroker check'.
const (
	checkConsistent   = 0 // nothing wrong (with --repair: nothing left wrong)
	checkInconsistent = 1 // something wrong (with --repair: what it cannot mend)
	checkCannotRun    = 2 // the command line, or a database that cannot be checked
)

func (a *app) checkCommand() *cobra.Command {
	var db string
	var repair bool
	cmd := &cobra.Command{
		Use:   "check --db PATH [--repair]",
		Short: "Check a database, and mend the counts of its packages and queues",
		Long: `check reads a database and says what is wrong with it, in a table (or -o json):

  integrity     SQLite's integrity check: a damaged file
  foreign keys  SQLite's foreign key check: rows whose package or command
                is gone (a hand edit in the sqlite3 shell, whose foreign
                keys are off)
  counts        the per-state counts the broker keeps on every package and
                queue, recounted from the commands
  parameters    commands whose parameters, kept in a table of their own
                (past 2 KiB), are not there (a hand edit, a damaged copy):
                served, they would be handed out with none

A package's state is computed from its counts, and a queue delivers by its
own: a wrong count is a package that never finishes, or finishes too soon,
and a queue that delivers nothing. The broker keeps them exact, but an older
build run on a migrated database, a hand edit, or a restore from a damaged
copy can leave them wrong. check reads one snapshot and writes nothing, so it
may run beside a running broker; it reads the whole file (about 7s per
million commands).

--repair sets every count that differs to what the commands say, in one
transaction, and lists what it changed (WAS, NOW). It needs the broker
stopped, and refuses to run beside one: the broker would not hear of the
packages whose state the repair changes (its long-polls and event streams
would miss them). It mends nothing else: a damaged file is restored from a
backup, and rows whose package or command is gone and commands whose
parameters are lost are listed for you to look at. A
database with schema migrations pending is migrated first ('migrate up').

Exit status:
  0  nothing is wrong; with --repair, nothing is left wrong after it
  1  something is wrong; with --repair, something it cannot mend is (a
     damaged file, rows whose package or command is gone, lost parameters)
  2  the check could not run: a mistake in the command line, no database
     at --db, not a spin-broker database, a file that cannot be read, or
     --repair beside a running broker`,
		Example: `  spinbroker check --db /var/lib/spinbroker/broker.db          # beside a running broker too
  systemctl stop spinbroker
  spinbroker check --db /var/lib/spinbroker/broker.db --repair
  systemctl start spinbroker`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.checkOutput(); err != nil {
				return err
			}
			ctx := cmd.Context()
			start := time.Now()
			pending, err := checkable(ctx, db)
			if err != nil {
				return cannotCheck(err)
			}
			if !repair {
				c, err := store.CheckFile(ctx, db)
				if err != nil {
					return cannotCheck(err)
				}
				return a.reportCheck(db, c, nil, false, time.Since(start))
			}
			if pending > 0 {
				return &exitError{code: checkCannotRun, msg: fmt.Sprintf("the database %s has %d schema migration(s) pending: run 'spinbroker migrate up --db %s' first (with its broker stopped), then check --repair again", db, pending, db)}
			}
			logger := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			st, err := store.Open(ctx, db, store.Options{Exclusive: true, Logger: logger})
			if errors.Is(err, store.ErrInUse) {
				return &exitError{code: checkCannotRun, msg: fmt.Sprintf("%v: --repair needs it stopped, since the broker would not hear of the package states the repair changes (its long-polls and event streams would miss them); stop it, run check --repair, and start it again ('check' without --repair works beside it)", err)}
			} else if err != nil {
				return cannotCheck(err)
			}
			defer st.Close()
			c, err := st.CheckConsistency(ctx)
			if err != nil {
				return cannotCheck(err)
			}
			if len(c.Integrity) > 0 {
				// Counts recounted from a damaged file would be wrong.
				return a.reportCheck(db, c, nil, false, time.Since(start))
			}
			fixed, err := st.RepairCounts(ctx)
			if err != nil {
				return cannotCheck(err)
			}
			c.Miscounts = nil
			return a.reportCheck(db, c, fixed, true, time.Since(start))
		},
	}
	cmd.Flags().StringVar(&db, "db", envOr("SPINBROKER_DB", "spinbroker.db"), "database file (env SPINBROKER_DB)")
	cmd.Flags().BoolVar(&repair, "repair", false, "set the counts that differ to what the commands say (with the broker stopped)")
	return cmd
}

// checkable refuses what check cannot read: no file, a folder, another
// program's database, an empty one, one a newer spin-broker migrated. It
// returns how many migrations the database has pending: an older schema
// has the same counts, and is checked as it is.
func checkable(ctx context.Context, path string) (pending int, err error) {
	if err := existingDB(path); err != nil {
		return 0, err
	}
	st, err := store.Migrations(ctx, path, false)
	if err != nil {
		return 0, err
	}
	for _, m := range st {
		if !m.Applied {
			pending++
		}
	}
	if pending == len(st) {
		return 0, fmt.Errorf("%s is empty, not a spin-broker database (give --db or set SPINBROKER_DB)", path)
	}
	return pending, nil
}

// cannotCheck is the exit of a check that could not run.
func cannotCheck(err error) error {
	if ee := (*exitError)(nil); errors.As(err, &ee) {
		return err
	}
	return &exitError{code: checkCannotRun, msg: storeSentence(err).Error()}
}

// checkJSON is what -o json prints.
type checkJSON struct {
	DB          string          `json:"db"`
	Consistent  bool            `json:"consistent"`
	Repaired    bool            `json:"repaired"`
	Integrity   []string        `json:"integrity"`
	ForeignKeys []foreignKeyRow `json:"foreign_keys"`
	// Counts are the rows whose counts differ; with --repair, those it set.
	Counts []countRow `json:"counts"`
	// LostParameters are the ids of the commands whose parameters are lost.
	LostParameters []string `json:"lost_parameters"`
	Packages       int      `json:"packages"`
	Queues         int      `json:"queues"`
	Commands       int      `json:"commands"`
	Seconds        float64  `json:"seconds"`
}

type foreignKeyRow struct {
	Table  string `json:"table"`
	RowID  int64  `json:"rowid"`
	Parent string `json:"parent"`
}

type countRow struct {
	Table   string        `json:"table"`
	ID      string        `json:"id"`
	Missing bool          `json:"missing"`
	Columns []countColumn `json:"columns"`
}

// countColumn is one column: as stored (with --repair: as it was) and as
// the commands say (as it is now). last_finished_at is in Unix
// nanoseconds, 0 for none.
type countColumn struct {
	Column string `json:"column"`
	Stored int64  `json:"stored"`
	Actual int64  `json:"actual"`
}

// reportCheck prints what the check found (and, with repaired, what it
// mended: fixed) and returns the command's exit.
func (a *app) reportCheck(db string, c *store.Consistency, fixed []store.Miscount, repaired bool, took time.Duration) error {
	rows := c.Miscounts
	if repaired {
		rows = fixed
	}
	// After a repair the counts are right; what is left is what it cannot
	// mend.
	consistent := c.OK()
	if a.jsonOutput() {
		out := checkJSON{DB: db, Consistent: consistent, Repaired: repaired, Integrity: c.Integrity,
			ForeignKeys: []foreignKeyRow{}, Counts: []countRow{}, LostParameters: c.LostParameters,
			Packages: c.Packages, Queues: c.Queues, Commands: c.Commands, Seconds: took.Seconds()}
		if out.Integrity == nil {
			out.Integrity = []string{}
		}
		if out.LostParameters == nil {
			out.LostParameters = []string{}
		}
		for _, v := range c.ForeignKeys {
			out.ForeignKeys = append(out.ForeignKeys, foreignKeyRow(v))
		}
		for _, m := range rows {
			r := countRow{Table: m.Table, ID: m.ID, Missing: m.Missing}
			for _, d := range m.Diffs() {
				r.Columns = append(r.Columns, countColumn(d))
			}
			out.Counts = append(out.Counts, r)
		}
		if err := a.printJSON(out); err != nil {
			return err
		}
	} else if err := printCheck(a.stdout, c, rows, repaired); err != nil {
		return err
	}
	switch {
	case len(c.Integrity) > 0:
		return &exitError{code: checkInconsistent, msg: fmt.Sprintf("%s is damaged: restore it from a backup ('spinbroker backup --help' says how); its foreign keys and counts were not checked", db)}
	case len(c.Miscounts) > 0:
		return &exitError{code: checkInconsistent, msg: fmt.Sprintf("the counts of %s in %s differ from their commands: run 'spinbroker check --db %s --repair' with its broker stopped", plural(len(c.Miscounts), "package or queue", "packages and queues"), db, db)}
	case len(c.ForeignKeys) > 0:
		name := "name"
		if len(c.ForeignKeys) == 1 {
			name = "names"
		}
		return &exitError{code: checkInconsistent, msg: fmt.Sprintf("%s of %s %s a package or command that is gone: a repair does not delete rows; look at them with the sqlite3 shell", plural(len(c.ForeignKeys), "row", "rows"), db, name)}
	case len(c.LostParameters) > 0:
		its := "its"
		if len(c.LostParameters) > 1 {
			its = "their"
		}
		return &exitError{code: checkInconsistent, msg: fmt.Sprintf("%s of %s lost %s parameters (kept in command_parameters, and not there): served, they would be handed out as null; a repair cannot know them: cancel and delete their packages, or restore a backup", plural(len(c.LostParameters), "command", "commands"), db, its)}
	}
	return nil
}

// printCheck prints the check's table: one line per check, then one line
// per count column that differs (or that the repair set).
func printCheck(out io.Writer, c *store.Consistency, rows []store.Miscount, repaired bool) error {
	w := newTable(out)
	row(w, "CHECK", "RESULT")
	if len(c.Integrity) == 0 {
		row(w, "integrity", "ok")
	}
	for _, line := range c.Integrity {
		row(w, "integrity", oneLine(line))
	}
	if len(c.Integrity) > 0 {
		row(w, "foreign keys", "not checked (damaged file)")
		row(w, "counts", "not checked (damaged file)")
		row(w, "parameters", "not checked (damaged file)")
		return w.Flush()
	}
	if len(c.ForeignKeys) == 0 {
		row(w, "foreign keys", "ok")
	}
	for _, v := range c.ForeignKeys {
		row(w, "foreign keys", fmt.Sprintf("%s rowid %d: no such row in %s", v.Table, v.RowID, v.Parent))
	}
	of := fmt.Sprintf("%s, %s, %s", plural(c.Packages, "package", "packages"), plural(c.Queues, "queue", "queues"), plural(c.Commands, "command", "commands"))
	switch {
	case len(rows) == 0:
		row(w, "counts", "ok ("+of+")")
	case repaired:
		row(w, "counts", fmt.Sprintf("repaired %s (of %s)", plural(len(rows), "row", "rows"), of))
	default:
		row(w, "counts", fmt.Sprintf("%s (of %s)", plural(len(rows), "row differs", "rows differ"), of))
	}
	if len(c.LostParameters) == 0 {
		row(w, "parameters", "ok")
	}
	for _, id := range c.LostParameters {
		row(w, "parameters", "command "+id+": lost (no row in command_parameters)")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	w = newTable(out)
	if repaired {
		row(w, "TABLE", "ID", "COLUMN", "WAS", "NOW")
	} else {
		row(w, "TABLE", "ID", "COLUMN", "STORED", "COMMANDS SAY")
	}
	for _, m := range rows {
		for _, d := range m.Diffs() {
			stored, actual := countCell(d.Column, d.Stored), countCell(d.Column, d.Actual)
			if m.Missing {
				stored = "(no row)"
			}
			row(w, m.Table, oneLine(m.ID), d.Column, stored, actual)
		}
	}
	return w.Flush()
}

// countCell shows a count, or last_finished_at as a time.
func countCell(column string, v int64) string {
	if column != "last_finished_at" {
		return strconv.FormatInt(v, 10)
	}
	if v == 0 {
		return "-"
	}
	return fmtTime(time.Unix(0, v))
}

// plural is "1 row" or "3 rows".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// countsSummary names the first few rows of ms for a log line or an error.
func countsSummary(ms []store.Miscount) string {
	var parts []string
	for i, m := range ms {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ms)-i))
			break
		}
		var cols []string
		for _, d := range m.Diffs() {
			if m.Missing {
				cols = append(cols, fmt.Sprintf("%s %d", d.Column, d.Actual))
			} else {
				cols = append(cols, fmt.Sprintf("%s %s, commands say %s", d.Column, countCell(d.Column, d.Stored), countCell(d.Column, d.Actual)))
			}
		}
		what := strings.TrimSuffix(m.Table, "s") + " " + m.ID + ": "
		if m.Missing {
			what += "no row, its commands say "
		}
		parts = append(parts, what+strings.Join(cols, "; "))
	}
	return strings.Join(parts, " | ")
}
