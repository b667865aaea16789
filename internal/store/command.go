package store

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"slices"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// Command reads one command. Its parameters are nil only when they are
// lost: kept aside, and their row gone (CheckConsistency lists such
// commands).
func (db *DB) Command(ctx context.Context, id string) (*spinbroker.Command, error) {
	return getCommand(db.reader, id)
}

// qCommandResources takes its ids as one JSON array, as qCommandsByID does.
const qCommandResources = `SELECT id, resource FROM commands WHERE id IN (SELECT value FROM json_each(?))`

// CommandResources answers the resource of each of ids that names a
// command: all an agent token's permission check needs, in one query for a
// whole batch of results rather than a command read per result.
func (db *DB) CommandResources(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := db.reader.queryIDs(qCommandResources, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, resource string
		if err := rows.Scan(&id, &resource); err != nil {
			return nil, interpretError(err)
		}
		out[id] = resource
	}
	return out, interpretError(rows.Err())
}

// The cancel cascade (delivery rule 5): every command that depends on a
// seed, directly or transitively, and still waits (blocked; staged too when
// a deletion takes the evidence away) becomes cancelled, naming its direct
// dependency. One recursive statement whatever the size of the graph; the
// seeds' own dependents are preferred as the named cause (rank 0).
//
// The recursion collects the commands alone (UNION on id), so that each is
// expanded once: a recursion that also carried the parent expanded a
// command once per dependency it has in the set, which costs the sum over
// the commands of in-degree times out-degree (a 600-command package of
// three fully connected layers of 200 held the writer 15 s). The named
// dependency is picked afterwards, one pass over the cancelled commands'
// edges.
const cascadeTail = `
down(id) AS (
	SELECT d.command_id
	FROM seeds s
	JOIN command_deps d ON d.depends_on = s.id
	JOIN commands c ON c.id = d.command_id
	WHERE c.state IN ('blocked', ?3) AND c.package_id <> ?4
	UNION
	SELECT d.command_id
	FROM down
	JOIN command_deps d ON d.depends_on = down.id
	JOIN commands c ON c.id = d.command_id
	WHERE c.state IN ('blocked', ?3) AND c.package_id <> ?4
),
pick(id, parent, verb, r) AS (
	SELECT down.id, d.depends_on, coalesce(s.verb, 'cancelled'), min(s.id IS NULL)
	FROM down
	JOIN command_deps d ON d.command_id = down.id
	LEFT JOIN seeds s ON s.id = d.depends_on
	WHERE s.id IS NOT NULL OR d.depends_on IN (SELECT id FROM down)
	GROUP BY down.id
)
UPDATE commands SET
	state = 'cancelled',
	cancelled_by = pick.parent,
	reason = 'dependency ' || pick.parent || ' ' || pick.verb,
	finished_at = ?5,
	backoff_until = NULL
FROM pick WHERE commands.id = pick.id
RETURNING commands.id, commands.package_id, commands.resource, commands.seq IS NULL`

const cascadeFromCommand = `WITH RECURSIVE
seeds(id, verb) AS (SELECT ?1, ?2),` + cascadeTail

const cascadeFromPackage = `WITH RECURSIVE
seeds(id, verb) AS (
	SELECT id, CASE WHEN ?2 <> '' THEN ?2 WHEN state = 'failed' THEN 'failed' ELSE 'cancelled' END
	FROM commands
	WHERE package_id = ?1 AND state IN ('staged', 'failed', 'cancelled')
),` + cascadeTail

// cascade cancels what waits on command id, which has just failed or been
// cancelled (verb "failed" or "cancelled").
func (t *Tx) cascade(id, verb string) error {
	if verb == "" {
		var err error
		if verb, err = commandState(t, id); err != nil {
			return err
		}
	}
	rows, err := t.query(cascadeFromCommand, id, verb, "blocked", "", nanos(t.now))
	if err != nil {
		return err
	}
	return t.collectCascade(rows)
}

// cascadePackage cancels what, outside the package, waits on its failed or
// cancelled commands. With verb "deleted" and staged set, it also reaches
// commands still in staging, because the package is about to disappear.
func (t *Tx) cascadePackage(pkgID, verb string, staged bool) error {
	extra := "blocked"
	if staged {
		extra = "staged"
	}
	rows, err := t.query(cascadeFromPackage, pkgID, verb, extra, pkgID, nanos(t.now))
	if err != nil {
		return err
	}
	return t.collectCascade(rows)
}

func (t *Tx) collectCascade(rows *sql.Rows) error {
	defer rows.Close()
	for rows.Next() {
		var id, pkg, resource string
		var staged bool // only a command never enqueued has no seq
		if err := rows.Scan(&id, &pkg, &resource, &staged); err != nil {
			return err
		}
		from := spinbroker.Blocked
		if staged {
			from = spinbroker.Staged
		}
		t.change(id, pkg, resource, from, spinbroker.Cancelled, 0)
		t.commit.Packages = append(t.commit.Packages, pkg)
	}
	return rows.Err()
}

// Complete records the result of a command. With res.Lease set it must be
// the command's current lease; without one (a person settling it by hand)
// the command must be ready or leased. A second identical result is
// answered with the first; a different one is a conflict.
func (db *DB) Complete(ctx context.Context, id string, res spinbroker.Result) (cmd *spinbroker.Command, err error) {
	if err := checkResult(&res); err != nil {
		if _, nf := db.Command(ctx, id); nf != nil {
			return nil, nf
		}
		return nil, err
	}
	err = db.write(ctx, func(t *Tx) error {
		var n int
		cmd, n, err = t.complete(id, &res)
		switch {
		case err != nil:
			return err
		case cmd == nil:
			cmd, err = getCommand(t, id)
		case n > 0:
			err = loadDeps(t, []*spinbroker.Command{cmd})
		}
		return err
	})
	return cmd, err
}

// qCompleteLeased records the result of a command whose current lease the
// caller holds, in one statement: the common case of an agent's result.
const qCompleteLeased = qCompleteLeasedUpdate + commandCols

// qCompleteLeasedBrief is qCompleteLeased for a batch, which answers no
// command: it returns only what the transition needs.
const qCompleteLeasedBrief = qCompleteLeasedUpdate + `package_id, resource, attempts`

// qCompleteLeasedUpdate is the update both of them make, up to what they
// return after n_dependents.
const qCompleteLeasedUpdate = `UPDATE commands SET state = ?1, reason = ?2, output = ?3, finished_at = ?4,
		lease_token = NULL, lease_ttl = NULL, lease_expires_at = NULL, backoff_until = NULL
	WHERE id = ?5 AND state = 'leased' AND lease_token = ?6
	RETURNING n_dependents, `

// qCompleteLeasedMany is qCompleteLeasedBrief for many results at once:
// ?1 is a JSON array of [id, lease, state, reason, output] (reason and
// output as JSON strings or null, output holding the result's own text).
const qCompleteLeasedMany = `UPDATE commands SET state = r.state, reason = r.reason, output = r.output, finished_at = ?2,
		lease_token = NULL, lease_ttl = NULL, lease_expires_at = NULL, backoff_until = NULL
	FROM (SELECT value->>0 AS id, value->>1 AS lease, value->>2 AS state, value->>3 AS reason, value->>4 AS output
		FROM json_each(?1)) AS r
	WHERE commands.id = r.id AND commands.state = 'leased' AND commands.lease_token = r.lease
	RETURNING commands.id, n_dependents, package_id, resource, attempts`

// checkResult validates the parts of a result that need no database.
func checkResult(res *spinbroker.Result) error {
	if res.Status == nil {
		return spinbroker.Errorf(spinbroker.EINVALID, "status is required: true for success, false for failure")
	}
	out, err := spinbroker.CheckOutput(res.Output)
	if err != nil {
		return err
	}
	res.Output = out
	if res.Reason != nil && len(*res.Reason) > 64<<10 {
		return spinbroker.Errorf(spinbroker.EINVALID, "reason is longer than 64 KiB")
	}
	return nil
}

// complete applies one validated result. When it could tell the result
// in one statement (a success or final failure with the current lease) it
// returns the command as it now is, with how many dependencies it has;
// otherwise a nil command, and the caller reads it back.
func (t *Tx) complete(id string, res *spinbroker.Result) (*spinbroker.Command, int, error) {
	ok, fast, state, reason, output := resultArgs(res)
	if fast {
		var dependents int
		var cs commandScan
		err := t.queryRow(qCompleteLeased, string(state), finalReason(state, reason), output, nanos(t.now), id, res.Lease).Scan(
			append([]any{&dependents}, cs.dest()...)...)
		if err == nil {
			c, n := cs.finish()
			return &c, n, t.completed(id, c.PackageID, c.Resource, state, c.Attempts, dependents)
		} else if !isNoRows(err) {
			return nil, 0, err
		}
		// Not leased with this token: the slow path below says why.
	}
	return nil, 0, t.completeSlow(id, res, ok, reason, output)
}

// completeFast applies a result that carries a lease, for a batch: true
// when the one statement did it, false when the slow path must judge it.
func (t *Tx) completeFast(id string, res *spinbroker.Result) (bool, error) {
	_, fast, state, reason, output := resultArgs(res)
	if !fast {
		return false, nil
	}
	var dependents, attempts int
	var pkg, resource string
	err := t.queryRow(qCompleteLeasedBrief, string(state), finalReason(state, reason), output, nanos(t.now), id, res.Lease).Scan(&dependents, &pkg, &resource, &attempts)
	if isNoRows(err) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, t.completed(id, pkg, resource, state, attempts, dependents)
}

// resultArgs turns a result into the statement's arguments; fast says
// whether one statement can record it (a lease, and no retry asked).
func resultArgs(res *spinbroker.Result) (ok, fast bool, state spinbroker.CommandState, reason, output any) {
	ok = *res.Status
	if res.Reason != nil {
		reason = *res.Reason
	}
	if res.Output != nil {
		output = string(res.Output)
	}
	state = spinbroker.Succeeded
	if !ok {
		state = spinbroker.Failed
	}
	return ok, res.Lease != "" && (ok || !res.Retry), state, reason, output
}

// finalReason is the reason recorded for a final result: a failure without
// one says "failed".
func finalReason(state spinbroker.CommandState, reason any) any {
	if state == spinbroker.Failed && reason == nil {
		return "failed"
	}
	return reason
}

// completed follows a leased command's result: a success releases its
// dependents (if it has any), a failure cancels what waits on it.
func (t *Tx) completed(id, pkg, resource string, state spinbroker.CommandState, attempts, dependents int) error {
	t.change(id, pkg, resource, spinbroker.Leased, state, attempts)
	if state == spinbroker.Succeeded {
		if dependents == 0 {
			return nil
		}
		return t.release(id)
	}
	t.commit.Packages = append(t.commit.Packages, pkg)
	return t.cascade(id, "failed")
}

// completeSlow applies a result that is a retry, comes without a lease, or
// meets a command that is not leased with the lease it carries.
func (t *Tx) completeSlow(id string, res *spinbroker.Result, ok bool, reason, output any) error {
	var (
		pkgID, resource, state string
		token                  sql.NullString
		attempts, maxAttempts  int
		cancelled              bool
	)
	err := t.queryRow(`SELECT c.package_id, c.resource, c.state, c.lease_token, c.attempts, c.max_attempts,
			p.cancelled_at IS NOT NULL
		FROM commands c JOIN packages p ON p.id = c.package_id WHERE c.id = ?`, id).
		Scan(&pkgID, &resource, &state, &token, &attempts, &maxAttempts, &cancelled)
	if isNoRows(err) {
		return spinbroker.Errorf(spinbroker.ENOTFOUND, "command %s not found", id)
	} else if err != nil {
		return err
	}
	st := spinbroker.CommandState(state)
	if st.Terminal() {
		if (st == spinbroker.Succeeded) == ok {
			return nil // the first result stands
		}
		return spinbroker.Errorf(spinbroker.ECONFLICT, "command %s already %s; a different result cannot replace it", id, st)
	}
	switch {
	case st == spinbroker.Staged || st == spinbroker.Blocked:
		return spinbroker.Errorf(spinbroker.ECONFLICT, "command %s is %s and has not been delivered", id, st)
	case res.Lease != "" && (st != spinbroker.Leased || !token.Valid || token.String != res.Lease):
		return spinbroker.Errorf(spinbroker.ESTALE, "lease %s is not the current lease of command %s", spinbroker.Truncate(res.Lease, 40), id)
	}
	now := nanos(t.now)
	switch {
	case ok:
		_, err = t.exec(`UPDATE commands SET state = 'succeeded', reason = ?, output = ?, finished_at = ?,
				lease_token = NULL, lease_ttl = NULL, lease_expires_at = NULL, backoff_until = NULL
			WHERE id = ?`, reason, output, now, id)
		if err != nil {
			return err
		}
		t.change(id, pkgID, resource, st, spinbroker.Succeeded, attempts)
		return t.release(id)
	case res.Retry && attempts < maxAttempts && !cancelled:
		until := t.now.Add(spinbroker.Backoff(attempts))
		_, err = t.exec(`UPDATE commands SET state = 'ready', reason = ?, output = ?, ready_at = ?, backoff_until = ?,
				lease_token = NULL, lease_ttl = NULL, lease_expires_at = NULL
			WHERE id = ?`, reason, output, now, nanos(until), id)
		if err != nil {
			return err
		}
		t.change(id, pkgID, resource, st, spinbroker.Ready, attempts)
		return nil
	default:
		if reason == nil {
			reason = "failed"
		}
		return t.fail(id, pkgID, resource, st, attempts, reason, output)
	}
}

// fail marks a command failed and cancels everything that waits on it.
func (t *Tx) fail(id, pkgID, resource string, from spinbroker.CommandState, attempts int, reason, output any) error {
	_, err := t.exec(`UPDATE commands SET state = 'failed', reason = ?, output = ?, finished_at = ?,
			lease_token = NULL, lease_ttl = NULL, lease_expires_at = NULL, backoff_until = NULL
		WHERE id = ?`, reason, output, nanos(t.now), id)
	if err != nil {
		return err
	}
	t.change(id, pkgID, resource, from, spinbroker.Failed, attempts)
	t.commit.Packages = append(t.commit.Packages, pkgID)
	return t.cascade(id, "failed")
}

// qRelease decrements the dependents of a command that succeeded.
const qRelease = `UPDATE commands SET
		pending_deps = pending_deps - 1,
		state = CASE WHEN pending_deps = 1 AND coalesce(not_before, 0) <= ?1 THEN 'ready' ELSE 'blocked' END,
		ready_at = CASE WHEN pending_deps = 1 AND coalesce(not_before, 0) <= ?1 THEN ?1 END
	WHERE id IN (SELECT command_id FROM command_deps WHERE depends_on = ?2) AND state = 'blocked'
	RETURNING id, package_id, resource, state, pending_deps`

// release counts a success against the commands that depend on id; those
// with nothing left to wait for become ready at their original positions in
// the same transaction.
func (t *Tx) release(id string) error {
	rows, err := t.query(qRelease, nanos(t.now), id)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var cid, pkg, resource, state string
		var pending int
		if err := rows.Scan(&cid, &pkg, &resource, &state, &pending); err != nil {
			return err
		}
		switch {
		case state == string(spinbroker.Ready):
			t.change(cid, pkg, resource, spinbroker.Blocked, spinbroker.Ready, 0)
		case pending == 0 && !slices.Contains(t.commit.Queues, resource):
			// Still blocked: it now waits only for its not_before,
			// a time the long-polls on its queue must learn, or they
			// sleep through it (until their wait runs out or the
			// sweeper's next round). Nothing moved, but what the queue
			// will deliver did.
			t.commit.Queues = append(t.commit.Queues, resource)
		}
	}
	return rows.Err()
}

// CompleteBatch records many results in one transaction. Each is judged as
// Complete would judge it; the ones that pass are committed even when others
// are refused. errs[i] is nil for an accepted result.
func (db *DB) CompleteBatch(ctx context.Context, items []spinbroker.BatchResult) (errs []error, err error) {
	errs = make([]error, len(items))
	for i := range items {
		id, ok := spinbroker.ParseID(items[i].ID)
		switch {
		case items[i].ID == "":
			// 404 as the single form's would be (its id is in the path),
			// with a message that says what is missing.
			errs[i] = spinbroker.Errorf(spinbroker.ENOTFOUND, "a result without an id names no command")
			continue
		case !ok:
			errs[i] = spinbroker.Errorf(spinbroker.ENOTFOUND, "command %s not found", spinbroker.Truncate(items[i].ID, 40))
			continue
		}
		items[i].ID = id // ids are stored in lower case, as Complete's path has it
		errs[i] = checkResult(&items[i].Result)
	}
	if err := notFoundFirst(ctx, db, items, errs); err != nil {
		return nil, err
	}
	many := completableAtOnce(items, errs)
	err = db.write(ctx, func(t *Tx) error {
		var done map[string]bool
		if many {
			var err error
			if done, err = t.completeMany(items, errs); err != nil {
				return err
			}
		}
		for i := range items {
			if errs[i] != nil || done[items[i].ID] {
				continue
			}
			// The common case, a result with its current lease, is one
			// statement that either applies whole or not at all: no
			// savepoint needed. (With many, it has been tried.)
			if !many {
				ok, err := t.completeFast(items[i].ID, &items[i].Result)
				if err != nil {
					return err
				}
				if ok {
					continue
				}
			}
			// Anything else in a savepoint of its own, so that a refused
			// item leaves no trace and the others still commit.
			if _, err := t.exec(`SAVEPOINT item`); err != nil {
				return err
			}
			mark := len(t.commit.Commands)
			marks := len(t.commit.Packages)
			_, _, errs[i] = t.complete(items[i].ID, &items[i].Result)
			if errs[i] != nil {
				t.commit.Commands = t.commit.Commands[:mark]
				t.commit.Packages = t.commit.Packages[:marks]
				if _, err := t.exec(`ROLLBACK TO item`); err != nil {
					return err
				}
				if code := spinbroker.ErrorCode(errs[i]); code == spinbroker.EINTERNAL || code == spinbroker.EUNAVAILABLE {
					return errs[i]
				}
			}
			if _, err := t.exec(`RELEASE item`); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return errs, nil
}

// notFoundFirst turns the 400 of an item whose result is invalid into the
// 404 of its command when there is no such command, as Complete (and the
// single form, whose id is in the path) answers: API.md puts 404 before 400.
func notFoundFirst(ctx context.Context, db *DB, items []spinbroker.BatchResult, errs []error) error {
	var ids []string
	for i := range items {
		if spinbroker.ErrorCode(errs[i]) == spinbroker.EINVALID {
			ids = append(ids, items[i].ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	found, err := db.CommandResources(ctx, ids)
	if err != nil {
		return err
	}
	for i := range items {
		if _, ok := found[items[i].ID]; !ok && spinbroker.ErrorCode(errs[i]) == spinbroker.EINVALID {
			errs[i] = spinbroker.Errorf(spinbroker.ENOTFOUND, "command %s not found", items[i].ID)
		}
	}
	return nil
}

// completableAtOnce reports whether every valid item of a batch may be
// applied by one statement: each carries a lease, none asks for a retry,
// and no command appears twice. Otherwise the items are judged one by one,
// in order.
func completableAtOnce(items []spinbroker.BatchResult, errs []error) bool {
	seen := make(map[string]bool, len(items))
	n := 0
	for i := range items {
		if errs[i] != nil {
			continue
		}
		if _, fast, _, _, _ := resultArgs(&items[i].Result); !fast || seen[items[i].ID] {
			return false
		}
		seen[items[i].ID] = true
		n++
	}
	return n > 1
}

// completeMany applies, in one statement, the results whose command is
// still leased with the lease they carry, and returns their ids; the
// others are left to be judged one by one.
func (t *Tx) completeMany(items []spinbroker.BatchResult, errs []error) (map[string]bool, error) {
	args := make([][5]any, 0, len(items))
	states := make([]spinbroker.CommandState, len(items))
	for i := range items {
		if errs[i] != nil {
			continue
		}
		_, _, state, reason, output := resultArgs(&items[i].Result)
		states[i] = state
		args = append(args, [5]any{items[i].ID, items[i].Lease, state, finalReason(state, reason), output})
	}
	list, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	rows, err := t.query(qCompleteLeasedMany, string(list), nanos(t.now))
	if err != nil {
		return nil, err
	}
	type applied struct {
		pkg, resource        string
		attempts, dependents int
	}
	got := make(map[string]applied, len(args))
	for rows.Next() {
		var id string
		var a applied
		if err := rows.Scan(&id, &a.dependents, &a.pkg, &a.resource, &a.attempts); err != nil {
			rows.Close()
			return nil, err
		}
		got[id] = a
	}
	if err := endRows(rows); err != nil {
		return nil, err
	}
	// The transitions that follow (releases, cascades), in the batch's order.
	done := make(map[string]bool, len(got))
	for i := range items {
		a, ok := got[items[i].ID]
		if !ok || errs[i] != nil {
			continue
		}
		if err := t.completed(items[i].ID, a.pkg, a.resource, states[i], a.attempts, a.dependents); err != nil {
			return nil, err
		}
		done[items[i].ID] = true
	}
	return done, nil
}

// Heartbeat extends a lease by extend from now (the lease's own duration
// when extend is 0) and returns the new expiry.
func (db *DB) Heartbeat(ctx context.Context, id, token string, extend time.Duration) (exp time.Time, err error) {
	if extend != 0 {
		if err := spinbroker.CheckLease("extend", extend); err != nil {
			return exp, err
		}
	}
	var ext any
	if extend > 0 {
		ext = int64(extend)
	}
	err = db.write(ctx, func(t *Tx) error {
		var n, was int64
		var resource string
		err := t.queryRow(`SELECT lease_expires_at FROM commands WHERE id = ? AND state = 'leased' AND lease_token = ?`, id, token).Scan(&was)
		if err == nil {
			err = t.queryRow(`UPDATE commands SET lease_expires_at = ?1 + coalesce(?2, lease_ttl)
				WHERE id = ?3 RETURNING lease_expires_at, resource`, nanos(t.now), ext, id).Scan(&n, &resource)
		}
		if isNoRows(err) {
			var one int
			if err := t.queryRow(`SELECT 1 FROM commands WHERE id = ?`, id).Scan(&one); isNoRows(err) {
				return spinbroker.Errorf(spinbroker.ENOTFOUND, "command %s not found", id)
			}
			return spinbroker.Errorf(spinbroker.ESTALE, "lease %s is not the current lease of command %s", spinbroker.Truncate(token, 40), id)
		} else if err != nil {
			return err
		}
		if n < was {
			// The lease now runs out sooner than the long-polls on its
			// queue were told: they must learn the new time, or they
			// sleep through it (until their wait ends or the sweeper's
			// next round).
			t.commit.Queues = append(t.commit.Queues, resource)
		}
		exp = fromNanos(n)
		return nil
	})
	return exp, err
}

// Retry puts a failed or cancelled command, and the commands its failure
// cancelled, back in their queues at their old positions with their attempts
// reset: an operator's "run it again".
func (db *DB) Retry(ctx context.Context, id string) (cmd *spinbroker.Command, err error) {
	err = db.write(ctx, func(t *Tx) error {
		if err := t.retry(id); err != nil {
			return err
		}
		cmd, err = getCommand(t, id)
		return err
	})
	return cmd, err
}

// RetryRefusal says why a retry of command id would be refused (a
// conflict error), or nil when it would run: what the dashboard asks
// before it offers a retry button. It reads; a retry is still judged anew.
func (db *DB) RetryRefusal(ctx context.Context, id string) error {
	return retryRefusal(db.reader, id)
}

// qRetrySet is a retry's command, ?1, and what its failure cancelled,
// transitively, outside cancelled packages: breadth first, each command's
// dependents in the order of commands_cancelled_by.
const qRetrySet = `WITH RECURSIVE s(id) AS (
		SELECT ?1
		UNION
		SELECT c.id FROM s
		JOIN commands c ON c.cancelled_by = s.id
		JOIN packages p ON p.id = c.package_id
		WHERE c.state = 'cancelled' AND p.cancelled_at IS NULL)
	SELECT id FROM s`

// qRetryBlocking lists the failed and cancelled dependencies of the
// commands ?1 (a JSON array of ids), with the rowids of their edges: the
// order in which they were given (sorted by the caller, which spares a sort
// of them all).
const qRetryBlocking = `SELECT d.command_id, d.depends_on, d.rowid
	FROM json_each(?1) j
	JOIN command_deps d ON d.command_id = j.value
	JOIN commands x ON x.id = d.depends_on
	WHERE x.state IN ('failed', 'cancelled')`

// qRetryReset puts the commands ?2 (a JSON array of ids), failed or
// cancelled, back in their queues with their attempts reset: ready at their
// old positions when nothing they wait for is left (none of them has
// succeeded, so the count taken before the update is the count after it).
const qRetryReset = `WITH p AS MATERIALIZED (
		SELECT j.value AS id, (SELECT count(*) FROM command_deps d JOIN commands x ON x.id = d.depends_on
			WHERE d.command_id = j.value AND x.state <> 'succeeded') AS n
		FROM json_each(?2) j)
	UPDATE commands SET
		pending_deps = p.n,
		state = CASE WHEN p.n = 0 AND coalesce(not_before, 0) <= ?1 THEN 'ready' ELSE 'blocked' END,
		ready_at = CASE WHEN p.n = 0 AND coalesce(not_before, 0) <= ?1 THEN ?1 END,
		attempts = 0, reason = NULL, output = NULL, cancelled_by = NULL,
		started_at = NULL, finished_at = NULL, backoff_until = NULL,
		lease_token = NULL, lease_ttl = NULL, lease_expires_at = NULL
	FROM p WHERE commands.id = p.id
	RETURNING commands.id, commands.resource, commands.package_id, commands.state`

// qRetryHeld makes each command of ?1 (a JSON array of [id, dependency]
// pairs), left cancelled by a retry, name that failed or cancelled
// dependency as what holds it.
const qRetryHeld = `UPDATE commands SET cancelled_by = h.dep, reason = 'dependency ' || h.dep || ' ' || x.state
	FROM (SELECT j.value ->> 0 AS id, j.value ->> 1 AS dep FROM json_each(?1) j) h
	JOIN commands x ON x.id = h.dep
	WHERE commands.id = h.id`

// retryRefusal is Retry's judgement of command id, on q.
func retryRefusal(q querier, id string) error {
	var (
		pkgID, state string
		cancelledBy  sql.NullString
		pkgCancelled bool
	)
	err := q.queryRow(`SELECT c.package_id, c.state, c.cancelled_by, p.cancelled_at IS NOT NULL
		FROM commands c JOIN packages p ON p.id = c.package_id WHERE c.id = ?`, id).
		Scan(&pkgID, &state, &cancelledBy, &pkgCancelled)
	if isNoRows(err) {
		return spinbroker.Errorf(spinbroker.ENOTFOUND, "command %s not found", id)
	} else if err != nil {
		return err
	}
	switch {
	case state != string(spinbroker.Failed) && state != string(spinbroker.Cancelled):
		return spinbroker.Errorf(spinbroker.ECONFLICT, "command %s is %s; only a failed or cancelled command can be retried", id, state)
	case pkgCancelled:
		return spinbroker.Errorf(spinbroker.ECONFLICT, "package %s was cancelled; its commands are not retried", pkgID)
	}
	if bad, err := unmetDependency(q, id, nil); err != nil {
		return err
	} else if bad != "" {
		return spinbroker.Errorf(spinbroker.ECONFLICT, "command %s cannot run again while its dependency %s", id, bad)
	}
	if cancelledBy.Valid {
		var one int
		if err := q.queryRow(`SELECT 1 FROM commands WHERE id = ?`, cancelledBy.String).Scan(&one); isNoRows(err) {
			return spinbroker.Errorf(spinbroker.ECONFLICT, "command %s cannot run again: its dependency %s was deleted", id, cancelledBy.String)
		}
	}
	return nil
}

func (t *Tx) retry(id string) error {
	if err := retryRefusal(t, id); err != nil {
		return err
	}

	// The set to reset: id and what its failure cancelled, transitively,
	// minus whatever another failed dependency still holds back (to a fixed
	// point, since removing one may strand the ones below it). The graph is
	// read in two statements and the fixed point found in memory; the reset
	// is one more: a statement per command held the writer 3.6 s for a
	// command with 50,000 dependents.
	order, err := queryStrings(t, qRetrySet, id)
	if err != nil {
		return err
	}
	ids, err := json.Marshal(order)
	if err != nil {
		return err
	}
	// blocking lists, per command of the set, its failed or cancelled
	// dependencies in the order they were given.
	type edge struct {
		dep   string
		rowid int64
	}
	blocking := make(map[string][]edge, len(order))
	rows, err := t.query(qRetryBlocking, string(ids))
	if err != nil {
		return err
	}
	for rows.Next() {
		var cid string
		var e edge
		if err := rows.Scan(&cid, &e.dep, &e.rowid); err != nil {
			rows.Close()
			return err
		}
		blocking[cid] = append(blocking[cid], e)
	}
	if err := endRows(rows); err != nil {
		return err
	}
	for _, es := range blocking {
		slices.SortFunc(es, func(a, b edge) int { return cmp.Compare(a.rowid, b.rowid) })
	}
	set := make(map[string]bool, len(order))
	for _, cid := range order {
		set[cid] = true
	}
	held := map[string]string{}
	for changed := true; changed; {
		changed = false
		for _, cid := range order[1:] {
			if !set[cid] {
				continue
			}
			for _, e := range blocking[cid] {
				if !set[e.dep] {
					delete(set, cid)
					held[cid] = e.dep
					changed = true
					break
				}
			}
		}
	}
	from, err := commandState(t, id)
	if err != nil {
		return err
	}
	reset := order[:0:0]
	for _, cid := range order {
		if set[cid] {
			reset = append(reset, cid)
		}
	}
	if ids, err = json.Marshal(reset); err != nil {
		return err
	}
	rows, err = t.query(qRetryReset, nanos(t.now), string(ids))
	if err != nil {
		return err
	}
	for rows.Next() {
		var cid, resource, pkg, state string
		if err := rows.Scan(&cid, &resource, &pkg, &state); err != nil {
			rows.Close()
			return err
		}
		old := spinbroker.Cancelled // what id's failure cancelled
		if cid == id {
			old = spinbroker.CommandState(from)
		}
		t.change(cid, pkg, resource, old, spinbroker.CommandState(state), 0)
		t.commit.Packages = append(t.commit.Packages, pkg)
	}
	if err := endRows(rows); err != nil {
		return err
	}
	// Those left cancelled now name the dependency that still holds them.
	if len(held) == 0 {
		return nil
	}
	pairs := make([][2]string, 0, len(held))
	for cid, dep := range held {
		pairs = append(pairs, [2]string{cid, dep})
	}
	if ids, err = json.Marshal(pairs); err != nil {
		return err
	}
	_, err = t.exec(qRetryHeld, string(ids))
	return err
}

// unmetDependency describes a dependency of id that failed or was cancelled
// (and is not in the set about to be reset), or "" when there is none.
func unmetDependency(q querier, id string, set map[string]bool) (string, error) {
	dep, err := blockingDep(q, id, set)
	if dep == "" || err != nil {
		return "", err
	}
	state, err := commandState(q, dep)
	if err != nil {
		return "", err
	}
	return dep + " is " + state, nil
}

// commandState reads the state of command id.
func commandState(q querier, id string) (string, error) {
	var state string
	err := q.queryRow(`SELECT state FROM commands WHERE id = ?`, id).Scan(&state)
	return state, err
}

// blockingDep returns a failed or cancelled dependency of id outside set.
func blockingDep(q querier, id string, set map[string]bool) (string, error) {
	deps, err := queryStrings(q, `SELECT d.depends_on FROM command_deps d JOIN commands x ON x.id = d.depends_on
		WHERE d.command_id = ? AND x.state IN ('failed', 'cancelled') ORDER BY d.rowid`, id)
	for _, dep := range deps {
		if !set[dep] {
			return dep, err
		}
	}
	return "", err
}

// newToken returns an unguessable lease token.
func newToken() string { return rand.Text() }
