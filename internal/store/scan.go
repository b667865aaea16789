package store

import (
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// nanos stores a time as Unix nanoseconds.
func nanos(t time.Time) int64 { return t.UnixNano() }

// fromNanos turns stored nanoseconds back into a UTC time.
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// optTime turns a nullable column into a nullable time.
func optTime(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func optString(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	v := s.String
	return &v
}

// optNanos stores a nullable time.
func optNanos(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixNano()
}

// isNoRows reports whether err says a query found nothing.
func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// endRows closes rows once a loop over them has ended, and returns the
// error that ended it, if Next stopped on one: Rows.Close does not say so,
// and rows cut short by a failing step must not pass for all of them.
func endRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}

// queryStrings runs a query that selects one text column and returns its
// values (ids, mostly).
func queryStrings(q querier, query string, args ...any) ([]string, error) {
	rows, err := q.query(query, args...)
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, interpretError(err)
		}
		out = append(out, v)
	}
	return out, interpretError(endRows(rows))
}

// commandCols are the columns scanCommand reads, in its order, from a
// statement on commands that does not rename the table.
const commandCols = commandColsHead + colParameters + commandColsMid + `output` + commandColsTail

// Parameters longer than spillBytes are kept in command_parameters, and
// the command's row holds an empty string in their place (migration 00006): SQLite
// rewrites a row whole, overflow pages and all, on every update that
// changes its size, and a command's row is updated at its lease and at
// its completion. 2 KiB keeps a row within half a page.
const spillBytes = 2 << 10

// colParameters reads a command's parameters wherever they are kept;
// colParameterBytes, their length in bytes without reading them
// (octet_length of a column reads only the record's header), 0 for
// kept-aside parameters whose row is missing (a hand edit or a damaged
// restore, which `spinbroker check` reports): such a command is served
// with null parameters, and must not fail every claim on its queue.
const (
	colParameters = `CASE WHEN octet_length(parameters) > 0 THEN parameters
		ELSE (SELECT p.parameters FROM command_parameters p WHERE p.command_id = commands.id) END`
	colParameterBytes = `CASE WHEN octet_length(parameters) > 0 THEN octet_length(parameters)
		ELSE coalesce((SELECT octet_length(p.parameters) FROM command_parameters p WHERE p.command_id = commands.id), 0) END`
	// colAnswerBytes is the bytes of text a command adds to an answer
	// that carries it: its parameters, output, reason and dependencies'
	// ids; for the bounds of a claim's answer and of an answer read in the
	// writer's transaction.
	colAnswerBytes = colParameterBytes + ` + coalesce(octet_length(output), 0) +
		coalesce(octet_length(reason), 0) + 40 * n_deps`
)

// commandColsLight are commandCols with parameters and output read as NULL,
// which the scanned command leaves nil: for the dashboard's lists, which
// show neither. Each may be near 1 MiB, and a page lists up to 1,000
// commands; only a command's own page shows them.
const commandColsLight = commandColsHead + `NULL AS parameters` + commandColsMid + `NULL AS output` + commandColsTail

// The parts of commandCols around parameters and output.
const (
	commandColsHead = `id, package_id, key, resource, action, `
	commandColsMid  = `, max_attempts,
	lease_duration, not_before, state, seq, attempts, reason, `
	commandColsTail = `,
	lease_expires_at, created_at, enqueued_at, started_at, finished_at, n_deps`
)

// lightQuery returns query, a statement that selects commandCols, selecting
// commandColsLight instead.
func lightQuery(query string) string {
	if !strings.Contains(query, commandCols) {
		panic("store: lightQuery of a statement without commandCols")
	}
	return strings.ReplaceAll(query, commandCols, commandColsLight)
}

type scanner interface{ Scan(dest ...any) error }

// scanCommand reads one row of commandCols. Dependencies are left empty
// (not nil); loadDeps fills them.
func scanCommand(s scanner) (spinbroker.Command, error) {
	c, _, err := scanCommandDeps(s)
	return c, err
}

// scanCommandDeps is scanCommand that also returns how many dependencies
// the command was given, so that loadDeps can skip those with none.
func scanCommandDeps(s scanner) (spinbroker.Command, int, error) {
	var cs commandScan
	if err := s.Scan(cs.dest()...); err != nil {
		return spinbroker.Command{}, 0, err
	}
	c, n := cs.finish()
	return c, n, nil
}

// commandScan receives one row of commandCols (or commandColsLight), for
// statements that return more columns than those (they add theirs to
// dest()).
type commandScan struct {
	c                                      spinbroker.Command
	n                                      int
	key, reason, params, output            sql.NullString
	leaseDur, notBefore, seq, leaseExpires sql.NullInt64
	enqueued, started, finished            sql.NullInt64
	created                                int64
	state                                  string
}

// dest returns the scan destinations of commandCols, in order.
func (r *commandScan) dest() []any {
	c := &r.c
	return []any{&c.ID, &c.PackageID, &r.key, &c.Resource, &c.Action, &r.params, &c.MaxAttempts,
		&r.leaseDur, &r.notBefore, &r.state, &r.seq, &c.Attempts, &r.reason, &r.output,
		&r.leaseExpires, &r.created, &r.enqueued, &r.started, &r.finished, &r.n}
}

// finish converts what was scanned into the command and its number of
// dependencies.
func (r *commandScan) finish() (spinbroker.Command, int) {
	c := r.c
	c.Key = optString(r.key)
	if r.params.Valid {
		c.Parameters = json.RawMessage(r.params.String)
	}
	c.Dependencies = []string{}
	if r.leaseDur.Valid {
		d := spinbroker.Duration(r.leaseDur.Int64)
		c.LeaseDuration = &d
	}
	c.NotBefore = optTime(r.notBefore)
	c.State = spinbroker.CommandState(r.state)
	if r.seq.Valid {
		v := r.seq.Int64
		c.Seq = &v
	}
	c.Reason = optString(r.reason)
	if r.output.Valid {
		c.Output = json.RawMessage(r.output.String)
	}
	c.LeaseExpiresAt = optTime(r.leaseExpires)
	c.CreatedAt = fromNanos(r.created)
	c.EnqueuedAt = optTime(r.enqueued)
	c.StartedAt = optTime(r.started)
	c.FinishedAt = optTime(r.finished)
	return c, r.n
}

// getCommand reads one command with its dependencies.
func getCommand(q querier, id string) (*spinbroker.Command, error) {
	c, n, err := scanCommandDeps(q.queryRow(`SELECT `+commandCols+` FROM commands WHERE id = ?`, id))
	if isNoRows(err) {
		return nil, spinbroker.Errorf(spinbroker.ENOTFOUND, "command %s not found", id)
	} else if err != nil {
		return nil, err
	}
	if n > 0 {
		if err := loadDeps(q, []*spinbroker.Command{&c}); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// loadDeps fills the dependencies of each command, in the order they were
// given.
func loadDeps(q querier, cmds []*spinbroker.Command) error {
	for _, c := range cmds {
		rows, err := q.query(`SELECT depends_on FROM command_deps WHERE command_id = ? ORDER BY rowid`, c.ID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				rows.Close()
				return err
			}
			c.Dependencies = append(c.Dependencies, d)
		}
		if err := endRows(rows); err != nil {
			return err
		}
	}
	return nil
}

// packageCols are the columns scanPackage reads, in its order.
const packageCols = `id, state, created_at, enqueued_at, cancelled_at, last_finished_at, total,
	n_staged, n_blocked, n_ready, n_leased, n_succeeded, n_failed, n_cancelled`

func scanPackage(s scanner) (spinbroker.Package, error) {
	var (
		p                              spinbroker.Package
		state                          string
		created                        int64
		enqueued, cancelled, lastFinis sql.NullInt64
	)
	err := s.Scan(&p.ID, &state, &created, &enqueued, &cancelled, &lastFinis, &p.Total,
		&p.Counts.Staged, &p.Counts.Blocked, &p.Counts.Ready, &p.Counts.Leased,
		&p.Counts.Succeeded, &p.Counts.Failed, &p.Counts.Cancelled)
	if err != nil {
		return p, err
	}
	p.State = spinbroker.PackageState(state)
	p.CreatedAt = fromNanos(created)
	p.EnqueuedAt = optTime(enqueued)
	switch {
	case p.State == spinbroker.PackageCancelled:
		p.FinishedAt = optTime(cancelled)
	case p.State.Terminal():
		p.FinishedAt = optTime(lastFinis)
	}
	return p, nil
}

// qCauser finds a package's first failure through commands_failures.
const qCauser = `SELECT id, reason FROM commands
	WHERE package_id = ? AND state IN ('failed', 'cancelled')
	  AND (state = 'failed' OR cancelled_by IS NOT NULL)
	ORDER BY finished_at, seq LIMIT 1`

// fillCauser sets causer and reason: the first command of the package, by
// finish time, that failed or was cancelled by a cascade.
func fillCauser(q querier, p *spinbroker.Package) error {
	if p.Counts.Failed+p.Counts.Cancelled == 0 {
		return nil
	}
	var id string
	var reason sql.NullString
	err := q.queryRow(qCauser, p.ID).Scan(&id, &reason)
	if isNoRows(err) {
		return nil
	} else if err != nil {
		return err
	}
	p.Causer = &id
	p.Reason = optString(reason)
	return nil
}

// getPackage reads a package, with its commands when withCommands is set.
func getPackage(q querier, id string, withCommands bool) (*spinbroker.Package, error) {
	p, err := scanPackage(q.queryRow(`SELECT `+packageCols+` FROM packages WHERE id = ?`, id))
	if isNoRows(err) {
		return nil, spinbroker.Errorf(spinbroker.ENOTFOUND, "package %s not found", id)
	} else if err != nil {
		return nil, err
	}
	if err := fillCauser(q, &p); err != nil {
		return nil, err
	}
	if withCommands {
		if p.Commands, err = packageCommands(q, id, 0, -1); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

// A package's commands by position, through commands_package: those from
// position ?2 on, ?3 of them at most (-1: all), and the dependencies of
// those between positions ?2 and ?3.
const (
	qPackageCommands = `SELECT ` + commandCols + `, pos FROM commands
		WHERE package_id = ?1 AND pos >= ?2 ORDER BY pos LIMIT ?3`
	qPackageDeps = `SELECT d.command_id, d.depends_on FROM command_deps d
		JOIN commands c ON c.id = d.command_id
		WHERE c.package_id = ?1 AND c.pos BETWEEN ?2 AND ?3 ORDER BY d.rowid`
)

// qPackageCommandsLight is qPackageCommands without the parameters and
// outputs, for the dashboard's page of a package.
var qPackageCommandsLight = lightQuery(qPackageCommands)

// packageCommands reads up to limit (-1: all) of a package's commands, in
// the order they were added, from position from on, with their
// dependencies in two queries rather than one per command. Positions count
// from 0 without gaps (a command goes only with its package), so position
// from is the package's from-th command.
func packageCommands(q querier, id string, from, limit int) ([]spinbroker.Command, error) {
	return packageCommandsBounded(q, qPackageCommands, id, from, limit, 0)
}

// packageCommandsBounded is packageCommands through query (qPackageCommands
// or qPackageCommandsLight) that, with maxBytes > 0, stops after the
// command that takes the parameters and outputs read to maxBytes or more:
// it reads one command at least.
func packageCommandsBounded(q querier, query, id string, from, limit, maxBytes int) ([]spinbroker.Command, error) {
	rows, err := q.query(query, id, from, limit)
	if err != nil {
		return nil, err
	}
	cmds := []spinbroker.Command{}
	index := map[string]int{}
	deps := 0
	last := from
	size := 0
	for rows.Next() {
		var cs commandScan
		if err := rows.Scan(append(cs.dest(), &last)...); err != nil {
			rows.Close()
			return nil, err
		}
		c, n := cs.finish()
		index[c.ID] = len(cmds)
		cmds = append(cmds, c)
		deps += n
		if size += len(c.Parameters) + len(c.Output); maxBytes > 0 && size >= maxBytes {
			break
		}
	}
	if err := rows.Err(); err != nil {
		// A read that fails part way (interrupted, a fault of the file)
		// must not pass for a package with fewer commands.
		rows.Close()
		return nil, interpretError(err)
	}
	if err := endRows(rows); err != nil {
		return nil, err
	}
	if deps == 0 {
		return cmds, nil
	}
	rows, err = q.query(qPackageDeps, id, from, last)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var cid, dep string
		if err := rows.Scan(&cid, &dep); err != nil {
			return nil, err
		}
		if i, ok := index[cid]; ok {
			cmds[i].Dependencies = append(cmds[i].Dependencies, dep)
		}
	}
	return cmds, rows.Err()
}
