package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"sort"
	"strings"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// Next leases the next deliverable command of a queue: the first ready one
// in queue order, if the queue is not paused, has a free slot under its
// concurrency, and that command is not waiting out a retry back-off. lease 0
// means the command's own lease_duration, else 60s. When nothing is
// deliverable it returns nil and the earliest time something may become so
// without another write (a lease expiring, a back-off or a delay ending),
// zero when only a write can change it.
func (db *DB) Next(ctx context.Context, resource string, lease time.Duration) (*spinbroker.Command, time.Time, error) {
	cmds, wake, err := db.Claim(ctx, resource, 1, lease)
	if len(cmds) == 0 || err != nil {
		return nil, wake, err
	}
	return &cmds[0], wake, nil
}

// Claim leases up to max deliverable commands of a queue in queue order,
// still bounded by its concurrency. See Next.
func (db *DB) Claim(ctx context.Context, resource string, max int, lease time.Duration) (cmds []spinbroker.Command, wake time.Time, err error) {
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return nil, wake, err
	}
	if err := spinbroker.CheckClaimMax(max); err != nil {
		return nil, wake, err
	}
	if lease != 0 {
		if err := spinbroker.CheckLease("lease", lease); err != nil {
			return nil, wake, err
		}
	}
	err = db.write(ctx, func(t *Tx) error {
		cmds, wake, err = t.claim(resource, max, lease)
		return err
	})
	return cmds, wake, err
}

// The ready query and its helpers. Each says state = '…' word for word as
// its partial index does: SQLite uses a partial index only when the query's
// WHERE implies the index's term for term. TestPlans holds them to it.
const (
	qQueueState = `SELECT concurrency, paused, n_leased, n_blocked, last_active_at FROM queues WHERE resource = ?`
	// qLeaseHead leases the head of a queue's ready commands, unless it
	// waits out a back-off, in which case it holds the queue (rule 3). The
	// subquery reads only the commands_ready index. ?6 is the latest a
	// back-off may end (see backoffLeft).
	qLeaseHead = `UPDATE commands SET
			state = 'leased',
			attempts = attempts + 1,
			lease_token = ?1,
			lease_ttl = coalesce(?2, lease_duration, ?3),
			lease_expires_at = ?4 + coalesce(?2, lease_duration, ?3),
			started_at = ?4,
			backoff_until = NULL,
			ready_at = NULL
		WHERE id = (SELECT id FROM commands WHERE resource = ?5 AND state = 'ready' ORDER BY seq LIMIT 1)
		  AND (coalesce(backoff_until, 0) <= ?4 OR backoff_until > ?6)
		RETURNING ` + commandCols
	// qReadyHead reads the first ready commands of a queue: their ids,
	// back-offs and the bytes of text each adds to a claim's answer
	// (octet_length reads a value's size from the record, not the value):
	// parameters, output, reason and the dependencies' ids.
	qReadyHead = `SELECT id, backoff_until, ` + colAnswerBytes + `
		FROM commands WHERE resource = ? AND state = 'ready' ORDER BY seq LIMIT ?`
	// qLeaseMany leases the commands whose ids ?5 lists (a JSON array).
	qLeaseMany = `UPDATE commands SET
			state = 'leased',
			attempts = attempts + 1,
			lease_token = ?1 || seq,
			lease_ttl = coalesce(?2, lease_duration, ?3),
			lease_expires_at = ?4 + coalesce(?2, lease_duration, ?3),
			started_at = ?4,
			backoff_until = NULL,
			ready_at = NULL
		WHERE id IN (SELECT value FROM json_each(?5)) AND state = 'ready'
		RETURNING lease_token, ` + commandCols
	qWakeLease   = `SELECT min(lease_expires_at) FROM commands WHERE resource = ? AND state = 'leased'`
	qWakeDelay   = `SELECT min(not_before) FROM commands WHERE resource = ? AND state = 'blocked' AND pending_deps = 0`
	qWakeBackoff = `SELECT backoff_until FROM commands WHERE resource = ? AND state = 'ready' ORDER BY seq LIMIT 1`
	qExpired     = `SELECT c.id, c.package_id, c.resource, c.attempts, c.max_attempts, p.cancelled_at IS NOT NULL
		FROM commands c JOIN packages p ON p.id = c.package_id
		WHERE c.resource = ? AND c.state = 'leased' AND c.lease_expires_at <= ?`
	// qExpiredAll is qExpired for every queue, at most ?2 of them: the
	// sweeper settles a large backlog (after an outage) a batch per
	// transaction.
	qExpiredAll = `SELECT c.id, c.package_id, c.resource, c.attempts, c.max_attempts, p.cancelled_at IS NOT NULL
		FROM commands c JOIN packages p ON p.id = c.package_id
		WHERE c.state = 'leased' AND c.lease_expires_at <= ?1 LIMIT ?2`
	qPromote = `UPDATE commands SET state = 'ready', ready_at = ?1
		WHERE resource = ?2 AND state = 'blocked' AND pending_deps = 0 AND not_before <= ?1
		RETURNING id, package_id, resource`
	// qPromoteAll is qPromote for every queue, at most ?2 commands. (The
	// planner, left to itself, read the subquery through commands_blocked:
	// every blocked command.)
	qPromoteAll = `UPDATE commands SET state = 'ready', ready_at = ?1
		WHERE id IN (SELECT id FROM commands INDEXED BY commands_delayed
			WHERE state = 'blocked' AND pending_deps = 0 AND not_before <= ?1 LIMIT ?2)
		RETURNING id, package_id, resource`
	qOldestReady = `SELECT ready_at FROM commands WHERE resource = ? AND state = 'ready' ORDER BY seq LIMIT 1`
	// qQueueCommands lists a queue's unfinished commands after seq ?2 in
	// queue order: the first ?3 of each state, each through its own partial
	// index, merged.
	qQueueCommands = `SELECT * FROM (
			SELECT ` + commandCols + `, seq AS o FROM commands
			WHERE resource = ?1 AND state = 'blocked' AND seq > ?2 ORDER BY seq LIMIT ?3)
		UNION ALL SELECT * FROM (
			SELECT ` + commandCols + `, seq AS o FROM commands
			WHERE resource = ?1 AND state = 'ready' AND seq > ?2 ORDER BY seq LIMIT ?3)
		UNION ALL SELECT * FROM (
			SELECT ` + commandCols + `, seq AS o FROM commands
			WHERE resource = ?1 AND state = 'leased' AND seq > ?2 ORDER BY seq LIMIT ?3)
		ORDER BY o LIMIT ?3`
)

// qQueueCommandsLight is qQueueCommands without the parameters and
// outputs, for the dashboard's page of a queue; qQueueIDs reads only
// the commands' ids.
var (
	qQueueCommandsLight = lightQuery(qQueueCommands)
	qQueueIDs           = strings.ReplaceAll(qQueueCommands, commandCols+",", "id,")
)

func (t *Tx) claim(resource string, max int, lease time.Duration) ([]spinbroker.Command, time.Time, error) {
	var concurrency, leased, blocked int
	var paused bool
	var active int64
	err := t.queryRow(qQueueState, resource).Scan(&concurrency, &paused, &leased, &blocked, &active)
	if isNoRows(err) {
		return nil, time.Time{}, nil // nothing was ever enqueued here
	} else if err != nil {
		return nil, time.Time{}, err
	}
	if nanos(t.now)-active >= int64(pollActivity) {
		// An agent asking counts as activity: the queue of an agent that
		// waits for work stays listed, and its last poll in /metrics.
		if _, err := t.exec(`UPDATE queues SET last_active_at = ? WHERE resource = ?`, nanos(t.now), resource); err != nil {
			return nil, time.Time{}, err
		}
	}
	if leased > 0 {
		n, err := t.settleExpired(resource)
		if err != nil {
			return nil, time.Time{}, err
		}
		leased -= n
	}
	if blocked > 0 { // a delayed command is blocked until its time
		if _, err := t.promoteDelayed(resource); err != nil {
			return nil, time.Time{}, err
		}
	}
	if paused {
		return nil, time.Time{}, nil
	}
	free := min(concurrency-leased, max)
	if free <= 0 {
		wake, err := t.wakeAt(resource)
		return nil, wake, err
	}
	now := nanos(t.now)
	var ttl any
	if lease > 0 {
		ttl = int64(lease)
	}
	var cmds []spinbroker.Command
	var ns []int
	var err2 error
	if free == 1 {
		cmds, ns, err2 = t.leaseHead(resource, ttl, now)
	} else {
		cmds, ns, err2 = t.leaseMany(resource, free, ttl, now)
	}
	if err2 != nil {
		return nil, time.Time{}, err2
	}
	var withDeps []int
	for i := range cmds {
		t.change(cmds[i].ID, cmds[i].PackageID, resource, spinbroker.Ready, spinbroker.Leased, cmds[i].Attempts)
		if ns[i] > 0 {
			withDeps = append(withDeps, i)
		}
	}
	if len(cmds) == 0 {
		wake, err := t.wakeAt(resource)
		return nil, wake, err
	}
	ptrs := make([]*spinbroker.Command, len(withDeps))
	for i, j := range withDeps {
		ptrs[i] = &cmds[j]
	}
	return cmds, time.Time{}, loadDeps(t, ptrs)
}

// Peek tells, reading only, whether a claim on resource might lease
// something now; when it could not, it gives the earliest time it might
// without another write, as Claim does (zero: only a write can change it).
// A long-poll that a commit woke asks it before it claims again: a commit
// wakes one waiting long-poll for each change that may have made a
// command deliverable, and many leave nothing (another agent took it, a
// completion freed a slot on a queue with nothing ready), while a claim is
// a write. (When every commit woke every waiting long-poll, which claimed,
// each command took about a hundred turns of the one writer with 32
// agents waiting.) Peek never answers no
// where a claim would lease: a lease run out or a delay ended, which a
// claim settles before it leases, answer maybe. Nor where a claim would
// mark the queue active (its last_active_at a minute old, pollActivity):
// an agent's poll counts as activity whether or not it claims.
func (db *DB) Peek(ctx context.Context, resource string) (maybe bool, wake time.Time, err error) {
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return false, wake, err
	}
	err = db.snapshot(ctx, func(q querier) error {
		maybe, wake, err = peek(q, resource, nanos(db.now()))
		return err
	})
	return maybe, wake, err
}

// peek is Peek, read through q at now. It follows claim step by step.
func peek(q querier, resource string, now int64) (bool, time.Time, error) {
	var concurrency, leased, blocked int
	var paused bool
	var active int64
	err := q.queryRow(qQueueState, resource).Scan(&concurrency, &paused, &leased, &blocked, &active)
	if isNoRows(err) {
		return false, time.Time{}, nil
	} else if err != nil {
		return false, time.Time{}, err
	}
	if now-active >= int64(pollActivity) {
		// The claim would mark the queue active (an agent asking): a
		// long-poll woken by commits that Peek turned away would
		// otherwise keep its queue looking idle however long it waited.
		return true, time.Time{}, nil
	}
	w, err := readWaits(q, resource)
	if err != nil {
		return false, time.Time{}, err
	}
	due := func(v sql.NullInt64) bool { return v.Valid && v.Int64 <= now }
	switch {
	case leased > 0 && due(w.lease), blocked > 0 && due(w.delay):
		return true, time.Time{}, nil // what a claim settles before it leases
	case paused:
		return false, time.Time{}, nil
	case concurrency-leased > 0 && w.head && !backoffLeft(w.backoff, now):
		return true, time.Time{}, nil // a head free to lease
	}
	return false, w.wake(now), nil
}

// Release puts back the commands of an answer that was never delivered (a
// next or a claim whose client went away while its lease was being taken):
// each is ready again at its place, as if never leased, its attempt not
// counted, so that the queue need not wait for the lease to run out. One
// whose lease has moved on (settled, completed) is left alone. One whose
// package a client cancelled while it was being leased is cancelled, as
// the cancel would have done had it still been ready: put back, it was
// delivered again from a cancelled package.
func (db *DB) Release(ctx context.Context, cmds []spinbroker.Command) error {
	return db.write(ctx, func(t *Tx) error {
		for _, c := range cmds {
			if c.Lease == nil {
				continue
			}
			var pkg, resource string
			var attempts int
			var cancelled bool
			err := t.queryRow(`SELECT p.cancelled_at IS NOT NULL FROM commands c
				JOIN packages p ON p.id = c.package_id WHERE c.id = ?`, c.ID).Scan(&cancelled)
			if isNoRows(err) {
				continue // deleted since
			} else if err != nil {
				return err
			}
			err = t.queryRow(`UPDATE commands SET
					state = CASE WHEN ?4 THEN 'cancelled' ELSE 'ready' END,
					reason = CASE WHEN ?4 THEN 'package cancelled' ELSE reason END,
					finished_at = CASE WHEN ?4 THEN ?1 END,
					ready_at = CASE WHEN ?4 THEN NULL ELSE ?1 END,
					attempts = attempts - 1, backoff_until = NULL,
					lease_token = NULL, lease_ttl = NULL, lease_expires_at = NULL, started_at = NULL
				WHERE id = ?2 AND state = 'leased' AND lease_token = ?3
				RETURNING package_id, resource, attempts, state = 'cancelled'`,
				nanos(t.now), c.ID, c.Lease.Token, cancelled).Scan(&pkg, &resource, &attempts, &cancelled)
			if isNoRows(err) {
				continue
			} else if err != nil {
				return err
			}
			if !cancelled {
				t.change(c.ID, pkg, resource, spinbroker.Leased, spinbroker.Ready, attempts)
				continue
			}
			t.change(c.ID, pkg, resource, spinbroker.Leased, spinbroker.Cancelled, attempts)
			t.commit.Packages = append(t.commit.Packages, pkg)
			if err := t.cascade(c.ID, string(spinbroker.Cancelled)); err != nil {
				return err
			}
		}
		return nil
	})
}

// pollActivity is how stale a queue's last_active_at may get before a poll
// sets it: at most one write a minute for an agent that waits on an idle
// queue.
const pollActivity = time.Minute

// leaseHead leases the queue's head, if it is deliverable.
func (t *Tx) leaseHead(resource string, ttl any, now int64) ([]spinbroker.Command, []int, error) {
	token := newToken()
	c, n, err := scanCommandDeps(t.queryRow(qLeaseHead, token, ttl, int64(spinbroker.DefaultLease), now, resource, now+int64(spinbroker.BackoffCap)))
	if isNoRows(err) {
		return nil, nil, nil // the queue is empty, or its head waits out a back-off
	} else if err != nil {
		return nil, nil, err
	}
	c.Lease = &spinbroker.Lease{Token: token, ExpiresAt: *c.LeaseExpiresAt}
	return []spinbroker.Command{c}, []int{n}, nil
}

// leaseMany leases up to max commands from the head of the queue, in two
// statements whatever max is: it reads the first ready ones, stopping at
// one that waits out a back-off (which holds back those behind it), and
// leases them all at once. Each lease token is a secret of this claim
// followed by the command's sequence number.
func (t *Tx) leaseMany(resource string, max int, ttl any, now int64) ([]spinbroker.Command, []int, error) {
	rows, err := t.query(qReadyHead, resource, max)
	if err != nil {
		return nil, nil, err
	}
	var ids []string
	for size := 0; size <= spinbroker.ClaimBytes && rows.Next(); {
		var id string
		var backoff sql.NullInt64
		var n int
		if err := rows.Scan(&id, &backoff, &n); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if backoffLeft(backoff, now) {
			break
		}
		ids = append(ids, id)
		size += n
	}
	if err := endRows(rows); err != nil || len(ids) == 0 {
		return nil, nil, err
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, nil, err
	}
	rows, err = t.query(qLeaseMany, newToken()+".", ttl, int64(spinbroker.DefaultLease), now, string(list))
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	cmds := make([]spinbroker.Command, 0, len(ids))
	ns := make([]int, 0, len(ids))
	var token string
	var cs commandScan // reused: finish copies out what each row scanned
	dest := append([]any{&token}, cs.dest()...)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, nil, err
		}
		c, n := cs.finish()
		c.Lease = &spinbroker.Lease{Token: token, ExpiresAt: *c.LeaseExpiresAt}
		cmds = append(cmds, c)
		ns = append(ns, n)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	// RETURNING gives rows in no set order; deliver them in queue order.
	sort.Sort(bySeq{cmds, ns})
	return cmds, ns, nil
}

// bySeq sorts commands, and their numbers of dependencies with them, in
// queue order.
type bySeq struct {
	cmds []spinbroker.Command
	ns   []int
}

func (s bySeq) Len() int           { return len(s.cmds) }
func (s bySeq) Less(i, j int) bool { return *s.cmds[i].Seq < *s.cmds[j].Seq }
func (s bySeq) Swap(i, j int) {
	s.cmds[i], s.cmds[j] = s.cmds[j], s.cmds[i]
	s.ns[i], s.ns[j] = s.ns[j], s.ns[i]
}

// backoffLeft reports whether a back-off that ends at until (in nanoseconds,
// NULL for none) still holds its command at now. A back-off lasts at most
// BackoffCap: one that ends further away than that was set before the
// wall clock stepped back (NTP at boot, a VM resumed from a snapshot), and
// has ended; honoured to the letter, a step back of an hour held the
// command, and its queue behind it (rule 3), for that hour.
func backoffLeft(until sql.NullInt64, now int64) bool {
	return until.Valid && until.Int64 > now && until.Int64 <= now+int64(spinbroker.BackoffCap)
}

// wakeAt is the earliest time a queue may have something to deliver without
// another write: a lease expiring, a delay or the head's back-off ending.
// Only times still to come count. The claim settled the leases and delays
// that are due; a back-off that has ended while the queue is full waits
// for a slot, which a commit (that wakes the long-polls) or a lease
// running out frees: waking at that past time would have a long-poll ask
// again every millisecond, a write transaction each, until then.
func (t *Tx) wakeAt(resource string) (time.Time, error) { return wakeAt(t, resource, nanos(t.now)) }

// wakeAt is Tx.wakeAt, read through q at now.
func wakeAt(q querier, resource string, now int64) (time.Time, error) {
	w, err := readWaits(q, resource)
	if err != nil {
		return time.Time{}, err
	}
	return w.wake(now), nil
}

// waits is what a queue's deliveries wait on: its earliest lease expiry,
// its earliest delay end, and its head's back-off (head: it has a ready
// command at all).
type waits struct {
	lease, delay, backoff sql.NullInt64
	head                  bool
}

// readWaits reads a queue's waits through q.
func readWaits(q querier, resource string) (w waits, err error) {
	if err = q.queryRow(qWakeLease, resource).Scan(&w.lease); err != nil {
		return w, err
	}
	if err = q.queryRow(qWakeDelay, resource).Scan(&w.delay); err != nil {
		return w, err
	}
	err = q.queryRow(qWakeBackoff, resource).Scan(&w.backoff)
	if isNoRows(err) {
		return w, nil
	}
	w.head = err == nil
	return w, err
}

// wake is the earliest of w's times still to come at now, zero if none: a
// back-off counts only while it holds its command (backoffLeft).
func (w waits) wake(now int64) time.Time {
	var best int64
	times := []sql.NullInt64{w.lease, w.delay}
	if backoffLeft(w.backoff, now) {
		times = append(times, w.backoff)
	}
	for _, v := range times {
		if v.Valid && v.Int64 > now && (best == 0 || v.Int64 < best) {
			best = v.Int64
		}
	}
	if best == 0 {
		return time.Time{}
	}
	return fromNanos(best)
}

// settleExpired settles the expired leases of a queue (every queue, up to
// sweepSettle of them, when resource is empty): back to ready at the same
// position while attempts remain and the package was not cancelled, else
// failed with reason "lease expired". It returns how many leases it settled.
func (t *Tx) settleExpired(resource string) (int, error) {
	var rows *sql.Rows
	var err error
	if resource == "" {
		rows, err = t.query(qExpiredAll, nanos(t.now), sweepSettle)
	} else {
		rows, err = t.query(qExpired, resource, nanos(t.now))
	}
	if err != nil {
		return 0, err
	}
	type expired struct {
		id, pkg, resource     string
		attempts, maxAttempts int
		cancelled             bool
	}
	var es []expired
	for rows.Next() {
		var e expired
		if err := rows.Scan(&e.id, &e.pkg, &e.resource, &e.attempts, &e.maxAttempts, &e.cancelled); err != nil {
			rows.Close()
			return 0, err
		}
		es = append(es, e)
	}
	if err := endRows(rows); err != nil {
		return 0, err
	}
	for _, e := range es {
		ch := spinbroker.Change{CommandID: e.id, PackageID: e.pkg, Resource: e.resource, From: spinbroker.Leased, To: spinbroker.Failed, Attempts: e.attempts}
		if e.attempts < e.maxAttempts && !e.cancelled {
			ch.To = spinbroker.Ready
		}
		t.commit.Expired = append(t.commit.Expired, ch)
		if ch.To == spinbroker.Ready {
			if _, err := t.exec(`UPDATE commands SET state = 'ready', ready_at = ?,
					lease_token = NULL, lease_ttl = NULL, lease_expires_at = NULL
				WHERE id = ?`, nanos(t.now), e.id); err != nil {
				return 0, err
			}
			t.change(e.id, e.pkg, e.resource, spinbroker.Leased, spinbroker.Ready, e.attempts)
			continue
		}
		if err := t.fail(e.id, e.pkg, e.resource, spinbroker.Leased, e.attempts, "lease expired", nil); err != nil {
			return 0, err
		}
	}
	return len(es), nil
}

// promoteDelayed makes ready the commands of a queue (every queue, up to
// sweepSettle of them, when resource is empty) whose not_before has passed
// and that wait for nothing else; they take their original places. It
// returns how many.
func (t *Tx) promoteDelayed(resource string) (int, error) {
	var rows *sql.Rows
	var err error
	if resource == "" {
		rows, err = t.query(qPromoteAll, nanos(t.now), sweepSettle)
	} else {
		rows, err = t.query(qPromote, nanos(t.now), resource)
	}
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id, pkg, res string
		if err := rows.Scan(&id, &pkg, &res); err != nil {
			return n, err
		}
		t.change(id, pkg, res, spinbroker.Blocked, spinbroker.Ready, 0)
		n++
	}
	return n, rows.Err()
}

const queueCols = `resource, concurrency, paused, n_blocked, n_ready, n_leased`

// queueListCols is queueCols and, for a queue with ready commands, when its
// head-of-line ready command became ready (qOldestReady, run per row by
// SQLite): a list of queues is one statement, not one more per queue.
const queueListCols = queueCols + `, CASE WHEN n_ready > 0 THEN (
	SELECT ready_at FROM commands WHERE commands.resource = queues.resource AND state = 'ready' ORDER BY seq LIMIT 1) END`

// scanQueue reads a row of queueCols, and into more the columns that
// follow them.
func scanQueue(s scanner, more ...any) (spinbroker.Queue, error) {
	var q spinbroker.Queue
	err := s.Scan(append([]any{&q.Resource, &q.Concurrency, &q.Paused, &q.Counts.Blocked, &q.Counts.Ready, &q.Counts.Leased}, more...)...)
	return q, err
}

// oldestReadyAge is how long the queue's head-of-line ready command has been
// ready, in seconds.
func oldestReadyAge(q querier, resource string, now time.Time) (float64, error) {
	var since sql.NullInt64
	err := q.queryRow(qOldestReady, resource).Scan(&since)
	if isNoRows(err) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return ageAt(since, now), nil
}

// ageAt is the seconds from since (a ready_at, if any) to now, never below 0.
func ageAt(since sql.NullInt64, now time.Time) float64 {
	if !since.Valid {
		return 0
	}
	return max(now.Sub(fromNanos(since.Int64)).Seconds(), 0)
}

// Queues lists every queue that has had commands enqueued or settings made,
// but for those the sweeper forgot: idle for the retention period with
// default settings (qForgetQueues).
func (db *DB) Queues(ctx context.Context) ([]spinbroker.Queue, error) {
	return db.readQueues(ctx, `SELECT `+queueListCols+` FROM queues ORDER BY resource`)
}

// QueuesNamed is Queues for the named resources only, those that have a
// queue row: what the event stream sends for the queues a commit changed,
// without reading every queue (with 10,000 queues, a full read every
// 100 ms took half the broker's CPU).
func (db *DB) QueuesNamed(ctx context.Context, resources []string) ([]spinbroker.Queue, error) {
	if len(resources) == 0 {
		return []spinbroker.Queue{}, nil
	}
	arg, err := json.Marshal(resources)
	if err != nil {
		return nil, err
	}
	return db.readQueues(ctx, `SELECT `+queueListCols+` FROM queues
		WHERE resource IN (SELECT value FROM json_each(?)) ORDER BY resource`, string(arg))
}

// qSearchQueues finds queues by name prefix, as a range of the primary key.
const qSearchQueues = `SELECT ` + queueListCols + ` FROM queues
	WHERE resource >= ? AND resource < ? ORDER BY resource LIMIT ?`

// SearchQueues is Queues for up to limit queues whose name starts with
// prefix (case-insensitive), in the order of their names: the dashboard's
// search reads those it lists, not every queue. A prefix that cannot start
// a name finds nothing.
func (db *DB) SearchQueues(ctx context.Context, prefix string, limit int) ([]spinbroker.Queue, error) {
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	if prefix == "" || len(prefix) > 64 || strings.Trim(prefix, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != "" {
		return []spinbroker.Queue{}, nil
	}
	// Every name character sorts below '~', so the names with this prefix
	// are exactly those in [prefix, prefix+"~").
	return db.readQueues(ctx, qSearchQueues, prefix, prefix+"~", clampLimit(limit))
}

// qBusiestQueues lists the ?1 queues with the most commands in them, a
// paused one first among equals, then by name; the list in the order of
// their names. SQLite keeps the ?1 best as it scans, and reads the oldest
// ready command of those only.
const qBusiestQueues = `SELECT ` + queueListCols + ` FROM (
		SELECT ` + queueCols + ` FROM queues
		ORDER BY n_blocked + n_ready + n_leased DESC, paused DESC, resource LIMIT ?1) AS queues
	ORDER BY resource`

// BusiestQueues lists the limit queues with the most commands in them (a
// paused one first among equals: an empty paused queue says something an
// empty running one does not), in the order of their names, and how many
// queues there are in all, all of one moment: the dashboard's overview,
// which reads the queues it lists, not every queue (with 50,000 queues,
// reading them all took 70 ms at each of its live updates).
func (db *DB) BusiestQueues(ctx context.Context, limit int) (qs []spinbroker.Queue, total int, err error) {
	err = db.snapshot(ctx, func(q querier) error {
		if err := q.queryRow(`SELECT count(*) FROM queues`).Scan(&total); err != nil {
			return err
		}
		qs, err = scanQueues(q, db.now(), qBusiestQueues, clampLimit(limit))
		return err
	})
	return qs, total, err
}

// readQueues reads the queues a query of queueListCols selects, with the
// age of each one's oldest ready command.
func (db *DB) readQueues(ctx context.Context, query string, args ...any) (out []spinbroker.Queue, err error) {
	err = db.snapshot(ctx, func(q querier) error {
		out, err = scanQueues(q, db.now(), query, args...)
		return err
	})
	return out, err
}

// scanQueues runs query, of queueListCols, and reads its queues with the
// age at now of each one's oldest ready command.
func scanQueues(q querier, now time.Time, query string, args ...any) ([]spinbroker.Queue, error) {
	rows, err := q.query(query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []spinbroker.Queue{}
	for rows.Next() {
		var since sql.NullInt64
		qu, err := scanQueue(rows, &since)
		if err != nil {
			return nil, err
		}
		qu.OldestReadyAgeSeconds = ageAt(since, now)
		out = append(out, qu)
	}
	return out, rows.Err()
}

// QueueCommandsLimit is how many commands Queue lists.
const QueueCommandsLimit = 50

// Queue reads one queue with its first enqueued, unfinished commands in
// queue order. A valid resource that was never used is an empty queue.
func (db *DB) Queue(ctx context.Context, resource string) (*spinbroker.Queue, error) {
	return db.queue(ctx, resource, qQueueCommands, 0, QueueCommandsLimit)
}

// QueueEach reads what Queue does, all of one moment, but hands the
// commands over one at a time as it reads them: head gets the queue (its
// Commands nil), then each gets each of its first QueueCommandsLimit
// enqueued, unfinished commands in queue order. It holds one command at a
// time, not fifty of up to 1 MiB each. An error from head or each ends the
// read and is returned.
func (db *DB) QueueEach(ctx context.Context, resource string, head func(*spinbroker.Queue) error, each func(*spinbroker.Command) error) error {
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return err
	}
	return db.snapshot(ctx, func(r querier) error {
		q, err := db.queueHead(r, resource)
		if err != nil {
			return err
		}
		if err := head(q); err != nil {
			return err
		}
		rows, err := r.query(qQueueIDs, resource, 0, QueueCommandsLimit)
		if err != nil {
			return err
		}
		var ids []string
		for rows.Next() {
			var id string
			var o int64
			if err := rows.Scan(&id, &o); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		if err := endRows(rows); err != nil {
			return err
		}
		for _, id := range ids {
			c, err := getCommand(r, id)
			if err != nil {
				return err
			}
			if err := each(c); err != nil {
				return err
			}
		}
		return nil
	})
}

// queueHead reads a queue without its commands, through r.
func (db *DB) queueHead(r querier, resource string) (*spinbroker.Queue, error) {
	q, err := scanQueue(r.queryRow(`SELECT `+queueCols+` FROM queues WHERE resource = ?`, resource))
	if isNoRows(err) {
		q = spinbroker.Queue{Resource: resource, Concurrency: spinbroker.DefaultConcurrency}
	} else if err != nil {
		return nil, err
	}
	if q.OldestReadyAgeSeconds, err = oldestReadyAge(r, resource, db.now()); err != nil {
		return nil, err
	}
	return &q, nil
}

// queue reads one queue, all of one moment, with up to limit (none with 0)
// of its enqueued, unfinished commands whose seq is greater than afterSeq,
// in queue order, through query (qQueueCommands or qQueueCommandsLight).
func (db *DB) queue(ctx context.Context, resource, query string, afterSeq int64, limit int) (*spinbroker.Queue, error) {
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return nil, err
	}
	var q *spinbroker.Queue
	err := db.snapshot(ctx, func(r querier) error {
		var err error
		if q, err = db.queueHead(r, resource); err != nil {
			return err
		}
		q.Commands = []spinbroker.Command{}
		if limit > 0 {
			q.Commands, err = queryQueueCommands(r, query, resource, afterSeq, limit)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return q, nil
}

// queryQueueCommands runs query, qQueueCommands or qQueueCommandsLight,
// whose rows carry one column more than commandCols (the sort key), and
// loads the dependencies.
func queryQueueCommands(q querier, query, resource string, afterSeq int64, limit int) ([]spinbroker.Command, error) {
	rows, err := q.query(query, resource, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	out := []spinbroker.Command{}
	var withDeps []*spinbroker.Command
	var ns []int
	for rows.Next() {
		var cs commandScan
		var o int64
		if err := rows.Scan(append(cs.dest(), &o)...); err != nil {
			rows.Close()
			return nil, err
		}
		c, n := cs.finish()
		out = append(out, c)
		ns = append(ns, n)
	}
	if err := endRows(rows); err != nil {
		return nil, err
	}
	for i := range out {
		if ns[i] > 0 {
			withDeps = append(withDeps, &out[i])
		}
	}
	return out, loadDeps(q, withDeps)
}

// SetQueue changes a queue's concurrency and whether it is paused. Settings
// may be made before any command names the queue.
func (db *DB) SetQueue(ctx context.Context, resource string, s spinbroker.QueueSettings) (*spinbroker.Queue, error) {
	if err := spinbroker.CheckName("resource", resource); err != nil {
		return nil, err
	}
	if s.Concurrency != nil && (*s.Concurrency < 1 || *s.Concurrency > spinbroker.MaxConcurrency) {
		return nil, spinbroker.Errorf(spinbroker.EINVALID, "concurrency must be between 1 and %d", spinbroker.MaxConcurrency)
	}
	if s.Concurrency == nil && s.Paused == nil {
		// Nothing to change ({} in a PATCH): no setting is made, so the
		// queue is not listed for it, nor kept from being forgotten.
		return db.Queue(ctx, resource)
	}
	err := db.write(ctx, func(t *Tx) error {
		// A change of settings counts as activity: the sweeper forgets a
		// queue only once it has been idle, with default settings, for
		// the retention period.
		if _, err := t.exec(`INSERT INTO queues (resource, last_active_at) VALUES (?1, ?2)
			ON CONFLICT (resource) DO UPDATE SET last_active_at = ?2`, resource, nanos(t.now)); err != nil {
			return err
		}
		if s.Concurrency != nil {
			if _, err := t.exec(`UPDATE queues SET concurrency = ? WHERE resource = ?`, *s.Concurrency, resource); err != nil {
				return err
			}
		}
		if s.Paused != nil {
			if _, err := t.exec(`UPDATE queues SET paused = ? WHERE resource = ?`, *s.Paused, resource); err != nil {
				return err
			}
		}
		t.commit.Queues = append(t.commit.Queues, resource)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return db.Queue(ctx, resource)
}
