package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// The dashboard's reads. Each runs on the read pool and reads through an
// index a bounded number of rows, so that a page costs the same with a
// hundred packages or a million. TestUIPlans holds them to their indexes.
// Those that list commands read them without their parameters and outputs
// (commandColsLight), near 1 MiB each, which the dashboard shows only on a
// command's own page (read with Command).
const (
	qCompletions = `SELECT minute, succeeded, failed, cancelled FROM completions
		WHERE minute >= ? AND minute < ? ORDER BY minute`
	qQueueHead = `SELECT ` + commandColsLight + `, backoff_until FROM commands
		WHERE resource = ? AND state = 'ready' ORDER BY seq LIMIT 1`
	// qCommandsByID takes its ids as one JSON array, so that one prepared
	// statement serves any number of them.
	qCommandsByID = `SELECT ` + commandColsLight + ` FROM commands
		WHERE id IN (SELECT value FROM json_each(?))`
	qDependents = `SELECT command_id FROM command_deps WHERE depends_on = ? ORDER BY rowid LIMIT ?`
	// Id prefixes are searched as a range of the primary key: LIKE would
	// scan the table unless case_sensitive_like were set on every
	// connection.
	qSearchPackages = `SELECT ` + packageCols + ` FROM packages WHERE id >= ? AND id < ? ORDER BY id LIMIT ?`
	qSearchCommands = `SELECT ` + commandColsLight + ` FROM commands WHERE id >= ? AND id < ? ORDER BY id LIMIT ?`
)

// Completions counts the commands that reached a terminal state in each
// minute of the given number of minutes that starts with the minute holding
// since: one Counts per minute, oldest first, with only Succeeded, Failed
// and Cancelled set. The writer keeps the completions table (counts.go), so this
// reads at most one row per minute whatever the traffic.
func (db *DB) Completions(ctx context.Context, since time.Time, minutes int) ([]spinbroker.Counts, error) {
	if minutes < 1 || minutes > 24*60 {
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "minutes must be between 1 and %d", 24*60)
	}
	first := nanos(since) / int64(time.Minute)
	rows, err := db.reader.query(qCompletions, first, first+int64(minutes))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]spinbroker.Counts, minutes)
	for rows.Next() {
		var minute int64
		var c spinbroker.Counts
		if err := rows.Scan(&minute, &c.Succeeded, &c.Failed, &c.Cancelled); err != nil {
			return nil, err
		}
		out[minute-first] = c
	}
	return out, interpretError(rows.Err())
}

// QueueCommands pages through a queue's enqueued, unfinished commands in
// queue order: up to limit of them whose seq is greater than afterSeq, with
// their dependencies but without their parameters and outputs (nil).
func (db *DB) QueueCommands(ctx context.Context, resource string, afterSeq int64, limit int) ([]spinbroker.Command, error) {
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return nil, err
	}
	limit = clampLimit(limit)
	return queryQueueCommands(db.reader, qQueueCommandsLight, resource, afterSeq, limit)
}

// QueuePage reads a queue as Queue does, all of one moment, but with up to
// limit of its commands (none with 0) whose seq is greater than afterSeq,
// without their parameters and outputs (nil): the dashboard's page of a
// queue, which shows neither. (Queue, the API's answer, keeps them.)
func (db *DB) QueuePage(ctx context.Context, resource string, afterSeq int64, limit int) (*spinbroker.Queue, error) {
	if afterSeq < 0 || limit < 0 {
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "a page of commands starts after sequence 0 or later and holds 0 or more")
	}
	return db.queue(ctx, resource, qQueueCommandsLight, afterSeq, min(limit, spinbroker.MaxListLimit))
}

// QueueHead returns the head of line of a queue: its first ready command,
// the one the next delivery hands out, without its parameters and output,
// and the end of its retry back-off (zero when it is not waiting one out).
// While it waits, it holds back every command behind it (delivery rule 3).
// It returns nil when nothing is ready.
func (db *DB) QueueHead(ctx context.Context, resource string) (*spinbroker.Command, time.Time, error) {
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return nil, time.Time{}, err
	}
	var backoff sql.NullInt64
	c, err := scanCommand(&extraScanner{row: db.reader.queryRow(qQueueHead, resource), extra: []any{&backoff}})
	if isNoRows(err) {
		return nil, time.Time{}, nil
	} else if err != nil {
		return nil, time.Time{}, err
	}
	if err := loadDeps(db.reader, []*spinbroker.Command{&c}); err != nil {
		return nil, time.Time{}, err
	}
	var until time.Time
	if backoffLeft(backoff, nanos(db.now())) {
		until = fromNanos(backoff.Int64)
	}
	return &c, until, nil
}

// extraScanner scans a row of commandCols followed by more columns.
type extraScanner struct {
	row   scanner
	extra []any
}

func (s *extraScanner) Scan(dest ...any) error {
	return s.row.Scan(append(dest, s.extra...)...)
}

// CommandsByID reads the commands with the given ids, keyed by id; ids that
// name no command are left out. Their Dependencies are not loaded (left
// empty), nor their parameters and outputs (nil): the dashboard wants them
// for their states, and one query beats one per command.
func (db *DB) CommandsByID(ctx context.Context, ids []string) (map[string]spinbroker.Command, error) {
	out := make(map[string]spinbroker.Command, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := db.reader.queryIDs(qCommandsByID, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, interpretError(err)
		}
		out[c.ID] = c
	}
	return out, interpretError(rows.Err())
}

// Dependents returns up to limit commands that depend on command id, in the
// order the edges were made. Their Dependencies, parameters and outputs are
// not loaded.
func (db *DB) Dependents(ctx context.Context, id string, limit int) ([]spinbroker.Command, error) {
	ids, err := queryStrings(db.reader, qDependents, id, clampLimit(limit))
	if err != nil {
		return nil, err
	}
	byID, err := db.CommandsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]spinbroker.Command, 0, len(ids))
	for _, d := range ids {
		if c, ok := byID[d]; ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// Search finds up to limit packages and up to limit commands whose id starts
// with prefix (case-insensitive). Packages come without their commands or
// causer, commands without their dependencies, parameters and outputs. A prefix that cannot start an
// id finds nothing.
func (db *DB) Search(ctx context.Context, prefix string, limit int) ([]spinbroker.Package, []spinbroker.Command, error) {
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	if prefix == "" || len(prefix) > 36 || strings.Trim(prefix, "0123456789abcdef-") != "" {
		return []spinbroker.Package{}, []spinbroker.Command{}, nil
	}
	limit = clampLimit(limit)
	// Every id character sorts below '~', so the ids with this prefix are
	// exactly those in [prefix, prefix+"~").
	hi := prefix + "~"
	rows, err := db.reader.query(qSearchPackages, prefix, hi, limit)
	if err != nil {
		return nil, nil, err
	}
	pkgs := []spinbroker.Package{}
	for rows.Next() {
		p, err := scanPackage(rows)
		if err != nil {
			rows.Close()
			return nil, nil, interpretError(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := endRows(rows); err != nil {
		return nil, nil, interpretError(err)
	}
	rows, err = db.reader.query(qSearchCommands, prefix, hi, limit)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	cmds := []spinbroker.Command{}
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, nil, interpretError(err)
		}
		cmds = append(cmds, c)
	}
	return pkgs, cmds, interpretError(rows.Err())
}

// clampLimit applies the list limits of API.md to a page size.
func clampLimit(limit int) int {
	switch {
	case limit <= 0:
		return spinbroker.DefaultListLimit
	case limit > spinbroker.MaxListLimit:
		return spinbroker.MaxListLimit
	}
	return limit
}
