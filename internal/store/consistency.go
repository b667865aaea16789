package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	spinbroker "github.com/spin-broker/spinbroker"
)

// The counts on packages and queues are kept by the writer (counts.go), and
// a package's state is computed from them. Nothing in this build lets them
// drift, but a database can still hold wrong ones: an older build (schema
// 1's triggers) run on a migrated file, a hand edit in the sqlite3 shell, a
// restore from a damaged copy. A wrong count is a package that stays
// running for ever, or says succeeded too soon, and a queue whose n_leased
// holds it at its concurrency with nothing leased. These functions recount
// them from the commands and mend them.

// RowCounts are the counts a package's or a queue's row keeps.
type RowCounts struct {
	// Total is the package's number of commands (packages only).
	Total int
	// Counts are the commands per state; a queue keeps only Blocked,
	// Ready and Leased.
	Counts spinbroker.Counts
	// LastFinishedAt is when the package's last command finished (Unix
	// nanoseconds, 0 for never); packages only. It is checked only for a
	// package whose commands have all finished: one that is running again
	// after a retry keeps the finish time it had.
	LastFinishedAt int64
}

// Miscount is a package or queue row whose counts differ from what its
// commands say.
type Miscount struct {
	Table string // "packages" or "queues"
	ID    string // the package's id, or the queue's resource
	// Missing is a queue with enqueued commands and no row: its commands
	// are never delivered.
	Missing bool
	Stored  RowCounts // what the row holds (zero when Missing)
	Actual  RowCounts // what the commands say
}

// CountDiff is one column of a Miscount.
type CountDiff struct {
	Column         string
	Stored, Actual int64
}

// Diffs lists the columns whose stored value differs from the commands'.
// A missing queue row lists its columns whatever their values.
func (m Miscount) Diffs() []CountDiff {
	type col struct {
		name           string
		stored, actual int64
	}
	s, a := m.Stored, m.Actual
	cols := []col{
		{"n_blocked", int64(s.Counts.Blocked), int64(a.Counts.Blocked)},
		{"n_ready", int64(s.Counts.Ready), int64(a.Counts.Ready)},
		{"n_leased", int64(s.Counts.Leased), int64(a.Counts.Leased)},
	}
	if m.Table == "packages" {
		cols = []col{
			{"total", int64(s.Total), int64(a.Total)},
			{"n_staged", int64(s.Counts.Staged), int64(a.Counts.Staged)},
			cols[0], cols[1], cols[2],
			{"n_succeeded", int64(s.Counts.Succeeded), int64(a.Counts.Succeeded)},
			{"n_failed", int64(s.Counts.Failed), int64(a.Counts.Failed)},
			{"n_cancelled", int64(s.Counts.Cancelled), int64(a.Counts.Cancelled)},
			{"last_finished_at", s.LastFinishedAt, a.LastFinishedAt},
		}
	}
	var out []CountDiff
	for _, c := range cols {
		if c.stored != c.actual || m.Missing {
			out = append(out, CountDiff{Column: c.name, Stored: c.stored, Actual: c.actual})
		}
	}
	return out
}

// ForeignKeyViolation is a row of SQLite's foreign_key_check: a row of
// Table whose reference to Parent names no row there.
type ForeignKeyViolation struct {
	Table  string
	RowID  int64
	Parent string
}

// Consistency is what a check of a database found.
type Consistency struct {
	// Integrity are the lines of SQLite's integrity_check other than "ok".
	// When there are any, nothing else was checked: counts read from a
	// damaged file say nothing, and mending them would write wrong ones.
	Integrity   []string
	ForeignKeys []ForeignKeyViolation
	Miscounts   []Miscount
	// LostParameters are the ids of the commands whose parameters were
	// kept aside (their row holds '', migration 00006) and have no row in
	// command_parameters: the store would hand them out with "parameters":
	// null (next and claim alike). Only a person can say what they were.
	LostParameters []string
	// Packages, Queues and Commands are the rows there were.
	Packages, Queues, Commands int
}

// OK reports whether the check found nothing wrong.
func (c *Consistency) OK() bool {
	return len(c.Integrity) == 0 && len(c.ForeignKeys) == 0 && len(c.Miscounts) == 0 && len(c.LostParameters) == 0
}

// qLostParameters lists the commands whose parameters were kept aside and
// are not there; qParametersAside tells whether the schema keeps any aside
// (a database not yet migrated to 00006 is checked as it is).
const (
	qLostParameters = `SELECT id FROM commands WHERE octet_length(parameters) = 0
		AND NOT EXISTS (SELECT 1 FROM command_parameters p WHERE p.command_id = commands.id) ORDER BY id`
	qParametersAside = `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'command_parameters'`
)

// queryer runs a query: a read transaction, or the writer's.
type queryer interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// qRecountPackages recounts every package's commands in one pass over
// commands (grouped through commands_package, in package order) and
// returns the packages whose row says otherwise. A package's last finish
// is checked only when all its commands have finished and it was not
// cancelled (only then does the API show it): it is the latest finish of
// its commands, and no earlier than its enqueue (a command may have been
// cancelled in staging).
const qRecountPackages = `SELECT * FROM (
	SELECT p.id,
		p.total, p.n_staged, p.n_blocked, p.n_ready, p.n_leased, p.n_succeeded, p.n_failed, p.n_cancelled,
		coalesce(p.last_finished_at, 0) AS s_last,
		coalesce(c.total, 0) AS a_total, coalesce(c.staged, 0) AS a_staged, coalesce(c.blocked, 0) AS a_blocked,
		coalesce(c.ready, 0) AS a_ready, coalesce(c.leased, 0) AS a_leased, coalesce(c.succeeded, 0) AS a_succeeded,
		coalesce(c.failed, 0) AS a_failed, coalesce(c.cancelled, 0) AS a_cancelled,
		CASE WHEN p.cancelled_at IS NULL AND p.enqueued_at IS NOT NULL AND c.total > 0
			AND c.succeeded + c.failed + c.cancelled = c.total
			THEN max(coalesce(c.last, 0), p.enqueued_at)
			ELSE coalesce(p.last_finished_at, 0) END AS a_last
	FROM packages p LEFT JOIN (
		SELECT package_id, count(*) AS total,
			sum(state = 'staged') AS staged, sum(state = 'blocked') AS blocked,
			sum(state = 'ready') AS ready, sum(state = 'leased') AS leased,
			sum(state = 'succeeded') AS succeeded, sum(state = 'failed') AS failed,
			sum(state = 'cancelled') AS cancelled, max(finished_at) AS last
		FROM commands GROUP BY package_id) c ON c.package_id = p.id)
WHERE total <> a_total OR n_staged <> a_staged OR n_blocked <> a_blocked OR n_ready <> a_ready
	OR n_leased <> a_leased OR n_succeeded <> a_succeeded OR n_failed <> a_failed
	OR n_cancelled <> a_cancelled OR s_last <> a_last
ORDER BY id`

// qQueueRecount counts a queue's commands in one state, through that
// state's partial index: the unfinished commands only, however many
// finished ones the table holds.
var qQueueRecount = map[spinbroker.CommandState]string{
	spinbroker.Blocked: `SELECT resource, count(*) FROM commands WHERE state = 'blocked' GROUP BY resource`,
	spinbroker.Ready:   `SELECT resource, count(*) FROM commands WHERE state = 'ready' GROUP BY resource`,
	spinbroker.Leased:  `SELECT resource, count(*) FROM commands WHERE state = 'leased' GROUP BY resource`,
}

// recount returns the packages and queues whose counts differ from their
// commands, packages first, each by id.
func recount(ctx context.Context, q queryer) ([]Miscount, error) {
	var out []Miscount
	rows, err := q.QueryContext(ctx, qRecountPackages)
	if err != nil {
		return nil, interpretError(err)
	}
	for rows.Next() {
		m := Miscount{Table: "packages"}
		s, a := &m.Stored, &m.Actual
		if err := rows.Scan(&m.ID,
			&s.Total, &s.Counts.Staged, &s.Counts.Blocked, &s.Counts.Ready, &s.Counts.Leased,
			&s.Counts.Succeeded, &s.Counts.Failed, &s.Counts.Cancelled, &s.LastFinishedAt,
			&a.Total, &a.Counts.Staged, &a.Counts.Blocked, &a.Counts.Ready, &a.Counts.Leased,
			&a.Counts.Succeeded, &a.Counts.Failed, &a.Counts.Cancelled, &a.LastFinishedAt); err != nil {
			rows.Close()
			return nil, interpretError(err)
		}
		out = append(out, m)
	}
	if err := endRows(rows); err != nil {
		return nil, interpretError(err)
	}
	if err := rows.Err(); err != nil {
		return nil, interpretError(err)
	}

	actual := map[string]*spinbroker.Counts{}
	for _, st := range []spinbroker.CommandState{spinbroker.Blocked, spinbroker.Ready, spinbroker.Leased} {
		rows, err := q.QueryContext(ctx, qQueueRecount[st])
		if err != nil {
			return nil, interpretError(err)
		}
		for rows.Next() {
			var r string
			var n int
			if err := rows.Scan(&r, &n); err != nil {
				rows.Close()
				return nil, interpretError(err)
			}
			if actual[r] == nil {
				actual[r] = &spinbroker.Counts{}
			}
			actual[r].Add(st, n)
		}
		if err := endRows(rows); err != nil {
			return nil, interpretError(err)
		}
	}
	rows, err = q.QueryContext(ctx, `SELECT resource, n_blocked, n_ready, n_leased FROM queues ORDER BY resource`)
	if err != nil {
		return nil, interpretError(err)
	}
	var queues []Miscount
	for rows.Next() {
		m := Miscount{Table: "queues"}
		if err := rows.Scan(&m.ID, &m.Stored.Counts.Blocked, &m.Stored.Counts.Ready, &m.Stored.Counts.Leased); err != nil {
			rows.Close()
			return nil, interpretError(err)
		}
		if a := actual[m.ID]; a != nil {
			m.Actual.Counts = *a
			delete(actual, m.ID)
		}
		if m.Stored != m.Actual {
			queues = append(queues, m)
		}
	}
	if err := endRows(rows); err != nil {
		return nil, interpretError(err)
	}
	for r, a := range actual {
		queues = append(queues, Miscount{Table: "queues", ID: r, Missing: true, Actual: RowCounts{Counts: *a}})
	}
	slices.SortFunc(queues, func(x, y Miscount) int { return strings.Compare(x.ID, y.ID) })
	return append(out, queues...), nil
}

// consistency runs the whole check on q, one snapshot: the integrity
// check, then (on an intact file) the foreign keys and the counts.
func consistency(ctx context.Context, q queryer) (*Consistency, error) {
	c := &Consistency{}
	if err := scanLines(ctx, q, `PRAGMA integrity_check`, func(rows *sql.Rows) error {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		if line != "ok" {
			c.Integrity = append(c.Integrity, line)
		}
		return nil
	}); err != nil {
		// SQLite's integrity check reports what it finds, and ends in
		// SQLITE_CORRUPT when a page cannot be read at all: that, and the
		// lines before it, are its finding about the file, not a check
		// that could not run.
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_CORRUPT {
			return nil, err
		}
		c.Integrity = append(c.Integrity, se.Error())
	}
	if len(c.Integrity) > 0 {
		return c, nil
	}
	if err := scanLines(ctx, q, `PRAGMA foreign_key_check`, func(rows *sql.Rows) error {
		var v ForeignKeyViolation
		var rowid sql.NullInt64
		var fkid int
		if err := rows.Scan(&v.Table, &rowid, &v.Parent, &fkid); err != nil {
			return err
		}
		v.RowID = rowid.Int64
		c.ForeignKeys = append(c.ForeignKeys, v)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := scanLines(ctx, q, `SELECT (SELECT count(*) FROM packages), (SELECT count(*) FROM queues), (SELECT count(*) FROM commands)`, func(rows *sql.Rows) error {
		return rows.Scan(&c.Packages, &c.Queues, &c.Commands)
	}); err != nil {
		return nil, err
	}
	aside := 0
	if err := scanLines(ctx, q, qParametersAside, func(rows *sql.Rows) error { return rows.Scan(&aside) }); err != nil {
		return nil, err
	}
	if aside > 0 {
		if err := scanLines(ctx, q, qLostParameters, func(rows *sql.Rows) error {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			c.LostParameters = append(c.LostParameters, id)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	var err error
	c.Miscounts, err = recount(ctx, q)
	return c, err
}

// scanLines runs query on q and calls fn for each row.
func scanLines(ctx context.Context, q queryer, query string, fn func(*sql.Rows) error) error {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return interpretError(err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return interpretError(err)
		}
	}
	if err := rows.Err(); err != nil {
		return interpretError(err)
	}
	return interpretError(endRows(rows))
}

// CheckConsistency runs SQLite's integrity check, its foreign key check
// and a recount of every package's and queue's counts from the commands,
// all in one read transaction, beside the broker's writes. It reads the
// whole file (the integrity check) and every command once.
func (db *DB) CheckConsistency(ctx context.Context) (*Consistency, error) {
	tx, err := db.rdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, interpretError(err)
	}
	defer tx.Rollback() //nolint:errcheck // a read: there is nothing to keep
	return consistency(ctx, tx)
}

// CheckFile is CheckConsistency for a database file this process has not
// opened, whether or not a broker serves it: it reads, applies no
// migration and writes nothing (but SQLite's -shm beside a file that has
// none yet). The file must exist and be spin-broker's.
func CheckFile(ctx context.Context, path string) (*Consistency, error) {
	if err := notFolder(path); err != nil {
		return nil, err
	}
	if err := noAccess(path, false); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: check: %w", err)
	}
	if err := throughServedName(path, "check", "what is read through this name would miss the broker's last commits, still in the -wal beside the name it serves"); err != nil {
		return nil, err
	}
	conn, err := sql.Open("sqlite", dsn(path, "&mode=rw&_pragma=query_only(1)"))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetMaxOpenConns(1)
	if err := spinBrokerTables(ctx, conn, path, "check", "check: read "+path); err != nil {
		return nil, err
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: check: read %s: %w", path, err)
	}
	defer tx.Rollback() //nolint:errcheck // a read: there is nothing to keep
	c, err := consistency(ctx, tx)
	if err != nil {
		if nerr := unreadable(path, err); nerr != nil {
			return nil, nerr
		}
		return nil, fmt.Errorf("store: check: read %s: %w", path, err)
	}
	return c, nil
}

// qRepairPackage sets a package's counts to what its commands say.
const qRepairPackage = `UPDATE packages SET total = ?2, n_staged = ?3, n_blocked = ?4, n_ready = ?5,
	n_leased = ?6, n_succeeded = ?7, n_failed = ?8, n_cancelled = ?9, last_finished_at = nullif(?10, 0)
	WHERE id = ?1`

// qRepairQueue sets a queue's counts to what its commands say, making the
// row of a queue that has none (with the default settings, as the first
// enqueue would have).
const qRepairQueue = `INSERT INTO queues (resource, n_blocked, n_ready, n_leased, last_active_at)
	VALUES (?1, ?2, ?3, ?4, ?5)
	ON CONFLICT (resource) DO UPDATE SET
		n_blocked = excluded.n_blocked, n_ready = excluded.n_ready, n_leased = excluded.n_leased`

// RepairCounts recounts every package's and queue's counts from the
// commands and sets those that differ, in one write transaction of the
// writer: in a running broker too, whose writes wait for it (about a
// second per million commands). It returns what it changed, as it was and
// as it is now. Packages and queues it changed are announced as changed,
// so that waits and event streams see their new states.
func (db *DB) RepairCounts(ctx context.Context) ([]Miscount, error) {
	var fixed []Miscount
	err := db.write(ctx, func(t *Tx) error {
		ms, err := recount(ctx, txQueryer{t})
		if err != nil {
			return err
		}
		now := nanos(t.now)
		for _, m := range ms {
			a := m.Actual
			switch m.Table {
			case "packages":
				_, err = t.exec(qRepairPackage, m.ID, a.Total, a.Counts.Staged, a.Counts.Blocked, a.Counts.Ready,
					a.Counts.Leased, a.Counts.Succeeded, a.Counts.Failed, a.Counts.Cancelled, a.LastFinishedAt)
				t.commit.Packages = append(t.commit.Packages, m.ID)
			case "queues":
				_, err = t.exec(qRepairQueue, m.ID, a.Counts.Blocked, a.Counts.Ready, a.Counts.Leased, now)
				t.commit.Queues = append(t.commit.Queues, m.ID)
			}
			if err != nil {
				return fmt.Errorf("store: repair the counts of %s %s: %w", m.Table, m.ID, err)
			}
		}
		fixed = ms
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fixed, nil
}

// txQueryer runs the queries of recount in the writer's transaction.
type txQueryer struct{ t *Tx }

func (q txQueryer) QueryContext(_ context.Context, query string, args ...any) (*sql.Rows, error) {
	return q.t.query(query, args...)
}
