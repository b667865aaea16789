package store

import (
	"context"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// SweepOptions say what a sweep deletes.
type SweepOptions struct {
	// StagingTTL is how long a package may stay in staging (default 24h;
	// negative keeps them forever).
	StagingTTL time.Duration
	// Retain is how long a finished package is kept (0 keeps them forever),
	// and how long an idle queue with default settings is remembered.
	Retain time.Duration
}

// SweepResult counts what a sweep did.
type SweepResult struct {
	LeasesSettled   int // expired leases requeued or failed
	StagingDeleted  int // packages deleted for staying too long in staging
	RetainedDeleted int // finished packages deleted past retention
	QueuesForgotten int // queues idle past retention, with default settings
	KeysDeleted     int // Idempotency-Key records past 24h
}

// sweepBatch bounds each sweep transaction, so that a large backlog of
// expired packages never holds the writer for long; sweepCommands bounds
// the commands of the packages one transaction deletes (200 packages of
// 10,000 held it 7.7s; on a database of 2 million commands, each with its
// dependency edges, one costs 15-30 µs, and every agent write waits for the
// batch running when it comes: 5,000 made them wait 20-40 ms for as long
// as a backlog of 100,000 packages took to clear), and sweepSettle the
// expired leases and due delayed commands one settles (100,000 expired
// leases took 1.3s, and a backlog after an outage can be larger).
const (
	sweepBatch    = 200
	sweepCommands = 500
	sweepSettle   = 1000
)

// Sweep settles expired leases and delayed commands whose time has come in
// every queue, and deletes expired staging packages, finished packages past
// retention, queues idle past retention and old Idempotency-Key records, in
// short transactions.
func (db *DB) Sweep(ctx context.Context, opts SweepOptions) (SweepResult, error) {
	var res SweepResult
	if opts.StagingTTL == 0 {
		opts.StagingTTL = spinbroker.DefaultStagingTTL
	}
	n, err := db.inBatches(ctx, func(t *Tx) (int, bool, error) {
		n, err := t.settleExpired("")
		return n, n == sweepSettle, err
	})
	res.LeasesSettled = n
	if err != nil {
		return res, err
	}
	if _, err := db.inBatches(ctx, func(t *Tx) (int, bool, error) {
		n, err := t.promoteDelayed("")
		return n, n == sweepSettle, err
	}); err != nil {
		return res, err
	}
	if opts.StagingTTL > 0 {
		n, err := db.sweepPackages(ctx, qSweepStaging, opts.StagingTTL)
		res.StagingDeleted = n
		if err != nil {
			return res, err
		}
	}
	if opts.Retain > 0 {
		n, err := db.sweepPackages(ctx, qSweepFinished, opts.Retain)
		res.RetainedDeleted = n
		if err != nil {
			return res, err
		}
		n, err = db.forgetQueues(ctx, opts.Retain)
		res.QueuesForgotten = n
		if err != nil {
			return res, err
		}
	}
	n, err = db.inBatches(ctx, func(t *Tx) (int, bool, error) {
		r, err := t.exec(`DELETE FROM idempotency WHERE rowid IN
			(SELECT rowid FROM idempotency WHERE created_at < ? LIMIT ?)`,
			staleBefore(t.now, spinbroker.IdempotencyTTL), sweepBatch*5)
		if err != nil {
			return 0, false, err
		}
		n, _ := r.RowsAffected()
		_, err = t.exec(`DELETE FROM completions WHERE minute < ?`, t.now.Add(-7*24*time.Hour).Unix()/60)
		return int(n), n == sweepBatch*5, err
	})
	res.KeysDeleted = n
	return res, err
}

// inBatches runs step, each time in a write transaction of its own, while
// it says there is more to do, and answers how many things it did in all.
func (db *DB) inBatches(ctx context.Context, step func(t *Tx) (n int, more bool, err error)) (int, error) {
	total := 0
	for {
		n, more := 0, false
		err := db.writeAlone(ctx, func(t *Tx) error {
			k, m, err := step(t)
			if err == nil {
				n, more = k, m
			}
			return err
		})
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// The packages the sweeper deletes, through packages_state_created: left
// in staging since before ?1, and finished before ?1.
const (
	qSweepStaging = `SELECT id, total FROM packages
		WHERE state = 'staging' AND created_at < ?1 LIMIT ?2`
	qSweepFinished = `SELECT id, total FROM packages
		WHERE state IN ('succeeded', 'failed', 'cancelled') AND created_at < ?1
		  AND coalesce(cancelled_at, last_finished_at) < ?1
		  AND n_staged + n_blocked + n_ready + n_leased = 0
		LIMIT ?2`
)

// sweepPackages deletes, a batch per transaction, the packages that query
// selects given a cutoff of now minus age: up to sweepBatch packages, and
// no more than sweepCommands commands unless the first package alone has
// more.
func (db *DB) sweepPackages(ctx context.Context, query string, age time.Duration) (int, error) {
	return db.inBatches(ctx, func(t *Tx) (int, bool, error) {
		rows, err := t.query(query, staleBefore(t.now, age), sweepBatch)
		if err != nil {
			return 0, false, err
		}
		var ids []string
		more, commands := false, 0
		for rows.Next() {
			var id string
			var total int
			if err := rows.Scan(&id, &total); err != nil {
				rows.Close()
				return 0, false, err
			}
			if len(ids) > 0 && commands+total > sweepCommands {
				more = true
				break
			}
			ids, commands = append(ids, id), commands+total
		}
		if err := endRows(rows); err != nil {
			return 0, false, err
		}
		for _, id := range ids {
			if err := t.deletePackage(id); err != nil {
				return 0, false, err
			}
		}
		return len(ids), more || len(ids) == sweepBatch, nil
	})
}

// qForgetQueues deletes the rows of queues idle since before ?1 with default
// settings and nothing enqueued: to a client such a queue is the same as
// one never used (API.md, Queues), and a fleet that names resources after
// short-lived things would otherwise list every name it ever used. A queue
// comes back with its next command (the counts' upsert) or setting. It
// looks at the rows after rowid ?4 only, in the table's order: a batch goes
// on from the last row the one before it forgot, so that a sweep reads
// each queue once however many batches it takes. (Each batch read the
// table from its start, the queues it keeps again and again: 50,000
// queues, half of them idle, took 0.35 s, 100,000 1.4 s.)
const qForgetQueues = `DELETE FROM queues WHERE rowid IN (
		SELECT rowid FROM queues
		WHERE rowid > ?4 AND n_blocked = 0 AND n_ready = 0 AND n_leased = 0
		  AND concurrency = ?2 AND paused = 0 AND last_active_at < ?1
		ORDER BY rowid LIMIT ?3)
	RETURNING rowid, resource`

// forgetQueues forgets, a batch per transaction, the queues idle for longer
// than age. An agent waiting on a queue sets its last_active_at only when
// it is a minute old (pollActivity), and asks again only when its long-poll
// (up to spinbroker.MaxWait) ends: so last_active_at may lag the last
// poll by both, and a queue is forgotten only once it is idle for longer
// than age plus that lag, or with a short --retain the queue of an agent
// that is waiting on it would go.
func (db *DB) forgetQueues(ctx context.Context, age time.Duration) (int, error) {
	age += pollActivity + spinbroker.MaxWait
	var after int64
	return db.inBatches(ctx, func(t *Tx) (int, bool, error) {
		rows, err := t.query(qForgetQueues, staleBefore(t.now, age), spinbroker.DefaultConcurrency, sweepBatch, after)
		if err != nil {
			return 0, false, err
		}
		var rs []string
		for rows.Next() {
			var id int64
			var r string
			if err := rows.Scan(&id, &r); err != nil {
				rows.Close()
				return 0, false, interpretError(err)
			}
			rs = append(rs, r)
			after = max(after, id) // RETURNING gives no order
		}
		if err := endRows(rows); err != nil {
			return 0, false, interpretError(err)
		}
		t.commit.Forgotten = rs
		return len(rs), len(rs) == sweepBatch, nil
	})
}
